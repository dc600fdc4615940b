"""``edc-lab make-data``: write synthetic scenes in the real M3M-CR or WHU-OPT-SAR layout.

Why: the readers, the CLI and the notebooks can then be exercised on data in
the real formats without downloading anything, and the small sample committed
under ``data/`` is reproducible by one command::

    edc-lab make-data --layout m3mcr --count 4 --size 128 --seed 0 --out data/m3mcr_sample

Scene ``i`` is ``synthetic_scene(seed + i, size, cloud_cover)`` with the cover
drawn uniformly from ``--cloud-cover LO HI`` by a generator seeded with
``seed``. The last ``round(count * test_fraction)`` scenes (at least one when
``count >= 2``) form the test split:

* ``m3mcr``: ``<out>/train/``, ``<out>/test/`` and ``<out>/train.csv``,
  ``<out>/test.csv`` (see :func:`edc_lab.data.writer.write_m3mcr_sample`);
* ``whu``: ``<out>/optical|sar|lbl/NAME.tif`` with NAMEs taken in order from the
  official split (train names for train scenes, test names for test scenes), so
  :class:`~edc_lab.data.whu.WHUOptSAR` finds them; one SAR channel.

Our choice (tooling); nothing here is from the paper.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from edc_lab.options import float_in, int_in

LAYOUTS: tuple[str, ...] = ("m3mcr", "whu")
#: accepted ranges of the numeric options (inclusive)
COUNT_RANGE = (1, 10_000)
SIZE_RANGE = (16, 4096)
SEED_RANGE = (0, 2**32 - 1)


def split_counts(count: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) scene counts: the last round(count * test_fraction) are test, >= 1 when count >= 2."""
    n_test = int(round(count * test_fraction))
    if count >= 2 and test_fraction > 0:
        n_test = max(n_test, 1)
    n_test = min(n_test, count - 1) if count >= 1 else 0
    return count - n_test, n_test


def make_data(
    layout: str,
    out: str | Path,
    *,
    count: int = 8,
    size: int = 128,
    seed: int = 0,
    cloud_cover: Sequence[float] = (0.2, 0.8),
    test_fraction: float = 0.2,
) -> dict[str, list[str]]:
    """Write ``count`` synthetic scenes in ``layout`` under ``out``; returns {split: [scene ids]}."""
    from edc_lab.data.synthetic import synthetic_scene
    from edc_lab.data.whu import official_split
    from edc_lab.data.writer import write_m3mcr, write_whu_sample

    if layout not in LAYOUTS:
        raise ValueError(f"make-data: expected --layout in {LAYOUTS}, found {layout!r}")
    for option, value, (low, high) in (("--count", count, COUNT_RANGE), ("--size", size, SIZE_RANGE),
                                       ("--seed", seed, SEED_RANGE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise ValueError(f"make-data: expected {option} an integer in [{low}, {high}], found {value!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"make-data: expected --test-fraction in [0, 1), found {test_fraction!r}")
    cloud_cover = [cloud_cover] if isinstance(cloud_cover, (int, float)) else list(cloud_cover)
    if len(cloud_cover) not in (1, 2):
        raise ValueError(f"make-data: expected --cloud-cover LO [HI] (one or two numbers), found {cloud_cover}")
    low, high = (cloud_cover[0], cloud_cover[-1])
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"make-data: expected 0 <= --cloud-cover LO <= HI <= 1, found {tuple(cloud_cover)}")
    n_train, n_test = split_counts(count, test_fraction)
    if layout == "whu":
        names = official_split()
        for split, n_scenes in (("train", n_train), ("test", n_test)):
            if n_scenes > len(names[split]):
                raise ValueError(
                    f"make-data: expected at most {len(names[split])} {split} scenes for the WHU-OPT-SAR layout "
                    f"(official split), found {n_scenes}"
                )
    covers = np.random.default_rng(seed).uniform(low, high, size=count)
    sar_channels = 2 if layout == "m3mcr" else 1
    scenes = [
        synthetic_scene(seed + index, size=size, cloud_cover=float(covers[index]), sar_channels=sar_channels)
        for index in range(count)
    ]
    by_split = {"train": scenes[:n_train], "test": scenes[n_train:]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    written: dict[str, list[str]] = {}
    if layout == "m3mcr":
        for split, samples in by_split.items():
            if samples:
                write_m3mcr(samples, out, split=split)
                written[split] = [f"{split}/p_{patch}" for patch in range(len(samples))]
        return written

    for split, samples in by_split.items():
        for name, ds in zip(names[split], samples):
            write_whu_sample(ds, out, name)
        if samples:
            written[split] = list(names[split][: len(samples)])
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUTS, required=True, help="file layout to write")
    parser.add_argument("--count", type=int_in(*COUNT_RANGE), default=8, help="number of scenes (default 8)")
    parser.add_argument("--size", type=int_in(*SIZE_RANGE), default=128, help="scene side in pixels (default 128)")
    parser.add_argument("--seed", type=int_in(*SEED_RANGE), default=0,
                        help="seed of scene 0; scene i uses seed + i (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; files are overwritten)")
    parser.add_argument("--cloud-cover", type=float_in(0.0, 1.0), nargs="+", default=[0.2, 0.8], metavar="LO [HI]",
                        help="cloud cover, fixed or drawn uniformly per scene from [LO, HI] (default 0.2 0.8)")
    parser.add_argument("--test-fraction", type=float_in(0.0, 1.0, high_open=True), default=0.2,
                        help="fraction of scenes in the test split, in [0, 1) (default 0.2)")


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out}: expected an output folder, found a file")
        written = make_data(
            args.layout, args.out, count=args.count, size=args.size, seed=args.seed,
            cloud_cover=args.cloud_cover, test_fraction=args.test_fraction,
        )
    except (ValueError, OSError) as error:  # DataError is a ValueError
        print(f"edc-lab make-data: error: {error}", file=sys.stderr)
        return 2
    folder_bytes = sum(path.stat().st_size for path in Path(args.out).rglob("*") if path.is_file())
    summary = ", ".join(f"{len(ids)} {split}" for split, ids in written.items())
    print(f"wrote {args.count} scenes ({summary}) of {args.size}x{args.size} px in the {args.layout} layout "
          f"to {args.out} (folder now {folder_bytes / 1e6:.2f} MB)")
    return 0
