import numpy as np
import pytest
import torch
from affine import Affine

from edc_lab.data import DataError, from_torch, make_sample, to_torch


def _arrays(h=8, w=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((4, h, w)),
        rng.random((2, h, w)),
        rng.integers(0, 7, (h, w)),
        rng.random((h, w)) > 0.5,
        rng.random((4, h, w)),
    )


def test_round_trip_keeps_values_and_georeference():
    optical, sar, label, mask, clear = _arrays()
    transform = Affine(3.0, 0, 500000.0, 0, -3.0, 4000000.0)
    ds = make_sample(optical, sar, label, mask, clear, crs="EPSG:32646", transform=transform, dataset="t")
    assert ds.rio.crs.to_epsg() == 32646
    assert ds.rio.transform() == transform
    # pixel centres
    assert ds.x.values[0] == pytest.approx(500001.5) and ds.y.values[0] == pytest.approx(3999998.5)
    sample = to_torch(ds)
    assert sample["optical"].dtype == torch.float32 and sample["label"].dtype == torch.int64
    assert torch.equal(sample["cloud_mask"], torch.from_numpy(mask.astype(np.float32)))
    back = from_torch(sample, like=ds)
    np.testing.assert_array_equal(back["label"].values, ds["label"].values)
    np.testing.assert_allclose(back["optical_clear"].values, clear.astype(np.float32))
    assert back.rio.transform() == transform


def test_missing_clear_falls_back_and_is_flagged():
    optical, sar, label, mask, _ = _arrays()
    sample = to_torch(make_sample(optical, sar, label, mask))
    assert not bool(sample["has_clear"])
    assert torch.equal(sample["optical_clear"], sample["optical"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: (a[0][:3],) + a[1:], r"optical: expected shape \(4, H, W\).*found \(3, 8, 6\)"),
        (lambda a: (a[0], a[1][:, :4]) + a[2:], r"sar: expected shape \(2, 8, 6\).*found \(2, 4, 6\)"),
        (lambda a: a[:3] + (a[3][:4],) + a[4:], r"cloud_mask: expected shape \(8, 6\).*found \(4, 6\)"),
    ],
)
def test_shape_errors_name_what_was_expected(change, message):
    with pytest.raises(DataError, match=message):
        make_sample(*change(_arrays()))
