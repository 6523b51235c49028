"""Bad input, tried for real (issue 5), second half: inference.py (image and --img_dir batch mode) and
mAP/detect.py with a tiny random model. The bad files, the bad VOC folder and the helpers come from
tests/test_bad_input.py (see its docstring for the decisions tested).
"""
import json
import os
import shutil
import subprocess
import sys
import time

from conftest import INFERENCE

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import pytest  # noqa: E402
from test_bad_input import (  # noqa: E402,F401 (fixtures are used by name)
    ENV,
    GT_OK,
    HUGE_SIDE,
    KEPT,
    PEAK_MB_CODE,
    REPO_ROOT,
    SKIPPED_ITEMS,
    SKIPPED_OBJECTS,
    SOURCE_H,
    SOURCE_JPEG,
    SOURCE_W,
    UNUSABLE_IMAGES,
    USABLE_IMAGES,
    assert_one_line_error,
    assert_reasons,
    bad_voc,
    huge_jpeg,
    image_files,
    leftovers,
    lines_starting,
    run_main,
)


@pytest.fixture(scope="module")
def tiny_detector(tiny_model):
    from runtime.detector import Detector
    return Detector.from_path(tiny_model)


# --- inference.py --------------------------------------------------------------------------------------



@pytest.fixture
def inference_with_tiny_detector(tiny_detector, monkeypatch):
    """The inference module with ``load_detector`` giving the already loaded tiny detector (saves a load per run)."""
    import cli.inference as inference
    monkeypatch.setattr(inference, "load_detector", lambda model_path, settings, input_size=None: tiny_detector)
    return inference


@pytest.mark.parametrize("name", sorted(USABLE_IMAGES))
def test_inference_handles_odd_images(inference_with_tiny_detector, image_files, tmp_path, capsys, name):
    output = tmp_path / f"out_{name}"
    status, out, err = run_main(inference_with_tiny_detector.main,
                                ["--img_path", image_files[name], "--output", output], capsys)
    assert status == 0, err
    assert "Traceback" not in err and not lines_starting(err, "error:")
    assert f"annotated image written to {output}" in out
    assert cv2.imread(str(output)).shape == (*USABLE_IMAGES[name], 3)
    assert os.listdir(tmp_path) == [output.name]


@pytest.mark.parametrize("name", sorted(UNUSABLE_IMAGES))
def test_inference_refuses_unusable_images(inference_with_tiny_detector, image_files, tmp_path, capsys, name):
    output = tmp_path / "out.jpg"
    status, _, err = run_main(inference_with_tiny_detector.main,
                              ["--img_path", image_files[name], "--output", output], capsys)
    assert_one_line_error(status, err, f"error: {image_files[name]}: {UNUSABLE_IMAGES[name]}")
    assert os.listdir(tmp_path) == []


def test_inference_missing_paths_and_folder_as_image(inference_with_tiny_detector, tmp_path, capsys):
    for path, reason in ((tmp_path / "missing.jpg", "file not found"), (tmp_path, "is a folder")):
        status, _, err = run_main(inference_with_tiny_detector.main,
                                  ["--img_path", path, "--output", tmp_path / "out.jpg"], capsys)
        assert_one_line_error(status, err, f"error: {path}: {reason}")
    status, _, err = run_main(inference_with_tiny_detector.main,
                              ["--img_path", SOURCE_JPEG, "--output", tmp_path / "out.txt"], capsys)
    assert_one_line_error(status, err, tmp_path / "out.txt", "extension")
    if inference_has_batch_mode():
        status, _, err = run_main(inference_with_tiny_detector.main,
                                  ["--img_dir", tmp_path / "nowhere", "--output_dir", tmp_path / "out"], capsys)
        assert_one_line_error(status, err, f"error: {tmp_path / 'nowhere'}: ", "not found")
    assert os.listdir(tmp_path) == []


def make_non_models(folder):
    """Files and folders that are not models: {path: fragment the error must hold}."""
    os.makedirs(folder)
    cases = {}
    for name, data, fragment in (("notes.keras", b"not a model\n", "not a loadable Keras model"),
                                 ("empty.keras", b"", "not a loadable Keras model"),
                                 ("garbage.tflite", b"\x00" * 64, "not a TFLite model"),
                                 ("garbage.onnx", b"not a model", "")):
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            handle.write(data)
        cases[path] = fragment
    photo = os.path.join(folder, "photo.keras")
    shutil.copy(SOURCE_JPEG, photo)
    cases[photo] = "not a loadable Keras model"
    cases[SOURCE_JPEG] = ""                                                 # a picture given as the model
    empty_folder = os.path.join(folder, "empty_folder")
    os.makedirs(empty_folder)
    cases[empty_folder] = "holds no model file"
    cases[os.path.join(folder, "missing.keras")] = "not found"
    return cases


def test_inference_non_model_is_one_line_error(tmp_path, capsys):
    import inference
    for model, fragment in make_non_models(str(tmp_path / "models")).items():
        status, _, err = run_main(inference.main, ["--model_path", model, "--img_path", SOURCE_JPEG,
                                                   "--output", tmp_path / "out.jpg"], capsys)
        assert_one_line_error(status, err, f"error: {model}: ", fragment)
    assert not (tmp_path / "out.jpg").exists()


