"""The predictor: a checkpoint loaded once, predicting scenes from GeoTIFFs into GeoTIFFs
(:class:`Predictor`, :func:`predict_geotiff`), and the checks of its options and output paths.

For each scene it reads the inputs (:mod:`edc_lab.predict.reader`), blends the
model's tiles (:mod:`edc_lab.predict.tiling`) and writes the arg-max class map
as a single-band uint8 GeoTIFF with the optical image's CRS and transform (255
= no data where the optical has none), plus optionally the probabilities
(float32, one band per class) and the cloud-free image (float32 reflectance in
[0, 1], 4 bands); tiled (256²), DEFLATE-compressed, with overviews on request,
so GIS tools open a zoom fast (:class:`edc_lab.data.writer.RowWriter`).

Outputs never clobber (:func:`check_prediction_outputs`): an output path must
be a regular file or new (a device such as ``/dev/null``, a FIFO or a folder is
refused), must not resolve to an input or to another output (symbolic or hard
link included), and an existing one must be a TIFF (an earlier prediction).
Every file is written to a temporary name in its folder, then renamed
(``os.replace``). Our choice; nothing here is from the paper.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import rasterio
import torch

from edc_lab.data.io import check_declared_size, check_output_paths, read_grid
from edc_lab.data.outputs import check_output_file, check_replaceable, is_tiff
from edc_lab.data.sample import IGNORE_INDEX, OPTICAL_BANDS, DataError
from edc_lab.predict.memory import release_free_memory
from edc_lab.predict.reader import CONVENTIONS, OPTICAL_WHAT, SceneReader
from edc_lab.predict.tiling import TileOutputs, blend_rows, blend_scene, tile_starts, window_alias

#: accepted ranges of the numeric options (inclusive); the tile size is the ``--window`` option
TILE_RANGE = (16, 8192)
BATCH_SIZE_RANGE = (1, 1024)
#: the normalisation a checkpoint's training data implies (synthetic scenes are written in the M3M-CR layout)
DEFAULT_CONVENTION = {"m3mcr": "m3mcr", "whu": "whu", "synthetic": "m3mcr"}
#: the largest scene streamed (pixels): 2^31, e.g. 46340² or four Sentinel-2 tiles; a larger header is refused
MAX_STREAM_PIXELS = 2**31


class Predictor:
    """A checkpoint loaded once, predicting any number of scenes (:meth:`predict`).

    ``stream=True`` (the default) reads, predicts and writes a band of rows at a
    time (:class:`edc_lab.predict.reader.SceneReader`,
    :func:`edc_lab.predict.tiling.blend_rows`, :class:`edc_lab.data.writer.RowWriter`):
    memory is set by ``tile``, ``batch_size`` and the scene's width, not its
    height. ``stream=False`` reads the whole scene and blends it in memory first
    (refused when the buffers would pass :data:`edc_lab.data.io.MAX_RASTER_BYTES`).
    Both write the same files, pixel for pixel. ``tile`` is the side of a tile
    in pixels (the ``--window`` option; the keyword ``window=`` still works).

    Speed (:mod:`edc_lab.acceleration`, ``benchmarks/RESULTS.md``): ``compile=True`` runs the
    tiles through ``torch.compile`` (compiled at the first batch, once per tile shape and
    process; ``compile_cache`` sets inductor's disk cache, which makes a second process start
    fast); every batch then holds ``batch_size`` tiles (a short last batch of a row is padded),
    so one shape is compiled. ``precision``: ``auto`` (fp32 on a CPU, mixed precision on a
    GPU), ``fp32`` or ``bf16`` (refused on a CPU without native bf16).
    """

    @window_alias
    def __init__(self, checkpoint: str | Path, *, tile: int = 256, overlap: int = 64, convention: str | None = None,
                 device: str | torch.device = "auto", batch_size: int = 4, fill_nonfinite: float | None = None,
                 stream: bool = True, overviews: bool = False, compile: bool = False, precision: str = "auto",
                 compile_cache: str | Path | None = None) -> None:
        from edc_lab.acceleration import compile_model, resolve_precision
        from edc_lab.train.checkpoint import load_checkpoint
        from edc_lab.train.distributed import resolve_device

        check_predict_options(tile, overlap, batch_size, fill_nonfinite)
        if convention is not None and convention not in CONVENTIONS:
            raise ValueError(f"--convention: expected one of {CONVENTIONS}, found {convention!r}")
        self.checkpoint = Path(checkpoint)
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        self.fill_nonfinite, self.stream, self.overviews = fill_nonfinite, bool(stream), bool(overviews)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.amp_dtype = resolve_precision(precision, self.device)  # before loading: a refused option costs nothing
        self.model, meta = load_checkpoint(checkpoint, map_location=self.device)
        self.compiled = bool(compile)
        # the model the tiles go through: compiled at the first tile batch (once per tile shape and process)
        self.forward_model = TileOutputs(self.model)
        if compile:
            self.forward_model = compile_model(TileOutputs(self.model, channels_last=True), inference=True,
                                               device=self.device, cache_dir=compile_cache)
        data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        self.convention = convention or DEFAULT_CONVENTION.get(data.get("name"), "m3mcr")
        self.in_sar = int(self.model.build_args.get("in_sar", data.get("in_sar", 2)))
        self.num_classes = int(self.model.build_args.get("num_classes", 1))
        class_names = list(data.get("class_names") or [])
        if len(class_names) != self.num_classes:  # missing or inconsistent metadata: number the classes
            class_names = [f"class {k}" for k in range(self.num_classes)]
        self.class_names = class_names

    def _no_cloudfree(self, what: str) -> ValueError:
        return ValueError(f"--cloudfree: expected a model with a cloud-removal head, found {self.checkpoint} holding "
                          f"{self.model.build_args.get('name')}, which {what}")

    def predict(self, optical_path: str | Path, sar_path: str | Path, out_path: str | Path, *,
                probabilities_path: str | Path | None = None, cloudfree_path: str | Path | None = None) -> dict:
        """Predict one scene and write its class map (and optionally probabilities / cloud-free image).

        Returns a summary dict: ``shape`` (H, W), ``crs``, ``transform`` (6 numbers),
        ``windows`` (how many tiles; the key keeps its earlier name), ``class_counts``
        ({class name: pixels}) and the paths written.
        """
        from edc_lab.data.writer import GDAL_CACHE_MB, RowWriter

        check_prediction_outputs(
            {"--out": out_path, "--probabilities": probabilities_path, "--cloudfree": cloudfree_path},
            {"--checkpoint": self.checkpoint, "--optical": optical_path, "--sar": sar_path},
        )
        if cloudfree_path is not None and not getattr(self.model, "has_cloud_removal", True):
            raise self._no_cloudfree("has none")
        header = read_grid(optical_path, OPTICAL_WHAT)  # sizes are checked before anything else is opened
        height, width = header.shape
        if self.stream and height * width > MAX_STREAM_PIXELS:
            raise DataError(
                f"{header.path}: expected a scene of at most {MAX_STREAM_PIXELS} pixels, found a header declaring "
                f"{height}x{width} = {height * width} pixels ({4 * height * width * 2 / 2**30:.1f} GiB of uint16 "
                f"optical); refused before reading (cut it into parts, e.g. with gdal_translate -srcwin)")
        if not self.stream:  # the whole scene's blended probabilities live in memory (float64)
            check_declared_size(header.path, "optical scene: blended class probabilities and weights in float64",
                                self.num_classes + (len(OPTICAL_BANDS) if cloudfree_path else 0) + 1, height, width,
                                "float64")
        reader = SceneReader(optical_path, sar_path, convention=self.convention, sar_channels=self.in_sar,
                             fill_nonfinite=self.fill_nonfinite)
        grid = reader.grid
        if self.stream:
            bands, nodata_rows = self._stream(reader, cloudfree_path is not None)
        else:
            optical, sar, nodata, _ = reader.read(0, height)
            outputs = blend_scene(self.forward_model, torch.from_numpy(optical), torch.from_numpy(sar),
                                  tile=self.tile, overlap=self.overlap, batch_size=self.batch_size,
                                  device=self.device, amp_dtype=self.amp_dtype, cloudfree=cloudfree_path is not None,
                                  full_batches=self.compiled)
            bands = iter([(0, outputs["probabilities"], outputs["cloudfree"])])
            nodata_rows = lambda row0, row1: nodata[row0:row1]  # noqa: E731
        common = dict(crs=grid.crs, transform=grid.transform, height=height, width=width)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        nodata_pixels = 0
        writers: list[RowWriter] = []
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):  # tiles are flushed as written, not cached
            try:
                classes_out = RowWriter(out_path, 1, "uint8", nodata=IGNORE_INDEX, **common,
                                        overviews="nearest" if self.overviews else None)
                writers.append(classes_out)
                probabilities_out = cloudfree_out = None
                if probabilities_path is not None:
                    probabilities_out = RowWriter(probabilities_path, self.num_classes, "float32",
                                                  descriptions=self.class_names, **common,
                                                  overviews="average" if self.overviews else None)
                    writers.append(probabilities_out)
                if cloudfree_path is not None:
                    cloudfree_out = RowWriter(cloudfree_path, len(OPTICAL_BANDS), "float32", descriptions=OPTICAL_BANDS,
                                              **common, overviews="average" if self.overviews else None)
                    writers.append(cloudfree_out)
                for row0, probabilities, cloudfree in bands:
                    if cloudfree_out is not None and cloudfree is None:  # found at the first band, before any write
                        raise self._no_cloudfree("returns none")
                    nodata = nodata_rows(row0, row0 + probabilities.shape[1])
                    classes = probabilities.numpy().argmax(axis=0).astype(np.uint8)  # numpy's: 4x torch's on (K, n, W)
                    classes[nodata] = IGNORE_INDEX
                    counts += np.bincount(classes[~nodata].ravel(), minlength=self.num_classes)[:self.num_classes]
                    nodata_pixels += int(nodata.sum())
                    classes_out.write(classes[None])
                    if probabilities_out is not None:
                        probabilities_out.write(probabilities.numpy())
                    if cloudfree_out is not None:
                        cloudfree_out.write(cloudfree.clamp(0, 1).numpy())
                if self.stream:
                    reader.check_some_data()
                for writer in writers:  # every file complete: rename them into place
                    writer.close()
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
        written = {"out": str(out_path)}
        if probabilities_path is not None:
            written["probabilities"] = str(probabilities_path)
        if cloudfree_path is not None:
            written["cloudfree"] = str(cloudfree_path)
        tiles = len(tile_starts(height, self.tile, self.overlap)) * len(tile_starts(width, self.tile, self.overlap))
        return {
            "shape": (height, width),
            "crs": str(grid.crs),
            "transform": list(grid.transform)[:6],
            "windows": tiles,
            "convention": self.convention,
            "streamed": self.stream,
            "class_counts": {name: int(count) for name, count in zip(self.class_names, counts)},
            "nodata_pixels": nodata_pixels,
            **written,
        }

    def _stream(self, reader: SceneReader, cloudfree: bool):
        """(the bands of :func:`blend_rows` over the reader, nodata lookup by rows) for one streamed scene."""
        height, width = reader.shape
        nodata_parts: dict[int, np.ndarray] = {}  # first row -> nodata of the rows read there, until written
        lock = threading.Lock()  # the next band is read in a second thread (blend_rows' read_ahead)

        def read_rows(row0: int, row1: int) -> tuple[torch.Tensor, torch.Tensor]:
            optical, sar, nodata, _ = reader.read(row0, row1)
            with lock:
                nodata_parts[row0] = nodata
            release_free_memory()
            return torch.from_numpy(optical), torch.from_numpy(sar)

        def nodata_rows(row0: int, row1: int) -> np.ndarray:
            with lock:
                starts = [start for start in sorted(nodata_parts) if start < row1]  # not a band read ahead
                rows = np.concatenate([nodata_parts[start] for start in starts])
                wanted = rows[row0 - starts[0]:row1 - starts[0]]
                for start in [start for start in starts if start + len(nodata_parts[start]) <= row1]:
                    del nodata_parts[start]  # every row of this part is written
            return wanted

        bands = blend_rows(self.forward_model, height, width, read_rows, tile=self.tile, overlap=self.overlap,
                           batch_size=self.batch_size, device=self.device, amp_dtype=self.amp_dtype,
                           cloudfree=cloudfree, full_batches=self.compiled, read_ahead=True)
        return bands, nodata_rows


@window_alias
def predict_geotiff(
    checkpoint: str | Path,
    optical_path: str | Path,
    sar_path: str | Path,
    out_path: str | Path,
    tile: int = 256,
    overlap: int = 64,
    *,
    probabilities_path: str | Path | None = None,
    cloudfree_path: str | Path | None = None,
    convention: str | None = None,
    device: str = "auto",
    batch_size: int = 4,
    fill_nonfinite: float | None = None,
    stream: bool = True,
    overviews: bool = False,
    compile: bool = False,
    precision: str = "auto",
    compile_cache: str | Path | None = None,
) -> dict:
    """Predict a class map for one optical + SAR scene and write it as a GeoTIFF (:class:`Predictor`).

    ``tile`` is the side of a tile in pixels (the ``--window`` option; the
    keyword ``window=`` still works); ``compile``, ``precision`` and ``compile_cache`` as
    in :class:`Predictor`. Returns a summary dict: ``shape`` (H, W),
    ``crs``, ``transform`` (6 numbers), ``windows`` (how many tiles),
    ``class_counts`` ({class name: pixels}) and the paths written.
    """
    check_prediction_outputs(  # before the checkpoint is loaded (Predictor checks the numeric options first)
        {"--out": out_path, "--probabilities": probabilities_path, "--cloudfree": cloudfree_path},
        {"--checkpoint": checkpoint, "--optical": optical_path, "--sar": sar_path},
    )
    predictor = Predictor(checkpoint, tile=tile, overlap=overlap, convention=convention, device=device,
                          batch_size=batch_size, fill_nonfinite=fill_nonfinite, stream=stream, overviews=overviews,
                          compile=compile, precision=precision, compile_cache=compile_cache)
    return predictor.predict(optical_path, sar_path, out_path, probabilities_path=probabilities_path,
                             cloudfree_path=cloudfree_path)


def check_predict_options(tile, overlap, batch_size, fill_nonfinite=None) -> None:
    """One ValueError naming the first bad numeric option (the API and the CLI share it; the tile is ``--window``)."""
    low, high = TILE_RANGE
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or not low <= tile <= high:
        raise ValueError(f"--window: expected an integer in [{low}, {high}] pixels, found {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile:
        raise ValueError(f"--overlap: expected an integer with 0 <= overlap < window ({tile}) pixels, "
                         f"found {overlap!r}")
    low, high = BATCH_SIZE_RANGE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not low <= batch_size <= high:
        raise ValueError(f"--batch-size: expected an integer in [{low}, {high}], found {batch_size!r}")
    if fill_nonfinite is not None and not (isinstance(fill_nonfinite, (int, float)) and math.isfinite(fill_nonfinite)):
        raise ValueError(f"--fill-nonfinite: expected a finite number, found {fill_nonfinite!r}")


def check_prediction_outputs(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse outputs that could not be written safely (one DataError naming the option), before any work.

    Three checks, in this order: each output is a regular file or a new path
    with a usable name (:func:`edc_lab.data.outputs.check_output_file`: no
    device, FIFO, socket or directory, which the final rename would replace);
    no output is an input or another output, links resolved
    (:func:`edc_lab.data.io.check_output_paths`); an existing output is a TIFF
    (an earlier prediction), not a checkpoint or a list passed by mistake
    (:func:`edc_lab.data.outputs.check_replaceable`).
    """
    given = {option: path for option, path in outputs.items() if path is not None}
    for option, path in given.items():
        check_output_file(option, path)
    check_output_paths(given, inputs)
    for option, path in given.items():
        check_replaceable(option, path, is_tiff, "a TIFF (an earlier prediction)")
