"""Exact group Shapley values: the 16 coalitions once (edc_lab) against captum's 24 orderings.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_shapley.py --repeats 5

``modality_shares(method="shapley")`` on an untrained ``edc_tiny`` (seed 0; the time does not
depend on training), one 64² synthetic scene with half of it under cloud, the region = the
cloudy pixels, the blur baseline, as notebook 07 calls it. Two ways to the same four values:
``exact_group_shapley`` (16 forward passes) and captum's ``ShapleyValues`` (97), each with
``perturbations_per_eval`` 1 and 4. Median of ``--repeats`` calls after one warm-up call each,
interleaved; the largest difference between the two methods' values is reported too.
Results: ``benchmarks/results/shapley_cpu.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from captum.attr import ShapleyValues

from edc_lab.data.sample import to_torch
from edc_lab.data.synthetic import synthetic_scene
from edc_lab.explain import GROUPS
from edc_lab.explain.baselines import BLUR_SIGMA
from edc_lab.explain.groups import captum_group_values, exact_group_shapley, modality_feature_masks
from edc_lab.explain.region import explanation_inputs
from edc_lab.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shapley_cpu.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    sample = to_torch(synthetic_scene(3, size=64, cloud_cover=0.5))
    optical, sar, cloud = sample["optical"][None], sample["sar"][None], sample["cloud_mask"]
    score_fn, region_args, inputs, baselines = explanation_inputs(
        model, optical, sar, 2, cloud.bool(), "logit", "blur", None, BLUR_SIGMA)
    masks = modality_feature_masks(cloud, 1)

    def ours(per_eval: int) -> dict:
        return exact_group_shapley(score_fn, inputs, baselines, masks, region_args, per_eval)

    def captum(per_eval: int) -> dict:
        attribution = ShapleyValues(score_fn).attribute(inputs, baselines=baselines, feature_mask=masks,
                                                        additional_forward_args=region_args,
                                                        perturbations_per_eval=per_eval)
        return captum_group_values(attribution, masks)

    variants = {f"{name}, {per_eval} per pass": (function, per_eval)
                for name, function in (("edc_lab 16 coalitions", ours), ("captum ShapleyValues", captum))
                for per_eval in (1, 4)}
    seconds = {name: [] for name in variants}
    values = {}
    with torch.no_grad():
        for name, (function, per_eval) in variants.items():
            values[name] = function(per_eval)  # warm-up
        for _ in range(args.repeats):
            for name, (function, per_eval) in variants.items():
                start = time.perf_counter()
                function(per_eval)
                seconds[name].append(time.perf_counter() - start)
    reference = values["captum ShapleyValues, 1 per pass"]
    difference = max(float((values["edc_lab 16 coalitions, 1 per pass"][g] - reference[g]).abs()) for g in GROUPS)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    base = median["captum ShapleyValues, 4 per pass"]  # what notebook 07 called before
    result = dict(
        command=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python benchmarks/bench_shapley.py "
                f"--repeats {args.repeats}",
        machine=platform.processor() or platform.machine(), threads=torch.get_num_threads(), torch=torch.__version__,
        seconds=seconds, median_ms={name: 1000 * m for name, m in median.items()},
        speedup_vs_captum_4_per_pass={name: base / m for name, m in median.items()},
        max_abs_difference_of_values=difference,
    )
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| method | median (ms) | speed-up against captum, 4 per pass |\n|---|---|---|")
    for name in variants:
        print(f"| {name} | {1000 * median[name]:.0f} | {base / median[name]:.2f} |")
    print(f"largest difference between the two methods' values: {difference:.2e} (logit units)")


if __name__ == "__main__":
    main()
