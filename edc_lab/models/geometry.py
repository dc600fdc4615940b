"""How "global" the global context is: windows, carrier tokens and DCHF cells per stage.

Carrier tokens and DCHF's cells are EDC's means of *global* context
(https://arxiv.org/abs/2603.20811). Whether they are global depends on sizes that
are easy to lose track of: at 64 x 64 an ``edc_tiny`` has a 4 x 4 stage-3 map, a
single 4 x 4 window and one carrier token, so its "global" attention is plain dense
attention over 16 pixels, and its stage-4 DCHF attends among 4 cells. A claim about
global context needs a geometry where the local windows see a small part of the scene
and the global step has many tokens; ``stage_geometry`` computes it for any config and
input size, ``format_geometry`` prints it.

Stage k (1..4) works at stride ``2^(k+1)``: its map is ``ceil(H / s) x ceil(W / s)``.
Stages 3 and 4 use windows of ``windows[k - 3]`` pixels (padded to a multiple), each
with ``carriers**2`` carrier tokens. Every stage's DCHF pools ``fusion_cells[k - 1]``
pixel cells into one token each (the map padded to a multiple).

Whose idea: none; this is edc_lab's bookkeeping (the counts follow ``windows.py`` and
``dchf.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from edc_lab.models.edc import EDCConfig
from edc_lab.models.grid import grid_size

__all__ = ["StageGeometry", "stage_geometry", "format_geometry", "STRIDES"]

#: the encoder's strides at stages 1-4
STRIDES: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class StageGeometry:
    """The sizes of one encoder stage for one input size.

    ``map_size``: (h, w) pixels of the stage's map; ``window``: attention window side
    (None at the conv stages 1-2); ``windows``: windows per image; ``window_share``: the
    fraction of the scene one window sees (1.0 = attention is already global);
    ``carrier_tokens``: carrier tokens per image (the global step's sequence length);
    ``fusion_cell``: DCHF cell side; ``fusion_tokens``: DCHF cell tokens per image.
    """

    stage: int
    stride: int
    map_size: tuple[int, int]
    window: int | None
    windows: int | None
    window_share: float | None
    carrier_tokens: int | None
    fusion_cell: int | None
    fusion_tokens: int | None


def _tiles(size: tuple[int, int], side: int) -> int:
    rows, cols = grid_size(size, side)
    return rows * cols


def stage_geometry(config: EDCConfig, size: int | Sequence[int]) -> list[StageGeometry]:
    """The four stages' geometry of a model with ``config`` on an input of ``size`` (side or (H, W)).

    DCHF columns are None for a model without DCHF (``fusion="sum"``).
    """
    height, width = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"stage_geometry: expected a positive input size, found {(height, width)}")
    rows = []
    for stage, stride in enumerate(STRIDES, start=1):
        map_size = grid_size((height, width), stride)
        window = windows = share = carriers = None
        if stage >= 3:
            window = config.windows[stage - 3]
            windows = _tiles(map_size, window)
            share = min(1.0, window * window / (map_size[0] * map_size[1]))
            carriers = windows * config.carriers**2
        cell = tokens = None
        if config.fusion == "dchf":
            cell = config.fusion_cells[stage - 1]
            tokens = _tiles(map_size, cell)
        rows.append(StageGeometry(stage, stride, map_size, window, windows, share, carriers, cell, tokens))
    return rows


def format_geometry(rows: list[StageGeometry]) -> str:
    """``stage_geometry``'s rows as an aligned text table."""

    def text(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, tuple):
            return f"{value[0]}x{value[1]}"
        return str(value)

    header = ("stage", "stride", "map", "window", "windows", "window share", "carrier tokens", "DCHF cell",
              "DCHF tokens")
    table = [header] + [
        tuple(text(v) for v in (r.stage, r.stride, r.map_size, r.window, r.windows, r.window_share,
                                r.carrier_tokens, r.fusion_cell, r.fusion_tokens))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table)
