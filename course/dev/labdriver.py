"""Drive a lesson notebook in real JupyterLab and Chromium, the way a learner would.

Executing a notebook headless (nbclient, papermill) proves the cells run, but not that a widget
works once it is on screen: the widget needs the lab extension, the kernel comm round trip, and
the browser to swap the picture. This module checks the whole chain:

1. ``jupyter_lab`` starts a private JupyterLab server (temp root, temp config, random token,
   nothing that phones home or pops up a dialog) and always stops it again;
2. ``chromium_page`` opens a headless Chromium through Playwright;
3. ``notebook_in_lab`` opens a copy of a notebook there and runs all cells from the Run menu;
4. ``set_slider`` / ``move_sliders`` type new values into a course widget's slider readout, or
   (``press_slider_key``, for a ``SelectionSlider``) press keys on its handle, and time how long
   its picture takes to change. ``measure_slider_latency`` does 3 and 4 for the forward-noising
   widget of lesson 01;
5. ``label_course_widgets`` and ``widget_controls`` find every course widget on the page and
   its controls, ``move_control`` moves any of them (a slider as in 4, ``choose_option`` for a
   menu, ``type_text`` for a text box), and ``page_problems`` and ``kernel_log`` show what went
   wrong where a learner would see it: tracebacks and unrendered widgets in the outputs, and
   what widget callbacks raised (JupyterLab's log console).

The course widgets (``course.viz``) are VBoxes with a CSS class of their own
(``.course-forward-noising``, ``.course-trajectory``, ``.course-flow-steps``, ...) holding a row of
labelled controls and one ``img.course-picture``; that is all this module relies on.

Playwright is imported inside functions only, so ``import course`` never needs it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import nbformat

if TYPE_CHECKING:  # only for annotations; Playwright is imported where it is used
    from playwright.sync_api import JSHandle, Locator, Page

#: Debian's Chromium; ``playwright install`` needs the internet, so we use the system browser.
CHROMIUM = Path("/usr/bin/chromium")

#: Headless Chromium in a container: no sandbox (we often run as root), no GPU, and no
#: background traffic to Google (there is no internet, and it must not slow anything down).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

#: Lab plugins that would reach the network or interrupt the test with a prompt.
DISABLED_LAB_PLUGINS = [
    "@jupyterlab/apputils-extension:announcements",  # "get notified about Jupyter news?" + feed
    "@jupyterlab/extensionmanager-extension",  # queries PyPI for extensions
]

#: The picture inside every course widget (``course.viz.widgets``).
PICTURE_SELECTOR = "img.course-picture"
#: Lesson 01's ``forward_noising_widget`` and its slider, used by ``measure_slider_latency``.
WIDGET_SELECTOR = ".course-forward-noising"
SLIDER_DESCRIPTION = "timestep t"


class LabDriverError(RuntimeError):
    """Something in the browser run went wrong; the message says what and where to look."""


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def chromium_path() -> Path | None:
    """The Chromium executable to drive, or None if it is not installed."""
    return CHROMIUM if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK) else None


def browser_unavailable_reason() -> str | None:
    """Why a browser run cannot happen here (missing Chromium or Playwright), or None if it can."""
    if chromium_path() is None:
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    return None


# --------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------


@dataclass
class LabServer:
    """A running JupyterLab: where it serves, how to log in, and where its files live."""

    base_url: str
    token: str
    root_dir: Path
    log_path: Path

    def notebook_url(self, name: str) -> str:
        # A workspace per notebook: in the default one, a server shared between notebooks
        # would reopen the previous notebook's tab, and start a kernel for it.
        workspace = quote(Path(name).stem, safe="")
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{quote(name)}?token={self.token}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, to put into error messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _api(server: LabServer, method: str, path: str, timeout: float = 5):
    """Call the server's REST API; returns the open response (a file-like of JSON)."""
    request = urllib.request.Request(f"{server.base_url}{path}", method=method,
                                     headers={"Authorization": f"token {server.token}"})
    return urllib.request.urlopen(request, timeout=timeout)


def _free_port() -> int:
    """A TCP port nobody listens on right now (the server is told not to try others)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_lab_config(config_dir: Path) -> None:
    """Turn off the plugins in ``DISABLED_LAB_PLUGINS`` for this server only."""
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    page_config = {"disabledExtensions": {name: True for name in DISABLED_LAB_PLUGINS}}
    (labconfig / "page_config.json").write_text(json.dumps(page_config, indent=2))


def _wait_until_answering(server: LabServer, process: subprocess.Popen, timeout: float) -> None:
    """Poll the REST API until the server answers; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    status_url = f"{server.base_url}/api/status?token={server.token}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabDriverError(
                f"jupyter lab exited with code {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(status_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise LabDriverError(f"jupyter lab did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def _group_alive(process: subprocess.Popen) -> bool:
    """Whether any process is left in the server's process group (reaping the server first)."""
    process.poll()
    try:
        os.killpg(process.pid, 0)  # signal 0 only checks existence
        return True
    except ProcessLookupError:
        return False


