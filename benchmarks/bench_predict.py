"""Peak memory and speed of `edc-lab predict` on large synthetic scenes: in memory vs streaming.

    .venv/bin/python benchmarks/bench_predict.py --sizes 2048 8192 --models edc_tiny edc_small

For each size it writes one synthetic scene pair in the M3M-CR convention
(uint16 reflectance x10000 optical on a 3 m grid; SAR in dB on a 9 m grid
shifted by 1 m / 2 m, so it is resampled by georeference as on real tiles),
built blockwise from 1024² synthetic scenes so that writing it needs little
memory. Then, for every model and mode, it runs ``edc-lab predict`` in a child
process (untrained weights, seed 0: speed and memory do not depend on training)
and reports the child's peak resident memory (``ru_maxrss`` from ``wait4``) and
megapixels per second (scene pixels / wall time of the whole command, reading
and writing included). One run per cell: a cell of the 8192² scene takes
minutes on a 2-core CPU. Results go to ``benchmarks/results/predict_stream.json``
(and a markdown table on stdout).

    .venv/bin/python benchmarks/bench_predict.py --sizes 8192 --models edc_tiny edc_small --threads 1 \
        --variants eager compiled compiled-bf16 --repeats 2

``--variants`` instead compares eager and compiled (``torch.compile``), fp32 and bf16 streamed
prediction (:func:`run_variants`): Mpx/s with and without the start (loading, compiling on a
small warm-up scene), from a cold and a warm inductor cache; results in
``benchmarks/results/predict_compile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 1024
OPTICAL_PIXEL, SAR_PIXEL = 3.0, 9.0
ORIGIN = (500000.0, 3400000.0)


def write_scene(folder: Path, size: int) -> tuple[Path, Path]:
    """Optical (4, size, size) uint16 and SAR (2, size/3, size/3) float32 dB GeoTIFFs, written block by block."""
    import rasterio
    from affine import Affine

    from edc_lab.data.m3mcr import denormalize_sar
    from edc_lab.data.synthetic import synthetic_scene

    optical_path, sar_path = folder / f"optical_{size}.tif", folder / f"sar_{size}.tif"
    if optical_path.is_file() and sar_path.is_file():
        return optical_path, sar_path
    factor = int(SAR_PIXEL / OPTICAL_PIXEL)
    sar_size = -(-size // factor) + 1
    common = dict(driver="GTiff", crs="EPSG:32649", tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    optical_transform = Affine(OPTICAL_PIXEL, 0, ORIGIN[0], 0, -OPTICAL_PIXEL, ORIGIN[1])
    sar_transform = Affine(SAR_PIXEL, 0, ORIGIN[0] + 1.0, 0, -SAR_PIXEL, ORIGIN[1] + 2.0 + SAR_PIXEL)
    with rasterio.open(optical_path, "w", height=size, width=size, count=4, dtype="uint16", nodata=0,
                       transform=optical_transform, **common) as optical_out, \
            rasterio.open(sar_path, "w", height=sar_size, width=sar_size, count=2, dtype="float32",
                          transform=sar_transform, **common) as sar_out:
        sar_full = np.full((2, sar_size, sar_size), -15.0, dtype=np.float32)
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                scene = synthetic_scene(row * 7919 + col, size=BLOCK, cloud_cover=0.3)
                height, width = min(BLOCK, size - row), min(BLOCK, size - col)
                reflectance = np.clip(scene["optical"].values[:, :height, :width] * 10000, 1, 10000).astype(np.uint16)
                optical_out.write(reflectance, window=rasterio.windows.Window(col, row, width, height))
                sar = denormalize_sar(scene["sar"].values[:, :height - height % factor, :width - width % factor])
                coarse = sar.reshape(2, sar.shape[1] // factor, factor, sar.shape[2] // factor, factor).mean(axis=(2, 4))
                r, c = row // factor + 1, col // factor
                sar_full[:, r:r + coarse.shape[1], c:c + coarse.shape[2]] = coarse
        sar_out.write(sar_full)
    return optical_path, sar_path


def write_checkpoint(folder: Path, model_name: str) -> Path:
    import torch

    from edc_lab.models import build_model
    from edc_lab.train.checkpoint import save_checkpoint

    path = folder / f"{model_name}.pt"
    if not path.is_file():
        torch.manual_seed(0)
        model = build_model(model_name, num_classes=6)
        save_checkpoint(path, {"model": model.state_dict(), "build_args": model.build_args, "step": 0,
                               "data": {"name": "m3mcr", "in_sar": 2}})
    return path


def run_child(argv: list[str], threads: int) -> dict:
    """Run ``edc-lab predict`` in a child; its wall time, peak RSS (MiB) and exit status."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "edc_lab.cli", "predict", *argv], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = child.stdout.read(), child.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"edc-lab predict {' '.join(argv)} failed ({code}):\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout": stdout.strip()}


