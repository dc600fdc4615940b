"""Issue 11's controlled experiment: does DCHF help when the scene needs global context?

The protocol (hypotheses, decision rules, data, models, seeds, metric) is in
``benchmarks/RESULTS.md``, section "Discrepancy, DCHF and scene context
(protocol)", committed before this script's first measuring run. In short, for
each training seed and each synthetic scene family ("default": every class
readable from local evidence; "context": the same scenes under a per-scene
spectral shift that only the whole scene reveals, see
``edc_lab.data.synthetic``), with the realistic clouds (textured, haze,
thin and thick) and the ``cpu-quick`` profile, students are trained on cloudy
optical + SAR without distillation:

* ``early_fusion``      one stream on the stacked bands;
* ``edc_no_dchf``       EDC with fusion = plain sum (no discrepancy map);
* ``dense_edc``         EDC with dense attention (capacity-matched), DCHF, D free;
* ``edc_d_free``        EDC, D learnt without supervision (the paper's recipe);
* ``edc_d_monotone``    EDC, D's channel weights non-negative (its direction cannot flip);
* ``edc_d_supervised``  EDC, D taught the cloud mask (``lambda_cloud = 1``).

On the default family only, the distillation runs: a cloud-free ``teacher`` and
students distilled from it on all pixels (``student_kd_all``, the default),
on clear pixels only (``student_kd_clear``, CloudSeg's choice) and on all
pixels with D supervised (``student_kd_all_d_supervised``).

Every model is evaluated on 48 held-out scenes of its family with cloud cover
0.4-0.8 (mIoU all / cloudy / clear pixels, AUROC of D per stage against the
cloud mask) and on a cloud-cover sweep (0, 0.2, ..., 0.8; 16 scenes, the same
scenes at every cover). Each finished run writes ``result.json`` in its run
folder; finished runs are read, not retrained, and a process claims a run
(a ``claimed`` file) before training it, so several processes started on the
same run folder share the work; ``--report`` assembles the tables.

    for worker in 1 2; do OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \\
        python benchmarks/discrepancy_evidence.py --runs /tmp/edc_discrepancy --threads 1 & done
    wait; python benchmarks/discrepancy_evidence.py --runs /tmp/edc_discrepancy --report
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_evidence import auroc_cell, claim, mean_std, median_step_seconds, paired_cell  # noqa: E402

from edc_lab.data.datasets import build_dataset  # noqa: E402
from edc_lab.train import cloud_cover_sweep, evaluate, load_checkpoint, make_config, train  # noqa: E402
from edc_lab.train.run_data import CachedDataset  # noqa: E402

FAMILIES = ("default", "context")
NO_KD = {"lambda_kd": 0.0}
#: (run name, model, stage, extra config): trained on both families
FAMILY_RUNS = [
    ("early_fusion", "early_fusion", "student", NO_KD),
    ("edc_no_dchf", "edc_no_dchf", "student", NO_KD),
    ("dense_edc", "dense_edc", "student", NO_KD),
    ("edc_d_free", "edc_tiny", "student", NO_KD),
    ("edc_d_monotone", "edc_tiny", "student", {**NO_KD, "model_overrides": {"discrepancy": "monotone"}}),
    ("edc_d_supervised", "edc_tiny", "student", {**NO_KD, "lambda_cloud": 1.0}),
]
#: trained on the default family only (the teacher first: the students read it)
KD_RUNS = [
    ("teacher", "edc_tiny", "teacher", {}),
    ("student_kd_all", "edc_tiny", "student", {"kd_region": "all"}),
    ("student_kd_clear", "edc_tiny", "student", {"kd_region": "clear"}),
    ("student_kd_all_d_supervised", "edc_tiny", "student", {"kd_region": "all", "lambda_cloud": 1.0}),
]
COVERS = (0.0, 0.2, 0.4, 0.6, 0.8)
#: (first, second, label): paired differences reported per family
PAIRS = [
    ("edc_d_free", "edc_no_dchf", "DCHF (D free) − plain sum"),
    ("edc_d_supervised", "edc_no_dchf", "DCHF (D supervised) − plain sum"),
    ("edc_d_monotone", "edc_no_dchf", "DCHF (D monotone) − plain sum"),
    ("edc_d_supervised", "edc_d_free", "supervising D: supervised − free"),
    ("edc_d_monotone", "edc_d_free", "monotone D − free D"),
    ("edc_d_supervised", "dense_edc", "carrier tokens + supervised D − dense attention"),
    ("edc_d_free", "dense_edc", "carrier tokens − dense attention (both D free)"),
    ("edc_d_free", "early_fusion", "EDC (D free) − early fusion"),
    ("student_kd_clear", "student_kd_all", "distillation on clear pixels − on all pixels"),
    ("student_kd_all", "edc_d_free", "distillation (all pixels) − none"),
    ("student_kd_all_d_supervised", "student_kd_all", "distillation: supervised D − free D"),
]


def runs_of(family: str) -> list[tuple]:
    return (KD_RUNS if family == "default" else []) + FAMILY_RUNS


def run_dir(args, family: str, seed: int, name: str) -> Path:
    return Path(args.runs) / family / f"seed{seed}" / name


def train_and_measure(family: str, seed: int, run: tuple, args, test_set) -> dict | None:
    """Train (or read) one run, evaluate it, write and return its ``result.json``
    (None when another process has claimed the run)."""
    name, model_name, stage, extra = run
    out = run_dir(args, family, seed, name)
    result_path = out / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if not claim(out):
        return None  # another process trains it
    values = dict(profile=args.profile, stage=stage, model=model_name, seed=seed, out=str(out), resume=True,
                  progress=False, eval_every=0, scene_family=family, **extra)
    if args.steps:
        values["steps"] = args.steps
    if stage == "student" and values.get("lambda_kd", 1.0) > 0:
        teacher = run_dir(args, family, seed, "teacher")
        while not (teacher / "result.json").is_file():  # trained by another process: wait for it
            time.sleep(10)
        values["teacher"] = str(teacher / "last.pt")
    config = make_config(**values)
    history = train(config)
    seconds = sum(r.get("seconds", 0.0) for r in history if r["split"] == "train")
    model, meta = load_checkpoint(out / "last.pt")
    result = {"family": family, "seed": seed, "name": name, "train_seconds": seconds, "steps": meta["step"],
              "metrics": evaluate(model, test_set, inputs="cloudy"),
              "sweep": cloud_cover_sweep(model, COVERS, count=args.sweep_count, size=config.size, family=family)}
    if stage == "teacher":
        result["metrics_clear_input"] = evaluate(model, test_set, inputs="clear")
    result_path.write_text(json.dumps(result, indent=1, default=float))
    metrics = result["metrics"]
    print(f"{family} seed {seed} {name:>28}: mIoU {metrics['miou']:.3f} cloudy {metrics['miou_cloudy']:.3f} "
          f"clear {metrics['miou_clear']:.3f} AUROC {[round(a, 2) for a in metrics['auroc']]} "
          f"({seconds:.0f} s training)", flush=True)
    return result


def collect(args) -> dict:
    """{family: {run: [result per seed, in seed order]}} of every finished run."""
    results: dict = {}
    for family in FAMILIES:
        for name, *_ in runs_of(family):
            found = []
            for seed in args.seeds:
                path = run_dir(args, family, seed, name) / "result.json"
                if path.is_file():
                    found.append(json.loads(path.read_text()))
            if found:
                results.setdefault(family, {})[name] = found
    return results


def report(args) -> str:
    results = collect(args)
    config = make_config(profile=args.profile, **({"steps": args.steps} if args.steps else {}))
    lines = [f"Profile `{args.profile}`: {config.size}² px, batch {config.batch_size}, {config.steps} steps, "
             f"{config.train_count} training scenes (cloud cover 0.2–0.8), lr {config.lr}; test: 48 held-out "
             f"scenes of the same family, cloud cover 0.4–0.8; seeds {args.seeds} (mean ± std over seeds, mIoU in "
             f"%). Machine: {platform.machine()} CPU, torch {torch.__version__}.", ""]
    for family, runs in results.items():
        lines += [f"**Family `{family}`**", "",
                  "| model | seeds | mIoU all | mIoU cloudy | mIoU clear | D AUROC stage 1 / 2 / 3 / 4 | s / step |",
                  "|---|---|---|---|---|---|---|"]
        for name, found in runs.items():
            metric = lambda key: [r["metrics"][key] for r in found]  # noqa: E731
            stages = len(found[0]["metrics"]["auroc"])
            aurocs = " / ".join(auroc_cell([r["metrics"]["auroc"][k] for r in found]) for k in range(stages)) or "–"
            steps = [median_step_seconds(run_dir(args, family, r["seed"], name)) for r in found]
            steps = [s for s in steps if s is not None]
            timing = f"{np.mean(steps):.2f}" if steps else "–"
            lines.append(f"| {name} | {len(found)} | {mean_std(metric('miou'))} | {mean_std(metric('miou_cloudy'))} | "
                         f"{mean_std(metric('miou_clear'))} | {aurocs} | {timing} |")
            if "metrics_clear_input" in found[0]:
                clear = lambda key: [r["metrics_clear_input"][key] for r in found]  # noqa: E731
                lines.append(f"| {name} (cloud-free input) | {len(found)} | {mean_std(clear('miou'))} | "
                             f"{mean_std(clear('miou_cloudy'))} | {mean_std(clear('miou_clear'))} | – | – |")
        lines += ["", f"Paired differences, family `{family}` (same seed, same data), mIoU points:", "",
                  "| comparison | all | cloudy | clear |", "|---|---|---|---|"]
        for first, second, label in PAIRS:
            cells = [paired_cell(runs, first, second, key) for key in ("miou", "miou_cloudy", "miou_clear")]
            if cells[0]:
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", f"mIoU (all pixels, %) against cloud cover, family `{family}`:", "",
                  "| model | " + " | ".join(f"cover {c:.1f}" for c in COVERS) + " |",
                  "|---|" + "---|" * len(COVERS)]
        for name, found in runs.items():
            cells = [mean_std([r["sweep"][i]["miou"] for r in found]) for i in range(len(COVERS))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    table = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps({**results, "_meta": [{"seeds": args.seeds,
                                                                           "profile": args.profile}]},
                                                   indent=1, default=float))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/edc_discrepancy", help="folder for the run directories")
    parser.add_argument("--out", default="benchmarks/results/discrepancy_evidence.md", help="markdown table")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="cpu-quick")
    parser.add_argument("--steps", type=int, help="override the profile's steps")
    parser.add_argument("--test-count", type=int, default=48)
    parser.add_argument("--sweep-count", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only assemble the tables from finished runs")
    args = parser.parse_args()
    if args.report:
        print(report(args))
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    size = make_config(profile=args.profile).size
    test_sets: dict = {}
    # the runs both families need first (seed by seed, family by family), the distillation runs last
    tasks = [(family, seed, run) for seed in args.seeds for family in args.families for run in FAMILY_RUNS]
    tasks += [(family, seed, run) for seed in args.seeds for family in args.families if family == "default"
              for run in KD_RUNS]
    for family, seed, run in tasks:
        if family not in test_sets:
            test_sets[family] = CachedDataset(build_dataset("synthetic", split="test", size=size,
                                                            count=args.test_count, cloud_cover=(0.4, 0.8),
                                                            family=family))
        train_and_measure(family, seed, run, args, test_sets[family])
    print(f"done in {(time.perf_counter() - started) / 60:.0f} min", flush=True)


if __name__ == "__main__":
    main()