def _stop(process: subprocess.Popen, server: LabServer) -> None:
    """Shut the server and its kernels down; escalate to signals if they do not go quietly."""
    if process.poll() is None:
        # The shutdown endpoint stops the kernels too, so no orphaned ipykernel is left behind.
        try:
            _api(server, "POST", "/api/shutdown").close()
            process.wait(timeout=15)
        except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
            pass
    # The server runs in its own process group (see ``jupyter_lab``): whatever is still in it,
    # server or kernel, is ours to end.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(process):
            break
        os.killpg(process.pid, sig)
        deadline = time.monotonic() + 5
        while _group_alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
    process.poll()


def _server_command(server: LabServer, private: Path) -> list[str]:
    """The ``jupyter lab`` command line: local only, quiet, and nothing that reaches the network."""
    port = server.base_url.rsplit(":", 1)[1]
    command = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # fail loudly rather than serve on an unknown port
        f"--IdentityProvider.token={server.token}",
        f"--ServerApp.root_dir={server.root_dir}",
        "--LabApp.news_url=",  # no news feed
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # the "pypi" manager would query PyPI
        f"--LabApp.workspaces_dir={private / 'workspaces'}",  # no layout from an earlier run
        f"--LabApp.user_settings_dir={private / 'user-settings'}",
    ]
    if os.name == "posix" and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI often run as root
    return command


#: What ``jupyter_lab(..., env=LEARNER_ENV)`` takes out of the kernels' environment, so that a
#: lesson runs as after ``make lab``: its default (not FAST) path, and torch's threads chosen by
#: ``course.threads`` from the CPUs really free, not pinned to one.
LEARNER_ENV: dict[str, str | None] = {"COURSE_FAST": None, "OMP_NUM_THREADS": None}


@contextmanager
def jupyter_lab(root_dir: Path, startup_timeout: float = 90,
                env: dict[str, str | None] | None = None) -> Iterator[LabServer]:
    """Run ``jupyter lab`` on 127.0.0.1 serving ``root_dir``, and always stop it afterwards.

    The server uses this interpreter (``sys.executable``), so the ``python3`` kernel is this
    environment's Python with ``course`` importable. Config, runtime files, workspaces and IPython
    profile go to a private directory, so neither the user's settings nor a previous run can
    change what the browser sees; the data dirs stay as they are so the ipywidgets lab extension
    is found. The kernels run FAST (``COURSE_FAST=1``) on one torch thread, unless ``env``
    says otherwise: its variables are set, and those given as None taken out
    (``LEARNER_ENV``: a learner's default run).
    """
    root_dir = Path(root_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="course-lab-", ignore_cleanup_errors=True) as private:
        private = Path(private)
        server = LabServer(base_url=f"http://127.0.0.1:{_free_port()}",
                           token=os.urandom(24).hex(), root_dir=root_dir,
                           log_path=private / "server.log")
        config_dir = private / "config"
        _write_lab_config(config_dir)
        server_env = dict(os.environ,
                          COURSE_FAST="1",  # lessons take their quick path
                          HF_HUB_OFFLINE="1",  # never try to download a model
                          # One torch thread per kernel: these runs share the machine (test
                          # workers, a training), and torch's default of one thread per core
                          # then oversubscribes it; measured on 2 busy cores, a model forward
                          # took 25x longer.
                          OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                          JUPYTER_CONFIG_DIR=str(config_dir),
                          JUPYTER_RUNTIME_DIR=str(private / "runtime"),
                          IPYTHONDIR=str(private / "ipython"))
        for name, value in (env or {}).items():
            if value is None:
                server_env.pop(name, None)
            else:
                server_env[name] = value
        command = _server_command(server, private)
        with server.log_path.open("wb") as log:
            # A new session puts the server and the kernels it starts in one process group,
            # so ``_stop`` can end all of them without touching anything else.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       env=server_env, cwd=root_dir, start_new_session=True)
        try:
            _wait_until_answering(server, process, startup_timeout)
            yield server
        finally:
            _stop(process, server)


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


