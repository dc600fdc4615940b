"""``cloudseg_ref``: CloudSeg as its public code builds it, for the efficiency comparison.

CloudSeg (Xu et al., ISPRS J. Photogramm. 2024, "CloudSeg: a multi-modal
learning framework for robust land cover mapping under cloudy conditions";
code: https://github.com/xufangchn/CloudSeg, ``StudentNet/SSUCC_net.py``) is the
model EDC (https://arxiv.org/abs/2603.20811) compares itself against: EDC
reports 46.7 % fewer parameters and 1.98x faster inference. This file rebuilds
CloudSeg's student network from that code, layer for layer, in edc_lab's style
(einops, named shapes, any input size), so the claim can be measured here:

* **three SegFormer MiT-B4 encoders** (Xie et al., NeurIPS 2021): optical (4
  bands), SAR, cross-modal. MiT-B4: four stages at strides 4, 8, 16, 32, widths
  (64, 128, 320, 512), depths (3, 8, 27, 3), heads (1, 2, 5, 8); each stage
  starts with an *overlapping patch embedding* (7x7 stride-4, then 3x3 stride-2
  convolutions, LayerNorm); each block is *efficient self-attention* whose keys
  and values come from a map shrunk by the spatial-reduction ratio (8, 4, 2, 1)
  with a strided convolution, and a *Mix-FFN* (Linear, depthwise 3x3 conv,
  GELU, Linear; ratio 4). 60 842 688 parameters with an RGB input (60.85 M).
  The **cross-modal stream has no stage 1**: it reads no image; its ``X_1``
  comes out of the first fusion block (CloudSeg's code builds a stage 1 for
  it, 0.95 M parameters, and never calls it; we do not build it).
* **a ``FuseBlock`` after every stage** (``FuseBlock`` below), on the
  stage's optical ``O``, SAR ``S`` and cross-modal ``X`` maps ``(B, C, h, w)``:

  1. multi-scale context on each stream: ``O_m = MSC(O)``, ``S_m``, ``X_m``
     (``MultiScaleContext``: the map, its 2x2 and 4x4 max-pools upsampled
     back, concatenated, Conv1x1 + ReLU);
  2. a CBAM spatial gate computed on the difference,
     ``a = sigmoid(BN(Conv7x7([max_c, mean_c](O_m - S_m))))`` ``(B, 1, h, w)``,
     that multiplies the optical stream only: ``a * O_m``;
  3. squeeze-and-excitation over ``[a * O_m, S_m, X_m]`` (``3C`` channels, no
     ``X_m`` at stage 1), then the three weighted parts are summed: the new
     ``X`` ``(B, C, h, w)``;
  4. redistribution into the modality streams, written back into ``O`` and
     ``S`` (they feed the next stage)::

         O <- O + sigmoid(Conv3x3(X - O_m)) * (X - O_m)
         S <- S + sigmoid(Conv3x3(X - S_m)) * (X - S_m)

* **smp U-Net decoders** (segmentation_models_pytorch's ``UnetDecoder``,
  widths 256, 128, 64, 32, 16, each step: nearest 2x upsampling, concatenate the
  skip, two 3x3 conv + BN + ReLU): the cross-modal one over ``X_1..X_4`` ->
  a 3x3 convolution to the class logits at full resolution; the optical one
  over the corrected ``O_1..O_4`` -> the cloud-removal head (Conv3x3 16 -> 64,
  Conv3x3 64 -> bands, no activation between).

Parameters (4 optical bands, 2 SAR channels, 7 classes), derived from the
published layer definitions and asserted in ``tests/test_cloudseg.py``:

=================================  ===========  ===========================
part                               published    built here (= used in its forward)
=================================  ===========  ===========================
optical MiT-B4 (4 bands)           60 845 824   60 845 824
SAR MiT-B4 (2 channels)            60 839 552   60 839 552
cross-modal MiT-B4                 60 842 688   59 888 320 (no stage 1)
four FuseBlocks                    10 831 760   10 819 408 (no X MSC at stage 1)
segmentation decoder + classifier   3 281 591    3 281 591
optical decoder + CR head           3 292 164    3 292 164
SAR decoder, two unused seg heads   3 282 606            0
total                             203 216 185  198 966 859
=================================  ===========  ===========================

So CloudSeg *holds* 203.2 M parameters and *uses* 199.0 M in its forward pass;
``cloudseg_ref`` builds the 199.0 M. The four FuseBlocks cost about 16 GFLOP at
512 x 512. One built part is computed and then read by nothing, as in
CloudSeg's code: the last block's SAR redistribution (``S_4``, 2.36 M
parameters; CloudSeg never decodes the SAR stream); it is kept because
CloudSeg runs it, so its time is part of CloudSeg's cost, and its weights get
no gradient.

What differs from the published code, and why:

* no dependency on segmentation_models_pytorch or timm: MiT-B4 and the U-Net
  decoder are written here with the same layers (same parameter count); no
  ImageNet weights are loaded and the initialisation is PyTorch's default
  (the efficiency comparison needs none); no stochastic depth (CloudSeg trains
  with drop-path 0.1; it changes nothing at inference);
* any input size: the MSC pools adaptively to ``ceil(h/2)``, ``ceil(h/4)``
  cells (identical to CloudSeg's ``MaxPool2d(2)``/``MaxPool2d(4)`` when ``h``
  and ``w`` are multiples of 4, and it still works on maps smaller than 4), and
  each decoder step upsamples (nearest) to its skip's size instead of
  exactly 2x, so the smp rule "H, W multiples of 32" does not apply;
* the forward contract of edc_lab (``edc_lab.models.contract``): the
  cloud-removal output passes through a sigmoid (CloudSeg's head is linear), the
  logits are at the input size (CloudSeg may resize them to the label grid);
* ``features`` (what distillation compares) are the segmentation decoder's
  maps at strides 1, 2, 4, 8; CloudSeg's feature hint (``MaskHint``) uses the
  first only, its ``cross_modal_decoder_out``.

The attention here is SegFormer's spatial-reduction attention, *not* EDC's
carrier-token attention; it uses ``F.scaled_dot_product_attention``, the same
fused kernel as edc_lab's own attention, so the timing is fair.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from edc_lab.models.contract import check_inputs, model_output, parameter_dtype
from edc_lab.models.heads import resize_to

__all__ = [
    "CloudSegConfig",
    "OverlapPatchEmbed",
    "EfficientSelfAttention",
    "MixFFN",
    "MixTransformerBlock",
    "MixTransformerEncoder",
    "MultiScaleContext",
    "DifferenceSpatialGate",
    "SqueezeExcitationMerge",
    "FuseBlock",
    "UpBlock",
    "UNetDecoder",
    "CloudSegRef",
]


@dataclass(frozen=True)
class CloudSegConfig:
    """Sizes of ``cloudseg_ref``; the defaults are CloudSeg's: MiT-B4 encoders, smp U-Net decoders."""

    widths: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (3, 8, 27, 3)
    heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    #: U-Net decoder steps, to strides 16, 8, 4 (with skips), then 2 and 1 (without): smp's default
    decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16)
    #: hidden width of the cloud-removal head (Conv3x3 decoder_widths[-1] -> cr_hidden -> bands)
    cr_hidden: int = 64
    #: deprecated (the first cloudseg_ref's full-resolution widths): when given, it replaces
    #: the last two ``decoder_widths`` (strides 2 and 1); kept so old ``build_args`` still build
    cr_widths: tuple[int, ...] | None = None

    def __post_init__(self):
        for field in ("widths", "depths", "heads", "sr_ratios", "decoder_widths"):
            value = tuple(int(v) for v in getattr(self, field))
            object.__setattr__(self, field, value)
        if self.cr_widths is not None:
            cr_widths = tuple(int(v) for v in self.cr_widths)
            if len(cr_widths) != 2:
                raise ValueError(f"cloudseg_ref: cr_widths needs 2 values (strides 2 and 1), found {cr_widths}")
            object.__setattr__(self, "cr_widths", cr_widths)
            object.__setattr__(self, "decoder_widths", self.decoder_widths[:3] + cr_widths)
        if len(self.decoder_widths) != 5 or min(self.decoder_widths) < 1:
            raise ValueError(
                f"cloudseg_ref: decoder_widths needs 5 positive values (strides 16, 8, 4, 2, 1), "
                f"found {self.decoder_widths}"
            )
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
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # SegFormer's norm_layer: eps 1e-6
        self.attention = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
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
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, (height, width) = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens, height, width)
        return to_map(self.norm(tokens), height, width)


