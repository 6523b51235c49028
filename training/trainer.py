"""Training: eager tf.GradientTape steps, checkpoints, validation, logs. ``Trainer`` holds the state of one
run (epoch, step, history) and has one short method per part of an epoch; :func:`train` runs it."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from components.atomic_io import remove_stale_temporaries
from components.class_list import ClassListError
from components.lr_scheduler import schedule_from_config
from components.prior_box import priors_from_config
from components.run_config import save_run_config
from dataset.tf_dataset_preprocess import load_dataset
from dataset.tfrecord_checks import TFRecordError, check_record_classes, count_records
from mAP.evaluation import evaluate, map_or_zero
from network.losses import count_positives, multibox_loss
from network.network import build_model
from network.weight_average import WeightAverage
from runtime.adapters import ModelRuntime
from runtime.detector import Detector
from runtime.model_files import load_model_config, publish_model
from training.distillation import FlipTeacher
from training.distribution import distributed_config, is_chief, make_strategy
from training.errors import TrainingError, TrainingInterrupted
from training.history import PLOT_FILE, plot_history, read_history, write_history

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager
    from typing import Any

    import keras

    from components.config import Settings

EXPORT_NAME = "last.keras"
BEST_NAME = "best.keras"   # the model of the best validation mAP so far
VAL_SCORE_THRESHOLD = 0.01


@contextlib.contextmanager
def sigint_deferred(redeliver: bool = True) -> Iterator[None]:
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


@contextlib.contextmanager
def records_checked() -> Iterator[None]:
    """Inside the block, a TFRecord the run cannot use (``dataset.tfrecord_checks``: TFRecordError, or
    ClassListError) stops it as a TrainingError with the same message."""
    try:
        yield
    except (TFRecordError, ClassListError) as error:
        raise TrainingError(str(error)) from None


def uneven_epoch_note(num_train: int, global_batch: int) -> str | None:
    """The note for a training set that batches do not divide (None when they do): an epoch is the whole
    batches, and the records stream on across epochs, so the rest open the next epoch."""
    rest = num_train % global_batch
    if num_train <= global_batch or rest == 0:
        return None
    steps = num_train // global_batch
    return (f"note: {num_train} training images in batches of {global_batch}: an epoch is {steps} steps "
            f"({steps * global_batch} images); the other {rest} open the next epoch (the records stream on); "
            f"--steps_per_epoch {steps + 1} covers them all each epoch")


def new_best_map(history: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    """Whether ``record`` (an epoch with ``val_map``) beats every earlier ``val_map`` of ``history``."""
    if "val_map" not in record:
        return False
    earlier = [r["val_map"] for r in history if "val_map" in r and r["epoch"] < record["epoch"]]
    return not earlier or record["val_map"] > max(earlier)


def peak_note(history: Sequence[Mapping[str, Any]]) -> str | None:
    """A note when the last validation mAP of ``history`` is below its peak (None otherwise)."""
    scored = [r for r in history if "val_map" in r]
    if not scored:
        return None
    best = max(scored, key=lambda r: r["val_map"])
    last = scored[-1]
    if last["val_map"] >= best["val_map"]:
        return None
    return (f"note: validation mAP peaked at {best['val_map']:.4f} (epoch {best['epoch']}) and ended at "
            f"{last['val_map']:.4f} (epoch {last['epoch']}): {BEST_NAME} holds epoch {best['epoch']}, "
            f"{EXPORT_NAME} the last")


def fit_warmup(settings: Settings, log: Callable[[str], Any]) -> Settings:
    """``settings`` with a warm-up no longer than a fifth of the run when ``warmup_epoch`` would take all of it
    (a logged note says so)."""
    train = settings.train
    if train.warmup_epoch < train.epoch:
        return settings
    shortened = round(train.epoch / 5, 2)
    log(f"note: warmup_epoch {train.warmup_epoch} is not shorter than the run ({train.epoch} epochs): "
        f"warm-up shortened to {shortened:g} epochs")
    return settings.replace(warmup_epoch=shortened)


def build_optimizer(settings: Settings, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD with Nesterov momentum, the warm-up + multi-step schedule and decoupled weight decay
    (not applied to batch-norm parameters and biases)."""
    train = settings.train
    optimizer = tf.keras.optimizers.SGD(schedule_from_config(train, steps_per_epoch), momentum=train.momentum,
                                        nesterov=True, weight_decay=train.weights_decay)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def loss_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``multibox_loss`` for ``settings`` (the model spec: classes, priors, variances; the
    train group: neg_pos_ratio, focal_gamma, diou_loss_weight, quality_targets): num_classes, neg_pos_ratio,
    focal_gamma, diou (None when ``diou_loss_weight`` is 0, else (weight, the priors at the spec's input_size,
    variances)) and quality (None unless ``quality_targets``, else (priors, variances))."""
    spec, train = settings.model, settings.train
    weight = float(train.diou_loss_weight)
    boxes = ((tf.constant(priors_from_config(spec), tf.float32), tuple(spec.variances))
             if weight > 0 or train.quality_targets else None)
    return {"num_classes": spec.num_classes, "neg_pos_ratio": train.neg_pos_ratio,
            "focal_gamma": float(train.focal_gamma), "diou": (weight, *boxes) if weight > 0 else None,  # type: ignore[misc]
            "quality": boxes if train.quality_targets else None}


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, settings: Settings,
                    strategy: tf.distribute.Strategy | None = None,
                    average: WeightAverage | None = None,
                    teacher: FlipTeacher | None = None) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """A compiled step: (images, targets) -> (total, localisation, classification) loss, weights updated
    (and ``average``, a WeightAverage, moved towards them). With a ``teacher`` (``distill_teacher``) the class
    loss also learns its flip test's class probabilities, ``distill_weight`` times.

    Under a multi-replica ``strategy`` each replica normalises its summed loss by the number of positive
    priors over *all* replicas, and the optimizer sums the replicas' gradients, so one step equals the
    single-device step on the global batch. The returned losses are summed over replicas (the global loss).
    """
    strategy = strategy or tf.distribute.get_strategy()
    options = loss_options(settings)

    def replica_step(images, targets):
        context = tf.distribute.get_replica_context()
        global_positives = context.all_reduce(tf.distribute.ReduceOp.SUM, count_positives(targets))
        distill = None if teacher is None else (teacher.probabilities(images), float(settings.train.distill_weight))
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            loc_loss, class_loss = multibox_loss(targets, predictions, num_positives=global_positives,
                                                 distill=distill, **options)
            loss = loc_loss + class_loss
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, loc_loss, class_loss

    @tf.function
    def train_step(images, targets):
        per_replica = strategy.run(replica_step, args=(images, targets))
        if average is not None:   # cross-replica context: the replicas' weights are equal after the step
            average.update(optimizer.iterations)
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica)

    return train_step


def make_loss_step(settings: Settings) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A compiled step: (targets, predictions) -> (localisation, classification) loss of ``settings`` (one per
    settings object, which is frozen and hashable, so that validation traces it once per run)."""
    return _cached_loss_step(settings)


