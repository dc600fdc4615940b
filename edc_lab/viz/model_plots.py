"""Pictures of what the EDC blocks do: windows and carrier cells, attention, discrepancy, gates.

Used by notebooks 02 (carrier tokens), 03 (discrepancy maps) and 04 (DCHF
gating). Every function draws on matplotlib axes it is given (or makes a small
figure) and returns the figure, so notebooks stay short. Maps at a stage's
stride are brought back to the image grid here (``upsample_map``), nearest for
cell-wise quantities (so a cell looks like a cell) and bilinear for per-pixel
maps.

Whose idea: all of it is edc_lab's teaching material around the paper's
blocks (EDC, arXiv 2603.20811; carrier tokens from FasterViT, arXiv 2306.06189).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from edc_lab.auroc import auroc_verdict
from edc_lab.models.contract import call_model

__all__ = [
    "upsample_map",
    "draw_windows",
    "plot_windows_and_carriers",
    "plot_carrier_attention",
    "COLOUR_RANGES",
    "discrepancy_colours",
    "plot_discrepancy_row",
    "plot_discrepancy_stages",
    "stage_aurocs",
    "plot_gates",
    "plot_cost_curves",
    "trace_fusions",
]


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().float().cpu().numpy()
    return np.asarray(array)


def _optical_rgb(optical, cloud_mask=None) -> np.ndarray:
    """The series' one stretch (``edc_lab.viz.plots.rgb``); its range from the clear pixels when ``cloud_mask`` is given."""
    from edc_lab.viz.plots import rgb

    optical = _as_numpy(optical)
    if cloud_mask is not None:
        cloud_mask = _as_numpy(cloud_mask)
        cloud_mask = cloud_mask.reshape(cloud_mask.shape[-2:])
    return rgb(optical[0] if optical.ndim == 4 else optical, cloud_mask=cloud_mask)


#: how a figure scales a discrepancy map's colours: ``"0-1"`` (D's whole range, comparable between maps)
#: or ``"map"`` (the map's own min-max, so a map that stays near one value still shows its pattern)
COLOUR_RANGES = ("0-1", "map")


def discrepancy_colours(values, colour_range: str = "0-1") -> tuple[float, float, str]:
    """``(vmin, vmax, colourbar label)`` for a discrepancy map ``values`` shown with ``colour_range``.

    ``"0-1"``: the whole range of ``D``, label ``"D (0–1)"``. ``"map"``: the map's own minimum and
    maximum, and the label says so (``"D (this map: 0.42–0.51, not 0–1)"``): an untrained ``D`` stays
    within a few hundredths of 0.5 and looks flat on 0–1. A constant map gets a range of 1e-3 around it.
    """
    if colour_range == "0-1":
        return 0.0, 1.0, "D (0–1)"
    if colour_range == "map":
        values = _as_numpy(values)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        high = max(high, low + 1e-3)
        return low, high, f"D (this map: {low:.2f}–{high:.2f}, not 0–1)"
    raise ValueError(f"colour_range: expected one of {COLOUR_RANGES}, found {colour_range!r}")


