"""Real-browser tests: JupyterLab runs every chapter that has a widget panel; every panel answers a keypress.

One JupyterLab server (loopback, random token, throw-away home and root) serves SMOKE copies of the
chapters: the SMOKE parameter is injected the way papermill does it (an ``injected-parameters`` cell
after the ``parameters`` cell). Debian's Chromium, driven by Playwright (which must not download a
browser), loads JupyterLab once, opens each chapter in it as a notebook tab and runs all cells;
``WORKBOOK_BROWSER_PARALLEL`` chapters (default 2) run at once in their own kernels, longest stated run
time first, and a chapter that finishes hands its slot to the next one at once. Then, for every panel
built with ``utils.make_panel`` (marked ``workbook-panel`` in the page), one control is moved with the keyboard (ArrowRight on a slider's
handle, ArrowDown in a dropdown, typing in a text box; Enter on the Run button of a panel built with
``auto=False``); the panel's output must change, the panel must not report an error, and no cell may
show an error output. A Chinese heading must render with a real CJK font, not missing-glyph boxes.
Screenshots of every panel before and after go to build/browser/.

``WORKBOOK_BROWSER_NOTEBOOK=/path/NN_name.ipynb`` replaces the chapter of that file name with the given
copy (e.g. a deliberately broken one); a file name that is not a chapter's is tested in addition.
``WORKBOOK_BROWSER_CHAPTERS=00,16`` restricts the run to those chapter numbers.
Skipped, with the way to enable it, where Chromium is not installed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import CHAPTERS, ROOT, stated_seconds

CHROMIUM = Path(os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "build" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PARALLEL = max(1, int(os.environ.get("WORKBOOK_BROWSER_PARALLEL", "2")))
RUN_TIMEOUT_S = float(os.environ.get("WORKBOOK_BROWSER_RUN_TIMEOUT", "420"))  # one chapter's Run All, SMOKE
PANEL_TIMEOUT_S = float(os.environ.get("WORKBOOK_BROWSER_PANEL_TIMEOUT", "120"))  # one panel's re-run
CJK = re.compile(r"[\u4e00-\u9fff]")


def _has_panel(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(c.cell_type == "code" and "make_panel(" in c.source for c in nb.cells)


def _chapters() -> list[Path]:
    """Every chapter with a make_panel panel, with the WORKBOOK_BROWSER_* overrides applied."""
    paths = {p.name: p for p in sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb")) if _has_panel(p)}
    override = os.environ.get("WORKBOOK_BROWSER_NOTEBOOK")
    if override:
        paths[Path(override).name] = Path(override)
    only = os.environ.get("WORKBOOK_BROWSER_CHAPTERS")
    if only:
        wanted = {n.strip().zfill(2) for n in only.split(",") if n.strip()}
        paths = {name: p for name, p in paths.items() if name[:2] in wanted or p == Path(override or "")}
    # Longest first (by the run time each chapter states), so the two kernels finish close together.
    return sorted(paths.values(), key=lambda p: (-stated_seconds(p), p.name))


CHAPTER_PATHS = _chapters()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=(
        f"Chromium not found at {CHROMIUM}: install Debian's chromium and chromium-driver packages "
        "(`apt-get install chromium chromium-driver`, as .ci/run does) or set WORKBOOK_CHROMIUM"
    )),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout_s} s")


def smoke_copy(source: Path, target: Path) -> None:
    """Write ``source`` to ``target`` with SMOKE = True injected as papermill would."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(source))
    nb = parameterize_notebook(nb, {"SMOKE": True}, kernel_name="python3", language="python")
    nbformat.write(nb, target)


# --- in-page JavaScript (JupyterLab is started with expose_app_in_browser) -------------------------

OPEN_AND_RUN = """async (path) => {
  const app = window.jupyterapp;
  await app.restored;
  const panel = await app.commands.execute('docmanager:open', {path: path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  const idle = () => panel.sessionContext.session && panel.sessionContext.session.kernel
                     && panel.sessionContext.kernelDisplayStatus === 'idle';
  for (let waited = 0; !idle(); waited += 250) {
    if (waited > 120000) throw new Error(`the kernel of ${path} did not become idle within 120 s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  window.__workbook = window.__workbook || {};
  const state = window.__workbook[path] = {done: false, ok: null, error: null, id: panel.id};
  app.shell.activateById(panel.id);  // notebook:run-all-cells runs the current notebook
  app.commands.execute('notebook:run-all-cells').then(
    (ok) => { Object.assign(state, {done: true, ok: ok}); },
    (err) => { Object.assign(state, {done: true, ok: false, error: String(err)}); });
  return {kernel: panel.sessionContext.session.kernel.name, id: panel.id};
}"""
# The notebook tab with a given widget id (JupyterLab's currentWidget follows the focus, which a headless
# page without a user does not move reliably).
TAB = "const tab = [...window.jupyterapp.shell.widgets('main')].find((w) => w.id === id);"
ACTIVATE = """async (id) => {
  """ + TAB + """
  window.jupyterapp.shell.activateById(id);
  for (let waited = 0; !tab.isVisible; waited += 100) {
    if (waited > 30000) throw new Error(`could not show the notebook tab ${id}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}"""
