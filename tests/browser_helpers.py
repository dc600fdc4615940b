"""Helpers for tests/test_browser.py: a private JupyterLab server and the page actions a reader performs.

The server is started the way ``make lab`` starts it (127.0.0.1, token on, no browser),
but on a free port, with a random token, on a temporary copy of the notebooks and with
every per-user Jupyter directory pointed into that temporary folder, so neither the
repository nor the user's Jupyter/IPython settings take part. Its kernel is the
``python3`` spec, which jupyter_client runs with the server's own interpreter: this venv.

The page helpers only use what a person sees and clicks: the menu bar, the cells'
``[n]:`` prompts, the kernel status in the status bar, the widgets' DOM.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # a dependency of ipykernel, so always here with jupyterlab

INSTALL_HINT = (
    "install the browser with `apt-get install -y --no-install-recommends chromium` (Debian) "
    "and the driver with `pip install -e '.[browser]'` (`make install` does it: the test extra includes it)"
)

# Debian's chromium package: /usr/bin/chromium is a shell launcher around the real binary.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome-stable", "google-chrome")

# Settings written into the server's private JupyterLab settings folder:
# - no "Would you like to get notified about official Jupyter news?" toast over the notebook,
#   and no update check (there is no network but the loopback);
# - every cell rendered (no windowing), so the DOM holds all prompts and outputs and a
#   full-height screenshot shows the whole notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

ACTIVE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
KERNEL_IDLE = re.compile(r"\| Idle$")
# An error output renders as application/vnd.jupyter.stderr, like a warning: what tells them
# apart is IPython's "...Error   Traceback (most recent call last)" header, or for a
# SyntaxError (no traceback) the "SyntaxError: ..." line at the start of a line.
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\w*(Error|Exception)\b", re.MULTILINE)


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome binary (``EDC_LAB_CHROMIUM`` first), or None."""
    for candidate in (os.environ.get("EDC_LAB_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the server is told not to try others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab: its process (leader of its own process group), address and token."""

    process: subprocess.Popen
    port: int
    token: str
    root_dir: Path
    log_path: Path
    kernels_seen: set[int] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, relative_path: str, workspace: str) -> str:
        # A named workspace per page: JupyterLab would otherwise restore the tabs that an
        # earlier page of the same server left open in the "default" workspace.
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{relative_path}?token={self.token}"

    def request(self, method: str, path: str, *, token: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the server, redirects not followed: (status, headers, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"token {self.token}"} if token else {}
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def kernel_processes(self) -> list[psutil.Process]:
        """The kernel processes this server started and that are still alive."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        kernels = []
        for child in children:
            try:
                if any("ipykernel_launcher" in part for part in child.cmdline()):
                    kernels.append(child)
                    self.kernels_seen.add(child.pid)
            except psutil.Error:
                pass
        return kernels

    def shutdown_kernels(self) -> None:
        """Stop every kernel through the REST API, as the Kernel menu would (nothing if the server is gone)."""
        try:
            status, _, body = self.request("GET", "/api/kernels")
            if status != 200:
                return
            for kernel in json.loads(body):
                self.request("DELETE", f"/api/kernels/{kernel['id']}")
        except OSError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server and its kernels: SIGTERM to its process group, then SIGKILL to what is left.

        Kernels run in sessions of their own (jupyter_client starts them so), so the ones
        seen while the server ran are ended one by one, by pid, if the server left them.
        """
        self.kernel_processes()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        for pid in self.kernels_seen:
            try:
                kernel = psutil.Process(pid)
                if any("ipykernel_launcher" in part for part in kernel.cmdline()):
                    kernel.kill()
            except psutil.Error:
                pass


def _end_with_parent() -> None:
    """In the server's child process (Linux): get SIGTERM when pytest dies, even by SIGKILL."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the fixtures' finalizers still stop the server


def lab_environment(home: Path) -> dict[str, str]:
    """os.environ with every per-user Jupyter/IPython location moved under ``home``."""
    env = dict(os.environ)
    env.pop("JUPYTER_TOKEN", None)
    env.pop("JUPYTER_PASSWORD", None)
    for variable, folder in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ):
        (home / folder).mkdir(parents=True, exist_ok=True)
        env[variable] = str(home / folder)
    for name, settings in LAB_SETTINGS.items():
        path = home / "lab-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    # the venv's bin first, as an activated venv would have it
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def start_lab(root_dir: Path, home: Path, *, startup_timeout_s: float = 120.0, attempts: int = 3) -> LabServer:
    """Start JupyterLab on ``root_dir`` and wait until its API answers; retried on a port clash."""
    env = lab_environment(home)
    last_error = ""
    for attempt in range(attempts):
        port, token = free_port(), secrets.token_hex(24)
        log_path = home / f"jupyterlab-{attempt}.log"
        command = [
            sys.executable, "-m", "jupyterlab",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root_dir}",
        ]
        if os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses unless told (as `make lab`)
            command.append("--ServerApp.allow_root=True")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None,
            )
        server = LabServer(process, port, token, root_dir, log_path)
        deadline = time.monotonic() + startup_timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, _, _ = server.request("GET", "/api/status")
                if status == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.25)
        last_error = f"JupyterLab did not answer on port {port} (exit code {process.poll()}); log {log_path}:\n{server.log_tail()}"
        server.stop()
        if "already in use" not in server.log_tail():
            break
    raise RuntimeError(last_error)


# --------------------------------------------------------------------------- page actions


def open_notebook(page, server: LabServer, relative_path: str, workspace: str, cell_count: int, timeout_ms: int = 120_000):
    """Open a notebook and wait until all its cells are shown and its kernel is idle; returns the panel."""
    from playwright.sync_api import expect

    page.goto(server.notebook_url(relative_path, workspace))
    panel = page.locator(ACTIVE_NOTEBOOK)
    expect(panel.locator(".jp-Notebook .jp-Cell")).to_have_count(cell_count, timeout=timeout_ms)
    wait_kernel_idle(page, timeout_ms)
    return panel


def wait_kernel_idle(page, timeout_ms: int) -> None:
    """Wait for the status bar's "<kernel name> | Idle"."""
    from playwright.sync_api import expect

    expect(page.locator("#jp-main-statusbar").get_by_text(KERNEL_IDLE)).to_be_visible(timeout=timeout_ms)


def menu(page, top: str, item: str) -> None:
    """Click a menu-bar entry, then one of its items (exact names, as shown)."""
    page.get_by_role("menuitem", name=top, exact=True).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def prompts(panel) -> list[str]:
    """The code cells' input prompts: '[ ]:' not run, '[*]:' queued or running, '[n]:' done."""
    return [text.strip() for text in panel.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]


def run_all_cells(page, panel, timeout_ms: int) -> list[str]:
    """Edit > Clear Outputs of All Cells, then Run > Run All Cells; wait until nothing is queued.

    Clearing first makes every prompt '[ ]:', so "no '[*]' left and at least one '[n]'"
    can only hold once the run has happened. A failing cell stops the run: the cells
    after it go back to '[ ]:'. Returns the final prompts.
    """
    menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function(
        """(selector) => [...document.querySelectorAll(selector + ' .jp-CodeCell .jp-InputPrompt')]
                         .every(p => p.textContent.trim() === '[ ]:')""",
        arg=ACTIVE_NOTEBOOK, timeout=30_000,
    )
    menu(page, "Run", "Run All Cells")
    page.wait_for_function(
        """(selector) => {
            const texts = [...document.querySelectorAll(selector + ' .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
            return !texts.some(t => t.includes('*')) && texts.some(t => /\\[\\d+\\]/.test(t));
        }""",
        arg=ACTIVE_NOTEBOOK, timeout=timeout_ms, polling=500,
    )
    wait_kernel_idle(page, 60_000)
    return prompts(panel)


def error_outputs(panel) -> list[str]:
    """The text of every stderr output that is an error (a traceback), not a warning."""
    texts = panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_text_contents()
    return [text for text in texts if ERROR_TEXT.search(text)]


def first_widget_area(panel):
    """The first cell output that holds ipywidgets (controls and their Output)."""
    return panel.locator(".jp-CodeCell .jp-OutputArea-output").filter(has=panel.page.locator(".jupyter-widgets")).first


def image_sources(area) -> list[str]:
    """The ``src`` of every image in a widget area (Output widgets' PNGs, widgets.Image)."""
    return area.locator("img").evaluate_all("images => images.map(image => image.src)")


def wait_for_new_image(page, area, before: list[str], timeout_ms: int) -> None:
    """Wait until the widget area shows an image whose src is not one of ``before``, or an error.

    A callback that fails inside its Output widget shows a traceback there instead of a
    figure: waiting stops at once, and the caller's check of ``error_outputs`` reports it.
    """
    page.wait_for_function(
        """([root, before, errorPattern]) => {
            const error = new RegExp(errorPattern, 'm');
            const stderr = root.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]');
            return [...root.querySelectorAll('img')].some(image => image.src && !before.includes(image.src))
                || [...stderr].some(output => error.test(output.textContent));
        }""",
        arg=[area.element_handle(), before, ERROR_TEXT.pattern], timeout=timeout_ms, polling=200,
    )


def screenshot_whole_notebook(page, panel, path: Path, max_height: int = 15_000) -> Path:
    """A screenshot of the whole notebook: the window is made as tall as its content, then restored."""
    viewport = page.viewport_size
    scroller = panel.locator(".jp-WindowedPanel-outer").first
    content, visible = scroller.evaluate("el => [el.scrollHeight, el.clientHeight]")
    page.set_viewport_size({"width": viewport["width"], "height": min(max_height, viewport["height"] + content - visible)})
    page.wait_for_timeout(500)  # let JupyterLab lay out the new size
    try:
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(viewport)
    return path
