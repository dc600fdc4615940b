"""edc_lab.explain.sanity, sides and evidence: a completeness check that can fail, model randomisation
(Adebayo et al. 2018), the mean removal, the SAR share over scenes and the evidence's intervals."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from edc_lab.data.sample import to_torch
from edc_lab.data.synthetic import synthetic_scene
from edc_lab.explain import (
    SIDES,
    complete_attributions,
    completeness_check,
    logit_layers,
    make_baselines,
    model_randomisation,
    pixel_attributions,
    plot_attribution_maps,
    plot_layer_contributions,
    plot_modality_shares,
    plot_randomisation,
    randomised_copy,
    rank_correlation,
    shares_by_side,
    modality_shares,
    layer_contributions,
)
from edc_lab.explain.evidence import level, load_attribution_evidence, paired, rise, verdict
from edc_lab.models import build_model

SIZE = 32


def _scene(seed: int = 3, size: int = SIZE) -> dict[str, torch.Tensor]:
    return to_torch(synthetic_scene(seed, size=size, cloud_cover=0.5))


class Bumpy(nn.Module):
    """A smooth, strongly non-linear score of both images: a coarse integral of its gradient is visibly wrong."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(6, 2, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.linspace(-2, 2, 12).reshape(2, 6, 1, 1))
            self.mix.bias.zero_()

    def forward(self, optical, sar):
        z = self.mix(torch.cat([optical, sar], dim=1))
        return {"logits": torch.sin(3 * z) + z**2}


