"""The notebooks as a reader uses them: JupyterLab in headless Chromium, widgets moved by hand.

``pytest --nbval`` proves that the cells run and print what they stored; it never draws a
widget. Here a private JupyterLab (127.0.0.1, a free port, a random token, a temporary copy
of ``notebooks/``) is driven by Playwright in Debian's Chromium, and for each interactive
notebook the test:

1. opens it with the token, clears the outputs, runs Run > Run All Cells and waits until the
   kernel is idle again; every code cell must have run and no output may be a traceback;
2. checks that the first widget output shows a figure before any control moves (the widgets
   draw on first display), then moves its first slider with the keyboard (and for notebooks
   02 and 03 picks another entry of its first dropdown), and waits until the widget shows a
   figure it did not show before;
3. fails on any error in the browser console.

Screenshots (the widget before and after each move, the whole notebook) go to pytest's
``tmp_path``; their paths are printed (``pytest -s`` shows them).

The controls are found by kind, not by name: the notebooks' widgets may gain controls.
Skipped, with the install commands, when Chromium or Playwright is missing; another
Chromium or Chrome binary can be named in ``EDC_LAB_CHROMIUM``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from browser_helpers import (
    CHROMIUM_CANDIDATES,
    INSTALL_HINT,
    error_outputs,
    find_chromium,
    first_widget_area,
    image_sources,
    open_notebook,
    run_all_cells,
    screenshot_whole_notebook,
    start_lab,
    wait_for_new_image,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

RUN_ALL_TIMEOUT_MS = 900_000   # notebook cells may train a model; 2 shared cores can be slow
REDRAW_TIMEOUT_MS = 300_000    # one widget callback (a forward pass and a figure)

# Browser console errors that are not the notebook's fault. Each entry: a substring of the
# message and why it is harmless. None has been needed so far with JupyterLab 4.6 and
# ipywidgets 8.1; add one only with its reason.
HARMLESS_CONSOLE_ERRORS: dict[str, str] = {}

# notebook -> the kinds of control the test moves in its first widget output
INTERACTIVE_NOTEBOOKS = {
    "01_data.ipynb": ("slider",),                        # cloud cover
    "02_carrier_tokens.ipynb": ("slider", "dropdown"),   # token row (the marker moves), window size
    "03_discrepancy_maps.ipynb": ("slider", "dropdown"),  # scene seed, model
}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(f"no Chromium found (looked for $EDC_LAB_CHROMIUM, then {', '.join(CHROMIUM_CANDIDATES)}): {INSTALL_HINT}")
    return path


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Chromium driven by Playwright, closed at the end of the module whatever happens."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip(f"the Python package playwright is not installed: {INSTALL_HINT}")
    expect.set_options(timeout=30_000)  # assertions on the page; the machine may be busy
    # executable_path: the system Chromium; Playwright's own browser download is never used.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A private JupyterLab on a copy of notebooks/; stopped with its kernels, even on failure."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    server = start_lab(root, tmp_path_factory.mktemp("lab-home"))
    print(f"\nJupyterLab at {server.base_url} on {root}, log {server.log_path}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tab(browser, lab, tmp_path):
    """A fresh browser tab and the list of its console errors; its last screen is saved on the way out."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(f"console: {message.text} ({message.location})"))
    page.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))
    try:
        yield page, console_errors
    finally:
        last_screen = tmp_path / "last-screen.png"
        try:
            page.screenshot(path=str(last_screen))
            print(f"last screen: {last_screen}\nserver log: {lab.log_path}")
        except Exception as error:  # the page may be what broke; the clean-up below must still run
            print(f"no last screen: {error}")
        try:
            context.close()
        finally:
            lab.shutdown_kernels()  # frees the 2 cores for the next notebook; lab.stop() ends any left


def unexplained(console_errors: list[str]) -> list[str]:
    return [message for message in console_errors if not any(known in message for known in HARMLESS_CONSOLE_ERRORS)]