@contextmanager
def chromium_page(width: int = 1400, height: int = 900) -> Iterator[Page]:
    """A Playwright page in a fresh headless Chromium (throwaway profile), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


#: The notebook's toolbar shows the kernel state as ``data-status`` (idle, busy, starting, ...).
KERNEL_INDICATOR = ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator"

#: Counts code cells by state. An empty code cell never gets a number, so it is left out;
#: textContent (not innerText) still reads cells the notebook has not painted, off screen.
CELL_STATES_JS = """(indicatorSelector) => {
    const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'))
        .filter(cell => cell.querySelector('.cm-content')?.textContent.trim());
    const prompts = cells.map(cell => cell.querySelector('.jp-InputPrompt')?.textContent ?? '');
    const indicator = document.querySelector(indicatorSelector);
    return {
        kernel: indicator ? indicator.dataset.status : 'unknown',
        total: cells.length,
        running: prompts.filter(p => p.includes('*')).length,
        done: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
    };
}"""


#: True once the notebook's kernel is connected and idle. The toolbar indicator alone is not
#: enough: it reads "idle" for a moment while the kernel name still says "No Kernel", and a
#: Run All clicked then is silently lost.
KERNEL_READY_JS = """(indicatorSelector) => {
    const indicator = document.querySelector(indicatorSelector);
    const kernelName = document.querySelector('.jp-NotebookPanel-toolbar .jp-KernelName');
    const name = kernelName ? kernelName.textContent.trim() : '';
    return indicator?.dataset.status === 'idle' && name !== '' && name !== 'No Kernel';
}"""


def open_notebook(page: Page, server: LabServer, name: str, timeout: float = 90) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is connected and idle.

    A notebook saved without kernel metadata makes JupyterLab ask which kernel to use; we accept
    its suggestion (this environment's ``python3``) as a learner would. Any other dialog is an
    error, because it would sit between the test and the notebook.
    """
    page.goto(server.notebook_url(name))
    page.wait_for_function(
        f"(sel) => document.querySelector('.jp-Dialog') || ({KERNEL_READY_JS})(sel)",
        arg=KERNEL_INDICATOR, timeout=timeout * 1000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        text = dialog.first.inner_text()
        if "Select Kernel" not in text:
            raise LabDriverError(f"unexpected dialog when opening {name}: {text!r}")
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        page.wait_for_function(KERNEL_READY_JS, arg=KERNEL_INDICATOR, timeout=timeout * 1000)


#: Sets ``window.__courseRunAllStarted`` as soon as any code cell shows ``[*]``. A notebook saved
#: with outputs already has numbered prompts, and JupyterLab marks cells as queued a moment
#: after the menu click, so "nothing running" alone cannot tell "not started" from "finished".
WATCH_RUN_START_JS = """() => {
    window.__courseRunAllStarted = false;
    const notebook = document.querySelector('.jp-Notebook');
    const observer = new MutationObserver(() => {
        const prompts = notebook.querySelectorAll('.jp-CodeCell .jp-InputPrompt');
        if (Array.from(prompts).some(p => p.textContent.includes('*'))) {
            window.__courseRunAllStarted = true;
            observer.disconnect();
        }
    });
    observer.observe(notebook, {subtree: true, childList: true, characterData: true});
}"""


#: How often ``run_all_cells`` clicks Run All Cells before it gives up.
RUN_ALL_CLICKS = 3


def run_all_cells(page: Page, saved_copy: Path, timeout: float = 240) -> float:
    """Run > Run All Cells, wait for every code cell, and check they all ran without error.

    Finished means: the run has started, no cell shows ``[*]`` any more and the kernel is idle.
    JupyterLab renders tracebacks and warnings alike as stderr, so errors are read from the
    notebook itself: we save it (to ``saved_copy``, our temporary copy) and look for outputs of
    type "error". Returns the seconds from the click until the last cell finished.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate(WATCH_RUN_START_JS)
    # On a busy machine a click on the menu is now and then lost (nothing queued, the cells
    # still show "[ ]"); JupyterLab marks the queued cells at once, so no "[*]" within seconds
    # means the click did nothing, and clicking again cannot run anything twice.
    for attempt in range(1, RUN_ALL_CLICKS + 1):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        started = time.monotonic()
        try:
            page.wait_for_function("() => window.__courseRunAllStarted", timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt == RUN_ALL_CLICKS:
                raise LabDriverError(f"Run All Cells started nothing ({attempt} clicks)") from None
    while True:
        state = page.evaluate(CELL_STATES_JS, KERNEL_INDICATOR)
        if state["running"] == 0 and state["kernel"] == "idle":
            break
        if time.monotonic() - started > timeout:
            raise LabDriverError(f"cells still running after {timeout:.0f} s: {state}")
        time.sleep(0.25)
    elapsed = time.monotonic() - started

    errors = _saved_cell_errors(page, saved_copy)
    if errors:
        raise LabDriverError("the notebook raised:\n" + "\n".join(errors))
    if state["done"] < state["total"]:
        raise LabDriverError(f"only {state['done']} of {state['total']} code cells ran")
    return elapsed


def _saved_cell_errors(page: Page, saved_copy: Path, timeout: float = 15) -> list[str]:
    """Save the notebook from the toolbar and list the errors in its outputs, one per cell."""
    saved_before = saved_copy.stat().st_mtime_ns
    page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').click()
    deadline = time.monotonic() + timeout
    while (notebook := _read_saved(saved_copy, saved_before)) is None:
        if time.monotonic() > deadline:
            raise LabDriverError(f"saving the notebook took more than {timeout:.0f} s")
        time.sleep(0.1)
    return [f"cell {number} of {len(notebook.cells)}: {output.ename}: {output.evalue}"
            for number, cell in enumerate(notebook.cells, start=1)
            for output in cell.get("outputs", [])
            if output.output_type == "error"]


def _read_saved(path: Path, mtime_before: int) -> nbformat.NotebookNode | None:
    """The notebook at ``path`` once the server has saved it anew, or None while it has not.

    The server writes in place (its "atomic" save only keeps a backup copy), so the file is
    first truncated and then filled: a new mtime alone does not mean the content is there, but
    a file that parses does.
    """
    if path.stat().st_mtime_ns == mtime_before:
        return None
    try:
        return nbformat.read(path, as_version=4)
    except ValueError:  # empty or cut short (NotJSONError and JSONDecodeError are ValueErrors)
        return None


# --------------------------------------------------------------------------------------------
# A notebook run in the browser
# --------------------------------------------------------------------------------------------


@dataclass
class LabNotebook:
    """A notebook open in JupyterLab with all its cells run: the page to drive and the timing."""

    page: Page
    run_all_s: float
    artifacts: Path


@contextmanager
def notebook_in_lab(notebook_path: str | os.PathLike, server: LabServer | None = None,
                    artifacts_dir: str | os.PathLike | None = None,
                    timeout: float = 240) -> Iterator[LabNotebook]:
    """Open a copy of a notebook in JupyterLab in a fresh Chromium and run all its cells.

    The copy goes to the server's root, so JupyterLab's autosave never touches the original.
    ``server`` is a running ``jupyter_lab`` to share between notebooks; None starts a private one
    for this notebook alone. ``timeout`` bounds "Run All Cells". Afterwards the browser is closed
    and the notebook's kernel shut down (a shared server would otherwise keep it running).

    A ``LabDriverError`` or Playwright error, in the run or in the caller's ``with`` block,
    comes back as a ``LabDriverError`` naming a screenshot of the page (in ``artifacts_dir``, a
    new temp dir when None), the page's own errors and the end of the server log.
    """
    reason = browser_unavailable_reason()
    if reason:
        raise LabDriverError(reason)
    notebook_path = Path(notebook_path)
    if not notebook_path.is_file():
        raise LabDriverError(f"notebook not found: {notebook_path}")
    artifacts = Path(artifacts_dir or tempfile.mkdtemp(prefix="course-browser-"))
    artifacts.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import Error as PlaywrightError

    with ExitStack() as cleanup:  # undone in reverse: browser, kernel, then a private server
        if server is None:
            root = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="course-lab-root-"))
            server = cleanup.enter_context(jupyter_lab(Path(root)))
        copy = Path(shutil.copy(notebook_path, server.root_dir / notebook_path.name))
        cleanup.callback(_shut_down_kernels, server, copy.name)
        page = cleanup.enter_context(chromium_page())
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        try:
            open_notebook(page, server, copy.name)
            run_all_s = run_all_cells(page, copy, timeout)
            yield LabNotebook(page=page, run_all_s=run_all_s, artifacts=artifacts)
        except (LabDriverError, PlaywrightError) as error:
            failure = artifacts / f"failure-{copy.stem}.png"
            try:
                page.screenshot(path=str(failure), full_page=True)
            except PlaywrightError:  # a crashed page must not hide the first error
                failure = "(none, the page did not answer)"
            try:  # a widget callback that raised says why only there
                log = "\n".join(kernel_log(page).splitlines()[-12:]) or "empty"
            except PlaywrightError:
                log = "(not readable)"
            raise LabDriverError(
                f"{error}\nscreenshot: {failure}\nkernel log (tail): {log}\n"
                f"page errors: {page_errors[-3:] or 'none'}\n"
                f"server log (tail):\n{server.log_tail(15)}") from error


def _shut_down_kernels(server: LabServer, notebook_name: str) -> None:
    """End the kernel sessions of ``notebook_name``; quietly, as this runs during cleanup."""
    try:
        sessions = json.load(_api(server, "GET", "/api/sessions"))
        for session in sessions:
            if session["path"] == notebook_name:
                _api(server, "DELETE", f"/api/sessions/{session['id']}").close()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        pass  # a server that is gone has no kernels left either


# --------------------------------------------------------------------------------------------
# Slider widgets
# --------------------------------------------------------------------------------------------

#: Called with the element the learner acts on (a slider's readout or handle, a menu, a text box),
#: the DOM event that acts (``keydown`` of a given key, or a menu's ``change``) and the picture,
#: before the action. Records when the event reaches that element and when the new picture is
#: decoded (ready to paint), both on the page's clock, so the test's own browser <-> Python round
#: trips are not counted. Waiting for the decode also makes the screenshot taken next show the new
#: picture, not a half-loaded one. The promise sits inside an object because Playwright would
#: otherwise wait for it right here, before the action.
WATCH_PICTURE_JS = """([target, eventType, key, picture, timeoutMs]) => {
    const srcBefore = picture.src;
    let keyAt = null;
    target.addEventListener(eventType, event => {
        if ((key === null || event.key === key) && keyAt === null) keyAt = performance.now();
    }, {capture: true});
    const changed = new Promise((resolve, reject) => {
        const observer = new MutationObserver(() => {
            if (keyAt !== null && picture.src !== srcBefore) {
                observer.disconnect();
                picture.decode().then(
                    () => resolve({latencyMs: performance.now() - keyAt}),
                    () => reject(new Error('the new picture could not be decoded')));
            }
        });
        observer.observe(picture, {attributes: true, attributeFilter: ['src']});
        setTimeout(() => {
            observer.disconnect();
            reject(new Error(`picture did not change within ${timeoutMs} ms`));
        }, timeoutMs);
    });
    return {changed};
}"""


def find_widget(page: Page, widget_selector: str, timeout: float = 30) -> Locator:
    """The first widget matching ``widget_selector`` on the page, once its picture is drawn."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    widget = page.locator(widget_selector).first
    try:
        widget.locator(PICTURE_SELECTOR).wait_for(state="visible", timeout=timeout * 1000)
    except PlaywrightTimeout:
        # Without the lab extension a widget shows as text, e.g. "VBox(children=...)".
        raise LabDriverError(
            f"no {widget_selector} widget with a picture appeared within {timeout:.0f} s "
            "(is the cell there, and is the ipywidgets lab extension installed?)") from None
    if page.locator(".jp-Dialog").count():
        raise LabDriverError(
            "a dialog covers the notebook: " + page.locator(".jp-Dialog").first.inner_text())
    widget.scroll_into_view_if_needed()
    return widget


def _slider(page: Page, widget: Locator, widget_selector: str, description: str) -> Locator:
    """The one slider labelled ``description`` in ``widget``."""
    # Match the whole label: "step" must not pick the "steps" slider.
    label = page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))
    slider = widget.locator(".widget-slider").filter(has=label)
    if slider.count() != 1:
        raise LabDriverError(f"expected one slider {description!r} in {widget_selector}, "
                             f"found {slider.count()}")
    return slider


