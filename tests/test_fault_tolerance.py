"""Fault tolerance of train.py: SIGKILL then --resume, Ctrl-C, a non-finite loss, and --seed repeatability.

The signal tests run train.py through a wrapper that holds it after its first step of epoch 2 and says so on
stderr; the signal is sent then, so it always lands mid-epoch however fast or slow the machine is. The tests
then check the checkpoints on disk. One killed run (module fixture) is the starting point of the resume, NaN
and Ctrl-C tests; each of those works on its own copy.
"""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, SMALL_NETWORK, SMALL_NETWORK_FLAGS

from components.atomic_io import STAGING_PREFIX

STEPS = 6         # per epoch
# checkpoints and resuming do not depend on the network: the smallest one keeps each run short
SMALL_RUN = ["--steps_per_epoch", str(STEPS), "--batch_size", "2", "--input_size", "(120, 160)",
             *SMALL_NETWORK_FLAGS, "--cache_dataset", "false"]
TIMEOUT = 300
HELD = "test: held after the first step of epoch"
# train.py (as ``python train.py ARGS``) with an ``on_step`` that, after the first step of epoch argv[1],
# prints HELD on stderr and sleeps until a signal ends or interrupts it (a Ctrl-C there is a Ctrl-C mid-epoch).
# Ctrl-C gets Python's own handler first: a suite started in the background by a non-interactive shell (nohup
# ... &) hands its children SIGINT ignored, and the Ctrl-C test would then sleep out its timeout.
HOLD_SCRIPT = textwrap.dedent("""\
    import runpy, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import cli   # the environment first, as train.py sets it
    import training.trainer as trainer

    hold_epoch, train = int(sys.argv.pop(1)), trainer.train

    def train_held(*args, **kwargs):
        def on_step(epoch, step, losses):
            if epoch == hold_epoch:
                print(f"%s {epoch}", file=sys.stderr, flush=True)
                time.sleep(%d)
        return train(*args, **kwargs, on_step=on_step)

    trainer.train = train_held
    sys.argv[0] = "train.py"
    runpy.run_path("train.py", run_name="__main__")
""") % (HELD, TIMEOUT)


