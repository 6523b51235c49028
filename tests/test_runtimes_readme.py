"""The README section 'Use the model from another runtime': each Python snippet runs with its runtime alone (an
isolated interpreter, no project code importable) on the exports of the shipped model and finds the faces of
both sample images that ``runtime.detector.Detector`` finds (one pass, no flip test): every Detector box
(score >= 0.5) has a box of the same class at IoU >= 0.9 in the snippet's output, and the other way round.
The OpenCV DNN snippet also runs with OpenCV 4.x where ``.venv-opencv4`` (built by ``.ci/run``) exists."""
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import README, REPO_ROOT, SHIPPED_MODEL

SECTION = "## Use the model from another runtime"
SAMPLE_IMAGES = ("test_00002330.jpg", "1_Handshaking_Handshaking_1_71.jpg")
SNIPPET_IMAGE = "assets/" + SAMPLE_IMAGES[0]           # the image the snippets name
EXPORT_DIR = "runs/export"                             # where the README's export commands write (the default)
OPENCV4_PYTHON = os.path.join(REPO_ROOT, ".venv-opencv4", "bin", "python")
# sub-heading -> (export format, end to end) the snippet runs; MediaPipe's is tested in its own environment
SNIPPETS = {"LiteRT": ("tflite", True), "ONNX Runtime": ("onnx", True), "OpenCV DNN": ("onnx_decoded", False),
            "TensorFlow SavedModel": ("saved_model", True)}
LINE = re.compile(r"^(\w+) (\d\.\d{3}) (-?\d+) (-?\d+) (-?\d+) (-?\d+)$")
MIN_IOU = 0.9
MARKER = "=== snippet "
RUNNER = """import sys
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    print({marker!r} + name, flush=True)
    with open(path) as handle:
        exec(compile(handle.read(), path, "exec"), {{"__name__": "__main__"}})
"""


