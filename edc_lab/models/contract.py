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
a message naming what was expected, not deep inside a convolution. The inputs'
dtype must be the parameters' (float32 inputs for a float32 model, float64 after
``model.double()``) when the model passes ``dtype=parameter_dtype(self)`` to
:func:`check_inputs`. Under ``torch.autocast`` any floating dtype is accepted:
casting is autocast's job there.
"""

from __future__ import annotations

import torch

__all__ = ["call_model", "check_dtype", "check_image", "check_inputs", "model_output", "parameter_dtype"]

#: the tensor method that converts to each floating dtype (what the messages suggest)
_CONVERSIONS = {torch.float32: "float", torch.float64: "double", torch.float16: "half", torch.bfloat16: "bfloat16"}


def _conversion(dtype: torch.dtype) -> str:
    return f".{_CONVERSIONS[dtype]}()" if dtype in _CONVERSIONS else f".to({dtype})"


def check_dtype(image, what: str, dtype: torch.dtype | None, model_name: str) -> None:
    """Raise ``ValueError`` if a floating ``image`` has another dtype than the model's parameters (``dtype``).

    PyTorch's own error ("expected ... Double but found Float") comes from deep
    inside the first convolution and names neither the input nor the fix.
    Non-tensors, non-float tensors (:func:`check_image`'s business), ``dtype=None``
    and inputs under ``torch.autocast`` (which casts by itself) pass.
    """
    if dtype is None or not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.dtype == dtype:
        return
    if torch.is_autocast_enabled(image.device.type):
        return
    raise ValueError(
        f"{model_name}: {what} must have the dtype of the model's parameters, expected {dtype}, found {image.dtype}: "
        f"convert the input ({what}{_conversion(dtype)}) or the model (model{_conversion(image.dtype)})"
    )


def parameter_dtype(model) -> torch.dtype | None:
    """The dtype of a model's parameters (the first one's; None for a model without any)."""
    parameter = next(model.parameters(), None)
    return None if parameter is None else parameter.dtype


def check_image(image, what: str, channels: int, model_name: str, dtype: torch.dtype | None = None) -> None:
    """Raise ``ValueError`` unless ``image`` is a float tensor ``(B, channels, H, W)`` (of ``dtype`` when given)."""
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
    check_dtype(image, what, dtype, model_name)


def check_inputs(
    model_name: str, optical, sar, in_optical: int, in_sar: int, *, use_optical: bool = True, use_sar: bool = True,
    dtype: torch.dtype | None = None,
) -> None:
    """Check the inputs a model uses; an unused modality (single-stream baselines) may be anything, even None.

    ``dtype``: the model's parameter dtype, which floating inputs must share (None: not checked).
    """
    if use_optical:
        check_image(optical, "optical", in_optical, model_name, dtype)
    if use_sar:
        check_image(sar, "sar", in_sar, model_name, dtype)
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


def call_model(model, optical: torch.Tensor, sar: torch.Tensor, cloud_mask: torch.Tensor | None = None,
               reads_mask: bool | None = None) -> dict:
    """``model(optical, sar)``, plus ``cloud_mask=`` for a model that reads the true mask (the
    ``"oracle"`` arm of ``EDCConfig.reliability``, ``model.needs_cloud_mask``); every other model
    is called without it. ``reads_mask`` overrides the attribute (a DDP wrapper does not have it).
    """
    if reads_mask is None:
        reads_mask = bool(getattr(model, "needs_cloud_mask", False))
    return model(optical, sar, cloud_mask=cloud_mask) if reads_mask else model(optical, sar)
