"""Models: the forward contract for every name, invariances, rebuilding, errors, and the parameter budget."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edc_lab.models import (
    DCHF,
    EDC_CONFIGS,
    MODEL_NAMES,
    CarrierTokenAttention,
    CloudRemovalHead,
    CloudSegConfig,
    DenseAttention,
    EfficientSelfAttention,
    MixTransformerEncoder,
    PlainSumFusion,
    ResidualConvBlock,
    build_model,
    model_config,
)
from edc_lab.models.dchf import ChannelAttention
from edc_lab.models.heads import FPNNeck

#: cloudseg_ref at full size is 199 M parameters; CI runs it shrunk (the budget test counts the real one)
SMALL_CLOUDSEG = {"widths": (16, 32, 48, 64), "depths": (1, 1, 1, 1), "heads": (1, 1, 2, 2), "decoder_widths": (32, 16, 16, 8, 8)}
DCHF_MODELS = ("edc_tiny", "edc_small", "edc_base", "edc_paper", "dense_edc", "edc_no_cr")
#: parameters without a gradient on purpose: cloudseg_ref computes CloudSeg's last SAR redistribution
#: (S_4), which nothing reads, as CloudSeg does (see cloudseg.py and tests/test_cloudseg.py). EDC's last
#: DCHF builds no gate whose output nothing reads.
NO_GRADIENT = {"cloudseg_ref": {"fusions.3.sar_gate.weight", "fusions.3.sar_gate.bias"}}


def make(name: str, **kwargs) -> nn.Module:
    overrides = dict(SMALL_CLOUDSEG) if name == "cloudseg_ref" else {}
    overrides.update(kwargs)
    return build_model(name, **overrides)


def inputs(batch=2, sar_channels=2, height=64, width=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optical = torch.rand(batch, 4, height, width, generator=generator)
    sar = torch.rand(batch, sar_channels, height, width, generator=generator)
    return optical, sar


@pytest.mark.parametrize("sar_channels", [1, 2])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_contract(name, sar_channels):
    model = make(name, in_sar=sar_channels)
    batch = 1 if name in ("edc_small", "edc_base", "edc_paper") else 2  # the big ones: keep CI fast
    for height, width in ((64, 64), (100, 130)):
        model.zero_grad(set_to_none=True)
        optical, sar = inputs(batch, sar_channels, height, width)
        out = model(optical, sar)
        assert set(out) == {"logits", "cloudfree", "discrepancy", "reliability", "gates", "features"}
        assert out["logits"].shape == (batch, 7, height, width)
        assert torch.isfinite(out["logits"]).all()
        if model.has_cloud_removal:
            assert out["cloudfree"].shape == (batch, 4, height, width)
            assert (out["cloudfree"] > 0).all() and (out["cloudfree"] < 1).all()
        else:
            assert out["cloudfree"] is None
        if name in DCHF_MODELS:
            assert len(out["discrepancy"]) == len(out["reliability"]) == len(out["gates"]) == 4
            for stage, (discrepancy, reliability) in enumerate(zip(out["discrepancy"], out["reliability"])):
                stride = 2 ** (stage + 2)
                assert discrepancy.shape == (batch, 1, -(-height // stride), -(-width // stride))
                assert discrepancy.min() >= 0 and discrepancy.max() <= 1
                torch.testing.assert_close(reliability, 1 - discrepancy)
            assert set(out["gates"][0]) == {"optical", "sar"}
        else:
            assert out["discrepancy"] == [] and out["reliability"] == []
        assert len(out["features"]) == 4
        loss = out["logits"].square().mean()
        if out["cloudfree"] is not None:
            loss = loss + out["cloudfree"].mean()
        loss.backward()
        # every parameter is trained: no dead weights (the last DCHF builds only the gates whose output is read)
        no_gradient = {key for key, parameter in model.named_parameters() if parameter.grad is None}
        assert no_gradient == NO_GRADIENT.get(name, set())
        for key, parameter in model.named_parameters():
            if parameter.grad is not None:
                assert torch.isfinite(parameter.grad).all(), key


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'edc_huge'.*edc_tiny.*cloudseg_ref"):
        build_model("edc_huge")


def test_unknown_override_and_fixed_fields():
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['width'\].*widths"):
        build_model("edc_tiny", width=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="cloud_removal"):
        build_model("edc_no_cr", cloud_removal=True)
    with pytest.raises(ValueError, match="scale"):
        build_model("edc_tiny", scale="base")
    with pytest.raises(ValueError, match="scale must be one of"):
        build_model("optical_only", scale="huge")
    with pytest.raises(ValueError, match="widths needs 4"):
        build_model("edc_tiny", widths=(8, 16))
    with pytest.raises(ValueError, match="divisible"):
        build_model("edc_tiny", heads=(3, 4))
    with pytest.raises(ValueError, match="in_sar must be a positive integer"):
        build_model("edc_tiny", in_sar=0)
    with pytest.raises(ValueError, match="unknown override.*sr_ratios"):
        build_model("cloudseg_ref", windows=(7, 7))


def test_overrides_change_the_model_and_scale_builds_baselines_at_edc_sizes():
    model = build_model("edc_tiny", widths=(8, 16, 32, 64), depths=(1, 2, 1, 1), windows=(2, 2)).eval()
    with torch.no_grad():
        out = model(*inputs(1, 2, 32, 32))
    assert model.config.widths == (8, 16, 32, 64) and len(model.encoder.optical_stream.stages["1"]) == 2
    assert out["logits"].shape == (1, 7, 32, 32)
    assert model_config("dense_edc", scale="base").widths == EDC_CONFIGS["edc_base"].widths
    assert model_config("dense_edc").attention == "dense"
    assert model_config("optical_only").widths == EDC_CONFIGS["edc_tiny"].widths


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_args_rebuild_the_same_model(name):
    big = name in ("edc_small", "edc_base", "edc_paper")
    with torch.device("meta" if big else "cpu"):  # the big ones: compare structure only, on meta tensors
        model = make(name, in_sar=1, num_classes=5).eval()
        args = json.loads(json.dumps(model.build_args))  # what a checkpoint stores
        assert args["name"] == name and args["in_sar"] == 1 and args["num_classes"] == 5
        rebuilt = build_model(**args).eval()
    original_state, rebuilt_state = model.state_dict(), rebuilt.state_dict()
    assert list(original_state) == list(rebuilt_state)
    assert all(original_state[key].shape == rebuilt_state[key].shape for key in original_state)
    if big:
        return
    rebuilt.load_state_dict(original_state)
    optical, sar = inputs(1, 1, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(optical, sar)["logits"], model(optical, sar)["logits"])


def test_build_args_keep_overrides():
    model = build_model("optical_only", scale="small", widths=(8, 16, 32, 64), in_optical=3)
    assert model.build_args == {
        "name": "optical_only", "in_optical": 3, "in_sar": 2, "num_classes": 7, "scale": "small",
        "widths": [8, 16, 32, 64],
    }
    assert build_model(**model.build_args).config == model.config


def test_single_modality_baselines_ignore_the_other_input_exactly():
    optical, sar = inputs(2, 2, 48, 48)
    other_optical, other_sar = inputs(2, 2, 48, 48, seed=1)
    optical_only = build_model("optical_only").eval()
    sar_only = build_model("sar_only").eval()
    with torch.no_grad():
        first = optical_only(optical, sar)
        assert torch.equal(first["logits"], optical_only(optical, other_sar)["logits"])
        assert torch.equal(first["cloudfree"], optical_only(optical, None)["cloudfree"])
        assert not torch.equal(first["logits"], optical_only(other_optical, sar)["logits"])
        second = sar_only(optical, sar)
        assert torch.equal(second["logits"], sar_only(other_optical, sar)["logits"])
        assert torch.equal(second["logits"], sar_only(None, sar)["logits"])
        assert not torch.equal(second["logits"], sar_only(optical, other_sar)["logits"])


@pytest.mark.parametrize("name", ["edc_tiny", "early_fusion", "edc_no_dchf", "cloudseg_ref"])
def test_fusion_models_use_both_inputs(name):
    model = make(name).eval()
    optical, sar = inputs(1, 2, 48, 48)
    other_optical, other_sar = inputs(1, 2, 48, 48, seed=1)
    with torch.no_grad():
        reference = model(optical, sar)["logits"]
        assert (model(optical, other_sar)["logits"] - reference).abs().max() > 1e-6
        assert (model(other_optical, sar)["logits"] - reference).abs().max() > 1e-6


def test_variants_are_built_from_the_intended_blocks():
    dense = build_model("dense_edc")
    assert any(isinstance(m, DenseAttention) for m in dense.modules())
    assert not any(isinstance(m, CarrierTokenAttention) for m in dense.modules())
    edc = build_model("edc_tiny")
    assert sum(isinstance(m, CarrierTokenAttention) for m in edc.modules()) == 3 * 2  # 3 streams x stages 3-4
    assert sum(isinstance(m, DCHF) for m in edc.modules()) == 4
    no_dchf = build_model("edc_no_dchf")
    assert sum(isinstance(m, PlainSumFusion) for m in no_dchf.modules()) == 4
    assert not any(isinstance(m, DCHF) for m in no_dchf.modules())
    no_cr = build_model("edc_no_cr")
    assert not no_cr.has_cloud_removal and no_cr.cloud_removal_head is None
    assert build_model("edc_tiny").has_cloud_removal and not build_model("sar_only").has_cloud_removal
    assert make("cloudseg_ref").has_cloud_removal


def test_cross_stream_is_born_from_the_stage1_fusion():
    """With the plain-sum fusion X_1 = O_1 + S_1 exactly, and every stage halves the map (ceil)."""
    model = build_model("edc_no_dchf").eval()
    optical, sar = inputs(1, 2, 50, 70)
    with torch.no_grad():
        encoded = model.encoder(optical, sar)
    torch.testing.assert_close(encoded["cross"][0], encoded["optical"][0] + encoded["sar"][0])
    for stage, cross in enumerate(encoded["cross"]):
        stride = 2 ** (stage + 2)
        assert cross.shape[-2:] == (-(-50 // stride), -(-70 // stride))
        assert cross.shape[1] == model.config.widths[stage]


def test_wrong_inputs_fail_with_a_clear_message():
    model = build_model("edc_tiny")
    optical, sar = inputs(1, 2, 32, 32)
    with pytest.raises(ValueError, match=r"edc_tiny: optical .* expected 4 channels, found shape \(1, 3, 32, 32\)"):
        model(optical[:, :3], sar)
    with pytest.raises(ValueError, match=r"sar .*expected 2 channels, found shape \(1, 1, 32, 32\).*in_sar=1"):
        model(optical, sar[:, :1])
    with pytest.raises(ValueError, match="batch axis"):
        model(optical[0], sar)
    with pytest.raises(ValueError, match="same batch size and H x W"):
        model(optical, sar[..., :16])
    with pytest.raises(ValueError, match="float"):
        model((optical * 255).to(torch.uint8), sar)
    with pytest.raises(ValueError, match="cloudseg_ref: sar"):
        make("cloudseg_ref")(optical, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="optical_only: optical"):
        build_model("optical_only")(None, sar)


@pytest.mark.parametrize("name", ["edc_tiny", "optical_only", "cloudseg_ref"])
def test_teacher_and_student_of_one_name_have_identical_feature_shapes(name):
    teacher, student = make(name).eval(), make(name).eval()
    clear, sar = inputs(2, 2, 64, 64)
    cloudy = clear.clone()
    cloudy[:, :, 16:48, 16:48] = 0.9  # a bright cloud
    with torch.no_grad():
        teacher_features = teacher(clear, sar)["features"]
        student_features = student(cloudy, sar)["features"]
    assert [f.shape for f in teacher_features] == [f.shape for f in student_features]


def test_untrained_cloud_removal_returns_the_input():
    """The head predicts a logit-space residual that starts at zero: sigmoid(logit(x) + 0) = x."""
    model = build_model("edc_tiny").eval()
    optical, sar = inputs(1, 2, 40, 56)
    with torch.no_grad():
        cloudfree = model(optical, sar)["cloudfree"]
    eps = CloudRemovalHead.eps
    torch.testing.assert_close(cloudfree, optical.clamp(eps, 1 - eps), atol=1e-5, rtol=0)


def test_residual_conv_block_starts_as_identity():
    block = ResidualConvBlock(8).eval()
    x = torch.randn(2, 8, 11, 13)
    torch.testing.assert_close(block(x), x)


def test_fpn_top_down_adds_the_upsampled_coarser_level():
    neck = FPNNeck([2, 2], dim=2)
    for conv in neck.lateral:
        nn.init.zeros_(conv.bias)
        conv.weight.data = torch.eye(2).reshape(2, 2, 1, 1)
    neck.smooth = nn.ModuleList([nn.Identity(), nn.Identity()])
    fine, coarse = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)
    p1, p2 = neck([fine, coarse])
    torch.testing.assert_close(p2, coarse)
    torch.testing.assert_close(p1, fine + coarse.repeat_interleave(2, -2).repeat_interleave(2, -1))


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_efficient_self_attention_equals_torch_multihead_attention(sr_ratio):
    """SegFormer's SRA = MHA whose keys/values are the reduced map's tokens (identity reduction when sr = 1)."""
    dim, heads, height, width = 8, 2, 6, 4
    sra = EfficientSelfAttention(dim, heads, sr_ratio).eval()
    reference = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([sra.query.weight, sra.key_value.weight]))
        reference.in_proj_bias.copy_(torch.cat([sra.query.bias, sra.key_value.bias]))
        reference.out_proj.weight.copy_(sra.proj.weight)
        reference.out_proj.bias.copy_(sra.proj.bias)
    tokens = torch.randn(2, height * width, dim)
    context = tokens
    if sr_ratio > 1:
        grid = tokens.transpose(1, 2).reshape(2, dim, height, width)
        context = sra.reduce_norm(sra.reduce(grid).flatten(2).transpose(1, 2))
    with torch.no_grad():
        expected, _ = reference(tokens, context, context)
        torch.testing.assert_close(sra(tokens, height, width), expected, atol=1e-5, rtol=1e-5)


def test_mix_transformer_strides():
    encoder = MixTransformerEncoder(3, CloudSegConfig(**SMALL_CLOUDSEG))
    features = encoder(torch.rand(1, 3, 50, 70))
    assert [f.shape[-2:] for f in features] == [(13, 18), (7, 9), (4, 5), (2, 3)]
    assert [f.shape[1] for f in features] == [16, 32, 48, 64]


def _parameters_on_meta(name: str, **overrides) -> int:
    with torch.device("meta"):  # shapes only: the 199 M-parameter model costs no memory or time
        model = build_model(name, **overrides)
    return sum(p.numel() for p in model.parameters()), model


def test_parameter_budget():
    cloudseg_total, cloudseg = _parameters_on_meta("cloudseg_ref")
    encoders = [cloudseg.optical_encoder, cloudseg.sar_encoder, cloudseg.cross_encoder]
    encoder_parameters = [sum(p.numel() for p in encoder.parameters()) for encoder in encoders]
    # each encoder is MiT-B4 (SegFormer: 60.8 M with an RGB input); here 4, 2 and 6 input channels
    assert all(abs(count - 61e6) <= 0.1 * 61e6 for count in encoder_parameters), encoder_parameters
    assert abs(sum(encoder_parameters) - 3 * 61e6) <= 0.1 * 3 * 61e6
    with torch.device("meta"):
        rgb_mit_b4 = sum(p.numel() for p in MixTransformerEncoder(3, CloudSegConfig()).parameters())
    assert abs(rgb_mit_b4 - 60.8e6) < 0.1e6  # SegFormer's published size of MiT-B4
    edc_base, _ = _parameters_on_meta("edc_base")
    assert edc_base <= 0.533 * cloudseg_total, edc_base / cloudseg_total  # the paper: -46.7 %
    edc_tiny, _ = _parameters_on_meta("edc_tiny")
    assert 1e6 <= edc_tiny <= 2e6, edc_tiny
    edc_small, _ = _parameters_on_meta("edc_small")
    assert edc_tiny < edc_small < edc_base


def _unused_parameter_names(name: str, **overrides) -> set[str]:
    """Names of the parameters no output of ``name`` depends on, found on a small build (names do not
    depend on the widths)."""
    torch.manual_seed(0)
    model = build_model(name, **overrides)
    model.zero_grad(set_to_none=True)
    out = model(*inputs(1, 2, 64, 64))
    sum(value.float().sum() for value in out.values() if torch.is_tensor(value)).backward()
    return {key for key, parameter in model.named_parameters() if parameter.grad is None}


def test_edc_paper_has_the_papers_parameter_budget():
    """The paper: EDC has 46.7 % fewer parameters than CloudSeg. edc_paper's forward-used parameters
    are 53.3 % +- 1 % of cloudseg_ref's (counted at full size on the meta device; the unused ones,
    found on small builds, left out on both sides)."""
    _, cloudseg = _parameters_on_meta("cloudseg_ref")
    _, paper = _parameters_on_meta("edc_paper")
    unused_cloudseg = _unused_parameter_names("cloudseg_ref", **SMALL_CLOUDSEG)
    unused_paper = _unused_parameter_names("edc_paper", widths=(8, 16, 24, 32), fpn_dim=8, cr_dim=8)
    assert unused_cloudseg, "cloudseg_ref builds parameters it never uses (CloudSeg's spare heads)"
    assert not unused_paper
    used = lambda model, unused: sum(p.numel() for key, p in model.named_parameters() if key not in unused)
    ratio = used(paper, unused_paper) / used(cloudseg, unused_cloudseg)
    assert abs(ratio - 0.533) <= 0.01, ratio
    # built the way edc_base is: the same windows, heads and heads' geometry, wider and deeper
    base, paper_config = EDC_CONFIGS["edc_base"], EDC_CONFIGS["edc_paper"]
    assert paper_config.windows == base.windows and paper_config.heads == base.heads
    assert all(p > b for p, b in zip(paper_config.widths, base.widths))
    assert all(width % 8 == 0 for width in paper_config.widths)


def test_heads_keep_the_stride_4_grid_on_sizes_not_a_multiple_of_4():
    """For H, W not multiples of 4 the heads crop the rounded-up grid instead of stretching it:
    the output equals the top-left corner of the output for the full (4h, 4w) grid."""
    from edc_lab.models.heads import CloudRemovalHead, SegmentationHead, upsample_and_crop

    torch.manual_seed(0)
    widths = (8, 16, 24, 32)
    features = [torch.randn(1, w, -(-25 // 2**k), -(-33 // 2**k)) for k, w in enumerate(widths)]
    head = SegmentationHead(widths, 16, 7).eval()
    with torch.no_grad():
        full, _ = head(features, (100, 132))
        odd, _ = head(features, (98, 130))
    torch.testing.assert_close(odd, full[..., :98, :130], rtol=0, atol=0)
    cloud_removal = CloudRemovalHead(widths, 16).eval()
    torch.nn.init.normal_(cloud_removal.to_subpixels.weight)
    optical = torch.rand(1, 4, 100, 132)
    with torch.no_grad():
        full = cloud_removal(features, optical)
        odd = cloud_removal(features, optical[..., :98, :130])
    # same grid; only the last bit may differ (the element-wise logit/sigmoid of a strided view
    # take another SIMD path)
    torch.testing.assert_close(odd, full[..., :98, :130], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="does not cover"):
        upsample_and_crop(torch.zeros(1, 1, 4, 4), 4, (17, 16))


#: every model but cloudseg_ref (another file's, and 199 M parameters at full size)
EDC_FAMILY = tuple(name for name in MODEL_NAMES if name != "cloudseg_ref")


def diverse_scenes(batch: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Images of different colours: every band of every image has its own random gain and offset."""
    noise = torch.rand(batch, channels, size, size, generator=generator)
    gain, offset = torch.rand(2, batch, channels, 1, 1, generator=generator)
    return offset * (1 - gain) + gain * noise


