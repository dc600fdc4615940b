"""The interactive figures of notebooks 04 (DCHF gating) and 05 (distillation), as plain functions.

The idea in plain words
-----------------------
A widget is a control (a slider, a dropdown) plus a function that draws a figure for the
control's value. The function is the lesson, so it lives here, where it can be tested
without a browser; the notebook only wires it to ipywidgets with
``ipywidgets.interactive_output``, which calls it once when the widget is first shown
(so the figure is there before any control moves) and again after every change.

* **04 · DCHF gating** (``dchf_gating_view``): cloud cover → what one DCHF does with the
  clouds. The discrepancy ``D`` gives every pixel a reliability ``R = 1 − D``; each carrier
  cell's token is the reliability-weighted mean of the local mix ``M``, so pixel p weighs
  ``w_p = R_p / Σ_{q in cell} R_q`` in its cell (``pooling_weights``: the weights of a cell
  sum to 1; a pixel with ``R = 0`` weighs 0). The cells then attend to each other with the
  key bias ``log(mean R of the cell + ε)``, so a cell with no reliable pixel receives
  almost no attention; the result is broadcast back as the global context ``G``. Finally
  the redistribution gates decide how much of ``X − O`` (optical gate, at most ``D``) and
  ``X − S`` (SAR gate) is added back onto each stream.
* **05 · distillation** (``distillation_view``): distillation region → where the feature
  distillation loss acts. The per-cell squared feature error between student (cloudy
  input) and teacher (cloud-free input), the region weight ``w`` of ``kd_region``
  (``all``, ``clear``, ``cloudy``; ``edc_lab.train.losses.region_weight``) and the product
  ``w · error`` that the loss averages.
* **05 · cloud removal** (``plot_cloud_removal``): the cloud-removal head's estimate of
  the cloud-free image beside the truth, both with the stretch of ``edc_lab.viz.plots.rgb``
  taken from the truth, the cloudy input with the series' stretch (its clear pixels), and the
  error maps on one scale.

Every figure uses the shared conventions of the series: dpi ``MIN_DPI``, at most three
panels a row, a colourbar with units wherever the lesson is a value. Whose idea: the
figures are edc_lab's teaching material; DCHF and the distillation are our reading of
EDC (arXiv 2603.20811) and CloudSeg (ISPRS 2024), see ``edc_lab.models.dchf`` and
``edc_lab.train.losses``.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from einops import reduce, repeat
from matplotlib.figure import Figure
from torch import nn

from edc_lab.models.dchf import RELIABILITY_EPS
from edc_lab.models.windows import crop_to, pad_to_multiple
from edc_lab.train.losses import KD_REGIONS, feature_distillation_loss, region_weight
from edc_lab.viz.model_plots import trace_fusions
from edc_lab.viz.plots import rgb

__all__ = [
    "MIN_DPI",
    "RELIABILITY_SOURCES",
    "pooling_weights",
    "attention_received",
    "dchf_stage_maps",
    "plot_dchf_gating",
    "plot_dchf_models",
    "dchf_ranges",
    "KEY_BIAS_RANGE",
    "dchf_gating_view",
    "dchf_gating_widget",
    "scene_sample",
    "distillation_maps",
    "plot_distillation",
    "distillation_view",
    "distillation_widget",
    "cloud_removal_errors",
    "plot_cloud_removal",
]

#: the dpi of every figure drawn here (readable at 100 % zoom)
MIN_DPI = 100

#: where the reliability of ``dchf_stage_maps`` comes from
RELIABILITY_SOURCES = ("model", "cloud mask")


# --------------------------------------------------------------------------- checks


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1], found {value}")
    return value


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, found {value!r}")


def _first_map(values) -> np.ndarray:
    """``(B, 1, h, w)`` / ``(1, h, w)`` / ``(h, w)`` tensor or array -> numpy ``(h, w)`` of the first image."""
    values = torch.as_tensor(values).detach().float().cpu()
    return values.reshape(-1, *values.shape[-2:])[0].numpy()


def _colorbar(fig: Figure, image, ax, label: str) -> None:
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


# --------------------------------------------------------------------------- 04: DCHF


def pooling_weights(reliability: torch.Tensor, cell: int, eps: float = RELIABILITY_EPS) -> torch.Tensor:
    """Each pixel's weight in its carrier cell's token: ``w_p = R_p / max(Σ_{q in cell} R_q, eps)``.

    Args:
        reliability: R, ``(B, 1, H, W)`` in [0, 1].
        cell: the cell size in pixels (``DCHF.cell``); H, W need not be multiples (the padding
            has R = 0, as in ``reliability_weighted_pool``).
        eps: the smallest normaliser (``RELIABILITY_EPS``).

    Returns ``(B, 1, H, W)``: the weights of a cell sum to 1 when any of its pixels is
    reliable, and are all 0 for a cell with R = 0 everywhere; a pixel with R = 0 weighs 0.
    ``Σ_{p in cell} w_p M_p`` is exactly the token of ``reliability_weighted_pool``.
    """
    if not isinstance(cell, int) or cell < 1:
        raise ValueError(f"cell: expected a positive integer, found {cell!r}")
    if reliability.dim() != 4 or reliability.shape[1] != 1:
        raise ValueError(f"reliability: expected shape (B, 1, H, W), found {tuple(reliability.shape)}")
    if reliability.min() < 0 or reliability.max() > 1:
        raise ValueError(f"reliability: expected values in [0, 1], found [{reliability.min():.3g}, {reliability.max():.3g}]")
    padded, size = pad_to_multiple(reliability, cell)
    cell_sum = reduce(padded, "b 1 (hc ch) (wc cw) -> b 1 hc wc", "sum", ch=cell, cw=cell)
    per_pixel_sum = repeat(cell_sum, "b 1 hc wc -> b 1 (hc ch) (wc cw)", ch=cell, cw=cell)
    return crop_to(padded / per_pixel_sum.clamp_min(eps), size)


def attention_received(attention: torch.Tensor) -> torch.Tensor:
    """The share of attention each cell token receives: the attention ``(B, heads, Nq, Nk)`` of the
    cell tokens averaged over heads and queries -> ``(B, Nk)``, summing to 1 over the keys."""
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention: expected shape (B, heads, N, N), found {tuple(attention.shape)}")
    return attention.mean(dim=(1, 2))


def _reliability_source(reliability: str) -> str:
    """``"learnt"`` is the earlier name of ``"model"`` (kept so existing notebooks still run)."""
    reliability = "model" if reliability == "learnt" else reliability
    _check_choice("reliability", reliability, RELIABILITY_SOURCES)
    return reliability


def dchf_stage_maps(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor, stage: int = 1,
                    reliability: str = "model", cloud_mask: torch.Tensor | None = None) -> dict:
    """Run an EDC model and take apart the DCHF of one ``stage`` (1-4).

    Args:
        model: an EDC-style model with DCHF fusions (``model.encoder.fusions``), in eval mode.
        optical, sar: ``(1, C, H, W)`` inputs.
        reliability: ``"model"`` (the ``R`` the model itself uses: ``1 − D`` of its learnt ``D``,
            or what its ``EDCConfig.reliability`` arm gives, e.g. the pooled mask of an
            ``"oracle"`` model) or ``"cloud mask"`` (what a perfect ``D`` would give: ``R = 0`` on
            the stage's pixels that are mostly cloud, 1 elsewhere). ``"learnt"`` is the earlier
            name of ``"model"``.
        cloud_mask: ``(H, W)``, needed for ``"cloud mask"`` and by a model that reads the mask.

    Returns the DCHF's ``info`` dict (``discrepancy``, ``reliability``, ``gates``,
    ``global_context``, ``local_mix``, ``cell_reliability``) plus ``key_bias``
    ``(1, 1, hc, wc)`` (the additive attention bias ``log(mean R of the cell + ε)`` of each cell
    as a key), ``pooling_weights`` ``(1, 1, h, w)``, ``attention_received`` ``(1, 1, hc, wc)``
    (share of the cell-token attention each cell receives) and ``cell`` (the cell size in stage
    pixels).
    """
    fusions = getattr(getattr(model, "encoder", None), "fusions", None)
    if fusions is None:
        raise ValueError(f"model: expected an EDC-style model with encoder.fusions, found {type(model).__name__}")
    if not isinstance(stage, int) or not 1 <= stage <= len(fusions):
        raise ValueError(f"stage: expected an integer in 1..{len(fusions)}, found {stage!r}")
    reliability = _reliability_source(reliability)
    fusion = fusions[stage - 1]
    if not hasattr(fusion, "global_context"):
        raise ValueError(f"model: stage {stage} fuses with {type(fusion).__name__}, which has no DCHF maps "
                         f"(e.g. edc_no_dchf); pick a model with DCHF")
    reads_mask = bool(getattr(model, "needs_cloud_mask", False))
    if cloud_mask is None and (reliability == "cloud mask" or reads_mask):
        raise ValueError(f"cloud_mask: reliability={reliability!r} with this model needs the (H, W) cloud mask")
    mask = None if cloud_mask is None else torch.as_tensor(cloud_mask).float().reshape(1, *cloud_mask.shape[-2:])
    with torch.no_grad():
        _, trace = trace_fusions(model, optical, sar, cloud_mask=mask if reads_mask else None)
        inputs = trace[stage - 1]
        override = None
        if reliability == "cloud mask":
            cloud_fraction = F.adaptive_avg_pool2d(mask[:, None], tuple(inputs["optical"].shape[-2:]))
            override = (cloud_fraction <= 0.5).float()
        elif getattr(getattr(model, "config", None), "reliability", "learnt") != "learnt":
            override = inputs["info"]["reliability"]  # the arm's own R (constant or oracle)
        keep = fusion.keep_attention
        fusion.keep_attention = True
        try:
            _, _, _, info = fusion(inputs["optical"], inputs["sar"], inputs["cross"], reliability=override)
            attention = fusion.last_attention
        finally:
            fusion.keep_attention = keep
    cells = tuple(info["cell_reliability"].shape[-2:])
    info = dict(info)
    info["key_bias"] = torch.log(info["cell_reliability"] + fusion.eps)
    info["pooling_weights"] = pooling_weights(info["reliability"], fusion.cell, fusion.eps)
    info["attention_received"] = attention_received(attention).reshape(-1, 1, *cells)
    info["cell"] = fusion.cell
    return info


#: the key-bias colour range: an all-cloud cell has log(1e-6) = −13.8; −5 (mean R below 0.7 %)
#: already means "never attended to", so the range stops there and keeps −0.1 vs −1 visible
KEY_BIAS_RANGE = (-5.0, 0.0)

#: below this span a map in [0, 1] is drawn on its own range, not on 0–1 (where it would look flat)
MIN_VISIBLE_SPAN = 0.25


def _unit_range(*maps) -> tuple[tuple[float, float], bool]:
    """0–1, or the maps' own range (rounded out to 0.01) when they span less than ``MIN_VISIBLE_SPAN``;
    the flag says whether it was stretched."""
    low = min(float(torch.as_tensor(m).min()) for m in maps)
    high = max(float(torch.as_tensor(m).max()) for m in maps)
    if high - low >= MIN_VISIBLE_SPAN:
        return (0.0, 1.0), False
    low, high = np.floor(low * 100) / 100, np.ceil(high * 100) / 100
    return (low, max(high, low + 0.01)), True


def _dchf_panels(maps: Mapping) -> dict:
    """The value maps of one DCHF as plotted: name -> values."""
    cells = maps["attention_received"].shape[-2] * maps["attention_received"].shape[-1]
    return {
        "D": maps["discrepancy"],
        "R": maps["reliability"],
        "w": maps["pooling_weights"] * maps["cell"] ** 2,
        "key bias": maps["key_bias"],
        "attention": maps["attention_received"] * cells,
        "G": maps["global_context"].abs().mean(1, keepdim=True),
        "optical gate": maps["gates"]["optical"].mean(1, keepdim=True),
    }


def dchf_ranges(*maps: Mapping) -> dict:
    """Shared colour ranges for the panels of one or more ``dchf_stage_maps`` results.

    Returns name -> ``(low, high, stretched)``: ``D`` and ``R`` share one range (0–1 unless every
    map spans less than ``MIN_VISIBLE_SPAN``, then their own, ``stretched=True``), the optical gate
    likewise; the pooling weight times cell² and the attention received times the number of cells
    (both 1 = an equal share) run from 0 to at least 2; the key bias spans ``KEY_BIAS_RANGE``;
    ``|G|`` from its smallest to its largest value over all maps (G is often nearly constant, so
    a range from 0 would show nothing; the colourbar gives the range). Pass the maps of every figure that should be
    compared so that one colour means one value in all of them.
    """
    panels = [_dchf_panels(m) for m in maps]
    unit, stretched = _unit_range(*(p["D"] for p in panels), *(1 - p["R"] for p in panels))
    gate, gate_stretched = _unit_range(*(p["optical gate"] for p in panels))
    top = lambda name: max(float(p[name].max()) for p in panels)
    context_low = min(float(p["G"].min()) for p in panels)
    return {
        "D": (*unit, stretched),
        "R": (1 - unit[1], 1 - unit[0], stretched),
        "w": (0.0, max(2.0, top("w")), False),
        "key bias": (*KEY_BIAS_RANGE, False),
        "attention": (0.0, max(2.0, top("attention")), False),
        "G": (context_low, max(top("G"), context_low + 1e-6), True),
        "optical gate": (*gate, gate_stretched),
    }


#: panel name -> (title, colour map, colourbar label)
_DCHF_STYLE = {
    "D": ("discrepancy D", "magma", "D (1 = disagree)"),
    "R": ("reliability R = 1 − D", "cividis", "R (0 = unreliable)"),
    "w": ("pooling weight w × cell²", "viridis", "w × cell² (1 = equal share)"),
    "key bias": ("key bias log(mean R + ε)", "viridis", "added to attention logits"),
    "attention": ("attention received × cells", "viridis", "× cells (1 = uniform)"),
    "G": ("|G| (global context)", "magma", "mean |G| (feature units)"),
    "optical gate": ("optical gate", "viridis", "share of X − O added"),
}


def _draw_panel(fig: Figure, ax, name: str, values, size, value_range, title: str | None = None) -> None:
    low, high, stretched = value_range
    default_title, cmap, label = _DCHF_STYLE[name]
    # each map at its own resolution, stretched over the image's extent: blocks, not a smoothed
    # picture (the map has no finer detail, and flat blocks keep the notebooks small)
    height, width = size
    image = ax.imshow(_first_map(values), cmap=cmap, vmin=low, vmax=high, interpolation="nearest",
                      extent=(0, width, height, 0))
    ax.set_title(title or default_title, fontsize=9)
    if stretched and name == "G":
        label += "; own range"
    elif stretched:
        label += f"; {low:.2f}–{high:.2f}, not 0–1"
    elif name == "key bias":
        label += f" (≥ {low:g})"
    _colorbar(fig, image, ax, label)


def plot_dchf_gating(maps: Mapping, optical, cloud_mask, title: str = "", ranges: Mapping | None = None) -> Figure:
    """Three rows of three: what one DCHF does with the clouds (``maps`` from ``dchf_stage_maps``).

    Row 1: the cloudy optical input (``rgb``, the series' clear-pixel stretch), the true cloud
    mask, ``D``. Row 2: the reliability ``R = 1 − D``, each pixel's pooling weight in its cell
    (times cell², so 1 is an equal share), the key bias of each cell. Row 3: the share of
    attention each cell token receives (times the number of cells, 1 = uniform), ``|G|`` (the
    global context, mean over channels) and the optical gate ``σ(Conv(X − O)) ⊙ D`` (mean over
    channels). Stage maps are shown on the image grid, cell-wise quantities as blocks.
    ``ranges``: from ``dchf_ranges`` (default: this figure's own), to compare figures colour for
    colour. Returns the figure (dpi ``MIN_DPI``).
    """
    mask = _first_map(cloud_mask)
    size = mask.shape
    ranges = dchf_ranges(maps) if ranges is None else ranges
    panels = _dchf_panels(maps)
    fig, axes = plt.subplots(3, 3, figsize=(8.6, 8.0), dpi=MIN_DPI, layout="constrained")
    axes[0, 0].imshow(rgb(optical, cloud_mask=mask))
    axes[0, 0].set_title("cloudy optical input", fontsize=9)
    axes[0, 1].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 1].set_title(f"true cloud mask ({mask.mean():.0%} cloud)", fontsize=9)
    order = ["D", "R", "w", "key bias", "attention", "G", "optical gate"]
    for ax, name in zip(list(axes.ravel())[2:], order):
        _draw_panel(fig, ax, name, panels[name], size, ranges[name])
    for ax in axes.ravel():
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_dchf_models(maps: Mapping[str, Mapping], cloud_mask, title: str = "") -> Figure:
    """One row per model (``maps``: name -> ``dchf_stage_maps`` of one stage and scene): ``R``, the
    key bias of each cell and ``|G|``, each column on one colour range shared by all rows
    (``dchf_ranges``), with the true cloud mask's outline on every panel. Returns the figure."""
    if not maps:
        raise ValueError("maps: expected at least one model's DCHF maps, found none")
    mask = _first_map(cloud_mask)
    ranges = dchf_ranges(*maps.values())
    # the cloud edge on a 4-pixel grid (the stage-1 resolution): its outline, not every ragged pixel
    coarse = reduce(torch.as_tensor(mask)[: mask.shape[0] // 4 * 4, : mask.shape[1] // 4 * 4],
                    "(h a) (w b) -> h w", "mean", a=4, b=4).numpy()
    edge_y, edge_x = (np.arange(n) * 4 + 2.0 for n in coarse.shape)
    fig, axes = plt.subplots(len(maps), 3, figsize=(9.0, 2.7 * len(maps) + 0.4), dpi=MIN_DPI,
                             layout="constrained", squeeze=False)
    for row, (name, model_maps) in zip(axes, maps.items()):
        panels = _dchf_panels(model_maps)
        for ax, panel in zip(row, ("R", "key bias", "G")):
            _draw_panel(fig, ax, panel, panels[panel], mask.shape, ranges[panel],
                        title=f"{name}: {_DCHF_STYLE[panel][0]}")
            ax.contour(edge_x, edge_y, coarse, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_axis_off()
    if title:
        fig.suptitle(f"{title} (red: the true cloud edge)", fontsize=10)
    return fig


def scene_sample(seed: int = 7, cloud_cover: float = 0.4, size: int = 128, clouds: str = "realistic") -> dict:
    """The torch sample of ``synthetic_scene(seed, size, cloud_cover)`` with the named cloud model
    ``clouds`` (``edc_lab.data.cloud_models``; checks ``cloud_cover`` and ``clouds``)."""
    from edc_lab.data.cloud_models import cloud_model
    from edc_lab.data.sample import to_torch
    from edc_lab.data.synthetic import synthetic_scene

    cloud_cover = _check_fraction("cloud_cover", cloud_cover)
    return to_torch(synthetic_scene(int(seed), size=int(size), cloud_cover=cloud_cover, **cloud_model(clouds)))


def _pick_model(models, model: str | None) -> tuple[nn.Module, str | None]:
    """``models`` is one model (``model`` ignored) or a mapping name -> model (``model``: a key, or the first)."""
    if isinstance(models, nn.Module):
        return models, None
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models: expected a model or a non-empty mapping name -> model, found {type(models).__name__}")
    model = next(iter(models)) if model is None else model
    _check_choice("model", model, list(models))
    return models[model], model


def dchf_gating_view(models, cloud_cover: float = 0.4, reliability: str = "model", stage: int = 1,
                     seed: int = 7, size: int = 128, show: bool = False, model: str | None = None,
                     clouds: str = "realistic") -> Figure:
    """The callback of notebook 04's widget: scene ``seed`` under ``cloud_cover``, one DCHF taken apart.

    ``models``: one model, or a mapping name -> model with ``model`` the name to show.
    ``reliability``: ``"model"`` or ``"cloud mask"`` (see ``dchf_stage_maps``); ``clouds``: the
    cloud model of the scene. Returns the figure of ``plot_dchf_gating``; ``show=True`` also calls
    ``plt.show()`` (in a notebook). Raises ValueError naming the parameter for a cover outside
    [0, 1], an unknown reliability source, model or cloud model, or a stage that does not exist.
    """
    cloud_cover = _check_fraction("cloud_cover", cloud_cover)
    reliability = _reliability_source(reliability)
    chosen, name = _pick_model(models, model)
    sample = scene_sample(seed, cloud_cover, size, clouds)
    maps = dchf_stage_maps(chosen, sample["optical"][None], sample["sar"][None], stage, reliability,
                           sample["cloud_mask"])
    label = f"{name}, " if name else ""
    fig = plot_dchf_gating(maps, sample["optical"], sample["cloud_mask"],
                           title=f"{label}DCHF at stage {stage}, cloud cover {cloud_cover:.2f}, R from {reliability}")
    if show:
        plt.show()
    return fig


def dchf_gating_widget(models, cloud_cover: float = 0.4, seed: int = 7, size: int = 128,
                       model: str | None = None, clouds: str = "realistic"):
    """ipywidgets controls (model, cloud cover, reliability source, stage) over ``dchf_gating_view``.

    ``models``: one model, or a mapping name -> model (a dropdown then picks one; ``model`` is the
    first shown). The figure is drawn when the widget is first shown (``interactive_output`` calls
    the callback at once) and again whenever a control changes. Returns the widget box.
    """
    import ipywidgets as widgets

    first, name = _pick_model(models, model)
    controls = {
        "cloud_cover": widgets.FloatSlider(value=cloud_cover, min=0.0, max=0.9, step=0.1, description="cloud cover"),
        "stage": widgets.Dropdown(options=list(range(1, len(first.encoder.fusions) + 1)), value=1,
                                  description="stage"),
        "reliability": widgets.ToggleButtons(options=list(RELIABILITY_SOURCES), value="model",
                                             description="R from"),
    }
    if name is not None:
        controls["model"] = widgets.Dropdown(options=list(models), value=name, description="model")

    def update(**values):
        dchf_gating_view(models, seed=seed, size=size, clouds=clouds, show=True, **values)

    output = widgets.interactive_output(update, controls)
    rows = [widgets.HBox([controls["cloud_cover"], controls["stage"]]), controls["reliability"]]
    if name is not None:
        rows.insert(0, controls["model"])
    return widgets.VBox([*rows, output])


# --------------------------------------------------------------------------- 05: distillation


def distillation_maps(teacher: nn.Module, student: nn.Module, sample: Mapping[str, torch.Tensor],
                      region: str = "all", level: int = 1) -> dict:
    """What the feature distillation loss sees at one decoder ``level`` (1 = stride 4).

    The teacher runs on ``sample["optical_clear"]`` + SAR, the student on the cloudy
    ``sample["optical"]`` + SAR (both in eval mode, no gradients). Returns ``error``
    ``(h, w)`` = ``mean_c (s − t)²`` per cell, ``weight`` ``(h, w)`` = ``region_weight`` of
    ``region``, ``weighted`` = ``weight · error``, ``level_loss`` = ``Σ w·e / Σ w`` (this
    level's term of the loss) and ``losses`` = ``{region: feature_distillation_loss}`` over
    all levels for every region.
    """
    _check_choice("region", region, KD_REGIONS)
    with torch.no_grad():
        teacher_features = teacher(sample["optical_clear"][None], sample["sar"][None])["features"]
        student_features = student(sample["optical"][None], sample["sar"][None])["features"]
    if not isinstance(level, int) or not 1 <= level <= len(student_features):
        raise ValueError(f"level: expected an integer in 1..{len(student_features)}, found {level!r}")
    cloud_mask = sample["cloud_mask"][None]
    student_level, teacher_level = student_features[level - 1], teacher_features[level - 1]
    error = (student_level.float() - teacher_level.float()).pow(2).mean(dim=1)[0]
    weight = region_weight(cloud_mask, tuple(error.shape), region)[0, 0]
    losses = {name: feature_distillation_loss(student_features, teacher_features, cloud_mask, name).item()
              for name in KD_REGIONS}
    level_loss = ((weight * error).sum() / weight.sum().clamp_min(1e-12)).item()
    return dict(error=error, weight=weight, weighted=weight * error, level_loss=level_loss, losses=losses,
                region=region, level=level)


def plot_distillation(maps: Mapping, sample: Mapping[str, torch.Tensor], title: str = "") -> Figure:
    """Two rows of three: where the distillation loss of ``maps["region"]`` acts.

    Row 1: the cloudy input (the series' clear-pixel stretch), the cloud mask, the feature
    error. Row 2: the region weight, the weighted error (same colour scale as the error) and the
    loss over all levels for each region, the chosen one highlighted. Returns the figure.
    """
    region, level = maps["region"], maps["level"]
    error = maps["error"].numpy()
    fig, axes = plt.subplots(2, 3, figsize=(8.4, 5.4), dpi=MIN_DPI, layout="constrained")
    mask = _first_map(sample["cloud_mask"])
    axes[0, 0].imshow(rgb(sample["optical"], cloud_mask=mask))
    axes[0, 0].set_title("student input (cloudy)", fontsize=9)
    axes[0, 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title(f"cloud mask ({mask.mean():.0%} cloud)", fontsize=9)
    top = float(error.max()) or 1.0
    panels = [
        (axes[0, 2], f"feature error, level {level} {error.shape}", error, (0, top), "magma",
         "mean over channels of (s − t)²"),
        (axes[1, 0], f"weight w ('{region}')", maps["weight"].numpy(), (0, 1), "cividis",
         "w (cloudy fraction of the cell)" if region == "cloudy" else
         ("w (clear fraction of the cell)" if region == "clear" else "w = 1 everywhere")),
        (axes[1, 1], f"w · error: level loss {maps['level_loss']:.3f}", maps["weighted"].numpy(), (0, top), "magma",
         "w · (s − t)²"),
    ]
    for ax, name, values, (low, high), cmap, unit in panels:
        image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high)
        ax.set_title(name, fontsize=9)
        _colorbar(fig, image, ax, unit)
    for ax in axes.ravel()[:5]:
        ax.set_axis_off()
    bars = axes[1, 2]
    names = list(maps["losses"])
    colors = ["#d7191c" if name == region else "#bbbbbb" for name in names]
    bars.bar(names, [maps["losses"][name] for name in names], color=colors)
    bars.set_ylabel("distillation loss, all levels", fontsize=8)
    bars.set_title("loss for each kd_region", fontsize=9)
    bars.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def distillation_view(teacher: nn.Module, students: Mapping[str, nn.Module], student: str,
                      region: str = "all", cloud_cover: float = 0.5, level: int = 1, seed: int = 3,
                      size: int = 64, show: bool = False) -> Figure:
    """The callback of notebook 05's widget: scene ``seed`` under ``cloud_cover``, one student, one region.

    ``students`` maps names to models (eval mode); ``student`` picks one. Returns the figure of
    ``plot_distillation``; ``show=True`` also calls ``plt.show()``. Raises ValueError naming the
    parameter for an unknown student or region, a cover outside [0, 1] or a level that does not
    exist.
    """
    _check_choice("student", student, students)
    _check_choice("region", region, KD_REGIONS)
    sample = scene_sample(seed, cloud_cover, size)
    maps = distillation_maps(teacher, students[student], sample, region, level)
    fig = plot_distillation(maps, sample, title=f"{student}: kd_region='{region}', cloud cover {cloud_cover:.2f}")
    if show:
        plt.show()
    return fig


def distillation_widget(teacher: nn.Module, students: Mapping[str, nn.Module], student: str | None = None,
                        region: str = "all", cloud_cover: float = 0.5, seed: int = 3, size: int = 64):
    """ipywidgets controls (student, kd_region, cloud cover, level) over ``distillation_view``.

    The figure is drawn when the widget is first shown and again whenever a control changes.
    Returns the widget box.
    """
    import ipywidgets as widgets

    controls = {
        "student": widgets.Dropdown(options=list(students), value=student or next(iter(students)),
                                    description="student"),
        "region": widgets.ToggleButtons(options=list(KD_REGIONS), value=region, description="kd_region"),
        "cloud_cover": widgets.FloatSlider(value=cloud_cover, min=0.0, max=0.9, step=0.1, description="cloud cover"),
        "level": widgets.Dropdown(options=[1, 2, 3, 4], value=1, description="level"),
    }

    def update(**values):
        distillation_view(teacher, students, seed=seed, size=size, show=True, **values)

    output = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox([controls["student"], controls["level"]]), controls["region"],
                         controls["cloud_cover"], output])


# --------------------------------------------------------------------------- 05: cloud removal


def cloud_removal_errors(estimate: torch.Tensor, truth: torch.Tensor, cloud_mask: torch.Tensor) -> dict:
    """Mean absolute error over the bands of ``estimate (C, H, W)`` against ``truth (C, H, W)``:
    ``map (H, W)`` and its means on the cloudy and clear pixels of ``cloud_mask (H, W)``
    (nan for an empty region), in reflectance units; ``bias_cloudy`` and ``bias_clear``: per band,
    the mean *signed* error ``estimate − truth`` on those pixels (a list of C floats, nan for an
    empty region): a colour cast is a bias of one band against the others."""
    if estimate.shape != truth.shape or estimate.dim() != 3:
        raise ValueError(f"estimate: expected (C, H, W) like the truth {tuple(truth.shape)}, "
                         f"found {tuple(estimate.shape)}")
    signed = estimate.float() - truth.float()
    error = signed.abs().mean(dim=0)
    cloudy = torch.as_tensor(cloud_mask).reshape(error.shape) > 0.5

    def mean(region):
        return float(error[region].mean()) if region.any() else float("nan")

    def bias(region):
        return [float(band[region].mean()) if region.any() else float("nan") for band in signed]

    return {"map": error, "cloudy": mean(cloudy), "clear": mean(~cloudy), "bias_cloudy": bias(cloudy),
            "bias_clear": bias(~cloudy)}


def plot_cloud_removal(sample: Mapping[str, torch.Tensor], estimates: Mapping[str, torch.Tensor]) -> Figure:
    """The cloud-removal head's output as an image, beside the truth and the cloudy input.

    Three columns: images, their absolute error against the truth, references. Row 1: the
    cloudy input, its error (what doing nothing costs) and the truth (``optical_clear``). Then one
    row per estimate in ``estimates`` (``{name: (C, H, W)}``, at most two): the estimate, its
    error, and the cloud mask (second row only). The estimates and the truth share one stretch,
    taken from the truth (``rgb(..., reference=truth)``, the one deliberate exception to the
    series' stretch: images compared with the truth share its range, so equal colours mean equal
    reflectance). The cloudy input keeps the series' stretch, from its own clear pixels
    (``rgb(..., cloud_mask=...)``): on the truth's range its clouds and haze, brighter than any
    ground, would all be white. All error maps share one colour scale; titles give the mean error
    under the clouds and in clear sky. Pixels are drawn as blocks (``interpolation="nearest"``).
    Returns the figure.
    """
    if not 1 <= len(estimates) <= 2:
        raise ValueError(f"estimates: expected one or two named images, found {len(estimates)}")
    truth, cloudy, mask = sample["optical_clear"], sample["optical"], sample["cloud_mask"]
    errors = {"cloudy input": cloud_removal_errors(cloudy, truth, mask)}
    errors |= {name: cloud_removal_errors(image, truth, mask) for name, image in estimates.items()}
    top = max(float(e["map"].max()) for e in errors.values()) or 1.0
    images = {"cloudy input": cloudy, **estimates}
    fig, axes = plt.subplots(len(images), 3, figsize=(8.4, 2.75 * len(images)), dpi=MIN_DPI, layout="constrained")
    for row, (name, image) in enumerate(images.items()):
        if row == 0:
            axes[row, 0].imshow(rgb(image, cloud_mask=_first_map(mask)), interpolation="nearest")
            axes[row, 0].set_title(f"{name}\n(stretch: its clear pixels)", fontsize=9)
        else:
            axes[row, 0].imshow(rgb(image, reference=truth), interpolation="nearest")
            axes[row, 0].set_title(f"{name}\n(stretch: the truth's)", fontsize=9)
        shown = axes[row, 1].imshow(errors[name]["map"].numpy(), cmap="magma", vmin=0, vmax=top,
                                    interpolation="nearest")
        axes[row, 1].set_title(f"|error|: {errors[name]['cloudy']:.3f} under cloud,\n"
                               f"{errors[name]['clear']:.3f} in clear sky", fontsize=9)
        _colorbar(fig, shown, axes[row, 1], "mean |error| over bands\n(reflectance)")
    axes[0, 2].imshow(rgb(truth, reference=truth), interpolation="nearest")
    axes[0, 2].set_title("truth: the cloud-free image\n(stretch: its own)", fontsize=9)
    axes[1, 2].imshow(_first_map(mask), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1, 2].set_title("cloud mask (white = cloud)", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig
