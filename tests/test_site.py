"""`make site`: the executed chapters as a static offline site, checked in headless Chromium.

Builds the site (tools/build_site.py) from the executed copies that tests/test_notebooks.py keeps
in build/executed/ (it runs before this file: pytest collects test files alphabetically) into a
temporary folder — chapter 00 and one more chapter with a widget panel, to stay quick — then opens the
index from disk, follows a link, and checks that an output image, a Mermaid diagram and a frozen widget
panel render, and that the pages request nothing from the network. Skipped, saying why, when there
are no executed chapters (``make test-fast``) or no Chromium.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402

EXECUTED = ROOT / "build" / "executed"
CHROMIUM = Path(os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "build" / "browser"


def _finished(path: Path) -> bool:
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # being written by a running test
        return False
    return nb.metadata.get("papermill", {}).get("end_time") is not None


def _pick() -> list[Path]:
    done = [p for p in sorted(EXECUTED.glob("[0-9][0-9]_*.ipynb")) if _finished(p)] if EXECUTED.is_dir() else []
    first = [p for p in done if p.name.startswith("00_")] or done[:1]
    panel = [p for p in done if p not in first and '"OutputModel"' in p.read_text(encoding="utf-8")]
    return first + panel[:1]


def test_build_site_says_run_make_test_first_without_executed_chapters(tmp_path):
    with pytest.raises(SystemExit, match="make test"):
        build_site.build(tmp_path / "missing", tmp_path / "site")


def test_index_summary_and_run_time_come_from_the_executed_notebook():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 42 · A title\n\nFirst sentence here. Second sentence.\nmore\n\n**Learning goals**\n- x")])
    nb.metadata["papermill"] = {"duration": 12.4}
    assert build_site.chapter_info(nb, "42_x") == {"title": "42 · A title", "summary": "First sentence here.",
                                                   "seconds": 12.4}


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Chromium not found at {CHROMIUM} (.ci/run installs it)")
def test_static_site_index_links_images_mermaid_and_panels_render_offline(tmp_path):
    picked = _pick()
    if not picked:
        pytest.skip(f"no executed chapters in {EXECUTED}: the site is built from them; run `make test` "
                    "(tests/test_notebooks.py writes them) first")
    executed = tmp_path / "executed"
    executed.mkdir()
    for path in picked:
        shutil.copy(path, executed / path.name)
    site = tmp_path / "site"
    chapters = build_site.build(executed, site)
    assert [c["stem"] for c in chapters] == [p.stem for p in picked]

    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    requested = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.route("http*://**/*", lambda route: (requested.append(route.request.url), route.abort()))
            page.goto((site / "index.html").as_uri())
            rows = page.locator("tbody tr")
            expect(rows).to_have_count(len(picked))
            first = chapters[0]
            assert first["title"] in rows.first.inner_text() and first["summary"]
            assert rows.first.locator("td.time").inner_text().endswith(" s")
            page.screenshot(path=str(SHOTS / "site_index.png"))

            rows.first.locator("a").click()
            page.wait_for_url(f"**/{first['stem']}.html")
            images = page.locator(".jp-OutputArea-output img")
            assert images.count() > 0, "no output image on the chapter page"
            image = images.first
            image.scroll_into_view_if_needed()
            assert image.evaluate("img => img.complete && img.naturalWidth > 0"), "an output image did not load"
            if first["stem"].startswith("00_"):
                diagram = page.locator(".jp-RenderedMermaid img").first
                diagram.scroll_into_view_if_needed()
                width = diagram.evaluate("img => img.decode().then(() => img.getBoundingClientRect().width)")
                assert width > 100, f"the Mermaid diagram did not render (width {width} px)"
                assert page.locator("pre.mermaid, pre.mermaid-source").count() == 0
                page.screenshot(path=str(SHOTS / "site_mermaid.png"))
            panel = page.locator(".workbook-panel-static").first
            panel.scroll_into_view_if_needed()
            expect(panel).to_contain_text("Controls:")
            page.screenshot(path=str(SHOTS / "site_panel.png"))
            assert requested == [], f"the site requested {requested[:3]} from the network"
        finally:
            browser.close()
