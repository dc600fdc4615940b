"""cloudseg_ref against CloudSeg's published code (xufangchn/CloudSeg, StudentNet/SSUCC_net.py).

The parameter counts of the published network are derived below from its layer
definitions (smp's MiT-B4 and UnetDecoder, CloudSeg's FuseBlock, MSC, SEBlock,
CBAM SpatialGate and CR head), by arithmetic on the layer shapes, and compared
part by part with the model edc_lab builds. The behaviour tests run a shrunk
model (one build for the module).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edc_lab.bench import count_flops
from edc_lab.models import build_model
from edc_lab.models.cloudseg import (
    CloudSegConfig,
    DifferenceSpatialGate,
    FuseBlock,
    MultiScaleContext,
    SqueezeExcitationMerge,
)

# --- CloudSeg's published sizes, from its layer definitions -----------------------------------------

MIT_B4 = {"widths": (64, 128, 320, 512), "depths": (3, 8, 27, 3), "sr_ratios": (8, 4, 2, 1), "mlp_ratio": 4}
DECODER_WIDTHS = (256, 128, 64, 32, 16)  # smp Unet's default decoder_channels


def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def conv(i, o, k, bias=True, groups=1):
    return i // groups * o * k * k + (o if bias else 0)


def layer_norm(d):
    return 2 * d


def mit_stage_parameters(in_chans: int, stage: int) -> int:
    """smp ``mix_transformer.py``: OverlapPatchEmbed, ``depth`` Blocks (qkv_bias=True), stage norm."""
    d, r, hidden = MIT_B4["widths"][stage], MIT_B4["sr_ratios"][stage], MIT_B4["mlp_ratio"] * MIT_B4["widths"][stage]
    k = 7 if stage == 0 else 3
    embed = conv(in_chans, d, k) + layer_norm(d)
    attention = linear(d, d) + linear(d, 2 * d) + linear(d, d) + ((conv(d, d, r) + layer_norm(d)) if r > 1 else 0)
    mix_ffn = linear(d, hidden) + conv(hidden, hidden, 3, groups=hidden) + linear(hidden, d)
    block = layer_norm(d) + attention + layer_norm(d) + mix_ffn
    return embed + MIT_B4["depths"][stage] * block + layer_norm(d)


def mit_b4_parameters(in_chans: int) -> int:
    stage_inputs = (in_chans,) + MIT_B4["widths"][:3]
    return sum(mit_stage_parameters(stage_inputs[k], k) for k in range(4))


def unet_decoder_parameters() -> int:
    """smp ``UnetDecoder`` with encoder out_channels (0, 0, 64, 128, 320, 512) ("by Fang"): 5 DecoderBlocks."""
    inputs = (512,) + DECODER_WIDTHS[:-1]
    skips = (320, 128, 64, 0, 0)
    total = 0
    for i, s, o in zip(inputs, skips, DECODER_WIDTHS):  # Conv2dReLU: conv (no bias) + BatchNorm, twice
        total += conv(i + s, o, 3, bias=False) + 2 * o + conv(o, o, 3, bias=False) + 2 * o
    return total


def fuse_block_parameters(c: int, first: bool, with_unused_msc: bool = True) -> int:
    """``FuseBlock(c)``: 3 MSC (the X one unused in the first block), SpatialGate, SEBlock, 2 distribute convs."""
    msc = conv(3 * c, c, 1)
    spatial_gate = conv(2, 1, 7, bias=False) + 2  # BasicConv: conv + BatchNorm2d(1)
    n = (2 if first else 3) * c
    hidden = n * 16 if n < 16 else n // 16
    se = linear(n, hidden, bias=False) + linear(hidden, n, bias=False)
    n_msc = 3 if (with_unused_msc or not first) else 2
    return n_msc * msc + spatial_gate + se + 2 * conv(c, c, 3)


def segmentation_head_parameters(classes: int) -> int:
    return conv(DECODER_WIDTHS[-1], classes, 3)


CR_HEAD = conv(16, 64, 3) + conv(64, 4, 3)
CLASSES = 7


def test_published_sizes_derived_from_the_layer_definitions():
    assert mit_b4_parameters(3) == 60_842_688  # SegFormer / smp MiT-B4 with an RGB input: 60.85 M
    assert mit_b4_parameters(4) == 60_845_824  # CloudSeg's optical stream (update_module: 4 bands)
    assert mit_b4_parameters(2) == 60_839_552  # its SAR stream (2 channels)
    assert mit_stage_parameters(3, 0) == 954_368  # the cross stream's stage 1, built and never called
    assert unet_decoder_parameters() == 3_280_576
    fuse = [fuse_block_parameters(c, k == 0) for k, c in enumerate(MIT_B4["widths"])]
    assert fuse == [113_060, 461_540, 2_881_700, 7_375_460] and sum(fuse) == 10_831_760
    published = (
        mit_b4_parameters(4) + mit_b4_parameters(2) + mit_b4_parameters(3)
        + 3 * (unet_decoder_parameters() + segmentation_head_parameters(CLASSES))
        + sum(fuse) + CR_HEAD
    )
    assert published == 203_216_185
    unused = (
        mit_stage_parameters(3, 0)  # cross stream stage 1
        + unet_decoder_parameters() + segmentation_head_parameters(CLASSES)  # SAR decoder and head
        + segmentation_head_parameters(CLASSES)  # optical segmentation head (its decoder feeds the CR head)
        + conv(3 * 64, 64, 1)  # the first FuseBlock's cross-modal MSC
    )
    assert published - unused == 198_966_859  # used in CloudSeg's forward pass: 199.0 M


def _on_meta():
    with torch.device("meta"):  # shapes only: 199 M parameters cost no memory or time
        return build_model("cloudseg_ref")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_cloudseg_ref_matches_the_published_parts():
    model = _on_meta()
    assert count(model.optical_encoder) == mit_b4_parameters(4)
    assert count(model.sar_encoder) == mit_b4_parameters(2)
    # the cross-modal stream: MiT-B4 without stage 1 (X_1 comes out of the first FuseBlock)
    assert isinstance(model.cross_encoder.stages[0], nn.Identity)
    assert count(model.cross_encoder) == mit_b4_parameters(3) - mit_stage_parameters(3, 0)
    widths = MIT_B4["widths"]
    assert [count(f) for f in model.fusions] == [
        fuse_block_parameters(c, k == 0, with_unused_msc=False) for k, c in enumerate(widths)
    ]
    assert abs(count(model.fusions) - 10.83e6) < 0.02e6
    assert count(model.segmentation_decoder) == count(model.cloud_removal_decoder) == unet_decoder_parameters()
    assert count(model.classifier) == segmentation_head_parameters(CLASSES)
    assert count(model.cloud_removal_head) == CR_HEAD
    assert count(model) == 198_966_859  # exactly what CloudSeg's forward uses (203.2 M built there)


def test_fuse_blocks_cost_16_gflop_at_512():
    """FLOPs (2 per multiply-add) of the four FuseBlocks at 512 x 512: the formula from the layer shapes."""
    total, expected = 0, 0
    with torch.device("meta"):
        for k, (c, side) in enumerate(zip(MIT_B4["widths"], (128, 64, 32, 16))):
            block = FuseBlock(c, first=k == 0)
            maps = [torch.empty(1, c, side, side) for _ in range(2 if k == 0 else 3)]
            total += count_flops(block, maps + [None] if k == 0 else maps)
            n, streams = side * side, 2 if k == 0 else 3
            expected += streams * 2 * 3 * c * c * n  # MSC 1x1 convs
            expected += 2 * 2 * 9 * c * c * n  # the two 3x3 redistribution gates
            expected += 2 * 2 * 49 * n  # the 7x7 spatial gate
            expected += 2 * 2 * streams * c * (streams * c // 16)  # SE's two linears
    assert total == expected
    assert abs(total / 1e9 - 16.1) < 0.1, total


# --- behaviour, on a shrunk model -------------------------------------------------------------------

SMALL = {
    "widths": (16, 32, 48, 64), "depths": (1, 1, 1, 1), "heads": (1, 1, 2, 2), "decoder_widths": (32, 16, 16, 8, 8),
}


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = build_model("cloudseg_ref", **SMALL).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, so eval mode is not an identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def images(batch=2, height=50, width=70, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optical = torch.rand(batch, 4, height, width, generator=generator)
    return optical, torch.rand(batch, 2, height, width, generator=generator)


def test_forward_contract_on_any_size(small_model):
    optical, sar = images()
    with torch.no_grad():
        out = small_model(optical, sar)
    assert out["logits"].shape == (2, 7, 50, 70)
    assert out["cloudfree"].shape == (2, 4, 50, 70)
    assert (out["cloudfree"] > 0).all() and (out["cloudfree"] < 1).all()
    assert out["discrepancy"] == [] and out["reliability"] == []
    # features: the segmentation decoder at strides 1, 2, 4, 8; the first is CloudSeg's distillation target
    assert [f.shape[-2:] for f in out["features"]] == [(50, 70), (25, 35), (13, 18), (7, 9)]
    assert out["features"][0].shape[1] == SMALL["decoder_widths"][-1]
    for stage, gates in enumerate(out["gates"]):
        h, w = -(-50 // 2 ** (stage + 2)), -(-70 // 2 ** (stage + 2))
        assert gates["spatial"].shape == (2, 1, h, w)
        assert gates["optical"].shape == gates["sar"].shape == (2, SMALL["widths"][stage], h, w)


def test_cross_stream_is_born_in_the_first_fuse_block(small_model):
    """X_1 = FuseBlock_1(O_1, S_1) with no image input; later stages run the cross encoder on X."""
    optical, sar = images(1)
    with torch.no_grad():
        streams = small_model.encode(optical, sar)
        o1 = small_model.optical_encoder.stages[0](optical)
        s1 = small_model.sar_encoder.stages[0](sar)
        _, _, x1, _ = small_model.fusions[0](o1, s1, None)
        torch.testing.assert_close(streams["cross"][0], x1)
        other_sar = torch.rand_like(sar)
        assert not torch.allclose(small_model.encode(optical, other_sar)["cross"][0], x1)
    assert small_model.fusions[0].cross_context is None
    with pytest.raises(ValueError, match="first block takes no cross-modal map"):
        small_model.fusions[0](o1, s1, x1)


def test_fuse_block_equations(small_model):
    """O' = O + g_o (X' - MSC(O)), S' likewise, X' = SE([a MSC(O), MSC(S), MSC(X)]): maps and gates agree."""
    block = copy.deepcopy(small_model.fusions[1])  # the gates are edited below: keep the fixture intact
    torch.manual_seed(1)
    optical, sar, cross = (torch.randn(2, 32, 9, 11) for _ in range(3))
    with torch.no_grad():
        new_optical, new_sar, new_cross, gates = block(optical, sar, cross)
        optical_m, sar_m = block.optical_context(optical), block.sar_context(sar)
        spatial = block.spatial_gate(optical_m - sar_m)
        torch.testing.assert_close(gates["spatial"], spatial)
        torch.testing.assert_close(new_cross, block.merge(spatial * optical_m, sar_m, block.cross_context(cross)))
        torch.testing.assert_close(new_optical, optical + gates["optical"] * (new_cross - optical_m))
        torch.testing.assert_close(new_sar, sar + gates["sar"] * (new_cross - sar_m))
        torch.testing.assert_close(gates["optical"], torch.sigmoid(block.optical_gate(new_cross - optical_m)))
    # a closed gate leaves the modality untouched; a wide-open one moves it by the whole of X' - O_m
    with torch.no_grad():
        block.optical_gate.weight.zero_()
        block.optical_gate.bias.fill_(-100.0)
        closed, _, _, _ = block(optical, sar, cross)
        block.optical_gate.bias.fill_(100.0)
        opened, _, fused, _ = block(optical, sar, cross)
    torch.testing.assert_close(closed, optical)
    torch.testing.assert_close(opened, optical + fused - block.optical_context(optical))


def test_spatial_gate_reads_only_the_modality_difference():
    """CBAM on O_m - S_m: equal modalities give a gate that is the same at every pixel."""
    gate = DifferenceSpatialGate().eval()
    torch.nn.init.normal_(gate.conv.weight)
    torch.manual_seed(2)
    features = torch.randn(1, 8, 6, 7)
    with torch.no_grad():
        same = gate(features - features)
        different = gate(features - torch.randn_like(features))
    assert same.shape == (1, 1, 6, 7)
    torch.testing.assert_close(same, same.flatten()[0].expand_as(same))
    assert different.std() > 1e-3
    # [max, mean] over channels, 7x7 conv, BatchNorm, sigmoid
    pooled = torch.cat([features.amax(1, keepdim=True), features.mean(1, keepdim=True)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(gate(features), torch.sigmoid(gate.norm(gate.conv(pooled))))


def test_multi_scale_context_is_max_pooling_at_two_scales():
    msc = MultiScaleContext(3)
    x = torch.randn(1, 3, 8, 12)
    up = lambda y: F.interpolate(y, size=(8, 12), mode="nearest")  # noqa: E731
    expected = F.relu(msc.mix(torch.cat([x, up(F.max_pool2d(x, 2)), up(F.max_pool2d(x, 4))], dim=1)))
    with torch.no_grad():
        torch.testing.assert_close(msc(x), expected)
        assert msc(torch.randn(1, 3, 2, 3)).shape == (1, 3, 2, 3)  # maps smaller than 4 work (global max)


def test_squeeze_excitation_merge_weights_channels_then_sums_the_streams():
    merge = SqueezeExcitationMerge(3 * 32)
    assert merge.excitation[0].out_features == 6  # reduction 16
    assert SqueezeExcitationMerge(2 * 4).excitation[0].out_features == 128  # CloudSeg expands when C < 16
    streams = [torch.randn(2, 32, 5, 5) for _ in range(3)]
    stacked = torch.cat(streams, dim=1)
    with torch.no_grad():
        weights = merge.excitation(stacked.mean((2, 3)))[..., None, None]
        expected = sum((stacked * weights).chunk(3, dim=1))
        torch.testing.assert_close(merge(*streams), expected)


def test_only_the_last_sar_redistribution_is_dead_as_in_cloudseg(small_model):
    """CloudSeg computes S_4 <- S_4 + g (X_4 - S_4m) but never decodes S: those weights get no gradient."""
    optical, sar = images(2, 64, 64)
    small_model.zero_grad(set_to_none=True)
    out = small_model(optical, sar)
    (out["logits"].square().mean() + out["cloudfree"].mean()).backward()
    no_gradient = {key for key, parameter in small_model.named_parameters() if parameter.grad is None}
    small_model.zero_grad(set_to_none=True)
    assert no_gradient == {"fusions.3.sar_gate.weight", "fusions.3.sar_gate.bias"}


def test_both_inputs_matter_and_the_optical_decoder_gives_the_cloud_removal(small_model):
    optical, sar = images(1, 64, 64)
    other_optical, other_sar = images(1, 64, 64, seed=1)
    with torch.no_grad():
        reference = small_model(optical, sar)
        new_sar = small_model(optical, other_sar)
        new_optical = small_model(other_optical, sar)
    assert (new_sar["logits"] - reference["logits"]).abs().max() > 1e-6
    assert (new_optical["logits"] - reference["logits"]).abs().max() > 1e-6
    # the cloud-removal output reads SAR too: it decodes the *redistributed* optical stream
    assert (new_sar["cloudfree"] - reference["cloudfree"]).abs().max() > 1e-7


def test_config_checks_and_the_deprecated_cr_widths():
    assert CloudSegConfig().decoder_widths == DECODER_WIDTHS
    assert CloudSegConfig(cr_widths=(8, 4)).decoder_widths == (256, 128, 64, 8, 4)
    with pytest.raises(ValueError, match="decoder_widths needs 5"):
        CloudSegConfig(decoder_widths=(64, 32))
    with pytest.raises(ValueError, match="cr_widths needs 2"):
        CloudSegConfig(cr_widths=(8,))
