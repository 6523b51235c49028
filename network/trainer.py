"""The training loop behind ``train.py``: eager tf.GradientTape steps, checkpoints, validation, logs."""
import contextlib
import glob
import json
import os
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from components.atomic_io import save_figure_atomically, write_text_atomically
from components.class_list import ClassListError, check_tfrecord_classes
from components.config import tfrecord_paths
from components.detector import postprocess, save_model_config
from components.lr_scheduler import schedule_from_config
from components.prior_box import priors_from_config
from components.run_config import save_run_config
from dataset.tf_dataset_preprocess import load_dataset, parse_example, prepare_for_evaluation
from network.losses import count_positives, multibox_loss
from network.network import build_model

HISTORY_FILE = "history.jsonl"
EXPORT_NAME = "last.keras"
VAL_SCORE_THRESHOLD = 0.01
LABEL_PADDING = -100   # fills the label rows of a validation batch beyond an image's boxes (ignored boxes are -1)


class TrainingError(RuntimeError):
    """Training cannot start or must stop; the message says why."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C) and a checkpoint saved; the message says which."""


@contextlib.contextmanager
def sigint_deferred(redeliver=True):
    """Hold back SIGINT (Ctrl-C) inside the block; one that arrived is delivered again on leaving it
    (``redeliver``) or dropped. Only the main thread can handle signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield   # signals go to the main thread; a handler installed outside Python cannot be put back
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and redeliver:
            signal.raise_signal(signal.SIGINT)


def count_records(tfrecord_path):
    """Number of records in a TFRecord file, or summed over a list of files."""
    if not isinstance(tfrecord_path, str):
        if not tfrecord_path:
            raise TrainingError("--train_tfrecord: no training TFRecord given")
        return sum(count_records(path) for path in tfrecord_path)
    if not os.path.isfile(tfrecord_path):
        raise TrainingError(f"{tfrecord_path}: TFRecord not found (create it with python dataset/voc_to_tfrecord.py, "
                            "--data FILE for a data file's TFRecords)")
    try:
        count = int(tf.data.TFRecordDataset(tfrecord_path).reduce(np.int64(0), lambda total, _: total + 1))
    except tf.errors.OpError as error:
        message = (error.message or type(error).__name__).splitlines()[0]
        raise TrainingError(f"{tfrecord_path}: not a readable TFRecord ({message})") from None
    if count == 0:
        raise TrainingError(f"{tfrecord_path}: holds no records")
    return count


def largest_class_id(tfrecord_path):
    """The largest class id of any box in a TFRecord (-1 when it holds no boxes)."""
    feature = {"image/object/class/label": tf.io.VarLenFeature(tf.int64)}

    def record_max(serialized):
        labels = tf.io.parse_single_example(serialized, feature)["image/object/class/label"].values
        return tf.reduce_max(tf.concat([labels, tf.constant([-1], tf.int64)], axis=0))

    return int(tf.data.TFRecordDataset(tfrecord_path).map(record_max).reduce(
        tf.constant(-1, tf.int64), tf.maximum))


def check_record_classes(tfrecord_path, labels_list):
    """Raise TrainingError when a TFRecord was written for other classes than ``labels_list``: its stored
    class list differs, or (TFRecords without one) it holds class ids beyond the list."""
    try:
        stored = check_tfrecord_classes(tfrecord_path, labels_list, "this run")
    except ClassListError as error:
        raise TrainingError(str(error)) from None
    if stored is None:
        largest = largest_class_id(tfrecord_path)
        if largest >= len(labels_list):
            raise TrainingError(f"{tfrecord_path}: holds class id {largest} but --labels_list {list(labels_list)} "
                                f"has ids 0-{len(labels_list) - 1}: train with the classes it was written with "
                                "(--data FILE or --labels_list), or rewrite it with dataset/voc_to_tfrecord.py")


def fit_warmup(cfg, log):
    """``cfg`` with a warm-up no longer than a fifth of the run when ``warmup_epoch`` would take all of it
    (a printed note says so)."""
    if cfg["warmup_epoch"] < cfg["epoch"]:
        return cfg
    shortened = round(cfg["epoch"] / 5, 2)
    log(f"note: warmup_epoch {cfg['warmup_epoch']} is not shorter than the run ({cfg['epoch']} epochs): "
        f"warm-up shortened to {shortened:g} epochs")
    return {**cfg, "warmup_epoch": shortened}


def build_optimizer(cfg, steps_per_epoch):
    """SGD with Nesterov momentum, the warm-up + multi-step schedule and decoupled weight decay
    (not applied to batch-norm parameters and biases)."""
    optimizer = tf.keras.optimizers.SGD(schedule_from_config(cfg, steps_per_epoch), momentum=cfg["momentum"],
                                        nesterov=True, weight_decay=cfg["weights_decay"])
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """The tf.distribute strategy called ``name``: default (one device), mirrored (all local GPUs, or the
    logical devices configured), multi_worker (several hosts described by the TF_CONFIG variable)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy):
    """Whether this process writes checkpoints and logs: always, except on non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def make_train_step(model, optimizer, cfg, strategy=None):
    """A compiled step: (images, targets) -> (total, localisation, classification) loss, weights updated.

    Under a multi-replica ``strategy`` each replica normalises its summed loss by the number of positive
    priors over *all* replicas, and the optimizer sums the replicas' gradients, so one step equals the
    single-device step on the global batch. The returned losses are summed over replicas (the global loss).
    """
    strategy = strategy or tf.distribute.get_strategy()
    num_classes = len(cfg["labels_list"])

    def replica_step(images, targets):
        context = tf.distribute.get_replica_context()
        global_positives = context.all_reduce(tf.distribute.ReduceOp.SUM, count_positives(targets))
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            loc_loss, class_loss = multibox_loss(targets, predictions, num_classes, cfg["neg_pos_ratio"],
                                                 num_positives=global_positives)
            loss = loc_loss + class_loss
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, loc_loss, class_loss

    @tf.function
    def train_step(images, targets):
        per_replica = strategy.run(replica_step, args=(images, targets))
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica)

    return train_step


def make_eval_step(model, cfg):
    """A compiled step: (images, targets) -> (predictions, localisation loss, classification loss)."""
    num_classes = len(cfg["labels_list"])

    @tf.function
    def eval_step(images, targets):
        predictions = model(images, training=False)
        loc_loss, class_loss = multibox_loss(targets, predictions, num_classes, cfg["neg_pos_ratio"])
        return predictions, loc_loss, class_loss

    return eval_step


def validation_dataset(tfrecord_path, cfg, batch_size):
    """Batches of (images, targets, ground-truth boxes, labels, difficult), padded per batch, no augmentation."""
    from dataset.tf_dataset_preprocess import FEATURES, encode_example_targets
    priors = tf.constant(priors_from_config(cfg))

    def prepare(serialized):
        image, boxes, labels = parse_example(serialized)
        difficult = tf.sparse.to_dense(tf.io.parse_single_example(
            serialized, {"image/object/difficult": FEATURES["image/object/difficult"]})["image/object/difficult"])
        image, boxes = prepare_for_evaluation(image, boxes, cfg["input_size"], cfg["keep_aspect"])
        targets = encode_example_targets(boxes, labels, priors, cfg)
        return image, targets, boxes, labels, tf.cast(difficult, tf.bool)

    dataset = tf.data.TFRecordDataset(tfrecord_path).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.padded_batch(batch_size, padding_values=(0.0, 0.0, 0.0, LABEL_PADDING, False)).prefetch(2)


def validate(eval_step, tfrecord_path, cfg, with_map, max_batches=None, progress=False):
    """Validation loss (and VOC AP@0.5 per class when ``with_map``) of the model behind ``eval_step``.

    Returns a dict: val_loss, val_loc, val_cls and, with mAP, val_map and val_ap_<class>.
    """
    from mAP.compute_mAP import Detections, GroundTruth, evaluate_detections
    names = list(cfg["labels_list"])
    priors = tf.constant(priors_from_config(cfg))
    totals, batches = np.zeros(2), 0
    ground_truth, detections = {}, {}
    dataset = validation_dataset(tfrecord_path, cfg, cfg["batch_size"])
    if max_batches:
        dataset = dataset.take(max_batches)
    for images, targets, gt_boxes, gt_labels, difficult in tqdm(dataset, desc="validate", leave=False,
                                                                disable=not progress):
        predictions, loc_loss, class_loss = eval_step(images, targets)
        totals += [float(loc_loss), float(class_loss)]
        batches += 1
        if not with_map:
            continue
        boxes, scores, classes, valid = postprocess(predictions, priors, cfg, VAL_SCORE_THRESHOLD)
        for index in range(images.shape[0]):
            key = f"{batches}_{index}"
            keep = gt_labels[index].numpy() != LABEL_PADDING
            ground_truth[key] = GroundTruth.from_class_ids(gt_labels[index].numpy()[keep], gt_boxes[index].numpy()[keep],
                                                           difficult[index].numpy()[keep], names)
            count = int(valid[index])
            detections[key] = Detections([names[label] for label in classes[index, :count].numpy()],
                                         scores[index, :count].numpy(), boxes[index, :count].numpy())
    if batches == 0:
        raise TrainingError(f"{tfrecord_path}: no validation records")
    loc, cls = totals / batches
    result = {"val_loss": loc + cls, "val_loc": loc, "val_cls": cls}
    if with_map:
        evaluation = evaluate_detections(ground_truth, detections, iou_threshold=0.5)
        result["val_map"] = evaluation.mean_ap or 0.0
        for name, class_result in evaluation.classes.items():
            if class_result.ap is not None:
                result[f"val_ap_{name}"] = class_result.ap
    return result


def validation_name(tfrecord_path):
    """Short name of a validation source in history keys and logs: the file name without extension."""
    return os.path.splitext(os.path.basename(tfrecord_path))[0]


def validate_all(eval_step, tfrecord_paths, cfg, with_map, max_batches=None, progress=False):
    """:func:`validate` on each validation source. One source: its keys as they are. Several: each source's
    keys suffixed ``:<name>`` (``val_map:val_ilc``), and ``val_loss`` / ``val_map`` the mean over sources."""
    results = {path: validate(eval_step, path, cfg, with_map, max_batches, progress) for path in tfrecord_paths}
    if len(results) == 1:
        return next(iter(results.values()))
    merged = {}
    for path, result in results.items():
        merged.update({f"{key}:{validation_name(path)}": value for key, value in result.items()})
    for key in ("val_loss", "val_loc", "val_cls", "val_map"):
        values = [result[key] for result in results.values() if key in result]
        if values:
            merged[key] = float(np.mean(values))
    return merged


def build_training_model(cfg):
    """The model to train: float32, or with ``cfg['mixed_precision']`` bfloat16 compute on float32 weights
    (Keras "mixed_bfloat16"; the predictions stay float32, so the loss is computed in float32)."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg["mixed_precision"] else "float32")
    try:
        return build_model(cfg)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)   # the policy is global: do not leak it


