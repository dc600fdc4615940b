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

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm

from edc_lab.explain.groups import GROUPS, ModalityShares
from edc_lab.explain.layers import LayerContributions
from edc_lab.explain.pixels import PixelAttributions

__all__ = ["plot_attribution_maps", "plot_modality_shares", "plot_layer_contributions"]

DPI = 100
_GROUP_LABELS = {
    "optical_cloudy": "optical\nin cloud",
    "optical_clear": "optical\nclear",
    "sar_cloudy": "SAR\nin cloud",
    "sar_clear": "SAR\nclear",
}
_GROUP_COLOURS = {
    "optical_cloudy": "#8c6d31",
    "optical_clear": "#e7ba52",
    "sar_cloudy": "#3182bd",
    "sar_clear": "#9ecae1",
}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


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
        region: ``(H, W)`` boolean mask of the explained region, outlined in green; optional.
        title: figure title (default: method, baseline, F(x) - F(b)).
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
    figure, axes = plt.subplots(1, 2, figsize=(7.4, 3.2), dpi=DPI, constrained_layout=True)
    outlines = {}  # legend label -> line style, for the outlines actually drawn
    for axis, image, name in zip(axes, (optical, sar), ("optical (sum over bands)", "SAR (sum over channels)")):
        shown = axis.imshow(image, cmap=plt.get_cmap(cmap, levels), norm=norm, interpolation="nearest")
        if cloud_mask is not None:
            mask = _numpy(cloud_mask)
            mask = mask[sample] if mask.ndim == 3 else mask
            if mask.min() != mask.max():
                axis.contour(mask != 0, levels=[0.5], colors="black", linewidths=1.2)
                outlines["cloud edge"] = dict(color="black", linewidth=1.2)
        if region is not None:
            outline = _numpy(region)
            outline = outline[sample] if outline.ndim == 3 else outline
            if outline.min() != outline.max():
                axis.contour(outline != 0, levels=[0.5], colors="#00a650", linewidths=1.2, linestyles="--")
                outlines["explained region"] = dict(color="#00a650", linewidth=1.2, linestyle="--")
        axis.set_title(f"{name}: total {image.sum():+.3g}", fontsize=11)
        axis.set_xlabel("column (pixel)", fontsize=10)
        axis.set_ylabel("row (pixel)", fontsize=10)
    if outlines:
        from matplotlib.lines import Line2D

        axes[0].legend(handles=[Line2D([], [], label=label, **style) for label, style in outlines.items()],
                       loc="lower left", fontsize=8, framealpha=0.8)
    colourbar = figure.colorbar(shown, ax=list(axes), shrink=0.85)
    colourbar.set_label(f"attribution ({attributions.units} units)", fontsize=10)
    if title is None:
        change = float(attributions.score[sample] - attributions.baseline_score[sample])
        title = (
            f"{attributions.method.replace('_', ' ')}, baseline '{attributions.baseline}': "
            f"F(x) - F(b) = {change:+.3g}"
        )
    figure.suptitle(title, fontsize=11)
    return figure


def plot_modality_shares(shares: ModalityShares, sample: int = 0, title: str | None = None):
    """Bar chart of the four group shares ``value / sum |value|`` of one sample, values printed on the bars.

    Returns the matplotlib ``Figure``; the title gives the SAR share inside and outside clouds.
    """
    summary = shares.summary(sample)
    figure, axis = plt.subplots(figsize=(5.6, 3.6), dpi=DPI, constrained_layout=True)
    heights = [summary[f"share_{g}"] for g in GROUPS]
    bars = axis.bar(
        [_GROUP_LABELS[g] for g in GROUPS], heights, color=[_GROUP_COLOURS[g] for g in GROUPS], edgecolor="black"
    )
    for bar, group in zip(bars, GROUPS):
        axis.annotate(
            f"{summary[f'value_{group}']:+.3g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom" if bar.get_height() >= 0 else "top",
            fontsize=9,
        )
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_ylabel("share = value / sum |values|", fontsize=10)
    axis.set_ylim(min(-0.05, min(heights) * 1.2), max(0.05, max(heights) * 1.2))
    axis.tick_params(labelsize=10)
    if title is None:
        title = (
            f"{shares.method.replace('_', ' ')} ({shares.baseline} baseline; bar labels in {shares.units} units)\n"
            f"SAR share in cloud {summary['sar_share_cloudy']:.2f}, outside {summary['sar_share_clear']:.2f}"
        )
    axis.set_title(title, fontsize=10)
    return figure


def plot_layer_contributions(layers: LayerContributions, sample: int = 0, title: str | None = None):
    """Horizontal bars: the total attribution of every stage (and DCHF gate) for one sample."""
    names = list(layers.totals)
    values = [float(layers.totals[name][sample]) for name in names]
    colours = ["#3182bd" if layers.kinds[name] == "stage" else "#e6550d" for name in names]
    figure, axis = plt.subplots(figsize=(5.6, 0.3 * len(names) + 1.4), dpi=DPI, constrained_layout=True)
    axis.barh(names, values, color=colours, edgecolor="black")
    axis.invert_yaxis()
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel(f"attribution ({layers.units} units)", fontsize=10)
    axis.tick_params(labelsize=9)
    axis.set_title(title or f"layer {layers.method.replace('_', ' ')}: blue = stage features, orange = DCHF gates",
                   fontsize=10)
    return figure
