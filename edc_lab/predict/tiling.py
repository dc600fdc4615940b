"""Tiling and blending: where the tiles of a scene start, the Hann taper that weights them, and the
blend of a model's tile predictions into whole rows (streamed, :func:`blend_rows`) or a whole scene
held in memory (:func:`blend_scene`).

A trained model sees patches of a few hundred pixels; a scene is far larger
(WHU-OPT-SAR: 5556×3704), or smaller than a patch. So the scene is cut into
**tiles** of ``tile`` pixels (the ``--window`` option of ``edc-lab predict``)
overlapping by ``overlap`` pixels; the last tile of a row / column is moved
inwards to end at the border, so every pixel is covered, and a scene smaller
than a tile is one tile of its own size (:func:`tile_starts`). Each tile's
class probabilities (and cloud-free estimate) are weighted by a 2-D Hann taper
sampled at pixel centres (:func:`blend_weights`) — near 1 in the centre, small
but never zero at the edge, where a convolutional network sees the least
context — and the weighted sum is divided by the summed weights. A model that
outputs a constant everywhere therefore yields that constant.

"Tile" is the word for these prediction patches throughout; the *attention
windows* inside a model are another thing (:mod:`edc_lab.models.windows`).
The names from before the word was chosen still work: ``window_starts``,
``sliding_window_predict`` and the keyword ``window=`` (:func:`window_alias`).

Our choice (standard practice in remote-sensing inference); the paper
(arXiv 2603.20811) evaluates on fixed-size patches.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterator

import torch

from edc_lab.acceleration import autocast_context
from edc_lab.predict.memory import release_free_memory


def window_alias(function: Callable) -> Callable:
    """Let ``function`` take ``window=``, the keyword's name before the rename, for ``tile=``.

    Notebooks and scripts written earlier call ``predict_geotiff(..., window=96)``;
    they keep working. Giving both names is a TypeError.
    """

    @functools.wraps(function)
    def call(*args, **kwargs):
        if "window" in kwargs:
            if "tile" in kwargs:
                raise TypeError(f"{function.__qualname__}: expected tile= or its former name window=, found both")
            kwargs["tile"] = kwargs.pop("window")
        return function(*args, **kwargs)

    return call


# --------------------------------------------------------------------------- tiles and their weights
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``min(tile, length)`` pixels covering ``range(length)``.

    Consecutive tiles overlap by at least ``overlap`` pixels; the last one is
    moved inwards so that it ends exactly at ``length``.

    >>> tile_starts(300, 256, 64)
    [0, 44]
    >>> tile_starts(600, 256, 64)
    [0, 192, 344]
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"--window / --overlap: expected a tile of window > 0 pixels and 0 <= overlap < window, "
                         f"found {tile} / {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


#: the former name of :func:`tile_starts`
window_starts = tile_starts


def blend_weights(height: int, width: int) -> torch.Tensor:
    """(height, width) float64 Hann taper ``sin^2(pi (i + 1/2) / n)`` per axis, strictly positive."""

    def taper(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return torch.outer(taper(height), taper(width))


# --------------------------------------------------------------------------- rows in a reused buffer
class RollingRows:
    """Rows ``[lo, hi)`` of a (C, rows, W) array, in one buffer reused as rows come and go.

    :meth:`append` adds rows below (data, or zeros), :meth:`forget` drops rows
    above; the live rows are moved to the top of the buffer when it runs out of
    room, and the buffer grows only when the live rows need more. So a scene
    streamed top to bottom reuses one allocation of about the largest span of
    rows in use, instead of a new one per band (which would hold the old one
    until freed: twice the memory).
    """

    def __init__(self, channels: int, width: int, dtype: torch.dtype) -> None:
        self.buffer = torch.zeros(channels, 0, width, dtype=dtype)
        self.lo = self.hi = 0
        self.start = 0  # buffer row of scene row `lo`

    def rows(self) -> torch.Tensor:
        """The live rows ``lo..hi-1`` (a view)."""
        return self.buffer[:, self.start:self.start + self.hi - self.lo]

    def forget(self, row: int) -> None:
        """Drop the rows above ``row``."""
        if row >= self.hi:
            self.lo = self.hi = row
            self.start = 0
        elif row > self.lo:
            self.start += row - self.lo
            self.lo = row

    def append(self, rows: torch.Tensor | int) -> None:
        """Add rows below ``hi``: a (C, n, W) tensor, or ``n`` rows of zeros."""
        count = rows if isinstance(rows, int) else rows.shape[1]
        live = self.hi - self.lo
        if self.start + live + count > self.buffer.shape[1]:
            if live + count > self.buffer.shape[1]:  # grow: a new buffer holding the live rows
                grown = self.buffer.new_empty(self.buffer.shape[0], live + count, self.buffer.shape[2])
                grown[:, :live] = self.rows()
                self.buffer = grown
            else:  # move the live rows to the top, in pieces that never overlap their destination
                step = max(1, self.start)
                for first in range(0, live, step):
                    last = min(live, first + step)
                    self.buffer[:, first:last] = self.buffer[:, self.start + first:self.start + last]
            self.start = 0
        target = self.buffer[:, self.start + live:self.start + live + count]
        if isinstance(rows, int):
            target.zero_()
        else:
            target.copy_(rows)
        self.hi += count


# --------------------------------------------------------------------------- blending
class TileOutputs(torch.nn.Module):
    """A model as the blending sees it: ``(class probabilities (B, K, h, w) float32, cloud-free estimate or
    None)`` for a batch of tiles. The softmax is part of this module, so a compiled model
    (:func:`edc_lab.acceleration.compile_model`) fuses it with the last layers; ``channels_last``
    hands the convolutions channels-last inputs (measured faster compiled: ``benchmarks/RESULTS.md``).
    """

    def __init__(self, model: torch.nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.channels_last:
            optical = optical.contiguous(memory_format=torch.channels_last)
            sar = sar.contiguous(memory_format=torch.channels_last)
        outputs = self.model(optical, sar)
        return torch.softmax(outputs["logits"].float(), dim=1), outputs.get("cloudfree")


@window_alias
@torch.no_grad()
def blend_rows(
    model: torch.nn.Module,
    height: int,
    width: int,
    read_rows: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    cloudfree: bool = True,
    full_batches: bool = False,
    read_ahead: bool = False,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Blend a model's predictions over overlapping tiles, yielding rows as soon as they are final.

    The tiles are visited row by row (``tile_starts`` of the rows, then of
    the columns), up to ``batch_size`` tiles of one row at a time. After the
    last batch of a row of tiles, the rows above the next row of tiles are
    touched by no later tile: they are divided by their summed weights and
    yielded as ``(first_row, probabilities (K, n, W) float32, cloudfree (4, n,
    W) float32 or None)``, top to bottom, then forgotten. So memory holds one
    tile-height of rows (inputs and float64 sums) whatever the scene's
    height, and :func:`blend_scene` (the whole scene in memory) is this
    generator collected: both give the same numbers, bit for bit.

    Args:
        model: the forward contract of :func:`edc_lab.models.build_model`, or a
            :class:`TileOutputs` (possibly compiled) that already returns probabilities.
        read_rows: ``(row0, row1) -> (optical (4, n, W), SAR (Cs, n, W))`` in
            [0, 1], rows ``row0..row1-1`` of the scene, each row asked for once.
        tile: side of a tile in pixels (former keyword: ``window``).
        cloudfree: blend the cloud-free estimate too (when the model returns one);
            False yields None for it and saves its buffers.
        full_batches: give the model ``batch_size`` tiles every time, padding a short last
            batch of a row with copies of its last tile (their outputs are dropped): a
            compiled model (:func:`edc_lab.acceleration.compile_model`) then sees one shape
            and compiles once. In eval mode each tile is computed on its own, so the padding
            does not change the real tiles' outputs.
        read_ahead: call ``read_rows`` for the next band of rows in a second thread while
            the model computes this one (:func:`read_ahead_rows`): reading and aligning a band
            (GDAL, which releases the GIL) overlaps the model. Same calls, same order, same
            numbers; one more band of inputs in memory.
    """
    tiles = model if isinstance(getattr(model, "_orig_mod", model), TileOutputs) else TileOutputs(model)
    tiles.eval()
    device = torch.device(device)
    tile_h, tile_w = min(tile, height), min(tile, width)
    weight = blend_weights(tile_h, tile_w)
    columns = tile_starts(width, tile, overlap)
    chunks = [[(row, col) for col in columns[first:first + batch_size]]  # one row of tiles at a time
              for row in tile_starts(height, tile, overlap) for first in range(0, len(columns), batch_size)]
    inputs: list[RollingRows] | None = None
    sums: list[RollingRows] | None = None  # weights, probabilities[, cloud-free], rows done .. done + n
    done = 0  # rows above `done` have been yielded
    autocast = autocast_context(device, amp_dtype)
    plan = planned_reads(chunks, tile_h)
    reads = read_ahead_rows(read_rows, plan) if read_ahead else (read_rows(*rows) for rows in plan)
    for index, chunk in enumerate(chunks):
        low, high = chunk[0][0], chunk[-1][0] + tile_h
        if inputs is not None:
            for buffer in inputs:
                buffer.forget(low)
        if inputs is None or high > inputs[0].hi:
            parts = next(reads)
            start = low if inputs is None else max(low, inputs[0].hi)
            if inputs is None:
                inputs = [RollingRows(part.shape[0], part.shape[2], part.dtype) for part in parts]
                for buffer in inputs:
                    buffer.forget(start)
            for buffer, part in zip(inputs, parts):
                buffer.append(part)
        optical, sar = (buffer.rows() for buffer in inputs)
        if optical.dim() != 3 or sar.dim() != 3 or optical.shape[-2:] != sar.shape[-2:]:
            raise ValueError(f"blend_rows: expected (4, H, W) optical and (Cs, H, W) SAR on one grid, "
                             f"found {tuple(optical.shape)} and {tuple(sar.shape)}")
        offset = inputs[0].lo
        optical_batch = torch.stack([optical[:, r - offset:r - offset + tile_h, c:c + tile_w] for r, c in chunk])
        sar_batch = torch.stack([sar[:, r - offset:r - offset + tile_h, c:c + tile_w] for r, c in chunk])
        if full_batches and len(chunk) < batch_size:  # one shape for a compiled model
            padding = batch_size - len(chunk)
            optical_batch = torch.cat([optical_batch, optical_batch[-1:].expand(padding, -1, -1, -1)])
            sar_batch = torch.cat([sar_batch, sar_batch[-1:].expand(padding, -1, -1, -1)])
        with autocast:
            probabilities, estimate = tiles(optical_batch.to(device), sar_batch.to(device))
        probabilities = probabilities[:len(chunk)].cpu()
        estimate = estimate[:len(chunk)] if cloudfree and estimate is not None else None
        if sums is None:
            channels = [1, probabilities.shape[1]] + ([estimate.shape[1]] if estimate is not None else [])
            sums = [RollingRows(c, width, torch.float64) for c in channels]
        if high > sums[0].hi:  # new rows start at zero, as in a whole-scene buffer
            for buffer in sums:
                buffer.append(high - buffer.hi)
        weight_sum, probability_sum, *cloudfree_sum = (buffer.rows() for buffer in sums)
        for i, (row, col) in enumerate(chunk):
            rows, cols = slice(row - done, row - done + tile_h), slice(col, col + tile_w)
            probability_sum[:, rows, cols] += probabilities[i].double() * weight
            weight_sum[0, rows, cols] += weight
            if cloudfree_sum:
                cloudfree_sum[0][:, rows, cols] += estimate[i].double().cpu() * weight
        final = chunks[index + 1][0][0] if index + 1 < len(chunks) else height
        if final > done:
            n = final - done
            finished = _divide(probability_sum[:, :n], weight_sum[:, :n])
            finished_cloudfree = _divide(cloudfree_sum[0][:, :n], weight_sum[:, :n]) if cloudfree_sum else None
            yield done, finished, finished_cloudfree
            for buffer in sums:
                buffer.forget(final)
            done = final
            release_free_memory()


