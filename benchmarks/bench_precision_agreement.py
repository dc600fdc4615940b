"""Do compiled and bf16 prediction give the class map of eager fp32? Pixel agreement and per-class IoU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_precision_agreement.py \\
        --checkpoint runs/student/last.pt --size 1024 --seeds 0 1 2

For each seed it writes a synthetic scene pair in the M3M-CR layout (``synthetic_scene(seed,
size, cloud_cover=0.3)``, SAR on its own grid) and predicts it with ``--checkpoint`` four ways
(:class:`edc_lab.predict.Predictor`, tile 256, overlap 32, batch 4): eager fp32 (the reference),
eager bf16, compiled fp32, compiled bf16. Against the reference it reports the share of pixels
with the same class, the IoU of each class between the two maps (pixels of class k in both /
in either), and the largest difference of a class probability. A trained checkpoint is the
meaningful case: an untrained model's classes are near ties. Results:
``benchmarks/results/precision_agreement.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (("eager", "fp32"), ("eager", "bf16"), ("compiled", "fp32"), ("compiled", "bf16"))


def main(argv: list[str] | None = None) -> int:
    import rasterio
    import torch

    from edc_lab.data.synthetic import synthetic_scene
    from edc_lab.data.writer import write_m3mcr_sample
    from edc_lab.predict import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "precision_agreement.json")
    args = parser.parse_args(argv)
    predictors = {variant: Predictor(args.checkpoint, tile=256, overlap=32, batch_size=4, device="cpu",
                                     compile=variant[0] == "compiled", precision=variant[1]) for variant in VARIANTS}
    names = predictors[VARIANTS[0]].class_names
    rows = []
    with tempfile.TemporaryDirectory(prefix="agreement_") as work:
        work = Path(work)
        for seed in args.seeds:
            relative = write_m3mcr_sample(synthetic_scene(seed, size=args.size, cloud_cover=0.3), work / str(seed))
            optical, sar = work / str(seed) / "train" / relative[1], work / str(seed) / "train" / relative[2]
            maps = {}
            for variant, predictor in predictors.items():
                out, probabilities = work / f"map_{seed}_{'_'.join(variant)}.tif", work / f"p_{seed}_{'_'.join(variant)}.tif"
                predictor.predict(optical, sar, out, probabilities_path=probabilities)
                with rasterio.open(out) as source, rasterio.open(probabilities) as p_source:
                    maps[variant] = (source.read(1), p_source.read())
            reference, reference_p = maps[VARIANTS[0]]
            for variant in VARIANTS[1:]:
                classes, p = maps[variant]
                iou = {}
                for k, name in enumerate(names):
                    union = np.logical_or(reference == k, classes == k).sum()
                    if union:
                        iou[name] = float(np.logical_and(reference == k, classes == k).sum() / union)
                rows.append({"seed": seed, "execution": variant[0], "precision": variant[1],
                             "agreement": float(np.mean(classes == reference)),
                             "max_probability_difference": float(np.abs(p - reference_p).max()),
                             "class_iou": iou, "class_share": {name: float(np.mean(reference == k))
                                                              for k, name in enumerate(names)}})
                print(f"seed {seed} {variant[0]:8s} {variant[1]}: {rows[-1]['agreement']:.5f} of pixels agree, "
                      f"lowest class IoU {min(iou.values()):.4f}, max |dp| {rows[-1]['max_probability_difference']:.2e}",
                      flush=True)
    record = {"command": "benchmarks/bench_precision_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch": torch.__version__, "size": args.size, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print("\n| against eager fp32 | seed | pixels agreeing | lowest class IoU (class) | max prob. difference |"
          "\n|---|---|---|---|---|")
    for row in rows:
        worst = min(row["class_iou"], key=row["class_iou"].get)
        print(f"| {row['execution']} {row['precision']} | {row['seed']} | {row['agreement']:.4%} | "
              f"{row['class_iou'][worst]:.4f} ({worst}) | {row['max_probability_difference']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
