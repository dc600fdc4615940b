"""Figures for attributions: optical and SAR maps side by side, the four group shares, the stages.

The idea in plain words: an attribution map is a signed quantity, so it is drawn
with a diverging colour map centred on 0 and a *symmetric* range (the same
colour means the same value in the optical and the SAR panel), with a colourbar
in the units of the explained score ("attribution (logit units)") and the cloud
mask outlined, so one can see at a glance whether the evidence under the clouds
came from the SAR. This follows the captum tutorials' practice (Kokhlikyan et
al., 2020, https://captum.ai) of showing attributions beside the input; the
attributions themselves are Integrated Gradients (Sundararajan et al., 2017) or
the other captum methods of ``edc_lab.explain``. The layout is edc_lab's.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from edc_lab.explain.groups import GROUPS, ModalityShares
from edc_lab.explain.layers import LayerContributions
from edc_lab.explain.pixels import PixelAttributions
from edc_lab.explain.sanity import RandomisationCheck

__all__ = ["plot_attribution_maps", "plot_modality_shares", "plot_layer_contributions", "plot_randomisation"]

DPI = 100
_GROUP_LABELS = {
    "optical_cloudy": "optical\nin cloud",
    "optical_clear": "optical\nclear",
    "sar_cloudy": "SAR\nin cloud",
    "sar_clear": "SAR\nclear",
}
_REGION_COLOUR = "#00a650"
_LAYER_COLOURS = {"stage": "#3182bd", "gate": "#e6550d"}
_LAYER_LABELS = {"stage": "stage features (what the decoder reads)", "gate": "DCHF gate"}
_GROUP_COLOURS = {
    "optical_cloudy": "#8c6d31",
    "optical_clear": "#e7ba52",
    "sar_cloudy": "#3182bd",
    "sar_clear": "#9ecae1",
}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _wrapped(title: str, width: int) -> str:
    """``title`` broken into lines of at most ``width`` characters (existing line breaks kept)."""
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def plot_attribution_maps(
    attributions: PixelAttributions,
    cloud_mask=None,
    sample: int = 0,
    region=None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    levels: int = 21,
):
    """Optical and SAR attributions of one sample, summed over bands, side by side.

    Args:
        attributions: from ``pixel_attributions``.
        cloud_mask: ``(H, W)`` or ``(B, H, W)`` (nonzero = cloudy), outlined in black; optional.
        sample: which sample of the batch.
        region: ``(H, W)`` boolean mask of the explained region, drawn as a green hatched area (so it
            stays visible where its border runs along the cloud edge); optional.
        title: figure title (default: method, baseline, F(x) - F(b)); long titles are wrapped.
        cmap, levels: a diverging colour map cut into ``levels`` steps (odd, so 0 has its own
            colour); steps read as values more easily than a continuous ramp and keep the PNG small.

    Returns the matplotlib ``Figure``: two panels with one shared symmetric colour range and a
    colourbar in "attribution (<units> units)".
    """
    optical = _numpy(attributions.optical_map[sample])
    sar = _numpy(attributions.sar_map[sample])
    limit = max(np.abs(optical).max(), np.abs(sar).max())
    limit = limit if limit > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    figure, axes = plt.subplots(1, 2, figsize=(9.0, 4.4), dpi=DPI, constrained_layout=True)
    handles = {}  # legend label -> handle, for what is actually drawn
    for axis, image, name in zip(axes, (optical, sar), ("optical, summed over bands", "SAR, summed over channels")):
        shown = axis.imshow(image, cmap=plt.get_cmap(cmap, levels), norm=norm, interpolation="nearest")
        if region is not None:
            outline = _numpy(region)
            outline = outline[sample] if outline.ndim == 3 else outline
            if outline.min() != outline.max():
                hatched = axis.contourf((outline != 0).astype(float), levels=[0.5, 1.5], colors="none",
                                        hatches=["//"])
                hatched.set_edgecolor(_REGION_COLOUR)
                hatched.set_linewidth(0.0)
                handles["explained region"] = Patch(facecolor="none", edgecolor=_REGION_COLOUR, hatch="//",
                                                    label="explained region")
        if cloud_mask is not None:
            mask = _numpy(cloud_mask)
            mask = mask[sample] if mask.ndim == 3 else mask
            if mask.min() != mask.max():
                axis.contour(mask != 0, levels=[0.5], colors="black", linewidths=1.2)
                handles["cloud edge"] = Line2D([], [], color="black", linewidth=1.2, label="cloud edge")
        axis.set_title(f"{name}\ntotal {image.sum():+.3g} ({attributions.units} units)", fontsize=10)
        axis.set_xlabel("column (pixel)", fontsize=10)
        axis.set_ylabel("row (pixel)", fontsize=10)
    if handles:
        figure.legend(handles=list(handles.values()), loc="outside lower center", ncols=len(handles), fontsize=9,
                      frameon=False)
    colourbar = figure.colorbar(shown, ax=list(axes), shrink=0.85)
    colourbar.set_label(f"attribution ({attributions.units} units)", fontsize=10)
    if title is None:
        change = float(attributions.score[sample] - attributions.baseline_score[sample])
        title = (
            f"{attributions.method.replace('_', ' ')}, baseline '{attributions.baseline}': "
            f"F(x) - F(b) = {change:+.3g}"
        )
    figure.suptitle(_wrapped(title, 110), fontsize=11)
    return figure


def plot_modality_shares(shares: ModalityShares, sample: int = 0, title: str | None = None):
    """Bar chart of the four group values of one sample (exact Shapley values or ablation, in the units of
    ``F``); each bar is labelled with its value and its share ``|value| / sum |values|`` in per cent.

    Returns the matplotlib ``Figure``; the default title gives the SAR share inside and outside clouds.
    """
    summary = shares.summary(sample)
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=DPI, constrained_layout=True)
    values = [summary[f"value_{g}"] for g in GROUPS]
    bars = axis.bar(
        [_GROUP_LABELS[g] for g in GROUPS], values, color=[_GROUP_COLOURS[g] for g in GROUPS], edgecolor="black"
    )
    for bar, group, value in zip(bars, GROUPS, values):
        share = abs(summary[f"share_{group}"])
        axis.annotate(
            f"{value:+.3f}\n({100 * share:.0f} %)",
            (bar.get_x() + bar.get_width() / 2, value),
            xytext=(0, 3 if value >= 0 else -3),
            textcoords="offset points",
            ha="center",
            va="bottom" if value >= 0 else "top",
            fontsize=9,
        )
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_ylabel(f"contribution to F ({shares.units} units)", fontsize=10)
    span = max(max(abs(v) for v in values), 1e-6)
    axis.set_ylim(min(0.0, min(values)) - 0.35 * span, max(0.0, max(values)) + 0.35 * span)
    axis.tick_params(labelsize=10)
    if title is None:
        title = (
            f"{shares.method.replace('_', ' ')} ({shares.baseline} baseline): SAR share in cloud "
            f"{summary['sar_share_cloudy']:.2f}, outside {summary['sar_share_clear']:.2f}"
        )
    axis.set_title(_wrapped(title, 70), fontsize=10)
    return figure


def plot_layer_contributions(layers: LayerContributions, sample: int = 0, title: str | None = None):
    """Horizontal bars: the total attribution of every stage's features (blue) and DCHF gate (orange) for one
    sample, each labelled with its value; a legend names the two kinds."""
    names = list(layers.totals)
    values = [float(layers.totals[name][sample]) for name in names]
    colours = [_LAYER_COLOURS[layers.kinds[name]] for name in names]
    figure, axis = plt.subplots(figsize=(8.0, 0.36 * len(names) + 1.9), dpi=DPI, constrained_layout=True)
    axis.barh(names, values, color=colours, edgecolor="black")
    span = max(max(abs(v) for v in values), 1e-6)
    for row, value in enumerate(values):
        axis.annotate("0" if value == 0 else f"{value:+.3f}", (value, row), xytext=(4 if value >= 0 else -4, 0),
                      textcoords="offset points", ha="left" if value >= 0 else "right", va="center", fontsize=9)
    axis.set_xlim(min(0.0, min(values)) - 0.3 * span, max(0.0, max(values)) + 0.3 * span)
    axis.invert_yaxis()
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel(f"attribution ({layers.units} units)", fontsize=10)
    axis.tick_params(labelsize=10)
    kinds = [kind for kind in ("stage", "gate") if kind in layers.kinds.values()]
    axis.legend(handles=[Patch(facecolor=_LAYER_COLOURS[kind], edgecolor="black", label=_LAYER_LABELS[kind])
                         for kind in kinds], loc="best", fontsize=9)
    axis.set_title(_wrapped(title or f"layer {layers.method.replace('_', ' ')} by stage and gate", 80), fontsize=10)
    return figure


def plot_randomisation(checks: dict[str, RandomisationCheck]):
    """Cascading randomisation (Adebayo et al., 2018), one line per model and modality: the Spearman rank
    correlation between the trained model's map and the map after re-initialising the top layers (the
    steps of ``model_randomisation``: the logits layer, then the top share of the layers, up to all of
    them); left ``|attribution|``, right signed. A dotted line per model and modality marks the
    correlation of the trained ``|attribution|`` with ``|x - b|`` (what no weight can change)."""
    figure, axes = plt.subplots(1, 2, figsize=(9.6, 4.2), dpi=DPI, constrained_layout=True, sharey=True)
    colours = plt.get_cmap("tab10")
    labels = None
    for index, (name, check) in enumerate(checks.items()):
        steps = ["trained"] + ["logits layer" if count == 1 else f"top {100 * count / len(check.layers):.0f} %"
                               for count in check.randomised]
        labels = labels or steps
        for what, style in (("optical", "-"), ("sar", "--")):
            label = f"{name}, {'SAR' if what == 'sar' else what}"
            for axis, key in zip(axes, (what, f"signed_{what}")):
                axis.plot(range(len(steps)), [1.0] + list(getattr(check, key)), style, marker="o", markersize=4,
                          color=colours(index), label=label)
            axes[0].axhline(getattr(check, f"input_{what}"), color=colours(index), linestyle=":", linewidth=1.0)
    for axis, what in zip(axes, ("|attribution|", "signed attribution")):
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(labels)), labels, fontsize=9)
        axis.set_xlabel("layers re-initialised, from the logits down", fontsize=10)
        axis.set_title(f"{what}: trained vs randomised", fontsize=10)
        axis.tick_params(axis="y", labelsize=10)
    axes[0].set_ylabel("Spearman rank correlation", fontsize=10)
    axes[0].set_ylim(-1.05, 1.05)
    figure.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8,
                  frameon=False)
    axes[0].annotate("dotted: trained |attribution| vs |x - b|", (0.1, -0.95), fontsize=8)
    return figure
