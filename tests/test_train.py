"""Smoke tests of train.py on the fixture TFRecords: first run, refusal to overwrite, resume.

The three runs build on each other (module-scoped fixtures, run in this order); each test only reads what
its fixture recorded.
"""
import json
import os
import zipfile

import pytest
import tensorflow as tf

SMALL_RUN = ["--steps_per_epoch", "2", "--batch_size", "2", "--input_size", "(120, 160)", "--no_progress",
             "--val_steps", "1", "--cache_dataset", "false"]


def read_history(folder):
    with open(os.path.join(folder, "history.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def checkpoint_values(folder):
    """(epoch, optimizer iterations) stored in the newest checkpoint of ``folder``."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(folder))
    return (int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, voc_mini_tfrecords):
    root = tmp_path_factory.mktemp("train_smoke")
    paths = {"checkpoint_dir": str(root / "ckpt"), "log_dir": str(root / "logs")}
    paths["args"] = ["train.py", "--checkpoint_dir", paths["checkpoint_dir"], "--log_dir", paths["log_dir"],
                     "--train_tfrecord", voc_mini_tfrecords["train"], "--val_tfrecord", voc_mini_tfrecords["val"],
                     *SMALL_RUN]
    return paths


@pytest.fixture(scope="module")
def first_run(folders, run_script):
    result = run_script([*folders["args"], "--epoch", "1"])
    folder = folders["checkpoint_dir"]
    snapshot = {"files": sorted(os.listdir(folder)) if os.path.isdir(folder) else [],
                "history": read_history(folder) if os.path.isfile(os.path.join(folder, "history.jsonl")) else [],
                "checkpoint": checkpoint_values(folder) if tf.train.latest_checkpoint(folder) else None}
    return result, snapshot


@pytest.fixture(scope="module")
def refused_run(first_run, folders, run_script):
    result = run_script([*folders["args"], "--epoch", "2"])
    return result, sorted(os.listdir(folders["checkpoint_dir"])), read_history(folders["checkpoint_dir"])


@pytest.fixture(scope="module")
def resumed_run(refused_run, folders, run_script):
    return run_script([*folders["args"], "--epoch", "2", "--resume"])


@pytest.mark.slow
def test_first_run_writes_checkpoint_model_history_and_plot(first_run, folders):
    result, snapshot = first_run
    assert result.returncode == 0, result.stderr[-3000:]
    files = snapshot["files"]
    for name in ("checkpoint", "ckpt-1.index", "last.keras", "history.jsonl", "training.png"):
        assert name in files, files
    assert not [name for name in files if "tmp" in name or name.startswith(".export")], files
    assert snapshot["checkpoint"] == (1, 2)
    (record,) = snapshot["history"]
    assert record["epoch"] == 1
    for key in ("loss", "loc", "cls", "lr", "val_loss", "val_map"):
        assert key in record and record[key] == record[key], key     # present and not NaN
    assert 0.0 <= record["val_map"] <= 1.0
    from runtime.model_files import read_model_spec
    spec = read_model_spec(os.path.join(folders["checkpoint_dir"], "last.keras"))   # the spec inside the file
    assert tuple(spec["input_size"]) == (120, 160) and spec["network"] == "rfb_pan"
    assert zipfile.is_zipfile(os.path.join(folders["checkpoint_dir"], "last.keras"))
    assert os.listdir(folders["log_dir"]), "no TensorBoard events written"
    assert "trained to epoch 1" in result.stdout


@pytest.mark.slow
def test_existing_checkpoints_without_resume_are_refused(first_run, refused_run, last_line):
    result, files, history = refused_run
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and last_line(result.stderr) == error_lines[0]
    assert "--resume" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert files == first_run[1]["files"] and history == first_run[1]["history"]   # nothing touched


@pytest.mark.slow
def test_resume_continues_at_epoch_two(first_run, resumed_run, folders):
    assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
    assert "resumed from" in resumed_run.stdout and "(epoch 1, step 2)" in resumed_run.stdout
    history = read_history(folders["checkpoint_dir"])
    assert [record["epoch"] for record in history] == [1, 2]
    assert history[0] == first_run[1]["history"][0]
    assert "val_map" in history[1]
    assert checkpoint_values(folders["checkpoint_dir"]) == (2, 4)
    assert "trained to epoch 2" in resumed_run.stdout


@pytest.mark.slow
def test_missing_tfrecord_is_a_one_line_error(tmp_path, run_script, last_line):
    result = run_script(["train.py", "--checkpoint_dir", str(tmp_path / "ckpt"), "--log_dir", str(tmp_path / "logs"),
                         "--train_tfrecord", str(tmp_path / "missing.tfrecord"), "--epoch", "1"])
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: ") and "missing.tfrecord" in last_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def finished_run(resumed_run, folders, run_script):
    """The finished 2-epoch run resumed again with the same --epoch."""
    return run_script([*folders["args"], "--epoch", "2", "--resume"])


@pytest.mark.slow
def test_best_model_kept_beside_the_last(first_run, resumed_run, folders):
    assert "best.keras" in first_run[1]["files"]                 # epoch 1 is the best so far
    history = read_history(folders["checkpoint_dir"])
    best = max(history, key=lambda record: record["val_map"])
    assert os.path.isfile(os.path.join(folders["checkpoint_dir"], "best.keras"))
    assert f"best.keras: epoch {best['epoch']}" in (first_run[0].stdout + resumed_run.stdout)


@pytest.mark.slow
def test_a_finished_run_resumed_says_how_to_train_further(resumed_run, finished_run):
    assert finished_run.returncode == 0, finished_run.stderr[-3000:]
    assert "this run is finished (epoch 2 of --epoch 2)" in finished_run.stdout
    assert "resume with a higher --epoch" in finished_run.stdout


def test_weights_with_resume_is_refused_in_one_line(tmp_path, capsys):
    import train
    status = train.main(["--checkpoint_dir", str(tmp_path), "--resume", "--weights", "m.keras"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: --weights: not with --resume") and err.count("\n") == 1


def test_notes_of_uneven_epochs_and_a_peak_passed():
    from training.trainer import new_best_map, peak_note, uneven_epoch_note
    assert uneven_epoch_note(100, 32) == ("note: 100 training images in batches of 32: an epoch is 3 steps (96 "
                                          "images); the other 4 open the next epoch (the records stream on); "
                                          "--steps_per_epoch 4 covers them all each epoch")
    assert uneven_epoch_note(96, 32) is None and uneven_epoch_note(6, 32) is None
    history = [{"epoch": 5, "val_map": 0.40}, {"epoch": 10, "val_map": 0.525}, {"epoch": 12},
               {"epoch": 15, "val_map": 0.436}]
    assert [new_best_map(history, record) for record in history] == [True, True, False, False]
    assert peak_note(history) == ("note: validation mAP peaked at 0.5250 (epoch 10) and ended at 0.4360 "
                                  "(epoch 15): best.keras holds epoch 10, last.keras the last")
    assert peak_note(history[:2]) is None and peak_note([{"epoch": 1}]) is None
