"""The attribution explorer of notebook 07: pick a model, a class, a region, a method and a baseline.

The idea in plain words: one control per question a reader asks of a fusion model —
*which model*, *which class*, *where* (all pixels, the cloudy ones, the clear ones, one
pixel), *how* (Integrated Gradients or a cheaper method) and *compared with what* (the
baseline) — and one figure that answers it: the optical and SAR attribution maps side by
side with the cloud edge, and the four group shares (optical/SAR × in cloud/clear, exact
Shapley values).

``attribution_view`` is the callback: a plain function, tested without a browser.
``attribution_widget`` wires it to ipywidgets with ``interactive_output``, so the figure is
drawn when the widget is first shown, not only after a control moves. The layout is
edc_lab's; the attributions are captum's (see ``edc_lab.explain``).
"""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import torch
from torch import nn

from edc_lab.explain.checks import binary_mask
from edc_lab.explain.groups import modality_shares
from edc_lab.explain.pixels import PIXEL_METHODS, pixel_attributions
from edc_lab.explain.plots import plot_attribution_maps, plot_modality_shares

__all__ = ["REGION_CHOICES", "region_for", "attribution_view", "attribution_widget"]

#: what the region control offers
REGION_CHOICES = ("all", "cloudy", "clear", "pixel")


def region_for(choice: str, cloud_mask: torch.Tensor, pixel: tuple[int, int] = (0, 0)):
    """The region of ``RegionScore`` for a control value.

    ``choice``: ``"all"`` -> ``None`` (every pixel); ``"cloudy"`` / ``"clear"`` -> the boolean mask
    ``(H, W)`` of the cloudy / clear pixels of ``cloud_mask (H, W)`` (boolean or 0/1); ``"pixel"`` -> ``pixel``
    ``(row, col)``. An empty cloudy or clear region raises ``ValueError`` (nothing to explain).
    """
    if choice not in REGION_CHOICES:
        raise ValueError(f"region: expected one of {REGION_CHOICES}, found {choice!r}")
    if choice == "all":
        return None
    if choice == "pixel":
        return tuple(int(v) for v in pixel)
    cloudy = binary_mask("region_for", "cloud_mask", cloud_mask)
    region = cloudy if choice == "cloudy" else ~cloudy
    if not region.any():
        raise ValueError(f"region {choice!r}: this scene has no {choice} pixel (cloud cover {cloudy.float().mean():.2f})")
    return region


def attribution_view(
    models: Mapping[str, nn.Module],
    sample: Mapping[str, torch.Tensor],
    model: str,
    target: int,
    region: str = "cloudy",
    method: str = "integrated_gradients",
    baseline: str = "blur",
    row: int = 0,
    col: int = 0,
    n_steps: int = 32,
    class_names: tuple[str, ...] | None = None,
    show: bool = True,
):
    """Explain ``models[model]`` on one sample; draw the maps and the group shares.

    Args:
        models: ``{name: model in eval mode}``.
        sample: a torch sample (``optical (C_o, H, W)``, ``sar (C_s, H, W)``, ``cloud_mask (H, W)``,
            and ``optical_clear`` for the ``"cloudfree"`` baseline), as ``SyntheticScenes`` gives.
        model, target, region, method, baseline: the controls; ``row, col``: the pixel of
            ``region="pixel"``; ``n_steps``: IG / path steps.
        class_names: for the titles; show: ``plt.show()`` the figures (False in tests).

    Returns ``(maps figure, shares figure, shares.summary())``.
    """
    if model not in models:
        raise ValueError(f"model: expected one of {tuple(models)}, found {model!r}")
    network = models[model]
    optical, sar = sample["optical"][None], sample["sar"][None]
    cloud_mask = sample["cloud_mask"]
    optical_clear = sample.get("optical_clear")
    optical_clear = optical_clear[None] if optical_clear is not None else None
    chosen = region_for(region, cloud_mask, (row, col))
    common = dict(baseline=baseline, optical_clear=optical_clear)
    attributions = pixel_attributions(network, optical, sar, target, chosen, method=method, n_steps=n_steps,
                                      internal_batch_size=n_steps, **common)
    shares = modality_shares(network, optical, sar, cloud_mask, target, chosen, method="shapley", **common)
    name = class_names[target] if class_names else f"class {target}"
    outline = None
    if region in ("cloudy", "clear"):
        outline = chosen
    elif region == "pixel":
        outline = torch.zeros_like(cloud_mask, dtype=torch.bool)
        outline[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = True
    maps = plot_attribution_maps(
        attributions, cloud_mask, region=outline,
        title=f"{model}: why '{name}' on the {region} pixels? {method.replace('_', ' ')}, {baseline} baseline",
    )
    summary = shares.summary()
    bars = plot_modality_shares(
        shares,
        title=f"{model}, '{name}' on the {region} pixels: exact Shapley values ({baseline} baseline); "
              f"SAR share of the decision {summary['sar_share']:.2f}",
    )
    if show:
        plt.show()
    return maps, bars, summary


def attribution_widget(models: Mapping[str, nn.Module], sample: Mapping[str, torch.Tensor],
                       class_names: tuple[str, ...], target: int = 0, n_steps: int = 32):
    """ipywidgets controls (model, class, region, pixel, method, baseline) over ``attribution_view``.

    Returns the widget box; the figure is drawn at once (``interactive_output`` calls the callback
    on creation) and again whenever a control changes.
    """
    import ipywidgets as widgets

    height, width = sample["cloud_mask"].shape[-2:]
    baselines = ["blur", "mean", "zero"] + (["cloudfree"] if "optical_clear" in sample else [])
    controls = {
        "model": widgets.Dropdown(options=list(models), description="model"),
        "target": widgets.Dropdown(options=[(n, i) for i, n in enumerate(class_names)], value=target,
                                   description="class"),
        "region": widgets.ToggleButtons(options=list(REGION_CHOICES), value="cloudy", description="region"),
        "row": widgets.IntSlider(value=height // 2, min=0, max=height - 1, description="pixel row"),
        "col": widgets.IntSlider(value=width // 2, min=0, max=width - 1, description="pixel col"),
        "method": widgets.Dropdown(options=list(PIXEL_METHODS), value="integrated_gradients", description="method"),
        "baseline": widgets.Dropdown(options=baselines, value="blur", description="baseline"),
    }

    def update(**values):
        try:
            attribution_view(models, sample, n_steps=n_steps, class_names=class_names, **values)
        except ValueError as error:  # e.g. a class absent from the region: say so in the output
            print(f"cannot explain this choice: {error}")

    output = widgets.interactive_output(update, controls)
    rows = [widgets.HBox([controls["model"], controls["target"], controls["method"], controls["baseline"]]),
            controls["region"], widgets.HBox([controls["row"], controls["col"]])]
    return widgets.VBox(rows + [output])
