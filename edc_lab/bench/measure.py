"""Measuring tools: parameters, FLOPs, wall-clock latency and peak memory of one call.

* ``count_parameters(model)``: the number of parameters;
* ``count_flops(fn_or_model, inputs)``: floating-point operations counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add, matrix
  products, convolutions and attention only; element-wise operations are not
  counted). ``edc_lab.models.carrier_tokens`` registers the formula for the CPU
  kernel of ``scaled_dot_product_attention``, which torch itself does not count;
* ``measure_latency(fn, repeats, warmup)``: wall-clock times after ``warmup``
  untimed calls, summarised by their **median** (robust to a busy machine);
  ``compare_latency({name: fn})`` times several functions *interleaved*, round
  by round, so that a load change on a shared machine hits all of them alike
  and their *ratio* stays meaningful;
* ``peak_memory(fn, device)``: on CUDA, ``torch.cuda.max_memory_allocated``
  above what was allocated before the call. On a CPU torch keeps no such
  statistic (and ``tracemalloc`` does not see torch's allocator), so edc_lab
  counts the **peak of live tensor bytes** allocated during the call: a
  ``TorchDispatchMode`` (:class:`LiveTensorBytes`) sees every tensor an operator
  creates, adds its storage size when it appears and subtracts it when the last
  tensor using it is freed. This is what ``max_memory_allocated`` measures on a
  GPU, minus the scratch buffers that kernels allocate internally (e.g. im2col);
  it excludes the weights and inputs, which exist before the call. It is
  deterministic, unlike the process's resident size;
* ``used_parameters(model, inputs)``: the parameters an output depends on (a parameter
  that is built but never reaches an output is not counted);
* ``attainable_throughput()``: GFLOP/s of a large fp32 matrix product and a large
  convolution on this machine, what a model's achieved GFLOP/s is compared with.

Whose idea: edc_lab's measuring harness.
"""

from __future__ import annotations

import statistics
import time
import weakref
from typing import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

# importing the blocks registers the FLOP formula of CPU attention (see the module docstring)
import edc_lab.models.carrier_tokens  # noqa: F401

MiB = 2**20


def _synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(fn: Callable | torch.nn.Module, inputs: Sequence = (), *, backward: bool = False) -> int:
    """FLOPs of one call ``fn(*inputs)`` (2 per multiply-add), counted by ``FlopCounterMode``.

    With ``backward=True`` the call runs with gradients and the FLOPs of
    ``backward()`` on the sum of every floating output are added; otherwise it runs
    under ``torch.no_grad()``.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        if backward:
            outputs = fn(*inputs)
            loss = sum(leaf.float().sum() for leaf in tree_leaves(outputs) if _is_float_tensor(leaf))
            loss.backward()
        else:
            with torch.no_grad():
                fn(*inputs)
    return int(counter.get_total_flops())


def _is_float_tensor(leaf) -> bool:
    return isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and leaf.requires_grad


def _summary(times_ms: list[float], warmup: int) -> dict:
    ordered = sorted(times_ms)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "iqr_ms": quartiles[2] - quartiles[0],
        "repeats": len(ordered),
        "warmup": warmup,
        "times_ms": times_ms,
    }


def measure_latency(fn: Callable[[], object], repeats: int = 10, warmup: int = 2, device=None) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Returns ``median_ms`` (the number to quote), ``mean_ms``, ``min_ms``, ``max_ms``,
    ``iqr_ms`` (interquartile range), ``repeats``, ``warmup`` and every ``times_ms``.
    On CUDA, pass ``device`` so the clock waits for the GPU.
    """
    return compare_latency({"fn": fn}, repeats, warmup, device)["fn"]


def compare_latency(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2, device=None) -> dict:
    """Time several functions interleaved: round ``r`` calls each once, in an order rotated every round.

    Returns ``{name: measure_latency-style dict}``. Use it for ratios on a shared machine.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"compare_latency: need repeats >= 1 and warmup >= 0, found repeats={repeats}, warmup={warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            _synchronize(device)
            start = time.perf_counter()
            fns[name]()
            _synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: _summary(times[name], warmup) for name in names}


class LiveTensorBytes(TorchDispatchMode):
    """Track the bytes of tensor storages created inside the mode; ``peak_bytes`` is their maximum.

    A storage is counted when an operator returns a tensor on a storage that
    none of its inputs used (a new allocation; views and in-place results are
    not new), and uncounted when the last tracked tensor on it is freed.
    """

    def __init__(self):
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self._bytes: dict[int, int] = {}
        self._references: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._references[key] -= 1
        if self._references[key] == 0:
            self.current_bytes -= self._bytes.pop(key)
            del self._references[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        outputs = func(*args, **(kwargs or {}))
        input_storages = {
            leaf.untyped_storage().data_ptr()
            for leaf in tree_leaves((args, kwargs))
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta"
        }
        for leaf in tree_leaves(outputs):
            if not isinstance(leaf, torch.Tensor) or leaf.device.type == "meta":
                continue
            storage = leaf.untyped_storage()
            key = storage.data_ptr()
            if key == 0:
                continue
            if key not in self._bytes:
                if key in input_storages:
                    continue  # a view of (or in-place write to) a tensor that existed before: not new memory
                self._bytes[key] = storage.nbytes()
                self._references[key] = 0
                self.current_bytes += storage.nbytes()
                self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            self._references[key] += 1
            weakref.finalize(leaf, self._release, key)
        return outputs


def peak_memory(fn: Callable[[], object], device="cpu") -> dict:
    """Peak memory of one call ``fn()`` above what existed before it.

    Returns ``{"peak_bytes": int, "method": str}``: on CUDA ``torch.cuda.max_memory_allocated``
    minus the allocation before the call; on CPU the peak of live tensor bytes
    (``LiveTensorBytes``; see the module docstring for what it includes).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return {"peak_bytes": int(peak), "method": "torch.cuda.max_memory_allocated"}
    tracker = LiveTensorBytes()
    with tracker:
        result = fn()
    del result
    return {"peak_bytes": int(tracker.peak_bytes), "method": "peak live tensor bytes (TorchDispatchMode)"}