class MixTransformerEncoder(nn.Module):
    """MiT encoder (SegFormer): image ``(B, C_in, H, W)`` -> four maps at strides 4, 8, 16, 32.

    ``stages[k]`` can also be run one at a time (the tri-stream model fuses between stages).
    With ``first_stage=1`` the encoder has no stage 1 (``stages[0]`` is an identity
    placeholder): it takes the stride-4 map ``(B, in_channels, H/4, W/4)`` and returns
    three maps; that is CloudSeg's cross-modal stream.
    """

    def __init__(self, in_channels: int, config: CloudSegConfig, first_stage: int = 0):
        super().__init__()
        self.first_stage = first_stage
        stages = [nn.Identity() for _ in range(first_stage)]
        previous = in_channels
        for k in range(first_stage, 4):
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
        for stage in self.stages[self.first_stage :]:
            x = stage(x)
            features.append(x)
        return features


class MultiScaleContext(nn.Module):
    """CloudSeg's ``MSC``: ``(B, C, h, w)`` -> ``(B, C, h, w)``, each pixel sees its 2x2 and 4x4 neighbourhood.

    ``ReLU(Conv1x1([F, up(maxpool_2(F)), up(maxpool_4(F))]))`` with nearest upsampling
    back to ``h x w``. The pools are adaptive, to ``ceil(h / s) x ceil(w / s)`` cells:
    exactly ``MaxPool2d(s)`` when ``s`` divides ``h`` and ``w``.
    """

    def __init__(self, dim: int, scales: Sequence[int] = (2, 4)):
        super().__init__()
        self.scales = tuple(scales)
        self.mix = nn.Conv2d((1 + len(self.scales)) * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        context = [x]
        for scale in self.scales:
            pooled = F.adaptive_max_pool2d(x, (ceil_div(height, scale), ceil_div(width, scale)))
            context.append(F.interpolate(pooled, size=(height, width), mode="nearest"))
        return F.relu(self.mix(torch.cat(context, dim=1)))


class DifferenceSpatialGate(nn.Module):
    """CBAM's spatial gate (Woo et al., ECCV 2018), applied by CloudSeg to ``O_m - S_m``.

    ``(B, C, h, w)`` -> ``sigmoid(BN(Conv7x7([max over C, mean over C])))`` ``(B, 1, h, w)``:
    where the two modalities' features differ, the gate decides how much of the
    optical stream the new cross-modal map takes.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, difference: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat(
            [reduce(difference, "b c h w -> b 1 h w", "max"), reduce(difference, "b c h w -> b 1 h w", "mean")], dim=1
        )
        return torch.sigmoid(self.norm(self.conv(pooled)))


class SqueezeExcitationMerge(nn.Module):
    """CloudSeg's ``SEBlock``: channel weights over ``n`` concatenated streams, then their sum.

    ``streams``: ``n`` maps ``(B, C, h, w)``. ``z = [s_1, ..., s_n]`` ``(B, nC, h, w)``;
    ``w = sigmoid(W_2 ReLU(W_1 mean_hw(z)))`` ``(B, nC)`` (bias-free linears, reduction
    ``r = 16``; an expansion by ``r`` when ``nC < r``); returns ``sum_i w_i * s_i``
    ``(B, C, h, w)``.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels * reduction if channels < reduction else channels // reduction
        self.excitation = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, *streams: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat(streams, dim=1)  # (B, nC, h, w)
        weights = self.excitation(reduce(stacked, "b c h w -> b c", "mean"))
        weighted = stacked * rearrange(weights, "b c -> b c 1 1")
        return reduce(weighted, "b (n c) h w -> b c h w", "sum", n=len(streams))


class FuseBlock(nn.Module):
    """CloudSeg's fusion after one encoder stage: ``(O, S, X) -> (O', S', X', gates)``.

    All maps ``(B, dim, h, w)``; ``X`` is ``None`` at stage 1 (``first=True``: the
    block *creates* the cross-modal stream). Steps (module docstring): MSC on each
    stream; spatial gate ``a`` from ``O_m - S_m`` on the optical stream;
    ``X' = SE([a O_m, S_m, X_m])``; ``O' = O + g_o (X' - O_m)``, ``S' = S + g_s (X' - S_m)``
    with ``g = sigmoid(Conv3x3(X' - .))``. ``gates`` = ``{"spatial": a (B, 1, h, w),
    "optical": g_o, "sar": g_s}`` (``(B, dim, h, w)`` each).
    """

    def __init__(self, dim: int, first: bool = False):
        super().__init__()
        self.first = first
        self.optical_context = MultiScaleContext(dim)
        self.sar_context = MultiScaleContext(dim)
        # CloudSeg builds this MSC in the first block too, and never calls it there
        self.cross_context = None if first else MultiScaleContext(dim)
        self.spatial_gate = DifferenceSpatialGate()
        self.merge = SqueezeExcitationMerge((2 if first else 3) * dim)
        self.optical_gate = nn.Conv2d(dim, dim, 3, padding=1)
        self.sar_gate = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, cross: torch.Tensor | None):
        if (cross is None) != self.first:
            raise ValueError("FuseBlock: the first block takes no cross-modal map, every later block needs one")
        optical_m, sar_m = self.optical_context(optical), self.sar_context(sar)
        spatial = self.spatial_gate(optical_m - sar_m)  # (B, 1, h, w)
        streams = [spatial * optical_m, sar_m]
        if cross is not None:
            streams.append(self.cross_context(cross))
        cross = self.merge(*streams)
        # redistribution: each modality moves towards the fused map where its gate opens
        optical_gate = torch.sigmoid(self.optical_gate(cross - optical_m))
        sar_gate = torch.sigmoid(self.sar_gate(cross - sar_m))
        optical = optical + optical_gate * (cross - optical_m)
        sar = sar + sar_gate * (cross - sar_m)
        return optical, sar, cross, {"spatial": spatial, "optical": optical_gate, "sar": sar_gate}