def section_text(path=README):
    """The text of the README section (up to the next ``## `` heading); '' when there is none."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if "\n" + SECTION + "\n" not in text:
        return ""
    return text.split("\n" + SECTION + "\n", 1)[1].split("\n## ", 1)[0]


def section_snippets(path=README):
    """{sub-heading: the ```python blocks under it, joined} of the section."""
    snippets = {}
    for part in section_text(path).split("\n### ")[1:]:
        heading, body = part.split("\n", 1)
        blocks = re.findall(r"```python\n(.*?)```", body, re.S)
        if blocks:
            snippets[heading.strip()] = "\n".join(blocks)
    return snippets


def snippet_for(name, snippets):
    """The snippet under the sub-heading that starts with ``name``."""
    found = [code for heading, code in snippets.items() if heading.startswith(name)]
    assert len(found) == 1, f"README section {SECTION!r}: expected one python snippet under '### {name}...'"
    return found[0]


def parse_lines(output):
    """(labels [K], boxes [K, 4] pixels) of the snippet's output lines; fails on any other line."""
    labels, boxes = [], []
    for line in output.splitlines():
        match = LINE.match(line.strip())
        assert match, f"unexpected snippet output line {line!r}"
        labels.append(match.group(1))
        boxes.append([float(value) for value in match.groups()[2:]])
    return labels, np.array(boxes, np.float32).reshape(-1, 4)


def assert_same_faces(labels, boxes, expected):
    """Every expected detection has a box of its class at IoU >= MIN_IOU among ``boxes``, and every box one
    among the expected detections."""
    from components.box_utils import iou_matrix
    assert len(expected) > 0
    overlaps = iou_matrix(expected.boxes, boxes).numpy() if len(boxes) else np.zeros((len(expected), 0))
    same_class = np.array(expected.labels())[:, None] == np.array(labels, dtype=object)[None, :]
    matches = np.where(same_class, overlaps, 0.0) >= MIN_IOU
    assert matches.any(axis=1).all(), ("Detector faces not found", expected.labels(), expected.boxes, labels, boxes)
    assert matches.any(axis=0).all(), ("faces Detector does not find", expected.labels(), expected.boxes, labels, boxes)


@pytest.fixture(scope="module")
def reference():
    """The Detector of the shipped model, one pass (no flip test, one scale), as the exports run."""
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    return Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(flip_test=False, test_scales=[1]))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with ``runs/export/`` (the shipped model's exports the snippets load, made once, named as the
    README's export commands name them) and ``assets/`` (the sample images), where the snippets find them."""
    from deploy.end_to_end import end_to_end_output, export_end_to_end_file
    from deploy.export import default_output, export_model_file
    folder = tmp_path_factory.mktemp("runtimes")
    (folder / "assets").mkdir()
    for name in SAMPLE_IMAGES:
        shutil.copy(os.path.join(REPO_ROOT, "assets", name), folder / "assets")
    (folder / EXPORT_DIR).mkdir(parents=True)
    for fmt, end_to_end in SNIPPETS.values():   # the snippets compare with Detector: the export checks are skipped
        if end_to_end:
            output = folder / EXPORT_DIR / os.path.basename(end_to_end_output(SHIPPED_MODEL, fmt))
            export_end_to_end_file(SHIPPED_MODEL, fmt, str(output), flip_test=False, check_images=[],
                                   log=lambda _: None)
        else:
            output = folder / EXPORT_DIR / os.path.basename(default_output(SHIPPED_MODEL, fmt))
            export_model_file(SHIPPED_MODEL, fmt, str(output), check_images=[], log=lambda _: None)
    return folder


def run_snippets(python, folder, names, isolated=True):
    """{(name, image): stdout} of the README snippets ``names`` run on each sample image, one after the other
    in one interpreter ``python`` (``-I``: the repository is not importable) in ``folder``."""
    snippets = section_snippets()
    arguments = []
    for name in names:
        for image in SAMPLE_IMAGES:
            key = f"{name}|{image}"
            script = folder / f"snippet_{len(arguments)}.py"
            script.write_text(snippet_for(name, snippets).replace(SNIPPET_IMAGE, "assets/" + image))
            arguments += [key, script.name]
    (folder / "runner.py").write_text(RUNNER.format(marker=MARKER))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    run = subprocess.run([python, *(["-I"] if isolated else []), "runner.py", *arguments], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    sections = run.stdout.split(MARKER)[1:]
    return {tuple(part.split("\n", 1)[0].split("|")): part.split("\n", 1)[1] for part in sections}


def sample_rgb(name, decoder="opencv"):
    """The sample image ``name`` as uint8 RGB, decoded as the snippet decodes it: OpenCV, or TensorFlow (the
    SavedModel snippet: its JPEG decoder gives pixels up to 4 levels apart, enough to move a box of a face whose
    candidates score alike)."""
    path = os.path.join(REPO_ROOT, "assets", name)
    if decoder == "tensorflow":
        import tensorflow as tf
        return tf.io.decode_image(tf.io.read_file(path), channels=3).numpy()
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


SNIPPET_DECODER = {"TensorFlow SavedModel": "tensorflow"}   # the others read the image with OpenCV


def test_section_has_a_snippet_per_runtime():
    snippets = section_snippets()
    for name in SNIPPETS:
        code = snippet_for(name, snippets)
        assert SNIPPET_IMAGE in code and EXPORT_DIR + "/" in code
        assert not re.search(r"^\s*(from|import) (components|deploy|network|serving|mAP)\b", code, re.M)
    assert "NMSBoxesBatched" in snippet_for("OpenCV DNN", snippets)


def test_snippets_load_the_files_the_export_commands_write():
    """The README's export commands leave out --output: the snippets' paths are the default outputs."""
    from deploy.end_to_end import end_to_end_output
    from deploy.export import default_output
    snippets = section_snippets()
    for name, (fmt, end_to_end) in SNIPPETS.items():
        path = (end_to_end_output if end_to_end else default_output)(SHIPPED_MODEL, fmt)
        assert os.path.relpath(path, REPO_ROOT) == os.path.join(*EXPORT_DIR.split("/"), os.path.basename(path))
        assert f"{EXPORT_DIR}/{os.path.basename(path)}" in snippet_for(name, snippets), (name, path)
    commands = section_text().split("```bash\n", 1)[1].split("```", 1)[0]
    assert "--output" not in commands and "--format onnx_decoded" in commands
    assert all(fmt in commands for fmt, _ in SNIPPETS.values())


def test_snippet_output_parser_and_matcher():
    from runtime.postprocessing import Detections
    expected = Detections(np.array([[10, 10, 50, 50], [100, 100, 150, 160]], np.float32), np.array([0.9, 0.6]),
                          np.array([1, 2]), ["background", "mask", "unmask"])
    labels, boxes = parse_lines("mask 0.900 10 10 50 51\nunmask 0.600 100 100 150 160\n")
    assert_same_faces(labels, boxes, expected)
    with pytest.raises(AssertionError):
        assert_same_faces(["unmask", "unmask"], boxes, expected)    # wrong class
    with pytest.raises(AssertionError):
        assert_same_faces(labels + ["mask"], np.vstack([boxes, [[300, 300, 340, 340]]]), expected)   # extra face
    with pytest.raises(AssertionError):
        parse_lines("mask 0.9 10 10 50 50")


@pytest.mark.slow
def test_snippets_find_the_detector_faces(workspace, reference):
    outputs = run_snippets(sys.executable, workspace, list(SNIPPETS))
    for name in SNIPPETS:
        for image in SAMPLE_IMAGES:
            labels, boxes = parse_lines(outputs[name, image])
            assert_same_faces(labels, boxes, reference.detect(sample_rgb(image, SNIPPET_DECODER.get(name, "opencv"))))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(OPENCV4_PYTHON),
                    reason=".venv-opencv4 (OpenCV 4.x, built by .ci/run) is absent")
def test_opencv_snippet_runs_in_opencv_4(workspace, reference):
    version = subprocess.run([OPENCV4_PYTHON, "-c", "import cv2; print(cv2.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version.startswith("4."), version
    outputs = run_snippets(OPENCV4_PYTHON, workspace, ["OpenCV DNN"])
    for image in SAMPLE_IMAGES:
        labels, boxes = parse_lines(outputs["OpenCV DNN", image])
        assert_same_faces(labels, boxes, reference.detect(sample_rgb(image)))