def test_the_server_refuses_requests_without_the_token(lab):
    # jupyter_server answers an unauthenticated API call with 403 Forbidden (JSON body),
    # not 401; a page such as /lab redirects (302) to the login form instead.
    status, _, body = lab.request("GET", "/api/contents", token=False)
    assert status == 403, body
    assert json.loads(body)["message"] == "Forbidden"
    status, headers, _ = lab.request("GET", "/lab", token=False)
    assert status == 302 and headers["location"].startswith("/login"), (status, headers)
    status, _, body = lab.request("GET", "/api/contents/notebooks")
    assert status == 200 and "01_data.ipynb" in body.decode(), status


@pytest.mark.slow
@pytest.mark.parametrize("notebook, controls", INTERACTIVE_NOTEBOOKS.items(), ids=[n.split("_")[0] for n in INTERACTIVE_NOTEBOOKS])
def test_notebook_widgets_redraw_in_the_browser(lab, tab, tmp_path, notebook, controls):
    from playwright.sync_api import expect

    page, console_errors = tab
    started = time.monotonic()
    stem = Path(notebook).stem
    cell_count = len(json.loads((lab.root_dir / "notebooks" / notebook).read_text())["cells"])
    screenshots = []

    def shoot(locator, name):
        path = tmp_path / f"{stem}-{name}.png"
        locator.scroll_into_view_if_needed()
        locator.screenshot(path=str(path))
        screenshots.append(path)

    panel = open_notebook(page, lab, f"notebooks/{notebook}", workspace=stem, cell_count=cell_count)
    final_prompts = run_all_cells(page, panel, RUN_ALL_TIMEOUT_MS)
    screenshots.append(screenshot_whole_notebook(page, panel, tmp_path / f"{stem}-notebook-after-run-all.png"))
    errors = error_outputs(panel)
    assert not errors, f"{notebook}: a cell failed:\n" + "\n\n".join(errors)
    assert all(prompt[1:-2].isdigit() for prompt in final_prompts), f"{notebook}: not every cell ran: {final_prompts}"

    # the kernel is this venv's interpreter (jupyter_client runs the python3 spec with the server's)
    kernels = lab.kernel_processes()
    assert kernels and {kernel.cmdline()[0] for kernel in kernels} == {sys.executable}, [k.cmdline() for k in kernels]

    area = first_widget_area(panel)
    expect(area).to_be_visible()
    # drawn on first display: the figure is there before any control moves
    expect(area.locator("img").first).to_be_visible(timeout=REDRAW_TIMEOUT_MS)
    shoot(area, "widget-0-before")

    for step, control in enumerate(controls, start=1):
        before = image_sources(area)
        if control == "slider":
            slider = area.locator(".widget-slider").first
            handle, readout = slider.locator(".noUi-handle"), slider.locator(".widget-readout")
            value = readout.inner_text()
            at_max = float(handle.get_attribute("aria-valuenow")) >= float(handle.get_attribute("aria-valuemax"))
            handle.focus()
            handle.press("ArrowLeft" if at_max else "ArrowRight")  # one step, as with the keyboard
            expect(readout).not_to_have_text(value)
            moved = f"slider {value} -> {readout.inner_text()}"
        else:  # an ipywidgets Dropdown is a <select>
            select = area.locator(".widget-dropdown select").first
            value = select.input_value()
            other = next(option for option in select.locator("option").evaluate_all("options => options.map(o => o.value)") if option != value)
            select.select_option(other)
            moved = f"dropdown {value} -> {other}"
        wait_for_new_image(page, area, before, REDRAW_TIMEOUT_MS)
        wait_kernel_idle(page, REDRAW_TIMEOUT_MS)
        shoot(area, f"widget-{step}-after-{control}")
        errors = error_outputs(panel)
        assert not errors, f"{notebook}: the widget callback failed after the {moved}:\n" + "\n\n".join(errors)
        assert set(image_sources(area)) - set(before), f"{notebook}: after the {moved} the widget shows no new figure"
        print(f"{notebook}: {moved}: new figure")

    screenshots.append(screenshot_whole_notebook(page, panel, tmp_path / f"{stem}-notebook-at-end.png"))
    console_errors = unexplained(console_errors)
    print(f"{notebook}: {time.monotonic() - started:.0f} s; screenshots:\n  " + "\n  ".join(map(str, screenshots)))
    assert not console_errors, f"{notebook}: errors in the browser console:\n" + "\n".join(console_errors)
