"""Window partition / reverse and pad / crop (edc_lab.models.windows)."""

import pytest
import torch

from edc_lab.models.windows import crop_to, pad_to_multiple, valid_mask, window_partition, window_reverse


@pytest.mark.parametrize("window", [1, 4, 7])
def test_partition_then_reverse_is_identity(window):
    x = torch.randn(2, 5, 3 * window, 4 * window)
    tokens = window_partition(x, window)
    assert tokens.shape == (2 * 3 * 4, window * window, 5)
    assert torch.equal(window_reverse(tokens, window, 3 * window, 4 * window), x)


def test_partition_cuts_row_major_windows():
    """Window number (b, i, j) holds pixels x[b, :, i*w:(i+1)*w, j*w:(j+1)*w], read row by row."""
    window = 3
    x = torch.randn(2, 4, 6, 9)
    tokens = window_partition(x, window)
    rows, cols = 2, 3
    for b in range(2):
        for i in range(rows):
            for j in range(cols):
                patch = x[b, :, i * window:(i + 1) * window, j * window:(j + 1) * window]
                expected = patch.reshape(4, -1).T  # (w*w, C), row-major inside the window
                assert torch.equal(tokens[b * rows * cols + i * cols + j], expected)


def test_padding_leaves_multiples_unchanged():
    x = torch.randn(1, 3, 14, 21)
    padded, size = pad_to_multiple(x, 7)
    assert padded is x and size == (14, 21)
    assert torch.equal(crop_to(padded, size), x)


@pytest.mark.parametrize("height,width,multiple", [(100, 130, 7), (13, 17, 8), (1, 1, 4)])
def test_odd_sizes_pad_with_zeros_and_crop_back(height, width, multiple):
    x = torch.randn(2, 3, height, width)
    padded, size = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - height < multiple and padded.shape[-1] - width < multiple
    assert padded[..., height:, :].abs().sum() == 0 and padded[..., :, width:].abs().sum() == 0
    restored = crop_to(window_reverse(window_partition(padded, multiple), multiple, *padded.shape[-2:]), size)
    assert torch.equal(restored, x)
    mask = valid_mask(size, multiple)
    assert mask.shape == (1, 1, *padded.shape[-2:]) and mask.sum() == height * width


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="multiples of the window 4"):
        window_partition(torch.randn(1, 2, 6, 8), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        pad_to_multiple(torch.randn(3, 8, 8), 4)
    with pytest.raises(ValueError, match="larger size"):
        crop_to(torch.randn(1, 1, 4, 4), (5, 4))
    with pytest.raises(ValueError, match="expected tokens"):
        window_reverse(torch.randn(4, 10, 3), 4, 8, 8)
