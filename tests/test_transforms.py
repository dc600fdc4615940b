"""Paired transforms: every layer gets exactly the same geometry; rotations and flips are exact."""

import pytest
import torch

from edc_lab.data.transforms import (
    CenterCrop,
    Compose,
    RandomCrop,
    RandomFlip,
    RandomRotate90,
    crop,
    flip,
    rotate90,
    spatial_size,
)


def _coordinate_sample(height=12, width=9):
    """Every layer encodes the original (row, col) of each pixel, in its own way."""
    rows = torch.arange(height).view(height, 1).expand(height, width).float()
    cols = torch.arange(width).view(1, width).expand(height, width).float()
    index = rows * width + cols
    return {
        "optical": torch.stack([rows, cols, index, -index]),  # (4, H, W)
        "optical_clear": torch.stack([index, rows, cols, index * 2]),
        "sar": torch.stack([cols, rows]),  # (2, H, W)
        "label": index.long(),  # (H, W)
        "cloud_mask": index.float() / 1000,  # (H, W)
        "has_clear": torch.tensor(True),  # not spatial: passes through
    }


def _assert_consistent(sample, width=9):
    """All layers still agree on which original pixel sits where."""
    rows, cols = sample["optical"][0], sample["optical"][1]
    index = rows * width + cols
    assert torch.equal(sample["optical"][2], index) and torch.equal(sample["optical"][3], -index)
    assert torch.equal(sample["optical_clear"][0], index)
    assert torch.equal(sample["optical_clear"][1], rows) and torch.equal(sample["optical_clear"][2], cols)
    assert torch.equal(sample["sar"][0], cols) and torch.equal(sample["sar"][1], rows)
    assert torch.equal(sample["label"], index.long())
    assert torch.allclose(sample["cloud_mask"], index / 1000)
    assert bool(sample["has_clear"])


@pytest.mark.parametrize(
    "transform",
    [RandomCrop(5), RandomCrop((7, 4)), CenterCrop(6), RandomFlip(p=1.0), RandomFlip(p=0.5), RandomRotate90(),
     Compose([RandomCrop(8), RandomFlip(), RandomRotate90()])],
)
def test_every_layer_gets_the_same_geometry(transform):
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        _assert_consistent(transform(_coordinate_sample(), generator=generator))


def test_input_is_not_modified():
    sample = _coordinate_sample()
    before = {key: value.clone() for key, value in sample.items()}
    Compose([RandomCrop(5), RandomFlip(p=1.0), RandomRotate90()])(sample)
    assert all(torch.equal(sample[key], before[key]) for key in sample)


def test_crops_cut_contiguous_windows_of_the_requested_size():
    sample = _coordinate_sample()
    generator = torch.Generator().manual_seed(1)
    corners = set()
    for _ in range(30):
        out = RandomCrop((5, 4))(sample, generator=generator)
        rows, cols = out["optical"][0], out["optical"][1]
        assert out["label"].shape == (5, 4) and out["sar"].shape == (2, 5, 4)
        top, left = int(rows[0, 0]), int(cols[0, 0])
        corners.add((top, left))
        assert torch.equal(rows, torch.arange(top, top + 5).view(5, 1).float().expand(5, 4))
        assert torch.equal(cols, torch.arange(left, left + 4).view(1, 4).float().expand(5, 4))
    assert len(corners) > 10 and all(0 <= t <= 7 and 0 <= c <= 5 for t, c in corners)
    centre = CenterCrop((6, 5))(sample)
    assert (int(centre["optical"][0, 0, 0]), int(centre["optical"][1, 0, 0])) == (3, 2)
    assert spatial_size(RandomCrop((12, 9))(sample)) == (12, 9)  # the whole image is a valid crop


