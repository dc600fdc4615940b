"""Measuring efficiency: parameters, FLOPs, latency and peak memory of models and attention blocks.

EDC (https://arxiv.org/abs/2603.20811) claims 46.7 % fewer parameters and 1.98x
faster inference than CloudSeg, and its carrier-token attention (FasterViT's HAT)
claims a cost linear in the number of tokens where dense attention is quadratic.
This module measures such claims instead of quoting them:

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
  ``TorchDispatchMode`` sees every tensor an operator creates, adds its storage
  size when it appears and subtracts it when the last tensor using it is freed.
  This is what ``max_memory_allocated`` measures on a GPU, minus the scratch
  buffers that kernels allocate internally (e.g. im2col); it excludes the
  weights and inputs, which exist before the call. It is deterministic, unlike
  the process's resident size;
* ``attention_cost_curve(sizes, dim, ...)``: one carrier-token (HAT) block
  against one dense-attention block on ``size x size`` token maps: FLOPs,
  latency and memory, and ``crossover(rows)``: the smallest size at which HAT
  is cheaper.

Command line: ``edc-lab bench --models edc_base cloudseg_ref --sizes 512 --device cpu
--repeats 5 --out results.json`` prints a table and writes JSON (an existing
``--out`` is replaced only when it is an earlier result of bench: :func:`check_bench_output`);
``edc-lab bench --attention --sizes 16 32 64 128 256`` prints the attention curve.

Whose idea: everything here is edc_lab's measuring harness.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import weakref
from typing import Callable, Iterable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

# importing the blocks registers the FLOP formula of CPU attention (see module docstring)
from edc_lab.models import MODEL_NAMES, build_model
from edc_lab.models.carrier_tokens import CarrierTokenAttention, DenseAttention

__all__ = [
    "count_parameters",
    "count_flops",
    "measure_latency",
    "compare_latency",
    "peak_memory",
    "LiveTensorBytes",
    "attention_cost_curve",
    "crossover",
    "benchmark_models",
    "machine_description",
    "format_table",
    "add_reference_ratios",
    "add_arguments",
    "run",
]

MiB = 2**20
#: the largest file read to see whether it is an earlier result of bench (results are a few kB to MB)
MAX_RESULT_BYTES = 64 * MiB


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


# ---------------------------------------------------------------------------------------------
# attention: HAT against dense


def _dense_flops_on_meta(dim: int, heads: int, mlp_ratio: float, size: int, batch: int) -> int:
    """FLOPs of one dense-attention block without running it (meta tensors carry shapes only)."""
    block = DenseAttention(dim, heads, mlp_ratio).to("meta")
    x = torch.empty(batch, dim, size, size, device="meta")
    return count_flops(block, (x,))


def attention_cost_curve(
    sizes: Iterable[int] = (16, 32, 64, 128, 256),
    dim: int = 64,
    heads: int = 2,
    window: int = 8,
    carriers: int = 1,
    mlp_ratio: float = 4.0,
    device: str = "cpu",
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    max_dense_tokens: int = 128 * 128,
    measure: bool = True,
    explicit_attention: bool = False,
    seed: int = 0,
) -> list[dict]:
    """One HAT block (``CarrierTokenAttention``, with carrier initialisation and propagation)
    against one ``DenseAttention`` block on ``(batch, dim, size, size)`` maps.

    Returns rows ``{"size", "tokens", "block": "hat" | "dense", "flops", "median_ms",
    "peak_bytes", "measured", "estimated_ms"}``. FLOPs are always counted (dense on
    meta tensors, so even 256 x 256 costs nothing). Latency and memory are
    measured when ``measure`` and, for dense attention, when ``size**2 <=
    max_dense_tokens``; the two blocks are timed interleaved (``compare_latency``).
    Unmeasured dense rows have ``median_ms = peak_bytes = None`` and an
    ``estimated_ms`` that scales the largest measured dense time by the FLOP ratio
    (an estimate, labelled as such). ``explicit_attention=True`` runs both blocks
    with an explicit softmax that materialises the attention matrix (their
    ``keep_attention`` path) instead of the fused kernel the models use: it shows
    the memory a naive implementation needs.
    """
    torch.manual_seed(seed)
    hat = CarrierTokenAttention(dim, heads, window, carriers, mlp_ratio, propagate=True).to(device).eval()
    dense = DenseAttention(dim, heads, mlp_ratio).to(device).eval()
    hat.keep_attention = dense.keep_attention = explicit_attention
    rows = []
    last_dense = None  # (flops, median_ms) of the largest measured dense size
    for size in sorted(set(int(s) for s in sizes)):
        x = torch.randn(batch, dim, size, size, device=device)
        size_rows = {
            name: {"size": size, "tokens": size * size, "block": name, "flops": flops, "measured": False,
                   "median_ms": None, "peak_bytes": None, "estimated_ms": None}
            for name, flops in (("hat", count_flops(hat, (x,))),
                                ("dense", _dense_flops_on_meta(dim, heads, mlp_ratio, size, batch)))
        }
        calls = {}
        if measure:
            calls["hat"] = hat
            if size * size <= max_dense_tokens:
                calls["dense"] = dense
        calls = {name: (lambda block=block: _no_grad_call(block, x)) for name, block in calls.items()}
        latency = compare_latency(calls, repeats, warmup, device) if calls else {}
        for name, call in calls.items():
            row = size_rows[name]
            row["median_ms"] = latency[name]["median_ms"]
            row["peak_bytes"] = peak_memory(call, device)["peak_bytes"]
            row["measured"] = True
        if "dense" in calls:
            last_dense = (size_rows["dense"]["flops"], size_rows["dense"]["median_ms"])
        elif last_dense is not None:
            size_rows["dense"]["estimated_ms"] = last_dense[1] * size_rows["dense"]["flops"] / last_dense[0]
        rows += [size_rows["hat"], size_rows["dense"]]
    return rows


def _no_grad_call(block, x):
    with torch.no_grad():
        return block(x)


def crossover(rows: list[dict], key: str = "median_ms") -> int | None:
    """Smallest size from which on HAT beats dense attention on ``key`` ("flops", "median_ms" or
    "peak_bytes") at every larger measured size; None if it never does."""
    by_size: dict[int, dict] = {}
    for row in rows:
        if row.get(key) is not None:
            by_size.setdefault(row["size"], {})[row["block"]] = row[key]
    compared = sorted(size for size, pair in by_size.items() if len(pair) == 2)
    answer = None
    for size in reversed(compared):
        if by_size[size]["hat"] < by_size[size]["dense"]:
            answer = size
        else:
            break
    return answer


# ---------------------------------------------------------------------------------------------
# models


def machine_description() -> dict:
    """What the numbers were measured on."""
    description = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        if names:
            description["cpu"] = f"{len(names)} x {names[0]}"
    except OSError:
        pass
    if torch.cuda.is_available():
        description["cuda"] = torch.cuda.get_device_name()
    return description


def _training_step(model, optical, sar):
    def step():
        model.zero_grad(set_to_none=True)
        outputs = model(optical, sar)
        loss = outputs["logits"].float().mean()
        if outputs["cloudfree"] is not None:
            loss = loss + outputs["cloudfree"].float().mean()
        loss.backward()
        return loss.detach()

    return step


def _inference(model, optical, sar):
    def forward():
        with torch.no_grad():
            return model(optical, sar)["logits"]

    return forward


def benchmark_models(
    names: Sequence[str],
    sizes: Sequence[int] = (512,),
    *,
    batch: int = 1,
    in_sar: int = 2,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    mode: str = "inference",
    memory: bool = True,
    overrides: dict | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Parameters, FLOPs, latency and peak memory of models ``names`` at square ``sizes``.

    For each size all models are timed *interleaved* (``compare_latency``), so their
    ratios are comparable on a shared machine. ``mode="train"`` times a forward +
    backward step (no optimizer) in training mode instead of an inference forward.
    ``overrides`` maps a model name to ``build_model`` overrides.
    """
    if mode not in ("inference", "train"):
        raise ValueError(f"benchmark_models: mode must be 'inference' or 'train', found {mode!r}")
    overrides = overrides or {}
    log = log or (lambda message: None)
    torch.manual_seed(seed)
    models = {}
    for name in names:
        model = build_model(name, in_sar=in_sar, **overrides.get(name, {})).to(device)
        models[name] = model.train() if mode == "train" else model.eval()
    rows = []
    for size in sizes:
        generator = torch.Generator().manual_seed(seed)
        optical = torch.rand(batch, 4, size, size, generator=generator).to(device)
        sar = torch.rand(batch, in_sar, size, size, generator=generator).to(device)
        make = _training_step if mode == "train" else _inference
        fns = {name: make(model, optical, sar) for name, model in models.items()}
        flops = {}
        for name, model in models.items():
            log(f"counting FLOPs of {name} at {size}x{size}")
            flops[name] = count_flops(model, (optical, sar), backward=mode == "train")
        log(f"timing {', '.join(names)} at {size}x{size} interleaved ({warmup} warm-up + {repeats} rounds)")
        latency = compare_latency(fns, repeats, warmup, device)
        for name, model in models.items():
            peak = peak_memory(fns[name], device) if memory else {"peak_bytes": None, "method": None}
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "batch": batch,
                    "mode": mode,
                    "device": str(device),
                    "parameters": count_parameters(model),
                    "flops": flops[name],
                    **{key: value for key, value in latency[name].items()},
                    "peak_bytes": peak["peak_bytes"],
                    "memory_method": peak["method"],
                    "build_args": getattr(model, "build_args", None),
                }
            )
    return rows


