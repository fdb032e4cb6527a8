"""Real-browser test: JupyterLab runs chapter 00, a widget is moved, its output changes, Mermaid renders.

Starts JupyterLab on loopback with a random token and a throw-away home, drives Debian's Chromium
with Playwright (which must not download a browser), and shuts everything down itself. Screenshots
go to build/browser/. Skipped, with the way to enable it, where Chromium is not installed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CHAPTERS, ROOT

CHROMIUM = Path(os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium"))
# The chapter under test; WORKBOOK_BROWSER_NOTEBOOK points at another copy (e.g. a deliberately broken one).
SOURCE = Path(os.environ.get("WORKBOOK_BROWSER_NOTEBOOK", CHAPTERS / "00_welcome_and_setup.ipynb"))
NOTEBOOK = "00_welcome_and_setup.ipynb"
SHOTS = ROOT / "build" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

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


def _wait_for_server(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
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


@pytest.fixture()
def jupyterlab(tmp_path):
    """A JupyterLab server on loopback serving a copy of chapter 00; yields (base_url, token)."""
    home, root = tmp_path / "home", tmp_path / "root"
    settings = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # Don't ask about fetching Jupyter news (the toast would cover the notebook).
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    # Render every cell (JupyterLab 4 otherwise only keeps the cells near the viewport in the page).
    notebook_settings = settings.parent / "notebook-extension"
    notebook_settings.mkdir()
    (notebook_settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    root.mkdir()
    shutil.copy(SOURCE, root / NOTEBOOK)  # never let the browser autosave the real chapter
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # keep the inline backend
    env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_PREFER_ENV_PATH="1", CI="true")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={token}", proc)
        yield base, token
    finally:
        try:  # graceful: the server shuts its kernels down too
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5)
            proc.wait(timeout=20)
        except Exception:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _panel_image_src(page) -> str:
    return page.locator(".widget-output img").first.get_attribute("src") or ""


def test_jupyterlab_runs_chapter_00_widget_responds_and_mermaid_renders(jupyterlab):
    from playwright.sync_api import expect, sync_playwright

    base, token = jupyterlab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            # The status bar reads "… | Idle" once the kernel has really started.
            status = page.locator("#jp-main-statusbar")
            expect(status).to_contain_text("Idle", timeout=60_000)
            for toast in page.locator(".Toastify__close-button").all():  # any notification left
                toast.click()
            page.locator(".jp-Notebook").first.click()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            # The widget panel appears with its first figure.
            expect(page.locator(".widget-output img").first).to_be_visible(timeout=90_000)
            expect(status).to_contain_text("Idle", timeout=90_000)
            page.locator(".widget-output").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "01_widget_before.png"))
            before = _panel_image_src(page)

            # Move the first slider (frequency) with the keyboard, as a person could.
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.focus()
            for _ in range(5):
                handle.press("ArrowRight")
            expect(page.locator(".widget-output img").first).not_to_have_attribute("src", before, timeout=30_000)
            expect(page.locator(".widget-readout").first).to_have_text("1.50")
            expect(status).to_contain_text("Idle", timeout=30_000)
            page.screenshot(path=str(SHOTS / "02_widget_after.png"))
            assert _panel_image_src(page) != before

            # The Mermaid course map rendered as a picture.
            mermaid = page.locator(".jp-RenderedMermaid img").first
            mermaid.scroll_into_view_if_needed()
            expect(mermaid).to_be_visible(timeout=30_000)
            assert mermaid.bounding_box()["width"] > 100
            page.screenshot(path=str(SHOTS / "03_mermaid.png"))

            # No cell ended in an error.
            assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').count() == 0
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
