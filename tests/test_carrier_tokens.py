"""Carrier-token attention (HAT), dense attention and their cost (edc_lab.models.carrier_tokens)."""

import pytest
import torch
from einops import rearrange
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edc_lab.models.carrier_tokens import (
    CarrierTokenAttention,
    CarrierTokenStage,
    DenseAttention,
    MultiHeadSelfAttention,
    TokenInitializer,
    carrier_attention_maps,
)


def _torch_attention_like(attention: MultiHeadSelfAttention, dim: int, heads: int) -> nn.MultiheadAttention:
    reference = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.qkv.weight)
        reference.in_proj_bias.copy_(attention.qkv.bias)
        reference.out_proj.weight.copy_(attention.proj.weight)
        reference.out_proj.bias.copy_(attention.proj.bias)
    return reference.eval()


@pytest.mark.parametrize("keep_attention", [False, True])
def test_local_step_with_one_window_equals_torch_multihead_attention(keep_attention):
    """One window over the whole map and no carriers = pre-norm MHSA + MLP with torch's attention."""
    dim, heads, size = 16, 4, 8
    block = CarrierTokenAttention(dim, heads, window=size).eval()
    block.keep_attention = keep_attention
    x = torch.randn(2, dim, size, size)
    out, carrier = block.local_step(x, carrier=None)
    assert carrier is None

    reference = _torch_attention_like(block.attn, dim, heads)
    tokens = rearrange(x, "b c h w -> b (h w) c")
    normed = block.norm1(tokens)
    attended, weights = reference(normed, normed, normed, average_attn_weights=False)
    tokens = tokens + attended
    tokens = tokens + block.mlp(block.norm2(tokens))
    expected = rearrange(tokens, "b (h w) c -> b c h w", h=size)
    assert (out - expected).abs().max() < 1e-5
    if keep_attention:
        assert (block.last_attention["local"] - weights).abs().max() < 1e-6


def test_padded_pixels_are_never_attended():
    """A window cut by the border gives its real pixels exactly plain attention over the real pixels only."""
    dim, heads, window = 8, 2, 7
    block = CarrierTokenAttention(dim, heads, window=window).eval()
    x = torch.randn(1, dim, 13, 17)  # last window row has 6 real rows, last window column 3 real columns
    out, _ = block.local_step(x)
    corner = x[:, :, 7:13, 14:17]
    reference = _torch_attention_like(block.attn, dim, heads)
    tokens = rearrange(corner, "b c h w -> b (h w) c")
    normed = block.norm1(tokens)
    tokens = tokens + reference(normed, normed, normed)[0]
    tokens = tokens + block.mlp(block.norm2(tokens))
    expected = rearrange(tokens, "b (h w) c -> b c h w", h=6)
    assert (out[:, :, 7:13, 14:17] - expected).abs().max() < 1e-5


def test_token_initializer_averages_the_depthwise_conv_over_real_pixels():
    dim, window = 4, 4
    init = TokenInitializer(dim, window, carriers=2)
    x = torch.randn(1, dim, 10, 7)
    carriers = init(x)
    assert carriers.shape == (1, dim, 6, 4)  # ceil(10/4)*2, ceil(7/4)*2
    conv = init.dwconv(x)
    assert torch.allclose(carriers[0, :, 1, 2], conv[0, :, 2:4, 4:6].mean((-1, -2)), atol=1e-6)
    # border cell: rows 8..9 and column 6 are real, the rest is padding and does not count
    assert torch.allclose(carriers[0, :, 4, 3], conv[0, :, 8:10, 6:7].mean((-1, -2)), atol=1e-6)
    # cells lying wholly in the padding are empty (zero), not NaN
    assert torch.isfinite(carriers).all() and carriers[0, :, 5, :].abs().sum() == 0


