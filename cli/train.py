"""Train the face-mask SSD eagerly with tf.GradientTape.

    python train.py                       # from scratch, settings from components/config.py
    python train.py --resume              # continue from the newest checkpoint in --checkpoint_dir
    python train.py --epoch 150 --batch_size 16 --init_lr 0.005   # any config key can be overridden

Ctrl-C saves a checkpoint of the current step and exits with status 130; ``--resume`` continues within the
interrupted epoch. A non-finite loss stops training with status 2, leaving the last good checkpoint as it was.
"""
import sys

import cli

STRATEGIES = ("default", "mirrored", "multi_worker")   # network.distribution.STRATEGIES, without TensorFlow


def build_parser():
    parser = cli.parser(__doc__, skip=("seed",))
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--weights", default=None,
                        help="start from this .keras model: every layer whose name and shape fit (fine-tuning)")
    parser.add_argument("--steps_per_epoch", type=int, default=None,
                        help="optimizer steps per epoch (default: one pass over the training records)")
    parser.add_argument("--val_steps", type=int, default=None, help="limit validation to this many batches")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--strategy", default="default", choices=STRATEGIES,
                        help="tf.distribute strategy: one device, all local GPUs, or several hosts (TF_CONFIG)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config 'seed')")
    return parser


def body(args, cfg):
    if args.seed is not None:
        cfg["seed"] = args.seed
    from network.trainer import train  # imports TensorFlow: only once the flags parsed
    try:
        summary = train(cfg, resume=args.resume, steps_per_epoch=args.steps_per_epoch, val_steps=args.val_steps,
                        progress=not args.no_progress, log=print, strategy=args.strategy, weights=args.weights)
    except cli.Interrupted:
        raise
    except KeyboardInterrupt:
        raise cli.Interrupted("before training started: nothing saved") from None
    print(summary)


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
