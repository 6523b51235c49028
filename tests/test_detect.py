"""Tests of mAP/detect.py on a small VOC folder built from the sample images, then mAP/compute_mAP.py on its output."""
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, VOC_MINI

DETECT_SCRIPT = os.path.join(REPO_ROOT, "mAP", "detect.py")
COMPUTE_MAP_SCRIPT = os.path.join(REPO_ROOT, "mAP", "compute_mAP.py")
HANDSHAKE_IMAGE = os.path.join(REPO_ROOT, "assets", "1_Handshaking_Handshaking_1_71.jpg")   # 1024 x 754
PEOPLE_IMAGE = os.path.join(REPO_ROOT, "assets", "test_00002330.jpg")                      # 950 x 572
NUMBER = r"-?\d+(?:\.\d{1,2})?"
DETECTION_LINE = re.compile(rf"^(mask|unmask) (\d\.\d{{6}}) ({NUMBER}) ({NUMBER}) ({NUMBER}) ({NUMBER})$")


def voc_xml(filename, width, height, objects):
    """VOC annotation text; ``objects`` are (name, (xmin, ymin, xmax, ymax)) or (name, box, difficult)."""
    parts = [f"<annotation><filename>{filename}</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for obj in objects:
        name, box = obj[0], obj[1]
        difficult = 1 if len(obj) > 2 and obj[2] else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
                     "</bndbox></object>")
    return "".join(parts) + "</annotation>\n"


@pytest.fixture
def voc_folder(tmp_path):
    """3 usable images (one with a difficult object, aliases, a box past the border, an unknown label)
    plus one zero-byte image and one malformed xml, all listed in val.txt."""
    root = tmp_path / "voc"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    shutil.copy(HANDSHAKE_IMAGE, root / "JPEGImages" / "handshake.jpg")
    shutil.copy(PEOPLE_IMAGE, root / "JPEGImages" / "people.jpg")
    small = cv2.resize(cv2.imread(PEOPLE_IMAGE), (475, 286))
    cv2.imwrite(str(root / "JPEGImages" / "small.png"), small)
    (root / "JPEGImages" / "empty.jpg").write_bytes(b"")
    shutil.copy(PEOPLE_IMAGE, root / "JPEGImages" / "badxml.jpg")
    annotations = {
        "handshake": voc_xml("handshake.jpg", 1024, 754, [("face", (90, 40, 190, 160)),
                                                          ("face_mask", (630, 120, 740, 260))]),
        "people": voc_xml("people.jpg", 950, 572, [("with_mask", (440, 140, 510, 220)),
                                                   ("face", (300, 80, 350, 140), True)]),
        # the xml size is the original 950 x 572: boxes are rescaled to the 475 x 286 image, then clipped
        "small": voc_xml("small.png", 950, 572, [("without_mask", (900, 100, 1000, 200.5)), ("hat", (1, 1, 9, 9))]),
        "empty": voc_xml("empty.jpg", 950, 572, [("face", (1, 1, 50, 50))]),
    }
    for name, text in annotations.items():
        (root / "Annotations" / f"{name}.xml").write_text(text)
    (root / "Annotations" / "badxml.xml").write_text("<annotation><object>")
    (root / "ImageSets" / "Main" / "val.txt").write_text("handshake\npeople\nsmall\nempty\nbadxml\n")
    return root


