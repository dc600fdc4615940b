"""Baselines: what "the input is absent" means for a reflectance image and a SAR image.

The idea in plain words: every attribution method compares the real input with
a *baseline* ("reference") input and splits the change of the model's output
between the pixels. Integrated Gradients (Sundararajan et al., "Axiomatic
Attribution for Deep Networks", ICML 2017, https://arxiv.org/abs/1703.01365)
integrates the gradient on the straight path from the baseline to the input;
Shapley values and ablation replace "removed" features by the baseline. So the
baseline *is* the question being asked, and zero is not a neutral choice here:

* ``"zero"``: optical reflectance 0 is a perfectly black surface (darker than
  deep water or a shadow) and SAR 0 (inputs are scaled to [0, 1]) is the lowest
  backscatter of the scaling range, what calm open water returns. The question
  becomes "why this class rather than the class of a black, water-like scene?".
* ``"blur"``: each input blurred by a Gaussian of ``sigma`` pixels (default 4
  input pixels, per band, borders replicated). It keeps each area's mean colour
  and backscatter and removes texture, edges and small objects; attributions
  then measure what the *spatial detail* contributes. Blurring does not remove
  large uniform objects (a lake wider than a few sigma stays a lake).
* ``"mean"``: each band of each image replaced by its own spatial mean (one constant per band and
  sample). It removes *everything* spatial: texture and speckle as the blur does, but also every
  object, edge and land-cover pattern, keeping only the scene's overall colour and backscatter.
  Attributions then measure whether the image's content is used at all. This is the second
  removal of the attribution evidence: with the blur, a "SAR contribution" is mostly what speckle
  does (the blurred SAR is a cleaner picture of the land cover than the real one); with the mean,
  removing the SAR removes the radar's picture of the land cover.
* ``"cloudfree"``: the cloud-free optical image (``optical_clear``, where the
  data has it) with the real SAR. Optical attributions then split
  ``F(cloudy) - F(cloud-free)``, i.e. what the *clouds* changed, between the
  pixels; SAR attributions are exactly zero for path methods (the SAR does not
  change along the path), and a Shapley "removal" of an optical group means
  "clear the sky over it".
* a pair of tensors ``(optical_baseline, sar_baseline)``: any reference you
  choose (e.g. the per-band mean of a training set), broadcastable to the inputs.

Captum (Kokhlikyan et al., "Captum: A unified and generic model
interpretability library for PyTorch", 2020, https://captum.ai) takes the
baselines as a tuple of tensors; this module only builds them. The list of
baselines and their physical reading are edc_lab's (the zero, blurred and mean references are
common choices in the attribution literature, e.g. Sturmfels, Lundberg and Lee, "Visualizing
the Impact of Feature Attribution Baselines", Distill 2020,
https://distill.pub/2020/attribution-baselines/).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F

__all__ = ["BASELINES", "BLUR_SIGMA", "gaussian_blur", "make_baselines", "BaselineSpec"]

BASELINES = ("zero", "blur", "mean", "cloudfree")
#: default Gaussian sigma of the ``"blur"`` baseline, in input pixels
BLUR_SIGMA = 4.0

BaselineSpec = Union[str, Sequence[torch.Tensor]]


def gaussian_blur(image: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Blur every band of ``image (B, C, H, W)`` with a Gaussian of ``sigma`` pixels (kernel radius
    ``ceil(3 sigma)``, borders replicated); the same shape comes back. ``sigma = 0`` returns a copy."""
    if sigma < 0:
        raise ValueError(f"gaussian_blur: sigma must be >= 0 pixels, found {sigma}")
    if sigma == 0:
        return image.clone()
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    # separable: rows then columns, one kernel per band (groups = C)
    rows = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    cols = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, rows, groups=channels), cols, groups=channels)


def make_baselines(
    baseline: BaselineSpec,
    optical: torch.Tensor,
    sar: torch.Tensor,
    optical_clear: torch.Tensor | None = None,
    *,
    sigma: float = BLUR_SIGMA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(optical_baseline (B, C_o, H, W), sar_baseline (B, C_s, H, W))`` for ``baseline`` in
    ``"zero"``, ``"blur"`` (``sigma`` pixels), ``"mean"`` (each band's spatial mean), ``"cloudfree"``
    (needs ``optical_clear``) or a tensor pair (broadcast to the inputs' shapes). See the module docstring for what each means."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros_like(optical), torch.zeros_like(sar)
        if baseline == "blur":
            return gaussian_blur(optical, sigma), gaussian_blur(sar, sigma)
        if baseline == "mean":
            return (optical.mean(dim=(2, 3), keepdim=True).expand_as(optical).clone(),
                    sar.mean(dim=(2, 3), keepdim=True).expand_as(sar).clone())
        if baseline == "cloudfree":
            if optical_clear is None:
                raise ValueError(
                    "make_baselines: baseline 'cloudfree' needs optical_clear (the cloud-free optical image, "
                    "B, C_o, H, W), found None; this data has no cloud-free image: use 'blur' or 'zero'"
                )
            if optical_clear.dim() == 3:
                optical_clear = optical_clear[None]
            if tuple(optical_clear.shape[1:]) != tuple(optical.shape[1:]):
                raise ValueError(
                    f"make_baselines: optical_clear must have the optical shape {tuple(optical.shape)}, "
                    f"found {tuple(optical_clear.shape)}"
                )
            return optical_clear.to(optical).expand_as(optical).clone(), sar.detach().clone()
        raise ValueError(f"make_baselines: baseline must be one of {BASELINES} or a tensor pair, found {baseline!r}")
    is_pair = isinstance(baseline, (tuple, list)) and len(baseline) == 2
    if is_pair and all(isinstance(b, torch.Tensor) for b in baseline):
        pair = []
        for what, given, image in (("optical", baseline[0], optical), ("sar", baseline[1], sar)):
            try:
                pair.append(torch.broadcast_to(given.to(image), image.shape).clone())
            except RuntimeError:
                raise ValueError(
                    f"make_baselines: the {what} baseline must broadcast to {tuple(image.shape)}, "
                    f"found {tuple(given.shape)}"
                ) from None
        return pair[0], pair[1]
    raise ValueError(
        f"make_baselines: baseline must be one of {BASELINES} or a pair (optical_baseline, sar_baseline) "
        f"of tensors, found {type(baseline).__name__}"
    )
