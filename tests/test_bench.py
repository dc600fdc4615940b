"""Benchmark harness: hand-checked FLOPs, memory accounting, timing protocol, attention curve, CLI."""

from __future__ import annotations

import argparse
import json
import time

import pytest
import torch
from torch import nn

from edc_lab import bench
from edc_lab.cli import main as cli_main
from edc_lab.models import build_model


def test_count_parameters_counts_each_parameter_once():
    linear = nn.Linear(3, 4)  # 3*4 weights + 4 biases
    assert bench.count_parameters(linear) == 16
    shared = nn.Sequential(linear, linear)
    assert bench.count_parameters(shared) == 16
    linear.bias.requires_grad_(False)
    assert bench.count_parameters(linear, trainable_only=True) == 12


def test_count_flops_by_hand():
    linear = nn.Linear(8, 16)
    x = torch.randn(4, 8)
    assert bench.count_flops(linear, (x,)) == 2 * 4 * 8 * 16
    # backward with an input that needs no gradient: only the weight gradient, one more matmul
    assert bench.count_flops(linear, (x,), backward=True) == 2 * (2 * 4 * 8 * 16)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    image = torch.randn(2, 3, 6, 7)
    assert bench.count_flops(conv, (image,)) == 2 * (2 * 6 * 7) * 5 * 3 * 9
    # CPU attention is counted (torch has no formula for its CPU kernel; the blocks register one)
    query = torch.randn(2, 3, 10, 4)
    attention = torch.nn.functional.scaled_dot_product_attention
    assert bench.count_flops(attention, (query, query, query)) == 2 * (2 * 2 * 3 * 10 * 10 * 4)


def test_peak_memory_counts_new_storages_not_views_or_existing_tensors():
    existing = torch.zeros(256, 1024)  # 1 MiB that exists before the call: not counted
    mib = 2**20

    def work():
        first = existing + 1  # +1 MiB
        second = first * 2  # +1 MiB -> 2 MiB live
        del first  # -> 1 MiB
        transposed = second.t()  # a view: no new memory
        copy = transposed.contiguous()  # +1 MiB -> 2 MiB
        existing.add_(0)  # in place on an old tensor: no new memory
        return copy[:1]

    result = bench.peak_memory(work, "cpu")
    assert result["peak_bytes"] == 2 * mib
    assert "live tensor bytes" in result["method"]


def test_measure_latency_runs_warmup_then_repeats():
    calls = []

    def sleepy():
        calls.append(time.perf_counter())
        time.sleep(0.002)

    stats = bench.measure_latency(sleepy, repeats=5, warmup=2)
    assert len(calls) == 7 and stats["repeats"] == 5 and stats["warmup"] == 2
    assert len(stats["times_ms"]) == 5
    assert 2.0 <= stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert stats["median_ms"] == sorted(stats["times_ms"])[2]


