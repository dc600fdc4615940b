"""Attribution evidence: does the share of SAR in the decision rise under clouds, and more in EDC?

Two protocols, each written and committed before its run (``benchmarks/RESULTS.md``):

**Issue 20, the default: notebook 07's setting over seeds** (section "Attributions (issue 20):
two removals, a randomised control and the notebook's setting over seeds (protocol)").

* models: notebook 07's four trainings, repeated per seed: a cloud-free teacher (``edc_tiny``),
  the distilled EDC student (``edc_tiny``), ``early_fusion`` and ``edc_no_dchf`` (no
  distillation); ``cpu-quick`` profile with the notebook's overrides (64² px, 120 steps, 64
  training scenes, 8 validation scenes, no evaluation during training); training seeds
  ``--seeds`` (default 0-5; ``data_seed`` 0 as in the notebook, so seed 0 *is* the notebook's run);
* data: the notebook's 8 held-out test scenes (synthetic, 64² px, cloud cover 0.4-0.8, the
  default cloud model); per scene the target class with the most pixels on both sides of the
  cloud edge, regions = its cloudy and its clear pixels, scenes with fewer than 20 on a side
  left out (``edc_lab.explain.shares_by_side``);
* per model, seed and removal (``"blur"``, sigma 4 px, and ``"mean"``, each band's spatial
  mean): the mean SAR share of the decision (exact Shapley values of optical/SAR x in
  cloud/clear) on cloudy and on clear pixels, for the trained model and for its **randomised
  copy** (every layer the logits depend on re-initialised, ``randomised_copy(model,
  logit_layers(...), seed)``); on the cloudy region of every kept scene, Integrated Gradients
  of the trained and of the randomised model (Gauss-Legendre from 32 steps, doubled until the
  completeness gap ``|sum - (F(x) - F(b))| / |F(x) - F(b)|``, ``F`` computed independently, is
  at most 1 %, up to 256 steps: ``complete_attributions``), their Spearman rank correlation
  (absolute and signed, optical and SAR band sums), the largest gap and the failures;
* decisions (95 % t intervals over seeds, pairs matched by seed): see RESULTS.md; the report
  states each.

    OMP_NUM_THREADS=1 python benchmarks/attribution_evidence.py --runs /tmp/edc_attribution_runs

**Issue 7, the earlier run** (``--checkpoints DIR``: "Attributions: SAR share inside vs
outside clouds (protocol)"): the ``cpu-quick`` checkpoints of ``benchmarks/train_evidence.py``
(96² px, 300 steps, the earlier flat clouds), ``early_fusion``, ``edc_no_dchf``,
``student_no_kd``, ``student_kd``, seeds 0-2; the first 16 of its 48 held-out test scenes;
blur removal only; the exact Shapley values (its committed results used captum's
``ShapleyValues``, 24 orderings, the same values to float rounding, ``benchmarks/bench_shapley.py``);
plus the time of Integrated Gradients for ``edc_tiny`` at 128² and 256². Its results stay in the
JSON under ``flat_clouds_cpu_quick``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/attribution_evidence.py --checkpoints /tmp/edc_evidence

Both write ``--out`` (Markdown) and the JSON beside it, replacing only their own section.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edc_lab.data.datasets import build_dataset
from edc_lab.explain import class_on_both_sides, modality_shares, pixel_attributions
from edc_lab.explain.evidence import level, paired, rise, verdict
from edc_lab.explain.sanity import complete_attributions, logit_layers, randomised_copy, rank_correlation
from edc_lab.explain.sides import shares_by_side
from edc_lab.models import build_model
from edc_lab.train import load_checkpoint, make_config, train

CLASSES = 7
#: notebook 07's training: the profile and its overrides (cell "Four small models")
NOTEBOOK_TRAINING = dict(profile="cpu-quick", size=64, steps=120, train_count=64, val_count=8, eval_every=0,
                         progress=False)
#: notebook 07's test scenes
NOTEBOOK_SCENES = dict(split="test", size=64, count=8, cloud_cover=(0.4, 0.8))
#: name in the notebook -> (run folder, training overrides); the student reads the teacher
NOTEBOOK_MODELS = {
    "EDC student (distilled)": ("EDC", dict(model="edc_tiny")),
    "early fusion": ("early", dict(model="early_fusion", lambda_kd=0.0)),
    "edc_no_dchf": ("edc_no_dchf", dict(model="edc_no_dchf", lambda_kd=0.0)),
}
REMOVALS = ("blur", "mean")
IG = dict(n_steps=32, max_steps=256, internal_batch_size=32, tolerance=0.01)
RHO_ABS_LIMIT, RHO_SIGNED_LIMIT, COMPLETENESS_TOLERANCE = 0.5, 0.2, IG["tolerance"]


# ------------------------------------------------------------------------------------- issue 20
def train_notebook_models(folder: Path, seed: int) -> dict[str, torch.nn.Module]:
    """Notebook 07's teacher and three students with training seed ``seed``; finished runs are read."""
    def run(out: Path, **recipe) -> torch.nn.Module:
        if not (out / "last.pt").exists():
            train(make_config(out=str(out), seed=seed, **NOTEBOOK_TRAINING, **recipe))
        return load_checkpoint(out / "last.pt")[0].eval()

    run(folder / "teacher", stage="teacher", model="edc_tiny")
    models = {}
    for name, (sub, recipe) in NOTEBOOK_MODELS.items():
        if recipe["model"] == "edc_tiny":
            recipe = dict(recipe, teacher=str(folder / "teacher" / "last.pt"))
        models[name] = run(folder / sub, stage="student", **recipe)
    return models


