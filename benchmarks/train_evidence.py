"""Training evidence on synthetic scenes: does EDC (and its distillation) help under heavy clouds?

For each training seed this script trains, with the same loop and profile
(``cpu-quick`` unless told otherwise), on synthetic scenes with cloud cover
0.2–0.8:

* ``teacher``        edc_tiny on *cloud-free* optical + SAR (segmentation only);
* ``student_kd``     edc_tiny on cloudy optical + SAR, cloud removal + feature
                     distillation from that seed's teacher (the full EDC recipe);
* ``student_no_kd``  the same without distillation (lambda_kd = 0);
* ``student_d_supervised``  student_no_kd plus the optional BCE of the discrepancy
                     maps against the cloud mask (``lambda_cloud = 1``): DCHF with a D
                     that is taught where the clouds are (an ablation, DESIGN §1);
* ``edc_no_dchf``    EDC with fusion = plain sum (no discrepancy map), no distillation;
* ``dense_edc``      EDC with dense attention instead of carrier tokens (capacity-matched), no distillation;
* ``early_fusion``, ``optical_only``, ``sar_only``: baselines, no distillation.

Every model is then evaluated on a held-out synthetic test split with heavy
clouds (cover 0.4–0.8): mIoU overall, on cloudy and on clear pixels, and the
AUROC of each stage's discrepancy map against the true cloud mask; plus the
mIoU as the cloud cover goes 0, 0.2, ..., 0.8 on the same scenes. Results are
mean ± standard deviation over the seeds.

Runs are resumable: a finished run is not trained again (its checkpoint is
read), so an interrupted evidence run continues where it stopped.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_evidence.py --runs /tmp/edc_evidence \\
        --out benchmarks/results/train_evidence.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from edc_lab.data.datasets import build_dataset
from edc_lab.train import cloud_cover_sweep, evaluate, load_checkpoint, make_config, train
from edc_lab.train.run_data import CachedDataset
from edc_lab.viz.evidence import paired_difference

#: (run name, model, stage, extra config)
RUNS = [
    ("teacher", "edc_tiny", "teacher", {}),
    ("student_kd", "edc_tiny", "student", {}),
    ("student_no_kd", "edc_tiny", "student", {"lambda_kd": 0.0}),
    ("student_d_supervised", "edc_tiny", "student", {"lambda_kd": 0.0, "lambda_cloud": 1.0}),
    ("edc_no_dchf", "edc_no_dchf", "student", {"lambda_kd": 0.0}),
    ("dense_edc", "dense_edc", "student", {"lambda_kd": 0.0}),
    ("early_fusion", "early_fusion", "student", {"lambda_kd": 0.0}),
    ("optical_only", "optical_only", "student", {"lambda_kd": 0.0}),
    ("sar_only", "sar_only", "student", {"lambda_kd": 0.0}),
]
COVERS = (0.0, 0.2, 0.4, 0.6, 0.8)


def train_run(name, model, stage, extra, seed, args) -> tuple[Path, float]:
    """Train (or find finished) one run; return its checkpoint and training seconds."""
    out = Path(args.runs) / f"seed{seed}" / name
    values = dict(profile=args.profile, stage=stage, model=model, seed=seed, out=str(out), resume=True,
                  progress=False, eval_every=0, **extra)
    if args.steps:
        values["steps"] = args.steps
    if args.size:
        values["size"] = args.size
    if stage == "student" and values.get("lambda_kd", 1.0) > 0:
        values["teacher"] = str(Path(args.runs) / f"seed{seed}" / "teacher" / "last.pt")
    config = make_config(**values)
    history = train(config)
    seconds = sum(r.get("seconds", 0.0) for r in history if r["split"] == "train")
    return out / "last.pt", seconds


def mean_std(values) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def paired_cell(results: dict, first: str, second: str, key: str) -> str:
    """``mean ± std`` over seeds of ``100 · (first − second)`` in ``key``, paired by seed
    (``edc_lab.viz.evidence.paired_difference``); "" when a run is missing."""
    if not results.get(first) or not results.get(second):
        return ""
    mean, std = paired_difference(results, first, second, key)
    return f"{mean:+.1f}" if math.isnan(std) else f"{mean:+.1f} ± {std:.1f}"


def auroc_cell(values) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/edc_evidence", help="folder for the run directories")
    parser.add_argument("--out", default="benchmarks/results/train_evidence.md", help="markdown table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="cpu-quick")
    parser.add_argument("--steps", type=int, help="override the profile's steps")
    parser.add_argument("--size", type=int, help="override the profile's patch size")
    parser.add_argument("--test-count", type=int, default=48, help="heavy-cloud test scenes")
    parser.add_argument("--sweep-count", type=int, default=16, help="test scenes per cloud-cover level")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="rebuild the tables from <out>.json")
    args = parser.parse_args()
    if args.report_only:
        write_report(json.loads(Path(args.out).with_suffix(".json").read_text()), args)
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    size = args.size or make_config(profile=args.profile).size
    test_set = CachedDataset(build_dataset("synthetic", split="test", size=size, count=args.test_count,
                                           cloud_cover=(0.4, 0.8)))
    results: dict[str, list[dict]] = {name: [] for name, *_ in RUNS}
    results["teacher (cloud-free input)"] = []
    for seed in args.seeds:
        for name, model_name, stage, extra in RUNS:
            checkpoint, seconds = train_run(name, model_name, stage, extra, seed, args)
            model, meta = load_checkpoint(checkpoint)
            metrics = evaluate(model, test_set, inputs="cloudy")
            sweep = cloud_cover_sweep(model, COVERS, count=args.sweep_count, size=size)
            results[name].append({"seed": seed, "train_seconds": seconds, "steps": meta["step"], "metrics": metrics,
                                  "sweep": sweep})
            if name == "teacher":
                clear = evaluate(model, test_set, inputs="clear")
                results["teacher (cloud-free input)"].append({"seed": seed, "metrics": clear})
            print(f"seed {seed} {name:>14}: mIoU {metrics['miou']:.3f} cloudy {metrics['miou_cloudy']:.3f} "
                  f"clear {metrics['miou_clear']:.3f}  ({seconds:.0f} s training)", flush=True)

    results["_meta"] = [{"elapsed_seconds": time.perf_counter() - started}]
    write_report(results, args)


def claim(out: Path) -> bool:
    """Claim the run folder ``out`` (creating it) with an exclusive ``claimed`` file, so that processes
    sharing a run folder split the work; False when another process claimed it first."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(out / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def median_step_seconds(run_dir: Path) -> float | None:
    """Median seconds per training step of a finished run (first 5 steps left out as warm-up)."""
    path = run_dir / "history.json"
    if not path.is_file():
        return None
    seconds = [r["seconds"] for r in json.loads(path.read_text()) if r["split"] == "train"][5:]
    return float(np.median(seconds)) if seconds else None