def test_compare_latency_interleaves_and_rotates():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    stats = bench.compare_latency(fns, repeats=3, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds rotated
    assert set(stats) == {"a", "b"} and stats["a"]["repeats"] == 3
    with pytest.raises(ValueError, match="repeats >= 1"):
        bench.compare_latency(fns, repeats=0)


def test_crossover_by_hand():
    def rows(pairs):
        out = []
        for size, (hat, dense) in pairs.items():
            out += [{"size": size, "block": "hat", "median_ms": hat}, {"size": size, "block": "dense", "median_ms": dense}]
        return out

    assert bench.crossover(rows({8: (2, 1), 16: (3, 3), 32: (4, 9), 64: (8, 40)})) == 32
    assert bench.crossover(rows({8: (1, 2), 16: (3, 2), 32: (4, 9)})) == 32  # must hold from there on
    assert bench.crossover(rows({8: (2, 1), 16: (5, 3)})) is None
    missing = rows({8: (2, 1), 16: (1, 3)}) + [{"size": 32, "block": "hat", "median_ms": 2}, {"size": 32, "block": "dense", "median_ms": None}]
    assert bench.crossover(missing) == 16


def test_attention_curve_hat_linear_dense_quadratic():
    rows = bench.attention_cost_curve(sizes=(16, 32, 64), dim=16, heads=2, window=8, repeats=1, warmup=0,
                                      max_dense_tokens=32 * 32)
    flops = {(row["block"], row["size"]): row["flops"] for row in rows}
    # doubling the side = 4x the tokens: HAT's FLOPs ~4x, dense attention's clearly more (its N^2 term)
    assert 3.6 <= flops["hat", 64] / flops["hat", 32] <= 4.4
    assert flops["dense", 64] / flops["dense", 32] > 6
    assert flops["hat", 64] < flops["dense", 64]
    dense_64 = next(row for row in rows if row["block"] == "dense" and row["size"] == 64)
    assert not dense_64["measured"] and dense_64["median_ms"] is None and dense_64["estimated_ms"] > 0
    hat_64 = next(row for row in rows if row["block"] == "hat" and row["size"] == 64)
    assert hat_64["measured"] and hat_64["median_ms"] > 0 and hat_64["peak_bytes"] > 0
    assert bench.crossover(rows, "flops") is not None


def _parse(argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_models_writes_json_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.run(_parse(["--models", "edc_tiny", "optical_only", "--sizes", "32", "--repeats", "1",
                             "--warmup", "0", "--reference", "optical_only", "--out", str(out)]))
    assert code == 0
    printed = capsys.readouterr().out
    assert "edc_tiny" in printed and "speed-up" in printed
    result = json.loads(out.read_text())
    assert [row["model"] for row in result["rows"]] == ["edc_tiny", "optical_only"]
    row = result["rows"][0]
    assert row["parameters"] == bench.count_parameters(build_model("edc_tiny"))
    assert row["flops"] > 0 and row["median_ms"] > 0 and row["peak_bytes"] > 0
    assert row["build_args"]["name"] == "edc_tiny"
    assert result["machine"]["torch"] == torch.__version__
    # every parameter of edc_tiny reaches an output; the ratio to the reference is printed beside the total's
    assert row["used_parameters"] == row["parameters"]
    assert row["used_parameter_ratio"] == pytest.approx(row["used_parameters"] / result["rows"][1]["used_parameters"])
    # the machine's attainable GFLOP/s, measured in the same run, and each model's share of it
    attainable = result["attainable"]
    assert attainable["attainable_gflops"] == max(attainable["matmul_gflops"], attainable["conv_gflops"]) > 0
    assert row["achieved_gflops"] == pytest.approx(row["flops"] / row["median_ms"] * 1e3 / 1e9)
    assert row["attainable_share"] == pytest.approx(row["achieved_gflops"] / attainable["attainable_gflops"])
    assert "GFLOP/s" in printed and "attainable on this machine" in printed


def test_cli_train_mode_and_attention_mode(tmp_path, capsys):
    assert cli_main(["bench", "--models", "edc_tiny", "--sizes", "32", "--batch", "2", "--mode", "train",
                     "--repeats", "1", "--warmup", "0", "--no-memory", "--no-attainable"]) == 0
    printed = capsys.readouterr().out
    assert "edc_tiny" in printed and "attainable on this machine" not in printed
    out = tmp_path / "attention.json"
    assert cli_main(["bench", "--attention", "--sizes", "8", "16", "--dim", "16", "--repeats", "1",
                     "--warmup", "0", "--out", str(out)]) == 0
    attention = json.loads(out.read_text())["attention"]
    assert {row["block"] for row in attention["rows"]} == {"hat", "dense"}
    assert set(attention["crossover"]) == {"flops", "median_ms", "peak_bytes"}


def test_cli_rejects_bad_requests(capsys):
    assert bench.run(_parse(["--models", "edc_giant"])) == 2
    assert "unknown model(s) ['edc_giant']; valid names: edc_tiny" in capsys.readouterr().err
    assert bench.run(_parse(["--models", "edc_tiny", "--reference", "cloudseg_ref"])) == 2
    assert "--reference cloudseg_ref is not among" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench.run(_parse(["--device", "cuda"])) == 2
        assert "sees no CUDA device" in capsys.readouterr().err


def test_reference_ratios_by_hand():
    rows = [
        {"model": "small", "size": 64, "parameters": 10, "median_ms": 2.0, "times_ms": [2.0, 4.0, 1.0]},
        {"model": "big", "size": 64, "parameters": 40, "median_ms": 8.0, "times_ms": [8.0, 8.0, 6.0]},
    ]
    bench.add_reference_ratios(rows, "big")
    assert rows[0]["parameter_ratio"] == 0.25 and rows[0]["speedup"] == 4.0
    assert rows[0]["paired_speedup"] == 4.0  # median of 4, 2, 6
    assert rows[1]["speedup"] == 1.0
    assert "paired" in bench.format_table([{**row, "iqr_ms": 0.0, "min_ms": 1.0, "batch": 1, "flops": 1e9,
                                            "peak_bytes": None} for row in rows])


def test_used_parameters_leaves_out_what_no_output_depends_on():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 2)      # 8 parameters
            self.spare = nn.Linear(3, 5)     # 20, never called
            self.dead_end = nn.Linear(3, 4)  # 16, called but its result is dropped

        def forward(self, x):
            self.dead_end(x)
            return {"out": self.used(x), "count": torch.tensor(3)}

    model = WithSpare().eval()
    model.used.weight.grad = torch.ones(2, 3)  # a gradient the caller had: kept as it was
    assert bench.used_parameters(model, (torch.rand(4, 3),)) == 8
    assert torch.equal(model.used.weight.grad, torch.ones(2, 3)) and model.spare.weight.grad is None
    assert not model.training


def test_attainable_throughput_by_its_flop_count():
    result = bench.attainable_throughput(repeats=1, warmup=0, matmul_side=64, conv_channels=8, conv_side=16)
    assert result["matmul_gflops"] > 0 and result["conv_gflops"] > 0
    assert result["attainable_gflops"] == max(result["matmul_gflops"], result["conv_gflops"])
    assert (result["matmul_side"], result["conv_channels"], result["conv_side"]) == (64, 8, 16)
    rows = [{"flops": 2e9, "median_ms": 100.0}]
    bench.add_efficiency(rows, {"attainable_gflops": 40.0})
    assert rows[0]["achieved_gflops"] == pytest.approx(20.0) and rows[0]["attainable_share"] == pytest.approx(0.5)
    rows = [{"flops": 2e9, "median_ms": 100.0, "precision": "fp32"}, {"flops": 2e9, "median_ms": 100.0, "precision": "bf16"}]
    bench.add_efficiency(rows, {"attainable_gflops": 40.0}, {"attainable_gflops": 80.0})  # bf16 rows: bf16's limit
    assert [row["attainable_share"] for row in rows] == [pytest.approx(0.5), pytest.approx(0.25)]
    half = bench.attainable_throughput(repeats=1, warmup=0, matmul_side=64, conv_channels=8, conv_side=16,
                                       dtype=torch.bfloat16)
    assert half["dtype"] == "bfloat16" and half["matmul_gflops"] > 0 and result["dtype"] == "float32"


def test_variant_ratios_by_hand_and_reference_ratios_within_a_variant():
    rows = [
        {"model": "a", "size": 64, "execution": "eager", "precision": "fp32", "parameters": 10, "median_ms": 6.0,
         "times_ms": [6.0, 6.0, 9.0]},
        {"model": "a", "size": 64, "execution": "compiled", "precision": "fp32", "parameters": 10, "median_ms": 3.0,
         "times_ms": [3.0, 2.0, 3.0], "first_call_s": 80.0},
        {"model": "ref", "size": 64, "execution": "eager", "precision": "fp32", "parameters": 40, "median_ms": 12.0,
         "times_ms": [12.0, 12.0, 12.0]},
        {"model": "ref", "size": 64, "execution": "compiled", "precision": "fp32", "parameters": 40, "median_ms": 4.0,
         "times_ms": [4.0, 4.0, 4.0], "first_call_s": 90.0},
    ]
    bench.add_reference_ratios(rows, "ref")
    eager, compiled = rows[0], rows[1]
    assert eager["speedup"] == 2.0 and compiled["speedup"] == 4.0 / 3.0  # each against ref run the same way
    assert compiled["paired_speedup"] == pytest.approx(4.0 / 3.0)  # median of 4/3, 2, 4/3
    assert "variant_speedup" not in eager  # eager fp32 is the baseline of its model
    assert compiled["variant_speedup"] == 2.0 and compiled["paired_variant_speedup"] == 3.0  # median of 2, 3, 3
    table = bench.format_table([{**row, "iqr_ms": 0.0, "min_ms": 1.0, "batch": 1, "flops": 1e9, "peak_bytes": None}
                                for row in rows])
    line = next(line for line in table.splitlines() if line.startswith("a ") and "compiled" in line)
    assert "compiled fp32" in line and line.split()[-3:] == ["3.00x", "80", "s"]  # paired vs eager, first call


def test_benchmark_models_times_each_precision_interleaved(monkeypatch):
    import edc_lab.acceleration as acceleration

    monkeypatch.setattr(acceleration, "cpu_bf16_features", lambda: {"avx512_bf16": True, "amx": False})
    rows = bench.benchmark_models(["edc_tiny"], [32], repeats=2, warmup=0, memory=False, precisions=("fp32", "bf16"))
    assert [(row["execution"], row["precision"]) for row in rows] == [("eager", "fp32"), ("eager", "bf16")]
    assert rows[0]["flops"] == rows[1]["flops"] and all(len(row["times_ms"]) == 2 for row in rows)
    assert all(row["first_call_s"] is None for row in rows)  # nothing compiled
    with pytest.raises(ValueError, match=r"--precision: expected fp32 and/or bf16, found \['fp16'\]"):
        bench.benchmark_models(["edc_tiny"], [32], precisions=("fp16",))


def test_used_parameters_count_the_prediction_not_diagnostic_lists():
    class WithDiagnostics(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(3, 2)   # 8 parameters: the logits
            self.gate = nn.Linear(3, 1)   # 4 parameters: only a diagnostic list shows it

        def forward(self, x):
            return {"logits": self.head(x), "cloudfree": None, "gates": [torch.sigmoid(self.gate(x))]}

    assert bench.used_parameters(WithDiagnostics(), (torch.rand(4, 3),)) == 8
    model = nn.Linear(3, 5)  # a bare tensor output
    assert bench.used_parameters(model, (torch.rand(2, 3),)) == 20


def test_used_parameters_leave_out_cloudsegs_last_sar_gate():
    """CloudSeg's last fusion computes a SAR gate that no prediction uses (test_models' budget test
    leaves it out too): the bench's forward-used count agrees with that test's."""
    from edc_lab.models import build_model

    torch.manual_seed(0)
    model = build_model("cloudseg_ref", widths=(16, 32, 48, 64), depths=(1, 1, 1, 1), heads=(1, 1, 2, 2),
                        decoder_widths=(32, 16, 16, 8, 8))
    gate = sum(p.numel() for name, p in model.named_parameters() if name.startswith("fusions.3.sar_gate"))
    assert gate > 0
    used = bench.used_parameters(model, (torch.rand(1, 4, 64, 64), torch.rand(1, 2, 64, 64)))
    assert used <= bench.count_parameters(model) - gate
