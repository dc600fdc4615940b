"""Baselines and ablations, built from the same blocks as EDC.

Each answers one question about EDC (https://arxiv.org/abs/2603.20811):

* ``optical_only``: what does SAR add? One stream on the optical image.
* ``sar_only``: what does the optical image add? One stream on the SAR image
  (no cloud-removal head: predicting the optical image from SAR alone is a
  different task, SAR-to-optical translation).
* ``early_fusion``: does a separate stream per modality matter? One stream on
  the channel concatenation ``[optical, SAR]``.
* ``dense_edc``: what do carrier tokens save? EDC with dense attention in stages 3-4.
  A carrier-token block holds two attention + MLP layers (global step on the
  carriers, local step on the windows), a dense block one; to compare attention
  types rather than capacities, the dense blocks get the wider MLP ratio
  ``2 * mlp_ratio + 2`` (``carrier_tokens.capacity_matched_mlp_ratio``), which
  matches the parameters within 1 % (a test checks 5 % at every scale). We match
  parameters, not FLOPs: the wider MLP runs on all ``N`` tokens, whereas the
  carrier block's second layer runs on ``N / w^2`` carriers, so dense_edc's extra
  cost is its quadratic attention plus that wider MLP. A second dense attention
  layer per block would also match the parameters, but doubles the quadratic
  cost and the depth; the MLP width leaves the attention pattern, the one thing
  the ablation is about, as in plain dense attention.
* ``edc_no_dchf``: what does DCHF add? EDC whose fusion is the plain sum
  ``X <- X + O + S`` (``PlainSumFusion``).
* ``edc_no_cr``: what does the cloud-removal task add? EDC without its head.

The single-stream models share EDC's stem, stages, FPN head and cloud-removal
head, and accept the same call ``model(optical, sar)``; the modality they do not
use is ignored (it may even be ``None``), so their output cannot depend on it.

Whose idea: the list of comparisons follows the paper's ablations and
CloudSeg's baselines; the variants' exact construction is edc_lab's.
"""

from __future__ import annotations

import torch
from torch import nn

from edc_lab.models.contract import check_inputs, model_output, parameter_dtype
from edc_lab.models.edc import EDCConfig
from edc_lab.models.encoder import SingleStreamEncoder
from edc_lab.models.heads import CloudRemovalHead, SegmentationHead

__all__ = ["SingleStreamModel", "VARIANTS", "SINGLE_STREAM_INPUTS"]

#: which input a single-stream baseline reads
SINGLE_STREAM_INPUTS = {"optical_only": "optical", "sar_only": "sar", "early_fusion": "early"}

#: config fields each EDC ablation fixes (they cannot be overridden)
VARIANTS: dict[str, dict] = {
    "dense_edc": {"attention": "dense"},
    "edc_no_dchf": {"fusion": "sum"},
    "edc_no_cr": {"cloud_removal": False},
    "optical_only": {},
    "sar_only": {"cloud_removal": False},
    "early_fusion": {},
}


class SingleStreamModel(nn.Module):
    """One encoder stream (EDC's blocks, no fusion) + FPN segmentation head (+ cloud-removal head).

    Args:
        reads: ``"optical"``, ``"sar"`` or ``"early"`` (the concatenation ``[optical, sar]``).
        in_optical, in_sar, num_classes: as for ``EDC``.
        config: sizes; ``fusion`` and ``fusion_*`` are unused.
        name: used in error messages.

    ``forward(optical, sar)`` -> the forward dict with empty ``discrepancy``,
    ``reliability`` and ``gates``. The cloud-removal head (optical and early
    fusion only) reads the stream's features and the optical input.
    """

    def __init__(self, reads: str, in_optical: int, in_sar: int, num_classes: int, config: EDCConfig, name: str):
        super().__init__()
        if reads not in ("optical", "sar", "early"):
            raise ValueError(f"SingleStreamModel: reads must be 'optical', 'sar' or 'early', found {reads!r}")
        self.reads, self.name, self.config = reads, name, config
        self.in_optical, self.in_sar, self.num_classes = in_optical, in_sar, num_classes
        in_channels = {"optical": in_optical, "sar": in_sar, "early": in_optical + in_sar}[reads]
        self.encoder = SingleStreamEncoder(
            in_channels,
            config.widths,
            config.depths,
            config.heads,
            config.windows,
            config.carriers,
            config.mlp_ratio,
            dense=config.attention == "dense",
        )
        self.segmentation_head = SegmentationHead(config.widths, config.fpn_dim, num_classes)
        with_cloud_removal = config.cloud_removal and reads != "sar"
        self.cloud_removal_head = (
            CloudRemovalHead(config.widths, config.cr_dim, in_optical, residual=config.cr_residual)
            if with_cloud_removal
            else None
        )

    @property
    def has_cloud_removal(self) -> bool:
        return self.cloud_removal_head is not None

    def forward(self, optical: torch.Tensor | None, sar: torch.Tensor | None) -> dict:
        use_optical, use_sar = self.reads in ("optical", "early"), self.reads in ("sar", "early")
        check_inputs(self.name, optical, sar, self.in_optical, self.in_sar, use_optical=use_optical, use_sar=use_sar,
                     dtype=parameter_dtype(self))
        image = {"optical": optical, "sar": sar}.get(self.reads)
        if self.reads == "early":
            image = torch.cat([optical, sar], dim=1)  # (B, C_o + C_s, H, W)
        features = self.encoder(image)
        logits, pyramid = self.segmentation_head(features, image.shape[-2:])
        cloudfree = self.cloud_removal_head(features, optical) if self.cloud_removal_head is not None else None
        return model_output(logits, cloudfree, features=pyramid)
