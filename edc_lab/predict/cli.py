"""``edc-lab predict``: the sub-command's options (:func:`add_arguments`) and its run on one scene or on a
scene list (:func:`run`).

Examples::

    edc-lab predict --checkpoint runs/student/last.pt --optical cloudy.tif --sar s1.tif --out classes.tif
    torchrun --nproc-per-node 2 -m edc_lab.cli predict --checkpoint runs/student/last.pt \\
        --scenes scenes.csv --out-dir maps/

The options keep their names: ``--window`` is the side of a prediction tile
(:mod:`edc_lab.predict.tiling`), ``--overlap`` the overlap of two tiles.
"""

from __future__ import annotations

import argparse
import sys

from edc_lab.acceleration import PRECISIONS
from edc_lab.data.outputs import Interrupted, interruptible
from edc_lab.data.sample import DataError
from edc_lab.options import device_name, float_in, int_in
from edc_lab.predict.predictor import BATCH_SIZE_RANGE, TILE_RANGE, Predictor, predict_geotiff
from edc_lab.predict.reader import CONVENTIONS
from edc_lab.predict.scenes import finish_together, predict_scenes, process_rank, read_scene_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by edc-lab train")
    one = parser.add_argument_group("one scene")
    one.add_argument("--optical", metavar="OPT.tif", help="optical GeoTIFF (4 bands: B, G, R, NIR)")
    one.add_argument("--sar", metavar="SAR.tif", help="SAR GeoTIFF (any grid overlapping the optical)")
    one.add_argument("--out", metavar="MAP.tif", help="output class map (uint8, optical grid)")
    one.add_argument("--probabilities", metavar="P.tif", help="also write the class probabilities (float32)")
    one.add_argument("--cloudfree", metavar="CF.tif", help="also write the cloud-free estimate (float32, [0, 1])")
    many = parser.add_argument_group("many scenes (also under torchrun: each process takes its share)")
    many.add_argument("--scenes", metavar="LIST", help="a CSV (header: optical,sar[,name]), an M3M-CR folder or "
                                                      "a WHU-OPT-SAR folder")
    many.add_argument("--out-dir", metavar="DIR", help="where NAME.tif (and NAME.probabilities.tif, "
                                                       "NAME.cloudfree.tif) are written")
    many.add_argument("--split", default="test", help="M3M-CR folder: the split to predict (default test)")
    many.add_argument("--save-probabilities", action="store_true", help="also write NAME.probabilities.tif")
    many.add_argument("--save-cloudfree", action="store_true", help="also write NAME.cloudfree.tif")
    many.add_argument("--overwrite", action="store_true", help="predict scenes whose outputs exist (default: skip)")
    parser.add_argument("--window", type=int_in(*TILE_RANGE), default=256,
                        help="side of a prediction tile in pixels (default 256)")
    parser.add_argument("--overlap", type=int_in(0), default=64, help="overlap between tiles, < --window (default 64)")
    parser.add_argument("--convention", choices=CONVENTIONS,
                        help="input scaling (default: the checkpoint's dataset; synthetic -> m3mcr)")
    parser.add_argument("--batch-size", type=int_in(*BATCH_SIZE_RANGE), default=4,
                        help="tiles per forward pass (default 4)")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--fill-nonfinite", type=float_in(), metavar="VALUE", help="fill NaN/Inf input pixels with VALUE")
    parser.add_argument("--in-memory", action="store_true",
                        help="read and blend the whole scene in memory instead of streaming bands of rows")
    parser.add_argument("--overviews", action="store_true", help="add overviews (2x, 4x, ...) to every output")
    speed = parser.add_argument_group("speed (measured in benchmarks/RESULTS.md)")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the model (compiled at the first tile batch: a minute or two on a CPU, "
                            "seconds from inductor's disk cache in a later run); pays on large scenes")
    speed.add_argument("--compile-cache", metavar="DIR",
                       help="inductor's on-disk cache of compiled code (default: $TORCHINDUCTOR_CACHE_DIR or torch's)")
    speed.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto (fp32 on a CPU, mixed precision on a GPU), fp32, or bf16 (a CPU with native "
                            "bf16 only: AVX-512 BF16 or AMX)")


