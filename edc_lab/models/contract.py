"""What every edc_lab model takes and returns (the forward contract).

Every model built by ``edc_lab.models.build_model`` is called the same way,
``model(optical, sar)``, with

* ``optical``: ``(B, C_o, H, W)`` float, the (cloudy) optical image in [0, 1];
* ``sar``: ``(B, C_s, H, W)`` float, the SAR image on the same grid, in [0, 1];

and returns a dict with the same keys:

* ``logits`` ``(B, K, H, W)``: class scores at the input size;
* ``cloudfree`` ``(B, C_o, H, W)`` in (0, 1), or ``None`` for models without a
  cloud-removal head;
* ``discrepancy``, ``reliability``: lists of four ``(B, 1, H_k, W_k)`` maps in
  [0, 1] (stage k = 1..4, ``H_k = ceil(H / 2^(k+1))``); empty for models without DCHF;
* ``gates``: list of four dicts of gate maps (empty without a fusion that has gates);
* ``features``: the decoder's feature maps (what distillation compares); a teacher
  and a student of the same name give identical shapes.

This file checks the inputs at the boundary, so a wrong channel count fails with
a message naming what was expected, not deep inside a convolution.
"""

from __future__ import annotations

import torch

__all__ = ["check_image", "check_inputs", "model_output"]


def check_image(image, what: str, channels: int, model_name: str) -> None:
    """Raise ``ValueError`` unless ``image`` is a float tensor ``(B, channels, H, W)``."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{model_name}: {what} must be a torch.Tensor (B, {channels}, H, W), found {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != channels:
        hint = ""
        if image.dim() == 3:
            hint = " (a single image? add the batch axis with image[None])"
        elif image.dim() == 4:
            hint = f" (build the model with in_{what}={image.shape[1]} to use this input)"
        raise ValueError(
            f"{model_name}: {what} must have shape (B, {channels}, H, W), expected {channels} channels, "
            f"found shape {tuple(image.shape)}{hint}"
        )
    if not image.is_floating_point():
        raise ValueError(f"{model_name}: {what} must be a float tensor scaled to [0, 1], found dtype {image.dtype}")


def check_inputs(
    model_name: str, optical, sar, in_optical: int, in_sar: int, *, use_optical: bool = True, use_sar: bool = True
) -> None:
    """Check the inputs a model uses; an unused modality (single-stream baselines) may be anything, even None."""
    if use_optical:
        check_image(optical, "optical", in_optical, model_name)
    if use_sar:
        check_image(sar, "sar", in_sar, model_name)
    if use_optical and use_sar:
        if optical.shape[0] != sar.shape[0] or optical.shape[-2:] != sar.shape[-2:]:
            raise ValueError(
                f"{model_name}: optical {tuple(optical.shape)} and sar {tuple(sar.shape)} must have the same batch "
                "size and H x W (co-registered on one grid)"
            )


def model_output(logits, cloudfree=None, discrepancy=(), reliability=(), gates=(), features=()) -> dict:
    """The forward dict, with the list-valued entries as lists."""
    return {
        "logits": logits,
        "cloudfree": cloudfree,
        "discrepancy": list(discrepancy),
        "reliability": list(reliability),
        "gates": list(gates),
        "features": list(features),
    }
