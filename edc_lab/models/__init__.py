"""EDC's blocks and models, one idea per file (EDC: https://arxiv.org/abs/2603.20811).

Read them in this order:

* ``windows``: cutting a map into windows and stitching it back (einops);
* ``grid``: which input pixels a cell of a stride-s map covers (upsample by the
  stride and crop; pool a mask over the cells' real pixels);
* ``carrier_tokens``: FasterViT's carrier-token attention (HAT) and dense attention;
* ``discrepancy``: where optical and SAR features disagree (``D``, ``R = 1 - D``);
* ``dchf``: discrepancy-conditioned hybrid fusion of the three streams;
* ``encoder``: the tri-stream encoder (stems, conv stages, attention stages, fusion);
* ``heads``: FPN segmentation head and cloud-removal head;
* ``edc``: the EDC model and its sizes; ``baselines``: baselines and ablations;
  ``cloudseg``: the CloudSeg-sized reference; ``contract``: the forward contract;
* ``registry``: ``build_model(name, **overrides)`` and ``MODEL_NAMES``.

``build_model("edc_tiny")(optical, sar)`` returns ``logits``, ``cloudfree``,
``discrepancy``, ``reliability``, ``gates`` and ``features``.
"""

from edc_lab.models.baselines import SingleStreamModel
from edc_lab.models.carrier_tokens import (
    CarrierTokenAttention,
    CarrierTokenStage,
    DenseAttention,
    TokenInitializer,
    carrier_attention_maps,
)
from edc_lab.models.cloudseg import CloudSegConfig, CloudSegRef, EfficientSelfAttention, MixTransformerEncoder
from edc_lab.models.dchf import DCHF, PlainSumFusion, reliability_weighted_pool
from edc_lab.models.discrepancy import DiscrepancyMap, cloud_bce, discrepancy_auroc
from edc_lab.models.edc import EDC, EDC_CONFIGS, EDCConfig
from edc_lab.models.encoder import (
    ConvStem,
    Downsample,
    ResidualConvBlock,
    SingleStreamEncoder,
    TriStreamEncoder,
)
from edc_lab.models.heads import CloudRemovalHead, FPNNeck, SegmentationHead
from edc_lab.models.registry import MODEL_NAMES, SCALES, build_model, model_config
from edc_lab.models.windows import crop_to, pad_to_multiple, window_partition, window_reverse

__all__ = [
    "MODEL_NAMES",
    "SCALES",
    "build_model",
    "model_config",
    "EDC",
    "EDCConfig",
    "EDC_CONFIGS",
    "SingleStreamModel",
    "CloudSegRef",
    "CloudSegConfig",
    "EfficientSelfAttention",
    "MixTransformerEncoder",
    "TriStreamEncoder",
    "SingleStreamEncoder",
    "ConvStem",
    "Downsample",
    "ResidualConvBlock",
    "SegmentationHead",
    "CloudRemovalHead",
    "FPNNeck",
    "CarrierTokenAttention",
    "CarrierTokenStage",
    "DenseAttention",
    "TokenInitializer",
    "carrier_attention_maps",
    "DiscrepancyMap",
    "cloud_bce",
    "discrepancy_auroc",
    "DCHF",
    "PlainSumFusion",
    "reliability_weighted_pool",
    "pad_to_multiple",
    "crop_to",
    "window_partition",
    "window_reverse",
]