def add_reference_ratios(rows: list[dict], reference: str) -> None:
    """Add ``parameter_ratio`` and ``speedup`` against ``reference`` (same size) to each row, in place.

    ``speedup`` is reference median / model median; ``paired_speedup`` is the median over
    rounds of the ratio *within* a round (both timed back to back under the same load).
    """
    references = {row["size"]: row for row in rows if row["model"] == reference}
    for row in rows:
        ref = references.get(row["size"])
        if ref is None:
            continue
        row["parameter_ratio"] = row["parameters"] / ref["parameters"]
        row["speedup"] = ref["median_ms"] / row["median_ms"]
        row["paired_speedup"] = statistics.median(
            ref_ms / ms for ref_ms, ms in zip(ref["times_ms"], row["times_ms"])
        )


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``benchmark_models`` rows, with the ratios of ``add_reference_ratios`` if present."""
    with_ratios = any("speedup" in row for row in rows)
    header = (
        f"{'model':<14} {'size':>5} {'batch':>5} {'params (M)':>11} {'GFLOPs':>9} {'median ms':>10} {'min ms':>8} "
        f"{'IQR ms':>8} {'peak MiB':>9}"
    )
    if with_ratios:
        header += f" {'params/ref':>10} {'speed-up':>9} {'paired':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        peak = "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / MiB:.1f}"
        line = (
            f"{row['model']:<14} {row['size']:>5} {row['batch']:>5} {row['parameters'] / 1e6:>11.2f} "
            f"{row['flops'] / 1e9:>9.1f} {row['median_ms']:>10.1f} {row['min_ms']:>8.1f} {row['iqr_ms']:>8.1f} {peak:>9}"
        )
        if "speedup" in row:
            line += f" {row['parameter_ratio']:>10.3f} {row['speedup']:>8.2f}x {row['paired_speedup']:>6.2f}x"
        lines.append(line)
    return "\n".join(lines)


def format_attention_table(rows: list[dict]) -> str:
    """A plain-text table of ``attention_cost_curve`` rows, HAT and dense side by side."""
    header = (
        f"{'map':>9} {'tokens':>7} {'HAT GFLOPs':>11} {'dense GFLOPs':>13} {'HAT ms':>8} {'dense ms':>10} "
        f"{'HAT MiB':>8} {'dense MiB':>10}"
    )
    lines = [header, "-" * len(header)]
    pairs: dict[int, dict] = {}
    for row in rows:
        pairs.setdefault(row["size"], {})[row["block"]] = row
    for size in sorted(pairs):
        hat, dense = pairs[size]["hat"], pairs[size]["dense"]
        dense_ms = (
            f"{dense['median_ms']:.1f}" if dense["median_ms"] is not None
            else (f"~{dense['estimated_ms']:.0f} est" if dense["estimated_ms"] is not None else "-")
        )

        def mib(row):
            return "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / MiB:.1f}"

        def ms(row):
            return "-" if row["median_ms"] is None else f"{row['median_ms']:.1f}"

        lines.append(
            f"{f'{size}x{size}':>9} {size * size:>7} {hat['flops'] / 1e9:>11.3f} {dense['flops'] / 1e9:>13.3f} "
            f"{ms(hat):>8} {dense_ms:>10} {mib(hat):>8} {mib(dense):>10}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edc_lab.cli import int_in

    parser.add_argument("--models", nargs="+", default=["edc_base", "cloudseg_ref"], metavar="NAME",
                        help=f"models to compare (default: edc_base cloudseg_ref); any of {', '.join(MODEL_NAMES)}")
    parser.add_argument("--sizes", nargs="+", type=int_in(1, 8192), default=None, metavar="S",
                        help="square input sizes (default 512; with --attention: token-map sides 16 32 64 128 256)")
    parser.add_argument("--batch", type=int_in(1, 1024), default=1, help="batch size (default 1)")
    parser.add_argument("--sar-channels", type=int_in(1, 64), default=2, help="SAR channels (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--repeats", type=int_in(1, 10_000), default=5, help="timed repeats per model (default 5); the median is reported")
    parser.add_argument("--warmup", type=int_in(0, 10_000), default=1, help="untimed calls before timing (default 1)")
    parser.add_argument("--threads", type=int_in(1, 1024), default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--mode", choices=("inference", "train"), default="inference",
                        help="time an inference forward or a training step (forward + backward)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--scale", choices=("tiny", "small", "base"), default=None,
                        help="EDC size at which to build the baselines and ablations among --models (default tiny)")
    parser.add_argument("--reference", default=None,
                        help="model to compute ratios against (default: cloudseg_ref when it is among --models)")
    parser.add_argument("--attention", action="store_true",
                        help="instead of models: one HAT block against one dense-attention block on growing token maps")
    parser.add_argument("--dim", type=int_in(1, 4096), default=64, help="--attention: channels (default 64)")
    parser.add_argument("--heads", type=int_in(1, 256), default=2, help="--attention: heads (default 2)")
    parser.add_argument("--window", type=int_in(1, 1024), default=8, help="--attention: HAT window (default 8)")
    parser.add_argument("--max-dense-tokens", type=int_in(1, 2**31), default=128 * 128,
                        help="--attention: largest dense map that is actually run (default 16384 = 128x128)")
    parser.add_argument("--explicit-attention", action="store_true",
                        help="--attention: materialise the attention matrix (explicit softmax) instead of the fused kernel")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")


def is_bench_result(path) -> bool:
    """Whether ``path`` holds a result of ``edc-lab bench`` (JSON with its ``command`` and ``machine``)."""
    try:
        if os.path.getsize(path) > MAX_RESULT_BYTES:
            return False
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
    except (OSError, ValueError):  # ValueError: not JSON, not UTF-8
        return False
    return isinstance(result, dict) and str(result.get("command", "")).startswith("edc-lab bench") and "machine" in result


def check_bench_output(path) -> None:
    """Refuse ``--out`` before measuring: a device, FIFO or folder, or an existing file bench did not write.

    Like ``predict``, bench replaces only its own earlier output (or an empty
    file); a checkpoint or a notebook passed as ``--out`` is left alone
    (:func:`edc_lab.data.outputs.check_output_file`, :func:`~edc_lab.data.outputs.check_replaceable`).
    """
    from edc_lab.data.outputs import check_output_file, check_replaceable

    check_output_file("--out", path)
    check_replaceable("--out", path, is_bench_result, "a result of edc-lab bench (JSON)")


def _fail(message: str) -> int:
    print(f"edc-lab bench: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        return _fail(f"need --repeats >= 1, --warmup >= 0, --batch >= 1; found {args.repeats}, {args.warmup}, {args.batch}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        return _fail(f"--device {args.device} asked for, but torch {torch.__version__} sees no CUDA device")
    if args.out:
        try:
            check_bench_output(args.out)
        except ValueError as error:  # DataError
            return _fail(str(error))
    result = {"command": "edc-lab bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
              "machine": machine_description(), "device": args.device}
    if args.attention:
        sizes = args.sizes or [16, 32, 64, 128, 256]
        if min(sizes) < 1:
            return _fail(f"--sizes must be positive, found {sizes}")
        rows = attention_cost_curve(
            sizes, args.dim, args.heads, args.window, device=args.device, batch=args.batch,
            repeats=args.repeats, warmup=args.warmup, max_dense_tokens=args.max_dense_tokens,
            measure=True, explicit_attention=args.explicit_attention,
        )
        result["attention"] = {
            "dim": args.dim, "heads": args.heads, "window": args.window, "batch": args.batch,
            "explicit_attention": args.explicit_attention, "rows": rows,
            "crossover": {key: crossover(rows, key) for key in ("flops", "median_ms", "peak_bytes")},
        }
        print(format_attention_table(rows))
        for key, size in result["attention"]["crossover"].items():
            print(f"HAT cheaper than dense from {size}x{size} on ({key})" if size else f"no crossover on {key}")
    else:
        unknown = [name for name in args.models if name not in MODEL_NAMES]
        if unknown:
            return _fail(f"unknown model(s) {unknown}; valid names: {', '.join(MODEL_NAMES)}")
        sizes = args.sizes or [512]
        if min(sizes) < 1:
            return _fail(f"--sizes must be positive, found {sizes}")
        reference = args.reference or ("cloudseg_ref" if "cloudseg_ref" in args.models else None)
        if reference is not None and reference not in args.models:
            return _fail(f"--reference {reference} is not among --models {args.models}")
        scaled = {"optical_only", "sar_only", "early_fusion", "dense_edc", "edc_no_dchf", "edc_no_cr"}
        overrides = {name: {"scale": args.scale} for name in args.models if args.scale and name in scaled}
        rows = benchmark_models(
            args.models, sizes, overrides=overrides, batch=args.batch, in_sar=args.sar_channels, device=args.device,
            repeats=args.repeats, warmup=args.warmup, mode=args.mode, memory=not args.no_memory,
            log=lambda message: print(message, file=sys.stderr, flush=True),
        )
        if reference:
            add_reference_ratios(rows, reference)
        result["rows"] = rows
        result["reference"] = reference
        print(format_table(rows))
    if args.out:
        from edc_lab.data.outputs import atomic_output

        with atomic_output(args.out) as temporary:  # never a half-written file
            temporary.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # python -m edc_lab.bench ...
    parser = argparse.ArgumentParser(prog="edc-lab bench")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
