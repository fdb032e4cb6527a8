"""`make site`: the executed chapters as a static offline site, checked in headless Chromium.

Builds the site (tools/build_site.py) from the executed copies that tests/test_notebooks.py keeps
in build/executed/ (it runs before this file: pytest collects test files alphabetically) into a
temporary folder — chapter 00 and one more chapter with a widget panel, to stay quick — then opens the
index from disk, follows a link, and checks that an output image, a Mermaid diagram, a formula (as
MathML) and a frozen widget panel render, and that the pages request nothing from the network. Skipped, saying why, when there
are no executed chapters (``make test-fast``) or no Chromium. It then reads the site as a book: the chapter
list beside the page, "next" and "previous", and the offline search box (a word of the second chapter that
the first never uses leads to the second chapter).
"""

from __future__ import annotations

import json
import os
import re
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


def test_index_summary_keeps_bold_words_inside_the_sentence_as_plain_text():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 01 · T\n\nA model has many learned numbers, its\n**parameters**, and `code`. More.\n")])
    assert build_site.chapter_info(nb, "01_t")["summary"] == "A model has many learned numbers, its parameters, and code."


def test_index_summary_and_run_time_come_from_the_executed_notebook():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 42 · A title\n\nFirst sentence here. Second sentence.\nmore\n\n**Learning goals**\n- x")])
    nb.metadata["papermill"] = {"duration": 12.4}
    assert build_site.chapter_info(nb, "42_x") == {"title": "42 · A title", "summary": "First sentence here.",
                                                   "seconds": 12.4}


def _widget_nb(state: dict, view_id: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    view = {"model_id": view_id, "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/plain": "HBox(...)", build_site.WIDGET_VIEW: view})])]
    nb.metadata["widgets"] = {build_site.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_a_saved_tqdm_bar_becomes_a_static_bar_with_its_text_not_a_panel():
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": "epochs: 100%"}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 5, "min": 0, "max": 5}},
        "r": {"model_name": "HTMLModel", "state": {"value": "5/5 [00:03&lt;00:00]"}},
    }
    nb = _widget_nb(state, "box")
    assert build_site.freeze_widgets(nb) == 0  # not counted as a panel
    (output,) = nb.cells[0].outputs
    html = output["data"]["text/html"]
    assert "workbook-progress" in html and "value='1.0000'" in html and "5/5" in html and "epochs" in html
    assert "widgets" not in nb.metadata


def test_a_saved_panel_shows_its_title_control_values_and_last_output():
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_t", "IPY_MODEL_s", "IPY_MODEL_o"]}},
        "t": {"model_name": "HTMLModel", "state": {"value": "<b>Learning rate</b>"}},
        "s": {"model_name": "FloatSliderModel", "state": {"description": "lr", "value": 0.1}},
        "o": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "stream", "name": "stdout", "text": "loss 0.25\n"}]}},
    }
    nb = _widget_nb(state, "box")
    assert build_site.freeze_widgets(nb) == 1
    note, shown = nb.cells[0].outputs
    assert "Learning rate" in note["data"]["text/html"] and "lr = <code>0.1</code>" in note["data"]["text/html"]
    assert shown["text"] == "loss 0.25\n"


def test_formulas_become_mathml_and_dollars_in_code_or_escaped_stay_text():
    exporter, stats = build_site._site_exporter(build_site.TEMPLATE)
    html = exporter.markdown2html({"cell": {}, "resources": {}},
                                  "Cost \\$12, `a $b$ c`, inline $\\frac{a}{b}$ and\n\n$$\\sum_{i=1}^n x_i$$\n")
    assert html.count("<math") == 2 and 'display="block"' in html
    assert "$12" in html and "<code>a $b$ c</code>" in html
    assert stats["formulas"] == 2 and stats["tex_left"] == []
    aligned = exporter.markdown2html({"cell": {}, "resources": {}},
                                     "$$\\begin{aligned}\n&a = b \\\\\n&c = d\n\\end{aligned}$$\n")
    assert aligned.count("<mtr>") == 2 and "<mi>&</mi>" not in aligned, aligned  # a table, not a row with "&"
    broken = exporter.markdown2html({"cell": {}, "resources": {}}, "bad $\\frac{a}{$ formula")
    assert "tex-source" in broken and stats["tex_left"] == ["\\frac{a}{"]


def _chapters(*stems: str) -> list[dict]:
    return [{"stem": stem, "title": f"{stem[:2]} · T{stem[:2]}"} for stem in stems]


def test_pager_links_previous_and_next_and_leaves_them_out_at_the_ends():
    chapters = _chapters("03_a", "07_b", "20_c")  # any numbers: the site follows the executed chapters
    first, middle, last = (build_site.pager(chapters, i) for i in range(3))
    assert 'rel="prev"' not in first and 'rel="next" href="07_b.html"' in first
    assert 'rel="prev" href="03_a.html"' in middle and 'rel="next" href="20_c.html"' in middle
    assert 'rel="prev" href="07_b.html"' in last and 'rel="next"' not in last