def _await_picture(watch: JSHandle, what: str) -> float:
    """Wait for the new picture a ``WATCH_PICTURE_JS`` watch is waiting for; its latency (ms).

    ``what`` (the move, and what may have gone wrong) starts the error message if none comes.
    """
    from playwright.sync_api import Error as PlaywrightError

    try:
        return watch.evaluate("watch => watch.changed")["latencyMs"]
    except PlaywrightError as error:  # the message's first line is the reason; then a JS stack
        raise LabDriverError(f"{what}: {error.message.splitlines()[0]}") from error


def set_slider(page: Page, widget_selector: str, description: str, value: float,
               timeout: float = 60) -> tuple[float, bytes]:
    """Type ``value`` into the readout of the slider labelled ``description`` and press Enter.

    This is what a learner does to pick an exact value on a numeric slider, and it works alike
    for sliders with and without ``continuous_update``. Not for a ``SelectionSlider``: its
    readout takes the typing but the widget ignores it (ipywidgets 8), so nothing would change;
    use ``press_slider_key`` there. Returns the milliseconds from the Enter key to the new
    picture, and a screenshot of the picture.
    """
    widget = find_widget(page, widget_selector)
    slider = _slider(page, widget, widget_selector, description)
    readout = slider.locator(".widget-readout")
    picture = widget.locator(PICTURE_SELECTOR)

    readout.click()
    page.keyboard.press("ControlOrMeta+A")  # select the old number so typing replaces it
    page.keyboard.type(str(value))
    watch = page.evaluate_handle(
        WATCH_PICTURE_JS,
        [readout.element_handle(), "keydown", "Enter", picture.element_handle(), timeout * 1000])
    page.keyboard.press("Enter")
    latency_ms = _await_picture(
        watch, f"typed {value} into slider {description!r} (if it is a SelectionSlider, it "
               "ignores typed values: use press_slider_key)")
    # The widget itself agrees on the new value (the readout rejects out-of-range input).
    shown = slider.locator(".noUi-handle").get_attribute("aria-valuenow")
    if not math.isclose(float(shown), value, abs_tol=1e-6):
        raise LabDriverError(f"slider {description!r} shows {shown}, expected {value}")
    return latency_ms, picture.screenshot()


