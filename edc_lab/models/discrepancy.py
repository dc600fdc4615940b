"""Discrepancy map: where do the optical and the SAR features disagree?

A cloud hides the ground from the optical sensor but not from the radar. Where
the sky is clear, optical and SAR features describe the same land cover and can
be mapped onto each other; under a cloud the optical features describe the
cloud instead, and the two disagree. EDC (Meng et al., "Lean Learning Beyond
Clouds", arXiv 2603.20811, https://arxiv.org/abs/2603.20811) turns that
disagreement into a per-pixel map at every encoder stage k::

    D_k = sigmoid(Conv1x1(|LN(P_o O_k) - LN(P_s S_k)|))     (B, 1, H_k, W_k)
    R_k = 1 - D_k                                            reliability

``P_o`` and ``P_s`` are 1x1 projections of the optical and SAR features into a
shared space, ``LN`` normalises each pixel's feature vector over channels (so a
uniformly brighter optical pixel is not, by itself, a disagreement), and a
learnt 1x1 convolution weighs which channels of the absolute difference matter.
High D = the modalities disagree (clouds cause that); the DCHF block
(``edc_lab.models.dchf``) uses ``R`` to keep cloudy regions out of its global
context.

Whose idea: a discrepancy map conditioning the fusion is the paper's; this
formula (shared projections, channel LayerNorm, absolute difference, 1x1 conv,
sigmoid) is edc_lab's reading of it (DESIGN.md §1). The LayerNorm has no affine
parameters: a per-channel scale would be absorbed by the 1x1 convolution after
``|.|`` and a shift cancels in the difference. D is learnt without cloud
supervision by default; ``cloud_bce`` is the optional ablation loss against
the down-sampled cloud mask, and ``discrepancy_auroc`` measures how well D finds
clouds instead of assuming it.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from edc_lab.models.grid import infer_stride, pool_to_map, upsample_to_input

__all__ = ["ChannelLayerNorm", "DiscrepancyMap", "cloud_bce", "discrepancy_auroc", "resize_cloud_mask"]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel of a map ``(B, C, H, W)``.

    Args:
        channels: C.
        affine: learn a per-channel scale and shift (``nn.LayerNorm``'s ``elementwise_affine``).
    """

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[-2]
        pixels = rearrange(x, "b c h w -> b (h w) c")
        return rearrange(self.norm(pixels), "b (h w) c -> b c h w", h=height)