def _prediction_outputs(outputs) -> list:
    """The outputs a prediction is made of: the tensor itself, the tensors of a tuple, or the tensor
    *values* of a dict (``logits``, ``cloudfree``); diagnostic lists such as a model's ``gates`` or
    ``features`` are not outputs."""
    if isinstance(outputs, dict):
        return [value for value in outputs.values() if isinstance(value, torch.Tensor)]
    if isinstance(outputs, (tuple, list)):
        return [value for value in outputs if isinstance(value, torch.Tensor)]
    return [outputs]


def used_parameters(model: torch.nn.Module, inputs: Sequence) -> int:
    """Parameters an output of ``model(*inputs)`` depends on: those that receive a gradient when the
    sum of every floating output tensor is back-propagated (one forward + backward, gradients cleared
    after). The outputs are the tensors a model returns, or the tensor values of its dict
    (``logits``, ``cloudfree``); diagnostic lists (``gates``, ``features``) are not outputs.

    A parameter that is built but never reaches an output (e.g. a head the model does not call, or
    CloudSeg's last SAR gate, which only a diagnostic list shows) is left out; this is the count to
    compare between models ("forward-used"). Which parameters are used does not depend on the input
    size, so small ``inputs`` suffice.
    """
    previous = {name: parameter.grad for name, parameter in model.named_parameters()}
    was_training = model.training
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            outputs = model(*inputs)
            loss = sum(leaf.float().sum() for leaf in _prediction_outputs(outputs) if _is_float_tensor(leaf))
            loss.backward()
        # a parameter whose gradient is exactly zero everywhere is still used (e.g. a gate that
        # saturates on this input): what counts is that the graph reaches it
        return sum(p.numel() for p in model.parameters() if p.grad is not None)
    finally:
        for name, parameter in model.named_parameters():
            parameter.grad = previous[name]
        model.train(was_training)


#: the default problems of :func:`attainable_throughput`: a square fp32 matrix product of this side,
#: and a 3x3 convolution of this many channels on a map of this side (batch 1), both large enough
#: that the kernels run at their best and small enough to take well under a second per call on a CPU
MATMUL_SIDE = 2048
CONV_CHANNELS, CONV_SIDE = 256, 128


def attainable_throughput(device="cpu", repeats: int = 5, warmup: int = 2, matmul_side: int = MATMUL_SIDE,
                          conv_channels: int = CONV_CHANNELS, conv_side: int = CONV_SIDE,
                          dtype: torch.dtype = torch.float32) -> dict:
    """What this machine attains on the two operations that dominate the models: GFLOP/s of a large
    fp32 matrix product (``torch.mm``, ``matmul_side``³) and of a large 3×3 convolution
    (``conv_channels`` → ``conv_channels`` on ``conv_side``², batch 1, padding 1), each the median of
    ``repeats`` calls after ``warmup``, with the threads torch uses now.

    ``dtype=torch.bfloat16`` measures the same two operations in bf16 (the attainable of bf16
    rows: AVX-512 BF16 / AMX kernels on CPUs that have them).

    Returns ``{"matmul_gflops", "conv_gflops", "attainable_gflops" (the larger), "matmul_side",
    "conv_channels", "conv_side", "threads", "dtype"}``. A model's achieved GFLOP/s divided by
    ``attainable_gflops`` is the share of the machine it uses (``add_efficiency``): not the
    hardware's theoretical peak, but what PyTorch's own best kernels reach on it.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(matmul_side, matmul_side, generator=generator).to(device, dtype)
    b = torch.rand(matmul_side, matmul_side, generator=generator).to(device, dtype)
    image = torch.rand(1, conv_channels, conv_side, conv_side, generator=generator).to(device, dtype)
    weight = torch.rand(conv_channels, conv_channels, 3, 3, generator=generator).to(device, dtype)

    def matmul():
        return torch.mm(a, b)

    def conv():
        return torch.nn.functional.conv2d(image, weight, padding=1)

    with torch.no_grad():
        flops = {"matmul": count_flops(matmul), "conv": count_flops(conv)}
        latency = compare_latency({"matmul": matmul, "conv": conv}, repeats, warmup, device)
    rates = {name: flops[name] / (latency[name]["median_ms"] / 1000.0) / 1e9 for name in flops}
    return {
        "matmul_gflops": rates["matmul"],
        "conv_gflops": rates["conv"],
        "attainable_gflops": max(rates.values()),
        "matmul_side": matmul_side,
        "conv_channels": conv_channels,
        "conv_side": conv_side,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
    }
