"""Time of one training step on the CPU: what the optimiser and the finite-weights guard cost.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_train_step.py --steps 60 --repeats 3

Runs :func:`edc_lab.train.train` (``cpu-quick``: ``edc_tiny`` teacher, ``--size``² crops (96 by default), batch 8,
no evaluation, no progress bar) for ``--steps`` steps in three variants, in one process, each
after a warm-up run:

* ``before``: AdamW's one-tensor-at-a-time loop (``foreach=False``, PyTorch's choice on the
  CPU) and the finite-weights guard that checks each tensor of the ``state_dict`` with its own
  ``isfinite().all()`` (what :func:`train` did after every step before this benchmark);
* ``foreach``: AdamW's multi-tensor update, the per-tensor guard;
* ``now``: the multi-tensor update and the guard of
  :func:`edc_lab.train.checkpoint.non_finite_entries` (one ``isfinite`` over all values).

The variants run interleaved (before, foreach, now, before, ...) so that a change of load
affects all of them; the median of ``--repeats`` runs is reported, with the ratio to
``before``. It also checks that the three variants end with the same weights, bit for bit.
Results: ``benchmarks/results/train_step_cpu_<size>.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import edc_lab.train.loop as loop
import edc_lab.train.training_step as training_step
from edc_lab.train import load_checkpoint, make_config, train

ROOT = Path(__file__).resolve().parents[1]


def per_tensor_guard(state_dict):
    """The guard as it was: one isfinite().all() per floating-point tensor."""
    named = [(name, value) for name, value in state_dict.items() if torch.is_tensor(value) and value.is_floating_point()]
    finite = torch.stack([value.detach().isfinite().all() for _, value in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def run(variant: str, steps: int, out: Path, size: int = 96) -> float:
    real_optimizer, real_guard = loop.build_optimizer, training_step.non_finite_entries

    def optimizer(model, config):
        built = real_optimizer(model, config)
        for group in built.param_groups:
            group["foreach"] = variant != "before"
        return built

    loop.build_optimizer = optimizer
    if variant != "now":
        training_step.non_finite_entries = per_tensor_guard
    try:
        config = make_config(stage="teacher", model="edc_tiny", profile="cpu-quick", size=size, steps=steps, eval_every=0,
                             checkpoint_every=steps, progress=False, out=str(out))
        start = time.perf_counter()
        train(config)
        return time.perf_counter() - start
    finally:
        loop.build_optimizer, training_step.non_finite_entries = real_optimizer, real_guard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=96, help="crop size (cpu-quick: 96; notebooks 03, 05, 07: 64)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/train_step_cpu_<size>.json")
    args = parser.parse_args()
    variants = ("before", "foreach", "now")
    seconds: dict[str, list[float]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        run("now", 5, folder / "warm-up")
        for repeat in range(args.repeats):
            for variant in variants:
                seconds[variant].append(run(variant, args.steps, folder / f"{variant}-{repeat}", args.size))
        weights = [load_checkpoint(folder / f"{variant}-0" / "last.pt")[0].state_dict() for variant in variants]
        identical = all(torch.equal(weights[0][name], other[name]) for other in weights[1:] for name in weights[0])
    median = {variant: statistics.median(values) for variant, values in seconds.items()}
    result = dict(
        command=f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python benchmarks/bench_train_step.py "
                f"--steps {args.steps} --repeats {args.repeats} --size {args.size}",
        machine=platform.processor() or platform.machine(), threads=torch.get_num_threads(), torch=torch.__version__,
        steps=args.steps, size=args.size, seconds=seconds, median_step_ms={v: 1000 * m / args.steps for v, m in median.items()},
        ratio_to_before={v: median[v] / median["before"] for v in variants}, identical_weights=identical,
    )
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"train_step_cpu_{args.size}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"| variant | median step (ms) | ratio to before |\n|---|---|---|")
    for variant in variants:
        print(f"| {variant} | {result['median_step_ms'][variant]:.1f} | {result['ratio_to_before'][variant]:.3f} |")
    print("identical weights:", identical)
    if not identical:
        raise SystemExit("the variants ended with different weights")


if __name__ == "__main__":
    main()