CLOSE = """(id) => {
  """ + TAB + """
  if (tab) { tab.context.model.dirty = false; tab.dispose(); }
}"""
KERNEL_IDLE = """(id) => {
  """ + TAB + """
  return tab.sessionContext.kernelDisplayStatus === 'idle';
}"""
# Error outputs of the notebook's cells, read from JupyterLab's output models (the page renders a traceback
# as application/vnd.jupyter.stderr, so the DOM alone cannot tell an error from a warning).
CELL_ERRORS = """(id) => {
  """ + TAB + """
  const notebook = tab.content;
  const errors = [];
  notebook.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const outputs = cell.model.outputs;
    for (let i = 0; i < outputs.length; i++) {
      const output = outputs.get(i).toJSON();
      if (output.output_type === 'error') {
        errors.push(`cell ${index}: ${output.ename}: ${output.evalue}`);
      }
    }
  });
  return errors;
}"""
# Draw each character of a rendered Chinese text in its own computed font; with no CJK font every
# character is the same missing-glyph box, identical to the box of an unassigned code point.
CJK_GLYPHS = """(el) => {
  const text = [...new Set([...el.textContent].filter(c => /[\\u4e00-\\u9fff]/.test(c)))].slice(0, 6);
  const style = getComputedStyle(el);
  const font = `${style.fontWeight} 32px ${style.fontFamily}`;
  const draw = (ch) => {
    const canvas = document.createElement('canvas'); canvas.width = 48; canvas.height = 48;
    const ctx = canvas.getContext('2d'); ctx.font = font; ctx.fillStyle = '#000'; ctx.textBaseline = 'top';
    ctx.fillText(ch, 4, 4);
    return Array.from(ctx.getImageData(0, 0, 48, 48).data.filter((_, i) => i % 4 === 3)).join(',');
  };
  const missing = draw('\\u0378');
  const glyphs = text.map(draw);
  return {text: text.join(''), family: style.fontFamily, distinct: new Set(glyphs).size,
          boxes: glyphs.filter(g => g === missing).length, blank: glyphs.filter(g => /^[0,]*$/.test(g)).length};
}"""


