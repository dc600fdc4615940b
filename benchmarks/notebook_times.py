"""How long each notebook of the series takes, executed top to bottom as a reader's kernel runs it.

    .venv/bin/python benchmarks/notebook_times.py                      # 2 threads, every notebook
    .venv/bin/python benchmarks/notebook_times.py --threads 1 --loaded --note "3 other jobs running"

Each ``notebooks/NN_*.ipynb`` is read into memory and executed by nbclient in a fresh kernel whose
working directory is ``notebooks/`` (so the notebooks' relative paths, such as
``../benchmarks/results``, resolve as in JupyterLab); the stored notebook is never written. The wall
time of one notebook runs from the kernel's start to its last cell. The kernel gets
``OMP_NUM_THREADS=--threads`` (default 2, the 2-core CPU the series is written for).

The result, ``benchmarks/results/notebook_times.json``, is rewritten after every notebook (``complete``
is false until the last one has run), so an interrupted run keeps what it measured. Notebook
``00_start_here`` prints this file, so it runs last and shows the times of this run for the other
notebooks (its own time from the previous run). The file also says what the times were measured on:
the CPU model (``/proc/cpuinfo``), the cores, the torch version, the date, the threads, whether the
machine was loaded by other work (``--loaded``) and a free note (``--note``). A loaded machine's
times are upper bounds, not the series' run time.

Whose idea: edc_lab's (the paper has no notebooks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from queue import Empty

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "benchmarks" / "results" / "notebook_times.json"

#: the notebook that reads the result file: executed last (it shows the previous run's time for itself)
INDEX_NOTEBOOK = "00_start_here.ipynb"

#: the keys every result file has, and the keys of each notebook's entry
RESULT_KEYS = ("command", "date", "machine", "threads", "loaded", "note", "complete", "notebooks")
ENTRY_KEYS = ("notebook", "seconds", "status")


def series(folder: Path = NOTEBOOKS) -> list[str]:
    """The notebooks of the series (``NN_name.ipynb``) in the order they are executed: by number, the
    index notebook last."""
    names = sorted(path.name for path in folder.glob("*.ipynb") if re.match(r"\d\d_", path.name))
    return [name for name in names if name != INDEX_NOTEBOOK] + [name for name in names if name == INDEX_NOTEBOOK]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the first ``model name`` line), else the platform's."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the times were measured on: CPU model, cores (all and available to this process), torch, python."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def new_result(threads: int, loaded: bool, note: str, command: str) -> dict:
    """An empty result: the run's settings and machine, no notebook yet."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected an integer >= 1, found {threads!r}")
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": threads,
        "loaded": bool(loaded),
        "note": note,
        "complete": False,
        "notebooks": [],
    }


