"""tf.distribute: a MirroredStrategy step equals the single-device step; train.py under mirrored and
multi_worker strategies; chief selection and learning-rate scaling.

Two replicas on a CPU-only machine need the CPU split into two logical devices before TensorFlow
initialises, so everything that trains under a strategy runs in a subprocess.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, SMALL_NETWORK, SMALL_NETWORK_FLAGS

TIMEOUT = 300
SPLIT_CPU = textwrap.dedent("""\
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
""")

# One step from the same weights on the same batch of 4: single device vs two replicas of 2 (the slim network:
# its batch norms and heads are what the strategy must get right, and it traces faster). Prints a JSON
# line: the losses of both, and per weight the largest change of the single-device step and the largest
# difference between the two results.
EQUIVALENCE_SCRIPT = SPLIT_CPU + textwrap.dedent("""\
    import json, sys
    import numpy as np
    from components.config import DEFAULT_SETTINGS
    from dataset.tf_dataset_preprocess import load_dataset
    from network.network import build_model
    from training.trainer import build_optimizer, make_train_step

    settings = DEFAULT_SETTINGS.replace(input_size=(120, 160), batch_size=4, cache_dataset=False, network="slim")
    images, targets = next(iter(load_dataset(sys.argv[2], settings, training=True, seed=1)))
    batch = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)   # the same batch every time

    def build(strategy):
        tf.keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_model(settings)
            optimizer = build_optimizer(settings, steps_per_epoch=10)
            optimizer.build(model.trainable_variables)
        return model, optimizer

    model, optimizer = build(tf.distribute.get_strategy())
    initial = [weight.numpy() for weight in model.weights]
    single = [float(value) for value in make_train_step(model, optimizer, settings)(images, targets)]

    strategy = tf.distribute.MirroredStrategy()
    mirrored_model, mirrored_optimizer = build(strategy)
    for weight, value in zip(mirrored_model.weights, initial):
        weight.assign(value)
    step = make_train_step(mirrored_model, mirrored_optimizer, settings, strategy)
    per_replica_images, per_replica_targets = next(iter(strategy.experimental_distribute_dataset(batch)))
    mirrored = [float(value) for value in step(per_replica_images, per_replica_targets)]
    positives = [int(tf.reduce_sum(tf.cast(t[..., 4] > 0, tf.int32)))
                 for t in strategy.experimental_local_results(per_replica_targets)]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "positives": positives,
        "single": single, "mirrored": mirrored,
        "iterations": [int(optimizer.iterations.numpy()), int(mirrored_optimizer.iterations.numpy())],
        "weights": [{"name": a.path, "trainable": a.trainable,
                     "update": float(np.sqrt(np.sum((a.numpy() - start) ** 2))),
                     "update_max": float(np.abs(a.numpy() - start).max()),
                     "diff": float(np.sqrt(np.sum((a.numpy() - b.numpy()) ** 2))),
                     "diff_max": float(np.abs(a.numpy() - b.numpy()).max())}
                    for a, b, start in zip(model.weights, mirrored_model.weights, initial)]}))