@dataclass(frozen=True)
class KeyPress:
    """A move made with the keyboard: press ``key`` on a slider's handle once, after which the
    slider's readout must show ``shows``.

    The way to move a ``SelectionSlider``, whose readout ignores what is typed: the handle takes
    ArrowLeft/ArrowRight (one option down or up), Home and End (the first and the last option).
    """

    key: str
    shows: str

    def __str__(self) -> str:
        return f"{self.key} -> {self.shows}"


def press_slider_key(page: Page, widget_selector: str, description: str, key: str, shows: str,
                     timeout: float = 60) -> tuple[float, bytes]:
    """Focus the handle of the slider labelled ``description``, press ``key``, check the readout.

    What a learner does on a slider without a typeable readout (a ``SelectionSlider``): select
    its handle (click or Tab) and use the keys. The handle's ``aria-valuenow`` there is the
    option's index, so the option reached is read from the readout, which must then say
    ``shows``. One key is one move of the handle and one redraw, so the latency is unambiguous.
    Returns the milliseconds from the key to the new picture, and a screenshot of the picture.
    """
    widget = find_widget(page, widget_selector)
    slider = _slider(page, widget, widget_selector, description)
    handle = slider.locator(".noUi-handle")
    readout = slider.locator(".widget-readout")
    picture = widget.locator(PICTURE_SELECTOR)
    before = readout.inner_text().strip()

    handle.focus()
    watch = page.evaluate_handle(
        WATCH_PICTURE_JS,
        [handle.element_handle(), "keydown", key, picture.element_handle(), timeout * 1000])
    page.keyboard.press(key)
    latency_ms = _await_picture(
        watch, f"pressed {key} on slider {description!r} at {before!r} (at either end of the "
               "slider, a key towards that end moves nothing)")
    shown = readout.inner_text().strip()
    if shown != shows:
        raise LabDriverError(f"{key} on slider {description!r} moved it from {before!r} to "
                             f"{shown!r}, expected {shows!r}")
    return latency_ms, picture.screenshot()