def run_script(script, *args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def read_text_files(folder):
    return {name[:-4]: (folder / name).read_text() for name in sorted(os.listdir(folder)) if name.endswith(".txt")}


@pytest.mark.slow
def test_detect_writes_files_that_compute_map_reads(tiny_model, voc_folder, tmp_path):
    output_dir = tmp_path / "out"
    for folder in ("ground-truth", "detection-results"):
        (output_dir / folder).mkdir(parents=True)
        (output_dir / folder / "stale_image.txt").write_text("mask 0 0 1 1\n")
        (output_dir / folder / "notes.md").write_text("not ours\n")
    run = run_script(DETECT_SCRIPT, "--model_path", os.path.dirname(tiny_model), "--dataset_path", voc_folder,
                     "--split", "val", "--output_dir", output_dir, "--images_per_batch", "2", "--skip_unknown_labels",
                     cwd=tmp_path)
    assert run.returncode == 0, run.stderr

    ground_truth = read_text_files(output_dir / "ground-truth")
    detections = read_text_files(output_dir / "detection-results")
    assert sorted(ground_truth) == sorted(detections) == ["handshake", "people", "small"]
    assert (output_dir / "ground-truth" / "notes.md").exists()       # only .txt files are cleared
    assert ground_truth["handshake"] == "unmask 90 40 190 160\nmask 630 120 740 260\n"
    assert ground_truth["people"] == "mask 440 140 510 220\nunmask 300 80 350 140 difficult\n"
    assert ground_truth["small"] == "unmask 450 50 475 100.25\n"        # rescaled by 1/2, clipped at 475

    sizes = {"handshake": (1024, 754), "people": (950, 572), "small": (475, 286)}
    total = 0
    for name, text in detections.items():
        width, height = sizes[name]
        for line in text.splitlines():
            match = DETECTION_LINE.match(line)
            assert match, line
            left, top, right, bottom = map(float, match.groups()[2:])
            assert 0 <= left <= right <= width and 0 <= top <= bottom <= height
            total += 1
    assert total > 0                          # a random model passes the default 0.01 threshold

    skipped = [line for line in run.stderr.splitlines() if line.startswith("skipped image: ")]
    assert len(skipped) == 2
    assert any("empty.jpg: empty file" in line for line in skipped)
    assert any("badxml.xml: malformed xml" in line for line in skipped)
    assert f"wrote 3 detection files ({total} detections) and 3 ground-truth files (5 boxes)" in run.stdout
    assert "skipped 2 images, 1 objects" in run.stdout
    assert "mAP/compute_mAP.py --gt_dir" in run.stdout

    evaluation = run_script(COMPUTE_MAP_SCRIPT, "--gt_dir", output_dir / "ground-truth",
                            "--det_dir", output_dir / "detection-results", "--output_dir", output_dir / "results",
                            "--no_plot", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    assert "mAP = " in evaluation.stdout


def test_defaults_match_compute_map_defaults(monkeypatch):
    """``python mAP/compute_mAP.py`` with no flags reads the folders detect.py writes by default."""
    import argparse

    import cli.compute_map as compute_mAP
    from mAP import detection_files as detect
    defaults = {}
    parse_args = argparse.ArgumentParser.parse_args

    def record_defaults(parser, args=None, namespace=None):
        defaults.update(vars(parse_args(parser, [], namespace)))
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", record_defaults)
    with pytest.raises(SystemExit):
        compute_mAP.main([])
    assert defaults["gt_dir"] == os.path.join(detect.DEFAULT_OUTPUT_DIR, detect.GROUND_TRUTH_DIR_NAME)
    assert defaults["det_dir"] == os.path.join(detect.DEFAULT_OUTPUT_DIR, detect.DETECTION_DIR_NAME)
    assert detect.next_command(detect.DEFAULT_OUTPUT_DIR).endswith("compute_mAP.py")


def test_format_pixels_is_short_and_exact_enough():
    from mAP.detection_files import format_pixels
    assert [format_pixels(v) for v in (12.0, 12.5, 0.004, 100.256, -0.001)] == ["12", "12.5", "0", "100.26", "0"]


def assert_one_line_error(run, path):
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip().splitlines()[-1]]
    assert run.stderr.strip().startswith(f"error: {path}"), run.stderr


def test_missing_dataset_folder_is_one_line_error(tmp_path):
    missing = tmp_path / "no_such_voc"
    run = run_script(DETECT_SCRIPT, "--model_path", tmp_path, "--dataset_path", missing, cwd=tmp_path)
    assert_one_line_error(run, missing)


def test_missing_split_is_one_line_error(voc_folder, tmp_path):
    run = run_script(DETECT_SCRIPT, "--model_path", tmp_path, "--dataset_path", voc_folder, "--split", "test",
                     cwd=tmp_path)
    assert_one_line_error(run, voc_folder / "ImageSets" / "Main" / "test.txt")


def test_empty_split_is_one_line_error(voc_folder, tmp_path):
    split = voc_folder / "ImageSets" / "Main" / "none.txt"
    split.write_text("\n")
    run = run_script(DETECT_SCRIPT, "--model_path", tmp_path, "--dataset_path", voc_folder, "--split", "none",
                     cwd=tmp_path)
    assert_one_line_error(run, split)


def test_missing_model_is_one_line_error_and_leaves_old_results(voc_folder, tmp_path):
    output_dir = tmp_path / "out"
    (output_dir / "ground-truth").mkdir(parents=True)
    (output_dir / "ground-truth" / "earlier.txt").write_text("mask 0 0 1 1\n")
    missing = tmp_path / "no_model.keras"
    run = run_script(DETECT_SCRIPT, "--model_path", missing, "--dataset_path", voc_folder,
                     "--output_dir", output_dir, cwd=tmp_path)
    assert_one_line_error(run, missing)
    assert (output_dir / "ground-truth" / "earlier.txt").exists()


@pytest.mark.slow
def test_keep_aspect_comes_from_the_command_line_not_the_model_file(tiny_model):
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    assert Detector.from_path(tiny_model, DEFAULT_SETTINGS).keep_aspect is True
    stretched = Detector.from_path(tiny_model, DEFAULT_SETTINGS.replace(keep_aspect=False))
    assert stretched.keep_aspect is False
    portrait = np.full((200, 100, 3), 80, np.uint8)
    # stretched: the image fills the input; letterboxed: the right part is padding (127 -> about 0)
    assert abs(stretched.preprocess([portrait])[0, :, -1].mean() - (80 / 127.5 - 1)) < 1e-3
    letterboxed = Detector.from_path(tiny_model, DEFAULT_SETTINGS).preprocess([portrait])[0]
    assert abs(letterboxed[:, -1].mean() - (127 / 127.5 - 1)) < 1e-3


@pytest.mark.slow
def test_a_sidecar_sets_only_model_keys(tiny_model, tmp_path):
    """Inference settings written into a model's JSON (as older exports did) do not override the caller's."""
    import json

    from test_model_files import copy_without_spec

    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    from runtime.model_files import MODEL_CONFIG_KEYS, load_model_config, read_model_spec
    model = tmp_path / "model.keras"
    copy_without_spec(tiny_model, str(model))   # an older file: its settings in the sidecar
    saved = {key: value for key, value in read_model_spec(tiny_model).items() if key in MODEL_CONFIG_KEYS}
    saved.update(keep_aspect=True, score_threshold=0.9)
    (tmp_path / "model.json").write_text(json.dumps(saved))
    settings = load_model_config(str(model), DEFAULT_SETTINGS.replace(keep_aspect=False, score_threshold=0.2))
    assert settings.detect.keep_aspect is False and settings.detect.score_threshold == 0.2
    assert tuple(settings.model.input_size) == tuple(saved["input_size"]) and settings.model.network == "slim"
    assert Detector.from_path(str(model), DEFAULT_SETTINGS.replace(keep_aspect=False)).keep_aspect is False


# --- several validation sets ------------------------------------------------------------------------------

VOC_MINI_VAL = ["test_00002655", "test_00003316"]


def run_detect_main(argv, capsys):
    from cli.detect import main
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def next_argv(stdout):
    """The arguments of the compute_mAP.py command of detect.py's ``next:`` line."""
    import shlex
    words = shlex.split([line for line in stdout.splitlines() if line.startswith("next: ")][-1][len("next: "):])
    assert words[:2] == ["python", os.path.relpath(COMPUTE_MAP_SCRIPT)]
    return words[2:]


@pytest.fixture
def counted_detectors(monkeypatch):
    """Counts the models loaded (``Detector.from_path`` calls)."""
    from runtime.detector import Detector
    loads = []
    original = Detector.from_path.__func__

    def from_path(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Detector, "from_path", classmethod(from_path))
    return loads


@pytest.mark.slow
def test_two_folders_through_one_model_then_one_summary(tiny_model, tmp_path, capsys, counted_detectors):
    (tmp_path / "copy").mkdir()
    link = tmp_path / "copy" / "voc_mini"                   # the same folder under the same name: made unique
    os.symlink(VOC_MINI, link)
    output_dir = tmp_path / "out"
    status, out, err = run_detect_main(["--model_path", tiny_model, "--dataset_path", f"{VOC_MINI},{link}",
                                        "--output_dir", output_dir, "--images_per_batch", "2"], capsys)
    assert status == 0, err
    assert len(counted_detectors) == 1
    assert sorted(os.listdir(output_dir)) == ["voc_mini", "voc_mini_2"]
    for name in ("voc_mini", "voc_mini_2"):
        assert sorted(os.listdir(output_dir / name)) == ["detection-results", "ground-truth"]
        assert out.count(f"under {output_dir / name};") == 1
    sets = [{folder: read_text_files(output_dir / name / folder) for folder in ("ground-truth", "detection-results")}
            for name in ("voc_mini", "voc_mini_2")]
    assert sorted(sets[0]["ground-truth"]) == sorted(sets[0]["detection-results"]) == VOC_MINI_VAL
    assert sets[0] == sets[1]                           # the same images through the same model

    # one set: today's layout, the same files
    single_dir = tmp_path / "single"
    status, single_out, err = run_detect_main(["--model_path", tiny_model, "--dataset_path", VOC_MINI,
                                               "--output_dir", single_dir, "--images_per_batch", "2"], capsys)
    assert status == 0, err
    assert sorted(os.listdir(single_dir)) == ["detection-results", "ground-truth"]
    assert {folder: read_text_files(single_dir / folder) for folder in ("ground-truth", "detection-results")} \
        == sets[0]
    assert "--gt_dir" in single_out and "--set_dirs" not in single_out

    # the next: lines score the two sets with a summary, and the one set as before
    import cli.compute_map as compute_map_cli
    argv = next_argv(out)
    assert argv[:2] == ["--set_dirs", f"{output_dir / 'voc_mini'},{output_dir / 'voc_mini_2'}"]
    assert compute_map_cli.main(argv + ["--no_plot"]) == 0
    assert compute_map_cli.main(next_argv(single_out) + ["--no_plot"]) == 0
    capsys.readouterr()
    single_map = (single_dir / "map-results" / "results.txt").read_text().split("mAP = ")[1].split()[0]
    summary = (output_dir / "map-results" / "summary.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in summary[2:]}
    assert sorted(rows) == ["mean", "voc_mini", "voc_mini_2"]
    assert rows["voc_mini"][-1] == rows["voc_mini_2"][-1] == rows["mean"][-1] == single_map
    assert rows["mean"] == rows["voc_mini"]


def write_two_source_data_file(folder):
    path = folder / "two.yaml"
    path.write_text(f"name: two\nroot: {VOC_MINI}\nnames: [mask, unmask]\naliases: {{face_mask: mask, face: unmask}}\n"
                    "val:\n  - {path: ., split: val, name: first}\n  - {path: ., split: train, name: second}\n")
    return path


@pytest.mark.slow
def test_data_file_with_two_val_sources_writes_a_folder_per_source(tiny_model, tmp_path, capsys,
                                                                     counted_detectors):
    output_dir = tmp_path / "out"
    status, out, err = run_detect_main(["--model_path", tiny_model, "--data", write_two_source_data_file(tmp_path),
                                        "--output_dir", output_dir], capsys)
    assert status == 0, err
    assert len(counted_detectors) == 1
    assert sorted(os.listdir(output_dir)) == ["first", "second"]
    assert sorted(read_text_files(output_dir / "first" / "ground-truth")) == VOC_MINI_VAL
    train_names = open(os.path.join(VOC_MINI, "ImageSets", "Main", "train.txt")).read().split()
    assert sorted(read_text_files(output_dir / "second" / "detection-results")) == sorted(train_names)
    assert next_argv(out)[:2] == ["--set_dirs", f"{output_dir / 'first'},{output_dir / 'second'}"]


def test_a_missing_folder_among_several_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no_such_voc"
    status, out, err = run_detect_main(["--model_path", tmp_path, "--dataset_path", f"{VOC_MINI},{missing}",
                                        "--output_dir", tmp_path / "out"], capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {missing}: dataset folder not found")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_the_split_among_several_is_one_line_error(tmp_path, capsys):
    other = tmp_path / "other"
    (other / "ImageSets" / "Main").mkdir(parents=True)
    status, out, err = run_detect_main(["--model_path", tmp_path / "no_model.keras",
                                        "--dataset_path", f"{VOC_MINI},{other}"], capsys)
    split = other / "ImageSets" / "Main" / "val.txt"
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {split}"), err


def test_data_file_without_sources_of_the_split_is_one_line_error(tmp_path, capsys):
    status, out, err = run_detect_main(["--model_path", tmp_path, "--data", write_two_source_data_file(tmp_path),
                                        "--split", "train"], capsys)
    assert status == 2 and err.count("\n") == 1 and "two.yaml lists no train: sources" in err, err


def test_next_command_of_several_sets_names_each_folder(tmp_path):
    from mAP.detection_files import next_command
    command = next_command(str(tmp_path), [str(tmp_path / "a"), str(tmp_path / "b")])
    assert command.endswith(f"--set_dirs {tmp_path / 'a'},{tmp_path / 'b'} --output_dir {tmp_path / 'map-results'}")
    assert "--gt_dir" in next_command(str(tmp_path), [str(tmp_path)])