def map_checks(model, randomised, scenes, shares) -> dict:
    """Rank correlations (trained vs randomised IG maps) and completeness on each kept scene's cloudy region
    of its target class: Integrated Gradients from 32 steps, doubled until the independent completeness
    check passes (at most 256); means over the scenes, the largest gap, the failures, the steps used."""
    found = {key: [] for key in ("rho_optical", "rho_sar", "signed_rho_optical", "signed_rho_sar", "gap", "steps")}
    for position, target in zip(shares.scenes, shares.targets):
        scene = scenes[position]
        optical, sar = scene["optical"][None], scene["sar"][None]
        region = (scene["label"] == target) & scene["cloud_mask"].bool()
        maps = []
        for network in (model, randomised):
            attributions, check = complete_attributions(network, optical, sar, target, region,
                                                        baseline=shares.baseline, **IG)
            maps.append(attributions)
            found["gap"].append(float(check.relative_gap[0]))
            found["steps"].append(check.integration_steps)
        for what in ("optical", "sar"):
            first, second = (getattr(attributions, f"{what}_map")[0] for attributions in maps)
            found[f"rho_{what}"].append(rank_correlation(first, second))
            found[f"signed_rho_{what}"].append(rank_correlation(first, second, absolute=False))
    out = {key: float(np.nanmean(values)) for key, values in found.items() if key.startswith(("rho", "signed"))}
    out["completeness_max_gap"] = float(max(found["gap"]))
    out["completeness_failures"] = int(sum(gap > COMPLETENESS_TOLERANCE for gap in found["gap"]))
    out["maps"] = len(found["gap"])
    out["steps_max"] = int(max(found["steps"]))
    return out


def explain_seed(models: dict, scenes: list, seed: int) -> dict[str, dict]:
    rows = {}
    for name, model in models.items():
        sample = scenes[0]
        randomised = randomised_copy(model, logit_layers(model, sample["optical"][None], sample["sar"][None]), seed)
        row = {"seed": seed}
        for removal in REMOVALS:
            trained = shares_by_side(model, scenes, CLASSES, baseline=removal)
            control = shares_by_side(randomised, scenes, CLASSES, baseline=removal)
            row["scenes"] = len(trained.scenes)
            row[removal] = {
                "cloudy": trained.mean("cloudy"), "clear": trained.mean("clear"),
                "random_cloudy": control.mean("cloudy"), "random_clear": control.mean("clear"),
                "values_cloudy": trained.mean_values("cloudy"),
                **map_checks(model, randomised, scenes, trained),
            }
        rows[name] = row
        print(f"seed {seed} {name:<24} " + "  ".join(
            f"{removal}: rise {100 * (row[removal]['cloudy'] - row[removal]['clear']):+5.1f} (random "
            f"{100 * (row[removal]['random_cloudy'] - row[removal]['random_clear']):+5.1f}), rho |IG| "
            f"{row[removal]['rho_optical']:.2f}/{row[removal]['rho_sar']:.2f}" for removal in REMOVALS), flush=True)
    return rows


