"""The encoder's grid (edc_lab.models.grid): coarse maps and the cloud mask stay aligned when
H or W is not a multiple of 32.

A stride-s map has ceil(H / s) x ceil(W / s) cells and cell i covers the input pixels
[i*s, (i+1)*s) of the bottom/right padded image. Resizing "to the other size" instead
stretches the grid: at 300 x 300 the last stride-32 cell lands 18.8 pixels off, and a cloud
filling exactly the last stride-32 cell of a 100-pixel image got a stage-4 target of 0.16.
"""

from __future__ import annotations

import pytest
import torch
from einops import repeat

from edc_lab.models import build_model
from edc_lab.models.discrepancy import cloud_bce, discrepancy_auroc, resize_cloud_mask
from edc_lab.models.grid import grid_size, infer_stride, pool_to_grid, pool_to_map, upsample_to_input
from edc_lab.models.heads import FPNNeck, sum_at_finest
from edc_lab.train.losses import region_weight
from edc_lab.train.metrics import discrepancy_targets

STRIDES = (4, 8, 16, 32)
SIZES = [(100, 100), (300, 300), (37, 53)]


def last_cell_cloud(height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A (1, H, W) mask that is 1 on exactly the real pixels of the last (bottom-right) stride-32 cell."""
    rows, cols = grid_size((height, width), 32)
    top, left = 32 * (rows - 1), 32 * (cols - 1)
    mask = torch.zeros(1, height, width)
    mask[:, top:, left:] = 1.0
    return mask, (top, left)


def expected_cells(height: int, width: int, stride: int, top: int, left: int) -> torch.Tensor:
    """(1, 1, h, w): 1 on the stride-``stride`` cells that lie inside the cloud, 0 elsewhere."""
    rows, cols = grid_size((height, width), stride)
    target = torch.zeros(1, 1, rows, cols)
    target[..., top // stride:, left // stride:] = 1.0  # top, left are multiples of 32, so of every stride
    return target


def test_infer_stride_is_the_unique_power_of_two():
    assert infer_stride((300, 300), (10, 10)) == 32  # ceil(300 / 32) = 10
    assert infer_stride((100, 100), (25, 25)) == 4
    assert infer_stride((37, 53), (3, 4)) == 16
    assert infer_stride((37, 53), (37, 53)) == 1
    assert infer_stride((5, 100), (1, 4)) == 32  # one side with one cell: the other decides
    assert infer_stride((37, 53), (1, 1)) == 64  # any s >= 53 pools the same: the smallest
    for height in range(2, 300):
        for stride in (2, 4, 8, 16, 32):
            cells = -(-height // stride)
            if cells >= 2:
                assert infer_stride((height, height), (cells, cells)) == stride
    with pytest.raises(ValueError, match="power-of-two"):
        infer_stride((100, 100), (6, 6))  # ceil(100 / 16) = 7, ceil(100 / 32) = 4


@pytest.mark.parametrize("height, width", SIZES)
def test_a_cloud_in_the_last_encoder_cell_is_one_cell_at_every_stage(height, width):
    """Targets are 1 exactly on the cells of the cloud and 0 elsewhere, on the model's own map sizes."""
    model = build_model("edc_tiny").eval()
    with torch.no_grad():
        maps = model(torch.rand(1, 4, height, width), torch.rand(1, 2, height, width))["discrepancy"]
    mask, (top, left) = last_cell_cloud(height, width)
    for stride, discrepancy in zip(STRIDES, maps):
        size = tuple(discrepancy.shape[-2:])
        assert size == grid_size((height, width), stride)
        expected = expected_cells(height, width, stride, top, left)
        torch.testing.assert_close(resize_cloud_mask(mask, size), expected, rtol=0, atol=0)
        torch.testing.assert_close(region_weight(mask, size, "cloudy"), expected, rtol=0, atol=0)
        torch.testing.assert_close(region_weight(mask, size, "clear"), 1 - expected, rtol=0, atol=0)
        _, labels = discrepancy_targets(discrepancy, mask)
        assert torch.equal(labels, expected.flatten() > 0.5)
        # a D equal to the target has zero cross-entropy, and ranks every cloudy pixel first
        assert cloud_bce(expected, mask).item() == pytest.approx(0.0, abs=1e-6)
        assert discrepancy_auroc(expected, mask) == 1.0


@pytest.mark.parametrize("height, width", SIZES)
def test_upsampling_a_map_and_pooling_it_back_round_trips(height, width):
    torch.manual_seed(0)
    for stride in (1, 2, 4, 8, 16, 32, 64):
        cells = torch.rand(2, 1, *grid_size((height, width), stride))
        on_input = upsample_to_input(cells, stride, (height, width), mode="nearest")
        assert on_input.shape[-2:] == (height, width)
        torch.testing.assert_close(pool_to_grid(on_input, stride), cells)
        torch.testing.assert_close(pool_to_map(on_input[:, 0], cells.shape[-2:]), cells)
        # nearest upsampling = every input pixel takes the value of the cell that covers it
        repeated = repeat(cells, "b c h w -> b c (h sh) (w sw)", sh=stride, sw=stride)[..., :height, :width]
        assert torch.equal(on_input, repeated)


def test_pooling_counts_only_the_real_pixels_of_a_border_cell():
    mask = torch.zeros(1, 37, 53)
    mask[:, 32:, 32:48] = 1.0  # 16 of the 21 real columns of the last cell (5 x 21 real pixels)
    fraction = pool_to_grid(mask, 32)
    assert fraction.shape == (1, 1, 2, 2)
    assert fraction[0, 0, 1, 1].item() == pytest.approx(16 / 21)
    assert fraction[0, 0].sum().item() == pytest.approx(16 / 21)
    with pytest.raises(ValueError, match="grid"):
        pool_to_grid(mask, 32, (3, 3))


@pytest.mark.parametrize("height, width", [(100, 130), (37, 53), (128, 128)])
def test_sum_at_finest_upsamples_by_the_stride_ratio(height, width):
    """Bilinear upsampling reproduces a linear function exactly. Fill each pyramid level with
    the input-pixel coordinates of its cell centres, (i + 1/2) * stride: on P_1's grid the
    upsampled level must hold P_1's own cell centres wherever no border clamping happens."""
    sizes = [grid_size((height, width), stride) for stride in STRIDES]

    def centres(stride, rows, cols):
        row = (torch.arange(rows) + 0.5) * stride
        col = (torch.arange(cols) + 0.5) * stride
        return torch.stack([row[:, None].expand(rows, cols), col[None, :].expand(rows, cols)])[None]

    fine = centres(4, *sizes[0])
    for level in (1, 2, 3):
        pyramid = [torch.zeros(1, 2, *size) for size in sizes]
        pyramid[level] = centres(STRIDES[level], *sizes[level])
        fused = sum_at_finest(pyramid)
        assert fused.shape == fine.shape
        ratio = 2**level
        for axis, cells in ((0, sizes[level][0]), (1, sizes[level][1])):
            index = torch.arange(sizes[0][axis])
            source = (index + 0.5) / ratio - 0.5  # where align_corners=False samples the coarse map
            inside = (source >= 0) & (source <= cells - 1)
            values = fused[0, axis].index_select(1 - axis, torch.tensor([0]))  # one row / column
            expected = fine[0, axis].index_select(1 - axis, torch.tensor([0]))
            values, expected = values.flatten()[inside], expected.flatten()[inside]
            torch.testing.assert_close(values, expected)


def test_fpn_top_down_upsamples_by_two_and_crops():
    """The top-down pass adds each coarser cell onto the 2 x 2 finer cells it covers, on odd sizes too."""
    neck = FPNNeck([2, 2, 2], dim=2)
    for conv in neck.lateral:
        torch.nn.init.zeros_(conv.bias)
        conv.weight.data = torch.eye(2).reshape(2, 2, 1, 1)
    neck.smooth = torch.nn.ModuleList([torch.nn.Identity()] * 3)
    fine, middle, coarse = torch.randn(1, 2, 13, 17), torch.randn(1, 2, 7, 9), torch.randn(1, 2, 4, 5)
    p1, p2, p3 = neck([fine, middle, coarse])

    def up2(x, size):
        return repeat(x, "b c h w -> b c (h 2) (w 2)")[..., : size[0], : size[1]]

    torch.testing.assert_close(p3, coarse)
    torch.testing.assert_close(p2, middle + up2(coarse, (7, 9)))
    torch.testing.assert_close(p1, fine + up2(p2, (13, 17)))


def test_upsample_to_input_refuses_a_map_that_does_not_cover_the_input():
    with pytest.raises(ValueError, match="does not cover"):
        upsample_to_input(torch.zeros(1, 1, 4, 4), 4, (17, 16))
