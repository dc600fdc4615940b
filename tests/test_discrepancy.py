"""Discrepancy map, cloud BCE and AUROC (edc_lab.models.discrepancy)."""

import pytest
import torch
import torch.nn.functional as F

from edc_lab.models.discrepancy import ChannelLayerNorm, DiscrepancyMap, cloud_bce, discrepancy_auroc


def _identity_projections(module: DiscrepancyMap, dim: int) -> None:
    with torch.no_grad():
        for projection in (module.project_optical, module.project_sar):
            projection.weight.copy_(torch.eye(dim)[:, :, None, None])
            projection.bias.zero_()
        module.score.weight.fill_(1.0 / dim)
        module.score.bias.zero_()


def test_discrepancy_and_reliability_lie_in_unit_interval():
    module = DiscrepancyMap(8, shared_dim=6)
    optical, sar = 50 * torch.randn(2, 8, 9, 11), 50 * torch.randn(2, 8, 9, 11)
    discrepancy = module(optical, sar)
    reliability = 1 - discrepancy
    assert discrepancy.shape == (2, 1, 9, 11)
    for value in (discrepancy, reliability):
        assert value.min() >= 0 and value.max() <= 1


def test_identical_embeddings_disagree_less_than_unrelated_ones():
    dim = 8
    module = DiscrepancyMap(dim)
    _identity_projections(module, dim)
    optical = torch.randn(2, dim, 6, 6)
    unrelated = torch.randn(2, dim, 6, 6)
    same = module(optical, optical)
    different = module(optical, unrelated)
    assert torch.allclose(same, torch.full_like(same, 0.5))  # sigmoid(0): no disagreement at all
    assert (different > same).all()
    # the channel LayerNorm makes a brighter / offset optical pixel no disagreement
    assert torch.allclose(module(3.0 * optical + 2.0, optical), same, atol=1e-4)


def test_channel_layer_norm_normalises_each_pixel_over_channels():
    norm = ChannelLayerNorm(5, affine=False)
    x = torch.randn(2, 5, 3, 4) * 7 + 3
    y = norm(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 3, 4), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 3, 4), atol=1e-3)


def test_cloud_bce_matches_hand_computation_on_downsampled_mask():
    discrepancy = torch.tensor([[[[0.9, 0.2]]]])  # (1, 1, 1, 2)
    cloud_mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]])  # (1, 2, 4): fractions 1 and 0.25
    loss = cloud_bce(discrepancy, cloud_mask)
    expected = -(torch.log(torch.tensor(0.9)) + 0.25 * torch.log(torch.tensor(0.2)) + 0.75 * torch.log(torch.tensor(0.8))) / 2
    assert torch.isclose(loss, expected, atol=1e-6)
    assert torch.isclose(DiscrepancyMap.cloud_bce(discrepancy, cloud_mask[:, None]), expected, atol=1e-6)


def test_cloud_bce_trains_the_map_towards_the_mask():
    torch.manual_seed(0)
    module = DiscrepancyMap(4)
    optical, sar = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    before = cloud_bce(module(optical, sar), mask).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = cloud_bce(module(optical, sar), mask)
        loss.backward()
        optimizer.step()
    assert loss.item() < before


def test_bad_shapes_raise_clear_errors():
    module = DiscrepancyMap(4)
    with pytest.raises(ValueError, match="same shape"):
        module(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 7))
    with pytest.raises(ValueError, match=r"expected discrepancy \(B, 1, h, w\)"):
        cloud_bce(torch.rand(1, 2, 4, 4), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="cloud mask"):
        cloud_bce(torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 8, 8))


def test_auroc_matches_hand_values():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8]).reshape(1, 1, 2, 2)
    mask = torch.tensor([0, 0, 1, 1]).reshape(1, 2, 2)
    assert discrepancy_auroc(scores, mask) == pytest.approx(0.75)
    assert discrepancy_auroc(mask[:, None].float(), mask) == pytest.approx(1.0)
    assert discrepancy_auroc(1 - mask[:, None].float(), mask) == pytest.approx(0.0)
    assert discrepancy_auroc(torch.full((1, 1, 2, 2), 0.3), mask) == pytest.approx(0.5)  # ties count half


def test_auroc_scores_low_resolution_maps_on_the_mask_grid():
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1
    coarse = F.adaptive_avg_pool2d(mask[:, None], (4, 4))  # stride-8 map of the true cloud fraction
    assert discrepancy_auroc(coarse, mask) > 0.95
    with pytest.raises(ValueError, match="cloudy and clear"):
        discrepancy_auroc(coarse, torch.zeros(1, 32, 32))


def test_cloud_bce_equals_torch_binary_cross_entropy_even_at_0_and_1():
    discrepancy = torch.rand(2, 1, 4, 4)
    discrepancy[0, 0, 0, :2] = torch.tensor([0.0, 1.0])
    cloud_mask = (torch.rand(2, 8, 8) > 0.5).float()
    target = F.adaptive_avg_pool2d(cloud_mask[:, None], (4, 4))
    assert torch.isclose(cloud_bce(discrepancy, cloud_mask), F.binary_cross_entropy(discrepancy, target), atol=1e-5)


