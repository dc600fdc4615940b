"""``edc-lab evaluate``: the metric table of a checkpoint on a dataset, printed and saved as JSON.

    edc-lab evaluate --checkpoint runs/student/last.pt --data synthetic --cloud-cover 0.4 0.8 --out metrics.json

Segmentation scores come overall and split into cloudy and clear pixels (the
point of EDC), plus per-class IoU, cloud-removal quality (PSNR / SSIM / SAM)
for models with a cloud-removal head and the AUROC of each stage's
discrepancy map against the cloud mask (see :mod:`edc_lab.train.metrics`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from edc_lab.options import device_name, float_in, int_in

#: accepted ranges of the numeric options (inclusive)
SIZE_RANGE = (16, 8192)
COUNT_RANGE = (1, 100_000)
BATCH_SIZE_RANGE = (1, 4096)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by edc-lab train")
    parser.add_argument("--data", choices=("synthetic", "m3mcr", "whu"), help="default: the checkpoint's dataset")
    parser.add_argument("--root", help="dataset folder (m3mcr, whu)")
    parser.add_argument("--split", default="test", help="dataset split (default test)")
    parser.add_argument("--out", metavar="METRICS.json", help="write the metrics here as JSON")
    parser.add_argument("--size", type=int_in(*SIZE_RANGE), help="scene / crop size (default: the training size)")
    parser.add_argument("--count", type=int_in(*COUNT_RANGE), default=64, help="synthetic test scenes (default 64)")
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0,
                        help="seed of the synthetic test scenes (default 0)")
    parser.add_argument("--cloud-cover", type=float_in(0.0, 1.0), nargs=2, metavar=("LOW", "HIGH"), default=(0.4, 0.8),
                        help="cloud cover range of synthetic / WHU clouds (default 0.4 0.8: heavy)")
    parser.add_argument("--inputs", choices=("cloudy", "clear"), default="cloudy",
                        help="feed the cloudy (default) or the cloud-free optical image")
    parser.add_argument("--batch-size", type=int_in(*BATCH_SIZE_RANGE), default=8)
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")


def format_table(metrics: dict, class_names: list[str] | None = None) -> str:
    """The metrics as a small plain-text table (what ``evaluate`` prints)."""
    lines = [f"{'pixels':<8} {'mIoU':>7} {'OA':>7} {'mF1':>7}"]
    for region in ("all", "cloudy", "clear"):
        scores = metrics["segmentation"][region]
        lines.append(f"{region:<8} {_pct(scores['miou'])} {_pct(scores['oa'])} {_pct(scores['mean_f1'])}")
    names = class_names or [f"class {k}" for k in range(len(metrics["segmentation"]["all"]["iou"]))]
    lines.append("per-class IoU (all pixels): " + ", ".join(
        f"{name} {_pct(iou).strip()}" for name, iou in zip(names, metrics["segmentation"]["all"]["iou"])
    ))
    removal = metrics.get("cloud_removal") or {}
    if removal:
        lines.append(f"cloud removal: PSNR {removal['psnr']:.2f} dB, SSIM {removal['ssim']:.4f}, SAM {removal['sam']:.2f} deg")
    if metrics.get("auroc"):
        lines.append("discrepancy AUROC vs cloud mask per stage: " + ", ".join(f"{v:.3f}" for v in metrics["auroc"]))
    return "\n".join(lines)


def _pct(value: float) -> str:
    return f"{'nan':>7}" if value is None or math.isnan(value) else f"{100 * value:7.2f}"


def run(args: argparse.Namespace) -> int:
    from edc_lab.data.datasets import build_dataset
    from edc_lab.data.sample import DataError
    from edc_lab.train.checkpoint import load_checkpoint
    from edc_lab.train.distributed import resolve_device
    from edc_lab.train.evaluation import evaluate
    from edc_lab.train.runtime import resolve_amp

    try:
        from edc_lab.data.io import check_output_paths

        if args.cloud_cover[0] > args.cloud_cover[1]:
            raise ValueError(f"--cloud-cover: expected LOW <= HIGH, found {args.cloud_cover[0]} > {args.cloud_cover[1]}")
        check_output_paths({"--out": args.out}, {"--checkpoint": args.checkpoint, "--root": args.root})
        if args.out:  # a device, FIFO or folder is refused before anything is evaluated
            from edc_lab.data.outputs import check_output_file

            check_output_file("--out", args.out)
        device = resolve_device(args.device)
        model, meta = load_checkpoint(args.checkpoint, map_location=device)
        trained_on = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        data_name = args.data or trained_on.get("name") or "synthetic"
        size = args.size or trained_on.get("size") or 128
        dataset = build_dataset(
            data_name, root=args.root, split=args.split, size=size, count=args.count, seed=args.seed,
            cloud_cover=tuple(args.cloud_cover), sar_channels=model.build_args.get("in_sar", 2),
        )
        if dataset.num_classes != model.build_args.get("num_classes"):
            raise ValueError(
                f"{args.checkpoint}: the model predicts {model.build_args.get('num_classes')} classes, "
                f"the {data_name} dataset has {dataset.num_classes}"
            )
        data_sar = getattr(dataset, "in_sar", None)
        if data_sar is not None and data_sar != model.build_args.get("in_sar", 2):
            raise ValueError(
                f"{args.checkpoint}: expected a dataset with the model's {model.build_args.get('in_sar', 2)} SAR "
                f"channel(s), found {data_sar} in the {data_name} dataset"
            )
        metrics = evaluate(model, dataset, inputs=args.inputs, batch_size=args.batch_size, device=device,
                           amp_dtype=resolve_amp("auto", device))
    except (ValueError, DataError, OSError) as error:
        print(f"edc-lab evaluate: error: {error}", file=sys.stderr)
        return 2
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["data"] = {"name": data_name, "split": args.split, "size": size, "count": len(dataset),
                       "cloud_cover": list(args.cloud_cover), "seed": args.seed}
    metrics["class_names"] = list(dataset.class_names)
    print(format_table(metrics, list(dataset.class_names)))
    if args.out:
        from edc_lab.data.writer import atomic_output

        try:
            with atomic_output(args.out) as temporary:  # never a half-written file
                temporary.write_text(json.dumps(metrics, indent=2))
        except (DataError, OSError) as error:
            print(f"edc-lab evaluate: error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
    return 0