def move_sliders(page: Page, widget_selector: str, moves: list[tuple[str, float | KeyPress]],
                 artifacts: Path) -> dict:
    """Apply ``moves`` (slider description, value) in order to the first matching widget.

    A value is typed into the slider's readout (``set_slider``); a ``KeyPress`` is pressed on
    its handle (``press_slider_key``). Returns ``{"values", "latencies_ms", "median_ms",
    "pictures_changed", "screenshot", "picture_px"}``: per move, the value (a ``KeyPress`` as
    its text), the ms from the key to the new picture and whether the shown picture differs from
    the one before; ``screenshot`` is the widget after the last move, ``picture_px`` the
    picture's (drawn width, displayed width) in CSS pixels then.
    """
    widget = find_widget(page, widget_selector)
    before = widget.locator(PICTURE_SELECTOR).screenshot()
    latencies, pictures_changed = [], []
    for description, value in moves:
        if isinstance(value, KeyPress):
            latency_ms, after = press_slider_key(page, widget_selector, description, value.key,
                                                 value.shows)
        else:
            latency_ms, after = set_slider(page, widget_selector, description, value)
        latencies.append(round(latency_ms, 1))
        # A new blob URL could still hold the same picture; compare what is shown.
        pictures_changed.append(after != before)
        before = after
    screenshot = artifacts / f"{widget_selector.lstrip('.')}.png"
    widget.screenshot(path=str(screenshot))
    picture_px = widget.locator(PICTURE_SELECTOR).evaluate(
        "img => [img.naturalWidth, img.getBoundingClientRect().width]")
    return {"values": [str(value) if isinstance(value, KeyPress) else value
                       for _, value in moves],
            "latencies_ms": latencies, "median_ms": statistics.median(latencies),
            "pictures_changed": pictures_changed, "screenshot": str(screenshot),
            "picture_px": picture_px}


# --------------------------------------------------------------------------------------------
# Every control of every widget in a notebook
# --------------------------------------------------------------------------------------------

#: Tags every course widget on the page with ``data-course-widget="N"`` (N = 0, 1, ... in page
#: order) and returns their course CSS classes in that order. A course widget is a VBox with a
#: ``course-...`` class that holds a ``course-picture``.
LABEL_COURSE_WIDGETS_JS = """() => {
    const boxes = Array.from(document.querySelectorAll('.jp-Notebook .widget-vbox'))
        .filter(box => box.querySelector(':scope > img.course-picture'));
    return boxes.map((box, index) => {
        box.dataset.courseWidget = String(index);
        return Array.from(box.classList).find(
            name => name.startsWith('course-') && name !== 'course-picture') ?? '';
    });
}"""

#: The controls row of a course widget (``course.viz.widgets.picture_widget``: an HBox above the
#: picture), one entry per control: its ipywidgets kind (the ``widget-...`` class), its label,
#: the value it shows and, for a menu or a combobox, its options.
WIDGET_CONTROLS_JS = """(widget) => {
    const kinds = ['slider', 'dropdown', 'text', 'textarea', 'checkbox', 'toggle-buttons',
                   'toggle-button', 'radio', 'select-multiple', 'select', 'button', 'play'];
    const row = widget.querySelector(':scope > .widget-hbox');
    return Array.from(row ? row.children : []).map(element => {
        const kind = kinds.find(name => element.classList.contains('widget-' + name));
        const control = {kind: kind ?? element.className,
                         description: element.querySelector('.widget-label')?.textContent.trim()
                             ?? '',
                         value: '', options: []};
        if (kind === 'slider') {
            control.value = element.querySelector('.widget-readout')?.textContent.trim() ?? '';
        } else if (kind === 'dropdown') {
            const menu = element.querySelector('select');
            control.options = Array.from(menu.options).map(option => option.textContent);
            control.value = menu.selectedIndex >= 0 ? control.options[menu.selectedIndex] : '';
        } else if (kind === 'text') {  // a Text, or a Combobox (its options in a datalist)
            const box = element.querySelector('input');
            control.value = box.value;
            control.options = Array.from(box.list ? box.list.options : [])
                .map(option => option.value);
        }
        return control;
    });
}"""

