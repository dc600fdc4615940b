"""Argument validators for the ``edc-lab`` sub-commands: ``int_in``, ``float_in`` and ``device_name``.

Each is an argparse ``type=``: a value outside what it accepts ends in
argparse's one-line error naming the option. Every sub-command's
``add_arguments(parser)`` imports them from here, at the bottom of the layers
(ARCHITECTURE.md), so no lower layer has to reach up to :mod:`edc_lab.cli`,
which re-exports them. Nothing heavy is imported at the top: torch only when a
device name is checked.
"""

from __future__ import annotations

import argparse
import math


def int_in(low: int, high: int | None = None):
    """argparse ``type=``: an integer in [low, high]; otherwise argparse's one-line error naming the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return value

    return parse


def float_in(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    """argparse ``type=``: a finite number in the interval (``inf`` and ``nan`` are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            parts = []
            if math.isfinite(low):
                parts.append(f"{'>' if low_open else '>='} {low:g}")
            if math.isfinite(high):
                parts.append(f"{'<' if high_open else '<='} {high:g}")
            bound = " " + " and ".join(parts) if parts else ""
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, found {text!r}")
        return value

    return parse


def device_name(text: str) -> str:
    """argparse ``type=``: ``auto`` or a device torch can parse (``cpu``, ``cuda``, ``cuda:1``...)."""
    if text == "auto":
        return text
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, found {text!r}") from None
    return text
