"""DCHF's mechanism measured directly: does cloud noise reach the global context of clear regions?

The paper's claim for DCHF (https://arxiv.org/abs/2603.20811) is that "cloud-induced noise is
not propagated during global aggregation". Segmentation scores measure that only through a long,
noisy chain (training, the decoder, the metric). Here it is measured where it happens, on the
same scene with and without clouds (same seed: the same ground, SAR and cloud mask):

* ``context_contamination``: for every DCHF stage, how far the global context ``G`` and the
  reliability-pooled cell tokens move *in cells without a cloudy pixel* when clouds are added,
  relative to their size on the cloud-free scene::

      contamination_k = || G_k(cloudy) - G_k(clear) || / || G_k(clear) ||   over clear cells

  0 means the clear regions' global context did not notice the clouds. This also counts the
  information a cloud removes: a DCHF that ignores a cloudy cell loses that cell's (clear-scene)
  contribution, which is a change too.
* ``cloud_noise_sensitivity``: the same measure between two *cloudy* versions of a scene that
  differ only under the mask (the cloud's content replaced by noise). Here an ideal DCHF (R = 0
  on clouds) moves only through the convolutions' reach across a cloud's border, while a
  constant reliability passes the noise on.
* ``disagreement_auroc``: why a discrepancy map learnt without the mask may not find clouds.
  For every stage, the AUROC against the cloud mask of the *raw* disagreement
  ``mean_c |LN(P_o O) - LN(P_s S)|`` (what ``D``'s 1x1 score then weighs), computed with the
  previous stage's redistribution on (the model as it is) and off. One hypothesis: redistribution
  pulls ``O`` and ``S`` towards ``X``, so later stages see *less* disagreement under clouds.

Both work on any EDC model (``reliability`` learnt, constant or oracle); a model with the
``"oracle"`` arm is given the true mask on the cloudy pass and an empty mask on the clear one.

Whose idea: the measurements are edc_lab's (issue 18), not the paper's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from einops import reduce

from edc_lab.models.contract import call_model
from edc_lab.models.dchf import DCHF, reliability_weighted_pool
from edc_lab.models.discrepancy import discrepancy_auroc
from edc_lab.models.grid import pool_to_map
from edc_lab.models.windows import pad_to_multiple

__all__ = ["context_contamination", "cloud_noise_sensitivity", "disagreement_auroc", "clear_cells", "dchf_blocks", "redistribution_off"]


def dchf_blocks(model: torch.nn.Module) -> list[DCHF]:
    """The model's four DCHF blocks, stage 1 first (ValueError for a model without DCHF)."""
    fusions = getattr(getattr(model, "encoder", None), "fusions", None)
    blocks = [] if fusions is None else [block for block in fusions if isinstance(block, DCHF)]
    if not blocks:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)}: expected a model with DCHF blocks "
                         "(an EDC with fusion='dchf'), found none")
    return blocks


def clear_cells(cloud_mask: torch.Tensor, map_size: tuple[int, int], cell: int) -> torch.Tensor:
    """``(B, Hc, Wc)`` bool: the DCHF cells of a stage's map that contain no cloudy input pixel.

    ``cloud_mask (B, H, W)``; ``map_size`` the stage's map ``(h, w)``; ``cell`` the DCHF cell side.
    """
    cloudy_fraction = pool_to_map(cloud_mask.float(), map_size)  # (B, 1, h, w): per stage pixel
    padded, _ = pad_to_multiple(cloudy_fraction, cell)  # the padding is clear
    cloudiest = reduce(padded, "b 1 (hc ch) (wc cw) -> b hc wc", "max", ch=cell, cw=cell)
    return cloudiest == 0


def _run_with_hooks(model, attach, optical, sar, cloud_mask):
    """Run the model once (no gradients) with ``attach(block)`` hooks on every DCHF block; returns
    the model's output. The hooks are removed whatever happens."""
    handles = [attach(block) for block in dchf_blocks(model)]
    try:
        with torch.no_grad():
            return call_model(model, optical, sar, cloud_mask)
    finally:
        for handle in handles:
            handle.remove()