class DiscrepancyMap(nn.Module):
    """``D = sigmoid(Conv1x1(|LN(P_o O) - LN(P_s S)|))``, a (B, 1, H, W) map in [0, 1].

    Args:
        dim: channels C of the optical and SAR features.
        shared_dim: width of the shared space (default C).
        monotone: weigh the channels of ``|LN(P_o O) - LN(P_s S)|`` with ``softplus(w) / C`` of
            the 1x1 convolution's weights ``w`` (positive), so that D can only *grow* with the
            disagreement: its direction cannot flip (ours; ``EDCConfig.discrepancy="monotone"``).
            Without it a weight may turn negative and D can end up *lower* where the
            modalities disagree, an inverted detector (measured in ``benchmarks/RESULTS.md``).

    ``forward(optical (B, C, H, W), sar (B, C, H, W)) -> discrepancy (B, 1, H, W)``.
    ``embed(optical, sar)`` returns the two normalised embeddings and
    ``logits(optical, sar)`` the map before the sigmoid, for inspection.
    ``with_reliability(optical, sar) -> (D, R)`` gives ``R = 1 - D`` as
    ``sigmoid(-logits)``, both computed in float32 and returned in the logits' dtype:
    in bfloat16, ``1 - D`` is exactly 0 from a logit of about 6 on (D rounds to 1),
    while ``sigmoid(-logits)`` stays positive (bfloat16 keeps float32's exponent range).
    """

    def __init__(self, dim: int, shared_dim: int | None = None, monotone: bool = False):
        super().__init__()
        shared_dim = shared_dim or dim
        self.monotone = bool(monotone)
        self.project_optical = nn.Conv2d(dim, shared_dim, kernel_size=1)  # P_o
        self.project_sar = nn.Conv2d(dim, shared_dim, kernel_size=1)  # P_s
        self.norm = ChannelLayerNorm(shared_dim, affine=False)  # LN
        self.score = nn.Conv2d(shared_dim, 1, kernel_size=1)  # Conv1x1 -> one logit per pixel

    def embed(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(LN(P_o O), LN(P_s S))``, each ``(B, shared_dim, H, W)``."""
        if optical.shape != sar.shape:
            raise ValueError(
                f"DiscrepancyMap: optical and SAR features must have the same shape, found "
                f"{tuple(optical.shape)} and {tuple(sar.shape)}"
            )
        return self.norm(self.project_optical(optical)), self.norm(self.project_sar(sar))

    def logits(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """The discrepancy before the sigmoid, ``(B, 1, H, W)``."""
        optical_embedding, sar_embedding = self.embed(optical, sar)
        # per-channel disagreement, then a learnt weighting of the channels
        disagreement = (optical_embedding - sar_embedding).abs()
        if self.monotone:  # non-negative channel weights: more disagreement never lowers D
            return F.conv2d(disagreement, self.monotone_weight(), self.score.bias)
        return self.score(disagreement)

    def monotone_weight(self) -> torch.Tensor:
        """The monotone map's channel weights ``softplus(w) / C``, (1, C, 1, 1), all > 0.

        Divided by the number of channels C so that a fresh map (``softplus(0) = 0.69`` per
        channel, ``|LN(.) - LN(.)|`` about 1 per channel) starts with a logit of order 1, not
        of order C: a sum over 32-128 channels would saturate the sigmoid (D = 1 everywhere,
        no gradient).
        """
        return F.softplus(self.score.weight) / self.score.weight.shape[1]

    def with_reliability(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D, R = 1 - D)``, each ``(B, 1, H, W)``; see the class docstring for the float32 detail."""
        logits = self.logits(optical, sar)
        discrepancy = torch.sigmoid(logits.float())
        reliability = torch.sigmoid(-logits.float())  # = 1 - D, without the cancellation
        return discrepancy.to(logits.dtype), reliability.to(logits.dtype)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        logits = self.logits(optical, sar)
        return torch.sigmoid(logits.float()).to(logits.dtype)

    @staticmethod
    def cloud_bce(discrepancy: torch.Tensor, cloud_mask: torch.Tensor) -> torch.Tensor:
        """See the module function ``cloud_bce``."""
        return cloud_bce(discrepancy, cloud_mask)


def resize_cloud_mask(cloud_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Down-sample a cloud mask ``(B, H, W)`` or ``(B, 1, H, W)`` onto a stage's map of ``size = (h, w)``.

    Returns ``(B, 1, h, w)`` float32 in [0, 1]: the cloudy fraction of the real input
    pixels each encoder cell covers (the stride ``s`` is inferred from ``H / h``, cell i
    covers pixels ``[i*s, (i+1)*s)``, the bottom/right padding does not count; see
    ``edc_lab.models.grid.pool_to_grid``).
    """
    if cloud_mask.dim() == 3:
        cloud_mask = cloud_mask[:, None]
    if cloud_mask.dim() != 4 or cloud_mask.shape[1] != 1:
        raise ValueError(f"cloud mask: expected (B, H, W) or (B, 1, H, W), found shape {tuple(cloud_mask.shape)}")
    return pool_to_map(cloud_mask, size)


#: below this probability log(D) counts as -100 (as in torch's BCE); above it log(D) > -70 and
#: its gradient 1/D stays finite; log(1 - D) >= log(2^-24) > -17 for any float32 D < 1
LOG_FLOOR = 1e-30


def cloud_bce(discrepancy: torch.Tensor, cloud_mask: torch.Tensor) -> torch.Tensor:
    """Optional ablation loss: binary cross-entropy of D against the cloud mask.

    Args:
        discrepancy: ``(B, 1, h, w)`` in [0, 1] at some stage's resolution.
        cloud_mask: ``(B, H, W)`` (or ``(B, 1, H, W)``) in {0, 1} at the input
            resolution; down-sampled to ``(h, w)`` as the cloudy fraction per pixel
            (a soft target).

    Returns a scalar (mean over pixels).
    """
    if discrepancy.dim() != 4 or discrepancy.shape[1] != 1:
        raise ValueError(f"cloud_bce: expected discrepancy (B, 1, h, w), found shape {tuple(discrepancy.shape)}")
    if cloud_mask.shape[0] != discrepancy.shape[0]:
        raise ValueError(
            f"cloud_bce: batch of the cloud mask ({cloud_mask.shape[0]}) differs from the discrepancy's "
            f"({discrepancy.shape[0]})"
        )
    target = resize_cloud_mask(cloud_mask, tuple(discrepancy.shape[-2:])).float()
    # written out instead of F.binary_cross_entropy, which autocast refuses on CUDA; in float32,
    # with the logs clamped at -100 as torch does. D saturates at exactly 0 or 1 in half precision,
    # where log' = 1/0 would turn the clamp's zero gradient into 0 * inf = NaN: there the log is
    # taken of a harmless stand-in value and replaced by -100 (gradient 0), the "double where".
    probability = discrepancy.float()
    cloudy_ok, clear_ok = probability > LOG_FLOOR, probability < 1.0
    log_cloud = torch.where(cloudy_ok, torch.log(torch.where(cloudy_ok, probability, 1.0)), -100.0)
    log_clear = torch.where(clear_ok, torch.log1p(-torch.where(clear_ok, probability, 0.0)), -100.0)
    return -(target * log_cloud + (1.0 - target) * log_clear).mean()


def discrepancy_auroc(discrepancy: torch.Tensor | np.ndarray, cloud_mask: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of D as a per-pixel cloud detector.

    Args:
        discrepancy: ``(B, 1, h, w)``, ``(1, h, w)`` or ``(h, w)`` scores (higher = more cloud-like).
        cloud_mask: ``(B, H, W)`` or ``(H, W)`` true mask. A coarser D (stride ``s``,
            ``h = ceil(H / s)``) is brought onto the mask's grid by repeating each cell
            over the ``s x s`` input pixels it covers and cropping the bottom/right
            padding (``grid.upsample_to_input``, nearest), so every input pixel is scored
            by the encoder cell that saw it.

    Returns the probability that a random cloudy pixel scores higher than a random
    clear one (ties count half): 0.5 = no better than chance, 1 = perfect.
    Computed with torchmetrics ``binary_auroc`` through :func:`edc_lab.auroc.auroc` (equal to the Mann-Whitney rank statistic to about 1e-7). Raises ValueError when
    the mask has only one class (AUROC undefined).
    """
    scores = torch.as_tensor(discrepancy).detach().float().cpu()
    mask = torch.as_tensor(cloud_mask).detach().cpu()
    while scores.dim() < 4:
        scores = scores[None]
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3 or scores.shape[1] != 1 or scores.shape[0] != mask.shape[0]:
        raise ValueError(
            f"discrepancy_auroc: expected discrepancy (B, 1, h, w) and cloud mask (B, H, W), found "
            f"{tuple(scores.shape)} and {tuple(mask.shape)}"
        )
    if tuple(scores.shape[-2:]) != tuple(mask.shape[-2:]):
        stride = infer_stride(mask.shape[-2:], scores.shape[-2:])
        scores = upsample_to_input(scores, stride, mask.shape[-2:], mode="nearest")
    scores = scores.flatten()
    positive = mask.flatten() > 0.5
    num_positive, num_negative = int(positive.sum()), int((~positive).sum())
    if num_positive == 0 or num_negative == 0:
        raise ValueError(
            f"discrepancy_auroc: the cloud mask must contain cloudy and clear pixels, found {num_positive} cloudy "
            f"and {num_negative} clear"
        )
    from edc_lab.auroc import auroc  # here, not at the top: importing the models need not load torchmetrics

    return auroc(scores, positive)  # torchmetrics binary_auroc; ties count one half