def trace_fusions(model: torch.nn.Module, optical: torch.Tensor, sar: torch.Tensor,
                  cloud_mask: torch.Tensor | None = None) -> tuple[dict, list[dict]]:
    """Run ``model(optical, sar)`` and record what each fusion block (DCHF or plain sum) saw and returned.

    ``cloud_mask (B, H, W)`` is passed on to a model that reads it (the ``"oracle"`` arm,
    ``models.contract.call_model``) and ignored by every other model.

    Works on models with ``model.encoder.fusions`` (EDC and its ablations).
    Returns ``(outputs, trace)``: the model's output dict and, per stage k = 1..4,
    ``{"optical", "sar", "cross"}`` (the fusion's inputs ``O_k``, ``S_k``, ``X_k``;
    ``cross`` is None at stage 1) and ``"info"`` (the full info dict, including
    ``global_context``, ``local_mix`` and ``cell_reliability``, which the model's
    output does not carry). Tensors are detached.
    """
    fusions = getattr(getattr(model, "encoder", None), "fusions", None)
    if fusions is None:
        raise ValueError(f"trace_fusions: {type(model).__name__} has no encoder.fusions (not an EDC-style model)")
    trace: list[dict] = [{} for _ in fusions]

    def detach(value):
        if isinstance(value, torch.Tensor):
            return value.detach()
        if isinstance(value, dict):
            return {key: detach(item) for key, item in value.items()}
        return value

    def make_hook(stage):
        def hook(module, args, output):
            optical_k, sar_k, *rest = args
            trace[stage].update(optical=optical_k.detach(), sar=sar_k.detach(), cross=detach(rest[0] if rest else None),
                                info=detach(output[3]))

        return hook

    handles = [fusion.register_forward_hook(make_hook(stage)) for stage, fusion in enumerate(fusions)]
    try:
        outputs = call_model(model, optical, sar, cloud_mask)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, trace


def upsample_map(values, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """A map ``(B, 1, h, w)``, ``(1, h, w)`` or ``(h, w)`` (first image taken) -> numpy ``(H, W)``.

    ``mode``: ``"bilinear"`` for per-pixel maps, ``"nearest"`` for cell-wise ones.
    """
    values = torch.as_tensor(values).detach().float().cpu()
    while values.dim() < 4:
        values = values[None]
    values = values[:1, :1]
    if tuple(values.shape[-2:]) != tuple(size):
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        values = F.interpolate(values, size=tuple(size), mode=mode, **kwargs)
    return values[0, 0].numpy()


def draw_windows(
    ax,
    size: tuple[int, int],
    window_pixels: int,
    carriers: int = 1,
    *,
    color: str = "white",
    show_carriers: bool = True,
) -> None:
    """Outline the attention windows (solid) and carrier cells (dotted, with a dot per carrier).

    Args:
        ax: matplotlib axes already showing an ``H x W`` image.
        size: ``(H, W)`` of the image in pixels.
        window_pixels: window side in image pixels (window in tokens x the stage's stride).
        carriers: carrier tokens per window side.
    """
    height, width = size
    cell = window_pixels / carriers
    rows, cols = -(-height // window_pixels), -(-width // window_pixels)
    if show_carriers and carriers > 1:
        for line in np.arange(cell, rows * window_pixels, cell):
            ax.axhline(line - 0.5, color=color, lw=0.6, ls=":")
        for line in np.arange(cell, cols * window_pixels, cell):
            ax.axvline(line - 0.5, color=color, lw=0.6, ls=":")
    for row in range(rows):
        for col in range(cols):
            ax.add_patch(
                Rectangle(
                    (col * window_pixels - 0.5, row * window_pixels - 0.5), window_pixels, window_pixels,
                    fill=False, edgecolor=color, lw=1.2,
                )
            )
    if show_carriers:
        centres = (np.arange(rows * carriers) + 0.5) * cell - 0.5, (np.arange(cols * carriers) + 0.5) * cell - 0.5
        yy, xx = np.meshgrid(*centres, indexing="ij")
        ax.scatter(xx.ravel(), yy.ravel(), s=10, c=color, edgecolors="black", linewidths=0.4, zorder=3)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)


def plot_windows_and_carriers(optical, window: int, stride: int, carriers: int = 1, ax=None, title: str | None = None):
    """True-colour ``optical (4, H, W)`` with the windows and carrier cells of a stage drawn on it.

    ``window`` is in tokens of the stage, ``stride`` its down-sampling factor, so a
    window covers ``window * stride`` image pixels. Returns the figure.
    """
    image = _optical_rgb(optical)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(image)
    draw_windows(ax, image.shape[:2], window * stride, carriers)
    ax.set_title(title or f"windows {window}x{window} tokens, {carriers}x{carriers} carrier(s) each", fontsize=9)
    ax.set_axis_off()
    return ax.figure


def plot_carrier_attention(optical, maps: dict, stride: int, carrier_index: tuple[int, int], window: int,
                           carriers: int = 1, axes=None):
    """Where one carrier token looks: image, its global attention, its local attention.

    Args:
        optical: ``(4, H, W)`` image.
        maps: ``carrier_attention_maps(block, carrier_index)`` of a block run on the
            stride-``stride`` feature map of this image.
        stride, window, carriers: geometry of that block.
        axes: three axes to draw into; a new (9 x 3 in) figure when None.

    The two attention panels show the weights alone (no image underneath, so the colours
    match their colourbar, "attention weight": head-averaged softmax weights; the global
    ones sum to 1 over the carriers, the local ones to 1 minus the weight on the window's
    carriers), with the windows outlined in grey.
    """
    image = _optical_rgb(optical)
    size = image.shape[:2]
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(9, 3), layout="constrained")
    cell_pixels = window * stride // carriers
    row, col = carrier_index
    for ax in axes:
        ax.set_axis_off()
    axes[0].imshow(image)
    draw_windows(axes[0], size, window * stride, carriers)
    axes[0].add_patch(Rectangle((col * cell_pixels - 0.5, row * cell_pixels - 0.5), cell_pixels, cell_pixels,
                                fill=False, edgecolor="red", lw=2))
    axes[0].set_title(f"carrier {carrier_index} (red)", fontsize=10)
    for ax, key, title in ((axes[1], "global_pixels", "global step: over all carriers"),
                           (axes[2], "local", "local step: over its window")):
        heat = upsample_map(maps[key], size, mode="nearest")
        shown = ax.imshow(heat, cmap="magma", vmin=0, interpolation="nearest")  # opaque: the colourbar reads true
        draw_windows(ax, size, window * stride, carriers, color="0.55", show_carriers=False)
        ax.add_patch(Rectangle((col * cell_pixels - 0.5, row * cell_pixels - 0.5), cell_pixels, cell_pixels,
                               fill=False, edgecolor="cyan", lw=1.5))
        ax.set_title(title, fontsize=10)
        ax.figure.colorbar(shown, ax=ax, shrink=0.8, label="attention weight")
    return axes[0].figure