#: Per output on the page that shows a problem: a traceback, a widget that never rendered (the
#: lab extension's placeholders), or a widget shown as its text repr (no lab extension).
#: JupyterLab renders an error output as stderr text, like a warning, so a traceback is told by
#: its text: IPython's "Traceback (most recent call last)" header, or a last line naming the
#: exception (a SyntaxError has no header).
PAGE_PROBLEMS_JS = """() => {
    const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
    const exceptionLine = /^(\\w+\\.)*\\w*(Error|Exception|Interrupt|Exit)(:.*)?$/;
    const placeholders = ['Loading widget', 'Error displaying widget', 'model not found'];
    const problems = [];
    for (const output of document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')) {
        const cell = cells.indexOf(output.closest('.jp-Cell')) + 1;
        const text = output.textContent;
        const lines = text.trim().split('\\n');
        const stderr = output.dataset.mimeType === 'application/vnd.jupyter.stderr';
        if (text.includes('Traceback (most recent call last)')
                || (stderr && exceptionLine.test(lines[lines.length - 1].trim()))) {
            problems.push(`cell ${cell}: traceback: ${lines[lines.length - 1].trim()}`);
        }
        const placeholder = placeholders.find(words => text.includes(words));
        if (placeholder) problems.push(`cell ${cell}: widget not shown: ${placeholder}`);
        if (output.dataset.mimeType === 'text/plain' && /^[HV]Box\\(children=/.test(text.trim())) {
            problems.push(`cell ${cell}: widget shown as text: ${text.trim().slice(0, 60)}`);
        }
    }
    return problems;
}"""


@dataclass(frozen=True)
class Control:
    """One control of a course widget as the page shows it (``widget_controls``).

    ``kind``: "slider" (numeric or selection), "dropdown", "text" (a Text or a Combobox), or the
    element's classes for a kind this module cannot move. ``value``: the slider's readout, the
    chosen option, the text. ``options``: a dropdown's or a combobox's choices, in order.
    """

    kind: str
    description: str
    value: str
    options: tuple[str, ...] = ()


def page_problems(page: Page) -> list[str]:
    """Tracebacks and unrendered widgets in the notebook's outputs, one line each."""
    return page.evaluate(PAGE_PROBLEMS_JS)