@pytest.mark.parametrize("height,width,carriers", [(100, 130, 1), (13, 17, 1), (9, 17, 2), (14, 14, 1)])
def test_any_size_comes_back_at_input_size(height, width, carriers):
    block = CarrierTokenAttention(8, 2, window=7 if carriers == 1 else 8, carriers=carriers, propagate=True)
    x = torch.randn(2, 8, height, width)
    out, carrier = block(x)
    window = block.window
    assert out.shape == x.shape
    assert carrier.shape == (2, 8, -(-height // window) * carriers, -(-width // window) * carriers)
    assert torch.isfinite(out).all() and torch.isfinite(carrier).all()


@pytest.mark.parametrize("height,width,carriers", [(14, 14, 1), (13, 17, 1), (9, 17, 2)])
def test_sdpa_path_equals_explicit_softmax_path(height, width, carriers):
    torch.manual_seed(1)
    block = CarrierTokenAttention(8, 2, window=8 if carriers == 2 else 7, carriers=carriers, propagate=True).eval()
    x = torch.randn(2, 8, height, width)
    fast, fast_carrier = block(x)
    block.keep_attention = True
    explicit, explicit_carrier = block(x)
    assert (fast - explicit).abs().max() < 1e-5 and (fast_carrier - explicit_carrier).abs().max() < 1e-5
    attention = block.last_attention
    assert torch.allclose(attention["global"].sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(attention["local"].sum(-1), torch.ones(()), atol=1e-5)
    dense = DenseAttention(8, 2).eval()
    fast, _ = dense(x)
    dense.keep_attention = True
    assert (fast - dense(x)[0]).abs().max() < 1e-5


def test_carrier_attention_maps_put_weights_back_on_the_image():
    block = CarrierTokenAttention(8, 2, window=4).eval()
    block.keep_attention = True
    block(torch.randn(1, 8, 12, 10))
    maps = carrier_attention_maps(block, (1, 2))
    assert maps["global"].shape == (3, 3) and maps["local"].shape == (12, 10)
    assert torch.isclose(maps["global"].sum(), torch.tensor(1.0), atol=1e-5)
    # local attention lives only inside window (1, 2): rows 4..7, columns 8..9 (real part)
    outside = maps["local"].clone()
    outside[4:8, 8:10] = 0
    assert outside.abs().sum() == 0 and maps["local"][4:8, 8:10].sum() > 0
    with pytest.raises(ValueError, match="outside the carrier map"):
        carrier_attention_maps(block, (3, 0))


def test_carrier_tokens_carry_information_between_distant_windows():
    """Perturbing window (0, 0) changes window (3, 3) only through the global step."""
    torch.manual_seed(2)
    block = CarrierTokenAttention(8, 2, window=4).eval()
    x = torch.randn(1, 8, 16, 16)
    perturbed = x.clone()
    perturbed[:, :, :4, :4] += 3.0 * torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        far_full = block(perturbed)[0][..., 12:, 12:] - block(x)[0][..., 12:, 12:]
        # without the global step each window sees only itself and its own carrier
        local_only = (
            block.local_step(perturbed, block.token_init(perturbed))[0][..., 12:, 12:]
            - block.local_step(x, block.token_init(x))[0][..., 12:, 12:]
        )
    assert far_full.abs().max() > 1e-3
    assert local_only.abs().max() == 0


def test_gradients_reach_every_parameter():
    stage = CarrierTokenStage(8, depth=2, num_heads=2, window=4, carriers=1, mlp_ratio=2.0)
    x = torch.randn(2, 8, 10, 9, requires_grad=True)
    stage(x).pow(2).mean().backward()
    for name, parameter in stage.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    assert stage.blocks[0].token_init is not None and stage.blocks[1].token_init is None
    assert stage.blocks[1].propagate and not stage.blocks[0].propagate


def test_dense_stage_and_single_block_stage():
    x = torch.randn(1, 8, 5, 6)
    assert CarrierTokenStage(8, 2, 2, dense=True)(x).shape == x.shape
    single = CarrierTokenStage(8, 1, 2, window=4)
    assert single.blocks[0].propagate and single.blocks[0].token_init is not None
    assert single(x).shape == x.shape


def test_bad_input_raises_clear_errors():
    block = CarrierTokenAttention(8, 2, window=4)
    with pytest.raises(ValueError, match=r"carrier map .* must be \(1, 8, 2, 2\)"):
        block(torch.randn(1, 8, 8, 8), torch.randn(1, 8, 3, 3))
    with pytest.raises(ValueError, match="expected x"):
        block(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="divide"):
        CarrierTokenAttention(8, 2, window=7, carriers=2)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CarrierTokenAttention(10, 3)
    follower = CarrierTokenAttention(8, 2, window=4, initialize_carriers=False)
    with pytest.raises(ValueError, match="initialize_carriers=False"):
        follower(torch.randn(1, 8, 8, 8))


def _flops(module, size, dim=32):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.randn(1, dim, size, size))
    return counter.get_total_flops()


def test_cost_linear_for_carrier_tokens_quadratic_for_dense():
    """Doubling H and W (4x tokens): HAT costs 4x (+-10 %), dense attention approaches 16x."""
    hat = CarrierTokenAttention(32, 2, window=7).eval()
    dense = DenseAttention(32, 2).eval()
    for size in (28, 56):
        hat_ratio = _flops(hat, 2 * size) / _flops(hat, size)
        assert 3.6 <= hat_ratio <= 4.4, (size, hat_ratio)
    dense_ratio = _flops(dense, 56) / _flops(dense, 28)
    assert dense_ratio > 12.0, dense_ratio
    # attention itself is counted (the CPU SDPA kernel has a registered FLOP formula)
    assert _flops(dense, 28) > 4 * (28 * 28) ** 2 * 32 * 0.99
    assert _flops(hat, 56) < _flops(dense, 56) / 10


def test_dense_stage_matches_the_parameters_of_a_carrier_token_stage():
    """A HAT block is two attention + MLP layers (global, local), a dense block one: the dense stage
    gets the MLP ratio 2 r + 2 and then holds as many parameters (within 2 %: biases, norms and the
    carriers' depth-wise convolution are not matched); without matching, about half."""
    from edc_lab.models.carrier_tokens import capacity_matched_mlp_ratio

    def count(module):
        return sum(p.numel() for p in module.parameters())

    for dim, depth, ratio in ((80, 1, 2.0), (256, 6, 4.0)):
        carrier = count(CarrierTokenStage(dim, depth, 4, window=8, mlp_ratio=ratio))
        dense = CarrierTokenStage(dim, depth, 4, mlp_ratio=ratio, dense=True)
        assert dense.blocks[0].mlp.fc1.out_features == int(dim * capacity_matched_mlp_ratio(ratio))
        assert abs(count(dense) - carrier) <= 0.02 * carrier, (count(dense), carrier)
        unmatched = count(CarrierTokenStage(dim, depth, 4, mlp_ratio=ratio, dense=True, match_capacity=False))
        assert unmatched < 0.6 * carrier