def plot_discrepancy_row(optical, sar, discrepancy, cloud_mask, axes=None, title: str = "discrepancy D",
                         polarization: str = "VV", colour_range: str = "0-1"):
    """Optical (true colour), SAR (first plane), discrepancy ``D`` (on the image grid) and the true cloud mask.

    ``optical (4, H, W)``, ``sar (Cs, H, W)`` scaled as in the canonical sample (its first plane,
    ``polarization``, is shown in dB when it is VV or VH, see ``edc_lab.viz.plots.sar_display``),
    ``discrepancy`` any ``(.., h, w)`` map in [0, 1], ``cloud_mask (H, W)``. Four axes, or a new
    2 x 2 figure (6 x 5.2 in). The optical is stretched on the range of its clear pixels (the
    series' one stretch, see ``edc_lab.viz.plots``). ``colour_range`` scales D's colours (see
    ``discrepancy_colours``: ``"0-1"`` or the map's own range ``"map"``, said on the colourbar).
    Returns the figure.
    """
    from edc_lab.viz.plots import sar_display

    sar = _as_numpy(sar)
    sar = sar[0] if sar.ndim == 4 else sar
    mask = _as_numpy(cloud_mask)
    mask = mask.reshape(mask.shape[-2:])
    if axes is None:
        _, axes = plt.subplots(2, 2, figsize=(6, 5.2), layout="constrained")
    axes = list(np.ravel(axes))
    if len(axes) != 4:
        raise ValueError(f"plot_discrepancy_row: expected 4 axes, found {len(axes)}")
    figure = axes[0].figure
    discrepancy_map = upsample_map(discrepancy, mask.shape)
    low, high, label = discrepancy_colours(discrepancy_map, colour_range)
    axes[0].imshow(_optical_rgb(optical, mask))
    axes[0].set_title("optical (true colour)", fontsize=10)
    values, kwargs, unit = sar_display(sar[0], polarization)
    shown = axes[1].imshow(values, **kwargs)
    axes[1].set_title(f"SAR ({polarization})", fontsize=10)
    figure.colorbar(shown, ax=axes[1], shrink=0.85, label=unit)
    image = axes[2].imshow(discrepancy_map, cmap="magma", vmin=low, vmax=high)
    axes[2].set_title(title, fontsize=10)
    axes[3].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[3].set_title(f"true cloud mask ({mask.mean():.0%}, white)", fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    figure.colorbar(image, ax=axes[2], shrink=0.85, label=label)
    return figure


def stage_aurocs(model: torch.nn.Module, optical: torch.Tensor, sar: torch.Tensor, cloud_mask: torch.Tensor,
                 batch_size: int = 8) -> list[float]:
    """AUROC of each stage's discrepancy map against the cloud mask, over a batch of scenes.

    ``optical (N, 4, H, W)``, ``sar (N, Cs, H, W)``, ``cloud_mask (N, H, W)``; the model runs
    in eval mode without gradients, ``batch_size`` scenes at a time. Returns one AUROC per
    stage (0.5 = chance, 1 = D higher on every cloudy pixel, 0 = *inverted*: lower on every
    one); an empty list for a model without discrepancy maps.
    """
    from edc_lab.models.discrepancy import discrepancy_auroc

    was_training = model.training
    model.eval()
    maps: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, optical.shape[0], batch_size):
            outputs = model(optical[start:start + batch_size], sar[start:start + batch_size])
            maps.append(list(outputs["discrepancy"]))
    model.train(was_training)
    if not maps or not maps[0]:
        return []
    return [discrepancy_auroc(torch.cat([chunk[stage] for chunk in maps]), cloud_mask) for stage in range(len(maps[0]))]


