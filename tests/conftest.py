"""Shared pytest fixtures: the tiny VOC folder in tests/fixtures/voc_mini, a small config and its TFRecords.

Nothing here reads outside the repository: the tests must run on a fresh checkout with only
``requirements.txt`` installed.
"""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # before anything imports TensorFlow

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# subprocesses import this checkout's packages, installed or not
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))

VOC_MINI = os.path.join(REPO_ROOT, "tests", "fixtures", "voc_mini")
ASSETS = os.path.join(REPO_ROOT, "assets")
INFERENCE = os.path.join(REPO_ROOT, "inference.py")
README = os.path.join(REPO_ROOT, "README.md")
# the shipped models (two classes: mask / unmask; three: + incorrectly worn)
SHIPPED_MODEL = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")
SHIPPED_3CLASS_MODEL = os.path.join(REPO_ROOT, "checkpoints", "mask_detector_3class.keras")
# the sample photos: one face per mask class close up, then a crowd
SAMPLE_IMAGE = os.path.join(ASSETS, "test_00002330.jpg")
SAMPLE_IMAGES = [SAMPLE_IMAGE, os.path.join(ASSETS, "1_Handshaking_Handshaking_1_71.jpg")]
TINY_INPUT_SIZE = (120, 160)   # the network is fully convolutional; priors follow ceil(size / step)
# the smallest network, for tests of what does not depend on the network (checkpoints, strategies, the EMA)
SMALL_NETWORK = {"network": "slim", "base_channel": 4}
SMALL_NETWORK_FLAGS = [item for key, value in SMALL_NETWORK.items() for item in (f"--{key}", str(value))]


def make_tiny_cfg():
    """The default settings for fast tests: small input, batch of 2, no dataset cache."""
    from components.config import DEFAULT_SETTINGS
    return DEFAULT_SETTINGS.replace(input_size=TINY_INPUT_SIZE, batch_size=2, cache_dataset=False)


def write_files(folder, files):
    """Write ``{name: text}`` as ``folder/<name>.txt`` (detection / ground-truth files of a set)."""
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, f"{name}.txt"), "w") as handle:
            handle.write(text)


def run_python_script(args, cwd=REPO_ROOT, timeout=300):
    """Run a Python script of the repository in a subprocess with TensorFlow's startup logging silenced."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _last_line(text):
    """The last non-empty line of ``text`` ('' when there is none)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="session")
def run_script():
    """``run_script(args, cwd=REPO_ROOT, timeout=300)`` -> CompletedProcess of ``python *args`` (text output),
    with TF_CPP_MIN_LOG_LEVEL=3 in its environment."""
    return run_python_script


@pytest.fixture(scope="session")
def last_line():
    """``last_line(text)``: the last non-empty line of a process output."""
    return _last_line


@pytest.fixture(scope="session")
def voc_mini():
    """Path of the tiny VOC folder (6 train and 2 val images copied from Maskdata)."""
    return VOC_MINI


@pytest.fixture
def tiny_cfg():
    """A fresh small config per test (tests may change it)."""
    return make_tiny_cfg()


@pytest.fixture(scope="session")
def voc_mini_tfrecords(tmp_path_factory):
    """voc_mini converted once per session: dict with 'train' / 'val' paths and 'reports' per split."""
    from dataset.tfrecord_writer import convert_split
    folder = tmp_path_factory.mktemp("voc_mini_tfrecord")
    cfg = make_tiny_cfg()
    result = {"reports": {}}
    for split in ("train", "val"):
        path = str(folder / f"{split}_mask.tfrecord")
        result["reports"][split] = convert_split(VOC_MINI, split, path, cfg, progress=False)
        result[split] = path
    return result


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a small random 'slim' model (base_channel 4, input 120x160) saved with its config sidecar.
    Shared by the whole session: tests read it, never change it."""
    from network.network import build_model
    from training.trainer import export_model
    config = make_tiny_cfg()
    config = config.replace(network="slim", base_channel=4)
    return export_model(build_model(config), config, str(tmp_path_factory.mktemp("model")), name="tiny.keras")


def truth(*objects):
    """mAP GroundTruth from (label, box) or (label, box, difficult) tuples (boxes in pixels, corner form)."""
    from mAP.voc_ap import GroundTruth
    return GroundTruth([o[0] for o in objects], np.array([o[1] for o in objects], np.float32).reshape(-1, 4),
                       np.array([len(o) > 2 and o[2] for o in objects], bool))


def found(*detections):
    """mAP ScoredBoxes from (label, score, box) tuples (boxes in pixels, corner form)."""
    from mAP.voc_ap import ScoredBoxes
    return ScoredBoxes([d[0] for d in detections], np.array([d[1] for d in detections], np.float32),
                       np.array([d[2] for d in detections], np.float32).reshape(-1, 4))
