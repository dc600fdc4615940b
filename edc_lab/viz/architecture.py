"""The architecture, read off the model itself: a table of shapes and a diagram.

Two ways to see what ``build_model(name)`` built, both taken from the model so
they cannot drift from the code:

* ``shape_table(model, optical, sar)`` runs one forward pass with forward hooks on
  the blocks a reader points at (stems, the downsampling and blocks of every
  stage of the optical, SAR and cross-modal streams, every fusion and its
  discrepancy map, the two heads) and records, per call, what went in, what
  came out, how many parameters the block holds and at which stride of the
  input its output lies. ``format_shape_table`` prints it; ``shape_frame`` makes
  a pandas DataFrame of it.
* ``plot_architecture(model)`` draws EDC's tri-stream encoder from
  ``model.config`` (widths, depths, heads, windows, carriers, attention, fusion,
  fusion cells, cloud removal): three columns of stage boxes, a DCHF box after
  every stage with its discrepancy map ``D_k``, then the heads.

Whose idea: the model is the paper's (EDC, https://arxiv.org/abs/2603.20811;
carrier tokens from FasterViT, arXiv 2306.06189); these pictures are edc_lab's
teaching material.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import nn

from edc_lab.models import MODEL_NAMES
from edc_lab.models.baselines import SINGLE_STREAM_INPUTS
from edc_lab.models.carrier_tokens import CarrierTokenStage
from edc_lab.models.dchf import DCHF, PlainSumFusion
from edc_lab.models.edc import EDC
from edc_lab.models.encoder import ConvStage, ConvStem, Downsample
from edc_lab.models.heads import CloudRemovalHead, SegmentationHead

__all__ = ["TABLE_BLOCKS", "shape_table", "format_shape_table", "shape_frame", "plot_architecture", "DIAGRAM_MODELS"]

#: the block types ``shape_table`` hooks (every other module runs unobserved). DCHF computes its
#: discrepancy map with ``DiscrepancyMap.with_reliability``, a method, not a forward call, so
#: the map's row is read from the DCHF's output instead of a hook.
TABLE_BLOCKS = (
    ConvStem, Downsample, ConvStage, CarrierTokenStage, DCHF, PlainSumFusion, SegmentationHead, CloudRemovalHead,
)
#: the models ``plot_architecture`` draws: every tri-stream EDC (not the single-stream baselines, not CloudSeg)
DIAGRAM_MODELS = tuple(name for name in MODEL_NAMES if name not in SINGLE_STREAM_INPUTS and name != "cloudseg_ref")


def _model_name(model: nn.Module) -> str:
    return getattr(model, "name", None) or getattr(model, "build_args", {}).get("name") or type(model).__name__


# ----------------------------------------------------------------------------------------------- shape table


def _shapes(value: Any):
    """Tensors -> shape tuples, inside tuples, lists and dicts; None stays None in tuples and lists (the
    cross-modal input of the first fusion); other values (sizes, numbers, a dict's None) are dropped."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if value is None:
        return None
    if isinstance(value, dict):
        kept = {key: _shapes(item) for key, item in value.items()}  # a None entry of a dict says nothing
        return {key: item for key, item in kept.items() if item not in ([], None, {})} or []
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        kept = [_shapes(item) for item in value]
        return [item for item in kept if item != []]
    return []  # numbers, sizes, strings: not a shape


def _first_map(value: Any) -> torch.Tensor | None:
    """The first 4-D tensor in ``value`` (depth first), whose grid gives the stride."""
    if isinstance(value, torch.Tensor):
        return value if value.dim() == 4 else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _first_map(item)
        if found is not None:
            return found
    return None


def _stride(image_size: tuple[int, int], map_size: tuple[int, int]) -> int | None:
    """The smallest power of two ``s`` with ``ceil(H / s), ceil(W / s) == map_size``, or None.

    A stride-``s`` map of an ``H x W`` image has ``ceil(H / s) x ceil(W / s)`` pixels
    (edc_lab's grid), so 70 x 54 at stride 32 is 3 x 2. Maps of one pixel fit several
    strides; the smallest is reported.
    """
    height, width = image_size
    stride = 1
    while stride <= 2 * max(height, width):
        if (math.ceil(height / stride), math.ceil(width / stride)) == tuple(map_size):
            return stride
        stride *= 2
    return None


def _block_label(name: str, module: nn.Module) -> str:
    """A reader's name for a recorded block: ``"optical stem"``, ``"sar stage 3"``, ``"DCHF 2"``."""
    parts = name.split(".")

    def stream(part: str) -> str:
        return "" if part in ("stream", "stem") else part.replace("_stream", "").replace("_stem", "") + " "

    if isinstance(module, ConvStem):
        return f"{stream(parts[-1])}stem"
    if isinstance(module, Downsample):
        return f"{stream(parts[-3])}downsample to stage {int(parts[-1]) + 1}"
    if isinstance(module, (ConvStage, CarrierTokenStage)):
        return f"{stream(parts[-3])}stage {int(parts[-1]) + 1}"
    if isinstance(module, DCHF):
        return f"DCHF {int(parts[-1]) + 1}"
    if isinstance(module, PlainSumFusion):
        return f"plain sum {int(parts[-1]) + 1}"
    return "segmentation head" if isinstance(module, SegmentationHead) else "cloud-removal head"


def shape_table(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor) -> list[dict]:
    """Run ``model(optical, sar)`` once and describe every block of ``TABLE_BLOCKS`` it called,
    and each DCHF's discrepancy map (a row of its own, right after its DCHF).

    Args:
        model: a model of ``edc_lab.models.build_model`` (EDC and the baselines built from its blocks).
        optical: ``(B, C_o, H, W)``; sar: ``(B, C_s, H, W)``.

    Returns one dict per call, in the order the calls started (a fusion before its
    discrepancy map): ``name`` (the module's path in the model), ``block`` (a reader's
    name), ``type`` (class name), ``inputs`` and ``outputs`` (tensor shapes as tuples,
    nested like the values: lists for tuples and lists, dicts for dicts, None kept),
    ``params`` (the block's parameters, recursively), ``within`` (the name of the
    recorded block that contains it, ``""`` at the top: the top-level rows partition
    the model's parameters) and ``stride`` (input ``H x W`` over the grid of the first
    4-D output, see ``_stride``; 1 for the heads' full-resolution outputs).

    The pass runs in eval mode (BatchNorm statistics are not touched) under
    ``torch.no_grad``; every module's ``training`` flag is restored and every hook
    removed afterwards, also when the forward raises.
    """
    recorded = [(name, module) for name, module in model.named_modules() if isinstance(module, TABLE_BLOCKS)]
    if not recorded:
        raise ValueError(
            f"shape_table: {_model_name(model)!r} has none of edc_lab's blocks "
            f"({', '.join(block.__name__ for block in TABLE_BLOCKS)})"
        )
    image_size = tuple(optical.shape[-2:]) if isinstance(optical, torch.Tensor) else tuple(sar.shape[-2:])
    rows: list[dict] = []
    running: list[int] = []  # rows of the blocks whose forward has started and not yet returned

    def before(name, module, args, kwargs):
        rows.append({
            "name": name, "block": _block_label(name, module), "type": type(module).__name__,
            "inputs": _shapes(list(args) + list(kwargs.values())), "outputs": None,
            "params": sum(p.numel() for p in module.parameters()),
            "within": rows[running[-1]]["name"] if running else "", "stride": None,
        })
        running.append(len(rows) - 1)

    def after(name, module, args, kwargs, output):
        row = rows[running.pop()]
        first_map = _first_map(output)
        row["outputs"] = _shapes(output)
        row["stride"] = _stride(image_size, tuple(first_map.shape[-2:])) if first_map is not None else None
        if isinstance(module, DCHF):  # its discrepancy map: (O_k, S_k) in, (D_k, R_k) out, from the info dict
            info = output[3]
            rows.append({
                **row, "name": f"{name}.discrepancy", "block": f"D_{int(name.split('.')[-1]) + 1} (discrepancy)",
                "type": type(module.discrepancy).__name__, "inputs": row["inputs"][:2],
                "outputs": _shapes([info["discrepancy"], info["reliability"]]),
                "params": sum(p.numel() for p in module.discrepancy.parameters()), "within": name,
                "stride": _stride(image_size, tuple(info["discrepancy"].shape[-2:])),
            })

    training = {module: module.training for module in model.modules()}
    handles = []
    try:
        for name, module in recorded:
            handles.append(module.register_forward_pre_hook(
                lambda module, args, kwargs, name=name: before(name, module, args, kwargs), with_kwargs=True))
            handles.append(module.register_forward_hook(
                lambda module, args, kwargs, output, name=name: after(name, module, args, kwargs, output),
                with_kwargs=True))
        model.eval()
        with torch.no_grad():
            model(optical, sar)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.training = mode
    return rows


def _format_shapes(shapes, nested: bool = False) -> str:
    """``(1, 24, 16, 16)`` -> ``1x24x16x16``; runs of equal shapes -> ``3 * 1x24x16x16``; dicts -> ``{key=...}``;
    lists inside the outer one in brackets."""
    if shapes is None:
        return "None"
    if isinstance(shapes, tuple):
        return "x".join(str(size) for size in shapes) or "scalar"
    if isinstance(shapes, dict):
        return "{" + ", ".join(f"{key}={_format_shapes(value, True)}" for key, value in shapes.items()) + "}"
    parts: list[list] = []  # [text, count]
    for text in (_format_shapes(item, True) for item in shapes):
        if parts and parts[-1][0] == text:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    text = ", ".join(text if count == 1 else f"{count} * {text}" for text, count in parts)
    return f"[{text}]" if nested else text


def format_shape_table(rows: list[dict], max_width: int = 48) -> str:
    """``shape_table``'s rows as a plain aligned text table; shape columns cut at ``max_width`` characters."""
    columns = ("block", "type", "inputs", "outputs", "stride", "params")

    def cell(row, column):
        if column in ("inputs", "outputs"):
            text = _format_shapes(row[column])
            return text if len(text) <= max_width else text[: max_width - 1] + "…"
        if column == "params":
            return f"{row['params']:,}" + (" (in above)" if row["within"] else "")
        return "-" if row[column] is None else ("  " if column == "block" and row["within"] else "") + str(row[column])

    table = [list(columns)] + [[cell(row, column) for column in columns] for row in rows]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    lines = ["  ".join(text.rjust(width) if column in ("stride", "params") else text.ljust(width)
                       for text, width, column in zip(line, widths, columns)).rstrip() for line in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def shape_frame(rows: list[dict]):
    """``shape_table``'s rows as a pandas DataFrame (shapes as text, one row per call)."""
    import pandas as pd

    return pd.DataFrame([
        {**row, "inputs": _format_shapes(row["inputs"]), "outputs": _format_shapes(row["outputs"])} for row in rows
    ])


# ------------------------------------------------------------------------------------------------- diagram

#: colours of the three streams, the fusion and the heads
COLORS = {"optical": "#cfe2f3", "sar": "#fce5cd", "cross": "#d9ead3", "fusion": "#e4d7f5", "head": "#eeeeee"}
COLUMNS = {"optical": 1.6, "sar": 4.6, "cross": 7.6}
LETTERS = {"optical": "O", "sar": "S", "cross": "X"}
BOX_WIDTH, GAP, FONT = 2.8, 0.5, 8.5
FUSION_X, FUSION_WIDTH = 4.6, 8.8


def _box(ax, x, top, height, text, color, width=BOX_WIDTH):
    """A rounded box whose top edge is at ``top``; returns its bottom edge."""
    ax.add_patch(FancyBboxPatch((x - width / 2, top - height), width, height, boxstyle="round,pad=0.02",
                                facecolor=color, edgecolor="0.3", linewidth=0.8))
    ax.text(x, top - height / 2, text, ha="center", va="center", fontsize=FONT)
    return top - height


def _arrow(ax, x, start, end, label=""):
    ax.annotate("", xy=(x, end), xytext=(x, start), arrowprops={"arrowstyle": "-|>", "color": "0.3", "lw": 0.9})
    if label:
        ax.text(x + 0.08, (start + end) / 2, label, ha="left", va="center", fontsize=FONT, color="0.25")


def _stage_text(config, stage: int) -> str:
    """Stage ``stage`` (0-based) of a stream: width, stride, block type and depth."""
    lines = [f"stage {stage + 1} · d{stage + 1} = {config.widths[stage]} · stride {2 ** (stage + 2)}"]
    if stage < 2:
        lines.append("residual conv blocks")
    elif config.attention == "dense":
        lines.append(f"dense attention, {config.heads[stage - 2]} heads")
    else:
        lines.append(f"HAT carrier attention, {config.heads[stage - 2]} heads")
        carriers = config.carriers**2
        lines.append(f"window {config.windows[stage - 2]}, {carriers} carrier{'s' if carriers > 1 else ''} per window")
    lines.append(f"depth {config.depths[stage]}")
    return "\n".join(lines)


def _fusion_text(model: EDC, stage: int) -> tuple[str, str]:
    """The fusion box's text and the note beside it (the discrepancy map it outputs)."""
    config = model.config
    if config.fusion == "sum":
        update = "X ← X + O + S" if stage else "X = O + S"
        return f"plain sum {stage + 1}: {update}\n(no discrepancy map; O and S pass unchanged)", ""
    gated = ", ".join(LETTERS[stream] for stream in model.encoder.fusions[stage].redistribute) or "no stream"
    heads = f"{config.fusion_heads} head{'s' if config.fusion_heads > 1 else ''}"
    text = (f"DCHF {stage + 1}: local mix M of [R·O, S{', X' if stage else ''}] + global context G from "
            f"cells of {config.fusion_cells[stage]} px ({heads})\n"
            f"{'X ← X + M + G' if stage else 'X = M + G'}; gates back into {gated}")
    stride = 2 ** (stage + 2)
    note = f"→ D{stage + 1}, R{stage + 1} = 1 − D{stage + 1}\n   1 x H/{stride} x W/{stride}"
    return text, note + ("\n   (monotone)" if config.discrepancy == "monotone" else "")


def plot_architecture(model: nn.Module, ax: plt.Axes | None = None) -> Figure:
    """Draw the tri-stream encoder, its fusions and the heads of an EDC model from ``model.config``.

    Columns: optical, SAR and cross-modal streams. Rows: the inputs and stems; per
    stage k a box per stream (width ``d_k``, stride ``2^(k+1)``, block type, depth)
    with arrows ``O_k, S_k, X_k`` into the fusion after it (DCHF, with its
    discrepancy map ``D_k`` noted on the right, or the plain sum of ``edc_no_dchf``)
    and out of it (downsampled by 2) into stage k+1; then the FPN segmentation head
    (reads ``X_1..X_4``) and the cloud-removal head (reads ``O_1..O_4``; absent for
    ``edc_no_cr``). Works for the models of ``DIAGRAM_MODELS``; others raise ``ValueError``.
    Draws on ``ax`` when given, else on a new 10 x 11.5 inch figure at 100 dpi; returns the figure.
    """
    name = _model_name(model)
    if not isinstance(model, EDC):
        raise ValueError(
            f"plot_architecture: {name!r} is not a tri-stream EDC model; supported: {', '.join(DIAGRAM_MODELS)}"
        )
    config = model.config
    if ax is None:
        figure, ax = plt.subplots(figsize=(10, 11.5), dpi=100)
        figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.95)
    ax.axis("off")
    parameters = sum(p.numel() for p in model.parameters())
    ax.set_title(f"{name}: tri-stream encoder, {parameters:,} parameters ({parameters / 1e6:.2f} M)", fontsize=12)

    # 1. inputs and stems (the cross-modal stream has no raw input)
    top = 0.0
    _box(ax, COLUMNS["optical"], top, 0.5, f"optical O: {model.in_optical} bands, H x W", "white")
    bottom = _box(ax, COLUMNS["sar"], top, 0.5, f"SAR S: {model.in_sar} channels, H x W", "white")
    ax.text(COLUMNS["cross"], top - 0.25, "cross-modal stream X:\nno raw input", ha="center", va="center",
            fontsize=FONT, color="0.4")
    for stream in ("optical", "sar"):
        _arrow(ax, COLUMNS[stream], bottom, bottom - GAP)
        stem_bottom = _box(ax, COLUMNS[stream], bottom - GAP, 0.5,
                           f"conv stem → d1 = {config.widths[0]}, stride 4", COLORS[stream])
    bottom = stem_bottom

    # 2. per stage: the three streams' boxes, then the fusion
    for stage in range(4):
        streams = ("optical", "sar", "cross") if stage else ("optical", "sar")
        stage_top, stage_height = bottom - GAP, 0.95 if stage < 2 else 1.2
        fusion_top = stage_top - stage_height - GAP
        for stream in streams:
            _arrow(ax, COLUMNS[stream], bottom, stage_top, "↓2" if stage else "")
            _box(ax, COLUMNS[stream], stage_top, stage_height, _stage_text(config, stage), COLORS[stream])
            _arrow(ax, COLUMNS[stream], stage_top - stage_height, fusion_top, f"{LETTERS[stream]}{stage + 1}")
        if stage == 0:
            ax.text(COLUMNS["cross"], stage_top - stage_height / 2, "X1 is born\nin the first fusion",
                    ha="center", va="center", fontsize=FONT, color="0.4")
        text, note = _fusion_text(model, stage)
        bottom = _box(ax, FUSION_X, fusion_top, 0.6, text, COLORS["fusion"], width=FUSION_WIDTH)
        if note:
            ax.text(FUSION_X + FUSION_WIDTH / 2 + 0.1, fusion_top - 0.3, note, ha="left", va="center",
                    fontsize=FONT, color="#6a3d9a")

    # 3. heads: the segmentation head reads X_1..X_4, the cloud-removal head O_1..O_4 (S_4 feeds nothing)
    heads_top = bottom - 1.5 * GAP
    _arrow(ax, COLUMNS["cross"], bottom, heads_top, "X1..X4")
    _box(ax, COLUMNS["cross"], heads_top, 0.7,
         f"FPN segmentation head\nwidth {config.fpn_dim} → logits {model.num_classes} x H x W", COLORS["head"])
    if model.has_cloud_removal:
        _arrow(ax, COLUMNS["optical"], bottom, heads_top, "O1..O4")
        _box(ax, COLUMNS["optical"], heads_top, 0.7,
             f"cloud-removal head\nwidth {config.cr_dim} → cloud-free {model.in_optical} x H x W", COLORS["head"])
    ax.set_xlim(0.0, 11.2)
    ax.set_ylim(heads_top - 0.8, 0.15)
    return ax.figure
