"""Several processes, one training run: the few pieces DDP needs.

``torchrun --nproc_per_node=N -m edc_lab.cli train ...`` starts N copies of
the same program and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` through environment variables. Each copy (*rank*):

1. joins a process group (``gloo`` on CPU, ``nccl`` on GPUs), one GPU per rank;
2. wraps its model in ``DistributedDataParallel``: after ``backward`` the
   gradients are averaged across ranks, so every replica takes the same step and
   the weights stay identical (:func:`wrap_model`; :func:`check_replicas` compares
   the :func:`parameter_digest` of every rank at the end);
3. reads its own share of every global batch (:class:`StepSampler`, built on
   ``DistributedSampler``);
4. evaluates its own whole batches of the validation set (:func:`shard_batches`);
   the metrics' sums are then added over ranks, so every rank holds the
   single-process numbers and none waits idle at a barrier meanwhile;
5. lets rank 0 alone write checkpoints and print;
6. at the end (:func:`cleanup`) frees what still holds the process group,
   waits for the other ranks, and only then leaves the group, so that gloo's
   threads are gone before Python exits.

Without those variables everything here degrades to a single process, so the
same ``train`` serves a laptop and a GPU cluster (DESIGN §2). Standard PyTorch
practice; nothing here is from the paper.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``"auto"``: the local GPU when there is one, else the CPU; ``"cuda"``: GPU ``local_rank``.

    Under torchrun (``world_size > 1``) each process must own its GPU, so a fixed
    index such as ``"cuda:0"`` is refused: every rank would land on that one GPU.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} was asked for, but torch finds no CUDA GPU (torch {torch.__version__})")
    if device.type == "cuda" and device.index is None:
        return torch.device(f"cuda:{local_rank}")
    if device.type == "cuda" and world_size > 1:
        raise ValueError(
            f"device: {name!r} names one GPU, but {world_size} processes were launched; "
            f"use --device cuda (or auto) so that each process takes the GPU of its LOCAL_RANK"
        )
    return device


def setup(device: str = "auto") -> DistributedContext:
    """Join the process group when launched by torchrun, else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    resolved = resolve_device(device, local_rank, world_size)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    # Import this *before* the group exists. Its functions default to ``group=group.WORLD``,
    # evaluated at import time; DistributedDataParallel imports it (through torch.distributed._shard)
    # while the group exists, and then those default arguments hold the group for good:
    # destroy_process_group() can no longer free it, and gloo's threads are still running when
    # Python exits (see cleanup). Imported now, those defaults are None (= the default group).
    import torch.distributed.nn.functional  # noqa: F401

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, resolved)


def cleanup(context: DistributedContext, synchronize: bool = True) -> None:
    """Leave the process group (safe to call in a single process, and twice).

    ``destroy_process_group()`` frees the group, and with it gloo's worker and
    network threads, only if nothing else still refers to it. Anything that
    does keeps those threads running until the process exits, where they are
    torn down in the middle of interpreter and C++ shutdown: the likely source
    of a rank's rare abort at the end of a run ("terminate called without an
    active exception", SIGABRT, seen on a loaded 2-core machine).
    Two such holders exist: the default arguments of
    ``torch.distributed.nn.functional`` (defused in :func:`setup`) and the
    ``DistributedDataParallel`` wrapper, which sits in a reference cycle and so
    outlives the function that made it. Hence the order:

    1. ``gc.collect()`` frees the unreachable DDP wrapper (and its reducer's
       reference to the group) while Python is fully alive;
    2. ``barrier()``, with ``synchronize`` (the normal end of a run): no rank
       closes its connections while another still uses them. After an error
       the other ranks may be waiting in some other collective, so none then;
    3. ``destroy_process_group()``.
    """
    if not (context.enabled and dist.is_initialized()):
        return
    gc.collect()
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op in a single process)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(value, context: DistributedContext) -> list:
    """Every rank's ``value`` (any picklable object), in rank order: ``[value_0, value_1, ...]``."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def shard_batches(count: int, batch_size: int, context: DistributedContext) -> list[list[int]]:
    """This rank's share of the batches ``[0, b), [b, 2b), ...`` of ``count`` samples in order.

    The single-process batches are cut into ``world_size`` contiguous blocks of
    whole batches, block r for rank r. Unlike ``DistributedSampler`` nothing is
    padded: no sample is read twice (no double counting in a metric), and each
    batch holds the same samples as in one process, so the model sees the same
    inputs and the summed metrics equal the single-process ones. A rank may get
    no batch at all (fewer batches than ranks); it still joins the reductions.

    >>> shard_batches(5, 2, DistributedContext(rank=1, world_size=2))
    [[2, 3], [4]]
    """
    batches = [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    first = len(batches) * context.rank // context.world_size
    last = len(batches) * (context.rank + 1) // context.world_size
    return batches[first:last]


def broadcast_object(value, context: DistributedContext):
    """Rank 0's ``value`` on every rank."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_buffers(model: torch.nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP keeps *parameters* identical by averaging gradients, and broadcasts
    buffers from rank 0 at the start of each forward pass; the last forward
    still leaves each rank with running statistics of its own batch. This is
    the same broadcast once more, after the last step.
    """
    if context.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter, bit for bit: equal digests = identical replicas."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def wrap_model(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """The model in ``DistributedDataParallel`` under torchrun, else the model itself."""
    if not context.enabled:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[context.device.index] if context.device.type == "cuda" else None,
        find_unused_parameters=True,  # e.g. a teacher's cloud-removal head gets no gradient
    )


def check_replicas(model: torch.nn.Module, context: DistributedContext) -> None:
    """At the end of a run under DDP: every rank prints its weights' digest; rank 0 refuses diverged replicas.

    ``model`` is the bare model (not its DDP wrapper).
    """
    if not context.enabled:
        return
    broadcast_buffers(model, context)
    digest = parameter_digest(model)
    digests = [None] * context.world_size
    dist.all_gather_object(digests, digest)
    print(f"rank {context.rank}/{context.world_size}: finished, parameter digest {digest}", flush=True)
    if context.is_main and len(set(digests)) != 1:
        raise RuntimeError(f"DDP replicas diverged: parameter digests per rank {digests}")


class StepSampler(Sampler[int]):
    """Sample indices for steps ``start_step, start_step + 1, ...``: data order = f(seed, step).

    Epoch e is ``DistributedSampler(seed=seed).set_epoch(e)``'s permutation (each
    rank its own disjoint slice, ``drop_last=True``); step s reads the batch at
    position ``s * batch_size`` of the endless concatenation of epochs. Because
    the order depends only on (seed, step), a run resumed at step s sees exactly
    the batches an uninterrupted run would have seen, without replaying the
    first s batches.
    """

    def __init__(self, dataset, batch_size: int, seed: int, start_step: int, total_steps: int,
                 context: DistributedContext = DistributedContext()):
        self.distributed = DistributedSampler(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.per_epoch = len(self.distributed)
        if self.per_epoch < batch_size:
            raise ValueError(
                f"dataset: {len(dataset)} samples over {context.world_size} process(es) is fewer than one batch of "
                f"{batch_size}; lower --batch-size or use more samples"
            )
        self.batch_size = batch_size
        self.start_step = start_step
        self.total_steps = total_steps

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        position = self.start_step * self.batch_size
        end = self.total_steps * self.batch_size
        epoch = position // self.per_epoch
        while position < end:
            self.distributed.set_epoch(epoch)
            order = list(self.distributed)
            offset = position - epoch * self.per_epoch
            for index in order[offset:]:
                if position >= end:
                    return
                yield index
                position += 1
            epoch += 1