def write_report(results: dict, args) -> None:
    """Markdown tables (+ the raw results as JSON next to them)."""
    meta = (results.pop("_meta", None) or [{}])[0]
    config = make_config(profile=args.profile, **({"steps": args.steps} if args.steps else {}),
                         **({"size": args.size} if args.size else {}))
    elapsed = meta.get("elapsed_seconds")
    lines = [
        f"Synthetic scenes, profile `{args.profile}`: {config.size}² px, batch {config.batch_size}, "
        f"{config.steps} steps, {config.train_count} training scenes (cloud cover 0.2–0.8), lr {config.lr}; "
        f"test: {args.test_count} held-out scenes with cloud cover 0.4–0.8; seeds {args.seeds} "
        f"(mean ± std over seeds, mIoU in %). Machine: {platform.machine()} CPU, {args.threads} threads, "
        f"torch {torch.__version__}" + (f"; whole script {elapsed / 60:.0f} min." if elapsed else "."),
        "",
        "| model | input | mIoU all | mIoU cloudy | mIoU clear | D AUROC stage 1 / 2 / 3 / 4 | s / step (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        if not runs:
            continue
        metric = lambda key: [r["metrics"][key] for r in runs]
        stages = len(runs[0]["metrics"]["auroc"])
        aurocs = " / ".join(auroc_cell([r["metrics"]["auroc"][k] for r in runs]) for k in range(stages)) or "–"
        steps = [median_step_seconds(Path(args.runs) / f"seed{r['seed']}" / name) for r in runs if "sweep" in r]
        steps = [s for s in steps if s is not None]
        source = "cloud-free" if "cloud-free" in name else "cloudy"
        timing = f"{np.mean(steps):.2f}" if steps else ("(teacher run)" if source == "cloud-free" else "–")
        lines.append(
            f"| {name} | {source} | {mean_std(metric('miou'))} | {mean_std(metric('miou_cloudy'))} | "
            f"{mean_std(metric('miou_clear'))} | {aurocs} | {timing} |"
        )
    pairs = [("student_kd", "student_no_kd", "distillation: student_kd − student_no_kd"),
             ("student_no_kd", "edc_no_dchf", "DCHF: student_no_kd − edc_no_dchf"),
             ("student_d_supervised", "student_no_kd", "supervising D: student_d_supervised − student_no_kd"),
             ("student_d_supervised", "edc_no_dchf", "DCHF with supervised D: student_d_supervised − edc_no_dchf"),
             ("student_no_kd", "dense_edc", "carrier tokens vs dense attention: student_no_kd − dense_edc"),
             ("student_no_kd", "early_fusion", "EDC (no KD) − early_fusion")]
    lines += ["", "Paired differences (same seed, same data), mIoU points:", "",
              "| comparison | all | cloudy | clear |", "|---|---|---|---|"]
    for first, second, label in pairs:
        cells = [paired_cell(results, first, second, key) for key in ("miou", "miou_cloudy", "miou_clear")]
        if cells[0]:
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"mIoU (all pixels, %) against cloud cover, {args.sweep_count} test scenes per level, "
              "the same scenes at every level:", "",
              "| model | " + " | ".join(f"cover {c:.1f}" for c in COVERS) + " |",
              "|---|" + "---|" * len(COVERS)]
    for name, runs in results.items():
        if not runs or "sweep" not in runs[0]:
            continue
        cells = [mean_std([r["sweep"][i]["miou"] for r in runs]) for i in range(len(COVERS))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    results["_meta"] = [meta]
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