@functools.lru_cache(maxsize=4)
def _cached_loss_step(settings: Settings) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    options = loss_options(settings)

    @tf.function(reduce_retracing=True)
    def loss_step(targets, predictions):
        return multibox_loss(targets, predictions, **options)

    return loss_step


def validate(detector: Detector, tfrecord_path: str, settings: Settings, with_map: bool,
             max_batches: int | None = None, progress: bool = False) -> dict[str, float]:
    """Validation loss (and VOC AP@0.5 per class when ``with_map``) of ``detector`` (the model in training,
    single pass) on one TFRecord, through ``mAP.evaluation.evaluate``.

    Returns a dict: val_loss, val_loc, val_cls and, with mAP, val_map and val_ap_<class>.
    """
    loss_step = make_loss_step(settings)
    totals = []

    def add_loss(predictions, targets) -> None:
        totals.append([float(value) for value in loss_step(targets, tf.convert_to_tensor(predictions))])

    evaluation = evaluate(detector, tfrecord_path, VAL_SCORE_THRESHOLD, settings.train.batch_size, max_batches,
                          progress, on_batch=add_loss, compute_map=with_map)
    loc, cls = np.mean(totals, axis=0)
    result = {"val_loss": float(loc + cls), "val_loc": float(loc), "val_cls": float(cls)}
    if with_map:
        result["val_map"] = map_or_zero(evaluation)
        for name, class_result in evaluation.classes.items():  # type: ignore[union-attr]   # computed with_map
            if class_result.ap is not None:
                result[f"val_ap_{name}"] = class_result.ap
    return result