def test_every_page_gets_the_chapter_list_with_itself_marked_and_the_pager_twice():
    chapters = _chapters("00_a", "01_b")
    body = ('<html><head></head><body class="jp-Notebook" data-x="1"><main><!--workbook-sidebar-->'
            '<!--workbook-pager--><h1 id="T">T</h1><!--workbook-pager--></main></body></html>')
    page = build_site.frame_page(body, chapters, 1)
    assert "workbook-book" in page and page.count('class="workbook-pager"') == 2
    assert page.count("<li><a ") == 2 and '<a href="01_b.html" aria-current="page">' in page
    assert 'id="workbook-search"' in page and '<script src="search_index.js">' in page


def test_search_sections_split_a_page_at_its_headings_with_plain_text_and_anchors():
    body = ('<style>h1 {}</style><main><h1 id="Intro">Intro<a class="anchor-link" href="#Intro">¶</a></h1>'
            '<p>Plain &amp; <b>bold</b> <math><mi>x</mi></math></p><script>var no = 1;</script>'
            '<h2 id="Second-part">Second part</h2><pre>loss 0.25</pre></main>')
    assert build_site.search_sections(body) == [
        {"h": "Intro", "a": "Intro", "t": "Plain & bold"},
        {"h": "Second part", "a": "Second-part", "t": "loss 0.25"},
    ]


def _read_index(site: Path) -> dict:
    text = (site / "search_index.js").read_text(encoding="utf-8")
    return json.loads(text.removeprefix("window.WORKBOOK_SEARCH = ").rstrip().removesuffix(";"))


def _word_only_in(index: dict, page: int) -> tuple[str, str]:
    """A word of a heading of chapter ``page`` that no section of any other chapter contains."""
    def words(s: dict) -> str:
        return f"{s['h']} {s['t']} {index['pages'][s['p']]['title']}".lower()

    elsewhere = " ".join(words(s) for s in index["sections"] if s["p"] != page)
    for section in index["sections"]:
        if section["p"] != page:
            continue
        for word in re.findall(r"[A-Za-z]{7,}", section["h"]):
            if word.lower() not in elsewhere:
                return word, section["a"]
    raise AssertionError(f"no heading word unique to {index['pages'][page]['page']}")


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
    assert all(c["tex_left"] == 0 for c in chapters), f"formulas left as TeX: {chapters}"

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
            for chapter in chapters:  # formulas are drawn by the browser's MathML engine
                page.goto((site / f"{chapter['stem']}.html").as_uri())
                formulas = page.locator(".jp-RenderedMarkdown math")
                assert formulas.count() >= chapter["formulas"] > 0 or chapter["formulas"] == 0
                if chapter["formulas"]:
                    formula = formulas.first
                    formula.scroll_into_view_if_needed()
                    box = formula.bounding_box()
                    assert box and box["width"] > 0 and box["height"] > 0, f"{chapter['stem']}: a formula did not render"
                    formula.locator("xpath=..").screenshot(path=str(SHOTS / "site_formula.png"))
                assert page.locator(".tex-source").count() == 0, f"{chapter['stem']}: a formula was left as TeX"
            _read_like_a_book(page, site, chapters)
            assert requested == [], f"the site requested {requested[:3]} from the network"
        finally:
            browser.close()


def _read_like_a_book(page, site: Path, chapters: list[dict]) -> None:
    """The chapter list, "next" / "previous" and the offline search, clicked through in the browser."""
    from playwright.sync_api import expect

    page.goto((site / f"{chapters[0]['stem']}.html").as_uri())
    sidebar = page.locator(".workbook-sidebar")
    expect(sidebar.locator(".workbook-chapters a")).to_have_count(len(chapters))
    expect(sidebar.locator('a[aria-current="page"]')).to_have_text(chapters[0]["title"])
    box = sidebar.bounding_box()
    content = page.locator("main .jp-Cell").first.bounding_box()
    assert box and content and box["x"] + box["width"] <= content["x"] + 1, "the chapter list covers the chapter"
    assert page.locator(".workbook-prev").count() == 0
    if len(chapters) < 2:
        assert page.locator(".workbook-next").count() == 0
        return
    page.locator(".workbook-next").first.click()
    page.wait_for_url(f"**/{chapters[1]['stem']}.html")
    expect(page.locator('.workbook-sidebar a[aria-current="page"]')).to_have_text(chapters[1]["title"])
    page.locator(".workbook-prev").last.click()  # the pager below the chapter
    page.wait_for_url(f"**/{chapters[0]['stem']}.html")

    word, anchor = _word_only_in(_read_index(site), 1)
    search = page.locator("#workbook-search")
    search.fill("zzzqqxnotaword")
    expect(page.locator("#workbook-results")).to_contain_text("No section contains")
    search.fill(word)
    results = page.locator("#workbook-results a.workbook-result")
    expect(results.first).to_be_visible()
    hrefs = results.evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert all(h.startswith(f"{chapters[1]['stem']}.html") for h in hrefs), (word, hrefs)
    assert f"{chapters[1]['stem']}.html#{anchor}" in hrefs, (word, anchor, hrefs)
    page.screenshot(path=str(SHOTS / "site_search.png"))
    results.first.click()
    page.wait_for_url(f"**/{chapters[1]['stem']}.html#*")
    target = page.evaluate("() => { const id = location.hash.slice(1); "
                           "return !!(document.getElementById(id) || document.getElementById(decodeURIComponent(id))); }")
    assert target, f"the search result {page.url} points at no heading"
