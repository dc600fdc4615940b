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
  the cloud-free image beside the truth and the cloudy input, all with the one stretch of
  ``edc_lab.viz.plots.rgb`` taken from the clear image, and the error maps on one scale.

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
from edc_lab.viz.model_plots import trace_fusions, upsample_map
from edc_lab.viz.plots import rgb

__all__ = [
    "MIN_DPI",
    "RELIABILITY_SOURCES",
    "pooling_weights",
    "attention_received",
    "dchf_stage_maps",
    "plot_dchf_gating",
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
RELIABILITY_SOURCES = ("learnt", "cloud mask")


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


def dchf_stage_maps(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor, stage: int = 1,
                    reliability: str = "learnt", cloud_mask: torch.Tensor | None = None) -> dict:
    """Run an EDC model and take apart the DCHF of one ``stage`` (1-4).

    Args:
        model: an EDC-style model with DCHF fusions (``model.encoder.fusions``), in eval mode.
        optical, sar: ``(1, C, H, W)`` inputs.
        reliability: ``"learnt"`` (``R = 1 − D`` of the model) or ``"cloud mask"`` (what a perfect
            ``D`` would give: ``R = 0`` on the stage's pixels that are mostly cloud, 1 elsewhere;
            needs ``cloud_mask (H, W)``).

    Returns the DCHF's ``info`` dict (``discrepancy``, ``reliability``, ``gates``,
    ``global_context``, ``local_mix``, ``cell_reliability``) plus ``pooling_weights``
    ``(1, 1, h, w)``, ``attention_received`` ``(1, 1, hc, wc)`` (share of the cell-token
    attention each cell receives) and ``cell`` (the cell size in stage pixels).
    """
    fusions = getattr(getattr(model, "encoder", None), "fusions", None)
    if fusions is None:
        raise ValueError(f"model: expected an EDC-style model with encoder.fusions, found {type(model).__name__}")
    if not isinstance(stage, int) or not 1 <= stage <= len(fusions):
        raise ValueError(f"stage: expected an integer in 1..{len(fusions)}, found {stage!r}")
    _check_choice("reliability", reliability, RELIABILITY_SOURCES)
    fusion = fusions[stage - 1]
    if not hasattr(fusion, "global_context"):
        raise ValueError(f"model: stage {stage} fuses with {type(fusion).__name__}, which has no DCHF maps "
                         f"(e.g. edc_no_dchf); pick a model with DCHF")
    if reliability == "cloud mask" and cloud_mask is None:
        raise ValueError("cloud_mask: reliability='cloud mask' needs the (H, W) cloud mask")
    with torch.no_grad():
        _, trace = trace_fusions(model, optical, sar)
        inputs = trace[stage - 1]
        override = None
        if reliability == "cloud mask":
            mask = torch.as_tensor(cloud_mask).float().reshape(1, 1, *cloud_mask.shape[-2:])
            cloud_fraction = F.adaptive_avg_pool2d(mask, tuple(inputs["optical"].shape[-2:]))
            override = (cloud_fraction <= 0.5).float()
        keep = fusion.keep_attention
        fusion.keep_attention = True
        try:
            _, _, _, info = fusion(inputs["optical"], inputs["sar"], inputs["cross"], reliability=override)
            attention = fusion.last_attention
        finally:
            fusion.keep_attention = keep
    cells = tuple(info["cell_reliability"].shape[-2:])
    info = dict(info)
    info["pooling_weights"] = pooling_weights(info["reliability"], fusion.cell, fusion.eps)
    info["attention_received"] = attention_received(attention).reshape(-1, 1, *cells)
    info["cell"] = fusion.cell
    return info


def plot_dchf_gating(maps: Mapping, optical, cloud_mask, title: str = "") -> Figure:
    """Three rows of three: what one DCHF does with the clouds (``maps`` from ``dchf_stage_maps``).

    Row 1: the cloudy optical input (``rgb``, the series' clear-pixel stretch), the
    true cloud mask, the reliability ``R = 1 − D``. Row 2: each pixel's pooling weight in its
    cell, the share of attention each cell token receives, ``|G|`` (the global context,
    mean over channels). Row 3: the optical gate ``σ(Conv(X − O)) ⊙ D`` and the SAR gate
    ``σ(Conv(X − S))`` (means over channels), and ``D``. Stage maps are shown on the image grid,
    cell-wise quantities as blocks. Returns the figure (dpi ``MIN_DPI``).
    """
    mask = _first_map(cloud_mask)
    size = mask.shape
    fig, axes = plt.subplots(3, 3, figsize=(8.4, 8.0), dpi=MIN_DPI, layout="constrained")
    axes[0, 0].imshow(rgb(optical, cloud_mask=mask))
    axes[0, 0].set_title("cloudy optical input", fontsize=9)
    axes[0, 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title(f"true cloud mask ({mask.mean():.0%} cloud)", fontsize=9)
    cell = maps["cell"]
    panels = [
        (axes[0, 2], "reliability R = 1 − D", maps["reliability"], "bilinear", (0, 1), "cividis",
         "R (0 = unreliable, 1 = reliable)"),
        (axes[1, 0], "pooling weight w", maps["pooling_weights"], "nearest",
         (0, None), "viridis", f"w = R / ΣR over its {cell}×{cell} cell"),
        (axes[1, 1], "attention received per cell", maps["attention_received"], "nearest", (0, None), "viridis",
         "share of attention (sums to 1)"),
        (axes[1, 2], "|G| (global context)", maps["global_context"].abs().mean(1, keepdim=True), "nearest",
         (0, None), "magma", "mean |G| over channels (feature units)"),
        (axes[2, 0], "optical gate", maps["gates"]["optical"].mean(1, keepdim=True), "bilinear", (0, 1), "viridis",
         "fraction of X − O added"),
        (axes[2, 1], "SAR gate", maps["gates"]["sar"].mean(1, keepdim=True), "bilinear", (0, 1), "viridis",
         "fraction of X − S added"),
        (axes[2, 2], "discrepancy D", maps["discrepancy"], "bilinear", (0, 1), "magma",
         "D (1 = optical and SAR disagree)"),
    ]
    for ax, name, values, mode, (low, high), cmap, unit in panels:
        image = ax.imshow(upsample_map(values, size, mode), cmap=cmap, vmin=low, vmax=high)
        ax.set_title(name, fontsize=9)
        _colorbar(fig, image, ax, unit)
    for ax in axes.ravel():
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def scene_sample(seed: int = 7, cloud_cover: float = 0.4, size: int = 128) -> dict:
    """The torch sample of ``synthetic_scene(seed, size, cloud_cover)`` (checks ``cloud_cover``)."""
    from edc_lab.data.sample import to_torch
    from edc_lab.data.synthetic import synthetic_scene

    cloud_cover = _check_fraction("cloud_cover", cloud_cover)
    return to_torch(synthetic_scene(int(seed), size=int(size), cloud_cover=cloud_cover))


def dchf_gating_view(model: nn.Module, cloud_cover: float = 0.4, reliability: str = "learnt", stage: int = 1,
                     seed: int = 7, size: int = 128, show: bool = False) -> Figure:
    """The callback of notebook 04's widget: scene ``seed`` under ``cloud_cover``, one DCHF taken apart.

    ``reliability``: ``"learnt"`` or ``"cloud mask"`` (see ``dchf_stage_maps``). Returns the
    figure of ``plot_dchf_gating``; ``show=True`` also calls ``plt.show()`` (in a notebook).
    Raises ValueError naming the parameter for a cover outside [0, 1], an unknown
    reliability source or a stage that does not exist.
    """
    cloud_cover = _check_fraction("cloud_cover", cloud_cover)
    _check_choice("reliability", reliability, RELIABILITY_SOURCES)
    sample = scene_sample(seed, cloud_cover, size)
    maps = dchf_stage_maps(model, sample["optical"][None], sample["sar"][None], stage, reliability,
                           sample["cloud_mask"])
    fig = plot_dchf_gating(maps, sample["optical"], sample["cloud_mask"],
                           title=f"DCHF at stage {stage}, cloud cover {cloud_cover:.2f}, R {reliability}")
    if show:
        plt.show()
    return fig


def dchf_gating_widget(model: nn.Module, cloud_cover: float = 0.4, seed: int = 7, size: int = 128):
    """ipywidgets controls (cloud cover, reliability source, stage) over ``dchf_gating_view``.

    The figure is drawn when the widget is first shown (``interactive_output`` calls the
    callback at once) and again whenever a control changes. Returns the widget box.
    """
    import ipywidgets as widgets

    controls = {
        "cloud_cover": widgets.FloatSlider(value=cloud_cover, min=0.0, max=0.9, step=0.1, description="cloud cover"),
        "reliability": widgets.ToggleButtons(options=list(RELIABILITY_SOURCES), value="learnt",
                                             description="R from"),
        "stage": widgets.Dropdown(options=list(range(1, len(model.encoder.fusions) + 1)), value=1,
                                  description="stage"),
    }

    def update(**values):
        dchf_gating_view(model, seed=seed, size=size, show=True, **values)

    output = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox([controls["cloud_cover"], controls["stage"]]), controls["reliability"], output])


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
    (nan for an empty region), in reflectance units."""
    if estimate.shape != truth.shape or estimate.dim() != 3:
        raise ValueError(f"estimate: expected (C, H, W) like the truth {tuple(truth.shape)}, "
                         f"found {tuple(estimate.shape)}")
    error = (estimate.float() - truth.float()).abs().mean(dim=0)
    cloudy = torch.as_tensor(cloud_mask).reshape(error.shape) > 0.5

    def mean(region):
        return float(error[region].mean()) if region.any() else float("nan")

    return {"map": error, "cloudy": mean(cloudy), "clear": mean(~cloudy)}


def plot_cloud_removal(sample: Mapping[str, torch.Tensor], estimates: Mapping[str, torch.Tensor]) -> Figure:
    """The cloud-removal head's output as an image, beside the truth and the cloudy input.

    Three columns: images, their absolute error against the truth, references. Row 1: the
    cloudy input, its error (what doing nothing costs) and the truth (``optical_clear``). Then one
    row per estimate in ``estimates`` (``{name: (C, H, W)}``, at most two): the estimate, its
    error, and the cloud mask (second row only). All optical images share one stretch, taken from
    the truth (``rgb(..., reference=truth)``, the one deliberate exception to the series' stretch:
    images compared with the truth share its range, so equal colours mean equal reflectance); all
    error maps share one colour scale; titles give
    the mean error under the clouds. Returns the figure.
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
        axes[row, 0].imshow(rgb(image, reference=truth))
        axes[row, 0].set_title(name, fontsize=9)
        shown = axes[row, 1].imshow(errors[name]["map"].numpy(), cmap="magma", vmin=0, vmax=top)
        axes[row, 1].set_title(f"|error|: {errors[name]['cloudy']:.3f} under cloud", fontsize=9)
        _colorbar(fig, shown, axes[row, 1], "mean |error| over bands\n(reflectance)")
    axes[0, 2].imshow(rgb(truth, reference=truth))
    axes[0, 2].set_title("truth: the cloud-free image", fontsize=9)
    axes[1, 2].imshow(_first_map(mask), cmap="gray", vmin=0, vmax=1)
    axes[1, 2].set_title("cloud mask (white = cloud)", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig
