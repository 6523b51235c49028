"""Train the face-mask SSD eagerly with tf.GradientTape.

    python train.py                       # from scratch, settings from components/config.py
    python train.py --resume              # continue from the newest checkpoint in --checkpoint_dir
    python train.py --epoch 150 --batch_size 16 --init_lr 0.005   # any config key can be overridden
    python train.py --data data/ilc2021.yaml --weights checkpoints/mask_detector.keras   # fine-tune, own classes

The run's settings are saved in the checkpoint folder (run_config.json); ``--resume`` uses them and lists the
flags given at resume that change them (the classes, input size, anchors, network and batch size cannot).

Ctrl-C saves a checkpoint of the current step and exits with status 130; ``--resume`` continues within the
interrupted epoch. A non-finite loss stops training with status 2, leaving the last good checkpoint as it was.
"""

import cli
from components.config import DEFAULT_SETTINGS, flag_type, given_settings, group_keys
from components.errors import ProjectError
from components.run_config import load_run_config, resumed_config, run_config_path

# the groups training uses, less the multi-scale test and score threshold of inference (validation runs one
# pass at its own threshold) and the seed (train.py's own --seed)
TRAIN_KEYS = tuple(key for key in group_keys("model", "data", "augment", "match", "train", "detect")
                   if key not in ("seed", "flip_test", "test_scales", "test_small_face", "test_large_face",
                                  "score_threshold"))
DATA_FILE_KEYS = ("labels_list", *group_keys("data"))   # what a --data file sets
STRATEGIES = ("default", "mirrored", "multi_worker")   # training.distribution.STRATEGIES, without TensorFlow


def build_parser():
    parser = cli.parser(__doc__, keys=TRAIN_KEYS, data=True)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--weights", default=None,
                        help="start from this .keras model: every layer whose name and shape fit (fine-tuning)")
    parser.add_argument("--steps_per_epoch", type=flag_type("steps_per_epoch"), default=None,
                        help="optimizer steps per epoch (default: one pass over the training records)")
    parser.add_argument("--val_steps", type=flag_type("val_steps"), default=None,
                        help="limit validation to this many batches")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--strategy", default="default", choices=STRATEGIES,
                        help="tf.distribute strategy: one device, all local GPUs, or several hosts (TF_CONFIG)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config 'seed')")
    return parser


def settings_for_resume(args, settings, log=print):
    """The settings of a resumed run: those saved in the checkpoint folder, changed by the flags (and --data
    file) given now, which are listed; without saved settings (older runs) the flags and defaults, with a
    note. Returns (settings, steps_per_epoch); raises ResumeError / ProjectError on a change the run cannot take."""
    folder = settings.train.checkpoint_dir
    loaded = load_run_config(folder)
    if loaded is None:
        log(f"note: {run_config_path(folder)} not found (a run started before settings were "
            "saved): resuming with the flags given now and the defaults")
        return settings, args.steps_per_epoch
    saved, extra = loaded
    given = given_settings(args)
    if args.data:
        given = {**{key: settings.value(key) for key in DATA_FILE_KEYS}, **given}
    if args.seed is not None:
        given["seed"] = args.seed
    resumed, changes = resumed_config(saved, given, DEFAULT_SETTINGS)
    steps = extra.get("steps_per_epoch")
    if args.steps_per_epoch is not None and steps is not None and args.steps_per_epoch != steps:
        raise ProjectError(f"--steps_per_epoch: the saved run takes {steps} steps per epoch; drop the flag")
    log(f"resume: settings from {run_config_path(folder)}"
        + (f"; changed by flags: {'; '.join(changes)}" if changes else " (no flag changes them)"))
    return resumed, args.steps_per_epoch or steps


def body(args, settings):
    if args.seed is not None:
        settings = settings.replace(seed=args.seed)
    steps_per_epoch = args.steps_per_epoch
    if args.resume and args.weights:
        raise ProjectError("--weights: not with --resume (a resumed run continues from its own checkpoint); to "
                           "start from other weights, use a new --checkpoint_dir")
    if args.resume:
        settings, steps_per_epoch = settings_for_resume(args, settings)
    from training.trainer import train  # imports TensorFlow: only once the flags parsed
    try:
        summary = train(settings, resume=args.resume, steps_per_epoch=steps_per_epoch, val_steps=args.val_steps,
                        progress=not args.no_progress, log=print, strategy=args.strategy, weights=args.weights)
    except cli.Interrupted:
        raise
    except KeyboardInterrupt:
        raise cli.Interrupted("before training started: nothing saved") from None
    print(summary)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

