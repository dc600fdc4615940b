"""The widgets of notebooks 01–03: one control panel per lesson, one figure per choice.

The idea in plain words: a widget is a plain function of its controls that returns a
matplotlib figure (the *view*), and a thin ipywidgets wrapper that calls it whenever a
control moves. The views are tested without a browser (``tests/test_widgets.py``); the
wrappers use ``ipywidgets.interactive_output``, which calls the view once when the widget
is created, so the figure is there on first display, not only after a slider moves.

* ``cloud_view`` (01): a synthetic scene with the requested cloud cover, core thickness,
  haze and seed (``plot_sample``'s six panels);
* ``carrier_view`` (02): one carrier-token block with a chosen window size and number of
  carrier tokens per window side; what the carrier of one chosen token sees in the global
  and in the local step;
* ``discrepancy_view`` (03): the discrepancy map ``D`` of a chosen model and stage on a
  synthetic scene of a chosen cloud cover, beside the true cloud mask, with its AUROC; its colours
  on D's whole 0–1 range or on the map's own range (an untrained ``D`` stays near 0.5).

A bad control value raises one ``ValueError`` that names the control. Whose idea: the
blocks are the paper's (EDC, arXiv 2603.20811; carrier tokens from FasterViT, arXiv
2306.06189); the widgets are edc_lab's teaching material.
"""

from __future__ import annotations

from typing import Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

__all__ = [
    "CARRIER_WINDOWS",
    "CARRIER_COUNTS",
    "cloud_view",
    "cloud_widget",
    "carrier_maps",
    "carrier_view",
    "carrier_widget",
    "discrepancy_for",
    "discrepancy_view",
    "discrepancy_widget",
]

#: window sizes (tokens per side) and carriers per window side that the carrier widget offers
CARRIER_WINDOWS = (4, 8, 16)
CARRIER_COUNTS = (1, 2, 4)


def _unit(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], found {value!r}")
    return float(value)


def _count(name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------- 01: clouds


def cloud_view(cloud_cover: float = 0.6, thickness: float = 0.8, haze: float = 0.3, seed: int = 0,
               size: int = 128) -> Figure:
    """Synthetic scene ``seed`` (``size`` x ``size`` px) with the requested clouds, as ``plot_sample`` draws it.

    Args:
        cloud_cover: fraction of cloudy pixels, in [0, 1].
        thickness: opacity of the cloud cores, in (0, 1].
        haze: opacity of the scene-wide haze, in [0, 1].
        seed: which scene (non-negative integer).

    Returns the figure; its title gives the requested and the achieved cover.
    """
    from edc_lab.data.synthetic import synthetic_scene
    from edc_lab.viz.plots import plot_sample

    cloud_cover, haze = _unit("cloud_cover", cloud_cover), _unit("haze", haze)
    if _unit("thickness", thickness) == 0.0:
        raise ValueError("thickness: expected a number in (0, 1], found 0.0 (a cloud of opacity 0 is no cloud)")
    seed = _count("seed", seed)
    scene = synthetic_scene(seed, size=_count("size", size, 16), cloud_cover=cloud_cover, thickness=float(thickness),
                            haze=haze)
    figure = plot_sample(scene)
    figure.suptitle(f"scene {seed}: cover {cloud_cover:.2f} requested, {float(scene['cloud_mask'].mean()):.2f} "
                    f"achieved; thickness {float(thickness):.1f}, haze {haze:.1f}", fontsize=10)
    return figure


def _wrap(view: Callable[..., Figure], controls: dict, rows: list):
    """``interactive_output`` over ``view``: draws at once and on every change; a bad choice is printed."""
    import ipywidgets as widgets

    def update(**values):
        try:
            view(**values)
        except ValueError as error:
            print(f"cannot draw this choice: {error}")
            return
        plt.show()

    output = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox(row) for row in rows] + [output])


def cloud_widget(size: int = 128, cloud_cover: float = 0.6, thickness: float = 0.8, haze: float = 0.3,
                 seed: int = 4):
    """Sliders (cloud cover, thickness, haze, seed) over ``cloud_view``; the figure is drawn on creation."""
    import ipywidgets as widgets

    controls = {
        "cloud_cover": widgets.FloatSlider(value=cloud_cover, min=0.0, max=1.0, step=0.05, description="cloud cover"),
        "thickness": widgets.FloatSlider(value=thickness, min=0.1, max=1.0, step=0.1, description="thickness"),
        "haze": widgets.FloatSlider(value=haze, min=0.0, max=0.8, step=0.1, description="haze"),
        "seed": widgets.IntSlider(value=seed, min=0, max=20, description="seed"),
    }

    def view(**values):
        return cloud_view(size=size, **values)

    values = list(controls.values())
    return _wrap(view, controls, [values[:2], values[2:]])


