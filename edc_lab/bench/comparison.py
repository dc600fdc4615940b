"""Models compared: parameters, FLOPs, latency and peak memory of several models at the same sizes, timed
interleaved (:func:`benchmark_models`), their ratios to a reference and a plain-text table.

EDC (https://arxiv.org/abs/2603.20811) claims 46.7 % fewer parameters and
1.98x faster inference than CloudSeg; :func:`add_reference_ratios` puts such
ratios next to the measurements. Whose idea: edc_lab's measuring harness.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Sequence

import torch

from edc_lab.bench.measure import MiB, _synchronize, compare_latency, count_flops, count_parameters, peak_memory, used_parameters
from edc_lab.models import build_model

#: the input side of the one forward + backward that finds which parameters a model uses
USED_PROBE_SIZE = 64


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
            outputs = model(optical, sar)
            return outputs[0] if isinstance(outputs, tuple) else outputs["logits"]  # TileOutputs: probabilities

    return forward


#: the variants of one model ``benchmark_models`` can time: how it is run (eager or compiled) and in
#: which precision (fp32, or bf16 autocast)
EXECUTIONS = ("eager", "compiled")


def _variants(compile: bool, precisions: Sequence[str]) -> list[tuple[str, str]]:
    return [(execution, precision) for execution in (EXECUTIONS if compile else EXECUTIONS[:1])
            for precision in precisions]


def _with_precision(fn: Callable[[], object], device: str, dtype) -> Callable[[], object]:
    from edc_lab.acceleration import autocast_context

    def call():
        with autocast_context(device, dtype):
            return fn()

    return call


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
    compile: bool = False,
    precisions: Sequence[str] = ("fp32",),
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Parameters, FLOPs, latency and peak memory of models ``names`` at square ``sizes``.

    For each size all models are timed *interleaved* (``compare_latency``), so their
    ratios are comparable on a shared machine. ``mode="train"`` times a forward +
    backward step (no optimizer) in training mode instead of an inference forward.
    ``overrides`` maps a model name to ``build_model`` overrides. Each row also has
    ``used_parameters`` (``used_parameters``, found once per model on a small input: which
    parameters reach an output does not depend on the size).

    Variants, all timed in the same interleaved rounds: ``compile=True`` adds each model
    compiled (:func:`edc_lab.acceleration.compile_model`; for inference as ``edc-lab predict
    --compile`` runs it: :class:`edc_lab.predict.tiling.TileOutputs` with channels-last inputs,
    the softmax included; its first call, compilation
    included, is reported as ``first_call_s`` and is not among the warm-up or timed calls);
    ``precisions`` lists ``fp32`` and/or ``bf16`` (autocast; refused on a CPU without
    native bf16). Each row has ``execution`` (eager / compiled) and ``precision``; peak
    memory is measured for eager variants only (the tracker would change what is compiled).
    """
    from edc_lab.acceleration import compile_model, resolve_precision

    if mode not in ("inference", "train"):
        raise ValueError(f"benchmark_models: mode must be 'inference' or 'train', found {mode!r}")
    bad = [precision for precision in precisions if precision not in ("fp32", "bf16")]
    if bad or not precisions:
        raise ValueError(f"--precision: expected fp32 and/or bf16, found {list(precisions)}")
    dtypes = {precision: resolve_precision(precision, device) for precision in precisions}  # refuses bf16 early
    overrides = overrides or {}
    log = log or (lambda message: None)
    torch.manual_seed(seed)
    models = {}
    for name in names:
        model = build_model(name, in_sar=in_sar, **overrides.get(name, {})).to(device)
        models[name] = model.train() if mode == "train" else model.eval()
    runners = {(name, "eager"): model for name, model in models.items()}
    if compile:  # inference as edc-lab predict --compile runs it: softmax included, channels-last inputs
        from edc_lab.predict.tiling import TileOutputs

        inference = mode == "inference"
        runners.update({(name, "compiled"): compile_model(TileOutputs(model, channels_last=True) if inference else model,
                                                          inference=inference, device=device)
                        for name, model in models.items()})
    used = {}
    for name, model in models.items():
        log(f"finding the parameters {name} uses")
        probe = torch.Generator().manual_seed(seed)
        used[name] = used_parameters(model, (torch.rand(1, 4, USED_PROBE_SIZE, USED_PROBE_SIZE, generator=probe).to(device),
                                             torch.rand(1, in_sar, USED_PROBE_SIZE, USED_PROBE_SIZE, generator=probe).to(device)))
    variants = _variants(compile, precisions)
    rows = []
    for size in sizes:
        generator = torch.Generator().manual_seed(seed)
        optical = torch.rand(batch, 4, size, size, generator=generator).to(device)
        sar = torch.rand(batch, in_sar, size, size, generator=generator).to(device)
        make = _training_step if mode == "train" else _inference
        fns = {(name, execution, precision): _with_precision(make(runners[name, execution], optical, sar), device,
                                                             dtypes[precision])
               for name in models for execution, precision in variants}
        flops = {}
        for name, model in models.items():
            log(f"counting FLOPs of {name} at {size}x{size}")
            flops[name] = count_flops(model, (optical, sar), backward=mode == "train")
        first_call = {}
        for key, fn in fns.items():
            if key[1] == "compiled":
                log(f"compiling {key[0]} ({key[2]}) at {size}x{size}, batch {batch}")
                start = time.perf_counter()
                fn()
                _synchronize(device)
                first_call[key] = time.perf_counter() - start
        log(f"timing {', '.join(names)} ({', '.join(' '.join(v) for v in variants)}) at {size}x{size} "
            f"interleaved ({warmup} warm-up + {repeats} rounds)")
        latency = compare_latency(fns, repeats, warmup, device)
        for (name, execution, precision), fn in fns.items():
            model = models[name]
            measured = memory and execution == "eager"
            peak = peak_memory(fn, device) if measured else {"peak_bytes": None, "method": None}
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "batch": batch,
                    "mode": mode,
                    "device": str(device),
                    "execution": execution,
                    "precision": precision,
                    "first_call_s": first_call.get((name, execution, precision)),
                    "parameters": count_parameters(model),
                    "used_parameters": used[name],
                    "flops": flops[name],
                    **{key: value for key, value in latency[name, execution, precision].items()},
                    "peak_bytes": peak["peak_bytes"],
                    "memory_method": peak["method"],
                    "build_args": getattr(model, "build_args", None),
                }
            )
    return rows