def test_cloud_bce_gradient_is_finite_where_d_saturates():
    """Half-precision sigmoids reach exactly 0 and 1; the loss must still give finite gradients there."""
    discrepancy = torch.tensor([0.0, 1.0, 0.5, 1e-35, 1.0 - 2**-24]).reshape(1, 1, 1, 5).requires_grad_()
    for cloud in (0.0, 1.0):
        discrepancy.grad = None
        cloud_mask = torch.full((1, 1, 5), cloud)
        loss = cloud_bce(discrepancy, cloud_mask)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(discrepancy.grad).all()
        expected = F.binary_cross_entropy(discrepancy.detach()[..., :3], cloud_mask[:, None, :, :3])
        assert torch.isclose(cloud_bce(discrepancy.detach()[..., :3], cloud_mask[..., :3]), expected, atol=1e-6)
    # in bf16 the sigmoid of a large logit is exactly 1: the loss trains it back without NaN
    logits = torch.tensor([[[[8.0, -8.0]]]], requires_grad=True)
    d = torch.sigmoid(logits.bfloat16())
    assert d.max().item() == 1.0
    cloud_bce(d, torch.tensor([[[0.0, 1.0]]])).backward()
    assert torch.isfinite(logits.grad).all()


def test_reliability_stays_positive_in_bfloat16_for_large_logits():
    """In bfloat16, sigmoid(z) rounds to exactly 1 from z of about 6 on, so R = 1 - D would be 0 and
    a merely 'unreliable' pixel would be erased; R = sigmoid(-z) in float32 keeps it positive."""
    torch.manual_seed(0)
    module = DiscrepancyMap(4).to(torch.bfloat16)
    with torch.no_grad():
        module.score.weight.fill_(0.01)
        module.score.bias.fill_(12.0)
    optical, sar = torch.randn(2, 2, 4, 5, 6, dtype=torch.bfloat16).unbind(0)
    discrepancy, reliability = module.with_reliability(optical, sar)
    assert discrepancy.dtype == reliability.dtype == torch.bfloat16
    assert torch.all(1 - discrepancy == 0)  # what R = 1 - D would give
    logits = module.logits(optical, sar).float()
    assert torch.all(reliability > 0)
    torch.testing.assert_close(reliability.float(), torch.sigmoid(-logits), rtol=1e-2, atol=0)
    torch.testing.assert_close(module(optical, sar), discrepancy)


def test_auroc_scores_each_input_pixel_with_the_cell_that_covers_it():
    """37 x 53 at stride 32: a 2 x 2 map whose last cell covers only 5 x 21 real pixels. A D equal to
    1 on that cell is a perfect detector of a cloud filling it (a stretched map would blur it)."""
    mask = torch.zeros(1, 37, 53)
    mask[:, 32:, 32:] = 1
    discrepancy = torch.zeros(1, 1, 2, 2)
    discrepancy[..., 1, 1] = 1.0
    assert discrepancy_auroc(discrepancy, mask) == 1.0
    with pytest.raises(ValueError, match="power-of-two"):
        discrepancy_auroc(torch.zeros(1, 1, 3, 3), mask)


def test_monotone_discrepancy_can_only_grow_with_the_disagreement():
    torch.manual_seed(0)
    free, monotone = DiscrepancyMap(8), DiscrepancyMap(8, monotone=True)
    monotone.load_state_dict(free.state_dict())  # same parameters, same names
    with torch.no_grad():
        free.score.weight.copy_(torch.linspace(-1.0, 1.0, 8).view(1, 8, 1, 1))
        monotone.score.weight.copy_(free.score.weight)
    optical, sar = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    disagreement = torch.stack(monotone.embed(optical, sar)).diff(dim=0)[0].abs()
    weights = torch.nn.functional.softplus(monotone.score.weight).view(1, 8, 1, 1) / 8
    torch.testing.assert_close(monotone.monotone_weight(), weights)
    expected = (weights * disagreement).sum(1, keepdim=True) + monotone.score.bias.view(1, 1, 1, 1)
    torch.testing.assert_close(monotone.logits(optical, sar), expected)
    # the free map with a negative weight lowers D as that channel disagrees more; the monotone never
    channel = torch.zeros(1, 8, 1, 1)
    channel[0, 0] = 1.0  # the most negative free weight
    more = disagreement + channel
    assert (free.score(more) < free.score(disagreement)).all()
    assert (torch.nn.functional.conv2d(more, weights.view(1, 8, 1, 1), monotone.score.bias) >= expected).all()
    # gradients reach the raw weights through the softplus
    monotone.logits(optical, sar).sum().backward()
    assert monotone.score.weight.grad is not None and monotone.score.weight.grad.abs().min() > 0
    # a fresh monotone map is not saturated (a sum over channels would give D = 1 everywhere)
    fresh = DiscrepancyMap(64, monotone=True)
    d = fresh(torch.randn(2, 64, 6, 6), torch.randn(2, 64, 6, 6))
    assert 0.05 < d.min() and d.max() < 0.95 and d.std() > 0


def test_edc_discrepancy_option_builds_monotone_maps_and_refuses_unknown_values():
    from edc_lab.models import build_model

    model = build_model("edc_tiny", discrepancy="monotone")
    assert all(fusion.discrepancy.monotone for fusion in model.encoder.fusions)
    assert model.build_args["discrepancy"] == "monotone"
    assert not any(fusion.discrepancy.monotone for fusion in build_model("edc_tiny").encoder.fusions)
    with pytest.raises(ValueError, match=r"discrepancy.*'free' or 'monotone'.*'signed'"):
        build_model("edc_tiny", discrepancy="signed")
