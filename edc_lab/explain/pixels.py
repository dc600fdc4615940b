"""Pixel attributions for the optical and the SAR image at once.

The idea in plain words: which optical and which SAR pixels made the model
call this region "farmland"? An attribution gives every input value (band,
row, column of each image) a share of the score ``F`` of ``RegionScore``.

* **Integrated Gradients** (IG; Sundararajan, Taly and Yan, "Axiomatic
  Attribution for Deep Networks", ICML 2017, https://arxiv.org/abs/1703.01365):
  ``IG_i(x) = (x_i - b_i) * integral_0^1 dF/dx_i(b + a (x - b)) da``, the
  gradient averaged along the straight path from the baseline ``b`` to the
  input ``x``, times the change of the input. Its key property is
  **completeness**: the attributions of *both* images together add up to
  ``F(x) - F(b)``. Captum approximates the integral with ``n_steps`` points
  (Gauss-Legendre by default) and returns the **convergence delta**
  ``sum(IG) - (F(x) - F(b))``, the error of that approximation: if it is not
  small, raise ``n_steps``.
* **Input x Gradient** (``x * dF/dx``; Shrikumar et al., 2016): one gradient,
  ~``n_steps`` times cheaper; it is IG with a zero baseline and a one-point
  integral, so it ignores ``baseline`` and has no completeness guarantee.
* **GradientShap** (Lundberg and Lee, 2017, as implemented by captum): the
  expected gradient at random points between the baseline and the input (plus
  optional Gaussian noise ``stdevs``) times ``x - b``; ``n_samples`` gradients,
  complete in expectation. Captum draws the baseline of every random point from
  all rows of the baseline tensor; ours belong to one sample each (its blurred
  or cloud-free copy), so we call it one sample at a time.

All three come from captum (Kokhlikyan et al., 2020, https://captum.ai):
``IntegratedGradients``, ``InputXGradient``, ``GradientShap`` explain
``RegionScore`` with ``inputs=(optical, sar)``, so one call gives both images'
attributions. What is ours: the region score, the remote-sensing baselines
(``edc_lab.explain.baselines``), passing the region mask through captum's
``additional_forward_args`` so it follows each sample through captum's batching,
and the ``PixelAttributions`` summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import GradientShap, InputXGradient, IntegratedGradients
from torch import nn

from edc_lab.explain.baselines import BLUR_SIGMA, BaselineSpec
from edc_lab.explain.region import Region, explanation_inputs

__all__ = ["PIXEL_METHODS", "INTEGRATION_RULES", "PixelAttributions", "pixel_attributions"]

PIXEL_METHODS = ("integrated_gradients", "input_x_gradient", "gradient_shap")
#: captum's rules for Integrated Gradients' integral (``IntegratedGradients.attribute(method=...)``)
INTEGRATION_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


@dataclass
class PixelAttributions:
    """Attributions of ``F`` (``RegionScore``) to every input value.

    Attributes:
        optical: ``(B, C_o, H, W)`` attribution of every optical band and pixel (units of ``F``).
        sar: ``(B, C_s, H, W)`` attribution of every SAR channel and pixel.
        score: ``F(x)``, ``(B,)``.
        baseline_score: ``F(b)``, ``(B,)`` (for ``input_x_gradient``: ``F`` of all-zero inputs).
        delta: captum's convergence delta ``sum(attributions) - (F(x) - F(b))``, ``(B,)``;
            ``None`` for ``input_x_gradient``; for ``gradient_shap`` ``(B, n_samples)``, one per random
            point (GradientShap is complete only in expectation).
        method, baseline: how they were computed; ``units``: ``"logit"`` or ``"probability"``.
        baselines: the ``(optical, sar)`` baseline tensors the attributions compare with (all zero for
            ``input_x_gradient``), so a check can recompute ``F(b)`` on its own
            (``edc_lab.explain.sanity.completeness_check``).
    """

    optical: torch.Tensor
    sar: torch.Tensor
    score: torch.Tensor
    baseline_score: torch.Tensor
    delta: torch.Tensor | None
    method: str
    baseline: str
    units: str
    baselines: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def optical_map(self) -> torch.Tensor:
        """``(B, H, W)``: optical attribution summed over bands."""
        return self.optical.sum(dim=1)

    @property
    def sar_map(self) -> torch.Tensor:
        """``(B, H, W)``: SAR attribution summed over channels."""
        return self.sar.sum(dim=1)

    @property
    def total(self) -> torch.Tensor:
        """``(B,)``: the sum over both images (= ``F(x) - F(b)`` for IG, up to ``delta``)."""
        return self.optical.flatten(1).sum(1) + self.sar.flatten(1).sum(1)


def _check_method(method: str) -> None:
    if method not in PIXEL_METHODS:
        raise ValueError(f"pixel_attributions: method must be one of {PIXEL_METHODS}, found {method!r}")


def pixel_attributions(
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
    n_steps: int = 64,
    internal_batch_size: int | None = None,
    integration: str = "gausslegendre",
    n_samples: int = 16,
    stdevs: float = 0.0,
    blur_sigma: float = BLUR_SIGMA,
) -> PixelAttributions:
    """Attribute ``F`` = mean class-``target`` score over ``region`` to every optical and SAR input value.

    Args:
        model: an edc_lab model in eval mode (``model.eval()``).
        optical: ``(B, C_o, H, W)``; sar: ``(B, C_s, H, W)``.
        target, region, output: see ``RegionScore``.
        method: ``"integrated_gradients"`` (default), ``"input_x_gradient"`` or ``"gradient_shap"``.
        baseline: ``"blur"`` (default), ``"zero"``, ``"cloudfree"`` (needs ``optical_clear``) or a
            tensor pair; see ``edc_lab.explain.baselines``.
        n_steps: IG integration points (64 keeps ``|delta|`` below 1e-2 logit for edc_tiny in our tests).
        internal_batch_size: IG evaluates at most this many path points at once (memory); ``None`` = all.
        integration: IG's quadrature rule, one of ``INTEGRATION_RULES`` (captum's ``method``):
            Gauss-Legendre (default) or a Riemann sum (left, right, middle, trapezoid).
        n_samples, stdevs: GradientShap's random points per sample and input noise.
        blur_sigma: sigma of the ``"blur"`` baseline, in pixels.

    Every argument is checked before the first forward pass (``explanation_inputs``,
    ``edc_lab.explain.checks``): counts >= 1, finite inputs, a boolean or 0/1 region mask.
    """
    _check_method(method)
    if integration not in INTEGRATION_RULES:
        raise ValueError(f"pixel_attributions: integration must be one of {INTEGRATION_RULES}, found {integration!r}")
    score_fn, region_args, inputs, baselines = explanation_inputs(
        model, optical, sar, target, region, output, baseline, optical_clear, blur_sigma, owner="pixel_attributions",
        settings=dict(n_steps=n_steps, internal_batch_size=internal_batch_size, n_samples=n_samples, stdevs=stdevs),
    )
    baseline_name = baseline if isinstance(baseline, str) else "custom"
    delta = None
    if method == "integrated_gradients":
        explainer = IntegratedGradients(score_fn)
        attributions, delta = explainer.attribute(
            inputs,
            baselines=baselines,
            additional_forward_args=region_args,
            n_steps=n_steps,
            method=integration,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
    elif method == "input_x_gradient":
        leaves = tuple(x.clone().requires_grad_() for x in inputs)
        attributions = InputXGradient(score_fn).attribute(leaves, additional_forward_args=region_args)
        baselines = (torch.zeros_like(inputs[0]), torch.zeros_like(inputs[1]))
        baseline_name = "zero (implicit)"
    else:
        # captum draws each random baseline from *all* rows of `baselines`; ours are per sample
        # (the blur or cloud-free copy of that very sample), so explain one sample at a time
        explainer = GradientShap(score_fn)
        per_sample = [
            explainer.attribute(
                tuple(x[i : i + 1] for x in inputs),
                baselines=tuple(b[i : i + 1] for b in baselines),
                n_samples=n_samples,
                stdevs=stdevs,
                additional_forward_args=tuple(a[i : i + 1] for a in region_args),
                return_convergence_delta=True,
            )
            for i in range(optical.shape[0])
        ]
        attributions = tuple(torch.cat([result[0][k] for result in per_sample]) for k in range(2))
        delta = torch.stack([result[1] for result in per_sample])  # (B, n_samples): one per random point
    with torch.no_grad():
        score = score_fn(*inputs, *region_args)
        baseline_score = score_fn(*baselines, *region_args)
    return PixelAttributions(
        optical=attributions[0].detach(),
        sar=attributions[1].detach(),
        score=score,
        baseline_score=baseline_score,
        delta=None if delta is None else delta.detach(),
        method=method,
        baseline=baseline_name,
        units=output,
        baselines=tuple(b.detach() for b in baselines),
    )