class Lab:
    """One JupyterLab server and one Chromium, shared by all chapters; chapters run ahead in parallel."""

    def __init__(self, tmp: Path, chapters: list[Path]):
        self.tmp, self.chapters = tmp, chapters
        self.runs: dict[str, dict] = {}  # file name -> {"id" (of its notebook tab), "started", "done", ...}
        self.launched: set[str] = set()
        self.proc = self.log = self.pw = self.browser = self.page = None

    def start(self) -> None:
        home, root = self.tmp / "home", self.tmp / "root"
        settings = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab"
        (settings / "apputils-extension").mkdir(parents=True)
        # Don't ask about fetching Jupyter news (the toast would cover the notebook).
        (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false"}))
        # Render every cell (JupyterLab 4 otherwise only keeps the cells near the viewport in the page).
        (settings / "notebook-extension").mkdir()
        (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"}))
        (root / "chapters").mkdir(parents=True)
        (root / "data").symlink_to(ROOT / "data")  # chapters find ../data as in the repository
        for path in self.chapters:  # never let the browser autosave the real chapter
            smoke_copy(path, root / "chapters" / path.name)
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # keep the inline backend
        env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_PREFER_ENV_PATH="1", CI="true")
        if PARALLEL > 1:  # kernels side by side: one thread each, or OpenMP threads spin against each other
            env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = open(self.tmp / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        _wait_for_server(f"{self.base}/api/status?token={self.token}", self.proc)
        from playwright.sync_api import sync_playwright

        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)

    def stop(self) -> None:
        for name in list(self.runs):
            self.close(name)
        if self.browser:
            self.browser.close()
        if self.pw:
            self.pw.stop()
        if self.proc:
            try:  # graceful: the server shuts its kernels down too
                request = urllib.request.Request(f"{self.base}/api/shutdown?token={self.token}", method="POST")
                urllib.request.urlopen(request, timeout=5)
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        if self.log:
            self.log.close()

    def _open_page(self) -> None:
        """One page, one JupyterLab: chapters open in it as notebook tabs (loading JupyterLab once, not
        once per chapter; only the tab being checked is laid out, the others run hidden)."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = context.new_page()
        self.page.goto(f"{self.base}/lab/workspaces/browser-test?reset&token={self.token}")
        self.page.wait_for_function("() => !!window.jupyterapp", timeout=120_000, polling=250)
        self.page.evaluate("() => window.jupyterapp.restored.then(() => true)")

    def _launch(self, path: Path) -> None:
        opened = time.monotonic()
        if self.page is None:
            self._open_page()
        info = self.page.evaluate(OPEN_AND_RUN, f"chapters/{path.name}")
        assert info["kernel"] == "python3", f"{path.name} started kernel {info['kernel']!r}, not the course's python3"
        self.launched.add(path.name)
        self.runs[path.name] = {"id": info["id"], "started": time.monotonic(), "done": False,
                                "load_s": time.monotonic() - opened}

    def _pump(self) -> None:
        """Keep PARALLEL chapters running: a finished chapter's slot goes to the next one at once,
        even while earlier chapters wait for their panels to be checked (no head-of-line blocking)."""
        states = self.page.evaluate("() => window.__workbook || {}") if self.runs else {}
        for name, run in self.runs.items():
            state = states.get(f"chapters/{name}", {})
            if not run["done"] and state.get("done"):
                run["done"], run["result"] = True, state
                run["seconds"] = time.monotonic() - run["started"]
        running = sum(not run["done"] for run in self.runs.values())
        for path in self.chapters:
            if running >= PARALLEL:
                break
            if path.name not in self.launched:
                self._launch(path)
                running += 1

    def page_for(self, path: Path):
        """Once ``path``'s Run All has finished (other chapters start meanwhile), show its tab and
        return the page, the Run All result and a locator for the notebook's panel."""
        if path.name not in self.launched:
            self._launch(path)
        run = self.runs[path.name]
        while True:
            self._pump()
            if run["done"]:
                break
            if time.monotonic() - run["started"] > RUN_TIMEOUT_S:
                raise TimeoutError(f"{path.name}: Run All did not finish within {RUN_TIMEOUT_S:.0f} s")
            self.page.wait_for_timeout(500)
        page = self.page
        page.evaluate(ACTIVATE, run["id"])
        page.wait_for_function(KERNEL_IDLE, arg=run["id"], timeout=60_000, polling=250)
        return page, run["result"], page.locator(f"[id='{run['id']}']"), run["id"]

    def close(self, name: str) -> None:
        run = self.runs.pop(name, None)
        if run is None:
            return
        try:
            self.page.evaluate(CLOSE, run["id"])
        except Exception:  # the page itself failed: the kernel is still shut down below
            pass
        try:  # free the kernel's memory for the chapters still to come
            with urllib.request.urlopen(f"{self.base}/api/sessions?token={self.token}", timeout=10) as r:
                sessions = json.load(r)
            for s in sessions:
                if s.get("path", "").endswith(name):
                    request = urllib.request.Request(
                        f"{self.base}/api/sessions/{urllib.parse.quote(s['id'])}?token={self.token}", method="DELETE")
                    urllib.request.urlopen(request, timeout=30)
        except OSError:
            pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("jupyterlab"), CHAPTER_PATHS)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def _move_control(panel) -> str:
    """Move one control of ``panel`` with the keyboard; return what was done."""
    sliders = panel.locator(".widget-slider")
    if sliders.count():
        # A seed must change a random sample; a small temperature step may legitimately not (same seed).
        seeded = sliders.filter(has=panel.page.locator(".widget-label", has_text=re.compile(r"^seed$")))
        handle = (seeded if seeded.count() else sliders).first.locator(".noUi-handle")
        handle.focus()
        at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
        key = "ArrowLeft" if at_max else "ArrowRight"
        handle.press(key)
        labels = (seeded if seeded.count() else sliders).first.locator(".widget-label").all_inner_texts()
        return f"slider '{labels[0] if labels else '?'}' {key}"
    selects = panel.locator(".widget-dropdown select")
    if selects.count():
        select = selects.first
        select.focus()
        options = select.locator("option").count()
        current = select.evaluate("s => s.selectedIndex")
        pick = current - 1 if current == options - 1 else current + 1
        select.select_option(index=pick)  # as picking from the open list does (input + change events)
        return f"dropdown option {current} -> {pick}"
    texts = panel.locator(".widget-text input")
    if texts.count():
        box = texts.first
        box.focus()
        box.press("End")
        box.type(" please")
        box.press("Enter")
        return "text box typed ' please' + Enter"
    checks = panel.locator(".widget-checkbox input")
    if checks.count():
        checks.first.focus()
        checks.first.press("Space")
        return "checkbox Space"
    raise AssertionError("panel has no slider, dropdown, text box or checkbox to move")


