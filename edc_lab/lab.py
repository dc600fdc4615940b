"""``edc-lab lab``: JupyterLab on the notebook series, bound to localhost with its token on."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from edc_lab.options import int_in

#: TCP ports: 0 asks the OS for any free port (JupyterLab reads back and prints the one it got)
PORT_RANGE = (0, 65535)


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` (the package is installed editable from the checkout)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int_in(*PORT_RANGE), default=8888,
                        help="port on 127.0.0.1, 0..65535; 0 = any free port (default 8888)")
    parser.add_argument("--dir", type=Path, default=None, help="folder to open (default: the notebooks)")


def run(args: argparse.Namespace) -> int:
    root = args.dir or notebooks_dir()
    if not root.is_dir():
        print(f"edc-lab lab: folder {root} not found; pass --dir", file=sys.stderr)
        return 2
    command = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",          # localhost only
        f"--ServerApp.port={args.port}",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}",
        # the token is left on (Jupyter's default): the URL printed at start carries it
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")  # containers often run as root
    return subprocess.call(command)