def plot_discrepancy_stages(optical, cloud_mask, discrepancies: Sequence, title: str = "", fig=None,
                            colour_range: str = "0-1"):
    """One model's discrepancy maps at every stage beside the scene and its true cloud mask.

    A 2 x 3 grid: optical (true colour), true cloud mask, D at stage 1; D at stages 2-4.
    ``optical (4, H, W)``, ``cloud_mask (H, W)``, ``discrepancies`` the model's maps
    ``(1, 1, h_k, w_k)`` (or ``(1, h_k, w_k)``), shown on the image grid (each cell as a
    block), each titled with its AUROC against the mask and the verdict the series uses
    (``edc_lab.auroc.auroc_verdict``: "inverted" below 0.4, "finds clouds" above 0.6, "near chance" between). ``colour_range="0-1"``
    (default) puts the four maps on one 0-1 scale with one colourbar; ``"map"`` gives each map its
    own range and colourbar (``discrepancy_colours``), for maps that stay near one value. The
    optical is stretched on the range of its clear pixels (the series' one stretch, see
    ``edc_lab.viz.plots``). Returns the figure (dpi 100).
    """
    from edc_lab.models.discrepancy import discrepancy_auroc

    mask = _as_numpy(cloud_mask)
    mask = mask.reshape(mask.shape[-2:])
    if colour_range not in COLOUR_RANGES:
        raise ValueError(f"colour_range: expected one of {COLOUR_RANGES}, found {colour_range!r}")
    if fig is None:
        size = (6.4, 4.4) if colour_range == "0-1" else (7.8, 4.8)
        fig = plt.figure(figsize=size, dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    axes[0, 0].imshow(_optical_rgb(optical, mask))
    axes[0, 0].set_title("optical (true colour)", fontsize=9)
    axes[0, 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title(f"true cloud mask ({mask.mean():.0%} cloud)", fontsize=9)
    panels = [axes[0, 2], axes[1, 0], axes[1, 1], axes[1, 2]]
    image = None
    for stage, (ax, discrepancy) in enumerate(zip(panels, discrepancies), start=1):
        values = torch.as_tensor(_as_numpy(discrepancy)).reshape(1, 1, *np.shape(discrepancy)[-2:])
        auroc = discrepancy_auroc(values, torch.as_tensor(mask)[None])
        shown = upsample_map(values, mask.shape, "nearest")
        low, high, label = discrepancy_colours(shown, colour_range)
        image = ax.imshow(shown, cmap="magma", vmin=low, vmax=high)
        if colour_range == "map":
            fig.colorbar(image, ax=ax, shrink=0.85, label=label.replace(", not 0–1", ""))
        ax.set_title(f"D stage {stage}: AUROC {auroc:.2f}\n({auroc_verdict(auroc)})", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    if image is not None and colour_range == "0-1":
        fig.colorbar(image, ax=list(axes.ravel()), fraction=0.025, pad=0.02,
                     label="D (0 = optical and SAR agree, 1 = disagree)")
    if colour_range == "map":
        title = f"{title}: " if title else ""
        title += "each map on its own colour range (not 0-1)"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_gates(info: dict, cloud_mask=None, axes=None, size: tuple[int, int] | None = None):
    """One DCHF's maps: D, the optical gate, the SAR gate, |G| and the cell reliability (+ the mask), 2 x 3.

    ``info`` is the dict a ``DCHF`` returned; gates and ``|G|`` are averaged over
    channels (first image of the batch); gates, D and reliability share the 0-1 colour scale. Maps are shown on ``size`` (default: the
    cloud mask's grid, else the stage's own).
    """
    mask = None if cloud_mask is None else _as_numpy(cloud_mask).reshape(_as_numpy(cloud_mask).shape[-2:])
    size = size or (mask.shape if mask is not None else tuple(info["discrepancy"].shape[-2:]))
    panels = [
        ("D", info["discrepancy"], "bilinear", (0, 1)),
        ("optical gate", info["gates"]["optical"].mean(1, keepdim=True), "bilinear", (0, 1)),
        ("SAR gate", info["gates"]["sar"].mean(1, keepdim=True), "bilinear", (0, 1)),
        ("|G|", info["global_context"].abs().mean(1, keepdim=True), "nearest", (None, None)),
        ("cell reliability", info["cell_reliability"], "nearest", (0, 1)),
    ]
    if mask is not None:
        panels.append(("true cloud mask", torch.as_tensor(mask)[None, None], "nearest", (0, 1)))
    if axes is None:
        _, axes = plt.subplots(2, 3, figsize=(8, 4.6), layout="constrained")
    axes = list(np.ravel(axes))
    for ax, (title, values, mode, (low, high)) in zip(axes, panels):
        shown = ax.imshow(upsample_map(values, size, mode), cmap="gray" if "mask" in title else "viridis",
                          vmin=low, vmax=high)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        if "mask" not in title:
            ax.figure.colorbar(shown, ax=ax, shrink=0.8,
                               label="|G| (feature units)" if title == "|G|" else "value (0–1)")
    return axes[0].figure


def plot_cost_curves(tokens: Sequence[float], series: dict[str, Sequence[float]], ylabel: str, ax=None,
                     title: str | None = None):
    """Log-log cost curves: ``series`` name -> values, against the number of tokens."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    for name, values in series.items():
        ax.loglog(tokens, values, "o-", label=name)
    ax.set_xticks(list(tokens))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticklabels([f"{round(count ** 0.5)}²" for count in tokens])
    ax.set_xlabel("token map (H x W)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", lw=0.3)
    return ax.figure