def every_output(out: dict):
    """All tensors of the forward dict: logits, cloud-free image, D, R, gates, FPN features."""
    for key in ("logits", "cloudfree", "discrepancy", "reliability", "gates", "features"):
        value = out[key]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                yield from item.values()
            elif item is not None:
                yield item


@pytest.mark.parametrize("name", EDC_FAMILY)
def test_every_parameter_element_that_can_learn_gets_a_nonzero_gradient(name):
    """No dead weights: each element of each parameter gets a non-zero gradient from a loss over
    all outputs (a random projection of each: a plain sum of a BatchNorm output has zero gradient).

    What the test sets up, and why (none of it changes which weights exist):
    * zero-initialised parameters (the cloud-removal head's ``to_subpixels``, the last BN scale
      of each residual conv block, norm biases) get small random values: at zero they block the
      gradient to everything upstream at initialisation only, and a first optimiser step
      makes them non-zero anyway;
    * the squeeze bias of the channel attentions is set to +1: a ReLU unit that is negative on
      every image of a small batch gets no gradient for this batch only (data, not structure);
    * ``windows=(2, 1)``: windows have no parameters; at 64 x 64 they make every attention
      see at least two tokens (a softmax over one token gives its query and key no gradient);
    * the *key* part of an attention's ``qkv`` bias is left out: it adds ``q . b_k`` to every
      score of a query, which the softmax cancels, so it can never learn (torch's
      ``nn.MultiheadAttention`` has the same term; kept for the shared weight layout). Its
      gradient is checked to be rounding noise.
    * float64: "exactly zero" is a statement about rounding. In float32 an element whose few
      products are tiny can round to 0 on one CPU's kernels and not on another's (seen: 1 of
      409 600 elements of a carrier-token MLP under ``ATEN_CPU_CAPABILITY=default``); in float64
      a zero means that no path reaches the weight.
    """
    torch.manual_seed(0)
    model = build_model(name, windows=(2, 1))
    with torch.no_grad():
        for parameter in model.parameters():
            if torch.all(parameter == 0):
                parameter.normal_(std=0.02)
        for module in model.modules():
            if isinstance(module, ChannelAttention):
                module.squeeze.bias.fill_(1.0)
    model = model.double()
    generator = torch.Generator().manual_seed(0)
    optical, sar = diverse_scenes(4, 4, 64, generator).double(), diverse_scenes(4, 2, 64, generator).double()
    out = model(optical, sar)
    loss = sum((tensor.double() * torch.randn(tensor.shape, generator=generator, dtype=torch.float64)).sum()
               for tensor in every_output(out))
    loss.backward()
    without_gradient = []
    for key, parameter in model.named_parameters():
        gradient = parameter.grad
        assert gradient is not None and torch.isfinite(gradient).all(), key
        if key.endswith("qkv.bias"):
            query_bias, key_bias, value_bias = gradient.chunk(3)
            assert key_bias.abs().max() <= 1e-3 * value_bias.abs().max(), key
            gradient = torch.cat([query_bias, value_bias])
        zeros = int((gradient == 0).sum())
        if zeros:
            without_gradient.append(f"{key}: {zeros} of {gradient.numel()}")
    assert without_gradient == []


