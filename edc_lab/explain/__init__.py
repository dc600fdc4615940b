"""Attributions with captum: how much of a prediction comes from optical vs SAR, inside vs outside clouds.

The idea in plain words: EDC is supposed to lean on the SAR image where clouds
hide the ground. Attribution methods let us check this on any prediction: pick a
class and a region (a pixel, a box, "cloudy pixels predicted as farmland"),
and split the model's score for it between the inputs.

* ``region``: ``RegionScore`` turns a segmentation model into one number per
  sample (the mean class logit, or probability, over the region) — what captum explains;
* ``baselines``: what "the input is absent" means for reflectance and dB images
  (``"blur"``, ``"zero"``, ``"cloudfree"``, or yours);
* ``pixels``: ``pixel_attributions`` — Integrated Gradients (with captum's
  convergence delta), Input x Gradient, GradientShap for both images at once;
* ``groups``: ``modality_shares`` — exact Shapley values (or sampling, or
  ablation) of four groups: optical/SAR x in-cloud/clear, and the SAR shares;
* ``layers``: ``layer_contributions`` — Layer Integrated Gradients or Grad-CAM
  on each encoder stage's fused features and DCHF's gates;
* ``plots``: the maps side by side, the group shares, the stages;
* ``widget``: the explorer of notebook 07 (model, class, region, method, baseline);
* ``sanity``: the checks to run before any interpretation: completeness against ``F``
  computed independently (``completeness_check``, ``complete_attributions``) and model
  randomisation (Adebayo et al., 2018: ``randomised_copy``, ``model_randomisation``,
  ``rank_correlation``);
* ``sides``: ``shares_by_side`` — the SAR share on the cloudy and the clear pixels of each
  scene's class, over many scenes (notebook 07 and ``benchmarks/attribution_evidence.py``);
* ``evidence``: the committed multi-seed evidence read as intervals and the protocol's verdicts;
* ``checks``: the argument checks every entry point runs first (masks are boolean or
  0/1, not probability maps; counts >= 1; finite inputs), one ``ValueError`` each.

Integrated Gradients: Sundararajan, Taly and Yan, "Axiomatic Attribution for
Deep Networks", ICML 2017, https://arxiv.org/abs/1703.01365. Every attribution
method is captum's (Kokhlikyan et al., "Captum: A unified and generic model
interpretability library for PyTorch", 2020, https://captum.ai), through its
public API. What is ours: the region score, the remote-sensing baselines, the
four cloud/modality groups and their shares, the choice of layers.

Example::

    from edc_lab.explain import pixel_attributions, modality_shares
    attributions = pixel_attributions(model.eval(), optical, sar, target=2, region=(16, 48, 16, 48))
    shares = modality_shares(model, optical, sar, cloud_mask, target=2, region=(16, 48, 16, 48))
    shares.summary()["sar_share_cloudy"]
"""

from edc_lab.explain.baselines import BASELINES, BLUR_SIGMA, gaussian_blur, make_baselines
from edc_lab.explain.groups import (
    GROUP_METHODS,
    GROUPS,
    ModalityShares,
    class_on_both_sides,
    modality_feature_masks,
    modality_shares,
)
from edc_lab.explain.layers import (
    LAYER_METHODS,
    LayerContributions,
    find_gate_layers,
    find_stage_layers,
    layer_contributions,
)
from edc_lab.explain.pixels import INTEGRATION_RULES, PIXEL_METHODS, PixelAttributions, pixel_attributions
from edc_lab.explain.plots import (plot_attribution_maps, plot_layer_contributions, plot_modality_shares,
                                   plot_randomisation)
from edc_lab.explain.sanity import (
    Completeness,
    RandomisationCheck,
    complete_attributions,
    completeness_check,
    logit_layers,
    model_randomisation,
    randomised_copy,
    rank_correlation,
)
from edc_lab.explain.sides import SIDES, SideShares, shares_by_side
from edc_lab.explain.region import OUTPUTS, RegionScore
from edc_lab.explain.widget import REGION_CHOICES, attribution_view, attribution_widget, region_for

__all__ = [
    "RegionScore",
    "OUTPUTS",
    "BASELINES",
    "BLUR_SIGMA",
    "gaussian_blur",
    "make_baselines",
    "PIXEL_METHODS",
    "INTEGRATION_RULES",
    "PixelAttributions",
    "pixel_attributions",
    "GROUPS",
    "GROUP_METHODS",
    "ModalityShares",
    "class_on_both_sides",
    "modality_feature_masks",
    "modality_shares",
    "LAYER_METHODS",
    "LayerContributions",
    "find_stage_layers",
    "find_gate_layers",
    "layer_contributions",
    "plot_attribution_maps",
    "plot_modality_shares",
    "plot_layer_contributions",
    "plot_randomisation",
    "Completeness",
    "completeness_check",
    "complete_attributions",
    "RandomisationCheck",
    "logit_layers",
    "model_randomisation",
    "randomised_copy",
    "rank_correlation",
    "SIDES",
    "SideShares",
    "shares_by_side",
    "REGION_CHOICES",
    "region_for",
    "attribution_view",
    "attribution_widget",
]
