"""Attribution evidence: does the share of SAR in the decision rise under clouds, and more in EDC?

The protocol (written and committed before the run; see ``benchmarks/RESULTS.md``,
"Attributions: SAR share inside vs outside clouds"):

* models: the checkpoints of ``benchmarks/train_evidence.py`` (the same run folder),
  ``early_fusion``, ``edc_no_dchf``, ``student_no_kd`` (EDC without distillation) and
  ``student_kd`` (EDC with distillation), seeds 0, 1, 2; ``cpu-quick`` profile;
* data: the first ``--scenes`` (16) scenes of the held-out synthetic test split that
  ``train_evidence.py`` evaluates on (cloud cover 0.4–0.8, the profile's patch size);
* per scene: the target class ``c`` is the class with the most pixels on *both* sides
  of the cloud edge (the largest ``min(cloudy count, clear count)`` of the true labels);
  two regions: the cloudy pixels labelled ``c`` and the clear pixels labelled ``c``;
  scenes where either region has fewer than ``--min-pixels`` (20) pixels are left out
  (the same scenes for every model, because the choice uses labels only);
* the score ``F`` is the mean logit of ``c`` over the region (``RegionScore``);
* attribution: exact Shapley values (``modality_shares(method="shapley")``: the 16 coalitions;
  the committed results were computed when it called captum's ``ShapleyValues``, 24 orderings,
  which gives the same values to float rounding, ``benchmarks/bench_shapley.py``) of the four
  groups optical-cloudy, optical-clear, SAR-cloudy, SAR-clear, a group "removed" = replaced
  by its Gaussian blur (sigma 4 px, the ``"blur"`` baseline);
* metric: the **SAR share of the decision** in a region,
  ``(|v_sar_cloudy| + |v_sar_clear|) / (|v_optical_cloudy| + |v_optical_clear| + |v_sar_cloudy| + |v_sar_clear|)``,
  averaged over the scenes; per model: mean ± std over the seeds of the share for the
  cloudy region, the clear region and their difference (cloudy − clear).

Hypotheses: (H1) for the EDC students the SAR share is larger for cloudy pixels than for
clear ones; (H2) the rise (cloudy − clear) is larger for the EDC students than for
``early_fusion`` and ``edc_no_dchf``. The result is reported whatever it says.

It also times Integrated Gradients for ``edc_tiny`` at 128² and 256² (one sample,
64 steps, internal batch 16; median of 3 after a warm-up).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/attribution_evidence.py --runs /tmp/edc_evidence \\
        --out benchmarks/results/attribution_evidence.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edc_lab.data.datasets import build_dataset
from edc_lab.explain import class_on_both_sides, modality_shares, pixel_attributions
from edc_lab.models import build_model
from edc_lab.train import load_checkpoint, make_config

#: (name in the table, run folder of train_evidence.py)
MODELS = [
    ("early_fusion", "early_fusion"),
    ("edc_no_dchf", "edc_no_dchf"),
    ("EDC student, no distillation", "student_no_kd"),
    ("EDC student, distilled", "student_kd"),
]


def explain_model(model, scenes, num_classes: int, min_pixels: int) -> dict:
    shares = {"cloudy": [], "clear": []}
    for sample in scenes:
        target, count = class_on_both_sides(sample["label"], sample["cloud_mask"], num_classes)
        if count < min_pixels:
            continue
        cloudy = sample["cloud_mask"].bool()
        of_class = sample["label"] == target
        for region_name, region in (("cloudy", of_class & cloudy), ("clear", of_class & ~cloudy)):
            result = modality_shares(model, sample["optical"][None], sample["sar"][None], sample["cloud_mask"],
                                     target, region, method="shapley", baseline="blur")
            shares[region_name].append(float(result.sar_share[0]))
    return {region: float(np.mean(values)) for region, values in shares.items()} | {"scenes": len(shares["cloudy"])}


def time_integrated_gradients(sizes=(128, 256), repeats=3) -> dict:
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    timings = {}
    for size in sizes:
        optical, sar = torch.rand(1, 4, size, size), torch.rand(1, 2, size, size)
        run = lambda: pixel_attributions(model, optical, sar, target=0, baseline="blur", n_steps=64,
                                         internal_batch_size=16)
        run()  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        timings[size] = {"median_s": statistics.median(seconds), "runs_s": seconds}
    return timings


def mean_std(values) -> str:
    values = [v for v in values if not np.isnan(v)]
    if len(values) < 2:
        return f"{100 * values[0]:.1f}" if values else "–"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/edc_evidence", help="run folder of train_evidence.py")
    parser.add_argument("--out", default="benchmarks/results/attribution_evidence.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="cpu-quick")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--min-pixels", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    size = make_config(profile=args.profile).size
    # the same held-out scenes as train_evidence.py (its first --scenes of 48)
    test_set = build_dataset("synthetic", split="test", size=size, count=48, cloud_cover=(0.4, 0.8))
    scenes = [test_set[index] for index in range(args.scenes)]
    results = {}
    for name, run in MODELS:
        results[name] = []
        for seed in args.seeds:
            model, meta = load_checkpoint(Path(args.runs) / f"seed{seed}" / run / "last.pt")
            row = explain_model(model.eval(), scenes, model.num_classes, args.min_pixels)
            row["seed"] = seed
            results[name].append(row)
            print(f"{name:<30} seed {seed}: SAR share cloudy {row['cloudy']:.3f} clear {row['clear']:.3f} "
                  f"({row['scenes']} scenes)", flush=True)
    timing = {} if args.skip_timing else time_integrated_gradients()
    elapsed = time.perf_counter() - started

    lines = [
        f"Profile `{args.profile}` checkpoints of `train_evidence.py` ({size}² px), {results[MODELS[0][0]][0]['scenes']} "
        f"of the first {args.scenes} held-out test scenes (cover 0.4–0.8), exact Shapley values of the four groups, "
        f"blur baseline (sigma 4 px), score = mean logit of the target class over the region; seeds {args.seeds}, "
        f"mean ± std over seeds, SAR share in %. Machine: {platform.machine()} CPU, {args.threads} threads, "
        f"torch {torch.__version__}; whole script {elapsed / 60:.1f} min.",
        "",
        "| model | SAR share, cloudy pixels | SAR share, clear pixels | rise (cloudy − clear) |",
        "|---|---|---|---|",
    ]
    for name, rows in results.items():
        rise = [r["cloudy"] - r["clear"] for r in rows]
        lines.append(f"| {name} | {mean_std([r['cloudy'] for r in rows])} | {mean_std([r['clear'] for r in rows])} | "
                     f"{mean_std(rise)} |")
    if timing:
        lines += ["", "Integrated Gradients, `edc_tiny`, one sample, 64 steps, internal batch 16, median of 3 "
                  "after a warm-up: " + ", ".join(f"{size}²: {t['median_s']:.2f} s" for size, t in timing.items())]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps({"results": results, "ig_timing": timing,
                                                    "elapsed_seconds": elapsed}, indent=1))


if __name__ == "__main__":
    main()