class UpBlock(nn.Module):
    """smp's U-Net step: nearest-upsample ``x`` to ``size``, concatenate the skip, two 3x3 conv + BN + ReLU."""

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
        x = resize_to(x, size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class UNetDecoder(nn.Module):
    """smp's ``UnetDecoder`` for a 4-stage encoder: ``[F_1..F_4]`` and the input size ``(H, W)``.

    ``F_k``: ``(B, widths[k], H_k, W_k)`` at strides 4, 8, 16, 32. Starting from ``F_4``,
    five steps of widths ``decoder_widths``: to strides 16, 8, 4 with the skips
    ``F_3, F_2, F_1``, then to stride 2 (``ceil(H/2)``) and to ``(H, W)`` without
    skips. Returns the last map ``(B, decoder_widths[-1], H, W)`` and every step's
    map, finest first (strides 1, 2, 4, 8, 16).
    """

    def __init__(self, widths: Sequence[int], decoder_widths: Sequence[int]):
        super().__init__()
        skips = list(reversed(widths[:-1])) + [0, 0]  # 320, 128, 64, -, -
        inputs = [widths[-1], *decoder_widths[:-1]]
        self.ups = nn.ModuleList(UpBlock(i, s, o) for i, s, o in zip(inputs, skips, decoder_widths))

    def forward(self, features: Sequence[torch.Tensor], size) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = features[-1]
        skips = list(reversed(features[:-1])) + [None, None]
        sizes = [None] * (len(features) - 1) + [[ceil_div(side, 2) for side in size], list(size)]
        decoded = []
        for up, skip, step_size in zip(self.ups, skips, sizes):
            x = up(x, skip, size=step_size)
            decoded.append(x)
        return x, decoded[::-1]


class CloudSegRef(nn.Module):
    """CloudSeg's student network: ``forward(optical, sar)`` -> the edc_lab forward dict.

    ``discrepancy``/``reliability`` are empty (CloudSeg has no discrepancy map);
    ``gates`` holds every FuseBlock's ``{"spatial", "optical", "sar"}`` gates;
    ``features`` are the segmentation decoder's maps at strides 1, 2, 4, 8 (the
    first is what CloudSeg's feature hint distils).
    """

    def __init__(self, in_optical: int, in_sar: int, num_classes: int, config: CloudSegConfig, name="cloudseg_ref"):
        super().__init__()
        self.name, self.config = name, config
        self.in_optical, self.in_sar, self.num_classes = in_optical, in_sar, num_classes
        widths, decoder_widths = config.widths, config.decoder_widths
        self.optical_encoder = MixTransformerEncoder(in_optical, config)
        self.sar_encoder = MixTransformerEncoder(in_sar, config)
        # no stage 1: the cross-modal stream starts as the first FuseBlock's output X_1
        self.cross_encoder = MixTransformerEncoder(widths[0], config, first_stage=1)
        self.fusions = nn.ModuleList(FuseBlock(width, first=k == 0) for k, width in enumerate(widths))
        self.segmentation_decoder = UNetDecoder(widths, decoder_widths)
        self.classifier = nn.Conv2d(decoder_widths[-1], num_classes, 3, padding=1)
        self.cloud_removal_decoder = UNetDecoder(widths, decoder_widths)
        self.cloud_removal_head = nn.Sequential(
            nn.Conv2d(decoder_widths[-1], config.cr_hidden, 3, padding=1),
            nn.Conv2d(config.cr_hidden, in_optical, 3, padding=1),
        )

    has_cloud_removal = True

    def encode(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        """The three streams after every FuseBlock: ``{"optical", "sar", "cross", "gates"}``, 4 entries each."""
        streams = {"optical": [], "sar": [], "cross": [], "gates": []}
        x_optical, x_sar, x_cross = optical, sar, None
        for k in range(4):
            x_optical = self.optical_encoder.stages[k](x_optical)
            x_sar = self.sar_encoder.stages[k](x_sar)
            if k > 0:
                x_cross = self.cross_encoder.stages[k](x_cross)
            x_optical, x_sar, x_cross, gates = self.fusions[k](x_optical, x_sar, x_cross)
            for key, value in zip(streams, (x_optical, x_sar, x_cross, gates)):
                streams[key].append(value)
        return streams

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> dict:
        check_inputs(self.name, optical, sar, self.in_optical, self.in_sar, dtype=parameter_dtype(self))
        size = optical.shape[-2:]
        streams = self.encode(optical, sar)
        segmentation, decoded = self.segmentation_decoder(streams["cross"], size)
        logits = self.classifier(segmentation)  # (B, K, H, W)
        restored, _ = self.cloud_removal_decoder(streams["optical"], size)
        cloudfree = torch.sigmoid(self.cloud_removal_head(restored))  # ours: CloudSeg's head is linear
        return model_output(logits, cloudfree, gates=streams["gates"], features=decoded[:4])