def notebook_report(evidence: dict) -> list[str]:
    """The Markdown tables and the protocol's decisions of the issue-20 run."""
    models = list(evidence["runs"])
    seeds = [row["seed"] for row in evidence["runs"][models[0]]]
    pct = lambda interval, signed=True: interval.text(100, 1, signed)  # noqa: E731
    lines = [f"Notebook 07's setting (64² px, 120 steps, the realistic clouds), its 8 test scenes "
             f"({evidence['runs'][models[0]][0]['scenes']} kept), seeds {seeds}; mean over seeds [95 % t interval]. "
             f"Machine: {evidence['machine']}; whole script {evidence['elapsed_seconds'] / 60:.1f} min.", ""]
    for removal in REMOVALS:
        lines += [f"**Removal `{removal}`**: SAR share of the decision (%)", "",
                  "| model | cloudy pixels | clear pixels | rise (cloudy − clear) | randomised copy: rise | "
                  "trained − randomised: cloudy | clear | rise |", "|---|---|---|---|---|---|---|---|"]
        for name in models:
            trained_minus = [paired(evidence, (name, key), (name, f"random_{key}"), removal)
                             for key in ("cloudy", "clear")]
            trained_minus.append(paired(evidence, (name, "rise"), (name, "random_rise"), removal))
            lines.append(f"| {name} | {pct(level(evidence, name, removal, 'cloudy'), False)} | "
                         f"{pct(level(evidence, name, removal, 'clear'), False)} | "
                         f"{pct(rise(evidence, name, removal))} | "
                         f"{pct(rise(evidence, name, removal, randomised=True))} | "
                         + " | ".join(pct(interval) for interval in trained_minus) + " |")
        lines.append("")
    lines += ["Rank correlation (Spearman) of the Integrated-Gradients maps, trained against randomised, on the "
              "cloudy pixels of the target class (mean over scenes, then over seeds):", "",
              "| removal | model | \\|IG\\| optical | \\|IG\\| SAR | signed optical | signed SAR | completeness: "
              "largest gap, failures, most steps |", "|---|---|---|---|---|---|---|"]
    for removal in REMOVALS:
        for name in models:
            cells = [level(evidence, name, removal, key).text(1, 2, False)
                     for key in ("rho_optical", "rho_sar", "signed_rho_optical", "signed_rho_sar")]
            runs = evidence["runs"][name]
            gap = max(row[removal]["completeness_max_gap"] for row in runs)
            failures = sum(row[removal]["completeness_failures"] for row in runs)
            maps = sum(row[removal]["maps"] for row in runs)
            steps = max(row[removal]["steps_max"] for row in runs)
            lines.append(f"| {removal} | {name} | " + " | ".join(cells)
                         + f" | {100 * gap:.3f} %, {failures} of {maps}, {steps} |")
    lines += ["", "Decisions (the protocol's rules, applied by the script):", ""]
    lines += decisions(evidence)
    return lines


def passes(interval, limit: float) -> str:
    """The randomisation rule: the interval's upper end below ``limit``."""
    if interval.n < 2:
        return "undecided (one seed)"
    return "passes" if interval.high < limit else "fails"


