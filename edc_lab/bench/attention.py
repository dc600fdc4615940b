"""Attention cost: one carrier-token (HAT) block against one dense-attention block on growing token
maps (:func:`attention_cost_curve`), and the size from which HAT is cheaper (:func:`crossover`).

EDC's carrier-token attention (FasterViT's HAT) claims a cost linear in the
number of tokens where dense attention is quadratic; this measures the claim
(FLOPs, latency and memory, with the tools of :mod:`edc_lab.bench.measure`)
instead of quoting it. Notebook 02 draws the curve. Whose idea: edc_lab's
measuring harness.
"""

from __future__ import annotations

from typing import Iterable

import torch

from edc_lab.bench.measure import MiB, compare_latency, count_flops, peak_memory
from edc_lab.models.carrier_tokens import CarrierTokenAttention, DenseAttention



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
