"""DCHF: Discrepancy-Conditioned Hybrid Fusion of the optical, SAR and cross-modal streams.

EDC (Meng et al., "Lean Learning Beyond Clouds", arXiv 2603.20811,
https://arxiv.org/abs/2603.20811) fuses its three encoder streams after every
stage. The problem it solves: a plain fusion lets cloud-corrupted optical
features leak into every pixel's context. DCHF first measures where the optical
and SAR features disagree (the discrepancy ``D``, reliability ``R = 1 - D``,
``edc_lab.models.discrepancy``) and then fuses in two ways ("hybrid"):

* **local** mixing, pixel by pixel: ``M = ChannelAttention(Conv1x1([R*O, S, X]))``
  -- the optical features enter already damped where they are unreliable (at
  stage 1, where ``X`` does not exist yet, ``Conv1x1([R*O, S])``);
* **global** context through carrier cells (as in carrier-token attention, one
  token per ``cell x cell`` pixels):

  - reliability-weighted pooling ``g = sum_p R_p M_p / sum_p R_p`` per cell, so a
    cloudy pixel hardly counts in its cell's summary;
  - attention among the cell tokens with the **key bias**
    ``log(mean R of the key's cell + eps)``: a cell that is entirely cloud
    (mean R = 0) gets a bias of ``log(1e-6) = -13.8`` and is, in effect, never
    listened to;
  - the attended tokens are broadcast back onto their cells (nearest): ``G``;

* ``X <- X + M + G``;
* **redistribution** of the fused result to the modality streams through gates::

      O <- O + sigmoid(Conv1x1(X - O)) * D * (X - O)     (corrected most where D is high)
      S <- S + sigmoid(Conv1x1(X - S)) * (X - S)

Whose idea: discrepancy-conditioned fusion with suppression of unreliable
regions in global aggregation is the paper's. Three local ingredients come from
the predecessor CloudSeg's ``FuseBlock`` (Xu et al., ISPRS J. 2024; code
https://github.com/xufangchn/CloudSeg, ``StudentNet/SSUCC_net.py``; rebuilt in
``edc_lab.models.cloudseg``): squeeze-and-excitation channel attention over the
streams (CloudSeg: SE over ``[O, S, X]``, then the sum of the three parts), the
redistribution gates ``O <- O + sigmoid(Conv(X - O)) * (X - O)`` and the same for
S (CloudSeg: 3x3 convolutions, differences taken against its multi-scale-context maps),
and a gate on O driven by the modality difference (CloudSeg: a CBAM spatial gate
computed on ``O - S`` that multiplies O; here the discrepancy D, which scales O's
redistribution and, as R = 1 - D, O's share of ``M``). What DCHF adds is
the reliability that conditions the *global* aggregation (carrier cells), which
CloudSeg does not have. The concrete formulas above are edc_lab's reading
(DESIGN.md §1): the SE form of the channel attention on ``Conv1x1([R*O, S, X])``,
1x1 gate convolutions, ``eps = 1e-6``, pooling normalised by
``max(sum R, eps)`` (the exact reliability-weighted mean whenever a cell's
``sum R >= eps``, shrunk towards 0 below that, exactly 0 when it has none), a
pre-norm (LayerNorm) on the cell tokens, cells padded at the bottom/right with
``R = 0`` and cropped back, and the ``redistribute`` option that skips a stream's
redistribution (the encoder's last DCHF builds only the gates whose output a head
reads: nothing reads the stage-4 SAR features).

What the suppression covers, exactly: cloudy *optical* features enter ``M`` as
``R * O`` and the pooling as ``R * M``, so with ``R = 0`` they reach neither ``G``
nor the channel attention. The SAR and cross-modal features of a cloudy cell do
take part in the channel attention's squeeze (a plain mean over all pixels), and
through it in ``G`` — on purpose: SAR is the reliable modality under clouds.
``PlainSumFusion`` (``X <- X + O + S``) is the ``edc_no_dchf`` ablation.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce, repeat
from torch import nn

from edc_lab.models.carrier_tokens import MultiHeadSelfAttention
from edc_lab.models.discrepancy import DiscrepancyMap
from edc_lab.models.windows import crop_to, pad_to_multiple, valid_mask

__all__ = ["DCHF", "PlainSumFusion", "ChannelAttention", "reliability_weighted_pool", "RELIABILITY_EPS"]

#: epsilon of the pooling normaliser and of the key bias ``log(mean R + eps)``
RELIABILITY_EPS = 1e-6


def reliability_weighted_pool(
    features: torch.Tensor, reliability: torch.Tensor, cell: int, eps: float = RELIABILITY_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool ``features`` into ``cell x cell`` cells, each pixel weighted by its reliability.

    Args:
        features: M, ``(B, C, H, W)``.
        reliability: R, ``(B, 1, H, W)`` in [0, 1].
        cell: cell size in pixels; H, W need not be multiples (the padding has R = 0).
        eps: smallest normaliser.

    Returns:
        ``pooled (B, C, Hc, Wc) = sum R M / max(sum R, eps)`` per cell (the
        reliability-weighted mean; 0 for a cell whose reliability is all 0), and
        ``cell_reliability (B, 1, Hc, Wc)`` = mean R over the cell's real pixels,
        with ``Hc = ceil(H / cell)``.
    """
    if features.dim() != 4 or reliability.dim() != 4 or reliability.shape[1] != 1:
        raise ValueError(
            f"reliability_weighted_pool: expected features (B, C, H, W) and reliability (B, 1, H, W), found "
            f"{tuple(features.shape)} and {tuple(reliability.shape)}"
        )
    if features.shape[0] != reliability.shape[0] or features.shape[-2:] != reliability.shape[-2:]:
        raise ValueError(
            f"reliability_weighted_pool: features {tuple(features.shape)} and reliability "
            f"{tuple(reliability.shape)} must share batch and H x W"
        )
    features, size = pad_to_multiple(features, cell)
    reliability, _ = pad_to_multiple(reliability, cell)  # padding: R = 0, so it never counts
    weighted_sum = reduce(reliability * features, "b c (hc ch) (wc cw) -> b c hc wc", "sum", ch=cell, cw=cell)
    reliability_sum = reduce(reliability, "b 1 (hc ch) (wc cw) -> b 1 hc wc", "sum", ch=cell, cw=cell)
    real_pixels = reduce(
        valid_mask(size, cell, device=features.device).to(features.dtype),
        "1 1 (hc ch) (wc cw) -> 1 1 hc wc", "sum", ch=cell, cw=cell,
    )
    pooled = weighted_sum / reliability_sum.clamp_min(eps)
    return pooled, reliability_sum / real_pixels


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescale each channel of ``(B, C, H, W)`` by a weight in (0, 1)
    computed from the channel means (``C -> C / reduction -> C``).

    Squeeze-and-excitation is Hu, Shen and Sun's ("Squeeze-and-Excitation Networks", CVPR 2018,
    arXiv 1709.01507); CloudSeg's ``FuseBlock`` uses it over the concatenated streams, DCHF on
    the 1x1-mixed ``[R*O, S, X]``."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.squeeze = nn.Linear(dim, hidden)
        self.excite = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_means = reduce(x, "b c h w -> b c", "mean")
        weights = torch.sigmoid(self.excite(torch.relu(self.squeeze(channel_means))))
        return x * rearrange(weights, "b c -> b c 1 1")


