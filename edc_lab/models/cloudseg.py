"""``cloudseg_ref``: a CloudSeg-style reference model, built for the efficiency comparison.

CloudSeg (Xu et al., ISPRS J. 2024, "CloudSeg: a multi-modal learning framework
for robust land cover mapping under cloudy conditions") is the model EDC
(https://arxiv.org/abs/2603.20811) compares itself against: EDC reports 46.7 %
fewer parameters and 1.98x faster inference. CloudSeg's code is not part of
edc_lab; this file rebuilds a model of the same *size and kind* so that the
efficiency claim can be measured here, not copied:

* **three SegFormer MiT-B4 encoders** (Xie et al., NeurIPS 2021): optical,
  SAR, and a cross-modal one that reads the channel concatenation of both images
  and, after every stage, the fused features. MiT-B4: four stages at strides
  4, 8, 16, 32, widths (64, 128, 320, 512), depths (3, 8, 27, 3), heads
  (1, 2, 5, 8); each stage starts with an *overlapping patch embedding*
  (7x7 stride-4, then 3x3 stride-2 convolutions, LayerNorm); each block is
  *efficient self-attention* whose keys and values come from a map shrunk by
  the spatial-reduction ratio (8, 4, 2, 1) with a strided convolution, and a
  *Mix-FFN* (Linear, depthwise 3x3 conv, GELU, Linear; ratio 4). About 61 M
  parameters per encoder.
* **plain difference-attention fusion** after every stage:
  ``a = sigmoid(Conv1x1(O_k - S_k))``, ``X_k <- X_k + a * O_k + (1 - a) * S_k``.
  No reliability, no global aggregation: this is what DCHF improves on.
* **UNet-style decoders**: segmentation from ``X_1..X_4``; cloud removal from
  ``O_1..O_4``, continued to full resolution (upsample, concatenate the skip,
  two 3x3 conv + BN + ReLU per step).

Whose idea: MiT-B4 is SegFormer's, exactly; the tri-stream layout, the
difference attention, the UNet decoders and the cloud-removal head follow the
description of CloudSeg in the EDC paper; the exact fusion formula and decoder
widths are edc_lab's reading. The attention (SRA) here is SegFormer's, *not*
the carrier-token attention of EDC. It uses ``F.scaled_dot_product_attention``,
the same fused kernel as edc_lab's own attention, so the timing is fair.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from edc_lab.models.contract import check_inputs, model_output
from edc_lab.models.heads import resize_to

__all__ = [
    "CloudSegConfig",
    "OverlapPatchEmbed",
    "EfficientSelfAttention",
    "MixFFN",
    "MixTransformerBlock",
    "MixTransformerEncoder",
    "DifferenceAttentionFusion",
    "UNetDecoder",
    "CloudSegRef",
]


@dataclass(frozen=True)
class CloudSegConfig:
    """Sizes of ``cloudseg_ref``; the defaults are MiT-B4 (SegFormer's B4 encoder)."""

    widths: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (3, 8, 27, 3)
    heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    #: full-resolution steps of the cloud-removal decoder after stride 4 (stride 2, then 1)
    cr_widths: tuple[int, ...] = (32, 16)

    def __post_init__(self):
        for field in ("widths", "depths", "heads", "sr_ratios", "cr_widths"):
            value = tuple(int(v) for v in getattr(self, field))
            object.__setattr__(self, field, value)
        for field in ("widths", "depths", "heads", "sr_ratios"):
            if len(getattr(self, field)) != 4:
                raise ValueError(f"cloudseg_ref: {field} needs 4 values (one per stage), found {getattr(self, field)}")
        if min(self.depths) < 1:
            raise ValueError(f"cloudseg_ref: every stage needs at least one block, found depths={self.depths}")
        for width, heads in zip(self.widths, self.heads):
            if width % heads:
                raise ValueError(f"cloudseg_ref: width {width} is not divisible by its {heads} heads")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b c h w -> b (h w) c")


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return rearrange(tokens, "b (h w) c -> b c h w", h=height, w=width)


class OverlapPatchEmbed(nn.Module):
    """``(B, C_in, H, W)`` -> tokens ``(B, H' W', dim)`` and ``(H', W')``, with ``H' = ceil(H / stride)``.

    A ``patch x patch`` convolution of stride ``stride`` (patches overlap because
    ``patch > stride``), then LayerNorm.
    """

    def __init__(self, in_channels: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=stride, padding=patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(to_tokens(x)), (height, width)


class EfficientSelfAttention(nn.Module):
    """SegFormer's spatial-reduction attention on tokens ``(B, N, dim)`` of an ``H x W`` map.

    Queries come from every token; keys and values from the map shrunk by a
    ``sr x sr`` convolution of stride ``sr`` (then LayerNorm), so the cost is
    ``N * N / sr^2`` instead of ``N^2``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.reduce = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.reduce_norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        query = rearrange(self.query(tokens), "b n (h d) -> b h n d", h=self.num_heads)
        context = tokens
        if self.sr_ratio > 1:
            reduced = self.reduce(to_map(tokens, height, width))  # (B, C, H/sr, W/sr)
            context = self.reduce_norm(to_tokens(reduced))
        key, value = rearrange(self.key_value(context), "b m (kv h d) -> kv b h m d", kv=2, h=self.num_heads)
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(rearrange(attended, "b h n d -> b n (h d)"))


class MixFFN(nn.Module):
    """SegFormer's Mix-FFN on tokens ``(B, N, dim)``: Linear -> depthwise 3x3 conv -> GELU -> Linear.

    The depthwise convolution gives the positional information that MiT has no embedding for.
    """

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden = self.depthwise(to_map(self.fc1(tokens), height, width))
        return self.fc2(self.act(to_tokens(hidden)))


class MixTransformerBlock(nn.Module):
    """``x + SRA(LN(x))`` then ``x + MixFFN(LN(x))`` on tokens ``(B, N, dim)``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, mlp_ratio)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens), height, width)
        return tokens + self.ffn(self.norm2(tokens), height, width)


