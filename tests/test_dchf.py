"""DCHF: reliability-weighted pooling, suppression of unreliable cells, gates (edc_lab.models.dchf)."""

import pytest
import torch

from edc_lab.models.dchf import DCHF, PlainSumFusion, reliability_weighted_pool


def test_pooling_gives_the_clear_mean_of_each_cell():
    """2 x 2 cells of 4 x 4 pixels; cloudy pixels (R = 0) hold huge values that must not count."""
    features = torch.randn(1, 3, 8, 8)
    reliability = torch.ones(1, 1, 8, 8)
    reliability[..., :4, :2] = 0  # half of cell (0, 0) is cloud
    features[..., :4, :2] = 1e4
    reliability[..., 4:, 4:] = 0  # cell (1, 1) is all cloud
    pooled, cell_reliability = reliability_weighted_pool(features, reliability, cell=4)
    assert pooled.shape == (1, 3, 2, 2) and cell_reliability.shape == (1, 1, 2, 2)
    assert torch.allclose(pooled[0, :, 0, 0], features[0, :, :4, 2:4].mean((-1, -2)), atol=1e-5)
    assert torch.allclose(pooled[0, :, 0, 1], features[0, :, :4, 4:].mean((-1, -2)), atol=1e-6)
    assert pooled[0, :, 1, 1].abs().max() == 0
    assert torch.allclose(cell_reliability[0, 0], torch.tensor([[0.5, 1.0], [1.0, 0.0]]))
    # a soft reliability gives the weighted mean
    soft = torch.rand(1, 1, 8, 8)
    pooled, _ = reliability_weighted_pool(features, soft, cell=4)
    cell = (slice(None), slice(4, 8), slice(0, 4))
    expected = (soft[0][cell] * features[0][cell]).sum((-1, -2)) / soft[0][cell].sum()
    assert torch.allclose(pooled[0, :, 1, 0], expected, atol=1e-4)


def test_pooling_ignores_padding_on_odd_sizes():
    features = torch.randn(2, 4, 10, 13)
    pooled, cell_reliability = reliability_weighted_pool(features, torch.ones(2, 1, 10, 13), cell=4)
    assert pooled.shape == (2, 4, 3, 4)
    assert torch.allclose(cell_reliability, torch.ones_like(cell_reliability))
    assert torch.allclose(pooled[:, :, 2, 3], features[:, :, 8:, 12:].mean((-1, -2)), atol=1e-5)


def _reliability_with_cloudy_cell(batch, height, width, cell):
    reliability = torch.ones(batch, 1, height, width)
    reliability[..., :cell, :cell] = 0  # carrier cell (0, 0) is entirely unreliable
    return reliability


def test_global_context_ignores_unreliable_cells():
    """grad of G w.r.t. M inside an R = 0 cell is 0; inside an R = 1 cell it is not."""
    torch.manual_seed(0)
    fusion = DCHF(8, num_heads=2, cell=4)
    mixed = torch.randn(1, 8, 12, 12, requires_grad=True)
    context, cell_reliability = fusion.global_context(mixed, _reliability_with_cloudy_cell(1, 12, 12, 4))
    assert context.shape == mixed.shape and cell_reliability[0, 0, 0, 0] == 0
    (context * torch.randn_like(context)).sum().backward()
    assert mixed.grad[..., :4, :4].abs().max() <= 1e-6
    assert mixed.grad[..., 8:, 8:].abs().max() > 1e-3
    # and the key bias log(0 + 1e-6) leaves that cell (almost) no attention
    fusion.keep_attention = True
    fusion.global_context(mixed.detach(), _reliability_with_cloudy_cell(1, 12, 12, 4))
    assert fusion.last_attention[..., 0].max() < 1e-4


def test_cloudy_optical_features_do_not_reach_the_global_context():
    """Full DCHF with a given reliability: perturbing O inside the R = 0 cell changes G nowhere."""
    torch.manual_seed(0)
    fusion = DCHF(8, num_heads=2, cell=4)
    optical = torch.randn(2, 8, 12, 16, requires_grad=True)
    sar, cross = torch.randn(2, 8, 12, 16), torch.randn(2, 8, 12, 16)
    reliability = _reliability_with_cloudy_cell(2, 12, 16, 4)
    _, _, _, info = fusion(optical, sar, cross, reliability=reliability)
    (info["global_context"] * torch.randn_like(info["global_context"])).sum().backward()
    assert optical.grad[..., :4, :4].abs().max() <= 1e-6
    assert optical.grad[..., 4:8, 8:12].abs().max() > 1e-4
    with torch.no_grad():
        perturbed = optical.detach().clone()
        perturbed[..., :4, :4] += 100 * torch.randn(2, 8, 4, 4)
        changed = fusion(perturbed, sar, cross, reliability=reliability)[3]["global_context"]
    assert (changed - info["global_context"]).abs().max() <= 1e-6


def test_redistribution_corrects_optical_only_where_discrepancy_is_high():
    torch.manual_seed(0)
    fusion = DCHF(8, cell=4)
    optical, sar, cross = torch.randn(3, 1, 8, 8, 8).unbind(0)
    reliability = torch.ones(1, 1, 8, 8)
    reliability[..., :, 4:] = 0  # right half: D = 1
    new_optical, new_sar, new_cross, info = fusion(optical, sar, cross, reliability=reliability)
    assert torch.equal(new_optical[..., :4], optical[..., :4])  # D = 0: untouched
    assert (new_optical[..., 4:] - optical[..., 4:]).abs().min() > 0
    expected = optical + info["gates"]["optical"] * (new_cross - optical)
    assert torch.allclose(new_optical, expected, atol=1e-6)
    assert torch.allclose(new_sar, sar + info["gates"]["sar"] * (new_cross - sar), atol=1e-6)
    assert torch.allclose(new_cross, cross + info["local_mix"] + info["global_context"], atol=1e-6)
    assert info["gates"]["optical"].min() >= 0 and info["gates"]["optical"].max() <= 1


