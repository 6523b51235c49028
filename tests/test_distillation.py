"""Distillation of a teacher's flip test (training/distillation.py, the ``distill`` term of network/losses.py):
the loss term, the teacher's soft targets on real fixture images, and the one-line errors of a teacher that
does not fit the run."""
import numpy as np
import pytest
import tensorflow as tf

from components.prior_box import mirror_index, priors_from_config
from network.losses import distillation_class_loss, multibox_loss

NUM_CLASSES = 3
FLIP_SIZE = (128, 192)   # every step (8 ... 64) divides the width: each prior has a mirror image


def softmax(logits):
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def test_distillation_term_is_zero_where_student_and_teacher_agree():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (2, 50, NUM_CLASSES)).astype(np.float32)
    same = distillation_class_loss(logits, softmax(logits)).numpy()
    assert same == pytest.approx(np.zeros((2, 50)), abs=1e-5)
    teacher = softmax(rng.normal(0, 2, logits.shape))
    expected = (teacher * (np.log(teacher) - np.log(softmax(logits)))).sum(-1)
    assert distillation_class_loss(logits, teacher).numpy() == pytest.approx(expected, rel=1e-4)
    assert (expected > 0).all()


def test_distill_adds_its_weight_times_the_term_on_the_selected_priors_only():
    rng = np.random.default_rng(11)
    priors = 200
    targets = np.zeros((2, priors, 5), np.float32)
    targets[:, :6, 4] = 1                                   # 6 positives per image: 18 hard negatives each
    predictions = rng.normal(0, 1, (2, priors, 4 + NUM_CLASSES)).astype(np.float32)
    teacher = softmax(rng.normal(0, 2, (2, priors, NUM_CLASSES))).astype(np.float32)
    plain_loc, plain_cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3, distill=(teacher, 0.5))]
    assert loc == plain_loc
    # the selected priors: the positives and the 18 background priors of the largest cross-entropy
    background_loss = -np.log(softmax(predictions[..., 4:])[..., 0])
    term = distillation_class_loss(predictions[..., 4:], teacher).numpy()
    extra = 0.0
    for b in range(2):
        negatives = 6 + np.argsort(-background_loss[b, 6:])[:18]
        extra += term[b, :6].sum() + term[b, negatives].sum()
    assert cls == pytest.approx(plain_cls + 0.5 * extra / 12, rel=1e-4)
    assert float(multibox_loss(targets, predictions, NUM_CLASSES, 3, distill=(teacher, 0.0))[1]) \
        == pytest.approx(plain_cls, rel=1e-6)


@pytest.fixture(scope="module")
def flip_settings():
    from conftest import make_tiny_cfg
    return make_tiny_cfg().replace(input_size=FLIP_SIZE, network="slim", base_channel=4)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory, flip_settings):
    from network.network import build_model
    from training.trainer import export_model
    rng = np.random.default_rng(1)
    model = build_model(flip_settings)
    for weight in model.weights:   # a fresh model's heads give every class the same score: shake them
        if weight.path.endswith(("kernel", "bias")):
            weight.assign(weight.numpy() + rng.normal(0, 0.1, weight.shape).astype(np.float32))
    return export_model(model, flip_settings, str(tmp_path_factory.mktemp("teacher")))


@pytest.fixture(scope="module")
def shipped_teacher():
    """(the shipped model as the teacher of a run at its own settings, those settings)."""
    from conftest import SHIPPED_MODEL

    from runtime.model_files import load_model_config
    from training.distillation import FlipTeacher
    settings = load_model_config(SHIPPED_MODEL).replace(batch_size=2, cache_dataset=False)
    return FlipTeacher(SHIPPED_MODEL, settings), settings


def test_teacher_targets_are_its_flip_test_and_mirror_with_the_image(shipped_teacher, voc_mini_tfrecords):
    from dataset.tf_dataset_preprocess import load_dataset
    teacher, settings = shipped_teacher
    images, _ = next(iter(load_dataset(voc_mini_tfrecords["train"], settings, training=False, shuffle=False)))
    probabilities = teacher.probabilities(images).numpy()
    assert probabilities.shape[-1] == NUM_CLASSES and probabilities.sum(-1) == pytest.approx(1.0, abs=1e-5)
    # the average over an image and its mirror image is the same, prior for mirrored prior, for either one
    mirrored = teacher.probabilities(tf.reverse(images, axis=[2])).numpy()
    mirror = mirror_index(priors_from_config(settings.model))
    assert mirrored[:, mirror] == pytest.approx(probabilities, abs=1e-4)
    # and it is not the one-pass output: the network alone is not symmetric, and where it finds faces the
    # two passes differ
    one_pass = softmax(teacher.model(images, training=False).numpy()[..., 4:])
    faces = one_pass[..., 1:].max(-1) > 0.5
    assert faces.sum() >= 2
    assert np.abs(one_pass - probabilities)[faces].max() > 0.02


def test_a_teacher_of_another_input_size_is_refused_in_one_line(shipped_teacher):
    from training.distillation import FlipTeacher
    from training.errors import TrainingError
    _, settings = shipped_teacher
    with pytest.raises(TrainingError, match=r"^--distill_teacher: .*mask_detector.keras: its input_size "
                                            r"\[\d+, \d+\] differs from this run's \[240, 320\]$"):
        FlipTeacher(shipped_teacher[0].path, settings.replace(input_size=(240, 320)))


@pytest.mark.slow
def test_train_py_learns_from_a_teacher(teacher_file, voc_mini_tfrecords, tmp_path, run_script, last_line):
    from conftest import SMALL_NETWORK_FLAGS
    folder = tmp_path / "ckpt"
    common = ["train.py", "--train_tfrecord", voc_mini_tfrecords["train"], "--val_tfrecord", voc_mini_tfrecords["val"],
              "--steps_per_epoch", "2", "--batch_size", "2", "--no_progress", "--val_steps", "1", "--epoch", "1",
              "--cache_dataset", "false", "--log_dir", str(tmp_path / "logs"), *SMALL_NETWORK_FLAGS]
    result = run_script([*common, "--input_size", "(128, 192)", "--checkpoint_dir", str(folder),
                         "--distill_teacher", teacher_file])
    assert result.returncode == 0, result.stderr
    assert (folder / "last.keras").is_file()
    refused = run_script([*common, "--input_size", "(120, 160)", "--checkpoint_dir", str(tmp_path / "other"),
                          "--distill_teacher", teacher_file])
    assert refused.returncode == 2
    assert last_line(refused.stderr).startswith("error: --distill_teacher: ") and "input_size" in refused.stderr
    assert not (tmp_path / "other").exists()   # refused before the checkpoint folder is made