def float32_copy(model, cfg):
    """``model`` itself when it computes in float32, else a float32 model with its weights (for inference)."""
    if model.dtype_policy.name == "float32":
        return model
    copy = build_model(cfg)
    copy.set_weights(model.get_weights())
    return copy


def export_model(model, cfg, folder, name=EXPORT_NAME):
    """Save ``model`` (as a float32 model) as ``folder/name`` (.keras) with its config beside it, atomically."""
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(dir=folder, prefix=".export-")
    try:
        staged = os.path.join(staging, name)
        float32_copy(model, cfg).save(staged)
        save_model_config(staged, cfg)
        os.replace(staged, os.path.join(folder, name))
        os.replace(os.path.splitext(staged)[0] + ".json", os.path.join(folder, os.path.splitext(name)[0] + ".json"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(folder, name)


def remove_stale_exports(folder):
    """Delete staging folders that an export killed half-way left in ``folder``."""
    for staging in glob.glob(os.path.join(folder, ".export-*")):
        shutil.rmtree(staging, ignore_errors=True)


def read_history(folder):
    """Epoch records written by :func:`train` (list of dicts, oldest first)."""
    path = os.path.join(folder, HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_history(folder, records):
    """Replace the history file atomically with ``records``."""
    write_text_atomically(os.path.join(folder, HISTORY_FILE), "".join(json.dumps(record) + "\n" for record in records))


def plot_history(records, png_path):
    """Plot training/validation loss and validation mAP per epoch to ``png_path`` (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in records]
    figure, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [r["loss"] for r in records], label="train loss")
    loss_axis.plot(epochs, [r.get("val_loss", np.nan) for r in records], label="val loss")
    loss_axis.set_xlabel("epoch"), loss_axis.set_ylabel("multibox loss"), loss_axis.legend(), loss_axis.grid(alpha=.3)
    with_map = [r for r in records if "val_map" in r]
    map_axis.plot([r["epoch"] for r in with_map], [r["val_map"] for r in with_map], "o-", label="mAP")
    for key in sorted({k for r in with_map for k in r if k.startswith("val_map:")}):
        map_axis.plot([r["epoch"] for r in with_map], [r.get(key, np.nan) for r in with_map], "o-",
                      label=f"mAP {key[8:]}", markersize=3)
    for key in sorted({k for r in with_map for k in r if k.startswith("val_ap_")}):
        map_axis.plot([r["epoch"] for r in with_map], [r.get(key, np.nan) for r in with_map], ".--",
                      label=f"AP {key[7:]}")
    map_axis.set_xlabel("epoch"), map_axis.set_ylabel("val AP @ IoU 0.5"), map_axis.set_ylim(0, 1)
    map_axis.legend(), map_axis.grid(alpha=.3)
    figure.tight_layout()
    save_figure_atomically(figure, png_path, format="png", dpi=100)
    plt.close(figure)


def distributed_config(cfg, num_replicas):
    """``cfg`` for ``num_replicas`` replicas: ``batch_size`` stays per replica, the learning rates scale
    linearly with the global batch."""
    scaled = dict(cfg)
    scaled["init_lr"] = cfg["init_lr"] * num_replicas
    return scaled


def warm_start(model, weights_path, log, labels_list=None):
    """Initialise ``model`` from the ``.keras`` file ``weights_path``: every layer whose name and shapes fit."""
    from components.runtimes import ModelLoadError, load_keras_model
    from network.network import transfer_weights
    try:
        source = load_keras_model(weights_path)
    except ModelLoadError as error:
        raise TrainingError(f"--weights: {error}") from None
    copied, fresh = transfer_weights(source, model)
    if not copied:
        raise TrainingError(f"--weights: {weights_path}: no layer fits this network ({model.name})")
    if labels_list is not None:
        from components.detector import load_model_config
        source_labels = list(load_model_config(weights_path)["labels_list"])
        if len(source_labels) != len(labels_list):
            from network.network import transfer_class_rows
            filled = transfer_class_rows(source, model, source_labels, list(labels_list))
            new = [name for name in labels_list if name not in source_labels]
            log(f"fine-tuning: {weights_path} has {len(source_labels) - 1} classes {source_labels[1:]}, this run "
                f"{len(labels_list) - 1} {list(labels_list)[1:]}: new class heads ({len(filled)} start from the "
                f"rows of the shared classes; {', '.join(new) or 'no class'} from scratch)")
        elif source_labels != list(labels_list):
            log(f"note: {weights_path} has classes {source_labels[1:]}, this run {list(labels_list)[1:]}: "
                "its class heads are copied by position")
    log(f"weights from {weights_path}: {len(copied)} layers copied, {len(fresh)} do not fit"
        + (f" ({', '.join(fresh[:6])}{', ...' if len(fresh) > 6 else ''})" if fresh else ""))


def train(cfg, resume=False, steps_per_epoch=None, val_steps=None, progress=True, log=None, strategy="default",
          on_step=None, weights=None):
    """Train per ``cfg``; checkpoints, history, plot and the exported model go to ``cfg['checkpoint_dir']``.

    ``cfg['batch_size']`` is per replica: under ``strategy`` "mirrored" or "multi_worker" the global batch is
    ``batch_size * replicas`` and the learning rate is scaled by the number of replicas. ``on_step``, when
    given, is called after every optimizer step as ``on_step(epoch, step, losses)``: epoch counted from 1,
    step the optimizer's iteration count, losses a dict with loss, loc and cls. ``weights``: a ``.keras``
    model to start from (layers whose name and shapes fit; ignored when resuming from a checkpoint).
    The settings (``cfg``, with a warm-up longer than the run shortened) are saved as ``run_config.json`` in
    the checkpoint folder with the run's first checkpoint. Returns a one-line summary.

    Raises TrainingError when training cannot start, or stops on a non-finite loss or weights (nothing is
    saved then: the last good checkpoint is kept). On KeyboardInterrupt a checkpoint of the current step is
    saved (an epoch whose steps were all taken is first recorded, without validation) and
    TrainingInterrupted, a KeyboardInterrupt, is raised; ``resume`` then continues within that epoch.
    """
    log = log or (lambda message: None)
    cfg = fit_warmup(cfg, log)
    run_settings = dict(cfg)
    tf.keras.utils.set_random_seed(cfg["seed"])
    strategy = make_strategy(strategy)
    replicas = strategy.num_replicas_in_sync
    cfg = distributed_config(cfg, replicas)
    global_batch = cfg["batch_size"] * replicas
    chief = is_chief(strategy)
    num_train = count_records(cfg["train_tfrecord"])
    requested_steps = steps_per_epoch
    steps_per_epoch = steps_per_epoch or max(num_train // global_batch, 1)
    val_paths = [path for path in tfrecord_paths(cfg["val_tfrecord"]) if os.path.isfile(path)] if chief else []
    for path in tfrecord_paths(cfg["val_tfrecord"]) if chief else []:
        if path not in val_paths:
            log(f"{path}: validation TFRecord not found; not validated on it")
    has_val = bool(val_paths)
    for path in val_paths:
        count_records(path)
    for path in tfrecord_paths(cfg["train_tfrecord"]) + val_paths:
        check_record_classes(path, cfg["labels_list"])

    folder = cfg["checkpoint_dir"] if chief else tempfile.mkdtemp(prefix="worker-checkpoints-")
    os.makedirs(folder, exist_ok=True)
    if chief:
        remove_stale_exports(folder)

    with strategy.scope():
        model = build_training_model(cfg)
        optimizer = build_optimizer(cfg, steps_per_epoch)
        optimizer.build(model.trainable_variables)
    # a plain host-side counter, outside the strategy (a mirrored variable cannot be read with int())
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def steps_done():
        """The optimizer's step count (.numpy(): int() cannot read a mirrored variable)."""
        return int(optimizer.iterations.numpy())

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, folder, max_to_keep=2)
    if manager.latest_checkpoint and not resume:
        raise TrainingError(f"{folder}: holds checkpoints already; pass --resume to continue, "
                            "or choose another --checkpoint_dir")
    if replicas > 1:
        log(f"{type(strategy).__name__}: {replicas} replicas, global batch {global_batch}, "
            f"init_lr {cfg['init_lr']:g}")
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resumed from {manager.latest_checkpoint} (epoch {int(epoch)}, step {steps_done()})")
    elif weights:
        warm_start(model, weights, log, cfg["labels_list"])
    history = [r for r in read_history(folder) if r["epoch"] <= int(epoch)]

    # a resumed run continues with fresh (but still repeatable) shuffling and augmentation
    train_data = load_dataset(cfg["train_tfrecord"], cfg, training=True, batch_size=global_batch, repeat=True,
                              cache=cfg["cache_dataset"], seed=cfg["seed"] + int(epoch),
                              shuffle_buffer=max(num_train, 1024))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_iterator = iter(strategy.experimental_distribute_dataset(train_data.with_options(options)))

    train_step = make_train_step(model, optimizer, cfg, strategy)
    eval_step = make_eval_step(model, cfg)
    writer = tf.summary.create_file_writer(cfg["log_dir"] if chief else os.path.join(folder, "logs"))

    saved = (steps_done(), int(epoch)) if manager.latest_checkpoint else None
    settings_saved = False

    def save():
        """Checkpoint the current state unless it is saved already; never saves non-finite weights. The
        run's settings go beside its first checkpoint (a run that stops before one leaves the folder as it was)."""
        nonlocal saved, settings_saved
        if saved == (steps_done(), int(epoch)):
            return
        bad = [variable.name for variable in model.variables if not np.all(np.isfinite(variable.numpy()))]
        if bad:
            raise TrainingError(f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) at "
                                f"step {steps_done()}; stopped, last good checkpoint kept: "
                                f"{manager.latest_checkpoint}")
        manager.save()
        saved = (steps_done(), int(epoch))
        if chief and not settings_saved:
            save_run_config(folder, run_settings, {"steps_per_epoch": requested_steps, "weights": weights})
            settings_saved = True

    def finish_epoch(record):
        """Record the epoch, checkpoint it and export the model; not interrupted half-way by Ctrl-C."""
        with sigint_deferred():
            epoch.assign(record["epoch"])
            history.append(record)
            if chief:   # history first: a crash before the checkpoint leaves an extra record, dropped on resume
                write_history(folder, history)
            if record["epoch"] % cfg["save_freq"] == 0 or record["epoch"] == cfg["epoch"]:
                save()
                if chief:
                    export_model(model, cfg, folder)
            with writer.as_default(step=record["epoch"]):
                for key, value in record.items():
                    if key != "epoch":
                        tf.summary.scalar(key, value)
            if has_val:
                plot_history(history, os.path.join(folder, "training.png"))
            log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def epoch_record(current, mean, steps, elapsed):
        return {"epoch": current, "loss": mean[0], "loc": mean[1], "cls": mean[2],
                "lr": float(optimizer.learning_rate), "images_per_s": steps * global_batch / elapsed,
                "seconds": elapsed}

    pending = None   # an epoch whose steps are all taken but which is not recorded yet
    taken = 0        # steps of the current epoch taken (and their losses added up) in this run
    try:
        while int(epoch) < cfg["epoch"]:
            current = int(epoch) + 1
            first = steps_done() - int(epoch) * steps_per_epoch   # > 0 after an interrupted epoch
            if not 0 <= first < steps_per_epoch:
                if first != 0:
                    log(f"optimizer step {steps_done()} does not fall in epoch {current} of "
                        f"{steps_per_epoch} steps; running the whole epoch")
                first = 0
            totals, taken, started = np.zeros(3), 0, time.time()
            bar = tqdm(range(first, steps_per_epoch), desc=f"epoch {current}/{cfg['epoch']}", unit="step",
                       initial=first, total=steps_per_epoch, disable=not progress, dynamic_ncols=True)
            for step in bar:
                images, targets = next(train_iterator)
                losses = np.array([float(value) for value in train_step(images, targets)])
                if not np.all(np.isfinite(losses)):
                    raise TrainingError(f"non-finite loss {losses.tolist()} at epoch {current} step {step + 1}; "
                                        f"stopped, last good checkpoint kept: {manager.latest_checkpoint}")
                totals, taken = totals + losses, taken + 1
                mean = totals / taken
                bar.set_postfix(loss=f"{mean[0]:.3f}", loc=f"{mean[1]:.3f}", cls=f"{mean[2]:.3f}")
                if on_step is not None:
                    on_step(current, steps_done(), dict(zip(("loss", "loc", "cls"), losses.tolist())))
            pending = epoch_record(current, mean, steps_per_epoch - first, time.time() - started)
            if has_val:
                with_map = cfg["val_map_freq"] > 0 and (current % cfg["val_map_freq"] == 0 or current == cfg["epoch"])
                pending.update(validate_all(eval_step, val_paths, cfg, with_map, val_steps))
            finish_epoch(pending)
            pending = None
    except KeyboardInterrupt:
        with sigint_deferred(redeliver=False):
            if pending is None and taken and steps_done() == (int(epoch) + 1) * steps_per_epoch:
                # interrupted just after the epoch's last step
                pending = epoch_record(current, totals / taken, steps_per_epoch - first, time.time() - started)
            if pending is not None and int(epoch) < pending["epoch"]:
                finish_epoch(pending)   # the epoch's steps are all taken: record it, without validation
            else:
                save()
        done = steps_done() - int(epoch) * steps_per_epoch
        where = f"epoch {int(epoch) + 1}, step {done}/{steps_per_epoch}" if done else f"end of epoch {int(epoch)}"
        raise TrainingInterrupted(f"checkpoint saved ({where}): {manager.latest_checkpoint}") from None
    finally:
        if not chief:
            shutil.rmtree(folder, ignore_errors=True)
    return f"trained to epoch {int(epoch)}; checkpoints in {folder}"
