"""The argument checks every attribution entry point shares: one place, one message format.

The idea in plain words: bad arguments to an attribution method rarely crash, they
quietly give a wrong answer. A cloud *probability* map used as a cloud mask makes
every pixel with p > 0 "cloudy"; ``n_samples = 0`` divides zero by zero into NaN
shares; one NaN pixel in an input turns every attribution map into NaN; and
``n_steps = 0`` reaches captum's bare ``AssertionError``. So ``RegionScore``,
``pixel_attributions``, ``modality_shares``, ``layer_contributions`` and the
widget's ``region_for`` check their arguments here first, before any forward
pass, and raise one ``ValueError`` naming the function, the argument, what was
expected and what was found.

Whose idea: edc_lab's (STYLE.md, "errors at the boundary").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["SETTINGS", "binary_mask", "check_finite", "check_settings"]

#: numeric settings of the attribution functions: name -> (kind, what it counts or means)
SETTINGS: dict[str, tuple[str, str]] = {
    "n_steps": ("count", "integration points of Integrated Gradients"),
    "n_samples": ("count", "random points or orderings per sample"),
    "perturbations_per_eval": ("count", "perturbed copies per forward pass"),
    "internal_batch_size": ("count or None", "path points evaluated at once; None = all"),
    "stdevs": ("non-negative", "standard deviation of GradientShap's input noise"),
    "blur_sigma": ("non-negative", "sigma of the 'blur' baseline, in pixels"),
}


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return _is_integer(value) or isinstance(value, (float, np.floating))


def check_settings(owner: str, **settings: Any) -> None:
    """Check numeric settings by name (:data:`SETTINGS`): counts are integers >= 1 (``None`` too
    where it means "all"), ``stdevs`` and ``blur_sigma`` finite numbers >= 0."""
    for name, value in settings.items():
        kind, meaning = SETTINGS[name]
        if kind == "count or None" and value is None:
            continue
        if kind.startswith("count"):
            if not (_is_integer(value) and value >= 1):
                expected = "an integer >= 1" + (" or None" if kind == "count or None" else "")
                raise ValueError(f"{owner}: {name} must be {expected} ({meaning}), found {value!r}")
        elif not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{owner}: {name} must be a finite number >= 0 ({meaning}), found {value!r}")


def check_finite(owner: str, name: str, image: torch.Tensor) -> None:
    """Refuse NaN/Inf values in an input image: one of them makes every attribution map NaN."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        return
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{owner}: {name} must hold finite values (one NaN/Inf makes every attribution NaN), found {bad} "
            f"NaN/Inf value(s) of {image.numel()} in {tuple(image.shape)}; fill them first (e.g. nodata pixels)"
        )


def binary_mask(owner: str, name: str, mask: Any) -> torch.Tensor:
    """``mask`` (array or tensor) as a bool tensor of the same shape; only booleans or exact 0/1 pass.

    A probability map (values strictly between 0 and 1) is refused rather than read as
    "nonzero = in": threshold it yourself (``mask > 0.5``), so the choice is visible.
    NaN and values other than 0 and 1 are refused too.
    """
    mask = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).detach()
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{owner}: {name} must be boolean or 0/1, found complex dtype {mask.dtype}")
    binary = (mask == 0) | (mask == 1)
    if bool(binary.all()):
        return mask != 0
    others = mask[~binary].double()
    nan = int(torch.isnan(others).sum())
    if nan:
        found = f"{nan} NaN value(s)"
    elif bool(((others > 0) & (others < 1)).all()):
        found = (f"{others.numel()} value(s) strictly between 0 and 1 (e.g. {float(others[0]):.3g}): a probability "
                 f"map? threshold it first, e.g. {name} > 0.5")
    else:
        low, high = float(others.min()), float(others.max())
        found = f"{others.numel()} value(s) other than 0 and 1, in [{low:.4g}, {high:.4g}]"
    raise ValueError(f"{owner}: {name} must be boolean or 0/1 (dtype {mask.dtype}), found {found}")
