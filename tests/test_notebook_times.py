"""benchmarks/notebook_times.py: the result file it writes and notebook 00 reads, and how it times a notebook.

The script is not a package module, so it is loaded from its path. The whole series is never executed
here: two tiny notebooks stand in for it (one with an ipywidgets figure, the cell kind that used to stall
nbclient until its timeout, and one that fails).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "notebook_times.py"


@pytest.fixture(scope="module")
def times():
    spec = importlib.util.spec_from_file_location("notebook_times", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_series_runs_in_order_with_the_index_last(times, tmp_path):
    for name in ("03_c.ipynb", "00_start_here.ipynb", "01_a.ipynb", "notes.ipynb", "1_bad.ipynb", "02_b.txt"):
        (tmp_path / name).write_text("{}")
    assert times.series(tmp_path) == ["01_a.ipynb", "03_c.ipynb", "00_start_here.ipynb"]
    committed = times.series()
    assert committed[-1] == times.INDEX_NOTEBOOK and "01_data.ipynb" in committed


def test_the_cpu_model_is_read_from_cpuinfo(times, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                       "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n")
    assert times.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor"
    assert times.cpu_model(tmp_path / "missing")  # falls back to the platform's name, never empty


def test_a_result_is_written_and_read_back(times, tmp_path):
    result = times.new_result(2, loaded=True, note="busy", command="python benchmarks/notebook_times.py --loaded")
    assert result["threads"] == 2 and result["loaded"] is True and result["complete"] is False
    assert {"cpu", "cores", "torch", "python"} <= set(result["machine"]) and result["machine"]["cores"] >= 1
    assert result["date"].endswith("+00:00")  # UTC, ISO 8601
    result["notebooks"] = [{"notebook": "01_data.ipynb", "seconds": 12.3, "status": "ok", "error": None},
                           {"notebook": "03_discrepancy_maps.ipynb", "seconds": 4.0, "status": "error",
                            "error": "AssertionError"}]
    path = tmp_path / "results" / "notebook_times.json"
    times.write_result(result, path)
    assert times.read_result(path) == result
    assert json.loads(path.read_text()) == result
    assert [p.name for p in path.parent.iterdir()] == ["notebook_times.json"]  # no temporary file left
    text = times.format_result(result)
    assert "01_data.ipynb" in text and "total" in text and "16" in text.splitlines()[3]
    assert "loaded" in text and "INCOMPLETE" in text and "note: busy" in text


def test_a_bad_result_file_is_one_clear_error(times, tmp_path):
    path = tmp_path / "notebook_times.json"
    with pytest.raises(ValueError, match="no notebook times yet; run `python benchmarks/notebook_times.py`"):
        times.read_result(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"notebook_times.json: not valid JSON"):
        times.read_result(path)
    path.write_text(json.dumps({"command": "x", "notebooks": []}))
    with pytest.raises(ValueError, match=r"missing \['date', 'machine', 'threads', 'loaded', 'note', 'complete'\]"):
        times.read_result(path)
    result = times.new_result(1, loaded=False, note="", command="x")
    result["notebooks"] = [{"notebook": "01_data.ipynb", "status": "ok"}]
    with pytest.raises(ValueError, match=r"notebook entry 0 lacks \['seconds'\]"):
        times.write_result(result, path)
    result["notebooks"] = [{"notebook": "01_data.ipynb", "seconds": 0, "status": "ok"}]
    with pytest.raises(ValueError, match="'01_data.ipynb' ran but its seconds are 0"):
        times.write_result(result, path)
    with pytest.raises(ValueError, match="threads: expected an integer >= 1, found 0"):
        times.new_result(0, loaded=False, note="", command="x")


def test_the_command_line_refuses_unknown_notebooks_and_threads(times, capsys):
    with pytest.raises(SystemExit):
        times.main(["--notebooks", "99_nothing.ipynb"])
    assert "--notebooks: expected names from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        times.main(["--threads", "0"])
    assert "--threads: expected an integer >= 1, found 0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_notebook_is_timed_in_its_folder_without_waiting_out_a_widget(times, tmp_path):
    import nbformat

    widget = ("import ipywidgets as widgets\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
              "from IPython.display import display\n"
              "def view(value):\n    plt.figure(figsize=(8, 5))\n"
              "    plt.imshow(np.random.default_rng(value).random((400, 600, 3)))\n    plt.show()\n"
              "slider = widgets.IntSlider(value=1)\n"
              "display(widgets.VBox([slider, widgets.interactive_output(view, {'value': slider})]))")
    cells = [
        nbformat.v4.new_code_cell("import os\nfrom pathlib import Path\n"
                                  "assert Path.cwd().name == 'series'  # the notebook's own folder\n"
                                  "assert os.environ['OMP_NUM_THREADS'] == '1'"),
        # A large figure drawn by interactive_output inside an Output widget, as the series' widgets
        # do. Plain nbclient 0.11 often waits after such a cell until the cell's timeout
        # (jupyter/nbclient#312; measured here: about one such cell in two waited out its timeout);
        # five of them make a regression very likely to show. The stepped wait sees each reply at once.
        *[nbformat.v4.new_code_cell(widget) for _ in range(5)],
    ]
    folder = tmp_path / "series"
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), folder / "01_ok.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("assert 1 == 2, 'broken'")]),
                   folder / "02_broken.ipynb")
    stored = (folder / "01_ok.ipynb").read_text()

    entry = times.time_notebook(folder / "01_ok.ipynb", threads=1, timeout=30)
    assert entry["status"] == "ok" and entry["error"] is None, entry
    assert 0 < entry["seconds"] < 25, entry  # one cell waiting out its 30 s timeout would exceed it
    assert (folder / "01_ok.ipynb").read_text() == stored  # executed in memory, never written
    broken = times.time_notebook(folder / "02_broken.ipynb", threads=1, timeout=60)
    assert broken["status"] == "error" and "broken" in broken["error"], broken
