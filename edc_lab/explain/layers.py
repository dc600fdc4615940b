"""Layer view: how much each encoder stage's fused features (and DCHF's gates) contribute.

The idea in plain words: pixel attributions say *where* in the images the
evidence was; a layer attribution says *at which depth* of the network it was
used. EDC's segmentation head reads the fused, cross-modal features
``X_1..X_4`` (strides 4, 8, 16, 32), one per encoder stage, each through its own
1x1 *lateral* convolution of the FPN. The input of lateral convolution ``k`` is
therefore exactly "what stage k hands to the decoder" (for EDC: ``X_k`` after
DCHF; for the single-stream baselines: that stream's ``F_k``), and we attribute
the score ``F`` (``RegionScore``) to these four tensors:

* **Layer Integrated Gradients** (the layer form of Sundararajan et al., ICML
  2017, https://arxiv.org/abs/1703.01365): the four stage tensors travel
  together on the straight path from their values for the baseline input to
  their values for the real input; the attributions of the four stages add up
  to ``F(x) - F(baseline)`` (up to captum's convergence ``delta``), so the
  per-stage totals are a split of the same difference as the pixel view. (The
  four laterals do not feed each other, as captum's multi-layer mode requires.)
* **Layer Grad-CAM** (Selvaraju et al., ICCV 2017): the channel-averaged
  gradient times the activation, summed over channels, one map per stage; cheap,
  not additive (its totals do not add up to anything).

**Gates**: each DCHF gate convolution (``optical_gate``, ``sar_gate``; its output
is the gate's logit before the sigmoid) is attributed on its own (gates of
successive stages depend on each other, so captum cannot take them in one
call): its total is ``F(x) - F(x with that gate's logits moved to their baseline
values)``. A gate whose output no head reads (e.g. stage 4's optical gate, which
feeds only the cloud-removal head) gets exactly 0.

Modules are found **by name**, so the code survives changes inside DCHF: stage
layers are the modules named ``segmentation_head ... lateral.<k>``; gates are the
outermost modules under ``fusions.<k>`` whose own name contains ``gate``.
Models without DCHF simply have no gates. Pass ``stage_layers`` to choose other
modules. The implementation is captum's (Kokhlikyan et al., 2020,
https://captum.ai) ``LayerIntegratedGradients`` and ``LayerGradCam``; the choice
of modules and the name-based lookup are edc_lab's.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import torch
from captum.attr import LayerGradCam, LayerIntegratedGradients
from torch import nn

from edc_lab.explain.baselines import BLUR_SIGMA, BaselineSpec
from edc_lab.explain.region import Region, explanation_inputs

__all__ = ["LAYER_METHODS", "LayerContributions", "find_stage_layers", "find_gate_layers", "layer_contributions"]

LAYER_METHODS = ("integrated_gradients", "gradcam")
_STAGE_PATTERN = re.compile(r"(?:^|\.)segmentation_head(?:\.[\w]+)*\.lateral\.(\d+)$")
_FUSION_PATTERN = re.compile(r"(?:^|\.)fusions\.(\d+)\.(?:[\w]+\.)*([\w]*gate[\w]*)$")


def find_stage_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{"stage1": module, ...}``: the module whose *input* is stage k's feature map handed to the
    segmentation head (the FPN lateral convolution ``k``). Raises ``ValueError`` if there is none."""
    found = {}
    for name, module in model.named_modules():
        match = _STAGE_PATTERN.search(name)
        if match:
            found[int(match.group(1))] = module
    if not found:
        raise ValueError(
            "find_stage_layers: found no module named 'segmentation_head....lateral.<k>' in "
            f"{type(model).__name__}; pass stage_layers={{'stage1': module, ...}} explicitly"
        )
    return {f"stage{index + 1}": found[index] for index in sorted(found)}


