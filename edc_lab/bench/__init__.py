"""Measuring efficiency: parameters, FLOPs, latency and peak memory of models and attention blocks.

EDC (https://arxiv.org/abs/2603.20811) claims 46.7 % fewer parameters and 1.98x
faster inference than CloudSeg, and its carrier-token attention (FasterViT's HAT)
claims a cost linear in the number of tokens where dense attention is quadratic.
This package measures such claims instead of quoting them:

* ``measure.py``, the tools: ``count_parameters``; ``count_flops``
  (``FlopCounterMode``); ``measure_latency`` and ``compare_latency`` (medians,
  functions timed interleaved round by round); ``peak_memory`` (CUDA's counter,
  or the peak of live tensor bytes on a CPU: ``LiveTensorBytes``);
* ``attention.py``: ``attention_cost_curve``, one HAT block against one
  dense-attention block on ``size x size`` token maps, and ``crossover``, the
  smallest size at which HAT is cheaper;
* ``comparison.py``: ``benchmark_models``, several models timed interleaved at
  the same sizes, eager and compiled (``--compile``), in fp32 and bf16 (``--precision``);
  ``add_reference_ratios``, ``add_variant_ratios``, ``add_efficiency`` (achieved GFLOP/s and
  share of the attainable), ``format_table``;
* ``cli.py``: ``edc-lab bench`` (``add_arguments``, ``run``).

Command line: ``edc-lab bench --models edc_base cloudseg_ref --sizes 512 --device cpu
--repeats 5 --out results.json`` prints a table and writes JSON (an existing
``--out`` is replaced only when it is an earlier result of bench:
:func:`edc_lab.bench.cli.check_bench_output`); ``edc-lab bench --attention
--sizes 16 32 64 128 256`` prints the attention curve (also ``python -m edc_lab.bench``).

Whose idea: everything here is edc_lab's measuring harness.
"""

from edc_lab.bench.attention import attention_cost_curve, crossover, format_attention_table
from edc_lab.bench.cli import add_arguments, check_bench_output, is_bench_result, run
from edc_lab.bench.comparison import (add_efficiency, add_reference_ratios, add_variant_ratios, benchmark_models,
                                      format_table, machine_description)
from edc_lab.bench.measure import (
    LiveTensorBytes,
    MiB,
    attainable_throughput,
    compare_latency,
    count_flops,
    count_parameters,
    measure_latency,
    peak_memory,
    used_parameters,
)

__all__ = [
    "count_parameters",
    "count_flops",
    "measure_latency",
    "compare_latency",
    "peak_memory",
    "LiveTensorBytes",
    "used_parameters",
    "attainable_throughput",
    "add_efficiency",
    "add_variant_ratios",
    "attention_cost_curve",
    "crossover",
    "benchmark_models",
    "machine_description",
    "format_table",
    "add_reference_ratios",
    "add_arguments",
    "run",
]
