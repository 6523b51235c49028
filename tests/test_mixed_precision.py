"""bfloat16 mixed precision (config ``mixed_precision``) and the training-throughput benchmark."""

import numpy as np
import pytest
import tensorflow as tf

from training.trainer import build_optimizer, build_training_model, float32_copy, make_train_step


def test_mixed_precision_computes_in_bfloat16_and_does_not_leak_the_policy(tiny_cfg):
    model = build_training_model(tiny_cfg.replace(mixed_precision=True))
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.get_layer("stem_conv").kernel.dtype == tf.float32          # weights stay float32
    images = tf.random.uniform([2, *tiny_cfg.model.input_size, 3], -1, 1, seed=1)
    outputs = model(images, training=False)
    assert outputs.dtype == tf.float32
    plain = build_training_model(tiny_cfg)
    assert plain.get_layer("stem_conv").compute_dtype == "float32"


@pytest.mark.slow
def test_float32_copy_keeps_the_weights(tiny_cfg):
    settings = tiny_cfg.replace(mixed_precision=True)
    model = build_training_model(settings)
    copy = float32_copy(model, settings)
    assert copy is not model and copy.get_layer("stem_conv").compute_dtype == "float32"
    for mixed_weight, float_weight in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(mixed_weight, float_weight)
    images = tf.random.uniform([2, *tiny_cfg.model.input_size, 3], -1, 1, seed=2)
    mixed_out, float_out = model(images).numpy(), copy(images).numpy()
    assert np.corrcoef(mixed_out.ravel(), float_out.ravel())[0, 1] > 0.98     # bfloat16 keeps 8 bits of mantissa
    plain = build_training_model(tiny_cfg)
    assert float32_copy(plain, tiny_cfg) is plain


@pytest.mark.slow
def test_a_mixed_precision_step_gives_finite_losses(tiny_cfg, voc_mini_tfrecords):
    from dataset.tf_dataset_preprocess import load_dataset
    settings = tiny_cfg.replace(mixed_precision=True)
    images, targets = next(iter(load_dataset(voc_mini_tfrecords["train"], settings, training=True, seed=0)))
    model = build_training_model(settings)
    step = make_train_step(model, build_optimizer(settings, 10), settings)
    before = [weight.copy() for weight in model.get_weights()]
    losses = [float(value) for value in step(images, targets)]
    assert all(np.isfinite(losses)) and losses[0] > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow
def test_training_benchmark_prints_a_table(voc_mini_tfrecords, tmp_path, capsys):
    import benchmark_training
    output = tmp_path / "table.md"
    # a small network at a small input: the rows, not the speed of the full-size network, are under test
    status = benchmark_training.main(["--train_tfrecord", voc_mini_tfrecords["train"], "--batch_size", "2",
                                      "--input_size", "(120, 160)", "--network", "slim", "--base_channel", "4",
                                      "--steps", "1", "--output", str(output)])
    assert status == 0
    table = output.read_text()
    assert table.startswith("Training throughput, batch 2, input 120x160, network slim (base_channel 4), ")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| what", "| ---"))]
    assert rows[0].startswith("| tf.data pipeline alone") and rows[-1].startswith("| pipeline + train step")
    assert all(float(row.rsplit("|", 2)[1]) > 0 for row in rows)
    assert table in capsys.readouterr().out


def test_training_benchmark_rejects_a_missing_tfrecord(tmp_path, capsys):
    import benchmark_training
    assert benchmark_training.main(["--train_tfrecord", str(tmp_path / "nope.tfrecord")]) == 2
    assert "nope.tfrecord: TFRecord not found" in capsys.readouterr().err
