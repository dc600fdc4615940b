"""GeoTIFF in, georeferenced class map out: prediction over scenes of any size, by overlapping tiles.

A trained model sees patches of a few hundred pixels; a real scene (WHU-OPT-SAR:
5556×3704) is far larger, and a tiny one may be smaller than a patch. So:

1. **read and align** (:mod:`edc_lab.predict.reader`): the optical GeoTIFF
   defines the output grid; the SAR GeoTIFF is resampled onto it *by
   georeference* (its own CRS, resolution and origin may differ);
2. **normalise** as the training data was (``convention``: ``"m3mcr"``,
   ``"whu"`` or ``"unit"``, :mod:`edc_lab.predict.reader`);
3. **tile** (:mod:`edc_lab.predict.tiling`): tiles of ``tile`` pixels (the
   ``--window`` option) with ``overlap`` pixels of overlap, the last one of a
   row / column moved inwards to end at the border; a scene smaller than a
   tile is one tile of its own size;
4. **blend**: each tile's class probabilities (and cloud-free estimate) are
   weighted by a 2-D Hann taper, and the weighted sum is divided by the summed
   weights;
5. **write** (:mod:`edc_lab.predict.predictor`) the arg-max class map as a
   uint8 GeoTIFF on the optical grid, optionally the probabilities and the
   cloud-free image; tiled, DEFLATE-compressed, with overviews on request.

**Streaming** (the default). Steps 1–5 run a band of rows at a time: the
tiles are visited row by row, the inputs are read with rasterio windowed
reads as the tiles reach them (each row once; the SAR of those rows aligned
onto them), and as soon as no later tile touches a row, its blended values are
final and go to the output files (:func:`blend_rows`,
:class:`edc_lab.data.writer.RowWriter`); the memory a band left is handed back
(:mod:`edc_lab.predict.memory`). Memory is then set by ``tile``,
``batch_size`` and the scene's *width*, not its height: about two
tile-heights of rows are held. ``--in-memory`` reads and blends the whole
scene first (the earlier behaviour, kept for comparison); both write the same
files, bit for bit (tested at sizes that are not multiples of the tile, with
the SAR on another grid). Many scenes, and many processes under ``torchrun``:
:mod:`edc_lab.predict.scenes`; the sub-command: :mod:`edc_lab.predict.cli`.

Inputs are checked before any work (numeric options, headers, band counts,
the overlap of optical and SAR, the scene's size against memory) and as they are
read (the data type and value range of each band of rows against
``convention``; a failure then names the rows), and outputs never clobber
(:func:`check_prediction_outputs`). Every file is written to a temporary name
in its folder, then renamed (``os.replace``); SIGINT and SIGTERM remove the
temporary files before the command exits (130 / 143), and the next write of an
output removes those a SIGKILL left (:mod:`edc_lab.data.outputs`).

The files:

* ``tiling.py``: :func:`tile_starts`, :func:`blend_weights`, :class:`RollingRows`,
  :func:`blend_rows`, :func:`blend_scene`;
* ``memory.py``: :func:`release_free_memory` (libc's ``malloc_trim``);
* ``reader.py``: :class:`SceneReader`, :func:`read_inputs`, the value conventions;
* ``predictor.py``: :class:`Predictor`, :func:`predict_geotiff`, :func:`check_prediction_outputs`;
* ``scenes.py``: scene lists, a share per process under torchrun, :func:`predict_scenes`;
* ``cli.py``: ``edc-lab predict`` (:func:`add_arguments`, :func:`run`).

Names from before the tiles were called tiles still work: ``window_starts``
(:func:`tile_starts`), ``sliding_window_predict`` (:func:`blend_scene`) and the
keyword ``window=`` of :func:`blend_rows`, :func:`blend_scene`,
:class:`Predictor` and :func:`predict_geotiff`.

All of this is our choice (standard practice in remote-sensing inference); the
paper (arXiv 2603.20811) evaluates on fixed-size patches.

Example::

    edc-lab predict --checkpoint runs/student/last.pt --optical cloudy.tif --sar s1.tif --out classes.tif
    torchrun --nproc-per-node 2 -m edc_lab.cli predict --checkpoint runs/student/last.pt \\
        --scenes scenes.csv --out-dir maps/
"""

from edc_lab.predict.cli import add_arguments, run
from edc_lab.predict.memory import release_free_memory
from edc_lab.predict.predictor import Predictor, check_prediction_outputs, predict_geotiff
from edc_lab.predict.reader import CONVENTIONS, SceneReader, read_inputs
from edc_lab.predict.scenes import Scene, predict_scenes, read_scene_list, refused_scenes, shard
from edc_lab.predict.tiling import (
    RollingRows,
    TileOutputs,
    blend_rows,
    blend_scene,
    blend_weights,
    sliding_window_predict,
    tile_starts,
    window_starts,
)

__all__ = [
    # tiling and blending
    "tile_starts", "window_starts", "blend_weights", "RollingRows", "TileOutputs", "blend_rows", "blend_scene",
    "sliding_window_predict",
    # memory
    "release_free_memory",
    # reading a scene
    "CONVENTIONS", "SceneReader", "read_inputs",
    # the predictor
    "Predictor", "predict_geotiff", "check_prediction_outputs",
    # many scenes
    "Scene", "read_scene_list", "predict_scenes", "refused_scenes", "shard",
    # the sub-command
    "add_arguments", "run",
]