def write_result(result: dict, path: Path = OUT) -> None:
    """Write ``result`` as JSON to ``path`` through a temporary file and a rename (a reader never sees half a file)."""
    check_result(result, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def check_result(result: dict, path: Path | str = "result") -> dict:
    """``result`` if it has every key a result file needs, else one ValueError naming ``path`` and what is missing."""
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a JSON object with {list(RESULT_KEYS)}, found {type(result).__name__}")
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ValueError(f"{path}: expected the keys {list(RESULT_KEYS)}, missing {missing}")
    for index, entry in enumerate(result["notebooks"]):
        lacking = [key for key in ENTRY_KEYS if not isinstance(entry, dict) or key not in entry]
        if lacking:
            raise ValueError(f"{path}: notebook entry {index} lacks {lacking} (expected {list(ENTRY_KEYS)})")
        if entry["status"] == "ok" and not (isinstance(entry["seconds"], (int, float)) and entry["seconds"] > 0):
            raise ValueError(f"{path}: notebook {entry['notebook']!r} ran but its seconds are {entry['seconds']!r}")
    return result


def read_result(path: Path = OUT) -> dict:
    """The result file at ``path``, checked (``check_result``); a missing file or bad JSON is one ValueError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no notebook times yet; run `python benchmarks/notebook_times.py`") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return check_result(result, path)


#: seconds between two looks at the kernel's shell channel while a cell runs (see ``notebook_client``)
SHELL_POLL_SECONDS = 0.5


def notebook_client(notebook, folder: Path, timeout: int = 900, kernel: str = "python3", **options):
    """An nbclient ``NotebookClient`` for ``notebook`` run in ``folder``, that waits for each cell's reply in
    steps of ``SHELL_POLL_SECONDS``.

    Why the steps: with nbclient 0.11 a cell that displays an ipywidgets ``Output`` widget (every widget of
    the series) can leave nbclient waiting for the cell's ``execute_reply`` until the cell's whole timeout
    although the kernel answered at once (jupyter/nbclient#312); the notebook then "takes" 600 or 900 s
    more than it does. Waiting in short steps, each a fresh poll of the shell socket, sees the reply when
    it comes. The cell's timeout still holds: the steps stop at its deadline.
    """
    from nbclient import NotebookClient
    from nbclient.util import ensure_async

    class SteppedClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            client = await super().async_start_new_kernel_client()
            channel = client.shell_channel
            wait_once = channel.get_msg

            async def get_msg(timeout=None):
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    step = SHELL_POLL_SECONDS if deadline is None else max(0.0, min(SHELL_POLL_SECONDS,
                                                                                   deadline - time.monotonic()))
                    try:
                        return await ensure_async(wait_once(timeout=step))
                    except Empty:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise

            channel.get_msg = get_msg
            return client

    return SteppedClient(notebook, timeout=timeout, kernel_name=kernel,
                         resources={"metadata": {"path": str(folder)}}, **options)


def time_notebook(path: Path, threads: int, timeout: int = 900, kernel: str = "python3") -> dict:
    """Execute the notebook at ``path`` in memory (working directory: its folder) with ``threads`` OpenMP
    threads; return its entry: ``{"notebook", "seconds", "status": "ok" | "error", "error"}``."""
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(path, as_version=4)
    client = notebook_client(notebook, path.parent, timeout, kernel)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the kernel inherits the environment
    start = time.perf_counter()
    try:
        client.execute()
        status, error = "ok", None
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
        message = str(failure).strip()
        status, error = "error", (message.splitlines()[-1][:300] if message else type(failure).__name__)
    finally:
        seconds = time.perf_counter() - start
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    return {"notebook": path.name, "seconds": round(seconds, 1), "status": status, "error": error}


def format_result(result: dict) -> str:
    """A plain-text table of a result: one row per notebook, the total, and what it was measured on."""
    rows = [f"{'notebook':<28}{'seconds':>9}  status"]
    rows += [f"{entry['notebook']:<28}{entry['seconds']:9.0f}  {entry['status']}" for entry in result["notebooks"]]
    total = sum(entry["seconds"] for entry in result["notebooks"])
    rows.append(f"{'total':<28}{total:9.0f}")
    where = result["machine"]
    rows.append(f"{where.get('cpu')}, {where.get('cores')} cores, torch {where.get('torch')}, "
                f"{result['threads']} thread(s), {result['date']}"
                + (", machine loaded by other work" if result["loaded"] else "")
                + ("" if result["complete"] else ", INCOMPLETE"))
    if result["note"]:
        rows.append(f"note: {result['note']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each kernel (default 2)")
    parser.add_argument("--notebooks", nargs="+", metavar="NAME",
                        help="only these notebooks (file names in notebooks/); default: the whole series")
    parser.add_argument("--loaded", action="store_true",
                        help="record that other work shared the machine (the times are then upper bounds)")
    parser.add_argument("--note", default="", help="a free note stored with the times")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"result file (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads: expected an integer >= 1, found {args.threads}")
    names = series()
    if args.notebooks:
        unknown = [name for name in args.notebooks if name not in names]
        if unknown:
            parser.error(f"--notebooks: expected names from {names}, found {unknown}")
        names = [name for name in names if name in args.notebooks]

    command = shlex.join(["python", "benchmarks/notebook_times.py", *(sys.argv[1:] if argv is None else argv)])
    result = new_result(args.threads, args.loaded, args.note, command)
    for name in names:
        entry = time_notebook(NOTEBOOKS / name, args.threads, args.timeout)
        result["notebooks"].append(entry)
        result["complete"] = len(result["notebooks"]) == len(names)
        write_result(result, args.out)
        failure = f": {entry['error']}" if entry["error"] else ""
        print(f"{name:<28}{entry['seconds']:8.1f} s  {entry['status']}{failure}", flush=True)
    print(format_result(result))
    return 0 if all(entry["status"] == "ok" for entry in result["notebooks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
