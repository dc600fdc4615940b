"""Synthetic scene throughput: scenes per second of ``SyntheticScenes`` on one core.

What it measures: ``SyntheticScenes(...)[i]`` for fresh indices (land cover,
optical, SAR with speckle, clouds with shadows, torch dict), one thread, after
a warm-up; each repeat generates ``--count`` scenes and the median repeat is
reported, with wall-clock and CPU-time rates (on a shared machine the CPU-time
rate shows how much of the wall time was lost to other processes). The
``xarray.Dataset`` path (:func:`synthetic_scene`) is timed too, for comparison.

Usage::

    taskset -c 0 .venv/bin/python benchmarks/bench_scenes.py --size 256 --count 100 --repeats 7
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy and torch start their pools.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edc_lab.data.synthetic import SyntheticScenes, synthetic_scene  # noqa: E402


def _rate(make, indices) -> tuple[float, float]:
    """(wall-clock, CPU-time) scenes per second for ``make(i)`` over ``indices``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for index in indices:
        make(index)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(indices) / wall, len(indices) / cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--count", type=int, default=100, help="scenes per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--cloud-cover", type=float, nargs=2, default=(0.2, 0.8))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    total = args.warmup + args.repeats * args.count
    dataset = SyntheticScenes(total, size=args.size, seed=0, cloud_cover=tuple(args.cloud_cover))
    for index in range(args.warmup):
        dataset[index]
    rates = [
        _rate(dataset.__getitem__, range(args.warmup + r * args.count, args.warmup + (r + 1) * args.count))
        for r in range(args.repeats)
    ]
    wall = statistics.median(r[0] for r in rates)
    cpu = statistics.median(r[1] for r in rates)

    xarray_count = max(10, args.count // 4)
    xarray_rates = [
        _rate(lambda i: synthetic_scene(i, args.size, cloud_cover=0.5), range(r * xarray_count, (r + 1) * xarray_count))
        for r in range(3)
    ]

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"SyntheticScenes size={args.size} cloud_cover={tuple(args.cloud_cover)}, 1 thread, "
          f"{args.repeats} repeats x {args.count} scenes after {args.warmup} warm-up")
    print(f"  wall-clock: median {wall:.1f} scenes/s ({1000 / wall:.2f} ms/scene), "
          f"range {min(r[0] for r in rates):.1f}-{max(r[0] for r in rates):.1f}")
    print(f"  CPU time:   median {cpu:.1f} scenes/s ({1000 / cpu:.2f} ms/scene)")
    print(f"synthetic_scene (xarray.Dataset) median {statistics.median(r[0] for r in xarray_rates):.1f} scenes/s wall-clock")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