def test_forward_contract_on_odd_size_and_gradients():
    torch.manual_seed(0)
    fusion = DCHF(8, num_heads=2, cell=8)
    optical = torch.randn(2, 8, 13, 17)
    sar = torch.randn(2, 8, 13, 17)
    new_optical, new_sar, new_cross, info = fusion(optical, sar, None)
    zeros_cross = fusion(optical, sar, torch.zeros_like(optical))[2]
    assert torch.allclose(new_cross, zeros_cross)
    for value in (new_optical, new_sar, new_cross, info["global_context"], info["gates"]["optical"], info["gates"]["sar"]):
        assert value.shape == optical.shape
    assert info["discrepancy"].shape == info["reliability"].shape == (2, 1, 13, 17)
    assert torch.allclose(info["discrepancy"] + info["reliability"], torch.ones(()))
    assert info["cell_reliability"].shape == (2, 1, 2, 3)
    (new_optical.sum() + new_sar.sum() + new_cross.pow(2).sum()).backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_explicit_attention_path_matches_sdpa():
    fusion = DCHF(8, num_heads=2, cell=4).eval()
    inputs = torch.randn(3, 1, 8, 10, 9).unbind(0)
    fast = fusion(*inputs)[2]
    fusion.keep_attention = True
    assert (fusion(*inputs)[2] - fast).abs().max() < 1e-5
    assert fusion.last_attention.shape == (1, 2, 9, 9)


def test_plain_sum_fusion_has_the_same_info_keys():
    optical, sar, cross = torch.randn(3, 1, 4, 5, 5).unbind(0)
    new_optical, new_sar, new_cross, info = PlainSumFusion(4)(optical, sar, cross)
    assert new_optical is optical and new_sar is sar
    assert torch.allclose(new_cross, cross + optical + sar)
    assert torch.allclose(PlainSumFusion(4)(optical, sar, None)[2], optical + sar)
    dchf_info = DCHF(4, cell=2)(optical, sar, cross)[3]
    assert set(info) == set(dchf_info) and all(value is None for value in info.values())


def test_bad_input_raises_clear_errors():
    fusion = DCHF(4, cell=2)
    with pytest.raises(ValueError, match="reliability must be"):
        fusion(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4), reliability=torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="expected optical and SAR"):
        fusion(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 5))
    with pytest.raises(ValueError, match="must share batch"):
        reliability_weighted_pool(torch.randn(1, 2, 4, 4), torch.ones(1, 1, 4, 5), 2)


def test_redistribution_can_be_skipped_per_stream():
    torch.manual_seed(0)
    optical, sar, cross = torch.randn(3, 1, 8, 6, 6).unbind(0)
    full = DCHF(8, cell=2)
    only_optical = DCHF(8, cell=2, redistribute=("optical",))
    only_optical.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("sar_gate")})
    new_optical, new_sar, new_cross, info = only_optical(optical, sar, cross)
    reference = full(optical, sar, cross)
    assert new_sar is sar and info["gates"]["sar"].abs().sum() == 0
    assert torch.allclose(new_optical, reference[0]) and torch.allclose(new_cross, reference[2])
    assert only_optical.sar_gate is None and not any(k.startswith("sar_gate") for k in only_optical.state_dict())
    # no parameter is left without a gradient when only the optical output is used
    (new_optical.sum() + new_cross.sum()).backward()
    assert all(p.grad is not None for p in only_optical.parameters())
    with pytest.raises(ValueError, match="redistribute"):
        DCHF(8, redistribute=("cross",))


def test_stage1_fusion_without_cross_stream_has_no_dead_columns():
    """At stage 1 X does not exist (zeros): the columns of Conv1x1([R*O, S, X]) that read X
    would never receive a gradient. ``with_cross=False`` mixes [R*O, S] only and computes the
    same result as the 3C version fed zeros."""
    torch.manual_seed(0)
    dim = 8
    optical, sar = torch.randn(2, 2, dim, 13, 17).unbind(0)
    with_zeros = DCHF(dim, num_heads=2, cell=4)
    stage1 = DCHF(dim, num_heads=2, cell=4, with_cross=False)
    assert stage1.local_mix.weight.shape == (dim, 2 * dim, 1, 1)
    state = with_zeros.state_dict()
    state["local_mix.weight"] = state["local_mix.weight"][:, : 2 * dim]  # drop the columns that read X
    stage1.load_state_dict(state)
    reference = with_zeros(optical, sar, None)
    result = stage1(optical, sar)
    for expected, found in zip(reference[:3], result[:3]):
        torch.testing.assert_close(found, expected)
    # the 3C version: X's columns get exactly zero gradient; the 2C version: every element learns
    (reference[0].sum() + reference[1].sum() + reference[2].pow(2).sum()).backward()
    assert torch.all(with_zeros.local_mix.weight.grad[:, 2 * dim:] == 0)
    (result[0].sum() + result[1].sum() + result[2].pow(2).sum()).backward()
    assert torch.all(stage1.local_mix.weight.grad != 0)
    with pytest.raises(ValueError, match="with_cross=False"):
        stage1(optical, sar, torch.zeros_like(optical))


def test_encoder_builds_the_stage1_fusion_without_cross_stream():
    from edc_lab.models import build_model

    fusions = build_model("edc_tiny").encoder.fusions
    widths = [fusion.dim for fusion in fusions]
    assert [fusion.local_mix.in_channels for fusion in fusions] == [2 * widths[0]] + [3 * w for w in widths[1:]]
