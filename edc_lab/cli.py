"""The ``edc-lab`` command line (also ``python -m edc_lab.cli``, the form torchrun uses).

Each sub-command lives next to the code it drives; this file only dispatches.
A sub-command module provides ``add_arguments(parser)`` and ``run(args) -> int``; its argument
validators (``int_in``, ``float_in``, ``device_name``) come from :mod:`edc_lab.options`, re-exported here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# the argument validators live at the bottom layer (sub-commands import them from there); re-exported here
from edc_lab.options import device_name, float_in, int_in  # noqa: F401

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-data": ("edc_lab.data.make_data", "write synthetic scenes in the M3M-CR or WHU-OPT-SAR layout"),
    "train": ("edc_lab.train.cli", "train a teacher or a student (also under torchrun)"),
    "evaluate": ("edc_lab.train.evaluate_cli", "evaluate a checkpoint and write the metric table"),
    "predict": ("edc_lab.predict.cli", "GeoTIFF in -> georeferenced class map out (overlapping tiles, blended)"),
    "bench": ("edc_lab.bench.cli", "parameters, FLOPs, latency and memory of models"),
    "lab": ("edc_lab.lab", "open JupyterLab on the notebooks (localhost, token on)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edc-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            command_parser.set_defaults(_missing=module_name)
            continue
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``edc-lab argv``; its exit status. Ctrl-C (SIGINT) anywhere ends in one line and status 130."""
    try:
        return _dispatch(argv)
    except KeyboardInterrupt as stop:  # a sub-command's own handler (predict) says more, and returns instead
        code = getattr(stop, "exit_code", 130)
        print(f"edc-lab: interrupted ({getattr(stop, 'signal_name', 'SIGINT')})", file=sys.stderr)
        return code


def _dispatch(argv: list[str] | None) -> int:
    """Parse ``argv`` and run the sub-command; a bad input that reaches here still ends in one line (status 2)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"edc-lab {args.command}: not available in this version ({args._missing} is missing)", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError, MemoryError) as error:  # DataError, CheckpointError are ValueErrors
        # the last net: a sub-command that lets a bad input through still ends in one line, not a traceback
        message = str(error) or type(error).__name__
        if isinstance(error, MemoryError):
            message = f"out of memory ({message}); the input is too large for this machine"
        print(f"edc-lab {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