#: a child that loads a Predictor, predicts a small warm-up scene (where a compiled model compiles) and then
#: the large scene, timing each; its last line is JSON
VARIANT_CHILD = """
import json, sys, time
start = time.perf_counter()
from edc_lab.predict import Predictor
checkpoint, warm_optical, warm_sar, optical, sar, out, window, overlap, batch, compiled, precision = sys.argv[1:12]
times = {}
predictor = Predictor(checkpoint, tile=int(window), overlap=int(overlap), batch_size=int(batch), device="cpu",
                      compile=compiled == "compiled", precision=precision)
times["load_s"] = time.perf_counter() - start
tick = time.perf_counter()
predictor.predict(warm_optical, warm_sar, out)
times["warmup_s"] = time.perf_counter() - tick
tick = time.perf_counter()
summary = predictor.predict(optical, sar, out)
times["scene_s"] = time.perf_counter() - tick
print(json.dumps({**times, "class_counts": summary["class_counts"]}))
"""

#: the variants ``--variants`` can name: execution and precision
VARIANTS = {"eager": ("eager", "fp32"), "compiled": ("compiled", "fp32"), "eager-bf16": ("eager", "bf16"),
            "compiled-bf16": ("compiled", "bf16")}


def run_variants(args, work: Path) -> list[dict]:
    """Every model and variant, ``--repeats`` rounds, the variants of a model interleaved in each round.

    Each run is a child process (:data:`VARIANT_CHILD`) with its own inductor cache folder per
    model and variant, empty before the first round: round 1 of a compiled variant starts cold,
    later rounds start from the disk cache. Mpx/s excluding compilation = scene pixels / the
    large scene's time; including = scene pixels / (load + warm-up scene + large scene).
    """
    import shutil

    warm_optical, warm_sar = write_scene(work, args.warmup_size)
    results = []
    for size in args.sizes:
        optical, sar = write_scene(work, size)
        for model in args.models:
            checkpoint = write_checkpoint(work, model)
            caches = {variant: work / f"inductor_{model}_{variant}" for variant in args.variants}
            for cache in caches.values():
                shutil.rmtree(cache, ignore_errors=True)
            for round_index in range(args.repeats):
                for variant in args.variants:
                    execution, precision = VARIANTS[variant]
                    out = work / f"classes_{size}_{model}_{variant}.tif"
                    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TORCHINDUCTOR_CACHE_DIR=str(caches[variant]),
                               TORCHINDUCTOR_COMPILE_THREADS=str(args.threads))
                    start = time.perf_counter()
                    child = subprocess.Popen(
                        [sys.executable, "-c", VARIANT_CHILD, str(checkpoint), str(warm_optical), str(warm_sar),
                         str(optical), str(sar), str(out), str(args.window), str(args.overlap), str(args.batch_size),
                         execution, precision], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    _, status, usage = os.wait4(child.pid, 0)
                    wall = time.perf_counter() - start
                    stdout, stderr = child.stdout.read(), child.stderr.read()
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise SystemExit(f"{model} {variant} failed:\n{stderr[-3000:]}")
                    times = json.loads(stdout.strip().splitlines()[-1])
                    total = times["load_s"] + times["warmup_s"] + times["scene_s"]
                    row = {"size": size, "model": model, "variant": variant, "round": round_index + 1,
                           "cache": "cold" if round_index == 0 and execution == "compiled" else
                           ("warm" if execution == "compiled" else None),
                           "threads": args.threads, "window": args.window, "overlap": args.overlap,
                           "batch_size": args.batch_size, "warmup_size": args.warmup_size, **times,
                           "process_wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                           "megapixels_per_s": round(size * size / 1e6 / times["scene_s"], 3),
                           "megapixels_per_s_with_start": round(size * size / 1e6 / total, 3)}
                    results.append(row)
                    print(f"{size}² {model:9s} {variant:13s} round {round_index + 1}: {row['megapixels_per_s']:.3f} "
                          f"Mpx/s ({row['megapixels_per_s_with_start']:.3f} with load + warm-up "
                          f"{times['warmup_s']:.0f} s), peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--models", nargs="+", default=["edc_tiny", "edc_small"])
    parser.add_argument("--modes", nargs="+", choices=["memory", "stream"], default=["memory", "stream"])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="folder for the scenes (default: a temporary one)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS),
                        help="instead of --modes: streamed prediction eager / compiled, fp32 / bf16, interleaved "
                             "over --repeats rounds (results to predict_compile.json unless --json)")
    parser.add_argument("--repeats", type=int, default=2, help="--variants: rounds (default 2)")
    parser.add_argument("--warmup-size", type=int, default=512, help="--variants: side of the warm-up scene")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    results_folder = ROOT / "benchmarks" / "results"
    if args.variants:
        args.json = args.json or results_folder / "predict_compile.json"
        results = run_variants(args, work)
        _record(args, argv, results)
        print("\n| scene | model | variant | round | start | Mpx/s | Mpx/s with start | warm-up (s) | peak RSS (MiB) |"
              "\n|---|---|---|---|---|---|---|---|---|")
        for row in results:
            print(f"| {row['size']}² | {row['model']} | {row['variant']} | {row['round']} | {row['cache'] or '-'} | "
                  f"{row['megapixels_per_s']:.3f} | {row['megapixels_per_s_with_start']:.3f} | "
                  f"{row['warmup_s']:.1f} | {row['peak_rss_mib']:.0f} |")
        return 0
    args.json = args.json or results_folder / "predict_stream.json"
    results = []
    for size in args.sizes:
        optical, sar = write_scene(work, size)
        for model in args.models:
            checkpoint = write_checkpoint(work, model)
            for mode in args.modes:
                out = work / f"classes_{size}_{model}_{mode}.tif"
                command = ["--checkpoint", str(checkpoint), "--optical", str(optical), "--sar", str(sar),
                           "--out", str(out), "--window", str(args.window), "--overlap", str(args.overlap),
                           "--batch-size", str(args.batch_size), "--device", args.device]
                if mode == "memory":
                    command.append("--in-memory")
                measured = run_child(command, args.threads)
                row = {"size": size, "model": model, "mode": mode, "threads": args.threads, "device": args.device,
                       "window": args.window, "overlap": args.overlap, "batch_size": args.batch_size,
                       "megapixels_per_s": round(size * size / 1e6 / measured["wall_s"], 3), **measured}
                results.append(row)
                print(f"{size}² {model:9s} {mode:6s}: {row['megapixels_per_s']:.3f} Mpx/s, "
                      f"peak RSS {row['peak_rss_mib']:.0f} MiB, {row['wall_s']:.0f} s", flush=True)
                out.unlink(missing_ok=True)
    _record(args, argv, results)
    print("\n| scene | model | mode | Mpx/s | peak RSS (MiB) | wall (s) |\n|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['size']}² | {row['model']} | {row['mode']} | {row['megapixels_per_s']:.3f} | "
              f"{row['peak_rss_mib']:.0f} | {row['wall_s']:.0f} |")
    return 0


def _record(args, argv, results: list[dict]) -> None:
    """Append this run (command, torch, CPU, results) to ``args.json``."""
    import torch

    from edc_lab.acceleration import cpu_name

    record = {"command": "benchmarks/bench_predict.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch": torch.__version__, "cpu": cpu_name(), "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {"runs": []}
    previous["runs"].append(record)
    args.json.write_text(json.dumps(previous, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