class DCHF(nn.Module):
    """Discrepancy-conditioned hybrid fusion at one encoder stage.

    Args:
        dim: channels C of all three streams.
        num_heads: heads of the attention among cell tokens.
        cell: carrier-cell size in pixels of this stage.
        eps: the epsilon of the pooling normaliser and of the key bias.
        redistribute: which streams get the redistribution step, a subset of
            ``("optical", "sar")``. A stream left out is returned unchanged, has no
            gate convolution (so no parameter goes without a gradient when, e.g.,
            the last stage's SAR output feeds nothing) and reports an all-zero gate.
        with_cross: whether a cross-modal stream comes in. ``False`` for stage 1, where
            ``X`` does not exist yet: the local mix is then ``Conv1x1([R*O, S])``
            (``2C -> C``) and ``X`` starts as ``M + G``. Reading an all-zero ``X`` would
            add ``C x C`` weights that never receive a gradient (edc_lab's choice).

    ``forward(optical, sar, cross=None, *, reliability=None) -> (optical, sar, cross, info)``,
    all maps ``(B, C, H, W)``; ``cross=None`` means no cross-modal stream yet (zeros); it
    must be None when ``with_cross=False``.
    ``reliability`` (B, 1, H, W) overrides the learnt ``R = 1 - D`` (then
    ``D = 1 - reliability``), for teaching and tests.
    ``info``: ``discrepancy`` (B, 1, H, W), ``reliability`` (B, 1, H, W),
    ``gates`` ``{"optical": sigmoid(Conv(X - O)) * D, "sar": sigmoid(Conv(X - S))}``
    (B, C, H, W) -- the fraction of ``X - O`` / ``X - S`` actually added,
    ``global_context`` G (B, C, H, W), ``local_mix`` M (B, C, H, W),
    ``cell_reliability`` (B, 1, Hc, Wc).
    Set ``keep_attention = True`` to keep the cell-token attention
    ``(B, heads, Nc, Nc)`` on ``last_attention``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        cell: int = 8,
        eps: float = RELIABILITY_EPS,
        redistribute: tuple[str, ...] = ("optical", "sar"),
        with_cross: bool = True,
        monotone_discrepancy: bool = False,
    ):
        super().__init__()
        if cell < 1:
            raise ValueError(f"DCHF: cell must be >= 1, found {cell}")
        unknown = set(redistribute) - {"optical", "sar"}
        if unknown:
            raise ValueError(f"DCHF: redistribute takes 'optical' and/or 'sar', found {sorted(unknown)}")
        self.redistribute = tuple(redistribute)
        self.dim, self.cell, self.eps, self.with_cross = dim, cell, eps, with_cross
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None
        self.discrepancy = DiscrepancyMap(dim, monotone=monotone_discrepancy)
        # local: M = ChannelAttention(Conv1x1([R*O, S, X])), or Conv1x1([R*O, S]) without X (stage 1)
        self.local_mix = nn.Conv2d((3 if with_cross else 2) * dim, dim, kernel_size=1)
        self.channel_attention = ChannelAttention(dim)
        # global: attention among reliability-pooled cell tokens
        self.token_norm = nn.LayerNorm(dim)
        self.cell_attention = MultiHeadSelfAttention(dim, num_heads)
        # redistribution gates
        self.optical_gate = nn.Conv2d(dim, dim, kernel_size=1) if "optical" in self.redistribute else None
        self.sar_gate = nn.Conv2d(dim, dim, kernel_size=1) if "sar" in self.redistribute else None

    def global_context(self, mixed: torch.Tensor, reliability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``G`` from the local mix ``M (B, C, H, W)`` and ``R (B, 1, H, W)``.

        Returns ``(G (B, C, H, W), cell_reliability (B, 1, Hc, Wc))``.
        """
        size = tuple(mixed.shape[-2:])
        # 1. one token per cell: the reliability-weighted mean of M
        pooled, cell_reliability = reliability_weighted_pool(mixed, reliability, self.cell, self.eps)
        rows = pooled.shape[-2]
        tokens = rearrange(pooled, "b c hc wc -> b (hc wc) c")
        # 2. key bias log(mean R + eps): unreliable cells are (almost) never attended to
        key_bias = rearrange(torch.log(cell_reliability + self.eps), "b 1 hc wc -> b 1 1 (hc wc)")
        attended, attention = self.cell_attention(self.token_norm(tokens), key_bias, self.keep_attention)
        if self.keep_attention:
            self.last_attention = attention.detach()
        # 3. broadcast every cell's token back onto its pixels (nearest) and crop the padding
        cells = rearrange(attended, "b (hc wc) c -> b c hc wc", hc=rows)
        context = repeat(cells, "b c hc wc -> b c (hc ch) (wc cw)", ch=self.cell, cw=self.cell)
        return crop_to(context, size), cell_reliability

    def forward(
        self,
        optical: torch.Tensor,
        sar: torch.Tensor,
        cross: torch.Tensor | None = None,
        *,
        reliability: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        if optical.dim() != 4 or optical.shape[1] != self.dim or optical.shape != sar.shape:
            raise ValueError(
                f"DCHF: expected optical and SAR features (B, {self.dim}, H, W) of one shape, found "
                f"{tuple(optical.shape)} and {tuple(sar.shape)}"
            )
        if cross is not None and not self.with_cross:
            raise ValueError("DCHF: built with with_cross=False (stage 1), so it takes no cross-modal features")
        if cross is None:
            cross = torch.zeros_like(optical)  # stage 1: the cross-modal stream starts empty
        elif cross.shape != optical.shape:
            raise ValueError(f"DCHF: cross-modal features {tuple(cross.shape)} must match optical {tuple(optical.shape)}")
        # 1. discrepancy D and reliability R = 1 - D
        if reliability is None:
            discrepancy, reliability = self.discrepancy.with_reliability(optical, sar)  # R = 1 - D, float32-exact
        else:
            expected = (optical.shape[0], 1, *optical.shape[-2:])
            if tuple(reliability.shape) != expected:
                raise ValueError(f"DCHF: reliability must be {expected}, found {tuple(reliability.shape)}")
            discrepancy = 1.0 - reliability
        # 2. local mixing: optical damped by its reliability, with SAR and the cross stream
        streams = [reliability * optical, sar] + ([cross] if self.with_cross else [])
        mixed = self.channel_attention(self.local_mix(torch.cat(streams, dim=1)))
        # 3. global context from reliable cells only
        context, cell_reliability = self.global_context(mixed, reliability)
        # 4. the cross-modal stream collects both
        cross = cross + mixed + context
        # 5. redistribution: correct the optical stream where D is high, the SAR stream by a gate
        if self.optical_gate is not None:
            optical_gate = torch.sigmoid(self.optical_gate(cross - optical)) * discrepancy
            optical = optical + optical_gate * (cross - optical)
        else:
            optical_gate = torch.zeros_like(optical)
        if self.sar_gate is not None:
            sar_gate = torch.sigmoid(self.sar_gate(cross - sar))
            sar = sar + sar_gate * (cross - sar)
        else:
            sar_gate = torch.zeros_like(sar)
        info = {
            "discrepancy": discrepancy,
            "reliability": reliability,
            "gates": {"optical": optical_gate, "sar": sar_gate},
            "global_context": context,
            "local_mix": mixed,
            "cell_reliability": cell_reliability,
        }
        return optical, sar, cross, info


class PlainSumFusion(nn.Module):
    """The ``edc_no_dchf`` ablation: ``X <- X + O + S``; O and S pass through unchanged.

    Same signature as ``DCHF``; ``info`` has the same keys with ``None`` values
    (there is no discrepancy, reliability, gate or global context).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(
        self, optical: torch.Tensor, sar: torch.Tensor, cross: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        if optical.shape != sar.shape:
            raise ValueError(
                f"PlainSumFusion: optical {tuple(optical.shape)} and SAR {tuple(sar.shape)} must match"
            )
        cross = optical + sar if cross is None else cross + optical + sar
        info = {
            "discrepancy": None,
            "reliability": None,
            "gates": None,
            "global_context": None,
            "local_mix": None,
            "cell_reliability": None,
        }
        return optical, sar, cross, info
