"""``edc-lab bench``: the sub-command's options (:func:`add_arguments`) and its run (:func:`run`), which
prints a table and writes JSON, replacing an existing ``--out`` only when it is an earlier result of bench
(:func:`check_bench_output`).

    edc-lab bench --models edc_base cloudseg_ref --sizes 512 --device cpu --repeats 5 --out results.json
    edc-lab bench --models edc_tiny edc_small --sizes 256 512 --compile --precision fp32 bf16
    edc-lab bench --attention --sizes 16 32 64 128 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from edc_lab.bench.attention import attention_cost_curve, crossover, format_attention_table
from edc_lab.bench.comparison import (add_efficiency, add_reference_ratios, add_variant_ratios, benchmark_models,
                                      format_table, machine_description)
from edc_lab.bench.measure import MiB, attainable_throughput
from edc_lab.models import MODEL_NAMES
from edc_lab.options import int_in

#: the largest file read to see whether it is an earlier result of bench (results are a few kB to MB)
MAX_RESULT_BYTES = 64 * MiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--compile", action="store_true",
                        help="also time each model compiled (torch.compile), interleaved with eager; reports the "
                             "first call (compilation included) and the paired speed-up over eager")
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32"], metavar="P",
                        help="precisions to time, interleaved: fp32 and/or bf16 (autocast; a CPU with native bf16 "
                             "only) (default fp32)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--no-attainable", action="store_true",
                        help="skip measuring the machine's attainable GFLOP/s (a large matrix product and "
                             "convolution) and each model's share of it")
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
        from edc_lab.acceleration import AccelerationError, check_compiler, resolve_precision

        try:
            for precision in args.precision:
                resolve_precision(precision, args.device)
            if args.compile:
                check_compiler(args.device)
        except AccelerationError as error:
            return _fail(str(error))
        rows = benchmark_models(
            args.models, sizes, overrides=overrides, batch=args.batch, in_sar=args.sar_channels, device=args.device,
            repeats=args.repeats, warmup=args.warmup, mode=args.mode, memory=not args.no_memory,
            compile=args.compile, precisions=list(dict.fromkeys(args.precision)),
            log=lambda message: print(message, file=sys.stderr, flush=True),
        )
        if reference:
            add_reference_ratios(rows, reference)
        else:
            add_variant_ratios(rows)
        if not args.no_attainable:
            print("measuring the attainable GFLOP/s (matrix product, convolution)", file=sys.stderr, flush=True)
            attainable = attainable_throughput(args.device, repeats=args.repeats, warmup=max(args.warmup, 1))
            attainable_bf16 = None
            if "bf16" in args.precision:
                attainable_bf16 = attainable_throughput(args.device, repeats=args.repeats, warmup=max(args.warmup, 1),
                                                        dtype=torch.bfloat16)
                result["attainable_bf16"] = attainable_bf16
            add_efficiency(rows, attainable, attainable_bf16)
            result["attainable"] = attainable
        result["rows"] = rows
        result["reference"] = reference
        print(format_table(rows))
        if "attainable" in result:
            print(f"attainable on this machine ({result['attainable']['threads']} threads): matrix product "
                  f"{result['attainable']['matmul_gflops']:.1f} GFLOP/s, convolution "
                  f"{result['attainable']['conv_gflops']:.1f} GFLOP/s; share = a model's GFLOP/s / the larger")
        if "attainable_bf16" in result:
            print(f"attainable in bf16: matrix product {result['attainable_bf16']['matmul_gflops']:.1f} GFLOP/s, "
                  f"convolution {result['attainable_bf16']['conv_gflops']:.1f} GFLOP/s (the share of bf16 rows)")
    if args.out:
        from edc_lab.data.outputs import atomic_output

        with atomic_output(args.out) as temporary:  # never a half-written file
            temporary.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0
