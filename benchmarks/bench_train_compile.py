"""Compiled training (``edc-lab train --compile``) against eager: images/s and the first steps' losses.

NOT RUNNABLE NOW: compiled training is refused as not working yet (a compiled run gave the weights
no gradient; ``benchmarks/RESULTS.md``, "Compiled training"); ``TrainConfig(compile=True)`` raises.
Kept as the record of how the figures there were measured, for when the defect is fixed.

    OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1 .venv/bin/python benchmarks/bench_train_compile.py \\
        --sizes 96 256 --steps 20

For each crop size and stage (the ``cpu-quick`` teacher, then the ``cpu-quick`` student distilled
from that teacher) it runs :func:`edc_lab.train.train` twice with identical settings and data,
eager then compiled (``compile=True``), in this process: ``cpu-quick`` (``edc_tiny``, batch 8)
with ``--steps`` steps, ``--train-count`` synthetic scenes, no evaluation before the last step,
no progress bar. The teacher's eager run is the student's teacher. Reported per run: the first
step's time (compilation included, when compiled), the median time of the later steps, images/s
from it (batch / median), the steps after which compiling has paid for itself, and the largest
difference between the two runs' losses step by step. Results:
``benchmarks/results/train_compile_cpu.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(stage: str, size: int, steps: int, train_count: int, out: Path, compiled: bool,
            teacher: Path | None) -> dict:
    from edc_lab.train import make_config, train

    config = make_config(profile="cpu-quick", stage=stage, size=size, steps=steps, train_count=train_count,
                         val_count=4, eval_every=0, checkpoint_every=steps, out=str(out), progress=False,
                         compile=compiled, teacher=str(teacher) if teacher else None)
    start = time.perf_counter()
    history = train(config)
    wall = time.perf_counter() - start
    steps_done = [record for record in history if record["split"] == "train"]
    later = [record["seconds"] for record in steps_done[1:]]
    return {"stage": stage, "size": size, "compiled": compiled, "steps": steps, "batch_size": config.batch_size,
            "wall_s": wall, "first_step_s": steps_done[0]["seconds"], "median_step_s": statistics.median(later),
            "images_per_s": config.batch_size / statistics.median(later),
            "losses": [record["loss"] for record in steps_done]}


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--train-count", type=int, default=32)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "train_compile_cpu.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_compile_") as work:
        work = Path(work)
        for size in args.sizes:
            teacher = None
            for stage in ("teacher", "student"):
                pair = {}
                for compiled in (False, True):
                    out = work / f"{stage}_{size}_{'compiled' if compiled else 'eager'}"
                    pair[compiled] = one_run(stage, size, args.steps, args.train_count, out, compiled, teacher)
                    print(f"{stage} {size}² {'compiled' if compiled else 'eager   '}: first step "
                          f"{pair[compiled]['first_step_s']:.1f} s, then {pair[compiled]['median_step_s']:.3f} s/step "
                          f"({pair[compiled]['images_per_s']:.1f} images/s)", flush=True)
                eager, compiled = pair[False], pair[True]
                saved = eager["median_step_s"] - compiled["median_step_s"]
                extra = compiled["first_step_s"] - eager["first_step_s"]
                difference = max(abs(a - b) for a, b in zip(eager["losses"], compiled["losses"]))
                for run in (eager, compiled):
                    run["speedup"] = eager["median_step_s"] / run["median_step_s"]
                    run["max_loss_difference"] = difference
                    run["pays_after_steps"] = (None if not run["compiled"] else
                                               (math.ceil(extra / saved) if saved > 0 else None))
                rows += [eager, compiled]
                if stage == "teacher":
                    teacher = work / f"teacher_{size}_eager" / "last.pt"
    record = {"command": "benchmarks/bench_train_compile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print("\n| stage | size | run | first step (s) | s/step after | images/s | speed-up | pays after (steps) "
          "| max loss difference |\n|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        pays = "-" if not row["compiled"] else ("never" if row["pays_after_steps"] is None else row["pays_after_steps"])
        print(f"| {row['stage']} | {row['size']}² | {'compiled' if row['compiled'] else 'eager'} | "
              f"{row['first_step_s']:.1f} | {row['median_step_s']:.3f} | {row['images_per_s']:.1f} | "
              f"{row['speedup']:.2f}x | {pays} | {row['max_loss_difference']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
