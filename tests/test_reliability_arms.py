"""The DCHF experiment's tools: reliability arms, geometry, contamination of the global context,
and the disagreement diagnostic (issue 18)."""

from __future__ import annotations

import pytest
import torch

from edc_lab.explain.contamination import (
    _relative_change,
    clear_cells,
    cloud_noise_sensitivity,
    context_contamination,
    dchf_blocks,
    disagreement_auroc,
    redistribution_off,
)
from edc_lab.models import build_model, model_config
from edc_lab.models.edc import CONSTANT_RELIABILITY
from edc_lab.models.geometry import format_geometry, stage_geometry
from edc_lab.models.grid import pool_to_map

SIZE = 64


def _inputs(batch=2, size=SIZE, seed=0):
    generator = torch.Generator().manual_seed(seed)
    optical = torch.rand(batch, 4, size, size, generator=generator)
    sar = torch.rand(batch, 2, size, size, generator=generator)
    mask = torch.zeros(batch, size, size)
    mask[:, :32, :32] = 1.0  # the top-left stage-1 cell (8 x 8 stride-4 pixels = 32 x 32 input pixels)
    return optical, sar, mask


# ------------------------------------------------------------------------------------------- arms
def test_the_four_arms_have_equal_parameters_and_differ_only_in_reliability():
    counts = {}
    for reliability in ("learnt", "constant", "oracle"):
        model = build_model("edc_tiny", reliability=reliability)
        counts[reliability] = sum(p.numel() for p in model.parameters())
    assert len(set(counts.values())) == 1, counts
    # the supervised arm is the learnt one with a loss term: same model
    assert build_model("edc_tiny").config == model_config("edc_tiny", reliability="learnt")


def test_constant_arm_has_half_reliability_at_every_stage_whatever_the_input():
    torch.manual_seed(0)
    model = build_model("edc_tiny", reliability="constant").eval()
    optical, sar, _ = _inputs()
    for scale in (1.0, 0.1):
        out = model(optical * scale, sar)
        for reliability, discrepancy in zip(out["reliability"], out["discrepancy"]):
            assert torch.all(reliability == CONSTANT_RELIABILITY) and torch.all(discrepancy == 1 - CONSTANT_RELIABILITY)


def test_oracle_arm_reads_one_minus_the_pooled_mask_and_needs_it():
    torch.manual_seed(0)
    model = build_model("edc_tiny", reliability="oracle").eval()
    optical, sar, mask = _inputs()
    mask[1, 40:50, 3:61] = 1.0  # a strip that covers parts of cells
    out = model(optical, sar, cloud_mask=mask)
    for reliability in out["reliability"]:
        torch.testing.assert_close(reliability, 1 - pool_to_map(mask, reliability.shape[-2:]), rtol=0, atol=0)
    assert model.needs_cloud_mask and not build_model("edc_tiny").needs_cloud_mask
    with pytest.raises(ValueError, match=r"reliability='oracle' reads the true cloud mask: call model\(optical, sar, "
                                         r"cloud_mask=mask\)"):
        model(optical, sar)
    with pytest.raises(ValueError, match=r"cloud_mask \(2, 32, 32\) must cover the optical image \(64, 64\)"):
        model(optical, sar, cloud_mask=mask[:, :32, :32])


def test_reliability_arms_are_checked_at_construction():
    with pytest.raises(ValueError, match=r"reliability must be one of \('learnt', 'constant', 'oracle'\), found 'magic'"):
        build_model("edc_tiny", reliability="magic")
    with pytest.raises(ValueError, match="reliability='oracle' conditions DCHF; fusion='sum' has none"):
        build_model("edc_no_dchf", reliability="oracle")


def test_oracle_reliability_keeps_cloud_noise_out_of_the_stage_one_context_of_clear_cells():
    """Noise under a cloud that fills one stage-1 cell: with R = 0 there (oracle) the cell's token
    is exactly 0 and its key bias log(eps), so G of the clear cells moves only through the
    convolutions' reach across the cloud's border into its neighbours' tokens; with R = 0.5
    (constant) the noisy token is attended to like any other."""
    optical, sar, mask = _inputs(size=128)
    cloudy = torch.where(mask[:, None] > 0, torch.ones_like(optical), optical)  # an opaque white cloud
    moved = {}
    for reliability in ("constant", "oracle"):
        torch.manual_seed(0)
        model = build_model("edc_tiny", reliability=reliability).eval()
        rows = cloud_noise_sensitivity(model, cloudy, sar, mask, torch.Generator().manual_seed(1))
        moved[reliability] = rows[0]["context"]
    assert torch.all(moved["constant"] > 0) and torch.all(moved["oracle"] < 0.5 * moved["constant"]), moved


