"""Issue 18's experiment: does DCHF keep cloud noise out of global context, and does D find clouds?

The protocol (hypotheses, positive-control gate, arms, seeds and why so many, metrics,
equivalence margin, decision rules) is in ``benchmarks/RESULTS.md``, section "DCHF and D, a
decisive test (protocol)", committed before this script's first measuring run. In short:

* data: synthetic scenes (default family) at 256 x 256 px with the **opaque** cloud model
  (``edc_lab.data.cloud_models``: cores of opacity 1, 10 % thin edges, no haze): under the mask
  the optical image holds nothing of the ground, outside it nothing changed but shadows;
* geometry: ``edc_tiny`` at 256² has 16 attention windows at stage 3 (each sees 1/16 of the
  scene) and 64 DCHF cell tokens at every stage (``edc_lab.models.geometry``);
* arms, all ``edc_tiny`` students on cloudy optical + SAR, no distillation, the same seeds and
  data: ``plain_sum`` (``edc_no_dchf``), and four arms of one DCHF architecture (equal
  parameters) that differ only in where the reliability R comes from: ``constant`` (R = 0.5),
  ``oracle`` (R = 1 - the true mask pooled per stage), ``d_free`` (R = 1 - D, D learnt without
  the mask: the paper's recipe) and ``d_supervised`` (D also taught the mask, lambda_cloud = 1);
* per run: mIoU (all / cloudy / clear pixels) on 48 held-out scenes at cover 0.4-0.8, a cover
  sweep, the contamination of the global context in clear cells (``edc_lab.explain.
  contamination``) on 64 held-out scene pairs, and, for the learnt arms, the AUROC of the raw
  disagreement with the previous stage's redistribution on and off.

Runs are claimed (a ``claimed`` file) before training, so several processes share a run folder,
and a finished run (``result.json``) is read, not retrained: the experiment resumes.

    for worker in 1 2; do OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \\
        python benchmarks/dchf_evidence.py --runs /tmp/edc_dchf & done
    wait; python benchmarks/dchf_evidence.py --runs /tmp/edc_dchf --report
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_evidence import claim, median_step_seconds  # noqa: E402

from edc_lab.data.cloud_models import cloud_model  # noqa: E402
from edc_lab.data.datasets import build_dataset  # noqa: E402
from edc_lab.explain.contamination import cloud_noise_sensitivity, context_contamination, disagreement_auroc  # noqa: E402
from edc_lab.models import model_config  # noqa: E402
from edc_lab.models.geometry import format_geometry, stage_geometry  # noqa: E402
from edc_lab.stats import equivalence_test, mean_interval, paired_interval  # noqa: E402
from edc_lab.train import cloud_cover_sweep, evaluate, load_checkpoint, make_config, train  # noqa: E402
from edc_lab.train.run_data import CachedDataset  # noqa: E402
from edc_lab.viz.evidence import paired_by_seed  # noqa: E402

CLOUDS = "opaque"
#: the training settings, fixed in the protocol
SETTINGS = dict(profile="cpu-quick", size=256, batch_size=4, steps=300, train_count=128, cloud_model=CLOUDS,
                lambda_kd=0.0, stage="student")
#: (arm, model name, extra config)
ARMS = [
    ("plain_sum", "edc_no_dchf", {}),
    ("constant", "edc_tiny", {"model_overrides": {"reliability": "constant"}}),
    ("oracle", "edc_tiny", {"model_overrides": {"reliability": "oracle"}}),
    ("d_free", "edc_tiny", {}),
    ("d_supervised", "edc_tiny", {"lambda_cloud": 1.0}),
]
DCHF_ARMS = ("constant", "oracle", "d_free", "d_supervised")
LEARNT_ARMS = ("d_free", "d_supervised")
SEEDS = list(range(10))
COVERS = (0.0, 0.2, 0.4, 0.6, 0.8)
TEST_COUNT, SWEEP_COUNT, CONTAMINATION_COUNT, DIAGNOSTIC_COUNT = 48, 16, 32, 16
CONTAMINATION_COVER, DIAGNOSTIC_COVER = 0.4, 0.5
#: equivalence margin of the lambda_cloud decision (mIoU points, all pixels)
MARGIN = 1.0
#: positive-control gate: oracle - constant on cloudy pixels (mIoU points)
GATE = 2.0
#: (first, second, label): paired differences reported
PAIRS = [
    ("oracle", "constant", "positive control: oracle − constant"),
    ("d_supervised", "constant", "D supervised − constant"),
    ("d_free", "constant", "D free − constant"),
    ("d_supervised", "d_free", "D supervised − D free"),
    ("constant", "plain_sum", "DCHF with R = 0.5 − plain sum"),
    ("oracle", "plain_sum", "oracle DCHF − plain sum"),
    ("d_free", "plain_sum", "DCHF (D free) − plain sum"),
]


def run_dir(runs: str | Path, seed: int, arm: str) -> Path:
    return Path(runs) / f"seed{seed}" / arm


def _batch(dataset, count: int) -> dict:
    samples = [dataset[i] for i in range(count)]
    return {key: torch.stack([s[key] for s in samples]) for key in ("optical", "optical_clear", "sar", "cloud_mask")}


def contamination(model, scenes: dict, batch_size: int = 8) -> list[dict]:
    """Per stage, the mean over the scenes of the relative change in clear cells of G (``context``)
    and of the cell tokens (``tokens``) with and without clouds, and of G when only the clouds'
    content changes to noise (``noise``, seeded); ``per_scene`` keeps the values."""
    keys = ("context", "tokens", "noise")
    per_stage: list[dict] = [{key: [] for key in keys} for _ in range(4)]
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(scenes["optical"]), batch_size):
        part = {key: value[start:start + batch_size] for key, value in scenes.items()}
        rows = context_contamination(model, part["optical_clear"], part["optical"], part["sar"], part["cloud_mask"])
        noisy = cloud_noise_sensitivity(model, part["optical"], part["sar"], part["cloud_mask"], generator)
        for stage, (row, noise) in enumerate(zip(rows, noisy)):
            per_stage[stage]["context"] += row["context"].tolist()
            per_stage[stage]["tokens"] += row["tokens"].tolist()
            per_stage[stage]["noise"] += noise["context"].tolist()
    return [{key: float(np.nanmean(stage[key])) for key in keys} | {"per_scene": stage} for stage in per_stage]


def train_and_measure(seed: int, arm: str, model_name: str, extra: dict, args, data: dict) -> dict | None:
    out = run_dir(args.runs, seed, arm)
    result_path = out / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    if not claim(out):
        return None  # another process trains it
    values = dict(SETTINGS, model=model_name, seed=seed, out=str(out), resume=True, progress=False, eval_every=0,
                  **extra)
    if args.steps:
        values["steps"] = args.steps
    config = make_config(**values)
    history = train(config)
    seconds = sum(r.get("seconds", 0.0) for r in history if r["split"] == "train")
    model, meta = load_checkpoint(out / "last.pt")
    model.eval()
    clouds = cloud_model(CLOUDS)
    result = {"seed": seed, "arm": arm, "model": model_name, "train_seconds": seconds, "steps": meta["step"],
              "parameters": sum(p.numel() for p in model.parameters()),
              "metrics": evaluate(model, data["test"], inputs="cloudy"),
              "sweep": cloud_cover_sweep(model, COVERS, count=args.sweep_count, size=config.size, clouds=clouds)}
    if arm in DCHF_ARMS:
        result["contamination"] = contamination(model, data["contamination"])
    if arm in LEARNT_ARMS:
        scenes = data["diagnostic"]
        result["disagreement"] = disagreement_auroc(model, scenes["optical"], scenes["sar"], scenes["cloud_mask"])
    result_path.write_text(json.dumps(result, indent=1, default=float))
    metrics = result["metrics"]
    print(f"seed {seed} {arm:>13}: mIoU {metrics['miou']:.3f} cloudy {metrics['miou_cloudy']:.3f} clear "
          f"{metrics['miou_clear']:.3f} ({seconds:.0f} s training)", flush=True)
    return result


def test_data(args) -> dict:
    """The held-out scenes every run is measured on (test split seeds, never trained on)."""
    clouds = cloud_model(CLOUDS)
    size = SETTINGS["size"]
    test = CachedDataset(build_dataset("synthetic", split="test", size=size, count=args.test_count,
                                       cloud_cover=(0.4, 0.8), clouds=clouds))
    # contamination: the same ground with and without clouds; no shadows, so that outside the mask the
    # two optical images are identical and any change in a clear cell came through the network
    pairs = build_dataset("synthetic", split="test", size=size, count=args.contamination_count, seed=1,
                          cloud_cover=CONTAMINATION_COVER, clouds=cloud_model(CLOUDS, shadows=False))
    diagnostic = build_dataset("synthetic", split="test", size=size, count=DIAGNOSTIC_COUNT, seed=2,
                               cloud_cover=DIAGNOSTIC_COVER, clouds=clouds)
    return {"test": test, "contamination": _batch(pairs, args.contamination_count),
            "diagnostic": _batch(diagnostic, DIAGNOSTIC_COUNT)}


# ----------------------------------------------------------------------------------------- report
def collect(args) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for arm, *_ in ARMS:
        for seed in args.seeds:
            path = run_dir(args.runs, seed, arm) / "result.json"
            if path.is_file():
                results.setdefault(arm, []).append(json.loads(path.read_text()))
    return results


def _paired(results: dict, first: str, second: str, value, confidence: float = 0.95):
    """The paired interval of ``value(entry)`` between two arms (empty when an arm has no run yet)."""
    if not results.get(first) or not results.get(second):
        return paired_interval([], [], confidence)
    return paired_interval(*paired_by_seed(results, first, second, lambda entry, run: value(entry)), confidence)


def _metric(key: str):
    return lambda r: r["metrics"][key]


def report(args) -> str:
    results = collect(args)
    geometry = format_geometry(stage_geometry(model_config("edc_tiny"), SETTINGS["size"]))
    lines = [f"Settings: {json.dumps(SETTINGS)}; seeds {args.seeds}; test: {args.test_count} held-out scenes, cover "
             f"0.4–0.8; intervals are t-based 95 % (scipy.stats), over seeds. Machine: {platform.machine()} CPU, "
             f"torch {torch.__version__}.", "", "Geometry of `edc_tiny` at 256²:", "", "```", geometry, "```", "",
             "| arm | seeds | parameters | mIoU all | mIoU cloudy | mIoU clear | D AUROC stage 1 / 2 / 3 / 4 | s / step |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, found in results.items():
        cells = [mean_interval([r["metrics"][key] for r in found]).text(100, signed=False) for key in
                 ("miou", "miou_cloudy", "miou_clear")]
        aurocs = " / ".join(f"{np.mean([r['metrics']['auroc'][k] for r in found]):.2f}"
                            for k in range(len(found[0]["metrics"]["auroc"]))) or "–"
        steps = [median_step_seconds(run_dir(args.runs, r["seed"], arm)) for r in found]
        steps = [s for s in steps if s is not None]
        lines.append(f"| {arm} | {len(found)} | {found[0]['parameters'] / 1e6:.3f} M | " + " | ".join(cells)
                     + f" | {aurocs} | {np.median(steps):.2f} |" if steps else " | – |")
    lines += ["", "Paired differences (same seed, same data), mIoU points, mean [95 % CI]:", "",
              "| comparison | pairs | all | cloudy | clear |", "|---|---|---|---|---|"]
    for first, second, label in PAIRS:
        cells = [_paired(results, first, second, _metric(key)) for key in ("miou", "miou_cloudy", "miou_clear")]
        if cells[0].n:
            lines.append(f"| {label} | {cells[0].n} | " + " | ".join(c.text(100) for c in cells) + " |")
    lines += ["", "mIoU (%) against cloud cover (all pixels; at cover 0.8 also cloudy pixels), mean [95 % CI]:", "",
              "| arm | " + " | ".join(f"cover {c:.1f}" for c in COVERS) + " | cloudy at 0.8 |",
              "|---|" + "---|" * (len(COVERS) + 1)]
    for arm, found in results.items():
        cells = [mean_interval([r["sweep"][i]["miou"] for r in found]).text(100, signed=False)
                 for i in range(len(COVERS))]
        cloudy = mean_interval([r["sweep"][-1]["miou_cloudy"] for r in found]).text(100, signed=False)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {cloudy} |")
    lines += ["", "Contamination of the global context in clear cells (relative change of G, per stage; mean over "
              f"{args.contamination_count} scene pairs per model, then mean [95 % CI] over seeds):", "",
              "| arm | stage 1 | stage 2 | stage 3 | stage 4 | tokens, stage 3 |", "|---|---|---|---|---|---|"]
    for arm in DCHF_ARMS:
        found = results.get(arm, [])
        if found:
            cells = [mean_interval([r["contamination"][k]["context"] for r in found]).text(1, 3, signed=False)
                     for k in range(4)]
            tokens = mean_interval([r["contamination"][2]["tokens"] for r in found]).text(1, 3, signed=False)
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {tokens} |")
    lines += ["", "Cloud-noise sensitivity of G in clear cells (the clouds' content replaced by noise, same mask; "
              "mean [95 % CI] over seeds):", "", "| arm | stage 1 | stage 2 | stage 3 | stage 4 |",
              "|---|---|---|---|---|"]
    for arm in DCHF_ARMS:
        found = results.get(arm, [])
        if found:
            cells = [mean_interval([r["contamination"][k]["noise"] for r in found]).text(1, 4, signed=False)
                     for k in range(4)]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for key, title in (("context", "contamination (with − without clouds)"), ("noise", "cloud-noise sensitivity")):
        lines += ["", f"Paired differences of the {title} against `constant` (same seed), mean [95 % CI]:", "",
                  "| arm − constant | stage 1 | stage 2 | stage 3 | stage 4 |", "|---|---|---|---|---|"]
        for arm in ("oracle", "d_free", "d_supervised"):
            cells = [_paired(results, arm, "constant", lambda r, k=k: r["contamination"][k][key]) for k in range(4)]
            if cells[0].n:
                lines.append(f"| {arm} | " + " | ".join(c.text(1, 4) for c in cells) + " |")
    lines += ["", "Raw disagreement AUROC against the cloud mask, with the previous stage's redistribution on / off "
              "(mean over seeds; difference off − on with 95 % CI):", "",
              "| arm | stage | on | off | off − on |", "|---|---|---|---|---|"]
    for arm in LEARNT_ARMS:
        found = results.get(arm, [])
        for stage in range(1, 4):
            on = [r["disagreement"]["raw"][stage] for r in found]
            off = [r["disagreement"]["raw_no_previous_redistribution"][stage] for r in found]
            if on:
                lines.append(f"| {arm} | {stage + 1} | {np.mean(on):.2f} | {np.mean(off):.2f} | "
                             f"{paired_interval(off, on).text(1, 3)} |")
    if results.get("d_supervised") and results.get("d_free"):
        supervised, free = paired_by_seed(results, "d_supervised", "d_free",
                                          lambda entry, run: 100 * entry["metrics"]["miou"])
        if len(free) >= 2:
            test = equivalence_test(supervised, free, MARGIN)
            lines += ["", f"Equivalence (TOST, margin ±{MARGIN} point, α = 0.05) of D supervised − D free, mIoU all "
                      f"pixels: 90 % CI {test['interval'].text(1, 2)}, p(diff ≤ −{MARGIN}) = {test['p_lower']:.3f}, "
                      f"p(diff ≥ +{MARGIN}) = {test['p_upper']:.3f}: non-inferior {test['non_inferior']}, "
                      f"equivalent {test['equivalent']}."]
    table = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    slim = {arm: [{k: v for k, v in r.items() if k != "contamination"} | {"contamination": [
        {key: stage[key] for key in ("context", "tokens", "noise")} for stage in r.get("contamination", [])]}
        for r in found] for arm, found in results.items()}
    meta = [{"settings": SETTINGS, "seeds": args.seeds, "margin": MARGIN, "gate": GATE}]
    out.with_suffix(".json").write_text(json.dumps({**slim, "_meta": meta}, indent=1, default=float))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/edc_dchf", help="folder for the run directories")
    parser.add_argument("--out", default="benchmarks/results/dchf_evidence.md", help="markdown table")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--steps", type=int, help="override the steps (smoke tests only)")
    parser.add_argument("--test-count", type=int, default=TEST_COUNT)
    parser.add_argument("--sweep-count", type=int, default=SWEEP_COUNT)
    parser.add_argument("--contamination-count", type=int, default=CONTAMINATION_COUNT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only assemble the tables from finished runs")
    args = parser.parse_args()
    if args.report:
        print(report(args))
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = test_data(args)
    for seed in args.seeds:  # seed by seed, so that an interrupted experiment has balanced arms
        for arm, model_name, extra in ARMS:
            train_and_measure(seed, arm, model_name, extra, args, data)
    print(f"done in {(time.perf_counter() - started) / 60:.0f} min", flush=True)


if __name__ == "__main__":
    main()