def validation_name(tfrecord_path: str) -> str:
    """Short name of a validation source in history keys and logs: the file name without extension."""
    return os.path.splitext(os.path.basename(tfrecord_path))[0]


def validate_all(detector: Detector, tfrecord_paths: Sequence[str], settings: Settings, with_map: bool,
                 max_batches: int | None = None, progress: bool = False) -> dict[str, float]:
    """:func:`validate` on each validation source. One source: its keys as they are. Several: each source's
    keys suffixed ``:<name>`` (``val_map:val_ilc``), and ``val_loss`` / ``val_map`` the mean over sources."""
    results = {path: validate(detector, path, settings, with_map, max_batches, progress) for path in tfrecord_paths}
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


def build_training_model(settings: Settings) -> keras.Model:
    """The model to train: float32, or with ``settings.train.mixed_precision`` bfloat16 compute on float32 weights
    (Keras "mixed_bfloat16"; the predictions stay float32, so the loss is computed in float32)."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16" if settings.train.mixed_precision else "float32")
    try:
        return build_model(settings)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)   # the policy is global: do not leak it


def float32_copy(model: keras.Model, settings: Settings) -> keras.Model:
    """``model`` itself when it computes in float32, else a float32 model with its weights (for inference)."""
    if model.dtype_policy.name == "float32":
        return model
    copy = build_model(settings)
    copy.set_weights(model.get_weights())
    return copy


def export_model(model: keras.Model, settings: Settings, folder: str, name: str = EXPORT_NAME) -> str:
    """Save ``model`` (as a float32 model) as ``folder/name`` (.keras) with its model spec inside, atomically
    (``runtime.model_files.publish_model``). Returns the path."""
    os.makedirs(folder, exist_ok=True)
    inference_model = float32_copy(model, settings)
    return publish_model(inference_model.save, os.path.join(folder, name), settings)


def warm_start(model: keras.Model, weights_path: str, log: Callable[[str], Any],
               labels_list: Sequence[str] | None = None) -> None:
    """Initialise ``model`` from the ``.keras`` file ``weights_path``: every layer whose name and shapes fit;
    with ``labels_list`` (this run's classes) and a model of another class count, the class heads keep the
    rows of the classes both share (``network.network.transfer_class_rows``)."""
    from network.network import transfer_weights
    from runtime.adapters import ModelLoadError, load_keras_model
    try:
        source = load_keras_model(weights_path)
    except ModelLoadError as error:
        raise TrainingError(f"--weights: {error}") from None
    copied, fresh = transfer_weights(source, model)
    if not copied:
        raise TrainingError(f"--weights: {weights_path}: no layer fits this network ({model.name})")
    if labels_list is not None:
        log_class_transfer(source, model, weights_path, list(labels_list), log)
    log(f"weights from {weights_path}: {len(copied)} layers copied, {len(fresh)} do not fit"
        + (f" ({', '.join(fresh[:6])}{', ...' if len(fresh) > 6 else ''})" if fresh else ""))


def log_class_transfer(source: keras.Model, model: keras.Model, weights_path: str, labels_list: Sequence[str],
                       log: Callable[[str], Any]) -> None:
    """Fine-tuning to another class list: fill the new class heads from the shared classes' rows, and say so."""
    source_labels = list(load_model_config(weights_path).model.labels_list)
    if len(source_labels) != len(labels_list):
        from network.network import transfer_class_rows
        filled = transfer_class_rows(source, model, source_labels, labels_list)
        new = [name for name in labels_list if name not in source_labels]
        log(f"fine-tuning: {weights_path} has {len(source_labels) - 1} classes {source_labels[1:]}, this run "
            f"{len(labels_list) - 1} {labels_list[1:]}: new class heads ({len(filled)} start from the "
            f"rows of the shared classes; {', '.join(new) or 'no class'} from scratch)")
    elif source_labels != labels_list:
        log(f"note: {weights_path} has classes {source_labels[1:]}, this run {labels_list[1:]}: "
            "its class heads are copied by position")


class EpochProgress:
    """The epoch being run: its number, the step it started from (> 0 after an interrupted epoch), the losses
    (total, loc, cls) summed over the steps taken in this run, and when it began."""

    def __init__(self, epoch: int, first: int) -> None:
        self.epoch, self.first = epoch, first
        self.totals, self.taken, self.started = np.zeros(3), 0, time.time()

    def add(self, losses: np.ndarray) -> None:
        self.totals, self.taken = self.totals + losses, self.taken + 1

    def mean(self) -> np.ndarray:
        return self.totals / max(self.taken, 1)


class Trainer:
    """One training run per ``settings``: the model, optimizer and checkpoint, the epoch and step reached, and
    the history. :meth:`run` trains to ``settings.train.epoch``; see :func:`train` for the arguments."""

    def __init__(self, settings: Settings, resume: bool = False, steps_per_epoch: int | None = None,
                 val_steps: int | None = None, progress: bool = True, log: Callable[[str], Any] | None = None,
                 strategy: str = "default", on_step: Callable[..., Any] | None = None,
                 weights: str | None = None) -> None:
        self.log = log or (lambda message: None)
        self.progress, self.on_step, self.val_steps = progress, on_step, val_steps
        settings = fit_warmup(settings, self.log)
        # saved as run_config.json with the first checkpoint (before any scaling for replicas)
        self.run_settings = settings
        self.requested_steps, self.weights, self.settings_saved = steps_per_epoch, weights, False
        tf.keras.utils.set_random_seed(settings.train.seed)
        self.strategy = make_strategy(strategy)
        replicas = self.strategy.num_replicas_in_sync
        self.settings = settings = distributed_config(settings, replicas)
        train = settings.train
        self.global_batch = train.batch_size * replicas
        self.chief = is_chief(self.strategy)
        with records_checked():
            num_train = count_records(settings.data.train_tfrecord)
            self.steps_per_epoch = steps_per_epoch or max(num_train // self.global_batch, 1)
            note = None if steps_per_epoch else uneven_epoch_note(num_train, self.global_batch)
            if note and self.chief:
                self.log(note)
            self.val_paths = self._validation_sources() if self.chief else []
            for path in (*settings.data.train_tfrecord, *self.val_paths):
                check_record_classes(path, settings.model.labels_list)
        # a teacher that does not fit the run stops it before any folder or model is made
        teacher = FlipTeacher(train.distill_teacher, settings) if train.distill_teacher else None
        self.folder = train.checkpoint_dir if self.chief else tempfile.mkdtemp(prefix="worker-checkpoints-")
        os.makedirs(self.folder, exist_ok=True)
        if self.chief:
            remove_stale_temporaries(self.folder)
        with self.strategy.scope():
            self.model = build_training_model(settings)
            self.optimizer = build_optimizer(settings, self.steps_per_epoch)
            self.optimizer.build(self.model.trainable_variables)
            self.average = WeightAverage(self.model, train.ema_decay) if train.ema_decay > 0 else None
        # a plain host-side counter, outside the strategy (a mirrored variable cannot be read with int())
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch,
                                              **({"average": self.average} if self.average else {}))
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.folder, max_to_keep=2)
        self._start(resume, weights, replicas)
        self.history = [r for r in read_history(self.folder) if r["epoch"] <= self.epochs_done]
        self.train_iterator = self._training_iterator(num_train)
        self.train_step = make_train_step(self.model, self.optimizer, settings, self.strategy, self.average, teacher)
        self.detector = Detector(ModelRuntime(self.model), settings.replace(flip_test=False))
        self.writer = tf.summary.create_file_writer(train.log_dir if self.chief
                                                    else os.path.join(self.folder, "logs"))
        self.saved = (self.steps_done, self.epochs_done) if self.manager.latest_checkpoint else None
        self.current: EpochProgress | None = None   # EpochProgress of the epoch being run
        self.pending: dict[str, Any] | None = None   # an epoch whose steps are all taken but which is not recorded yet

    @property
    def steps_done(self) -> int:
        """The optimizer's step count (.numpy(): int() cannot read a mirrored variable)."""
        return int(self.optimizer.iterations.numpy())

    @property
    def epochs_done(self) -> int:
        return int(self.epoch)

    def _validation_sources(self):
        paths = [path for path in self.settings.data.val_tfrecord if os.path.isfile(path)]
        for path in self.settings.data.val_tfrecord:
            if path not in paths:
                self.log(f"{path}: validation TFRecord not found; not validated on it")
        for path in paths:
            count_records(path)
        return paths

    def _start(self, resume, weights, replicas):
        """Restore the newest checkpoint (``resume``), or warm-start from ``weights``."""
        if self.manager.latest_checkpoint and not resume:
            raise TrainingError(f"{self.folder}: holds checkpoints already; pass --resume to continue, "
                                "or choose another --checkpoint_dir")
        if replicas > 1:
            self.log(f"{type(self.strategy).__name__}: {replicas} replicas, global batch {self.global_batch}, "
                     f"init_lr {self.settings.train.init_lr:g}")
        if resume and self.manager.latest_checkpoint:
            self._restore(self.manager.latest_checkpoint)
            self.log(f"resumed from {self.manager.latest_checkpoint} (epoch {self.epochs_done}, "
                     f"step {self.steps_done})")
        elif weights:
            warm_start(self.model, weights, self.log, self.settings.model.labels_list)

    def _restore(self, path) -> None:
        """Restore the checkpoint ``path``; one saved without a weight average starts the average here."""
        saved_average = any(name.startswith("average/") for name, _ in tf.train.list_variables(path))
        if self.average is None or saved_average:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return
        tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch).restore(
            path).assert_existing_objects_matched()
        self.average.reset()
        self.log(f"note: {path} holds no weight average (ema_decay); it starts from the restored weights")

    def averaged(self) -> AbstractContextManager[Any]:
        """Context in which the model holds the weights validation and export use (the EMA, when on)."""
        return self.average.applied() if self.average else contextlib.nullcontext()

    def _training_iterator(self, num_train):
        # a resumed run continues with fresh (but still repeatable) shuffling and augmentation
        settings, train = self.settings, self.settings.train
        data = load_dataset(settings.data.train_tfrecord, settings, training=True, batch_size=self.global_batch,
                            repeat=True, cache=train.cache_dataset, seed=train.seed + self.epochs_done,
                            shuffle_buffer=max(num_train, 1024))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return iter(self.strategy.experimental_distribute_dataset(data.with_options(options)))

    def run(self) -> str:
        """Train to ``settings.train.epoch``; returns a one-line summary (see :func:`train` for what is raised)."""
        last = self.settings.train.epoch
        if self.epochs_done >= last:
            self.log(f"note: this run is finished (epoch {self.epochs_done} of --epoch {last}); to "
                     f"train it further, resume with a higher --epoch (e.g. --epoch {self.epochs_done + 10})")
        try:
            while self.epochs_done < last:
                self.pending = self.run_epoch()
                if self.val_paths:
                    self.pending.update(self.validate(self.pending["epoch"]))
                self.finish_epoch(self.pending)
                self.pending = None
        except KeyboardInterrupt:
            self.handle_interrupt()
        finally:
            if not self.chief:
                shutil.rmtree(self.folder, ignore_errors=True)
        note = peak_note(self.history)
        if note and self.chief:
            self.log(note)
        return f"trained to epoch {self.epochs_done}; checkpoints in {self.folder}"

    def _first_step(self, epoch):
        """Where ``epoch`` starts: after the steps already taken in it (an interrupted epoch), else at 0."""
        first = self.steps_done - (epoch - 1) * self.steps_per_epoch
        if 0 <= first < self.steps_per_epoch:
            return first
        if first != 0:
            self.log(f"optimizer step {self.steps_done} does not fall in epoch {epoch} of "
                     f"{self.steps_per_epoch} steps; running the whole epoch")
        return 0

    def run_epoch(self) -> dict[str, Any]:
        """Take the remaining steps of the next epoch; returns its record (without validation)."""
        epoch = self.epochs_done + 1
        self.current = current = EpochProgress(epoch, self._first_step(epoch))
        bar = tqdm(range(current.first, self.steps_per_epoch), desc=f"epoch {epoch}/{self.settings.train.epoch}",
                   unit="step", initial=current.first, total=self.steps_per_epoch, disable=not self.progress,
                   dynamic_ncols=True)
        for step in bar:
            images, targets = next(self.train_iterator)
            losses = np.array([float(value) for value in self.train_step(images, targets)])
            if not np.all(np.isfinite(losses)):
                raise TrainingError(f"non-finite loss {losses.tolist()} at epoch {epoch} step {step + 1}; "
                                    f"stopped, last good checkpoint kept: {self.manager.latest_checkpoint}")
            current.add(losses)
            mean = current.mean()
            bar.set_postfix(loss=f"{mean[0]:.3f}", loc=f"{mean[1]:.3f}", cls=f"{mean[2]:.3f}")
            if self.on_step is not None:
                self.on_step(epoch, self.steps_done, dict(zip(("loss", "loc", "cls"), losses.tolist())))
        return self.epoch_record(current)

    def epoch_record(self, current: EpochProgress) -> dict[str, Any]:
        """The history record of the epoch ``current`` (an EpochProgress)."""
        mean, elapsed = current.mean(), time.time() - current.started
        return {"epoch": current.epoch, "loss": mean[0], "loc": mean[1], "cls": mean[2],
                "lr": float(self.optimizer.learning_rate),
                "images_per_s": (self.steps_per_epoch - current.first) * self.global_batch / elapsed,
                "seconds": elapsed}

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation loss of ``epoch`` on every source, and its mAP every ``val_map_freq`` epochs."""
        settings, train = self.settings, self.settings.train
        with_map = train.val_map_freq > 0 and (epoch % train.val_map_freq == 0 or epoch == train.epoch)
        with self.averaged():
            result = validate_all(self.detector, self.val_paths, settings, with_map, self.val_steps)
        if self.average and with_map:   # the optimizer's own weights, for comparison: raw_val_map...
            raw = validate_all(self.detector, self.val_paths, settings, with_map, self.val_steps)
            result.update({f"raw_{key}": value for key, value in raw.items() if key.startswith(("val_map", "val_ap"))})
        return result

    def save_checkpoint(self) -> None:
        """Checkpoint the current state unless it is saved already; never saves non-finite weights. The run's
        settings go beside its first checkpoint (a run that stops before one leaves the folder as it was)."""
        if self.saved == (self.steps_done, self.epochs_done):
            return
        bad = [variable.name for variable in self.model.variables if not np.all(np.isfinite(variable.numpy()))]
        if bad:
            raise TrainingError(f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) at "
                                f"step {self.steps_done}; stopped, last good checkpoint kept: "
                                f"{self.manager.latest_checkpoint}")
        self.manager.save()
        self.saved = (self.steps_done, self.epochs_done)
        if self.chief and not self.settings_saved:
            save_run_config(self.folder, self.run_settings,
                            {"steps_per_epoch": self.requested_steps, "weights": self.weights})
            self.settings_saved = True

    def finish_epoch(self, record: dict[str, Any]) -> None:
        """Record the epoch, checkpoint it, export the model (last.keras; best.keras on a new best validation
        mAP); not interrupted half-way by Ctrl-C."""
        with sigint_deferred():
            self.epoch.assign(record["epoch"])
            self.history.append(record)
            if self.chief:   # history first: a crash before the checkpoint leaves an extra record, dropped on resume
                write_history(self.folder, self.history)
            train = self.settings.train
            if record["epoch"] % train.save_freq == 0 or record["epoch"] == train.epoch:
                self.save_checkpoint()
                if self.chief:
                    with self.averaged():
                        export_model(self.model, self.settings, self.folder)
            if self.chief and new_best_map(self.history, record):   # beside last.keras, whatever save_freq
                with self.averaged():
                    export_model(self.model, self.settings, self.folder, BEST_NAME)
                self.log(f"{BEST_NAME}: epoch {record['epoch']}, validation mAP {record['val_map']:.4f}")
            with self.writer.as_default(step=record["epoch"]):
                for key, value in record.items():
                    if key != "epoch":
                        tf.summary.scalar(key, value)
            if self.val_paths:
                plot_history(self.history, os.path.join(self.folder, PLOT_FILE))
            self.log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def handle_interrupt(self) -> None:
        """Ctrl-C: record an epoch whose steps were all taken (without validation), else checkpoint the current
        step; then raise TrainingInterrupted saying where ``--resume`` continues."""
        with sigint_deferred(redeliver=False):
            current = self.current
            if (self.pending is None and current is not None and current.taken
                    and self.steps_done == (self.epochs_done + 1) * self.steps_per_epoch):
                self.pending = self.epoch_record(current)   # interrupted just after the epoch's last step
            if self.pending is not None and self.epochs_done < self.pending["epoch"]:
                self.finish_epoch(self.pending)
            else:
                self.save_checkpoint()
        done = self.steps_done - self.epochs_done * self.steps_per_epoch
        where = (f"epoch {self.epochs_done + 1}, step {done}/{self.steps_per_epoch}" if done
                 else f"end of epoch {self.epochs_done}")
        raise TrainingInterrupted(f"checkpoint saved ({where}): {self.manager.latest_checkpoint}") from None


def train(settings: Settings, resume: bool = False, steps_per_epoch: int | None = None, val_steps: int | None = None,
          progress: bool = True, log: Callable[[str], Any] | None = None, strategy: str = "default",
          on_step: Callable[..., Any] | None = None, weights: str | None = None) -> str:
    """Train per ``settings``; checkpoints, history, plot and the exported model go to
    ``settings.train.checkpoint_dir``.

    ``settings.train.batch_size`` is per replica: under ``strategy`` "mirrored" or "multi_worker" the global batch is
    ``batch_size * replicas`` and the learning rate is scaled by the number of replicas. ``on_step``, when
    given, is called after every optimizer step as ``on_step(epoch, step, losses)``: epoch counted from 1,
    step the optimizer's iteration count, losses a dict with loss, loc and cls. ``weights``: a ``.keras``
    model to start from (layers whose name and shapes fit; ignored when resuming from a checkpoint).
    The settings (with a warm-up longer than the run shortened) are saved as ``run_config.json`` in
    the checkpoint folder with the run's first checkpoint. Returns a one-line summary.

    Raises TrainingError when training cannot start, or stops on a non-finite loss or weights (nothing is
    saved then: the last good checkpoint is kept). On KeyboardInterrupt a checkpoint of the current step is
    saved (an epoch whose steps were all taken is first recorded, without validation) and
    TrainingInterrupted, a KeyboardInterrupt, is raised; ``resume`` then continues within that epoch.
    """
    return Trainer(settings, resume, steps_per_epoch, val_steps, progress, log, strategy, on_step, weights).run()