# ---------------------------------------------------------------------------------- 02: carrier tokens


def carrier_maps(tokens: torch.Tensor, window: int = 8, carriers: int = 2, token: tuple[int, int] = (12, 20),
                 dim_heads: int = 2, seed: int = 0) -> dict:
    """Run one (untrained, seeded) carrier-token block and say where the carrier of ``token`` looks.

    Args:
        tokens: ``(1, C, H, W)`` feature map (e.g. ``edc_tiny``'s optical stem output, stride 4).
        window: window side w in tokens (the block pads the map to a multiple of it).
        carriers: c, carrier tokens per window side (must divide ``window``).
        token: ``(row, col)`` of the token on the ``H x W`` map whose carrier is shown.
        dim_heads: attention heads (must divide C); seed: the block's initial weights.

    Returns ``carrier_attention_maps``'s dict plus ``"carrier"`` (row, col) of that carrier on the
    carrier map, ``"carrier_shape"`` and ``"cell"`` (tokens per carrier cell side).
    """
    from edc_lab.models.carrier_tokens import CarrierTokenAttention, carrier_attention_maps

    window = _count("window", window, 1)
    carriers = _count("carriers", carriers, 1)
    if window % carriers:
        raise ValueError(f"carriers: expected a divisor of the window ({window}), found {carriers}")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4 or tokens.shape[0] != 1:
        raise ValueError(f"tokens: expected a tensor (1, C, H, W), found {getattr(tokens, 'shape', type(tokens))}")
    height, width = tokens.shape[-2:]
    row, col = (_count("token", value) for value in token)
    if row >= height or col >= width:
        raise ValueError(f"token: expected (row, col) inside the {height} x {width} map, found {token}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        block = CarrierTokenAttention(dim=tokens.shape[1], num_heads=dim_heads, window=window, carriers=carriers,
                                      mlp_ratio=2.0).eval()
    block.keep_attention = True
    with torch.no_grad():
        _, carrier_map = block(tokens)
    cell = window // carriers
    carrier = (row // cell, col // cell)
    maps = carrier_attention_maps(block, carrier)
    maps.update(carrier=carrier, carrier_shape=tuple(carrier_map.shape[-2:]), cell=cell)
    return maps


def carrier_view(optical, tokens: torch.Tensor, window: int = 8, carriers: int = 2, row: int = 12, col: int = 20,
                 stride: int = 4) -> Figure:
    """What the carrier of token ``(row, col)`` sees, for a block with windows of ``window`` tokens and
    ``carriers`` x ``carriers`` carriers per window, on the image ``optical (4, H, W)`` whose stride-``stride``
    feature map is ``tokens (1, C, H/stride, W/stride)``. The chosen token is marked with a cyan cross.

    Returns the figure (three panels: windows and the carrier's cell, global attention, local attention).
    """
    from edc_lab.viz.model_plots import plot_carrier_attention

    maps = carrier_maps(tokens, window, carriers, (row, col))
    rows_c, cols_c = maps["carrier_shape"]
    figure = plot_carrier_attention(optical, maps, stride=stride, carrier_index=maps["carrier"], window=window,
                                    carriers=carriers)
    figure.axes[0].plot([col * stride + stride / 2 - 0.5], [row * stride + stride / 2 - 0.5], "x", color="cyan",
                        markersize=9, markeredgewidth=2)
    figure.suptitle(f"window {window}x{window} tokens, {carriers}x{carriers} carrier(s) per window "
                    f"({rows_c}x{cols_c} in all); token ({row}, {col}) -> carrier {maps['carrier']}", fontsize=10)
    return figure


def carrier_widget(optical, tokens: torch.Tensor, stride: int = 4, window: int = 8, carriers: int = 2,
                   row: int = 12, col: int = 20):
    """Sliders for the token, dropdowns for the window and the carriers, over ``carrier_view``."""
    import ipywidgets as widgets

    height, width = tokens.shape[-2:]
    controls = {
        "row": widgets.IntSlider(value=row, min=0, max=height - 1, description="token row"),
        "col": widgets.IntSlider(value=col, min=0, max=width - 1, description="token col"),
        "window": widgets.Dropdown(options=list(CARRIER_WINDOWS), value=window, description="window w"),
        "carriers": widgets.Dropdown(options=list(CARRIER_COUNTS), value=carriers, description="carriers c"),
    }

    def view(**values):
        return carrier_view(optical, tokens, stride=stride, **values)

    values = list(controls.values())
    return _wrap(view, controls, [values[:2], values[2:]])


# ------------------------------------------------------------------------------------ 03: discrepancy


def discrepancy_for(models: Mapping[str, nn.Module], model: str = "untrained", seed: int = 0, cover: float = 0.5,
                    stage: int = 1, size: int = 128) -> tuple[dict, torch.Tensor, float]:
    """Synthetic scene ``seed`` with ``cover`` cloud through ``models[model]``: (torch sample, D of ``stage``
    ``(1, 1, h, w)``, AUROC of that D against the true cloud mask)."""
    from edc_lab.data.sample import to_torch
    from edc_lab.data.synthetic import synthetic_scene
    from edc_lab.models.discrepancy import discrepancy_auroc

    if model not in models:
        raise ValueError(f"model: expected one of {tuple(models)}, found {model!r}")
    cover = _unit("cover", cover)
    if cover in (0.0, 1.0):
        raise ValueError(f"cover: expected a number strictly between 0 and 1 (the AUROC needs cloudy and clear "
                         f"pixels), found {cover}")
    if isinstance(stage, bool) or stage not in (1, 2, 3, 4):
        raise ValueError(f"stage: expected 1, 2, 3 or 4, found {stage!r}")
    sample = to_torch(synthetic_scene(_count("seed", seed), size=_count("size", size, 32), cloud_cover=cover))
    network = models[model]
    was_training = network.training
    network.eval()
    with torch.no_grad():
        outputs = network(sample["optical"][None], sample["sar"][None])
    network.train(was_training)
    if not outputs.get("discrepancy"):
        raise ValueError(f"model: {model!r} has no discrepancy maps")
    discrepancy = outputs["discrepancy"][stage - 1]
    return sample, discrepancy, discrepancy_auroc(discrepancy, sample["cloud_mask"][None])


def discrepancy_view(models: Mapping[str, nn.Module], model: str = "untrained", seed: int = 0, cover: float = 0.5,
                     stage: int = 1, size: int = 128, colour_range: str = "0-1") -> Figure:
    """Optical, SAR, ``D`` of ``stage`` (on the image grid) and the true cloud mask, for ``models[model]`` on
    synthetic scene ``seed`` with ``cover`` cloud; the title gives the AUROC. ``colour_range``: ``"0-1"``
    (colourbar 0–1) or ``"map"`` (the map's own range, said on the colourbar), see
    ``edc_lab.viz.model_plots.discrepancy_colours``."""
    from edc_lab.auroc import auroc_verdict
    from edc_lab.viz.model_plots import COLOUR_RANGES, plot_discrepancy_row

    if colour_range not in COLOUR_RANGES:
        raise ValueError(f"colour_range: expected one of {COLOUR_RANGES}, found {colour_range!r}")
    sample, discrepancy, auroc = discrepancy_for(models, model, seed, cover, stage, size)
    figure = plot_discrepancy_row(sample["optical"], sample["sar"], discrepancy, sample["cloud_mask"],
                                  title="D, stage {} ({}x{} cells)".format(stage, *discrepancy.shape[-2:]),
                                  colour_range=colour_range)
    verdict = auroc_verdict(auroc)
    figure.suptitle(f"{model}, scene {seed}, cover {cover:.1f}: AUROC of D against the mask {auroc:.2f} ({verdict})",
                    fontsize=10)
    return figure


def discrepancy_widget(models: Mapping[str, nn.Module], model: str = "untrained", seed: int = 0, cover: float = 0.5,
                       stage: int = 1, size: int = 128, colour_range: str = "0-1"):
    """Model and stage dropdowns, seed and cover sliders and a colour-range dropdown (0–1 or the map's own
    range) over ``discrepancy_view``; drawn on creation."""
    import ipywidgets as widgets

    controls = {
        "model": widgets.Dropdown(options=list(models), value=model, description="model"),
        "seed": widgets.IntSlider(value=seed, min=0, max=20, description="scene seed"),
        "cover": widgets.FloatSlider(value=cover, min=0.1, max=0.9, step=0.1, description="cloud cover"),
        "stage": widgets.Dropdown(options=[1, 2, 3, 4], value=stage, description="stage"),
        "colour_range": widgets.Dropdown(options=[("0–1", "0-1"), ("this map's range", "map")], value=colour_range,
                                         description="D colours"),
    }

    def view(**values):
        return discrepancy_view(models, size=size, **values)

    values = list(controls.values())
    return _wrap(view, controls, [values[:2], values[2:]])
