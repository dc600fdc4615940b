"""``edc-lab train``: the command-line face of :func:`edc_lab.train.train`.

Every flag sets the :class:`~edc_lab.train.config.TrainConfig` field of the same
name (dashes for underscores); ``--config FILE.toml`` sets any field from a
file, ``--profile`` picks a starting point, and flags given explicitly win::

    edc-lab train --stage teacher --model edc_tiny --data synthetic --out runs/teacher --profile cpu-quick
    edc-lab train --stage student --model edc_tiny --data synthetic --out runs/student \\
        --profile cpu-quick --teacher runs/teacher/last.pt
    python -m torch.distributed.run --standalone --nproc_per_node=2 -m edc_lab.cli train ...   # DDP
"""

from __future__ import annotations

import argparse
import sys

from edc_lab.data.cloud_models import CLOUD_MODELS
from edc_lab.train.config import AMP_MODES, DATASETS, PROFILES, STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``edc-lab train`` (defaults None: unset flags leave the config alone)."""
    parser.add_argument("--stage", choices=STAGES, help="teacher: cloud-free optical + SAR; student: cloudy optical + SAR")
    parser.add_argument("--model", help="a name of edc_lab.models.MODEL_NAMES (default edc_tiny)")
    parser.add_argument("--data", choices=DATASETS, help="data source (default synthetic)")
    parser.add_argument("--root", help="dataset folder (m3mcr, whu)")
    parser.add_argument("--out", help="run folder for last.pt, history.json, config.json")
    parser.add_argument("--profile", choices=tuple(PROFILES), help="named starting point for the settings")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file setting any config field (flags win)")
    parser.add_argument("--steps", type=int, help="optimiser steps")
    parser.add_argument("--size", type=int, help="training patch size in pixels")
    parser.add_argument("--batch-size", type=int, help="samples per step and process")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint (student stage)")
    parser.add_argument("--resume", action="store_true", default=None, help="continue from <out>/last.pt")
    parser.add_argument("--seed", type=int, help="seed of initialisation, data order and augmentation")
    parser.add_argument("--data-seed", type=int, help="seed of the synthetic scenes")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision on GPU")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile for training: NOT WORKING YET and refused (a compiled run was found "
                             "whose weights got no gradient; benchmarks/RESULTS.md)")
    parser.add_argument("--train-count", type=int, help="synthetic training scenes")
    parser.add_argument("--val-count", type=int, help="synthetic validation scenes")
    parser.add_argument("--val-split", help="validation split (default: val for synthetic, test for real data)")
    parser.add_argument("--cloud-cover", type=float, nargs=2, metavar=("LOW", "HIGH"), help="cloud cover range")
    parser.add_argument("--scene-family", choices=("default", "context"), help="synthetic scene family")
    parser.add_argument("--cloud-model", choices=tuple(CLOUD_MODELS),
                        help="synthetic clouds: realistic (default: thin and thick, haze) or opaque (thick, no haze)")
    parser.add_argument("--cloud-thickness", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="opacity range of the cloud cores (overrides the cloud model)")
    parser.add_argument("--cloud-thin-fraction", type=float, metavar="F",
                        help="share of the cloudy pixels that are thin (overrides the cloud model)")
    parser.add_argument("--cloud-haze", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="opacity range of the haze veil (overrides the cloud model)")
    parser.add_argument("--cloud-shadows", action=argparse.BooleanOptionalAction, default=None,
                        help="cloud shadows on clear ground (overrides the cloud model)")
    parser.add_argument("--lambda-cr", type=float, help="weight of the cloud-removal loss")
    parser.add_argument("--lambda-kd", type=float, help="weight of the feature distillation loss")
    parser.add_argument("--lambda-kl", type=float, help="weight of the logit (KL) distillation loss")
    parser.add_argument("--lambda-cloud", type=float,
                        help="ablation: weight of a BCE of the discrepancy maps against the cloud mask (default 0)")
    parser.add_argument("--kd-region", choices=("all", "clear", "cloudy"), help="pixels the distillation looks at")
    parser.add_argument("--temperature", type=float, help="KL distillation temperature")
    parser.add_argument("--eval-every", type=int, help="steps between validations")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                        help="no random flips / rotations")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """A validated TrainConfig from parsed flags (+ profile + TOML file)."""
    from edc_lab.train.config import make_config

    names = (
        "stage", "model", "data", "root", "out", "steps", "size", "batch_size", "lr", "teacher", "resume", "seed",
        "data_seed", "device", "amp", "train_count", "val_count", "val_split", "cloud_cover", "lambda_cr", "lambda_kd",
        "lambda_kl", "lambda_cloud", "kd_region", "temperature", "eval_every", "checkpoint_every", "num_workers",
        "progress", "augment", "compile",
    )
    overrides = {name: getattr(args, name, None) for name in names}
    overrides["scene_family"] = getattr(args, "scene_family", None)
    overrides["cloud_model"] = getattr(args, "cloud_model", None)
    flags = {"thickness": getattr(args, "cloud_thickness", None), "thin_fraction": getattr(args, "cloud_thin_fraction", None),
             "haze": getattr(args, "cloud_haze", None), "shadows": getattr(args, "cloud_shadows", None)}
    flags = {key: tuple(value) if isinstance(value, list) else value for key, value in flags.items() if value is not None}
    if flags:  # the flags override single options of the TOML file's cloud_options, not the whole table
        from edc_lab.train.config import load_toml

        overrides["cloud_options"] = {**(load_toml(args.config).get("cloud_options", {}) if args.config else {}), **flags}
    return make_config(profile=args.profile, toml=args.config, **overrides)


def run(args: argparse.Namespace) -> int:
    from edc_lab.data.sample import DataError
    from edc_lab.train.loop import train
    from edc_lab.train.training_step import NonFiniteLossError

    try:
        config = config_from_args(args)
        history = train(config)
    except (ValueError, DataError, OSError) as error:  # CheckpointError and config errors are ValueErrors
        print(f"edc-lab train: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"edc-lab train: stopped: {error}", file=sys.stderr)
        return 3
    validations = [record for record in history if record["split"] == "val"]
    if validations and _is_main():
        last = validations[-1]
        print(
            f"{config.stage} {config.model}: step {last['step']}  mIoU {last['miou']:.4f}  "
            f"cloudy {last['miou_cloudy']:.4f}  clear {last['miou_clear']:.4f}  -> {config.out}/last.pt"
        )
    return 0


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
