"""The prediction explorer of notebook 06: a trained model on a held-out scene, what it got wrong, and its D.

The idea in plain words
-----------------------
A test score such as "75 % mIoU on cloudy pixels" is an average over thousands of pixels and
dozens of scenes. To see *where* a model fails, look at one scene: the cloudy optical input, the
true labels, the predicted classes, the pixels it got wrong (with the cloud mask's outline, so
errors under clouds and in clear sky can be told apart) and the discrepancy map ``D`` of one
encoder stage, which is what DCHF's reliability ``R = 1 − D`` is made of.

* ``held_out_scene`` gives scene ``index`` of the held-out test split (``build_dataset("synthetic",
  split="test")``, never seen in training) under a chosen cloud cover; the ground, the SAR and
  the labels stay the same whatever the cover, only the clouds change;
* ``prediction_maps`` runs a model on it and returns the predicted classes, the error mask,
  the share of wrong pixels under the clouds and in clear sky and ``D`` of one stage with its
  AUROC against the cloud mask (per pixel, ``edc_lab.models.discrepancy.discrepancy_auroc``);
* ``plot_prediction`` draws them, two rows of three panels;
* ``prediction_view`` is the widget's callback (model, scene, cover, stage → figure), and
  ``prediction_widget`` wires it to ipywidgets with ``interactive_output``, which draws the
  figure as soon as the widget is shown, and again after every change.

A bad control value raises one ``ValueError`` naming the control. Whose idea: the explorer is
edc_lab's teaching material; the model and its ``D`` are our reading of EDC (arXiv 2603.20811).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from edc_lab.auroc import auroc_verdict
from edc_lab.data.sample import IGNORE_INDEX, WHU_CLASSES, WHU_COLORS
from edc_lab.models.contract import call_model
from edc_lab.viz.model_plots import upsample_map
from edc_lab.viz.plots import label_rgb, legend_handles, rgb

__all__ = [
    "MIN_DPI",
    "TEST_SCENES",
    "STAGES",
    "held_out_scene",
    "prediction_maps",
    "plot_prediction",
    "prediction_view",
    "prediction_widget",
]

#: the dpi of the figure (readable at 100 % zoom)
MIN_DPI = 100

#: how many held-out scenes the widget offers (scene 0 .. TEST_SCENES - 1)
TEST_SCENES = 32

#: the encoder stages whose ``D`` can be shown
STAGES = (1, 2, 3, 4)

#: colours of the error map: correct, wrong, not labelled
_ERROR_COLORS = ("#d9d9d9", "#d7191c", "#ffffff")


# --------------------------------------------------------------------------- checks


def _fraction(name: str, value, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number in [0, 1{')' if upper_open else ']'}, found {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0 or (upper_open and value == 1.0):
        raise ValueError(f"{name}: expected a number in [0, 1{')' if upper_open else ']'}, found {value!r}")
    return value


def _integer(name: str, value, low: int, high: int | None = None) -> int:
    in_range = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if in_range and high is not None:
        in_range = value <= high
    if not in_range:
        wanted = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name}: expected {wanted}, found {value!r}")
    return int(value)


# --------------------------------------------------------------------------- the scene and the maps


def held_out_scene(index: int = 0, cloud_cover: float = 0.5, size: int = 96) -> dict[str, torch.Tensor]:
    """Scene ``index`` of the held-out synthetic test split, ``size`` x ``size`` px, under ``cloud_cover``.

    The same scene as item ``index`` of ``build_dataset("synthetic", split="test", size=size,
    cloud_cover=cloud_cover)``: never in a training or validation split, and only its clouds
    change with ``cloud_cover`` (in [0, 1); the realistic cloud model). Returns the torch sample
    (``optical``, ``optical_clear``, ``sar``, ``label``, ``cloud_mask``, ...).
    """
    from edc_lab.data.datasets import build_dataset

    index = _integer("scene", index, 0)
    cloud_cover = _fraction("cloud_cover", cloud_cover, upper_open=True)
    size = _integer("size", size, 32)
    return build_dataset("synthetic", split="test", size=size, count=index + 1, cloud_cover=cloud_cover)[index]


def prediction_maps(model: nn.Module, sample: Mapping[str, torch.Tensor], stage: int = 1) -> dict:
    """Run ``model`` (eval mode, no gradients) on a torch ``sample`` and take its prediction apart.

    Returns:
        ``prediction`` ``(H, W)`` int64, the arg-max class; ``wrong`` ``(H, W)`` bool, True where a
        labelled pixel is misclassified (pixels labelled ``IGNORE_INDEX`` are never wrong);
        ``labelled`` ``(H, W)`` bool; ``wrong_cloudy`` and ``wrong_clear``, the share of wrong pixels
        among the labelled cloudy / clear ones (nan for an empty region); ``discrepancy`` the
        ``(1, 1, h, w)`` map ``D`` of ``stage`` (None for a model without one) and ``auroc`` its
        per-pixel AUROC against the cloud mask (nan without D or when the scene is all clear or
        all cloud); ``stage``.

    A model that reads the true cloud mask (the ``"oracle"`` reliability) is given it, as in
    training and evaluation (``edc_lab.models.contract.call_model``).
    """
    from edc_lab.models.discrepancy import discrepancy_auroc

    stage = _integer("stage", stage, 1, len(STAGES))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = call_model(model, sample["optical"][None], sample["sar"][None], sample["cloud_mask"][None])
    finally:
        model.train(was_training)
    prediction = outputs["logits"][0].argmax(dim=0)
    label = sample["label"]
    labelled = label != IGNORE_INDEX
    wrong = (prediction != label) & labelled
    cloudy = sample["cloud_mask"] > 0.5

    def share(region: torch.Tensor) -> float:
        region = region & labelled
        return float(wrong[region].float().mean()) if bool(region.any()) else math.nan

    maps = outputs.get("discrepancy") or []
    discrepancy = maps[stage - 1] if len(maps) >= stage and maps[stage - 1] is not None else None
    auroc = math.nan
    if discrepancy is not None and 0 < int(cloudy.sum()) < cloudy.numel():
        auroc = discrepancy_auroc(discrepancy, sample["cloud_mask"][None])
    return dict(prediction=prediction, wrong=wrong, labelled=labelled, wrong_cloudy=share(cloudy),
                wrong_clear=share(~cloudy), discrepancy=discrepancy, auroc=auroc, stage=stage)


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def plot_prediction(sample: Mapping[str, torch.Tensor], maps: Mapping, class_names=WHU_CLASSES,
                    class_colors=WHU_COLORS, title: str = "") -> Figure:
    """Two rows of three panels: what a model predicts on one scene and where it is wrong.

    Row 1: the cloudy optical input (the series' stretch, from its clear pixels), the true labels,
    the predicted classes (one class legend below). Row 2: the cloud mask, the error map (wrong
    pixels red, correct ones grey, unlabelled white; the cloud mask's outline in blue) titled with
    the share of wrong pixels under the clouds and in clear sky, and ``D`` of ``maps["stage"]``
    (each cell a block, colour scale 0-1) titled with its AUROC. ``maps`` is ``prediction_maps``'s.
    Every panel shows pixels as blocks (``interpolation="nearest"``: no smoothing between them, and a
    small PNG). Returns the figure (dpi ``MIN_DPI``, 9.6 x 6.6 in).
    """
    mask = sample["cloud_mask"].detach().cpu().numpy()
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 6.6), dpi=MIN_DPI, layout="constrained")
    axes[0, 0].imshow(rgb(sample["optical"], cloud_mask=mask), interpolation="nearest")
    axes[0, 0].set_title("optical input (true colour)", fontsize=10)
    axes[0, 1].imshow(label_rgb(sample["label"], class_colors), interpolation="nearest")
    axes[0, 1].set_title("true labels", fontsize=10)
    axes[0, 2].imshow(label_rgb(maps["prediction"], class_colors), interpolation="nearest")
    axes[0, 2].set_title("predicted classes", fontsize=10)
    axes[1, 0].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1, 0].set_title(f"cloud mask (white = cloud, {mask.mean():.0%})", fontsize=10)

    errors = np.where(maps["labelled"].numpy(), maps["wrong"].numpy().astype(int), 2)
    axes[1, 1].imshow(errors, cmap=ListedColormap(_ERROR_COLORS), vmin=-0.5, vmax=2.5, interpolation="nearest")
    if 0 < mask.mean() < 1:
        axes[1, 1].contour(mask, levels=[0.5], colors="#2b83ba", linewidths=0.8)
    regions = (("wrong_cloudy", "cloudy"), ("wrong_clear", "clear"))
    shares = [f"{_percent(maps[key])} of {region}" for key, region in regions if not math.isnan(maps[key])]
    axes[1, 1].set_title("wrong: " + ",\n".join(shares) + " pixels", fontsize=10)
    axes[1, 1].legend(handles=[Patch(facecolor=_ERROR_COLORS[1], label="wrong"),
                               Patch(facecolor=_ERROR_COLORS[0], label="correct"),
                               Patch(facecolor="none", edgecolor="#2b83ba", label="cloud edge")],
                      loc="upper center", bbox_to_anchor=(0.5, -0.02), ncols=3, fontsize=8, frameon=False)

    stage = maps["stage"]
    if maps["discrepancy"] is None:
        axes[1, 2].text(0.5, 0.5, "this model has\nno discrepancy map", ha="center", va="center", fontsize=10)
        axes[1, 2].set_title(f"D, stage {stage}", fontsize=10)
    else:
        shown = axes[1, 2].imshow(upsample_map(maps["discrepancy"], mask.shape, "nearest"), cmap="magma",
                                  vmin=0, vmax=1, interpolation="nearest")
        auroc = maps["auroc"]
        verdict = ("AUROC undefined (one class)" if math.isnan(auroc) else
                   f"AUROC {auroc:.2f} ({auroc_verdict(auroc)})")
        cells = "x".join(str(n) for n in maps["discrepancy"].shape[-2:])
        axes[1, 2].set_title(f"D, stage {stage} ({cells} cells):\n{verdict}", fontsize=10)
        bar = fig.colorbar(shown, ax=axes[1, 2], fraction=0.046, pad=0.03)
        bar.set_label("D (0 = optical and SAR agree, 1 = disagree)", fontsize=8)
        bar.ax.tick_params(labelsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.legend(handles=legend_handles(class_names, class_colors), loc="outside lower center", ncols=len(class_names),
               fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- the widget


def _controls(models: Mapping[str, nn.Module], model, scene, cloud_cover, stage) -> tuple[str, int, float, int]:
    """The checked control values (``model`` None: the first of ``models``), or one ValueError naming the control."""
    if not models:
        raise ValueError("models: expected at least one named model, found none")
    model = next(iter(models)) if model is None else model
    if model not in models:
        raise ValueError(f"model: expected one of {tuple(models)}, found {model!r}")
    return (model, _integer("scene", scene, 0, TEST_SCENES - 1), _fraction("cloud_cover", cloud_cover, upper_open=True),
            _integer("stage", stage, 1, len(STAGES)))


def prediction_view(models: Mapping[str, nn.Module], model: str | None = None, scene: int = 0,
                    cloud_cover: float = 0.5, stage: int = 1, size: int = 96) -> Figure:
    """The callback of notebook 06's widget: ``models[model]`` on held-out scene ``scene`` under ``cloud_cover``.

    ``models`` maps names to trained models; ``model`` picks one (default: the first). Returns the
    figure of ``plot_prediction`` for ``D`` of ``stage``. Raises ValueError naming the control for
    an unknown model, a scene outside 0..``TEST_SCENES`` - 1, a cover outside [0, 1), a stage
    outside 1..4 or a size below 32.
    """
    model, scene, cloud_cover, stage = _controls(models, model, scene, cloud_cover, stage)
    sample = held_out_scene(scene, cloud_cover, size)
    maps = prediction_maps(models[model], sample, stage)
    return plot_prediction(sample, maps, title=f"{model}: held-out scene {scene}, cloud cover {float(cloud_cover):.1f}")


def prediction_widget(models: Mapping[str, nn.Module], model: str | None = None, scene: int = 0,
                      cloud_cover: float = 0.5, stage: int = 1, size: int = 96):
    """A model menu, scene and cloud-cover sliders and a stage menu over ``prediction_view``.

    The figure is drawn when the widget is first shown (``interactive_output`` calls the
    callback at once) and again whenever a control changes; a choice the view refuses is
    printed instead of a figure. Returns the widget box.
    """
    import ipywidgets as widgets

    model, scene, cloud_cover, stage = _controls(models, model, scene, cloud_cover, stage)  # bad defaults: here
    controls = {
        "model": widgets.Dropdown(options=list(models), value=model, description="model"),
        "scene": widgets.IntSlider(value=scene, min=0, max=TEST_SCENES - 1, description="test scene"),
        "cloud_cover": widgets.FloatSlider(value=cloud_cover, min=0.0, max=0.9, step=0.1, description="cloud cover"),
        "stage": widgets.Dropdown(options=list(STAGES), value=stage, description="D stage"),
    }

    def update(**values):
        try:
            prediction_view(models, size=size, **values)
        except ValueError as error:
            print(f"cannot draw this choice: {error}")
            return
        plt.show()

    output = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox([controls["model"], controls["stage"]]),
                         widgets.HBox([controls["scene"], controls["cloud_cover"]]), output])