def _record_fusion(model: torch.nn.Module, optical, sar, cloud_mask) -> list[dict]:
    """Run the model once; per DCHF stage: G (B, C, h, w), cell tokens (B, C, Hc, Wc)."""
    records: list[dict] = []

    def keep(block):
        def hook(module, inputs, output):
            info = output[3]
            tokens, _ = reliability_weighted_pool(info["local_mix"], info["reliability"], block.cell, block.eps)
            records.append({"context": info["global_context"].detach(), "tokens": tokens.detach()})
        return block.register_forward_hook(hook)

    _run_with_hooks(model, keep, optical, sar, cloud_mask)
    return records


def _relative_change(moved: torch.Tensor, reference: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Per sample ``||moved - reference|| / ||reference||`` over the cells in ``where (B, Hc, Wc)``
    (``moved``/``reference`` ``(B, C, Hc, Wc)``); NaN for a sample without such a cell."""
    weight = where[:, None].to(reference.dtype)
    change = ((moved - reference) ** 2 * weight).flatten(1).sum(1).sqrt()
    size = (reference**2 * weight).flatten(1).sum(1).sqrt()
    ratio = change / size.clamp_min(torch.finfo(reference.dtype).tiny)
    return torch.where(where.flatten(1).any(1), ratio, torch.full_like(ratio, float("nan")))


def context_contamination(
    model: torch.nn.Module,
    clear_optical: torch.Tensor,
    cloudy_optical: torch.Tensor,
    sar: torch.Tensor,
    cloud_mask: torch.Tensor,
    reference_mask: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """How much adding clouds moves DCHF's global context in clear cells, per stage.

    Args:
        model: an EDC model with DCHF (eval mode is the caller's business).
        clear_optical: ``(B, C_o, H, W)`` the scenes without clouds (the reference pass).
        cloudy_optical: ``(B, C_o, H, W)`` the same scenes with clouds.
        sar: ``(B, C_s, H, W)`` (the same in both passes).
        cloud_mask: ``(B, H, W)`` in {0, 1}, where the clouds are; the clear cells are read from it.
        reference_mask: the mask an ``"oracle"`` model is given on the reference pass (default: no
            cloud). Pass ``cloud_mask`` to compare two *cloudy* images on one mask, e.g. the same
            clouds with other content (``cloud_noise_sensitivity``): then only what lies under the
            mask differs, and an ideal DCHF's context in clear cells does not move at all.

    Returns one dict per stage: ``context`` and ``tokens``, ``(B,)`` relative changes of ``G``
    (over the pixels of clear cells; G is constant on a cell, so this weighs cells by their
    pixels) and of the pooled cell tokens (over clear cells); ``clear_cells`` ``(B,)`` the fraction
    of the stage's cells that are clear. NaN where a scene has no clear cell at that stage.
    """
    if clear_optical.shape != cloudy_optical.shape:
        raise ValueError(f"context_contamination: clear {tuple(clear_optical.shape)} and cloudy "
                         f"{tuple(cloudy_optical.shape)} optical images must have one shape")
    if cloud_mask.dim() != 3 or tuple(cloud_mask.shape[-2:]) != tuple(clear_optical.shape[-2:]):
        raise ValueError(f"context_contamination: expected cloud_mask (B, H, W) on the optical grid "
                         f"{tuple(clear_optical.shape[-2:])}, found {tuple(cloud_mask.shape)}")
    blocks = dchf_blocks(model)
    reference_mask = torch.zeros_like(cloud_mask) if reference_mask is None else reference_mask
    clear_run = _record_fusion(model, clear_optical, sar, reference_mask)
    cloudy_run = _record_fusion(model, cloudy_optical, sar, cloud_mask)
    rows = []
    for block, clear, cloudy in zip(blocks, clear_run, cloudy_run):
        cells = clear_cells(cloud_mask, tuple(clear["context"].shape[-2:]), block.cell)
        pixels = cells.repeat_interleave(block.cell, 1).repeat_interleave(block.cell, 2)
        pixels = pixels[:, : clear["context"].shape[-2], : clear["context"].shape[-1]]
        rows.append({
            "context": _relative_change(cloudy["context"], clear["context"], pixels),
            "tokens": _relative_change(cloudy["tokens"], clear["tokens"], cells),
            "clear_cells": cells.flatten(1).float().mean(1),
        })
    return rows


def cloud_noise_sensitivity(
    model: torch.nn.Module,
    cloudy_optical: torch.Tensor,
    sar: torch.Tensor,
    cloud_mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> list[dict[str, torch.Tensor]]:
    """How much the context of clear cells moves when only the *content* of the clouds changes.

    The cloudy image against the same image whose cloudy pixels are replaced by uniform noise in
    [0, 1] (same mask, same ground outside it, the oracle given the mask on both passes): the
    paper's "cloud-induced noise is not propagated during global aggregation", measured without
    the loss of information that removing a cloud-free cell also brings. Returns what
    ``context_contamination`` returns.
    """
    noise = torch.rand(cloudy_optical.shape, generator=generator, dtype=cloudy_optical.dtype)
    noisy = torch.where(cloud_mask[:, None] > 0, noise.to(cloudy_optical.device), cloudy_optical)
    return context_contamination(model, cloudy_optical, noisy, sar, cloud_mask, reference_mask=cloud_mask)


@contextmanager
def redistribution_off(block: DCHF):
    """Within the block, skip the redistribution step (O and S leave the block unchanged).

    DCHF treats a stream without a gate as one it does not redistribute into (``redistribute``),
    so the gates are set aside and put back afterwards; no parameter changes.
    """
    gates = block.optical_gate, block.sar_gate
    block.optical_gate = block.sar_gate = None
    try:
        yield block
    finally:
        block.optical_gate, block.sar_gate = gates


def _raw_disagreements(model, optical, sar, cloud_mask) -> list[torch.Tensor]:
    """Per stage ``mean_c |LN(P_o O_k) - LN(P_s S_k)|`` ``(B, 1, h, w)`` of DCHF_k's inputs."""
    found: list[torch.Tensor] = []

    def hook(module, args):
        optical_embedding, sar_embedding = module.discrepancy.embed(args[0], args[1])
        found.append((optical_embedding - sar_embedding).abs().mean(1, keepdim=True).detach())

    _run_with_hooks(model, lambda block: block.register_forward_pre_hook(hook), optical, sar, cloud_mask)
    return found


def disagreement_auroc(model: torch.nn.Module, optical: torch.Tensor, sar: torch.Tensor,
                       cloud_mask: torch.Tensor) -> dict[str, list[float]]:
    """AUROC against ``cloud_mask`` of each stage's raw disagreement and of its learnt ``D``.

    Returns ``{"raw": [4 AUROCs], "raw_no_previous_redistribution": [4], "learnt": [4]}``. In
    ``raw_no_previous_redistribution``, stage k's value is computed with stage k-1's
    redistribution switched off (stage 1 has no previous stage: the same as ``raw``).
    """
    blocks = dchf_blocks(model)
    raw = _raw_disagreements(model, optical, sar, cloud_mask)
    without = [raw[0]]
    for stage in range(1, len(blocks)):
        with redistribution_off(blocks[stage - 1]):
            without.append(_raw_disagreements(model, optical, sar, cloud_mask)[stage])
    with torch.no_grad():
        learnt = call_model(model, optical, sar, cloud_mask)["discrepancy"]
    score = lambda maps: [discrepancy_auroc(m, cloud_mask) for m in maps]  # noqa: E731
    return {"raw": score(raw), "raw_no_previous_redistribution": score(without), "learnt": score(learnt)}
