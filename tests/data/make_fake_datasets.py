"""Write small fake datasets in the real M3M-CR and WHU-OPT-SAR layouts (TorchGeo's tests/data practice).

The fakes are tiny canonical samples with a structure the tests can reason
about — rectangular class blocks, per-class optical and SAR values, a round
cloud — saved with ``edc_lab.data.writer``, i.e. in exactly the formats the
readers meet in the real datasets (uint16 PlanetScope-like optical on 3 m,
float64 dB SAR and WorldCover codes on a shifted 10 m grid, a ``.npy`` mask;
or WHU-OPT-SAR's uint8 optical/sar/lbl triplets).

Use from tests (``make_fake_m3mcr(tmp_path)``) or from the shell::

    python tests/data/make_fake_datasets.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from affine import Affine

from edc_lab.data.sample import M3MCR_CLASSES, M3MCR_COLORS, WHU_CLASSES, WHU_COLORS, make_sample
from edc_lab.data.writer import write_m3mcr, write_whu_sample

#: first names of the official WHU-OPT-SAR split (train, test), used to name fake scenes
WHU_TRAIN_NAMES = ("NH49E004021.tif", "NH49E005014.tif", "NH49E005023.tif")
WHU_TEST_NAMES = ("NH49E001014.tif", "NH49E001017.tif")


def fake_sample(
    seed: int,
    height: int = 64,
    width: int | None = None,
    *,
    classes: str = "whu",
    sar_channels: int = 2,
    resolution: float = 3.0,
    crs: str = "EPSG:32646",
    origin: tuple[float, float] = (760299.0, 1898412.0),
    block: int = 16,
) -> xr.Dataset:
    """A canonical sample with class blocks of ``block`` px, per-class values and one round cloud.

    Class k has optical reflectance 0.05 + 0.1 k (NIR: 0.5 - 0.05 k) and SAR
    0.1 + 0.12 k (so water/low classes are dark), plus small noise.
    """
    width = height if width is None else width
    rng = np.random.default_rng(seed)
    names, colors = (WHU_CLASSES, WHU_COLORS) if classes == "whu" else (M3MCR_CLASSES, M3MCR_COLORS)
    blocks = rng.integers(0, len(names), size=(-(-height // block), -(-width // block)))
    label = np.kron(blocks, np.ones((block, block), dtype=np.int64))[:height, :width]

    base = 0.05 + 0.1 * label
    optical_clear = np.stack([base, base + 0.02, base + 0.04, 0.5 - 0.05 * label]).astype(np.float32)
    optical_clear += rng.normal(0, 0.005, optical_clear.shape).astype(np.float32)
    optical_clear = np.clip(optical_clear, 0.001, 1.0)

    rows, cols = np.mgrid[0:height, 0:width]
    cloud_mask = (rows - 0.3 * height) ** 2 + (cols - 0.6 * width) ** 2 < (0.25 * min(height, width)) ** 2
    optical = np.where(cloud_mask, 0.8, optical_clear).astype(np.float32)

    sar = np.stack([0.1 + 0.12 * label + 0.03 * channel for channel in range(sar_channels)]).astype(np.float32)
    sar = np.clip(sar + rng.normal(0, 0.01, sar.shape).astype(np.float32), 0.0, 1.0)
    polarizations = {1: ("SAR",), 2: ("VV", "VH")}[sar_channels]

    transform = Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1])
    return make_sample(
        optical, sar, label, cloud_mask, optical_clear, polarizations=polarizations, crs=crs, transform=transform,
        dataset="fake", class_names=names, class_colors=colors,
    )


def make_fake_m3mcr(
    root: str | Path, count: int = 2, size: int = 64, seed: int = 0, split: str = "train", **writer_kwargs
) -> Path:
    """``count`` fake M3M-CR samples under ``<root>/<split>/`` + ``<root>/<split>.csv``; returns root."""
    samples = [fake_sample(seed + index, size, classes="m3mcr") for index in range(count)]
    write_m3mcr(samples, root, split=split, **writer_kwargs)
    return Path(root)


def make_fake_whu(
    root: str | Path,
    names: tuple[str, ...] = WHU_TRAIN_NAMES[:2] + WHU_TEST_NAMES[:1],
    height: int = 96,
    width: int = 80,
    seed: int = 0,
    **writer_kwargs,
) -> Path:
    """Fake WHU-OPT-SAR scenes (optical/sar/lbl triplets) named after the official split; returns root."""
    for index, name in enumerate(names):
        ds = fake_sample(seed + index, height, width, sar_channels=1, resolution=5.0, crs="EPSG:32649",
                         origin=(500000.0 + 10000.0 * index, 3400000.0))
        write_whu_sample(ds, root, name, **writer_kwargs)
    return Path(root)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    make_fake_m3mcr(out / "m3mcr", split="train")
    make_fake_m3mcr(out / "m3mcr", count=1, split="test", seed=100)
    make_fake_whu(out / "whu")
    print(f"fake M3M-CR and WHU-OPT-SAR datasets written to {out}")
    return 0


# --------------------------------------------------------------------------- editing a GeoTIFF in a test
def rewrite(path: Path, values: np.ndarray | None = None, **profile_changes) -> None:
    """Rewrite a GeoTIFF with other values and/or profile entries (crs, transform, nodata, dtype...)."""
    with rasterio.open(path) as source:
        old, profile = source.read(), source.profile
    values = old if values is None else values
    profile.update(count=values.shape[0], height=values.shape[1], width=values.shape[2], dtype=values.dtype.name,
                   **profile_changes)
    if profile.get("crs") is None:
        profile.pop("crs", None)
    path.unlink()
    with rasterio.open(path, "w", **profile) as target:
        target.write(values)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as source:
        return source.read()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
