"""The tri-stream encoder: optical, SAR and a cross-modal stream, fused after every stage.

EDC (Meng et al., https://arxiv.org/abs/2603.20811) encodes the cloudy optical
image and the SAR image in two streams and keeps a third, *cross-modal* stream
that only ever sees their fusion. Four stages work at strides 4, 8, 16 and 32
with widths ``d1..d4``:

* **optical and SAR streams**: a convolutional stem brings the image to stride 4;
  stages 1-2 are residual convolution blocks (cheap where maps are large); stages
  3-4 are carrier-token transformer blocks (``CarrierTokenStage``: window
  attention plus a few carrier tokens for global context); a strided 3x3
  convolution halves the map between stages;
* **cross-modal stream**: it has no raw input. ``X_1`` is what the stage-1 fusion
  makes of ``O_1`` and ``S_1``; stages 2-4 then carry it with the same block types
  as the other streams;
* **fusion after every stage k**: ``(O_k, S_k, X_k) = DCHF_k(O_k, S_k, X_k)``
  (``DCHF`` corrects the optical features where the modalities disagree and writes
  the reliability-weighted global context into ``X_k``).

Whose idea: the three streams and the fusion after every stage are the paper's;
conv stages followed by carrier-token stages and the residual conv block (3x3 conv, BN,
GELU, 3x3 conv, BN, plus the input) are FasterViT's (NVlabs, arXiv 2306.06189,
``faster_vit.py``: ``ConvBlock``). The stem is *like* FasterViT's (two 3x3 convolutions of
stride 2) but not the same: FasterViT's ``PatchEmbed`` is Conv-BN-ReLU twice, ours is
Conv-BN-GELU-Conv-BN (GELU as in the conv blocks, no activation after the last BN).
The exact widths, the strided-conv downsampling with BN and the per-stage choice of
window and fusion cell are edc_lab's.

Any H x W works: convolutions take odd sizes, attention blocks pad to their
window and crop back. A stride-``s`` map has ``ceil(H / s) x ceil(W / s)`` pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edc_lab.models.carrier_tokens import CarrierTokenStage
from edc_lab.models.dchf import DCHF, PlainSumFusion

__all__ = [
    "ConvStem",
    "Downsample",
    "ResidualConvBlock",
    "ConvStage",
    "Stream",
    "SingleStreamEncoder",
    "TriStreamEncoder",
    "make_stage",
]

NUM_STAGES = 4
#: stages 1-2 (index 0-1) are convolutional, stages 3-4 are attention stages
ATTENTION_STAGES = (2, 3)


class ConvStem(nn.Module):
    """Image ``(B, C_in, H, W)`` -> features ``(B, C_out, ceil(H/4), ceil(W/4))``.

    Two 3x3 convolutions of stride 2, as in FasterViT's stem: the first to
    ``max(8, C_out // 2)`` channels with BN and GELU, the second to ``C_out`` with BN
    (FasterViT: BN and ReLU after both; the GELU and the linear output are ours).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = max(8, out_channels // 2)
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


class Downsample(nn.Module):
    """Halve the map between stages: ``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H/2), ceil(W/2))``.

    A 3x3 convolution of stride 2 followed by BatchNorm.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class ResidualConvBlock(nn.Module):
    """FasterViT's conv block: ``x + BN(Conv3x3(GELU(BN(Conv3x3(x)))))``, shape kept ``(B, C, H, W)``.

    The second BN's scale starts at zero, so a fresh block is the identity and a
    deep stack trains as easily as a shallow one (the role of FasterViT's layer scale).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(dim)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(dim)
        nn.init.zeros_(self.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        return x + residual


class ConvStage(nn.Sequential):
    """``depth`` residual conv blocks at width ``dim``: ``(B, dim, H, W)`` -> same shape."""

    def __init__(self, dim: int, depth: int):
        super().__init__(*[ResidualConvBlock(dim) for _ in range(depth)])


def make_stage(
    stage: int,
    dim: int,
    depth: int,
    num_heads: int,
    window: int,
    carriers: int,
    mlp_ratio: float,
    dense: bool,
) -> nn.Module:
    """Stage ``stage`` (0-based: 0, 1 convolutional; 2, 3 carrier-token attention) of one stream."""
    if stage in ATTENTION_STAGES:
        return CarrierTokenStage(dim, depth, num_heads, window, carriers, mlp_ratio, dense=dense)
    return ConvStage(dim, depth)


class Stream(nn.Module):
    """The four stages of one stream (without its stem), with the downsampling between them.

    Args:
        widths: ``(d1, d2, d3, d4)`` channels of stages 1-4.
        depths: blocks per stage.
        heads: attention heads of stages 3 and 4.
        windows: attention window of stages 3 and 4 (in pixels of that stage's map).
        carriers: carrier tokens per window side (``carriers**2`` per window).
        mlp_ratio: hidden width of the transformer MLPs / ``dim``.
        dense: replace carrier-token attention by dense attention (the ``dense_edc`` ablation).
        first_stage: ``0`` for a stream that starts at stage 1; ``1`` for the
            cross-modal stream, which starts as the stage-1 fusion output.

    ``run_stage(k, x)`` (``k = 0..3`` for stages 1-4) takes the previous stage's
    output (the stem's, already ``widths[0]`` wide, for ``k = 0``), downsamples it by 2
    for ``k > 0``, and returns stage ``k``'s ``(B, widths[k], H_k, W_k)``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        windows: Sequence[int],
        carriers: int,
        mlp_ratio: float,
        dense: bool,
        first_stage: int = 0,
    ):
        super().__init__()
        self.first_stage = first_stage
        self.stages = nn.ModuleDict()
        self.downsamples = nn.ModuleDict()
        for stage in range(first_stage, NUM_STAGES):
            attention_index = max(0, stage - ATTENTION_STAGES[0])
            self.stages[str(stage)] = make_stage(
                stage,
                widths[stage],
                depths[stage],
                heads[attention_index],
                windows[attention_index],
                carriers,
                mlp_ratio,
                dense,
            )
            if stage > 0:
                self.downsamples[str(stage)] = Downsample(widths[stage - 1], widths[stage])

    def run_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        if stage > 0:
            x = self.downsamples[str(stage)](x)
        return self.stages[str(stage)](x)


class SingleStreamEncoder(nn.Module):
    """One stream with its stem: image ``(B, C_in, H, W)`` -> ``[F_1, F_2, F_3, F_4]``,
    ``F_k: (B, d_k, ceil(H / 2^(k+1)), ceil(W / 2^(k+1)))``.

    Used by the single-modality and early-fusion baselines (same blocks as EDC, no fusion).
    """

    def __init__(self, in_channels: int, widths, depths, heads, windows, carriers, mlp_ratio, dense=False):
        super().__init__()
        self.stem = ConvStem(in_channels, widths[0])
        self.stream = Stream(widths, depths, heads, windows, carriers, mlp_ratio, dense)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(image)
        for stage in range(NUM_STAGES):
            x = self.stream.run_stage(stage, x)
            features.append(x)
        return features


class TriStreamEncoder(nn.Module):
    """EDC's encoder: optical ``(B, C_o, H, W)`` and SAR ``(B, C_s, H, W)`` -> per-stage features.

    Args:
        in_optical, in_sar: input channels.
        widths, depths, heads, windows, carriers, mlp_ratio, dense: see ``Stream``.
        fusion: ``"dchf"`` (EDC) or ``"sum"`` (``PlainSumFusion``, the ``edc_no_dchf`` ablation).
        fusion_heads: attention heads of DCHF's global step.
        fusion_cells: DCHF carrier cell size (pixels of that stage's map) for stages 1-4.
        discrepancy: ``"free"`` (D's channel weights of any sign) or ``"monotone"`` (non-negative:
            D can only grow with the disagreement; see ``DiscrepancyMap``).
        last_redistribute: the streams that the *last* DCHF redistributes into. Only
            the heads read the stage-4 outputs: the segmentation head reads ``X_4``, the
            cloud-removal head ``O_4``; nothing reads ``S_4``. A gate whose output
            nothing reads would never receive a gradient, so it is not built:
            ``("optical",)`` for EDC, ``()`` for a model without cloud removal.

    ``forward`` returns a dict of lists, one entry per stage k = 1..4:
    ``optical`` (corrected ``O_k``), ``sar`` (``S_k``), ``cross`` (``X_k``), each
    ``(B, d_k, H_k, W_k)`` with ``H_k = ceil(H / 2^(k+1))``, and ``fusion_info``
    (the dict each fusion returned: discrepancy, reliability, gates, ...).
    """

    def __init__(
        self,
        in_optical: int,
        in_sar: int,
        widths: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        windows: Sequence[int],
        carriers: int = 1,
        mlp_ratio: float = 4.0,
        dense: bool = False,
        fusion: str = "dchf",
        fusion_heads: int = 1,
        fusion_cells: Sequence[int] = (8, 4, 2, 1),
        last_redistribute: Sequence[str] = ("optical",),
        discrepancy: str = "free",
    ):
        super().__init__()
        if fusion not in ("dchf", "sum"):
            raise ValueError(f"TriStreamEncoder: fusion must be 'dchf' or 'sum', found {fusion!r}")
        if discrepancy not in ("free", "monotone"):
            raise ValueError(f"TriStreamEncoder: discrepancy must be 'free' or 'monotone', found {discrepancy!r}")
        stream_args = (widths, depths, heads, windows, carriers, mlp_ratio, dense)
        self.optical_stem = ConvStem(in_optical, widths[0])
        self.sar_stem = ConvStem(in_sar, widths[0])
        self.optical_stream = Stream(*stream_args)
        self.sar_stream = Stream(*stream_args)
        self.cross_stream = Stream(*stream_args, first_stage=1)
        if fusion == "dchf":
            redistribute = [("optical", "sar")] * (NUM_STAGES - 1) + [tuple(last_redistribute)]
            self.fusions = nn.ModuleList(
                # stage 1 has no cross-modal stream yet: its DCHF mixes [R*O, S] only
                DCHF(width, num_heads=fusion_heads, cell=cell, redistribute=streams, with_cross=stage > 0,
                     monotone_discrepancy=discrepancy == "monotone")
                for stage, (width, cell, streams) in enumerate(zip(widths, fusion_cells, redistribute))
            )
        else:
            self.fusions = nn.ModuleList(PlainSumFusion(width) for width in widths)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, reliability=None) -> dict[str, list]:
        """``reliability``: None (each DCHF computes ``R = 1 - D``) or a function
        ``(stage, O_k) -> R_k (B, 1, H_k, W_k)`` that overrides it (``EDC.stage_reliability``)."""
        outputs: dict[str, list] = {"optical": [], "sar": [], "cross": [], "fusion_info": []}
        optical_features = self.optical_stem(optical)
        sar_features = self.sar_stem(sar)
        cross_features = None  # stage 1: the cross-modal stream does not exist yet
        for stage in range(NUM_STAGES):
            optical_features = self.optical_stream.run_stage(stage, optical_features)
            sar_features = self.sar_stream.run_stage(stage, sar_features)
            if cross_features is not None:
                cross_features = self.cross_stream.run_stage(stage, cross_features)
            # (O_k, S_k, X_k) = DCHF_k(O_k, S_k, X_k); X_1 is born here from O_1 and S_1.
            override = {} if reliability is None else {"reliability": reliability(stage, optical_features)}
            optical_features, sar_features, cross_features, info = self.fusions[stage](
                optical_features, sar_features, cross_features, **override
            )
            outputs["optical"].append(optical_features)
            outputs["sar"].append(sar_features)
            outputs["cross"].append(cross_features)
            outputs["fusion_info"].append(info)
        return outputs