def wait_for_widgets(page: Page, timeout: float = 60) -> list[str]:
    """Wait until no widget still says "Loading widget..."; then return ``page_problems``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """() => !Array.from(document.querySelectorAll('.jp-OutputArea-output'))
                .some(output => output.textContent.includes('Loading widget'))""",
            timeout=timeout * 1000)
    except PlaywrightTimeout:
        pass  # page_problems names them
    return page_problems(page)


#: The status bar's log counter: how many messages the kernel sent outside any cell (the output
#: of widget callbacks goes there, a callback's traceback included).
LOG_STATUS_SELECTOR = ".jp-LogConsoleStatusItem"


def kernel_log(page: Page, timeout: float = 10) -> str:
    """The text of the notebook's log console ("" when it has no messages).

    A widget's callback runs on a comm message, not in a cell, so what it prints or raises is
    not in any output: JupyterLab logs it and counts it in the status bar. This opens the log
    (a click on that counter, as a learner would) and reads it.
    """
    status = page.locator(LOG_STATUS_SELECTOR)
    if not status.count() or not re.search(r"[1-9]", status.first.inner_text()):
        return ""
    status.first.click()
    panel = page.locator(".jp-LogConsolePanel").first
    panel.locator(".jp-OutputArea-output").first.wait_for(timeout=timeout * 1000)
    return panel.inner_text()


def label_course_widgets(page: Page) -> list[tuple[str, str]]:
    """Every course widget on the page, in order: (a selector for that one widget, its class)."""
    classes = page.evaluate(LABEL_COURSE_WIDGETS_JS)
    return [(f'.{css_class}[data-course-widget="{index}"]', css_class)
            for index, css_class in enumerate(classes)]


def widget_controls(page: Page, widget_selector: str) -> list[Control]:
    """The controls of the widget at ``widget_selector``, left to right."""
    widget = find_widget(page, widget_selector)
    return [Control(kind=c["kind"], description=c["description"], value=c["value"],
                    options=tuple(c["options"]))
            for c in widget.evaluate(WIDGET_CONTROLS_JS)]


def _control(widget: Locator, widget_selector: str, kind: str, description: str) -> Locator:
    """The one control of ``kind`` (a ``widget-...`` class) labelled ``description``."""
    label = widget.page.locator(
        ".widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))
    control = widget.locator(f".widget-{kind}").filter(has=label)
    if control.count() != 1:
        raise LabDriverError(f"expected one {kind} {description!r} in {widget_selector}, "
                             f"found {control.count()}")
    return control


def choose_option(page: Page, widget_selector: str, description: str, label: str,
                  timeout: float = 60) -> tuple[float, bytes]:
    """Pick the option ``label`` in the dropdown labelled ``description``.

    The menu's own popup is drawn by the browser, outside the page, so the option is chosen as
    a keyboard or a click would leave it: the ``<select>`` takes the value and fires ``change``,
    which the widget listens to. Returns the milliseconds from that ``change`` to the new
    picture, and a screenshot of the picture.
    """
    widget = find_widget(page, widget_selector)
    menu = _control(widget, widget_selector, "dropdown", description).locator("select")
    picture = widget.locator(PICTURE_SELECTOR)
    watch = page.evaluate_handle(
        WATCH_PICTURE_JS,
        [menu.element_handle(), "change", None, picture.element_handle(), timeout * 1000])
    menu.select_option(label=label)
    latency_ms = _await_picture(watch, f"chose {label!r} in menu {description!r}")
    return latency_ms, picture.screenshot()


def type_text(page: Page, widget_selector: str, description: str, text: str,
              timeout: float = 60) -> tuple[float, bytes]:
    """Replace the text of the box labelled ``description`` (a Text or Combobox) and press Enter.

    Returns the milliseconds from the Enter key to the new picture, and a screenshot of it.
    """
    widget = find_widget(page, widget_selector)
    box = _control(widget, widget_selector, "text", description).locator("input")
    picture = widget.locator(PICTURE_SELECTOR)
    box.click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("Backspace")  # typing "" must clear the box too
    page.keyboard.type(text)
    watch = page.evaluate_handle(
        WATCH_PICTURE_JS,
        [box.element_handle(), "keydown", "Enter", picture.element_handle(), timeout * 1000])
    page.keyboard.press("Enter")
    latency_ms = _await_picture(watch, f"typed {text!r} into box {description!r}")
    if box.input_value() != text:
        raise LabDriverError(f"box {description!r} shows {box.input_value()!r}, expected {text!r}")
    return latency_ms, picture.screenshot()


def move_control(page: Page, widget_selector: str, control: Control,
                 value: float | str | KeyPress) -> tuple[float, bytes]:
    """Set ``control`` of the widget to ``value`` as a learner would; one redraw.

    A slider takes a number (typed into its readout) or a ``KeyPress`` (on its handle), a
    dropdown an option's label, a text box its new text. Returns the milliseconds to the new
    picture and a screenshot of it.
    """
    if control.kind == "slider" and isinstance(value, KeyPress):
        return press_slider_key(page, widget_selector, control.description, value.key,
                                value.shows)
    if control.kind == "slider" and isinstance(value, (int, float)):
        return set_slider(page, widget_selector, control.description, value)
    if control.kind == "dropdown" and isinstance(value, str):
        return choose_option(page, widget_selector, control.description, value)
    if control.kind == "text" and isinstance(value, str):
        return type_text(page, widget_selector, control.description, value)
    raise LabDriverError(f"cannot set {control.kind} {control.description!r} of "
                         f"{widget_selector} to {value!r}")


def picture_difference(before: bytes, after: bytes) -> float:
    """The share of pixels that differ between two PNG screenshots (1.0 if their sizes do)."""
    import io

    import numpy as np
    from PIL import Image

    first, second = (np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                     for png in (before, after))
    if first.shape != second.shape:
        return 1.0
    return float((first != second).any(axis=-1).mean())


def measure_slider_latency(notebook_path: str | os.PathLike,
                           values: tuple[int, ...] = (600, 900, 100),
                           timeout: float = 240,
                           artifacts_dir: str | os.PathLike | None = None,
                           server: LabServer | None = None) -> dict:
    """Run a notebook in JupyterLab, move its timestep slider to each of ``values``, time it.

    The lesson 01 case of ``notebook_in_lab`` and ``move_sliders`` (see both): the first
    forward-noising widget's "timestep t" slider, one redraw per value, each given 60 s.

    Returns ``{"values", "latencies_ms", "median_ms", "pictures_changed", "run_all_s",
    "screenshot"}``. Raises ``LabDriverError`` if the browser is unavailable, or a step fails or
    times out.
    """
    with notebook_in_lab(notebook_path, server, artifacts_dir, timeout) as lab:
        moves = [(SLIDER_DESCRIPTION, value) for value in values]
        result = move_sliders(lab.page, WIDGET_SELECTOR, moves, lab.artifacts)
    return {**result, "run_all_s": round(lab.run_all_s, 1)}


if __name__ == "__main__":
    # python -m course.dev.labdriver NOTEBOOK: time the slider by hand, outside pytest.
    import argparse

    parser = argparse.ArgumentParser(description=measure_slider_latency.__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--values", type=int, nargs="+", default=[600, 900, 100])
    arguments = parser.parse_args()
    print(json.dumps(measure_slider_latency(arguments.notebook, tuple(arguments.values)),
                     indent=2))