def planned_reads(chunks: list[list[tuple[int, int]]], tile_h: int) -> list[tuple[int, int]]:
    """The ``(row0, row1)`` bands :func:`blend_rows` reads, in order, for its batches of tiles ``chunks``:
    a batch needs rows up to its tiles' bottom; rows read before are not read again."""
    plan: list[tuple[int, int]] = []
    for chunk in chunks:
        low, high = chunk[0][0], chunk[-1][0] + tile_h
        if not plan or high > plan[-1][1]:
            plan.append((low if not plan else max(low, plan[-1][1]), high))
    return plan


def read_ahead_rows(read_rows: Callable[[int, int], tuple], plan: list[tuple[int, int]]) -> Iterator[tuple]:
    """``read_rows(*band)`` for each band of ``plan`` in order, the next one read in a second thread
    while the caller works on the current one. An error of a read is raised where its result is
    taken; when the caller stops early, the read in flight is waited for, then nothing more is read."""
    from concurrent.futures import ThreadPoolExecutor

    if not plan:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edc-lab-read") as pool:
        pending = pool.submit(read_rows, *plan[0])
        for following in plan[1:] + [None]:
            result = pending.result()
            pending = pool.submit(read_rows, *following) if following is not None else None
            yield result


def _divide(total: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(total / weight).float()`` without the float64 quotient in memory (computed in float64, stored as float32)."""
    return torch.div(total, weight, out=torch.empty(total.shape, dtype=torch.float32))


@window_alias
def blend_scene(
    model: torch.nn.Module,
    optical: torch.Tensor,
    sar: torch.Tensor,
    *,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    cloudfree: bool = True,
    full_batches: bool = False,
) -> dict[str, torch.Tensor | None]:
    """Blend a model's predictions over overlapping tiles of one scene held in memory.

    Args:
        model: forward contract of :func:`edc_lab.models.build_model`.
        optical: (4, H, W) in [0, 1]; sar: (Cs, H, W) in [0, 1], same grid.
        tile: side of a tile in pixels (former keyword: ``window``).

    Returns ``probabilities`` (K, H, W) float32 (softmax, blended) and
    ``cloudfree`` (4, H, W) float32 or None for models without the head.
    (:func:`blend_rows` over the in-memory tensors, collected.)
    """
    if optical.dim() != 3 or sar.dim() != 3 or optical.shape[-2:] != sar.shape[-2:]:
        raise ValueError(f"blend_scene: expected (4, H, W) optical and (Cs, H, W) SAR on one grid, "
                         f"found {tuple(optical.shape)} and {tuple(sar.shape)}")
    height, width = optical.shape[-2:]
    bands = list(blend_rows(model, height, width, lambda lo, hi: (optical[:, lo:hi], sar[:, lo:hi]), tile=tile,
                            overlap=overlap, batch_size=batch_size, device=device, amp_dtype=amp_dtype,
                            cloudfree=cloudfree, full_batches=full_batches))
    cloudfree = [band[2] for band in bands]
    return {"probabilities": torch.cat([band[1] for band in bands], dim=1),
            "cloudfree": torch.cat(cloudfree, dim=1) if cloudfree[0] is not None else None}


#: the former name of :func:`blend_scene` (it takes ``window=`` as well as ``tile=``)
sliding_window_predict = blend_scene