def _expected_panels(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(len(re.findall(r"(?<!def )\bmake_panel\(", c.source)) for c in nb.cells if c.cell_type == "code")


def _check_chinese_renders(notebook, name: str) -> str:
    """At least one rendered Chinese heading is drawn with real glyphs."""
    text = notebook.locator(".jp-RenderedMarkdown :is(h1,h2,h3,h4,li,p,td)").filter(has_text=CJK).first
    if not text.count():
        return "no Chinese text"
    info = text.evaluate(CJK_GLYPHS)
    assert info["boxes"] == 0 and info["blank"] == 0 and info["distinct"] == len(info["text"]), (
        f"{name}: Chinese text {info['text']!r} renders as missing-glyph boxes in font {info['family']}: "
        "install a CJK font (Debian: `apt-get install fonts-wqy-microhei`, as .ci/run does)")
    return info["text"]


@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=[p.stem for p in CHAPTER_PATHS])
def test_every_panel_of_the_chapter_answers_the_keyboard_in_jupyterlab(lab, path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    SHOTS.mkdir(parents=True, exist_ok=True)
    page, result, notebook, tab = lab.page_for(path)
    checked = time.monotonic()
    stem = path.stem
    try:
        errors = page.evaluate(CELL_ERRORS, tab)
        assert not errors, f"{path.name}: a cell failed: " + "; ".join(errors)[:2000]
        assert result["ok"], f"{path.name}: Run All did not finish cleanly ({result})"
        chinese = _check_chinese_renders(notebook, path.name)
        assert chinese != "no Chinese text" or not stem.startswith("00_"), "chapter 00 shows no Chinese heading"

        panels = notebook.locator(".workbook-panel")
        expected = _expected_panels(path)
        assert panels.count() == expected, f"{path.name}: {panels.count()} panels in the page, {expected} in the code"
        for i in range(expected):
            panel = panels.nth(i)
            output = panel.locator(".workbook-panel-output")
            # The first run's result is there (figures, text or HTML).
            output.locator(".jp-OutputArea-output").first.wait_for(timeout=60_000)
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(SHOTS / f"{stem}_panel{i}_before.png"))
            before = output.inner_html()
            action = _move_control(panel)
            if "workbook-panel-manual" in (panel.get_attribute("class") or ""):
                run = panel.locator(".workbook-panel-run")
                run.focus()
                run.press("Enter")
                action += ", Run (Enter)"
            # Wait for new output, then for the kernel to finish the re-run.
            try:
                page.wait_for_function(
                    "([el, before]) => el.innerHTML !== before && el.querySelector('.jp-OutputArea-output')",
                    arg=[output.element_handle(), before], timeout=PANEL_TIMEOUT_S * 1000, polling=200)
            except PlaywrightTimeout:
                panel.screenshot(path=str(SHOTS / f"{stem}_panel{i}_after.png"))
                pytest.fail(f"{path.name} panel {i} did not respond: output unchanged {PANEL_TIMEOUT_S:.0f} s "
                            f"after {action}")
            page.wait_for_function(KERNEL_IDLE, arg=tab, timeout=PANEL_TIMEOUT_S * 1000, polling=250)
            panel.screenshot(path=str(SHOTS / f"{stem}_panel{i}_after.png"))
            assert output.inner_html() != before, f"{path.name} panel {i}: output unchanged after {action}"
            assert "workbook-panel-error" not in (output.get_attribute("class") or ""), (
                f"{path.name} panel {i} reports an error after {action}: {output.inner_text()[:500]}")
            print(f"{stem} panel {i}: {action} -> output changed")
        errors = page.evaluate(CELL_ERRORS, tab)
        assert not errors, f"{path.name}: a cell shows an error: " + "; ".join(errors)[:2000]

        if stem.startswith("00_"):  # the Mermaid course map rendered as a picture
            mermaid = notebook.locator(".jp-RenderedMermaid :is(img,svg)").first
            mermaid.scroll_into_view_if_needed()
            mermaid.wait_for(state="visible", timeout=30_000)
            assert mermaid.bounding_box()["width"] > 100
            page.screenshot(path=str(SHOTS / f"{stem}_mermaid.png"))
        run = lab.runs[path.name]
        print(f"{stem}: opened with its kernel ready in {run['load_s']:.0f} s, Run All in {run['seconds']:.0f} s, "
              f"panels checked in {time.monotonic() - checked:.0f} s")
    except Exception:
        page.screenshot(path=str(SHOTS / f"{stem}_failure.png"), full_page=True)
        raise
    finally:
        lab.close(path.name)