def test_interrupted_inference_keeps_the_old_output_image(inference_with_tiny_detector, tmp_path, monkeypatch,
                                                         capsys):
    """The annotated image goes to a temporary name and is renamed: Ctrl-C at the rename leaves the old file."""
    output = tmp_path / "out.jpg"
    output.write_bytes(b"an earlier result")

    def interrupted_replace(source, destination):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    status, _, err = run_main(inference_with_tiny_detector.main, ["--img_path", SOURCE_JPEG, "--output", output],
                              capsys)
    monkeypatch.undo()
    assert_one_line_error(status, err, "interrupted", expected_status=130)
    assert output.read_bytes() == b"an earlier result"
    assert os.listdir(tmp_path) == ["out.jpg"]


@pytest.mark.slow
def test_inference_on_a_10000_pixel_image_in_bounded_time_and_memory(tiny_model, huge_jpeg, tmp_path):
    """A real run on the 10000 x 10000 image; its own peak memory is measured in the process."""
    output = tmp_path / "huge_out.jpg"
    code = PEAK_MB_CODE + (
        "import runpy, sys; sys.argv = sys.argv[1:]; status = 0\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as stop:\n    status = stop.code\n"
        "print(f'peak_mb {peak_mb()}', file=sys.stderr)\n"
        "sys.exit(status)")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code, INFERENCE, "--model_path", tiny_model, "--img_path", huge_jpeg,
                          "--output", str(output)], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                         timeout=300)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    peak_mb = int(lines_starting(run.stderr, "peak_mb")[0].split()[1])
    image = cv2.imread(str(output))
    assert image.shape == (HUGE_SIDE, HUGE_SIDE, 3)
    assert peak_mb < 4000, f"peak {peak_mb} MB"
    assert seconds < 120, f"{seconds:.0f} s"
    print(f"10000 x 10000 inference: {seconds:.1f} s, peak {peak_mb} MB")


# --- mAP/detect.py ---------------------------------------------------------------------------------------

def read_text_files(folder):
    return {name[:-4]: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder))
            if name.endswith(".txt")}


def test_detect_skips_each_bad_item_with_one_reason_and_counts_them(tiny_model, bad_voc, tmp_path, capsys):
    from cli.compute_map import main as compute_map_main
    from cli.detect import main
    output_dir = tmp_path / "out"
    status, out, err = run_main(main, ["--model_path", tiny_model, "--dataset_path", bad_voc, "--split", "bad", "--skip_unknown_labels",
                                       "--output_dir", output_dir, "--images_per_batch", "4"], capsys)
    assert status == 0, err
    assert "Traceback" not in err and not lines_starting(err, "error:")
    assert_reasons(lines_starting(err, "skipped image: "), [SKIPPED_ITEMS[name] for name in SKIPPED_ITEMS])
    assert_reasons(lines_starting(err, "skipped object: "),
                   [(f"{name}.xml", reason) for name, reason in SKIPPED_OBJECTS.items()])
    assert (f"ground-truth files ({len(KEPT)} boxes) under {output_dir}; skipped {len(SKIPPED_ITEMS)} images, "
            f"{len(SKIPPED_OBJECTS)} objects") in out

    ground_truth = read_text_files(output_dir / "ground-truth")
    detections = read_text_files(output_dir / "detection-results")
    assert sorted(ground_truth) == sorted(detections) == sorted(KEPT)
    # boxes in pixels of the real image: clipped, the xml without size read at the image's own size
    assert ground_truth["negative_box"] == "unmask 0 0 60 70\n"
    assert ground_truth["outside_box"] == f"unmask 100 100 {SOURCE_W} {SOURCE_H}\n"
    assert ground_truth["no_size"] == f"unmask 20 30 {SOURCE_W} 150\n"
    assert ground_truth["one_pixel"] == "unmask 0 0 1 1\n"
    assert ground_truth["inverted_box"] == "mask 20 30 120 150\n"
    for name, text in detections.items():
        width, height = (1, 1) if name == "one_pixel" else (SOURCE_W, SOURCE_H)
        for line in text.splitlines():
            left, top, right, bottom = map(float, line.split()[2:])
            assert 0 <= left <= right <= width and 0 <= top <= bottom <= height, (name, line)
    status, out, err = run_main(compute_map_main, ["--gt_dir", output_dir / "ground-truth", "--det_dir",
                                                   output_dir / "detection-results", "--output_dir",
                                                   output_dir / "map", "--no_plot"], capsys)
    assert status == 0, err