def _paired(reference_ms: Sequence[float], ms: Sequence[float]) -> float:
    """The median over rounds of reference / time within a round (both timed back to back)."""
    return statistics.median(ref / value for ref, value in zip(reference_ms, ms))


def _variant(row: dict) -> tuple[str, str]:
    return row.get("execution", "eager"), row.get("precision", "fp32")


def add_reference_ratios(rows: list[dict], reference: str) -> None:
    """Add ``parameter_ratio`` and ``speedup`` against ``reference`` (same size and variant) to each row, in place.

    ``speedup`` is reference median / model median; ``paired_speedup`` is the median over
    rounds of the ratio *within* a round (both timed back to back under the same load).
    Rows of a compiled or bf16 variant also get ``variant_speedup`` and ``paired_variant_speedup``
    against the same model eager in fp32 (same size).
    """
    references = {(row["size"], *_variant(row)): row for row in rows if row["model"] == reference}
    for row in rows:
        ref = references.get((row["size"], *_variant(row)))
        if ref is None:
            continue
        row["parameter_ratio"] = row["parameters"] / ref["parameters"]
        if "used_parameters" in row and "used_parameters" in ref:
            row["used_parameter_ratio"] = row["used_parameters"] / ref["used_parameters"]
        row["speedup"] = ref["median_ms"] / row["median_ms"]
        row["paired_speedup"] = _paired(ref["times_ms"], row["times_ms"])
    add_variant_ratios(rows)


def add_variant_ratios(rows: list[dict]) -> None:
    """Add ``variant_speedup`` and ``paired_variant_speedup`` (eager fp32 / this variant, same model and
    size) to every compiled or bf16 row, in place."""
    baselines = {(row["model"], row["size"]): row for row in rows if _variant(row) == ("eager", "fp32")}
    for row in rows:
        base = baselines.get((row["model"], row["size"]))
        if base is None or row is base:
            continue
        row["variant_speedup"] = base["median_ms"] / row["median_ms"]
        row["paired_variant_speedup"] = _paired(base["times_ms"], row["times_ms"])


def add_efficiency(rows: list[dict], attainable: dict, attainable_bf16: dict | None = None) -> None:
    """Add ``achieved_gflops`` (FLOPs / median time) and ``attainable_share`` (of
    ``attainable["attainable_gflops"]``, from ``measure.attainable_throughput``) to each row, in place;
    a bf16 row's share is of ``attainable_bf16`` when it is given (the same operations in bf16)."""
    for row in rows:
        limit = attainable_bf16 if attainable_bf16 is not None and row.get("precision") == "bf16" else attainable
        row["achieved_gflops"] = row["flops"] / (row["median_ms"] / 1000.0) / 1e9
        row["attainable_share"] = row["achieved_gflops"] / limit["attainable_gflops"]


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``benchmark_models`` rows, with the ratios of ``add_reference_ratios`` if present."""
    with_ratios = any("speedup" in row for row in rows)
    with_efficiency = any("attainable_share" in row for row in rows)
    with_variants = any(_variant(row) != ("eager", "fp32") for row in rows)
    header = (
        f"{'model':<14} {'size':>5} {'batch':>5} {'params (M)':>11} {'GFLOPs':>9} {'median ms':>10} {'min ms':>8} "
        f"{'IQR ms':>8} {'peak MiB':>9}"
    )
    if with_variants:
        header = f"{'model':<14} {'run':<13}" + header[14:]
    if with_ratios:
        header += f" {'params/ref':>10} {'used/ref':>8} {'speed-up':>9} {'paired':>7}"
    if with_efficiency:
        header += f" {'GFLOP/s':>8} {'share':>6}"
    if with_variants:
        header += f" {'vs eager':>8} {'compile':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        peak = "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / MiB:.1f}"
        name = f"{row['model']:<14} {' '.join(_variant(row)):<13}" if with_variants else f"{row['model']:<14}"
        line = (
            f"{name} {row['size']:>5} {row['batch']:>5} {row['parameters'] / 1e6:>11.2f} "
            f"{row['flops'] / 1e9:>9.1f} {row['median_ms']:>10.1f} {row['min_ms']:>8.1f} {row['iqr_ms']:>8.1f} {peak:>9}"
        )
        if "speedup" in row:
            used = row.get("used_parameter_ratio")
            line += (f" {row['parameter_ratio']:>10.3f} {'-' if used is None else format(used, '.3f'):>8}"
                     f" {row['speedup']:>8.2f}x {row['paired_speedup']:>6.2f}x")
        if "attainable_share" in row:
            line += f" {row['achieved_gflops']:>8.1f} {row['attainable_share']:>6.1%}"
        if with_variants:
            paired = row.get("paired_variant_speedup")
            first = row.get("first_call_s")
            line += f" {'-' if paired is None else format(paired, '.2f') + 'x':>8} {'-' if first is None else format(first, '.0f') + ' s':>7}"
        lines.append(line)
    return "\n".join(lines)