def _check_modes(args: argparse.Namespace) -> None:
    single = {"--optical": args.optical, "--sar": args.sar, "--out": args.out}
    if args.scenes is None:
        missing = [option for option, value in single.items() if value is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: expected --optical, --sar and --out (one scene) or --scenes and "
                             f"--out-dir (many scenes), found {' and '.join(missing)} missing")
        extra = [option for option, value in {"--out-dir": args.out_dir, "--save-probabilities": args.save_probabilities,
                                              "--save-cloudfree": args.save_cloudfree}.items() if value]
        if extra:
            raise ValueError(f"{', '.join(extra)}: expected only with --scenes, found with one scene (--optical)")
        return
    given = [option for option, value in {**single, "--probabilities": args.probabilities,
                                          "--cloudfree": args.cloudfree}.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: expected none with --scenes (outputs are named DIR/NAME.tif; use "
                         f"--save-probabilities / --save-cloudfree), found {', '.join(given)}")
    if args.out_dir is None:
        raise ValueError("--out-dir: expected an output folder with --scenes, found none")


def run(args: argparse.Namespace) -> int:
    """``edc-lab predict``: one scene or a scene list. A bad input, a failed scene or a signal each ends in one line.

    Exit status: 0; 1 when a scene of a list failed (the others are done); 2 for
    a bad input (nothing written); 128 + the signal for SIGINT (130) or SIGTERM
    (143), after the temporary files are removed (:func:`edc_lab.data.outputs.interruptible`).
    """
    from edc_lab.train.checkpoint import CheckpointError

    try:
        with interruptible():
            _check_modes(args)
            return _run_scenes(args) if args.scenes is not None else _run_one(args)
    except (ValueError, DataError, CheckpointError, OSError) as error:
        print(f"edc-lab predict: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"edc-lab predict: interrupted by {stop.signal_name}; removed temporary files", file=sys.stderr)
        return stop.exit_code


def _run_one(args: argparse.Namespace) -> int:
    """One scene (``--optical --sar --out``): predict, then print the map's size and class shares."""
    summary = predict_geotiff(
        args.checkpoint, args.optical, args.sar, args.out, args.window, args.overlap,
        probabilities_path=args.probabilities, cloudfree_path=args.cloudfree, convention=args.convention,
        device=args.device, batch_size=args.batch_size, fill_nonfinite=args.fill_nonfinite,
        stream=not args.in_memory, overviews=args.overviews, compile=args.compile, precision=args.precision,
        compile_cache=args.compile_cache,
    )
    height, width = summary["shape"]
    print(f"wrote {summary['out']}: {height}x{width} px, {summary['windows']} window(s), CRS {summary['crs']}")
    total = max(1, sum(summary["class_counts"].values()))
    print("classes: " + ", ".join(f"{name} {100 * count / total:.1f}%" for name, count in summary["class_counts"].items()))
    return 0


def _run_scenes(args: argparse.Namespace) -> int:
    """A scene list (``--scenes --out-dir``), this process's share under torchrun; 1 when one of its scenes failed.

    Under torchrun every process waits for the others before it exits
    (:func:`edc_lab.predict.scenes.finish_together`): torchrun stops all processes as
    soon as one exits with a failure, which would cut the others' scenes short.
    """
    from edc_lab.train.distributed import resolve_device

    rank, world_size, local_rank = process_rank()
    scenes = read_scene_list(args.scenes, args.split)
    predictor = Predictor(args.checkpoint, tile=args.window, overlap=args.overlap,
                          convention=args.convention, device=resolve_device(args.device, local_rank, world_size),
                          batch_size=args.batch_size, fill_nonfinite=args.fill_nonfinite,
                          stream=not args.in_memory, overviews=args.overviews, compile=args.compile,
                          precision=args.precision, compile_cache=args.compile_cache)
    report = predict_scenes(predictor, scenes, args.out_dir, probabilities=args.save_probabilities,
                            cloudfree=args.save_cloudfree, overwrite=args.overwrite, rank=rank,
                            world_size=world_size)
    tag = f"process {rank} of {world_size}: " if world_size > 1 else ""
    print(f"{tag}{len(report['done'])} predicted, {len(report['skipped'])} skipped (done before), "
          f"{len(report['failed'])} failed, of {len(scenes)} scenes in {args.scenes}", flush=True)
    for failure in report["failed"]:
        print(f"edc-lab predict: failed: {failure['name']} ({failure['source']}: {failure['optical']}, "
              f"{failure['sar']}): {failure['error']}", file=sys.stderr, flush=True)
    totals = finish_together(report, world_size)
    if world_size > 1 and rank == 0:
        print(f"all {world_size} processes: {totals['done']} predicted, {totals['skipped']} skipped, "
              f"{totals['failed']} failed, of {len(scenes)} scenes", flush=True)
    return 1 if report["failed"] else 0