def test_detect_errors_name_the_path(tiny_model, bad_voc, tmp_path, capsys):
    from cli.detect import main
    (tmp_path / "a_file").write_text("x")
    notes = tmp_path / "notes.keras"
    notes.write_text("not a model\n")
    cases = [
        (["--model_path", tiny_model, "--dataset_path", tmp_path / "nowhere"], [tmp_path / "nowhere", "not found"]),
        (["--model_path", tiny_model, "--dataset_path", bad_voc, "--split", "nosuch"], ["nosuch.txt", "not found"]),
        (["--model_path", tiny_model, "--dataset_path", bad_voc, "--split", "empty"], ["empty.txt", "no images"]),
        (["--model_path", notes, "--dataset_path", bad_voc, "--split", "bad", "--skip_unknown_labels"], [notes, "not a loadable"]),
        (["--model_path", SOURCE_JPEG, "--dataset_path", bad_voc, "--split", "bad", "--skip_unknown_labels"], [SOURCE_JPEG]),
        (["--model_path", tmp_path / "missing.keras", "--dataset_path", bad_voc, "--split", "bad", "--skip_unknown_labels"],
         [tmp_path / "missing.keras", "not found"]),
        (["--model_path", tiny_model, "--dataset_path", bad_voc, "--split", "bad", "--skip_unknown_labels", "--output_dir", tmp_path / "a_file"],
         [tmp_path / "a_file"]),
    ]
    for argv, fragments in cases:
        output = [] if "--output_dir" in argv else ["--output_dir", tmp_path / "out"]
        status, _, err = run_main(main, argv + output, capsys)
        assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def interrupted_detect(tiny_model, bad_voc, tmp_path, monkeypatch, capsys):
    """detect.py over an earlier run's results, Ctrl-C at the second batch: (status, stderr, output folder)."""
    from cli.detect import main
    from runtime.detector import Detector
    output_dir = tmp_path / "out"
    for folder in ("ground-truth", "detection-results"):
        os.makedirs(output_dir / folder)
        (output_dir / folder / "earlier.txt").write_text("mask 0.5 1 1 5 5\n" if folder[0] == "d" else GT_OK)
    calls = []
    real_detect_batch = Detector.detect_batch

    def interrupted_detect_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_detect_batch(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect_batch", interrupted_detect_batch)
    status, _, err = run_main(main, ["--model_path", tiny_model, "--dataset_path", bad_voc, "--split", "bad", "--skip_unknown_labels",
                                     "--output_dir", output_dir, "--images_per_batch", "8"], capsys)
    return status, err, output_dir


def test_interrupted_detect_leaves_no_half_written_file(interrupted_detect):
    status, err, output_dir = interrupted_detect
    assert_one_line_error(status, err, "interrupted", expected_status=130)
    assert not leftovers(output_dir)
    ground_truth = read_text_files(output_dir / "ground-truth")
    detections = read_text_files(output_dir / "detection-results")
    assert sorted(ground_truth) == sorted(detections)                     # every image has both files or none
    from mAP.voc_ap import read_detection_file, read_ground_truth_file
    for name in ground_truth:                                             # and each file parses whole
        read_ground_truth_file(str(output_dir / "ground-truth" / f"{name}.txt"))
        read_detection_file(str(output_dir / "detection-results" / f"{name}.txt"))


def test_interrupted_detect_keeps_the_earlier_results(interrupted_detect):
    _, _, output_dir = interrupted_detect
    assert read_text_files(output_dir / "ground-truth") == {"earlier": GT_OK}
    assert read_text_files(output_dir / "detection-results") == {"earlier": "mask 0.5 1 1 5 5\n"}


# --- inference.py --img_dir (batch mode), when it exists ---------------------------------------------------

def inference_has_batch_mode():
    with open(os.path.join(REPO_ROOT, "cli", "inference.py"), encoding="utf-8") as handle:   # the command line
        return "--img_dir" in handle.read()


@pytest.mark.slow
@pytest.mark.skipif(not inference_has_batch_mode(), reason="inference.py has no --img_dir batch mode yet")
def test_inference_batch_mode_skips_unusable_images_with_one_reason_each(tiny_model, image_files, tmp_path):
    """One real run over a folder holding every odd and unusable image."""
    output_dir = tmp_path / "annotated"
    run = subprocess.run([sys.executable, INFERENCE, "--model_path", tiny_model, "--img_dir",
                          os.path.dirname(image_files["grey.jpg"]), "--output_dir", str(output_dir)],
                         capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and not lines_starting(run.stderr, "error:")
    skipped = lines_starting(run.stderr, "skipped")
    assert_reasons([line for line in skipped if ".jpg" in line or ".png" in line],
                   list(UNUSABLE_IMAGES.items()))
    assert any(str(len(UNUSABLE_IMAGES)) in line for line in (run.stdout + run.stderr).splitlines()
               if "skipped" in line and ".jpg" not in line)                       # the summary count
    for name, shape in USABLE_IMAGES.items():                                    # annotated under the same name
        assert cv2.imread(str(output_dir / name)).shape == (*shape, 3), name
    assert not any(os.path.exists(output_dir / name) for name in UNUSABLE_IMAGES)
    with open(output_dir / "detections.json", encoding="utf-8") as handle:
        results = json.load(handle)
    assert sorted(record["image"] for record in results["images"]) == sorted(USABLE_IMAGES)
    assert sorted(item["image"] for item in results["skipped"]) == sorted(UNUSABLE_IMAGES)
    assert not leftovers(output_dir)