""")


def run_python(args, env=None, timeout=TIMEOUT):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def two_cpu_env(tmp_path):
    """Environment whose Python splits the CPU into two logical devices at start-up (a test-only
    sitecustomize, so that train.py's MirroredStrategy gets two replicas)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SPLIT_CPU)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def small_run(folder, tfrecords):
    return ["train.py", "--checkpoint_dir", str(folder / "ckpt"), "--log_dir", str(folder / "logs"),
            "--train_tfrecord", tfrecords["train"], "--val_tfrecord", tfrecords["val"], "--epoch", "1",
            "--steps_per_epoch", "2", "--batch_size", "2", "--input_size", "(120, 160)", "--val_steps", "1",
            "--cache_dataset", "false", "--no_progress", *SMALL_NETWORK_FLAGS]


def layout(prefix):
    """{variable name: shape} stored in the checkpoint ``prefix``."""
    return dict(tf.train.list_variables(prefix))


def single_device_layout(settings, folder):
    """Layout of a default-strategy checkpoint of train()'s objects (model, optimizer, epoch), untrained."""
    from network.network import build_model
    from training.trainer import build_optimizer
    model = build_model(settings)
    optimizer = build_optimizer(settings, steps_per_epoch=2)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                     epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"))
    return layout(checkpoint.save(str(folder / "ckpt")))


@pytest.mark.slow
def test_mirrored_step_equals_the_single_device_step(tmp_path, voc_mini_tfrecords):
    script = tmp_path / "equivalence.py"
    script.write_text(EQUIVALENCE_SCRIPT)
    result = run_python([str(script), REPO_ROOT, voc_mini_tfrecords["train"]])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["iterations"] == [1, 1]
    assert min(report["positives"]) > 0, report["positives"]   # both replicas see faces
    single, mirrored = np.array(report["single"]), np.array(report["mirrored"])
    assert np.isfinite(single).all()
    # (total, loc, cls). Synchronised batch norm sums its statistics across replicas in float32, which moves
    # the predictions by ~1e-4 relative: the total and classification losses agree to 1e-5, the (smaller)
    # localisation loss to 3e-5. Normalising by each replica's own positives would double them.
    np.testing.assert_allclose(mirrored[[0, 2]], single[[0, 2]], rtol=1e-5)
    np.testing.assert_allclose(mirrored[1], single[1], rtol=3e-5)

    def relative(trainable):
        rows = [row for row in report["weights"] if row["trainable"] == trainable]
        diff = np.sqrt(sum(row["diff"] ** 2 for row in rows))
        update = np.sqrt(sum(row["update"] ** 2 for row in rows))
        assert update > 0
        return diff / update, max(row["diff_max"] for row in rows) / max(row["update_max"] for row in rows)
    # Trainable weights: float noise in the statistics also flips a few near-tied hard negatives, so the
    # updates differ by a few % (measured 0.02-0.05 of the update); a missing gradient sum, per-replica loss
    # normalisation or unsynchronised batch norm give 0.5 and more.
    l2, largest = relative(trainable=True)
    assert l2 < 0.15 and largest < 0.15, (l2, largest)
    # Batch-norm moving statistics: measured 2e-4 of the update; per-replica statistics give 0.9.
    l2, largest = relative(trainable=False)
    assert l2 < 2e-3 and largest < 2e-3, (l2, largest)


@pytest.mark.slow
def test_train_py_mirrored_on_two_logical_cpus(tmp_path, voc_mini_tfrecords, tiny_cfg):
    from runtime.adapters import load_keras_model
    from training.trainer import read_history
    # with the weight EMA too: it is updated in cross-replica context, after the replicas' step
    result = run_python(small_run(tmp_path, voc_mini_tfrecords) + ["--strategy", "mirrored", "--ema_decay", "0.9"],
                        env=two_cpu_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas, global batch 4" in result.stdout
    folder = str(tmp_path / "ckpt")
    state = tf.train.get_checkpoint_state(folder)
    assert [os.path.basename(path) for path in state.all_model_checkpoint_paths] == ["ckpt-1"]
    assert sorted(name for name in os.listdir(folder) if name.startswith("ckpt-")) == \
        ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    reader = tf.train.load_checkpoint(state.model_checkpoint_path)
    assert int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")) == 1
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    # every variable saved once, exactly as a single-device run lays it out, plus the averages
    saved = layout(state.model_checkpoint_path)
    averages = [name for name in saved if name.startswith("average/")]
    assert averages and all(np.all(np.isfinite(reader.get_tensor(name))) for name in averages
                            if name.startswith("average/averages/"))
    assert {name: shape for name, shape in saved.items() if name not in averages} == \
        single_device_layout(tiny_cfg.replace(**SMALL_NETWORK), tmp_path)
    assert [record["epoch"] for record in read_history(folder)] == [1]
    assert load_keras_model(os.path.join(folder, "last.keras")).output_shape[-1] == 4 + 3


@pytest.mark.slow
def test_train_py_multi_worker_single_localhost_worker(tmp_path, voc_mini_tfrecords):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    tf_config = {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}}
    result = run_python(small_run(tmp_path, voc_mini_tfrecords) + ["--strategy", "multi_worker"],
                        env={"TF_CONFIG": json.dumps(tf_config)}, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained to epoch 1" in result.stdout
    folder = str(tmp_path / "ckpt")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(folder))
    assert int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    assert os.path.isfile(os.path.join(folder, "last.keras"))


def fake_strategy(monkeypatch, tf_config):
    """A strategy-like object whose cluster resolver reads ``tf_config`` as the TF_CONFIG variable."""
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    return types.SimpleNamespace(cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())


CHIEF_AND_WORKERS = {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"]}
WORKERS_ONLY = {"worker": ["host0:2222", "host1:2222"]}


@pytest.mark.parametrize("cluster, task, chief", [
    (CHIEF_AND_WORKERS, {"type": "chief", "index": 0}, True),
    (CHIEF_AND_WORKERS, {"type": "worker", "index": 0}, False),
    (CHIEF_AND_WORKERS, {"type": "worker", "index": 1}, False),
    (WORKERS_ONLY, {"type": "worker", "index": 0}, True),
    (WORKERS_ONLY, {"type": "worker", "index": 1}, False),
    ({**WORKERS_ONLY, "evaluator": ["host2:2222"]}, {"type": "evaluator", "index": 0}, False),
])
def test_is_chief_follows_tf_config(monkeypatch, cluster, task, chief):
    from training.trainer import is_chief
    assert is_chief(fake_strategy(monkeypatch, {"cluster": cluster, "task": task})) is chief


def test_is_chief_without_a_cluster(monkeypatch):
    from training.trainer import is_chief
    assert is_chief(tf.distribute.get_strategy())
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief(types.SimpleNamespace(cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver()))


def test_distributed_config_scales_the_learning_rate_not_the_batch():

    from components.config import DEFAULT_SETTINGS
    from training.trainer import distributed_config
    before = DEFAULT_SETTINGS.flat()
    scaled = distributed_config(DEFAULT_SETTINGS, 4)
    assert scaled.train.init_lr == pytest.approx(4 * DEFAULT_SETTINGS.train.init_lr)
    assert scaled.train.batch_size == DEFAULT_SETTINGS.train.batch_size        # per replica
    assert {key: value for key, value in scaled.flat().items() if key != "init_lr"} == \
        {key: value for key, value in DEFAULT_SETTINGS.flat().items() if key != "init_lr"}
    assert distributed_config(DEFAULT_SETTINGS, 1) == DEFAULT_SETTINGS and \
        distributed_config(DEFAULT_SETTINGS, 1) is not DEFAULT_SETTINGS
    assert DEFAULT_SETTINGS.flat() == before                  # the shared settings are not modified


def test_unknown_strategy_is_a_training_error():
    from training.trainer import TrainingError, make_strategy
    with pytest.raises(TrainingError, match="unknown strategy 'tpu'"):
        make_strategy("tpu")