def test_bfloat16_model_keeps_bright_pixels_and_unreliable_regions():
    """A model cast to bfloat16: in bfloat16 the clamp bound 1 - 1e-3 is 1, logit(1) = inf and bright
    pixels would get no gradient; sigmoid(z) is 1 from z of about 6 on, so R = 1 - D would be 0."""
    torch.manual_seed(0)
    model = build_model("edc_tiny").to(torch.bfloat16)
    with torch.no_grad():
        for fusion in model.encoder.fusions:
            fusion.discrepancy.score.bias.fill_(10.0)  # large discrepancy logits at every stage
    optical = torch.zeros(2, 4, 64, 64, dtype=torch.bfloat16)
    optical[1] = 1.0  # image 0 black, image 1 saturated white
    sar = torch.rand(2, 2, 64, 64).to(torch.bfloat16)
    out = model(optical, sar)
    cloudfree = out["cloudfree"]
    assert cloudfree.dtype == torch.bfloat16 and torch.isfinite(cloudfree).all()
    eps = CloudRemovalHead.eps  # the untrained head returns clamp(input, eps, 1 - eps)
    torch.testing.assert_close(cloudfree.float(), optical.float().clamp(eps, 1 - eps), atol=4e-3, rtol=0)
    for reliability in out["reliability"]:
        assert reliability.dtype == torch.bfloat16 and torch.all(reliability > 0)
    cloudfree[1].float().sum().backward()  # the white image only
    gradient = model.cloud_removal_head.to_subpixels.bias.grad
    assert torch.isfinite(gradient).all() and torch.all(gradient != 0)


@pytest.mark.parametrize("scale", ["tiny", "small", "base"])
def test_dense_edc_has_the_capacity_of_edc(scale):
    """The dense_edc ablation compares attention types, not sizes: parameters within 5 %."""
    edc, _ = _parameters_on_meta(f"edc_{scale}")
    dense, _ = _parameters_on_meta("dense_edc", scale=scale)
    assert abs(dense - edc) <= 0.05 * edc, (scale, dense, edc)
