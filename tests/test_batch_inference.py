"""Tests of inference.py's batch mode (--img_dir): outputs, skipped files, interruption and resume."""
import csv
import json
import os
import shutil

import cv2
import pytest
from conftest import INFERENCE, SAMPLE_IMAGES

from components.config import DEFAULT_SETTINGS
from runtime import batch as inference

SAMPLES = SAMPLE_IMAGES[::-1]   # the crowd first


@pytest.fixture
def image_dir(tmp_path):
    """Three sample images (two distinct, one copy) and a corrupt .jpg."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLES[0], folder / "a.jpg")
    shutil.copy(SAMPLES[1], folder / "b.jpg")
    shutil.copy(SAMPLES[1], folder / "c.png.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    return folder


def detector_for(model_path, score_threshold=0.05):
    from runtime.detector import Detector
    return Detector.from_path(model_path, DEFAULT_SETTINGS.replace(score_threshold=score_threshold))


class CountingDetector:
    """Wraps a Detector: counts detect() calls and raises KeyboardInterrupt on call ``interrupt_at``."""

    def __init__(self, detector, interrupt_at=None):
        self.detector, self.interrupt_at, self.calls = detector, interrupt_at, 0

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def detect(self, image_rgb, score_threshold=None):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.detector.detect(image_rgb, score_threshold)


def run_quietly(detector, image_dir, output):
    """``run_batch`` without progress bar or messages."""
    return inference.run_batch(detector, image_dir, output, progress=False, log=lambda message: None)


def interrupted_batch(model, image_dir, output, interrupt_at):
    """A batch run of ``model`` stopped by Ctrl-C at its ``interrupt_at``-th image; returns its detector."""
    detector = detector_for(model)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(CountingDetector(detector, interrupt_at=interrupt_at), str(image_dir), str(output))
    return detector


def read_outputs(folder):
    with open(folder / "detections.json", encoding="utf-8") as handle:
        document = json.load(handle)
    with open(folder / "summary.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return document, rows


@pytest.mark.slow
def test_batch_mode_writes_detections_and_summary_and_skips_unreadable_files(tiny_model, image_dir, run_script,
                                                                              tmp_path):
    output = tmp_path / "out"
    run = run_script([INFERENCE, "--model_path", tiny_model, "--img_dir", str(image_dir), "--output_dir", str(output),
                      "--score_threshold", "0.05"])
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    skipped_lines = [line for line in run.stderr.splitlines() if "skipped " in line]
    assert len(skipped_lines) == 1 and f"skipped {image_dir / 'broken.jpg'}: " in skipped_lines[0]
    reason = skipped_lines[0].split(f"{image_dir / 'broken.jpg'}: ", 1)[1]
    assert "3 images annotated (0 from an earlier run), 1 skipped (unreadable)" in run.stdout

    document, rows = read_outputs(output)
    assert [record["image"] for record in document["images"]] == ["a.jpg", "b.jpg", "c.png.jpg"]
    assert document["skipped"] == [{"image": "broken.jpg", "reason": reason}] and reason
    for record in document["images"]:
        source = cv2.imread(str(image_dir / record["image"]))
        assert (record["height"], record["width"]) == source.shape[:2]
        assert len(record["boxes"]) == len(record["classes"]) == len(record["scores"]) > 0   # random model, 0.05
        for left, top, right, bottom in record["boxes"]:
            assert 0 <= left <= right <= record["width"] and 0 <= top <= bottom <= record["height"]
        assert set(record["classes"]) <= {"mask", "unmask"}
        assert record["scores"] == sorted(record["scores"], reverse=True) and min(record["scores"]) >= 0.05
        assert cv2.imread(str(output / record["image"])).shape == source.shape      # annotated copy
    assert [row["image"] for row in rows] == ["a.jpg", "b.jpg", "c.png.jpg"]
    for row, record in zip(rows, document["images"]):
        assert int(row["faces"]) == len(record["classes"])
        assert int(row["mask"]) == record["classes"].count("mask")       # one column per class of the model
        assert int(row["unmask"]) == record["classes"].count("unmask")
    assert document["images"][1]["boxes"] == document["images"][2]["boxes"]           # same picture, same result
    assert not (output / inference.PART_FILE).exists()                               # finished: no part file
    assert not [name for name in os.listdir(output) if ".tmp-" in name]


@pytest.mark.slow
def test_interrupted_batch_keeps_finished_results_and_resumes_without_redoing_them(tiny_model, image_dir,
                                                                                    tmp_path):
    output = tmp_path / "out"
    detector = detector_for(tiny_model)
    first = CountingDetector(detector, interrupt_at=2)       # Ctrl-C while the second image is processed
    with pytest.raises(KeyboardInterrupt):
        run_quietly(first, str(image_dir), str(output))
    document, rows = read_outputs(output)                      # assembled on the interrupt
    assert [record["image"] for record in document["images"]] == ["a.jpg"]
    assert [row["image"] for row in rows] == ["a.jpg"]
    part_lines = (output / inference.PART_FILE).read_text().splitlines()
    assert len(part_lines) == 2 and json.loads(part_lines[1])["image"] == "a.jpg"     # header + one image
    finished = document["images"][0]

    messages = []
    second = CountingDetector(detector)
    done, resumed, skipped = inference.run_batch(second, str(image_dir), str(output), progress=False,
                                                 log=messages.append)
    assert second.calls == 2                                   # b.jpg and c.png.jpg only; a.jpg was not redone
    assert (done, resumed) == (2, 1) and [name for name, _ in skipped] == ["broken.jpg"]
    assert any("resuming: 1 images already done" in message for message in messages)
    document, rows = read_outputs(output)
    assert [record["image"] for record in document["images"]] == ["a.jpg", "b.jpg", "c.png.jpg"]
    assert document["images"][0] == finished
    assert len(rows) == 3
    assert not (output / inference.PART_FILE).exists()


@pytest.mark.slow
def test_part_file_of_another_model_or_threshold_is_not_reused(tiny_model, image_dir, tmp_path):
    output = tmp_path / "out"
    interrupted_batch(tiny_model, image_dir, output, interrupt_at=3)
    other = CountingDetector(detector_for(tiny_model, score_threshold=0.3))
    done, resumed, _ = run_quietly(other, str(image_dir), str(output))
    assert other.calls == 3 and (done, resumed) == (3, 0)
    document, _ = read_outputs(output)
    assert document["score_threshold"] == 0.3
    assert all(min(record["scores"], default=1.0) >= 0.3 for record in document["images"])


@pytest.mark.slow
def test_resume_after_a_torn_last_line_loses_nothing_more(tiny_model, image_dir, tmp_path):
    output = tmp_path / "out"
    detector = interrupted_batch(tiny_model, image_dir, output, interrupt_at=2)
    with open(output / inference.PART_FILE, "a", encoding="utf-8") as part:
        part.write('{"image": "b.jpg", "wid')                 # killed while writing the second record
    with pytest.raises(KeyboardInterrupt):                     # resumed, b.jpg done, interrupted again
        run_quietly(CountingDetector(detector, interrupt_at=2), str(image_dir), str(output))
    header = inference.batch_header(detector, detector.settings.detect.score_threshold)
    assert sorted(inference.read_part_file(str(output / inference.PART_FILE), header)) == ["a.jpg", "b.jpg"]
    third = CountingDetector(detector)
    done, resumed, _ = run_quietly(third, str(image_dir), str(output))
    assert third.calls == 1 and (done, resumed) == (1, 2)
    document, _ = read_outputs(output)
    assert [record["image"] for record in document["images"]] == ["a.jpg", "b.jpg", "c.png.jpg"]


def test_torn_last_line_of_a_part_file_is_ignored(tmp_path):
    header = {"model": "/m.keras", "model_bytes": 1, "model_mtime": 2.0, "score_threshold": 0.5}
    part = tmp_path / inference.PART_FILE
    record = {"image": "a.jpg", "width": 4, "height": 4, "boxes": [], "classes": [], "scores": []}
    part.write_text(json.dumps({"header": header}) + "\n" + json.dumps(record) + "\n" + '{"image": "b.j')
    assert list(inference.read_part_file(str(part), header)) == ["a.jpg"]
    assert inference.read_part_file(str(part), dict(header, score_threshold=0.6)) == {}
    assert inference.read_part_file(str(tmp_path / "missing.jsonl"), header) == {}


def test_output_dir_equal_to_img_dir_is_one_line_error(image_dir, run_script):
    run = run_script([INFERENCE, "--model_path", str(image_dir), "--img_dir", str(image_dir),
                      "--output_dir", str(image_dir)])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {image_dir}: --output_dir must differ")


def test_empty_img_dir_is_one_line_error(tmp_path, run_script):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("not an image")
    run = run_script([INFERENCE, "--img_dir", str(empty), "--output_dir", str(tmp_path / "out")])
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {empty}: image folder holds no files"
    assert not (tmp_path / "out").exists()


def test_missing_img_dir_is_one_line_error(tmp_path, run_script):
    missing = tmp_path / "nowhere"
    run = run_script([INFERENCE, "--img_dir", str(missing)])
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {missing}: image folder not found"