def decisions(evidence: dict) -> list[str]:
    edc, early, plain = list(NOTEBOOK_MODELS)
    out = []
    q1 = paired(evidence, (early, "rise"), (edc, "rise"), "blur")
    reading = {"below": "early fusion's share falls more than EDC's: the notebook's single run is borne out",
               "above": "EDC's share falls more than early fusion's: the earlier 3-seed ranking, not the notebook's",
               "contains": "not settled by these seeds: the single run's ranking is not evidence"}[verdict(q1)]
    out.append(f"- Q1 (blur): rise(early fusion) − rise(EDC student) = {q1.text(100)} points: {reading}.")
    for removal in REMOVALS:
        h1 = rise(evidence, edc, removal)
        word = {"above": "supported (the share rises)", "below": "rejected (the share falls)",
                "contains": "not supported (no measurable change)"}[verdict(h1)]
        out.append(f"- H1 ({removal}): EDC student's rise {h1.text(100)} points: {word}.")
        for other in (early, plain):
            h2 = paired(evidence, (edc, "rise"), (other, "rise"), removal)
            out.append(f"- H2 ({removal}): rise(EDC student) − rise({other}) = {h2.text(100)} points: "
                       f"{'supported' if verdict(h2) == 'above' else 'not supported'}.")
        for name in evidence["runs"]:
            for side in ("cloudy", "clear"):
                interval = paired(evidence, (name, side), (name, f"random_{side}"), removal)
                if verdict(interval) == "contains":
                    out.append(f"- R ({removal}): {name}'s SAR share on {side} pixels does not differ from its "
                               f"randomised copy's ({interval.text(100)} points).")
            interval = paired(evidence, (name, "rise"), (name, "random_rise"), removal)
            reading = "differs" if verdict(interval) != "contains" else "not distinguishable from an untrained network"
            out.append(f"- R ({removal}): {name}'s rise minus its randomised copy's = {interval.text(100)} points: "
                       f"{reading}.")
            for what in ("optical", "sar"):
                absolute = level(evidence, name, removal, f"rho_{what}")
                signed = level(evidence, name, removal, f"signed_rho_{what}")
                out.append(f"- R maps ({removal}, {name}, {what}): |IG| rho {absolute.text(1, 2, False)} "
                           f"{passes(absolute, RHO_ABS_LIMIT)} (upper end < {RHO_ABS_LIMIT}); signed rho "
                           f"{signed.text(1, 2, False)} {passes(signed, RHO_SIGNED_LIMIT)} "
                           f"(upper end < {RHO_SIGNED_LIMIT}).")
    return out


def run_notebook_protocol(args) -> tuple[str, dict]:
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    test_set = build_dataset("synthetic", **NOTEBOOK_SCENES)
    scenes = [test_set[index] for index in range(len(test_set))]
    runs = {name: [] for name in NOTEBOOK_MODELS}
    for seed in args.seeds:
        models = train_notebook_models(Path(args.runs) / f"seed{seed}", seed)
        for name, row in explain_seed(models, scenes, seed).items():
            runs[name].append(row)
    evidence = {"protocol": "issue 20 (benchmarks/RESULTS.md)", "runs": runs,
                "settings": {"training": NOTEBOOK_TRAINING, "scenes": NOTEBOOK_SCENES, "removals": REMOVALS,
                             "integrated_gradients": IG, "completeness_tolerance": COMPLETENESS_TOLERANCE,
                             "seeds": args.seeds},
                "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
                "elapsed_seconds": time.perf_counter() - started}
    return "\n".join(notebook_report(evidence)), evidence


# -------------------------------------------------------------------------------------- issue 7
#: (name in the table, run folder of train_evidence.py)
CHECKPOINT_MODELS = [
    ("early_fusion", "early_fusion"),
    ("edc_no_dchf", "edc_no_dchf"),
    ("EDC student, no distillation", "student_no_kd"),
    ("EDC student, distilled", "student_kd"),
]


def explain_model(model, scenes, num_classes: int, min_pixels: int) -> dict:
    shares = {"cloudy": [], "clear": []}
    for sample in scenes:
        target, count = class_on_both_sides(sample["label"], sample["cloud_mask"], num_classes)
        if count < min_pixels:
            continue
        cloudy = sample["cloud_mask"].bool()
        of_class = sample["label"] == target
        for region_name, region in (("cloudy", of_class & cloudy), ("clear", of_class & ~cloudy)):
            result = modality_shares(model, sample["optical"][None], sample["sar"][None], sample["cloud_mask"],
                                     target, region, method="shapley", baseline="blur")
            shares[region_name].append(float(result.sar_share[0]))
    return {region: float(np.mean(values)) for region, values in shares.items()} | {"scenes": len(shares["cloudy"])}


def time_integrated_gradients(sizes=(128, 256), repeats=3) -> dict:
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    timings = {}
    for size in sizes:
        optical, sar = torch.rand(1, 4, size, size), torch.rand(1, 2, size, size)
        run = lambda: pixel_attributions(model, optical, sar, target=0, baseline="blur", n_steps=64,  # noqa: E731
                                         internal_batch_size=16)
        run()  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        timings[size] = {"median_s": statistics.median(seconds), "runs_s": seconds}
    return timings