class MixTransformerStage(nn.Module):
    """Patch embedding + ``depth`` blocks + LayerNorm: ``(B, C_in, H, W)`` -> ``(B, dim, H', W')``."""

    def __init__(self, in_channels, dim, depth, num_heads, sr_ratio, mlp_ratio, patch, stride):
        super().__init__()
        self.embed = OverlapPatchEmbed(in_channels, dim, patch, stride)
        self.blocks = nn.ModuleList(MixTransformerBlock(dim, num_heads, sr_ratio, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, (height, width) = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens, height, width)
        return to_map(self.norm(tokens), height, width)


class MixTransformerEncoder(nn.Module):
    """MiT encoder (SegFormer): image ``(B, C_in, H, W)`` -> four maps at strides 4, 8, 16, 32.

    ``stages[k]`` can also be run one at a time (the tri-stream model fuses between stages).
    """

    def __init__(self, in_channels: int, config: CloudSegConfig):
        super().__init__()
        stages = []
        previous = in_channels
        for k in range(4):
            patch, stride = (7, 4) if k == 0 else (3, 2)
            stages.append(
                MixTransformerStage(
                    previous,
                    config.widths[k],
                    config.depths[k],
                    config.heads[k],
                    config.sr_ratios[k],
                    config.mlp_ratio,
                    patch,
                    stride,
                )
            )
            previous = config.widths[k]
        self.stages = nn.ModuleList(stages)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], image
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class DifferenceAttentionFusion(nn.Module):
    """CloudSeg-style fusion (our reading): ``a = sigmoid(Conv1x1(O - S))``, ``X + a * O + (1 - a) * S``.

    All maps ``(B, dim, H, W)``. Returns the new ``X`` and the attention ``a``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.attention = nn.Conv2d(dim, dim, 1)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, cross: torch.Tensor):
        attention = torch.sigmoid(self.attention(optical - sar))
        return cross + attention * optical + (1 - attention) * sar, attention


class UpBlock(nn.Module):
    """UNet step: upsample ``x`` to the skip's size, concatenate, two 3x3 conv + BN + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size=None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else size
        x = resize_to(x, size)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetDecoder(nn.Module):
    """``[F_1..F_4]`` (widths ``widths``) -> ``(B, widths[0], H_1, W_1)`` and the decoder maps.

    Starting from ``F_4``, each step upsamples to the next finer level, concatenates
    it and applies two 3x3 convolutions whose width is that level's width.
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.ups = nn.ModuleList(
            UpBlock(widths[k + 1], widths[k], widths[k]) for k in range(len(widths) - 2, -1, -1)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = features[-1]
        decoded = [x]
        for up, skip in zip(self.ups, reversed(features[:-1])):
            x = up(x, skip)
            decoded.append(x)
        return x, decoded[::-1]  # finest first: strides 4, 8, 16, 32


class CloudSegRef(nn.Module):
    """Tri-stream MiT-B4 reference: ``forward(optical, sar)`` -> the edc_lab forward dict.

    ``discrepancy``/``reliability`` are empty (CloudSeg has no discrepancy map);
    ``gates`` holds the difference attention ``a`` of every stage as ``{"difference": a}``;
    ``features`` are the segmentation decoder's maps at strides 4, 8, 16, 32.
    """

    def __init__(self, in_optical: int, in_sar: int, num_classes: int, config: CloudSegConfig, name="cloudseg_ref"):
        super().__init__()
        self.name, self.config = name, config
        self.in_optical, self.in_sar, self.num_classes = in_optical, in_sar, num_classes
        self.optical_encoder = MixTransformerEncoder(in_optical, config)
        self.sar_encoder = MixTransformerEncoder(in_sar, config)
        self.cross_encoder = MixTransformerEncoder(in_optical + in_sar, config)
        self.fusions = nn.ModuleList(DifferenceAttentionFusion(width) for width in config.widths)
        self.segmentation_decoder = UNetDecoder(config.widths)
        self.classifier = nn.Conv2d(config.widths[0], num_classes, 1)
        self.cloud_removal_decoder = UNetDecoder(config.widths)
        full_resolution, previous = [], config.widths[0]
        for width in config.cr_widths:
            full_resolution.append(UpBlock(previous, 0, width))
            previous = width
        self.cloud_removal_up = nn.ModuleList(full_resolution)
        self.to_bands = nn.Conv2d(previous, in_optical, 1)

    has_cloud_removal = True

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        check_inputs(self.name, optical, sar, self.in_optical, self.in_sar)
        size = optical.shape[-2:]
        x_optical, x_sar, x_cross = optical, sar, torch.cat([optical, sar], dim=1)
        optical_features, cross_features, gates = [], [], []
        for k in range(4):
            x_optical = self.optical_encoder.stages[k](x_optical)
            x_sar = self.sar_encoder.stages[k](x_sar)
            x_cross = self.cross_encoder.stages[k](x_cross)
            x_cross, attention = self.fusions[k](x_optical, x_sar, x_cross)
            optical_features.append(x_optical)
            cross_features.append(x_cross)
            gates.append({"difference": attention})
        segmentation, features = self.segmentation_decoder(cross_features)
        logits = resize_to(self.classifier(segmentation), size)
        restored, _ = self.cloud_removal_decoder(optical_features)
        for step, up in enumerate(self.cloud_removal_up, start=1):
            stride = max(1, 4 // 2**step)  # each step halves the stride: 4 -> 2 -> 1
            restored = up(restored, None, size=[ceil_div(side, stride) for side in size])
        cloudfree = torch.sigmoid(resize_to(self.to_bands(restored), size))
        return model_output(logits, cloudfree, gates=gates, features=features)
