"""One training step: the stage's loss terms, the update (backward, clip, AdamW, schedule), and the guards
that stop a run before a non-finite loss, gradient or weight can reach a checkpoint.

The loss terms are EDC's (DESIGN §2, arXiv 2603.20811; the teacher–student scheme is CloudSeg's):
segmentation always, and for the student cloud removal, feature and logit distillation from the
frozen teacher, and the optional cloud supervision of the discrepancy maps. The guards are our
choice: each names the step and the last checkpoint with finite weights, so the last checkpoint
is always a good one. With fp16, an overflowing gradient is GradScaler's ordinary business: the
step is skipped, and so is the learning-rate schedule's step.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext

import torch

from edc_lab.models.discrepancy import cloud_bce
from edc_lab.train import distributed
from edc_lab.train.checkpoint import non_finite_entries
from edc_lab.train.config import TrainConfig
from edc_lab.train.evaluation import forward, model_inputs
from edc_lab.train.losses import (
    cloud_removal_loss,
    combine_losses,
    feature_distillation_loss,
    logit_distillation_loss,
    region_weight,
    segmentation_loss,
)
from edc_lab.train.metrics import IGNORE_INDEX
from edc_lab.train.state import TrainState

#: steps after which a run that has seen no labelled pixel (all 255) is stopped
LABEL_CHECK_STEPS = 20


class NonFiniteLossError(RuntimeError):
    """The loss, the gradient norm or the weights became NaN or infinite.

    The message names the step and the last checkpoint whose weights are finite.
    """


def train_step(state: TrainState, batch: dict, step: int, *, reporting: bool, started: float) -> dict:
    """Step ``step`` (0-based) on ``batch``: forward, loss terms, the guards, backward and update.

    ``reporting``: a validation or a checkpoint follows this step (labels that were all "ignore"
    so far are an error from there on). Returns the step's record: ``split``, ``step``, ``loss``,
    ``loss_<term>``, ``lr``, ``grad_norm``, ``seconds`` (since ``started``) and ``skipped`` on an
    fp16 step that GradScaler skipped.
    """
    config = state.config
    loss, terms = _forward_and_losses(state, batch)
    values = _average_over_ranks(state, loss, terms, batch)
    check_labels(state, step, reporting)
    check_finite_loss(state, step, values, terms)
    grad_norm, stepped = optimizer_step(state.model, loss, state.optimizer, state.scheduler, state.scaler,
                                        config.grad_clip)
    check_finite_update(state, step, values, grad_norm, stepped)
    record = {"split": "train", "step": step + 1, "loss": values[0].item()}
    record.update({f"loss_{name}": value for name, value in zip(terms, values[1:].tolist())})
    record.update({"lr": state.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                   "seconds": time.perf_counter() - started})
    if not stepped:
        record["skipped"] = True  # fp16 overflow: GradScaler skipped the update (and the schedule its step)
    return record


def _forward_and_losses(state: TrainState, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The student's forward pass (and the frozen teacher's on the cloud-free image), then the loss terms."""
    inputs = state.inputs
    optical, sar = model_inputs(batch, inputs)
    reads_mask = bool(getattr(state.model, "needs_cloud_mask", False))  # the "oracle" arm
    has_cloud_removal = bool(getattr(state.model, "has_cloud_removal", False))
    amp_dtype = state.amp_dtype
    autocast = torch.autocast(state.context.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with autocast:
        outputs = forward(state.wrapped, optical, sar, batch, inputs, reads_mask=reads_mask)
        teacher_outputs = None
        if state.teacher is not None:
            with torch.no_grad():
                teacher_outputs = forward(state.teacher, batch["optical_clear"], batch["sar"], batch, "clear")
        return compute_losses(outputs, batch, state.config, has_cloud_removal, teacher_outputs)


def _average_over_ranks(state: TrainState, loss: torch.Tensor, terms: dict, batch: dict) -> torch.Tensor:
    """One all_reduce: the loss and its terms averaged over ranks (returned), the labelled pixels summed
    (added to ``state.labelled_seen``)."""
    context = state.context
    local = [loss.detach().float()] + [t.detach().float() for t in terms.values()]
    labelled = (batch["label"] != IGNORE_INDEX).sum().float()
    summed = distributed.all_reduce_sum(torch.stack(local + [labelled]), context)
    state.labelled_seen += summed[-1].item()
    return summed[:-1] / context.world_size


def compute_losses(
    outputs: dict,
    batch: dict,
    config: TrainConfig,
    has_cloud_removal: bool,
    teacher_outputs: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The stage's loss terms and their weighted sum (DESIGN §2).

    Returns ``(total, terms)`` with terms ``seg`` always, ``cr`` (student, model
    with a cloud-removal head, lambda_cr > 0), ``kd`` / ``kl`` (student with a
    teacher and lambda_kd / lambda_kl > 0), ``cloud`` (student, model with
    discrepancy maps, lambda_cloud > 0: the mean over stages of the BCE of D_k
    against the down-sampled cloud mask, DESIGN §1's optional supervision of D).
    """
    terms = {"seg": segmentation_loss(outputs["logits"], batch["label"])}
    student = config.stage == "student"
    if student and has_cloud_removal and config.lambda_cr > 0 and outputs.get("cloudfree") is not None:
        terms["cr"] = cloud_removal_loss(
            outputs["cloudfree"],
            batch["optical_clear"],
            batch["cloud_mask"],
            cloud_weight=config.cloud_weight,
            valid=batch["has_clear"],
        )
    if student and teacher_outputs is not None:
        if config.lambda_kd > 0 and outputs.get("features"):
            terms["kd"] = feature_distillation_loss(
                outputs["features"], teacher_outputs["features"], batch["cloud_mask"], config.kd_region
            )
        if config.lambda_kl > 0:
            weight = region_weight(batch["cloud_mask"], tuple(outputs["logits"].shape[-2:]), config.kd_region)
            terms["kl"] = logit_distillation_loss(
                outputs["logits"], teacher_outputs["logits"], config.temperature, weight=weight
            )
    maps = [d for d in outputs.get("discrepancy") or [] if d is not None]
    if student and config.lambda_cloud > 0 and maps:
        terms["cloud"] = torch.stack([cloud_bce(d, batch["cloud_mask"]) for d in maps]).mean()
    weights = {"cr": config.lambda_cr, "kd": config.lambda_kd, "kl": config.lambda_kl, "cloud": config.lambda_cloud}
    return combine_losses(terms, weights), terms


def optimizer_step(
    model: torch.nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    grad_clip: float = 0.0,
) -> tuple[float, bool]:
    """Backward, clip, update; returns ``(gradient norm, whether the weights were updated)``.

    1. backward of the loss (multiplied by GradScaler's scale under fp16), then
       the gradients are unscaled so that their norm is the true one;
    2. ``norm = sqrt(sum of every squared gradient)``; clipped to ``grad_clip``
       when that is > 0;
    3. a non-finite norm: under fp16 that is GradScaler's ordinary overflow, it
       skips the update and halves its scale; without a scaler nothing is
       updated here, and :func:`check_finite_update` stops the run naming the step;
    4. the learning-rate schedule advances only when the optimiser really took
       the step. GradScaler lowers its scale exactly when it skipped one, so
       comparing the scale before and after ``update()`` tells; without that
       check each skipped fp16 step would eat one step of warm-up or decay.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # nothing to do when the scaler is disabled
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm(gradients) if gradients else torch.zeros(())
    norm = float(norm)
    if not math.isfinite(norm) and not scaler.is_enabled():
        return norm, False
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    stepped = scaler.get_scale() >= scale
    if stepped:
        scheduler.step()
    return norm, stepped


# --------------------------------------------------------------------------- the guards
def check_labels(state: TrainState, step: int, reporting: bool) -> None:
    """Labels that are all "ignore": loss 0, mIoU NaN, nothing learnt.

    A single such batch can be real (a tile of no-data), so: a warning at once, an error once
    ``LABEL_CHECK_STEPS`` steps, or the first validation / checkpoint (``reporting``), have seen
    no labelled pixel at all.
    """
    if state.labelled_seen != 0:
        return
    done, config = step + 1, state.config
    if step == state.start_step:
        warnings.warn(f"step {done}: this batch has no labelled pixel (every label is {IGNORE_INDEX}, 'ignore')",
                      stacklevel=5)  # at the call in train()
    if done - state.start_step >= LABEL_CHECK_STEPS or reporting:
        raise ValueError(
            f"labels: the first {done - state.start_step} training step(s) had no labelled pixel: "
            f"every label is {IGNORE_INDEX} ('ignore'), so the segmentation loss is 0 and the mIoU NaN. Check the "
            f"label files and the dataset's class mapping (data={config.data!r}, "
            f"num_classes={state.info['num_classes']})"
        )


def check_finite_loss(state: TrainState, step: int, values: torch.Tensor, terms: dict) -> None:
    """Stop before touching the weights if any rank's loss (``values``: total, then the terms) is not finite."""
    if bool(torch.isfinite(values).all()):
        return
    raise NonFiniteLossError(
        f"step {step + 1} of {state.config.steps}: the loss is not finite "
        f"({', '.join(f'{k}={v:.4g}' for k, v in zip(['total', *terms], values.tolist()))}); "
        f"stopped before updating the weights. Last good checkpoint: {state.last_good_checkpoint}. "
        f"Try a lower lr, amp='off', or check the data for NaN/Inf."
    )


def check_finite_update(state: TrainState, step: int, values: torch.Tensor, grad_norm: float, stepped: bool) -> None:
    """Stop on a non-finite gradient norm (nothing was updated), or on weights the update made non-finite
    (e.g. ``lr=inf``): they must not reach a checkpoint.

    Gradients are identical on all ranks after DDP's all_reduce, so every rank takes the same
    decision on the first; the second is summed over ranks.
    """
    steps, where = state.config.steps, state.last_good_checkpoint
    if not stepped and not state.scaler.is_enabled():
        raise NonFiniteLossError(
            f"step {step + 1} of {steps}: the gradient norm is not finite ({grad_norm:.4g}) although "
            f"the loss is ({values[0].item():.4g}); stopped before updating the weights. Last good checkpoint: "
            f"{where}. Try a lower lr, a grad_clip, amp='off', or look for a NaN-prone operation (sqrt, log, "
            f"division) in the loss."
        )
    broken = non_finite_entries(state.model.state_dict())
    count = distributed.all_reduce_sum(torch.tensor([float(len(broken))], device=state.context.device), state.context)
    if count.item() > 0:
        named = ", ".join(broken[:3]) + (" ..." if len(broken) > 3 else "") if broken else "on another rank"
        raise NonFiniteLossError(
            f"step {step + 1} of {steps}: after the update the weights are not finite ({named}); "
            f"stopped without writing them. Last checkpoint with finite weights: {where}. "
            f"Try a lower (finite) lr, amp='off', or a grad_clip."
        )