def mean_std(values) -> str:
    values = [v for v in values if not np.isnan(v)]
    if len(values) < 2:
        return f"{100 * values[0]:.1f}" if values else "–"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def run_checkpoint_protocol(args) -> tuple[str, dict]:
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    size = make_config(profile="cpu-quick").size
    # the same held-out scenes as train_evidence.py (its first 16 of 48)
    test_set = build_dataset("synthetic", split="test", size=size, count=48, cloud_cover=(0.4, 0.8))
    scenes = [test_set[index] for index in range(16)]
    results = {}
    for name, run in CHECKPOINT_MODELS:
        results[name] = []
        for seed in args.seeds:
            model, _ = load_checkpoint(Path(args.checkpoints) / f"seed{seed}" / run / "last.pt")
            row = explain_model(model.eval(), scenes, model.num_classes, 20)
            row["seed"] = seed
            results[name].append(row)
            print(f"{name:<30} seed {seed}: SAR share cloudy {row['cloudy']:.3f} clear {row['clear']:.3f} "
                  f"({row['scenes']} scenes)", flush=True)
    timing = time_integrated_gradients()
    results = {"protocol": "issue 7 (benchmarks/RESULTS.md)", "results": results, "ig_timing": timing,
               "machine": f"{platform.machine()} CPU, {args.threads} threads, torch {torch.__version__}",
               "elapsed_seconds": time.perf_counter() - started}
    return "\n".join(checkpoint_report(results)), results


def checkpoint_report(evidence: dict) -> list[str]:
    """The Markdown table of the issue-7 run."""
    results, timing = evidence["results"], evidence["ig_timing"]
    first = next(iter(results.values()))
    lines = [
        f"Profile `cpu-quick` checkpoints of `train_evidence.py` (96² px), {first[0]['scenes']} "
        f"of the first 16 held-out test scenes (cover 0.4–0.8), exact Shapley values of the four groups, "
        f"blur baseline (sigma 4 px), score = mean logit of the target class over the region; seeds "
        f"{[row['seed'] for row in first]}, mean ± std over seeds, SAR share in %. Machine: {evidence['machine']}; "
        f"whole script {evidence['elapsed_seconds'] / 60:.1f} min.",
        "",
        "| model | SAR share, cloudy pixels | SAR share, clear pixels | rise (cloudy − clear) |",
        "|---|---|---|---|",
    ]
    for name, rows in results.items():
        rises = [r["cloudy"] - r["clear"] for r in rows]
        lines.append(f"| {name} | {mean_std([r['cloudy'] for r in rows])} | {mean_std([r['clear'] for r in rows])} | "
                     f"{mean_std(rises)} |")
    if timing:
        lines += ["", "Integrated Gradients, `edc_tiny`, one sample, 64 steps, internal batch 16, median of 3 "
                  "after a warm-up: " + ", ".join(f"{size}²: {t['median_s']:.2f} s" for size, t in timing.items())]
    return lines


#: JSON section -> (title in the Markdown report, its report function)
SECTIONS = {
    "notebook_setting": ("Issue 20: notebook 07's setting over seeds, two removals, randomised copies",
                         notebook_report),
    "flat_clouds_cpu_quick": ("Issue 7: the train_evidence checkpoints (earlier flat clouds), blur removal",
                              checkpoint_report),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/edc_attribution_runs",
                        help="issue 20: folder for the trainings (finished runs are read, not retrained)")
    parser.add_argument("--checkpoints", default=None,
                        help="issue 7: the run folder of train_evidence.py (then its protocol runs instead)")
    parser.add_argument("--out", default="benchmarks/results/attribution_evidence.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-5 (issue 20), 0-2 (issue 7)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.checkpoints:
        args.seeds = args.seeds or [0, 1, 2]
        section, (table, results) = "flat_clouds_cpu_quick", run_checkpoint_protocol(args)
    else:
        args.seeds = args.seeds or [0, 1, 2, 3, 4, 5]
        section, (table, results) = "notebook_setting", run_notebook_protocol(args)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    stored = json.loads(json_path.read_text()) if json_path.exists() else {}
    stored[section] = results
    json_path.write_text(json.dumps(stored, indent=1) + "\n")
    parts = [f"## {title}\n\n" + "\n".join(report(stored[name]))
             for name, (title, report) in SECTIONS.items() if name in stored]
    out.write_text("\n\n".join(parts) + "\n")

if __name__ == "__main__":
    main()
