"""The script skeleton (cli/) and the faults it reports: unknown flags, full disks, busy or stale output."""
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

import cli.compute_map as compute_map_cli
from components.atomic_io import STAGING_PREFIX, remove_stale_temporaries
from components.config import DEFAULT_SETTINGS
from components.errors import ProjectError, describe_os_error


def dead_pid():
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_unknown_flag_is_one_line_naming_the_closest_valid_flag(capsys):
    assert compute_map_cli.main(["--gt_dri", "somewhere"]) == 2
    assert capsys.readouterr().err == "error: --gt_dri: unknown flag (did you mean --gt_dir?)\n"


def test_an_unknown_flag_with_nothing_close_points_to_help(capsys):
    assert compute_map_cli.main(["--zzzzzz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --zzzzzz: unknown flag; see ") and "--help" in err


def test_os_errors_name_the_path_and_the_cause():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert describe_os_error(full, "/out/a.jpg") == "/out/a.jpg: disk full (no space left on device)"
    denied = PermissionError(errno.EACCES, "Permission denied", "/out/b.jpg")
    assert describe_os_error(denied) == "/out/b.jpg: permission denied"


def test_a_full_disk_while_writing_an_image_names_the_file(tmp_path, monkeypatch):
    from runtime import media

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(media, "open", full_disk, raising=False)
    target = tmp_path / "out.jpg"
    with pytest.raises(ProjectError, match=rf"^{target}: disk full"):
        media.write_image_atomically(str(target), np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = dead_pid()
    stale_file = tmp_path / f"a.jpg.tmp-{dead}"
    stale_folder = tmp_path / f"{STAGING_PREFIX}{dead}-abc"
    live_file = tmp_path / f"b.jpg.tmp-{os.getpid()}"
    for path in (stale_file, live_file):
        path.write_bytes(b"partial")
    stale_folder.mkdir()
    (tmp_path / "keep.jpg").write_bytes(b"done")
    removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == sorted([stale_file.name, stale_folder.name])
    assert sorted(os.listdir(tmp_path)) == sorted([live_file.name, "keep.jpg"])


class NoDetector:
    """Stands in for a Detector: batch mode must refuse before it detects anything."""
    settings = DEFAULT_SETTINGS   # score_threshold 0.5, classes mask and unmask
    model_path = None

    def detect(self, image):
        raise AssertionError("detected in a busy output folder")


def test_a_second_batch_run_into_a_busy_output_folder_is_refused(tmp_path):
    from runtime.batch import LOCK_FILE, run_batch
    images, output = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    output.mkdir()
    (images / "a.jpg").write_bytes(b"not an image")
    (output / LOCK_FILE).write_text(str(os.getppid()))          # a running process holds the folder
    with pytest.raises(ProjectError, match=rf"^{output}: another batch run \(process {os.getppid()}\)"):
        run_batch(NoDetector(), str(images), str(output), progress=False, log=lambda message: None)
    assert (output / LOCK_FILE).read_text() == str(os.getppid())  # not taken from its owner


def test_a_lock_left_by_a_killed_batch_run_is_taken_over_and_released(tmp_path):
    from runtime.batch import LOCK_FILE, run_batch
    images, output = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    output.mkdir()
    (images / "a.jpg").write_bytes(b"not an image")                # skipped: nothing to detect
    (output / LOCK_FILE).write_text(str(dead_pid()))
    (output / f"a.jpg.tmp-{dead_pid()}").write_bytes(b"half an image")
    done, resumed, skipped = run_batch(NoDetector(), str(images), str(output), progress=False,
                                       log=lambda message: None)
    assert (done, resumed, [name for name, _ in skipped]) == (0, 0, ["a.jpg"])
    assert sorted(os.listdir(output)) == ["detections.json", "summary.csv"]   # no lock, no stale temporary


def test_publish_model_leaves_the_old_model_when_writing_fails(tmp_path, tiny_cfg):
    import zipfile

    from runtime.model_files import model_config_path, publish_model, read_model_spec
    output = tmp_path / "m.keras"
    output.write_bytes(b"old model")

    def failing_write(path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(ProjectError, match=rf"^{output}: disk full"):
        publish_model(failing_write, str(output), tiny_cfg)
    assert output.read_bytes() == b"old model" and not os.path.exists(model_config_path(str(output)))
    assert os.listdir(tmp_path) == ["m.keras"]

    def write_archive(path):   # a stand-in .keras archive
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("config.json", "{}")
    publish_model(write_archive, str(output), tiny_cfg)
    assert read_model_spec(str(output))["input_size"] == list(tiny_cfg.model.input_size)   # the spec inside
    assert os.listdir(tmp_path) == ["m.keras"]   # and no sidecar


def run_body(error):
    """cli.run on a parser without flags whose body raises ``error``."""
    import cli

    def body(args, settings):
        raise error
    return cli.run(cli.parser("test", config=False), body, [])


def test_only_project_errors_become_one_line_and_exit_2(capsys):
    assert run_body(ProjectError("x.jpg: file not found")) == 2
    assert capsys.readouterr().err == "error: x.jpg: file not found\n"
    assert run_body(PermissionError(errno.EACCES, "Permission denied", "/out/b.jpg")) == 2
    assert capsys.readouterr().err == "error: /out/b.jpg: permission denied\n"
    for bug in (ValueError("a bug"), KeyError("k"), ZeroDivisionError()):   # a bug keeps its traceback
        with pytest.raises(type(bug)):
            run_body(bug)


def test_a_bug_in_a_script_prints_its_traceback_and_exit_1():
    code = ("import sys, cli\n"
            "def body(args, settings):\n    raise ValueError('a bug')\n"
            "sys.exit(cli.run(cli.parser('t', config=False), body, []))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr and run.stderr.rstrip().endswith("ValueError: a bug")


def test_user_mistakes_of_the_library_are_project_errors():
    from dataset.anchor_kmeans import kmeans_anchors
    from mAP.sets import named_set_dirs
    from mAP.voc_ap import check_iou_threshold
    for call in (lambda: DEFAULT_SETTINGS.replace(score_threshold=1.5), lambda: check_iou_threshold(0),
                 lambda: named_set_dirs(["/nonexistent/set"]), lambda: kmeans_anchors(np.ones((3, 2)), 2)):
        with pytest.raises(ProjectError):
            call()


def script_parsers():
    """{script module: its parser} of every cli/<script>.py."""
    import importlib
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli")
    names = sorted(name[:-3] for name in os.listdir(folder) if name.endswith(".py") and name != "__init__.py")
    modules = [importlib.import_module(f"cli.{name}") for name in names]
    return {module.__name__: module.build_parser() for module in modules if hasattr(module, "build_parser")}


def test_every_script_refuses_the_same_out_of_range_numbers():
    """A numeric flag declared in components/config.py (FLAG_RANGES) is checked alike by every script that has
    it: a value below its range (and above, where bounded) is refused in one line naming the flag."""
    import argparse

    from components.config import FLAG_RANGES
    seen = set()
    for module, parser in script_parsers().items():
        for name, (_, low, high, low_allowed) in FLAG_RANGES.items():
            action = parser._option_string_actions.get(f"--{name}")
            if action is None or action.dest.startswith("cfg_"):   # config keys: their settings group checks them
                continue
            seen.add(name)
            for bad in ([str(low - 1) if low_allowed else str(low)] + ([str(high + 1)] if high is not None else [])):
                with pytest.raises(argparse.ArgumentTypeError, match=r"^must be "):
                    action.type(bad)
            assert action.type(str(low if low_allowed else high)) is not None, (module, name)
    assert seen == set(FLAG_RANGES), f"declared but used by no script: {set(FLAG_RANGES) - seen}"


def test_an_out_of_range_flag_is_one_line_naming_it(capsys):
    import cli.detect
    assert cli.detect.main(["--score_threshold", "1.5", "--dataset_path", "x"]) == 2
    assert capsys.readouterr().err == "error: --score_threshold: must be in [0, 1], got 1.5\n"