class Trainer:
    """train.py running in a subprocess, held after its first step of ``hold_epoch`` (see HOLD_SCRIPT); stdout
    and stderr (progress bars included) are collected as it runs."""

    def __init__(self, args, hold_epoch):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(hold_epoch), *args], cwd=REPO_ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.chunks = {"stdout": [], "stderr": []}
        self.readers = [threading.Thread(target=self._read, args=(getattr(self.process, name), name), daemon=True)
                        for name in self.chunks]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, name):
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.chunks[name].append(chunk)

    def text(self, name):
        return b"".join(self.chunks[name]).decode(errors="replace")

    def wait_for(self, condition, what, timeout=TIMEOUT):
        """Poll ``condition()`` until it returns something true; fail if train.py ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            if self.process.poll() is not None:
                self.finish()
                pytest.fail(f"train.py ended (status {self.process.returncode}) before {what}:\n"
                            f"{self.text('stderr')[-3000:]}")
            time.sleep(0.02)
        self.process.kill()
        self.finish()
        pytest.fail(f"timed out waiting for {what}:\n{self.text('stderr')[-3000:]}")

    def wait_until_held(self, epoch):
        """Wait until train.py is held after its first step of ``epoch``."""
        self.wait_for(lambda: f"{HELD} {epoch}\n" in self.text("stderr"), f"the first step of epoch {epoch}")

    def finish(self, timeout=TIMEOUT):
        """Wait for the end; (status, stdout, stderr with the progress bars' carriage returns as newlines)."""
        self.process.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return self.process.returncode, self.text("stdout"), self.text("stderr").replace("\r", "\n")


def train_args(folder, log_dir, tfrecords, *extra):
    """train.py arguments; no validation (test_train.py covers it), which keeps each run short."""
    return ["--checkpoint_dir", str(folder), "--log_dir", str(log_dir), "--train_tfrecord", tfrecords["train"],
            "--val_tfrecord", "", *SMALL_RUN, *extra]


def read_history(folder):
    from training.trainer import read_history as read
    return read(str(folder))


def checkpoint_values(prefix):
    """(epoch, optimizer iterations) stored in the checkpoint ``prefix``; reading it proves it is whole."""
    reader = tf.train.load_checkpoint(prefix)
    return (int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")))


def listed_checkpoints(folder):
    """(latest, all) checkpoint prefixes named by the ``checkpoint`` state file of ``folder``."""
    state = tf.train.get_checkpoint_state(str(folder))
    assert state is not None, f"no checkpoint state file in {folder}: {sorted(os.listdir(folder))}"
    return state.model_checkpoint_path, list(state.all_model_checkpoint_paths)


def file_digests(folder):
    """{relative path: sha1} of every file under ``folder``."""
    digests = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                digests[os.path.relpath(path, folder)] = hashlib.sha1(handle.read()).hexdigest()
    return digests


def error_lines(stderr, prefix):
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, voc_mini_tfrecords):
    """train.py --epoch 3 from scratch, SIGKILLed once epoch 1 is checkpointed and epoch 2 is running.

    Returns a dict: status, the (untouched) folder, its history, and ``copy(name)`` -> a fresh copy of the
    folder to continue from.
    """
    root = tmp_path_factory.mktemp("killed")
    folder = root / "ckpt"
    run = Trainer(train_args(folder, root / "logs", voc_mini_tfrecords, "--epoch", "3"), hold_epoch=2)
    run.wait_until_held(2)
    run.process.send_signal(signal.SIGKILL)
    status, _, _ = run.finish()
    pristine = root / "pristine"
    shutil.copytree(folder, pristine)

    def copy(name):
        target = root / name
        shutil.copytree(pristine, target)
        return target
    return {"status": status, "folder": folder, "copy": copy, "root": root,
            "history": read_history(folder)}


@pytest.mark.slow
def test_sigkill_mid_epoch_leaves_readable_checkpoints_and_resume_completes(killed_run, voc_mini_tfrecords,
                                                                             run_script):
    from runtime.adapters import load_keras_model
    assert killed_run["status"] == -signal.SIGKILL
    folder = killed_run["copy"]("resumed")
    latest, listed = listed_checkpoints(folder)
    assert listed and latest == listed[-1]
    for prefix in listed:
        checkpoint_values(prefix)      # every listed checkpoint is whole
    # the kill landed inside epoch 2: the newest checkpoint is the end of epoch 1
    assert checkpoint_values(latest) == (1, STEPS)
    assert [record["epoch"] for record in killed_run["history"]] == [1]
    model = load_keras_model(str(folder / "last.keras"))
    assert model.output_shape[-1] == 4 + 3

    result = run_script(["train.py", *train_args(folder, killed_run["root"] / "logs-resumed", voc_mini_tfrecords,
                                                 "--epoch", "3", "--resume", "--no_progress")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(epoch 1, step {STEPS})" in result.stdout
    assert checkpoint_values(tf.train.latest_checkpoint(str(folder))) == (3, 3 * STEPS)
    history = read_history(folder)
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert history[0] == killed_run["history"][0]
    assert not [name for name in os.listdir(folder) if name.startswith(STAGING_PREFIX) or ".tmp" in name]


@pytest.mark.slow
def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_checkpoint(killed_run, voc_mini_tfrecords,
                                                                          run_script):
    folder = killed_run["copy"]("exploding")
    before = file_digests(folder)
    # a learning rate of 1e12 (2e11 in warm-up) makes the weights, then the loss, overflow within a few steps
    result = run_script(["train.py", *train_args(folder, killed_run["root"] / "logs-exploding", voc_mini_tfrecords,
                                                 "--epoch", "3", "--resume", "--no_progress", "--init_lr", "1e12")])
    assert result.returncode == 2, result.stderr[-3000:]
    errors = error_lines(result.stderr, "error:")
    assert len(errors) == 1 and last_line(result.stderr) == errors[0], result.stderr[-3000:]
    assert errors[0].startswith("error: non-finite loss") and "at epoch 2 step" in errors[0]
    assert "Traceback" not in result.stderr
    assert file_digests(folder) == before          # checkpoints, history, exported model: all untouched
    latest, _ = listed_checkpoints(folder)
    assert os.path.basename(latest) == "ckpt-1" and latest in errors[0]
    assert checkpoint_values(latest) == (1, STEPS)
    weights = tf.train.load_checkpoint(latest)
    assert all(np.isfinite(weights.get_tensor(name)).all() for name, _ in tf.train.list_variables(latest)
               if name.startswith("model/"))


@pytest.mark.slow
def test_ctrl_c_saves_mid_epoch_and_resume_finishes_that_epoch(killed_run, voc_mini_tfrecords, run_script):
    folder = killed_run["copy"]("interrupted")
    run = Trainer(train_args(folder, killed_run["root"] / "logs-interrupted", voc_mini_tfrecords,
                             "--epoch", "2", "--resume"), hold_epoch=2)
    run.wait_until_held(2)
    run.process.send_signal(signal.SIGINT)
    status, _, stderr = run.finish()
    assert status == 130, stderr[-3000:]
    lines = error_lines(stderr, "interrupted:")
    assert len(lines) == 1 and last_line(stderr) == lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    match = re.match(rf"interrupted: checkpoint saved \(epoch 2, step (\d+)/{STEPS}\): (\S+); continue with --resume$",
                     lines[0])
    assert match, lines[0]
    done, saved = int(match.group(1)), match.group(2)
    assert done == 1     # interrupted in the hold after the epoch's first step
    latest, listed = listed_checkpoints(folder)
    assert latest == saved and os.path.basename(latest) == "ckpt-2"
    assert [checkpoint_values(prefix) for prefix in listed] == [(1, STEPS), (1, STEPS + done)]
    assert [record["epoch"] for record in read_history(folder)] == [1]

    result = run_script(["train.py", *train_args(folder, killed_run["root"] / "logs-interrupted", voc_mini_tfrecords,
                                                 "--epoch", "2", "--resume", "--no_progress")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(epoch 1, step {STEPS + done})" in result.stdout
    # the resumed run takes only the steps epoch 2 still lacked: the schedule position is exact
    assert checkpoint_values(tf.train.latest_checkpoint(str(folder))) == (2, 2 * STEPS)
    assert [record["epoch"] for record in read_history(folder)] == [1, 2]


def step_losses(settings, seed, folder, steps=3):
    """Per-step (loss, loc, cls) of a fresh run of training.trainer.train with ``seed``."""
    from training.trainer import train
    losses = []
    def record(epoch, step, values):
        losses.append([values["loss"], values["loc"], values["cls"]])
    train(settings.replace(seed=seed, checkpoint_dir=str(folder), log_dir=str(folder / "logs")),
          steps_per_epoch=steps, progress=False, on_step=record)
    return np.array(losses)


@pytest.mark.slow
def test_same_seed_repeats_the_step_losses_and_another_seed_does_not(tiny_cfg, voc_mini_tfrecords, tmp_path):
    settings = tiny_cfg.replace(**SMALL_NETWORK, train_tfrecord=voc_mini_tfrecords["train"], val_tfrecord="", epoch=1)
    first = step_losses(settings, 3, tmp_path / "first")
    again = step_losses(settings, 3, tmp_path / "again")
    other = step_losses(settings, 4, tmp_path / "other")
    assert first.shape == (3, 3) and np.isfinite(first).all()
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=0)
    assert not np.allclose(other[:, 0], first[:, 0], rtol=1e-3), (first, other)


@pytest.mark.slow
def test_ctrl_c_between_steps_and_checkpoint_records_the_epoch(tiny_cfg, voc_mini_tfrecords, tmp_path, monkeypatch):
    """Ctrl-C during validation, or right after an epoch's last step, records that epoch (without validation)
    and checkpoints its end, so that --resume starts the next epoch."""
    import training.trainer as trainer
    folder = tmp_path / "ckpt"
    settings = tiny_cfg.replace(**SMALL_NETWORK, train_tfrecord=voc_mini_tfrecords["train"],
                                val_tfrecord=voc_mini_tfrecords["val"],
                                epoch=3, checkpoint_dir=str(folder), log_dir=str(tmp_path / "logs"))

    def interrupted_validation(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "validate", interrupted_validation)
    with pytest.raises(trainer.TrainingInterrupted, match=r"\(end of epoch 1\)"):
        trainer.train(settings, steps_per_epoch=2, progress=False)
    monkeypatch.undo()
    assert checkpoint_values(tf.train.latest_checkpoint(str(folder))) == (1, 2)
    (record,) = read_history(folder)
    assert record["epoch"] == 1 and np.isfinite(record["loss"]) and "val_loss" not in record
    assert os.path.isfile(folder / "training.png") and os.path.isfile(folder / "last.keras")

    def ctrl_c_after_the_last_step(epoch, step, losses):
        if step == 4:
            raise KeyboardInterrupt
    with pytest.raises(trainer.TrainingInterrupted, match=r"\(end of epoch 2\)"):
        trainer.train(settings.replace(val_tfrecord=""), resume=True, steps_per_epoch=2, progress=False,
                      on_step=ctrl_c_after_the_last_step)
    assert checkpoint_values(tf.train.latest_checkpoint(str(folder))) == (2, 4)
    assert [record["epoch"] for record in read_history(folder)] == [1, 2]