def find_gate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{"stage1.optical_gate": module, ...}``: DCHF gate modules, found by name (empty without DCHF)."""
    found: dict[str, nn.Module] = {}
    names: list[str] = []
    for name, module in model.named_modules():
        match = _FUSION_PATTERN.search(name)
        if match and not any(name.startswith(outer + ".") for outer in names):
            names.append(name)
            found[f"stage{int(match.group(1)) + 1}.{match.group(2)}"] = module
    return found


@dataclass
class LayerContributions:
    """Per-layer attributions of ``F`` (``RegionScore``).

    Attributes:
        totals: ``{layer: (B,)}``, the attribution summed over the layer's channels and pixels.
        maps: ``{layer: (B, h, w)}``, summed over channels, at the layer's own resolution.
        kinds: ``{layer: "stage" | "gate"}``.
        stage_delta: captum's convergence delta of the joint stage attribution, ``(B,)``
            (``None`` for Grad-CAM).
        score, baseline_score: ``F(x)`` and ``F(baseline)``, ``(B,)``.
    """

    totals: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    kinds: dict[str, str]
    stage_delta: torch.Tensor | None
    score: torch.Tensor
    baseline_score: torch.Tensor
    method: str
    baseline: str
    units: str
    gate_deltas: dict[str, torch.Tensor] = field(default_factory=dict)

    def stage_totals(self) -> dict[str, torch.Tensor]:
        return {name: total for name, total in self.totals.items() if self.kinds[name] == "stage"}

    def gate_totals(self) -> dict[str, torch.Tensor]:
        return {name: total for name, total in self.totals.items() if self.kinds[name] == "gate"}


def _single(attribution):
    """A layer attribution as one tensor (captum returns a 1-tuple for a layer with one tensor input)."""
    return attribution[0] if isinstance(attribution, (tuple, list)) else attribution


def layer_contributions(
    model: nn.Module,
    optical: torch.Tensor,
    sar: torch.Tensor,
    target: int,
    region: Region = None,
    *,
    method: str = "integrated_gradients",
    baseline: BaselineSpec = "blur",
    optical_clear: torch.Tensor | None = None,
    output: str = "logit",
    n_steps: int = 32,
    internal_batch_size: int | None = None,
    include_gates: bool = True,
    stage_layers: dict[str, nn.Module] | None = None,
    blur_sigma: float = BLUR_SIGMA,
) -> LayerContributions:
    """Attribute ``F`` to each stage's fused features (and each DCHF gate); see the module docstring.

    Args:
        model, optical, sar, target, region, output, baseline, optical_clear, blur_sigma:
            as for ``pixel_attributions``.
        method: ``"integrated_gradients"`` (captum ``LayerIntegratedGradients``; additive) or
            ``"gradcam"`` (captum ``LayerGradCam``; maps only, baseline unused).
        n_steps, internal_batch_size: Layer IG's integration points and chunk size.
        include_gates: also attribute to every DCHF gate (one Layer IG / Grad-CAM call each).
        stage_layers: ``{name: module}`` whose *inputs* are the stage features; default
            ``find_stage_layers(model)``.

    Every argument is checked before the first forward pass (``explanation_inputs``,
    ``edc_lab.explain.checks``).
    """
    if method not in LAYER_METHODS:
        raise ValueError(f"layer_contributions: method must be one of {LAYER_METHODS}, found {method!r}")
    score_fn, region_args, inputs, baselines = explanation_inputs(
        model, optical, sar, target, region, output, baseline, optical_clear, blur_sigma, owner="layer_contributions",
        settings=dict(n_steps=n_steps, internal_batch_size=internal_batch_size),
    )
    stages = stage_layers if stage_layers is not None else find_stage_layers(model)
    gates = find_gate_layers(model) if include_gates else {}
    totals, maps, kinds, gate_deltas = {}, {}, {}, {}
    stage_delta = None
    if method == "integrated_gradients":
        # the four stage inputs travel together: their totals split F(x) - F(baseline)
        with warnings.catch_warnings():  # "multiple layers": the laterals do not feed each other
            warnings.filterwarnings("ignore", message="Multiple layers provided")
            explainer = LayerIntegratedGradients(score_fn, list(stages.values()))
        attributions, stage_delta = explainer.attribute(
            inputs,
            baselines=baselines,
            additional_forward_args=region_args,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            attribute_to_layer_input=True,
            return_convergence_delta=True,
        )
        stage_attributions = dict(zip(stages, (_single(a) for a in attributions)))
        gate_attributions = {}
        for name, module in gates.items():  # gates of successive stages depend on each other: one call each
            attribution, gate_deltas[name] = LayerIntegratedGradients(score_fn, module).attribute(
                inputs,
                baselines=baselines,
                additional_forward_args=region_args,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=True,
                # a gate no head reads (stage 4's SAR/optical gate without its head) gets zero gradient
                grad_kwargs={"allow_unused": True, "materialize_grads": True},
            )
            gate_attributions[name] = _single(attribution)
    else:
        stage_attributions = {
            name: _single(
                LayerGradCam(score_fn, module).attribute(
                    inputs, additional_forward_args=region_args, attribute_to_layer_input=True
                )
            )
            for name, module in stages.items()
        }
        gate_attributions = {
            name: _single(
                LayerGradCam(score_fn, module).attribute(
                    inputs,
                    additional_forward_args=region_args,
                    grad_kwargs={"allow_unused": True, "materialize_grads": True},
                )
            )
            for name, module in gates.items()
        }
    for kind, group in (("stage", stage_attributions), ("gate", gate_attributions)):
        for name, attribution in group.items():
            attribution = attribution.detach()
            totals[name] = attribution.flatten(1).sum(1)
            maps[name] = attribution.sum(dim=1)
            kinds[name] = kind
    with torch.no_grad():
        score = score_fn(*inputs, *region_args)
        baseline_score = score_fn(*baselines, *region_args)
    return LayerContributions(
        totals=totals,
        maps=maps,
        kinds=kinds,
        stage_delta=None if stage_delta is None else stage_delta.detach(),
        score=score,
        baseline_score=baseline_score,
        method=method,
        baseline=baseline if isinstance(baseline, str) else "custom",
        units=output,
        gate_deltas={name: delta.detach() for name, delta in gate_deltas.items()},
    )
