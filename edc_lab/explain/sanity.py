"""Sanity checks for attributions: a completeness check that can fail, and model randomisation.

The idea in plain words: an attribution map is only worth reading if it could have come out
differently. Two checks ask that before any interpretation.

* **Completeness, checked independently.** Integrated Gradients promises (Sundararajan, Taly
  and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
  https://arxiv.org/abs/1703.01365) that the attributions add up to ``F(x) - F(b)``. Captum's
  *convergence delta* is ``sum(attributions) - (F(x) - F(b))`` computed by captum itself, so a
  check written as ``sum - change == delta`` holds by definition and cannot fail.
  :func:`completeness_check` instead computes ``F(x)`` and ``F(b)`` straight from the model's
  logits (its own forward passes, the region mean written out, not ``RegionScore`` and not
  captum) and asks ``|sum - (F(x) - F(b))| <= tolerance * |F(x) - F(b)|``: the tolerance is a
  fraction of the quantity checked. Too few integration steps, a wrong baseline or a broken
  region mask make it fail.
* **Model randomisation** (Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks
  for Saliency Maps", NeurIPS 2018, https://arxiv.org/abs/1810.03292): the attributions of a
  trained model must differ from those of the same network with randomised weights; a map that
  survives randomisation shows the input (edges, speckle), not what the model learnt. Their
  *cascading* randomisation re-initialises the layers one after the other from the logits
  down and compares each map with the trained model's by Spearman rank correlation (of the
  absolute values, and signed). :func:`model_randomisation` does that: the layers are the
  modules with parameters that the logits depend on (found by autograd, so the cloud-removal
  head is left out), in reverse order of their first call in the forward pass; a layer is
  re-initialised by its own ``reset_parameters()`` (PyTorch's default initialisation; for
  BatchNorm this also resets the running statistics), under a fixed seed.

Whose idea: completeness is Sundararajan et al.'s axiom and the randomisation test Adebayo et
al.'s; the attributions are captum's (Kokhlikyan et al., 2020, https://captum.ai); the rank
correlation is ``scipy.stats.spearmanr``. Computing ``F`` independently with a relative
tolerance, the layer order found by hooks and autograd, and the cascade's steps are edc_lab's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from edc_lab.explain.pixels import PixelAttributions, pixel_attributions
from edc_lab.explain.region import Region, RegionScore

__all__ = [
    "Completeness",
    "completeness_check",
    "complete_attributions",
    "rank_correlation",
    "logit_layers",
    "randomised_copy",
    "RandomisationCheck",
    "model_randomisation",
]


# ---------------------------------------------------------------------------------- completeness
@dataclass
class Completeness:
    """Integrated Gradients' completeness, checked against ``F`` computed independently; ``(B,)`` tensors.

    Attributes:
        attribution_sum: the sum of every optical and SAR attribution.
        score, baseline_score: ``F(x)`` and ``F(b)`` from the model's own logits (not captum's).
        change: ``F(x) - F(b)``.
        gap: ``|attribution_sum - change|``; relative_gap: ``gap / |change|``.
        tolerance: the allowed ``relative_gap``; passed: ``relative_gap <= tolerance``, per sample.
        integration_steps: the integration points used (set by :func:`complete_attributions`).
    """

    attribution_sum: torch.Tensor
    score: torch.Tensor
    baseline_score: torch.Tensor
    tolerance: float
    change: torch.Tensor = field(init=False)
    gap: torch.Tensor = field(init=False)
    relative_gap: torch.Tensor = field(init=False)
    passed: torch.Tensor = field(init=False)
    integration_steps: int | None = None

    def __post_init__(self):
        self.change = self.score - self.baseline_score
        self.gap = (self.attribution_sum - self.change).abs()
        self.relative_gap = self.gap / self.change.abs()
        self.passed = self.relative_gap <= self.tolerance


def _region_mean(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor, target: int, mask: torch.Tensor,
                 units: str) -> torch.Tensor:
    """``F`` written out: the mean class-``target`` logit (or probability) over ``mask (B, H, W)``, ``(B,)``."""
    with torch.no_grad():
        logits = model(optical, sar)["logits"].double()
    scores = torch.softmax(logits, dim=1) if units == "probability" else logits
    mask = mask.to(scores.dtype)
    return (scores[:, target] * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)


def completeness_check(attributions: PixelAttributions, model: nn.Module, optical: torch.Tensor, sar: torch.Tensor,
                       target: int, region: Region = None, *, tolerance: float = 0.01) -> Completeness:
    """Check ``sum(attributions) = F(x) - F(b)`` to ``tolerance * |F(x) - F(b)|``, ``F`` computed independently.

    Args:
        attributions: Integrated Gradients from ``pixel_attributions`` (it keeps the baselines it used).
        model, optical ``(B, C_o, H, W)``, sar ``(B, C_s, H, W)``, target, region: what was explained.
        tolerance: the allowed gap as a fraction of ``|F(x) - F(b)|`` (default 1 %).

    ``F`` is recomputed from ``model(optical, sar)["logits"]`` and ``model(*baselines)["logits"]`` in
    float64, without captum and without ``RegionScore.forward``; only the region's pixel mask is
    built by ``RegionScore.region_mask``. Raises ``ValueError`` for another method than Integrated
    Gradients (Input x Gradient promises no completeness; GradientShap only in expectation), a
    tolerance outside ``(0, 1)`` or attributions without their baselines.
    """
    if attributions.method != "integrated_gradients":
        raise ValueError(
            "completeness_check: completeness is a property of Integrated Gradients, found method "
            f"{attributions.method!r}"
        )
    if not 0 < tolerance < 1:
        raise ValueError(f"completeness_check: tolerance is a fraction of |F(x) - F(b)| in (0, 1), found {tolerance!r}")
    if attributions.baselines is None:
        raise ValueError("completeness_check: these attributions do not carry their baselines; "
                         "compute them with pixel_attributions")
    batch, _, height, width = optical.shape
    mask = RegionScore(model, target, region).region_mask(batch, height, width, optical.device)
    score = _region_mean(model, optical, sar, target, mask, attributions.units)
    baseline_score = _region_mean(model, *attributions.baselines, target, mask, attributions.units)
    attribution_sum = attributions.optical.double().flatten(1).sum(1) + attributions.sar.double().flatten(1).sum(1)
    return Completeness(attribution_sum, score, baseline_score, tolerance)


def complete_attributions(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor, target: int,
                          region: Region = None, *, n_steps: int = 32, max_steps: int = 256, tolerance: float = 0.01,
                          **options) -> tuple[PixelAttributions, Completeness]:
    """Integrated Gradients with ``n_steps``, doubled until :func:`completeness_check` passes for every
    sample or ``max_steps`` is reached (captum's advice for a large delta: more steps).

    Returns ``(attributions, completeness)`` of the last try; ``completeness.passed`` says whether it
    passed, and ``attributions`` was computed with ``n_steps * 2**k`` steps (``integration_steps``
    in the completeness result). ``options`` go to ``pixel_attributions`` (``baseline``,
    ``internal_batch_size``, ``integration``...).
    """
    if not isinstance(max_steps, int) or max_steps < n_steps:
        raise ValueError(f"complete_attributions: max_steps must be an integer >= n_steps = {n_steps}, "
                         f"found {max_steps!r}")
    steps = n_steps
    while True:
        attributions = pixel_attributions(model, optical, sar, target, region, n_steps=steps, **options)
        check = completeness_check(attributions, model, optical, sar, target, region, tolerance=tolerance)
        check.integration_steps = steps
        if bool(check.passed.all()) or steps * 2 > max_steps:
            return attributions, check
        steps *= 2


# ---------------------------------------------------------------------------------- randomisation
def rank_correlation(first, second, absolute: bool = True) -> float:
    """Spearman rank correlation of two maps of the same shape (``scipy.stats.spearmanr`` on the flattened
    values); ``absolute=True`` compares ``|first|`` with ``|second|`` (Adebayo et al.'s main measure).
    NaN when either map is constant."""
    first = np.asarray(first.detach().cpu() if isinstance(first, torch.Tensor) else first, dtype=float).ravel()
    second = np.asarray(second.detach().cpu() if isinstance(second, torch.Tensor) else second, dtype=float).ravel()
    if first.shape != second.shape:
        raise ValueError(f"rank_correlation: the maps need the same number of values, found {first.size} "
                         f"and {second.size}")
    if absolute:
        first, second = np.abs(first), np.abs(second)
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(stats.spearmanr(first, second).statistic)


def logit_layers(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor) -> list[str]:
    """Names of the modules with parameters that the logits depend on, **from the logits down**.

    Order: the reverse of each module's first call in one forward pass (hooks); kept: the modules
    with at least one own parameter that receives a gradient from ``logits.sum()`` (autograd with
    ``allow_unused``), so a head the logits do not read (the cloud-removal head) is left out.
    The model's gradients are not touched.
    """
    order: list[str] = []
    owners = {name: module for name, module in model.named_modules() if list(module.parameters(recurse=False))}
    handles = [module.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name) if name not in order
                                                else None) for name, module in owners.items()]
    try:
        logits = model(optical.detach(), sar.detach())["logits"]
    finally:
        for handle in handles:
            handle.remove()
    names = list(owners)
    params = [list(owners[name].parameters(recurse=False)) for name in names]
    grads = torch.autograd.grad(logits.sum(), [p for group in params for p in group], allow_unused=True)
    used, index = set(), 0
    for name, group in zip(names, params):
        if any(grads[index + k] is not None for k in range(len(group))):
            used.add(name)
        index += len(group)
    return [name for name in reversed(order) if name in used]


def randomised_copy(model: nn.Module, layers: Sequence[str] | None = None, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` (eval mode) whose ``layers`` (module names; ``None`` = every module with
    parameters) are re-initialised by their ``reset_parameters()`` under ``torch.manual_seed(seed)``;
    the original and the global random state are untouched. A named module without
    ``reset_parameters`` raises ``ValueError``."""
    copied = copy.deepcopy(model).eval()
    modules = dict(copied.named_modules())
    if layers is None:
        layers = [name for name, module in modules.items() if list(module.parameters(recurse=False))]
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"randomised_copy: no module named {missing[:3]} in {type(model).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in layers:
            module = modules[name]
            if not hasattr(module, "reset_parameters"):
                raise ValueError(f"randomised_copy: module {name!r} ({type(module).__name__}) has no "
                                 "reset_parameters(); randomise it yourself")
            module.reset_parameters()
    return copied


@dataclass
class RandomisationCheck:
    """Cascading model randomisation of one sample (Adebayo et al., 2018).

    Attributes:
        layers: the logits' layers from the top down (``logit_layers``).
        randomised: how many of them were re-initialised at each step (the last = all of them).
        deepest: the name of the deepest re-initialised layer at each step.
        optical, sar: Spearman rank correlation of ``|attribution|`` (band sums) between the trained
            model and each step's model; signed_optical, signed_sar: the same without ``abs``.
        input_optical, input_sar: the rank correlation of the trained model's ``|attribution|`` with
            ``|x - b|`` (band sums), the part of a path attribution that no weight can change.
        trained, steps: the trained model's ``PixelAttributions`` and each step's.
    """

    layers: list[str]
    randomised: list[int]
    deepest: list[str]
    optical: list[float]
    sar: list[float]
    signed_optical: list[float]
    signed_sar: list[float]
    input_optical: float
    input_sar: float
    trained: PixelAttributions
    steps: list[PixelAttributions]


def model_randomisation(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor, target: int,
                        region: Region = None, *, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                        seed: int = 0, sample: int = 0, **attribution_options) -> RandomisationCheck:
    """Cascading randomisation: attributions of ``model`` against copies with its top layers re-initialised.

    Args:
        model, optical, sar, target, region: as for ``pixel_attributions`` (``model`` in eval mode).
        fractions: after the logits layer alone, re-initialise the top ``round(f * L)`` of the ``L`` layers
            for each ``f`` in ``(0, 1]``, cumulatively from the logits down; ``1.0`` is the fully
            randomised network.
        seed: the seed of every re-initialisation (a layer gets the same new weights at every step).
        sample: which sample of the batch the rank correlations compare.
        attribution_options: passed to ``pixel_attributions`` (``method``, ``baseline``, ``n_steps``...).
    """
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"model_randomisation: fractions must be numbers in (0, 1], found {fractions!r}")
    layers = logit_layers(model, optical, sar)
    counts = sorted({1, *(max(1, round(f * len(layers))) for f in fractions)})
    trained = pixel_attributions(model, optical, sar, target, region, **attribution_options)
    steps, result = [], {key: [] for key in ("optical", "sar", "signed_optical", "signed_sar")}
    for count in counts:
        randomised = randomised_copy(model, layers[:count], seed)
        attributions = pixel_attributions(randomised, optical, sar, target, region, **attribution_options)
        steps.append(attributions)
        for what in ("optical", "sar"):
            first = getattr(trained, f"{what}_map")[sample]
            second = getattr(attributions, f"{what}_map")[sample]
            result[what].append(rank_correlation(first, second))
            result[f"signed_{what}"].append(rank_correlation(first, second, absolute=False))
    change = [(x - b)[sample].abs().sum(0) for x, b in zip((optical, sar), trained.baselines)]
    return RandomisationCheck(
        layers=layers, randomised=counts, deepest=[layers[count - 1] for count in counts],
        input_optical=rank_correlation(trained.optical_map[sample], change[0]),
        input_sar=rank_correlation(trained.sar_map[sample], change[1]),
        trained=trained, steps=steps, **result,
    )