class LinearSar(nn.Module):
    """``logits[:, k] = conv1x1(sar)[:, k]``: attributions are ``w_k . (x - b)``, weights times the input change."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(2, 3, 1)

    def forward(self, optical, sar):
        return {"logits": self.head(sar) + 0 * optical.sum(dim=1, keepdim=True)}


# ------------------------------------------------------------------ completeness
def test_completeness_is_checked_against_f_computed_without_captum_and_passes_with_enough_steps():
    scene = _scene()
    optical, sar = scene["optical"][None].double(), scene["sar"][None].double()
    model = Bumpy().double().eval()
    region = scene["cloud_mask"].bool()
    attributions = pixel_attributions(model, optical, sar, 1, region, n_steps=64)
    check = completeness_check(attributions, model, optical, sar, 1, region)
    with torch.no_grad():  # F written out by hand: the mean class-1 logit over the region
        direct = model(optical, sar)["logits"][0, 1][region].mean()
        direct_b = model(*attributions.baselines)["logits"][0, 1][region].mean()
    assert float(check.score[0]) == pytest.approx(float(direct), abs=1e-12)
    assert float(check.change[0]) == pytest.approx(float(direct - direct_b), abs=1e-12)
    assert bool(check.passed[0]) and float(check.relative_gap[0]) < 1e-4
    # the independent gap equals captum's delta here (both are right), but it is computed without it
    assert float(check.gap[0]) == pytest.approx(abs(float(attributions.delta[0])), abs=1e-9)


def test_completeness_check_fails_for_a_coarse_integral_and_for_wrong_attributions():
    scene = _scene()
    optical, sar = scene["optical"][None].double(), scene["sar"][None].double()
    model = Bumpy().double().eval()
    coarse = pixel_attributions(model, optical, sar, 1, n_steps=4, integration="riemann_right")
    check = completeness_check(coarse, model, optical, sar, 1)
    assert not bool(check.passed[0]) and float(check.relative_gap[0]) > 0.05
    # a bug that keeps captum's own bookkeeping consistent is still caught: scale the optical attributions
    good = pixel_attributions(model, optical, sar, 1, n_steps=64)
    good.optical = 1.5 * good.optical
    assert not bool(completeness_check(good, model, optical, sar, 1).passed[0])


def test_riemann_error_halves_when_the_steps_double():
    scene = _scene()
    optical, sar = scene["optical"][None].double(), scene["sar"][None].double()
    model = Bumpy().double().eval()
    gaps = [float(completeness_check(pixel_attributions(model, optical, sar, 1, n_steps=n, integration="riemann_left"),
                                     model, optical, sar, 1).relative_gap[0]) for n in (16, 32, 64)]
    assert 1.6 < gaps[0] / gaps[1] < 2.4 and 1.6 < gaps[1] / gaps[2] < 2.4  # first-order rule: error ~ 1/n


def test_complete_attributions_doubles_the_steps_until_the_check_passes():
    scene = _scene()
    optical, sar = scene["optical"][None].double(), scene["sar"][None].double()
    model = Bumpy().double().eval()
    attributions, check = complete_attributions(model, optical, sar, 1, n_steps=2, max_steps=512,
                                                integration="riemann_trapezoid", tolerance=0.01)
    assert bool(check.passed[0]) and check.integration_steps > 2
    assert check.integration_steps & (check.integration_steps - 1) == 0  # 2 * 2**k
    smaller = pixel_attributions(model, optical, sar, 1, n_steps=check.integration_steps // 2,
                                 integration="riemann_trapezoid")
    assert not bool(completeness_check(smaller, model, optical, sar, 1).passed[0])  # the last doubling was needed
    _, capped = complete_attributions(model, optical, sar, 1, n_steps=2, max_steps=4, integration="riemann_left")
    assert capped.integration_steps == 4 and not bool(capped.passed[0])  # gives up at max_steps, says so


def test_completeness_errors_name_what_is_wrong():
    scene = _scene()
    optical, sar = scene["optical"][None], scene["sar"][None]
    model = Bumpy().eval()
    ixg = pixel_attributions(model, optical, sar, 1, method="input_x_gradient")
    with pytest.raises(ValueError, match="property of Integrated Gradients, found method 'input_x_gradient'"):
        completeness_check(ixg, model, optical, sar, 1)
    ig = pixel_attributions(model, optical, sar, 1, n_steps=4)
    with pytest.raises(ValueError, match=r"tolerance is a fraction .* in \(0, 1\), found 2"):
        completeness_check(ig, model, optical, sar, 1, tolerance=2)
    ig.baselines = None
    with pytest.raises(ValueError, match="do not carry their baselines"):
        completeness_check(ig, model, optical, sar, 1)
    with pytest.raises(ValueError, match="integration must be one of"):
        pixel_attributions(model, optical, sar, 1, integration="simpson")
    with pytest.raises(ValueError, match="max_steps must be an integer >= n_steps = 8"):
        complete_attributions(model, optical, sar, 1, n_steps=8, max_steps=4)


# ------------------------------------------------------------------ the mean removal
def test_mean_removal_is_each_bands_own_mean_and_ig_splits_the_change_from_it():
    scene = _scene()
    optical, sar = scene["optical"][None].double(), scene["sar"][None].double()
    optical_b, sar_b = make_baselines("mean", optical, sar)
    assert torch.allclose(optical_b[0, :, 0, 0], optical[0].mean(dim=(1, 2)))
    assert torch.equal(sar_b, sar_b[:, :, :1, :1].expand_as(sar_b))  # one constant per band
    model = Bumpy().double().eval()
    result = pixel_attributions(model, optical, sar, 0, baseline="mean", n_steps=64)
    assert result.baseline == "mean" and bool(completeness_check(result, model, optical, sar, 0).passed[0])


# ------------------------------------------------------------------ randomisation
def test_rank_correlation_by_hand():
    a = torch.tensor([[0.1, -0.5], [2.0, 0.3]])
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(1.0)  # the absolute form ignores a sign flip
    assert rank_correlation(a, -a, absolute=False) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3], [30, 20, 10], absolute=False) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1.0, 1.0], [1.0, 2.0]))
    with pytest.raises(ValueError, match="the same number of values, found 3 and 2"):
        rank_correlation([1, 2, 3], [1, 2])


def test_logit_layers_go_from_the_logits_down_and_skip_the_cloud_removal_head():
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    scene = _scene()
    layers = logit_layers(model, scene["optical"][None], scene["sar"][None])
    assert layers[0] == "segmentation_head.classifier"
    assert not any(name.startswith("cloud_removal_head") for name in layers)
    assert any("optical_stem" in name for name in layers[-6:]) or any("sar_stem" in name for name in layers[-6:])
    assert all(p.grad is None for p in model.parameters())  # the model's gradients are not touched


def test_randomised_copy_reinitialises_only_the_named_layers_reproducibly():
    torch.manual_seed(0)
    model = build_model("early_fusion").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    copy_a = randomised_copy(model, ["segmentation_head.classifier"], seed=3)
    copy_b = randomised_copy(model, ["segmentation_head.classifier"], seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is left alone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    changed = {k for k, v in copy_a.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"segmentation_head.classifier.weight", "segmentation_head.classifier.bias"}
    assert all(torch.equal(copy_a.state_dict()[k], copy_b.state_dict()[k]) for k in changed)
    assert not copy_a.training
    with pytest.raises(ValueError, match="no module named"):
        randomised_copy(model, ["decoder.final"])

    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="has no reset_parameters"):
        randomised_copy(Raw())


def test_a_map_that_is_weights_times_input_survives_randomisation_in_absolute_value():
    # Adebayo et al.'s point: for a linear model, |weights x (x - b)| keeps the rank order of |x - b|
    # whatever the weights are, so the absolute maps cannot pass; only the sign can change.
    scene = _scene()
    sar = scene["sar"][None][:, :1].repeat(1, 2, 1, 1)  # two identical channels: w_k0 + w_k1 scales one map
    torch.manual_seed(0)
    model = LinearSar().eval()
    check = model_randomisation(model, scene["optical"][None], sar, 1, fractions=(1.0,), n_steps=8)
    assert check.layers == ["head"] and check.randomised == [1]
    assert check.sar[-1] == pytest.approx(1.0) and abs(check.signed_sar[-1]) == pytest.approx(1.0)
    assert check.input_sar == pytest.approx(1.0)
    assert math.isnan(check.optical[-1])  # the optical map is all zero: no rank order to compare


def test_cascading_randomisation_of_a_network_decorrelates_the_signed_maps():
    torch.manual_seed(0)
    model = build_model("early_fusion").eval()
    with torch.no_grad():  # a fresh network barely depends on its input: make it lively, as training does
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
    scene = _scene()
    check = model_randomisation(model, scene["optical"][None], scene["sar"][None], 2, fractions=(0.5, 1.0),
                                n_steps=8)
    assert check.randomised[0] == 1 and check.randomised[-1] == len(check.layers)
    assert check.deepest[0] == "segmentation_head.classifier"
    assert len(check.optical) == len(check.sar) == len(check.steps) == len(check.randomised)
    assert abs(check.signed_optical[-1]) < 0.5 and abs(check.signed_sar[-1]) < 0.5
    with pytest.raises(ValueError, match=r"fractions must be numbers in \(0, 1\]"):
        model_randomisation(model, scene["optical"][None], scene["sar"][None], 2, fractions=(0.0,))
    figure = plot_randomisation({"early fusion": check})
    assert len(figure.axes) == 2 and figure.axes[0].get_ylabel() == "Spearman rank correlation"
    assert figure.dpi >= 100
    plt.close("all")


# ------------------------------------------------------------------ SAR share over scenes
class SarOnly(nn.Module):
    num_classes = 7

    def forward(self, optical, sar):
        logits = torch.stack([(k + 1) * torch.tanh(sar[:, 0] - 0.3 * k) for k in range(7)], dim=1)
        return {"logits": logits + 0 * optical.sum(dim=1, keepdim=True)}


def test_shares_by_side_keeps_scenes_with_both_sides_and_gives_sar_everything_for_a_sar_model():
    scenes = [_scene(seed) for seed in range(3)]
    result = shares_by_side(SarOnly().eval(), scenes, 7, baseline="mean", min_pixels=5)
    assert result.scenes and len(result.targets) == len(result.scenes)
    for side in SIDES:
        assert result.sar_share[side] == pytest.approx([1.0] * len(result.scenes))
    assert result.rise == pytest.approx(0.0)
    values = result.mean_values("cloudy")
    assert values["optical_cloudy"] == 0.0 and values["optical_clear"] == 0.0
    nothing = shares_by_side(SarOnly().eval(), scenes, 7, min_pixels=10**6)
    assert nothing.scenes == [] and math.isnan(nothing.mean("cloudy"))
    with pytest.raises(ValueError, match="min_pixels must be an integer >= 1, found 0"):
        shares_by_side(SarOnly().eval(), scenes, 7, min_pixels=0)
    with pytest.raises(ValueError, match="side must be one of"):
        result.mean("sunny")


# ------------------------------------------------------------------ evidence
def _evidence() -> dict:
    rows = lambda rises, shift: [  # noqa: E731
        {"seed": seed, "scenes": 8, "blur": {"cloudy": 0.6 + r, "clear": 0.6, "random_cloudy": 0.5 + shift,
                                              "random_clear": 0.5, "rho_sar": 0.3 + 0.01 * seed}}
        for seed, r in enumerate(rises)]
    return {"runs": {"a": rows([0.10, 0.12, 0.08], 0.0), "b": rows([-0.05, -0.04, -0.06], 0.01)}}


def test_evidence_intervals_pair_by_seed_and_read_three_ways(tmp_path):
    evidence = _evidence()
    assert rise(evidence, "a", "blur").mean == pytest.approx(0.10)
    assert rise(evidence, "b", "blur", randomised=True).mean == pytest.approx(0.01)
    assert verdict(rise(evidence, "a", "blur")) == "above"
    assert verdict(rise(evidence, "b", "blur")) == "below"
    difference = paired(evidence, ("a", "rise"), ("b", "rise"), "blur")
    assert difference.mean == pytest.approx(0.15) and difference.n == 3
    assert level(evidence, "a", "blur", "rho_sar").mean == pytest.approx(0.31)
    noisy = paired(evidence, ("a", "random_rise"), ("b", "random_rise"), "blur")
    assert verdict(noisy) == "below" and verdict(noisy, threshold=-1) == "above"
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps({"notebook_setting": evidence}))
    assert load_attribution_evidence(path) == evidence
    with pytest.raises(ValueError, match=r"has no section 'other', found \['notebook_setting'\]"):
        load_attribution_evidence(path, "other")
    with pytest.raises(ValueError, match="does not exist"):
        load_attribution_evidence(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"no model 'c', found \['a', 'b'\]"):
        rise(evidence, "c", "blur")


def test_the_committed_evidence_holds_every_model_and_seed_of_its_protocol():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "attribution_evidence.json"
    data = json.loads(path.read_text())
    assert set(data) >= {"flat_clouds_cpu_quick"}
    if "notebook_setting" in data:
        runs = data["notebook_setting"]["runs"]
        seeds = data["notebook_setting"]["settings"]["seeds"]
        for name, rows in runs.items():
            assert [row["seed"] for row in rows] == seeds, name
            for row in rows:
                for removal in ("blur", "mean"):
                    result = row[removal]
                    assert 0 <= result["cloudy"] <= 1 and 0 <= result["random_clear"] <= 1
                    assert 0 <= result["completeness_failures"] <= result["maps"]
                    # a failure is a gap above the 1 % tolerance, and the largest gap says so
                    assert (result["completeness_failures"] > 0) == (result["completeness_max_gap"] > 0.01)


# ------------------------------------------------------------------ figures
def test_figures_say_their_units_and_keep_the_region_visible():
    scene = _scene()
    optical, sar, cloud = scene["optical"][None], scene["sar"][None], scene["cloud_mask"]
    model = Bumpy().eval()
    region = cloud.bool()
    figure = plot_attribution_maps(pixel_attributions(model, optical, sar, 1, region, n_steps=4), cloud, region=region,
                                   title="a title long enough to need wrapping " * 4)
    legend = figure.legends[0]
    assert {text.get_text() for text in legend.get_texts()} == {"cloud edge", "explained region"}
    assert all(len(line) <= 110 for line in figure._suptitle.get_text().split("\n"))
    hatched = [c for axis in figure.axes for c in axis.collections if getattr(c, "hatches", [None])[0]]
    assert len(hatched) == 2  # the explained region, hatched in both panels
    shares = modality_shares(model, optical, sar, cloud, 1, region)
    bars = plot_modality_shares(shares)
    axis = bars.axes[0]
    assert "logit units" in axis.get_ylabel() and "share" not in axis.get_ylabel()
    labels = [text.get_text() for text in axis.texts]
    assert len(labels) == 4 and all(label.endswith("%)") for label in labels)
    low, high = axis.get_ylim()
    assert all(low < patch.get_height() < high for patch in axis.patches)
    torch.manual_seed(0)
    layers = layer_contributions(build_model("edc_tiny").eval(), optical, sar, 1, n_steps=4)
    chart = plot_layer_contributions(layers, title="stages")
    assert {text.get_text() for text in chart.axes[0].get_legend().get_texts()} == {
        "stage features (what the decoder reads)", "DCHF gate"}
    assert len(chart.axes[0].texts) == len(layers.totals)
    width, height = chart.get_size_inches() * chart.dpi
    assert width >= 800 and height >= 400
    plt.close("all")