def test_crop_larger_than_the_sample_is_refused_clearly():
    with pytest.raises(ValueError, match=r"RandomCrop: expected a sample of at least 16x16 pixels, found 12x9"):
        RandomCrop(16)(_coordinate_sample())
    with pytest.raises(ValueError, match=r"CenterCrop.*at least 10x10.*found 12x9"):
        CenterCrop(10)(_coordinate_sample())
    # at_most=True: the short side (9) is kept whole, the long side (12) is cut to its central 10 rows
    kept = CenterCrop(10, at_most=True)(_coordinate_sample())
    assert spatial_size(kept) == (10, 9)
    assert (int(kept["optical"][0, 0, 0]), int(kept["optical"][1, 0, 0])) == (1, 0)
    with pytest.raises(ValueError, match="positive crop size"):
        RandomCrop(0)


def test_layers_on_different_grids_are_refused():
    sample = _coordinate_sample()
    sample["label"] = sample["label"][:-1]
    with pytest.raises(ValueError, match=r"one \(H, W\) grid.*label"):
        RandomFlip()(sample)


def test_rotating_four_times_and_flipping_twice_is_identity():
    sample = _coordinate_sample()
    once = rotate90(sample, 1)
    assert once["optical"].shape == (4, 9, 12) and once["label"].shape == (9, 12)  # H and W swap
    _assert_consistent(once)
    turned = sample
    for _ in range(4):
        turned = rotate90(turned, 1)
    assert all(torch.equal(turned[key], sample[key]) for key in sample)
    for horizontal, vertical in [(True, False), (False, True), (True, True)]:
        twice = flip(flip(sample, horizontal, vertical), horizontal, vertical)
        assert all(torch.equal(twice[key], sample[key]) for key in sample)
    # A half turn is both flips.
    half_turn, both_flips = rotate90(sample, 2), flip(sample, True, True)
    assert all(torch.equal(half_turn[key], both_flips[key]) for key in sample)
    assert torch.equal(crop(sample, 2, 3, 4, 5)["label"], sample["label"][2:6, 3:8])


def test_random_rotation_draws_all_four_quarter_turns_uniformly():
    sample = _coordinate_sample(6, 6)
    generator = torch.Generator().manual_seed(3)
    rotations = [rotate90(sample, k)["label"] for k in range(4)]
    counts = [0, 0, 0, 0]
    for _ in range(400):
        label = RandomRotate90()(sample, generator=generator)["label"]
        counts[[torch.equal(label, r) for r in rotations].index(True)] += 1
    assert all(70 <= c <= 130 for c in counts), counts


def test_flip_probability_and_switches():
    sample = _coordinate_sample()
    assert torch.equal(RandomFlip(p=0.0)(sample)["label"], sample["label"])
    assert torch.equal(RandomFlip(p=1.0, vertical=False)(sample)["label"], sample["label"].flip(-1))
    assert torch.equal(RandomFlip(p=1.0, horizontal=False)(sample)["label"], sample["label"].flip(-2))
    generator = torch.Generator().manual_seed(0)
    flipped = sum(
        not torch.equal(RandomFlip(p=0.5, vertical=False)(sample, generator=generator)["label"], sample["label"])
        for _ in range(400)
    )
    assert 160 <= flipped <= 240
    with pytest.raises(ValueError, match="probability"):
        RandomFlip(p=1.5)


def test_same_generator_seed_same_result():
    pipeline = Compose([RandomCrop(7), RandomFlip(), RandomRotate90()])
    first = pipeline(_coordinate_sample(), generator=torch.Generator().manual_seed(42))
    again = pipeline(_coordinate_sample(), generator=torch.Generator().manual_seed(42))
    assert all(torch.equal(first[key], again[key]) for key in first)
    # A generator given at construction is used when none is passed at call time.
    seeded = RandomCrop(7, generator=torch.Generator().manual_seed(5))
    reference = RandomCrop(7)(_coordinate_sample(), generator=torch.Generator().manual_seed(5))
    assert torch.equal(seeded(_coordinate_sample())["label"], reference["label"])
