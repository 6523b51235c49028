"""Weight EMA (``ema_decay``): the average's arithmetic, that validation and export use it, that it is
checkpointed, and that a checkpoint saved without one resumes with an average started from its weights."""
import numpy as np
import pytest
import tensorflow as tf
from conftest import SMALL_NETWORK

from network.weight_average import WeightAverage


def small_model():
    inputs = tf.keras.Input((3,))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))


def test_average_moves_by_the_decay_and_follows_closely_at_first():
    model = small_model()
    average = WeightAverage(model, decay=0.5)
    start = [w.numpy() for w in average.averages]
    for weight in model.weights:
        weight.assign(tf.convert_to_tensor(weight) + 1.0)
    average.update(tf.constant(1000))   # late step: decay 0.5
    for before, value in zip(start, average.averages):
        np.testing.assert_allclose(value.numpy(), before + 0.5, atol=1e-6)
    average.reset()
    for weight in model.weights:
        weight.assign(tf.convert_to_tensor(weight) + 1.0)
    average.update(tf.constant(0))      # first step: decay min(0.5, 1/10) = 0.1
    for weight, value in zip(model.weights, average.averages):
        np.testing.assert_allclose(value.numpy(), weight.numpy() - 0.1, atol=1e-6)


def test_applied_swaps_the_average_in_and_puts_the_weights_back():
    model = small_model()
    average = WeightAverage(model, decay=0.9)
    own = [w.numpy().copy() for w in model.weights]
    for value in average.averages:
        value.assign(tf.zeros_like(value))
    with average.applied():
        assert all(not np.any(w.numpy()) for w in model.weights)
    for weight, value in zip(model.weights, own):
        np.testing.assert_array_equal(weight.numpy(), value)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)


@pytest.fixture
def ema_settings(tiny_cfg, voc_mini_tfrecords, tmp_path):
    # the smallest network: the average does not depend on it
    return tiny_cfg.replace(**SMALL_NETWORK, train_tfrecord=voc_mini_tfrecords["train"],
                            val_tfrecord=voc_mini_tfrecords["val"], epoch=1, ema_decay=0.9, init_lr=0.05,
                            warmup_epoch=0.5, checkpoint_dir=str(tmp_path / "ckpt"), log_dir=str(tmp_path / "logs"))


@pytest.mark.slow
def test_training_validates_and_exports_the_average(ema_settings, tmp_path):
    from runtime.adapters import load_keras_model
    from training.history import read_history
    from training.trainer import train
    train(ema_settings, steps_per_epoch=3, progress=False)
    (record,) = read_history(ema_settings.train.checkpoint_dir)
    assert "val_map" in record and "raw_val_map" in record   # the EMA's and the optimizer's own weights
    checkpoint = tf.train.latest_checkpoint(ema_settings.train.checkpoint_dir)
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
    assert any(name.startswith("average/") for name in names)
    exported = load_keras_model(f"{ema_settings.train.checkpoint_dir}/last.keras")
    reader = tf.train.load_checkpoint(checkpoint)
    averages = {name: reader.get_tensor(name) for name in names if name.startswith("average/averages/")}
    raw = {name: reader.get_tensor(name) for name in names if name.startswith("model/")}
    exported_values = [w.numpy() for w in exported.weights]
    # every exported weight is one of the averages, and at least one differs from the optimizer's weight
    assert all(any(v.shape == a.shape and np.allclose(v, a) for a in averages.values()) for v in exported_values)
    assert any(not any(v.shape == r.shape and np.allclose(v, r) for r in raw.values()) for v in exported_values)


@pytest.mark.slow
def test_resume_without_a_saved_average_starts_it_from_the_weights(ema_settings):
    from training.trainer import Trainer, train
    ema_settings = ema_settings.replace(val_map_freq=0)   # validation loss only: the mAP is not under test here
    train(ema_settings.replace(ema_decay=0.0), steps_per_epoch=2, progress=False)
    notes = []
    trainer = Trainer(ema_settings.replace(epoch=2), resume=True, steps_per_epoch=2, progress=False, log=notes.append)
    assert trainer.epochs_done == 1 and any("holds no weight average" in note for note in notes)
    for weight, value in zip(trainer.model.weights, trainer.average.averages):
        np.testing.assert_array_equal(value.numpy(), weight.numpy())
    assert "trained to epoch 2" in trainer.run()