def test_contamination_with_and_without_clouds_counts_only_clear_cells():
    optical, sar, mask = _inputs(size=128)
    cloudy = torch.where(mask[:, None] > 0, torch.ones_like(optical), optical)
    torch.manual_seed(0)
    rows = context_contamination(build_model("edc_tiny").eval(), optical, cloudy, sar, mask)
    assert [round(row["clear_cells"][0].item(), 4) for row in rows] == [15 / 16] * 4  # one 32-px cell of 16
    assert all(torch.all(row["context"] > 0) and torch.all(row["tokens"] >= 0) for row in rows)


# --------------------------------------------------------------------------------------- geometry
def test_geometry_of_the_experiment_setting_has_global_context():
    """edc_tiny at 256²: 16 windows at stage 3 and at least 64 DCHF tokens at every stage."""
    rows = stage_geometry(model_config("edc_tiny"), 256)
    assert rows[2].map_size == (16, 16) and rows[2].windows == 16 and rows[2].window_share == 1 / 16
    assert all(row.fusion_tokens >= 64 for row in rows)
    assert [row.stride for row in rows] == [4, 8, 16, 32]


def test_geometry_at_64_pixels_is_one_window_and_says_so():
    rows = stage_geometry(model_config("edc_tiny"), 64)
    assert rows[2].windows == rows[3].windows == 1 and rows[2].window_share == 1.0
    assert [row.fusion_tokens for row in rows] == [4, 4, 4, 4]
    assert rows[0].window is None and rows[0].carrier_tokens is None
    text = format_geometry(rows)
    assert "DCHF tokens" in text and text.splitlines()[3].split()[:5] == ["3", "16", "4x4", "4", "1"]


def test_geometry_counts_padded_windows_and_has_no_dchf_without_it():
    rows = stage_geometry(model_config("edc_no_dchf"), (100, 300))
    assert rows[2].map_size == (7, 19) and rows[2].windows == 2 * 5  # ceil(7/4) x ceil(19/4)
    assert all(row.fusion_tokens is None for row in rows)
    with pytest.raises(ValueError, match="positive input size"):
        stage_geometry(model_config("edc_tiny"), 0)


# ---------------------------------------------------------------------------------- contamination
def test_clear_cells_are_the_cells_without_a_cloudy_pixel():
    mask = torch.zeros(1, 64, 64)
    mask[0, 5, 40] = 1  # one pixel: stage-1 pixel (1, 10), cell (0, 1) with cell 8
    cells = clear_cells(mask, (16, 16), 8)
    assert cells.shape == (1, 2, 2)
    assert cells.tolist() == [[[True, False], [True, True]]]


def test_relative_change_is_zero_without_change_and_one_for_a_doubled_map():
    reference = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    where = torch.ones(2, 4, 4, dtype=torch.bool)
    assert torch.all(_relative_change(reference, reference, where) == 0)
    torch.testing.assert_close(_relative_change(2 * reference, reference, where), torch.ones(2, dtype=torch.float64))
    where[1] = False
    assert torch.isnan(_relative_change(2 * reference, reference, where)[1])


def test_contamination_is_zero_when_the_clouds_change_nothing():
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    optical, sar, mask = _inputs()
    for row in context_contamination(model, optical, optical, sar, torch.zeros_like(mask)):
        assert torch.all(row["context"] == 0) and torch.all(row["tokens"] == 0)
    with pytest.raises(ValueError, match="expected a model with DCHF blocks"):
        dchf_blocks(build_model("edc_no_dchf"))


# ------------------------------------------------------------------------------ disagreement AUROC
def test_redistribution_off_skips_the_step_and_restores_the_gates():
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    block = dchf_blocks(model)[0]
    gates = block.optical_gate, block.sar_gate
    optical, sar, _ = _inputs()
    features = torch.randn(2, block.dim, 16, 16), torch.randn(2, block.dim, 16, 16)
    with redistribution_off(block), torch.no_grad():
        new_optical, new_sar, _, _ = block(*features)
    assert torch.equal(new_optical, features[0]) and torch.equal(new_sar, features[1])
    assert (block.optical_gate, block.sar_gate) == gates


def test_disagreement_auroc_reports_every_stage_and_switching_off_changes_later_stages():
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    optical, sar, mask = _inputs(size=128)
    result = disagreement_auroc(model, optical, sar, mask)
    assert set(result) == {"raw", "raw_no_previous_redistribution", "learnt"}
    assert all(len(values) == 4 and all(0 <= v <= 1 for v in values) for values in result.values())
    assert result["raw"][0] == result["raw_no_previous_redistribution"][0]  # stage 1 has no previous stage
    assert result["raw"][1:] != result["raw_no_previous_redistribution"][1:]
