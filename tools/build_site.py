"""Render the executed chapters in build/executed/ into a static, offline HTML site in build/site/.

Usage: ``make site`` (after ``make test``, which keeps the executed copies), or
``.venv/bin/python tools/build_site.py [--executed DIR] [--out DIR]``.

- One page per chapter (nbconvert's ``lab`` template, images embedded as data URIs) and an index
  listing each chapter's title, one-line summary and run time (from papermill's metadata).
- Widget panels show their saved static output: the outputs kept in the notebook's widget state
  (the panel's Output widget) replace the live widget, under the panel's title and control values.
- Mermaid diagrams are pre-rendered to SVG by JupyterLab's own Mermaid renderer in headless Chromium
  (the same renderer learners see in JupyterLab), so the pages load nothing at view time; nbconvert's
  template would import mermaid.js from a CDN. Without Chromium the diagram source is shown as text.
- Formulas are converted to MathML when the page is built (latex2mathml), which browsers draw
  natively, so no MathJax is needed: the template's require.js, MathJax and Mermaid CDN tags are left
  out and no script or stylesheet loads from the network. A formula latex2mathml cannot convert is
  shown as its TeX source and counted in the build's summary.
- tqdm progress bars (saved in the widget state when papermill ran the chapter) are shown as a static
  bar with their final text, not as a panel.
- The site reads like a book: every page has the chapter list beside it (the current chapter marked),
  previous / next links above and below the chapter, and a search box. The search runs in the page
  (``search.js``, hand-written in tools/site_search.js) over ``search_index.js``: the heading, anchor and
  text of every section of every chapter, written when the site is built. It is a script rather than
  JSON so that pages opened from disk (``file://``, where fetch is refused) can read it.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed"
SITE = ROOT / "build" / "site"
CHROMIUM = Path(os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium"))
MERMAID_FENCE = re.compile(r"```mermaid[^\n]*\n(.*?)```", re.DOTALL)
MERMAID_HTML = re.compile(r'<div class="jp-Mermaid"><pre class="mermaid">\n(.*?)\n</pre></div>', re.DOTALL)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")

# The book's frame, shared by the chapter pages and the index: a chapter list with a search box on
# the left (on top on narrow screens), previous / next links above and below each chapter.
SIDEBAR_CSS = """
.workbook-sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 17em; overflow-y: auto; box-sizing: border-box;
  padding: 12px; border-right: 1px solid #ddd; background: #fafafa; font-family: sans-serif; font-size: 13px; z-index: 10; }
.workbook-sidebar h2 { font-size: 15px; margin: 0 0 8px; }
.workbook-sidebar ol { padding-left: 0; list-style: none; margin: 8px 0; }
.workbook-sidebar li { margin: 3px 0; }
.workbook-sidebar a { text-decoration: none; color: #1a56a0; }
.workbook-sidebar a[aria-current="page"] { font-weight: bold; color: #000; }
#workbook-search { width: 100%; box-sizing: border-box; padding: 4px 6px; font-size: 13px; }
#workbook-results li { border-bottom: 1px solid #eee; padding: 3px 0; }
.workbook-snippet { color: #555; font-size: 12px; }
body.workbook-book { margin-left: 17em; }
.workbook-pager { display: flex; justify-content: space-between; font-family: sans-serif; padding: 8px 16px;
  border-bottom: 1px solid #ddd; }
.workbook-pager + * { margin-top: 0; }
@media (max-width: 800px) { .workbook-sidebar { position: static; width: auto; border-right: none; }
  body.workbook-book { margin-left: 0; } }
"""

# nbconvert's lab template without the three script tags that would load from a CDN.
TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style>
.workbook-nav { font-family: sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd; }
.workbook-panel-static { border: 1px solid #ccc; border-radius: 4px; padding: 4px 8px; }
.jp-RenderedMermaid img { max-width: 100%; }
.workbook-progress { font-family: monospace; font-size: 12px; }
.workbook-progress progress { width: 16em; vertical-align: middle; }
math[display="block"] { margin: 0.6em 0; overflow-x: auto; }
.tex-source { font-family: monospace; color: #555; }
{{ SIDEBAR_CSS }}
</style>{% endblock extra_css %}
{% block body_header %}{{ super() }}<!--workbook-sidebar--><!--workbook-pager-->{% endblock body_header %}
{% block body_footer %}<!--workbook-pager-->{{ super() }}{% endblock body_footer %}
""".replace("{{ SIDEBAR_CSS }}", SIDEBAR_CSS)

INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Large Models Workbook</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 6px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }}
td.time {{ text-align: right; white-space: nowrap; }}
{css}
</style></head><body class="workbook-book">
{sidebar}
<h1>Large Models Workbook</h1>
<p>The executed chapters as static pages: every output is the one the chapter produced when it last ran
(<code>make test</code>). To change a parameter or move a widget, open the chapter in JupyterLab (<code>make lab</code>).</p>
<table><thead><tr><th>#</th><th>chapter</th><th>what it is about</th><th>run time</th></tr></thead><tbody>
{rows}
</tbody></table>
<p>Built {built} from {count} executed chapters.</p>
</body></html>
"""


def chapter_info(nb, stem: str) -> dict:
    """Title, one-line summary and run time of an executed chapter."""
    first = nb.cells[0].source if nb.cells and nb.cells[0].cell_type == "markdown" else ""
    lines = first.splitlines()
    title = next((line.lstrip("#").strip() for line in lines if line.startswith("# ")), stem)
    paragraph = []
    for line in lines[1:]:
        line = line.strip()
        # a heading, list, table, HTML or a line in bold alone ("**Learning goals**") ends the paragraph
        block = line.startswith(("#", "-", "|", "<")) or re.fullmatch(r"\*\*[^*]+\*\*:?", line)
        if line and not block:
            paragraph.append(line)
        elif paragraph:
            break
    text = re.sub(r"\*\*|`", "", " ".join(paragraph))  # plain text: no Markdown bold or code marks
    summary = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0] if text else ""
    duration = nb.metadata.get("papermill", {}).get("duration")
    return {"title": title, "summary": summary, "seconds": duration}


def _model(state: dict, ref: str) -> dict:
    return state.get(ref.removeprefix("IPY_MODEL_"), {}).get("state", {})


def _progress_bar(model_id: str, state: dict) -> str | None:
    """A tqdm bar (HBox of HTML, progress, HTML) as static HTML with its final text, or None."""
    s = _model(state, model_id)
    children = [state.get(c.removeprefix("IPY_MODEL_"), {}) for c in s.get("children", [])]
    bars = [c.get("state", {}) for c in children if c.get("model_name") in PROGRESS_MODELS]
    if state.get(model_id.removeprefix("IPY_MODEL_"), {}).get("model_name") != "HBoxModel" or len(bars) != 1:
        return None
    bar = bars[0]
    texts = [c.get("state", {}).get("value", "") for c in children if c.get("model_name") == "HTMLModel"]
    left, right = (texts + ["", ""])[:2]
    low, high, value = bar.get("min", 0), bar.get("max", 1), bar.get("value", 0)
    fraction = (value - low) / (high - low) if high > low else 1.0
    return (f"<div class='workbook-progress'>{left} <progress max='1' value='{fraction:.4f}'></progress> "
            f"{right}</div>")


def static_panel_outputs(view: dict, state: dict) -> list[dict]:
    """The saved static form of one displayed widget: title, control values, then its Output's outputs."""
    progress = _progress_bar(view["model_id"], state)
    if progress is not None:
        return [{"output_type": "display_data", "metadata": {}, "data": {"text/html": progress}}]
    heading, controls, outputs = [], [], []

    def walk(ref: str) -> None:
        entry = state.get(ref.removeprefix("IPY_MODEL_"), {})
        name, s = entry.get("model_name", ""), entry.get("state", {})
        if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
            for child in s.get("children", []):
                walk(child)
        elif name == "HTMLModel":
            heading.append(s.get("value", ""))
        elif name == "OutputModel":
            outputs.extend(s.get("outputs", []))
        elif s.get("description") and name != "ButtonModel" and ("value" in s or "index" in s):
            labels = s.get("_options_labels")
            if labels is not None and isinstance(s.get("index"), int) and 0 <= s["index"] < len(labels):
                value = labels[s["index"]]  # dropdowns and selection sliders keep an index
            else:
                value = s.get("value")
            controls.append(f"{html.escape(str(s['description']))} = <code>{html.escape(str(value))}</code>")

    walk(view["model_id"])
    if not (heading or controls or outputs):
        return []
    note = ("<div class='workbook-panel-static'>" + "".join(heading)
            + (f"<p>Controls: {', '.join(controls)}.</p>" if controls else "")
            + "<p><em>Interactive panel, shown as saved; open the chapter in JupyterLab to move the controls.</em></p>"
            + "</div>")
    return [{"output_type": "display_data", "metadata": {}, "data": {"text/html": note}}] + outputs


def freeze_widgets(nb) -> int:
    """Replace every widget view by its saved static outputs; drop the widget state. Returns the number
    of panels frozen (progress bars are frozen too, but not counted)."""
    import nbformat

    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    frozen = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        new = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                new.append(output)
                continue
            static = static_panel_outputs(view, state)
            if static:
                frozen += "workbook-progress" not in static[0]["data"]["text/html"]
                new.extend(nbformat.from_dict(o) for o in static)
            else:  # no saved state: keep the plain-text repr, minus the live view
                data = {k: v for k, v in output["data"].items() if k != WIDGET_VIEW}
                if data:
                    new.append(nbformat.from_dict({**output, "data": data}))
        cell.outputs = new
    nb.metadata.pop("widgets", None)
    return frozen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_mermaid(sources: list[str]) -> dict[str, str]:
    """``{source: data URI of the SVG}`` drawn by JupyterLab's Mermaid renderer in headless Chromium."""
    if not sources:
        return {}
    if not CHROMIUM.exists():
        print(f"warning: {CHROMIUM} not found: Mermaid diagrams stay as source text "
              "(install Debian's chromium, as .ci/run does)", file=sys.stderr)
        return {}
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "root").mkdir()
        settings = tmp / "home" / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        text = "\n\n".join(f"## diagram {i}\n\n```mermaid\n{s}\n```" for i, s in enumerate(sources))
        (tmp / "root" / "diagrams.md").write_text(text + "\n", encoding="utf-8")
        port, token = _free_port(), secrets.token_hex(16)
        env = dict(os.environ, HOME=str(tmp / "home"), JUPYTER_CONFIG_DIR=str(tmp / "home" / ".jupyter"),
                   JUPYTER_RUNTIME_DIR=str(tmp / "home" / "runtime"), JUPYTER_PREFER_ENV_PATH="1")
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'root'}",
               "--LabApp.expose_app_in_browser=True"] + (["--allow-root"] if os.geteuid() == 0 else [])
        with open(tmp / "jupyterlab.log", "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 90
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
                    try:
                        with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                            break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise TimeoutError("JupyterLab did not start within 90 s") from None
                        time.sleep(0.5)
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(f"{base}/lab/workspaces/site/tree?reset&token={token}")
                    page.wait_for_function("() => !!window.jupyterapp", timeout=120_000)
                    page.evaluate("""() => window.jupyterapp.restored.then(() => window.jupyterapp.commands.execute(
                        'docmanager:open', {path: 'diagrams.md', factory: 'Markdown Preview'}))""")
                    page.wait_for_function(
                        "(n) => document.querySelectorAll('.jp-RenderedMermaid img, .jp-RenderedMermaid-error').length >= n",
                        arg=len(sources), timeout=120_000, polling=250)
                    images = page.eval_on_selector_all(
                        ".jp-RenderedMarkdown .jp-RenderedMermaid",
                        "els => els.map(e => { const i = e.querySelector('img'); return i ? i.src : null; })")
                    browser.close()
            finally:
                try:
                    urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}",
                                                                  method="POST"), timeout=5)
                    proc.wait(timeout=30)
                except Exception:
                    proc.terminate()
                    proc.wait(timeout=10)
    return {s: uri for s, uri in zip(sources, images) if uri}


def _site_exporter(template: str):
    """nbconvert's HTML exporter whose Markdown renderer writes formulas as MathML.

    Math is found by nbconvert's own Markdown parser (so ``$`` in code spans and ``\\$`` stay text);
    ``stats`` counts converted and unconverted formulas."""
    import jinja2
    from latex2mathml.converter import convert
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    stats = {"formulas": 0, "tex_left": []}
    # latex2mathml writes aligned/align as a row with literal "&" and a line break browsers ignore;
    # as an array it becomes a real table (mtable). MathML Core aligns cells by CSS, not columnalign.
    multiline = re.compile(r"\\begin\{(aligned|align\*?|split)\}(.*?)\\end\{\1\}", re.DOTALL)

    def mathml(tex: str, display: str, fallback: str) -> str:
        tex = multiline.sub(lambda m: "\\begin{array}{rlrlrl}" + m.group(2) + "\\end{array}", tex)
        try:
            out = convert(tex.strip(), display=display)
            out = re.sub(r'columnalign="(left|right|center)"', r'columnalign="\1" style="text-align: \1"', out)
        except Exception:  # latex2mathml raises its own exception types and sometimes plain ones
            stats["tex_left"].append(tex.strip())
            return f'<span class="tex-source" title="formula shown as TeX">{fallback}</span>'
        stats["formulas"] += 1
        return out

    class MathMLRenderer(IPythonRenderer):
        def block_math(self, body: str) -> str:
            return mathml(body, "block", super().block_math(body))

        def latex_environment(self, name: str, body: str) -> str:
            tex = f"\\begin{{{name}}}{body}\\end{{{name}}}"
            return mathml(tex, "block", super().latex_environment(name, body))

        def inline_math(self, body: str) -> str:
            return mathml(body, "inline", super().inline_math(body))

    class SiteExporter(HTMLExporter):
        @jinja2.pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            renderer = MathMLRenderer(
                escape=False, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
                path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
                **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

    exporter = SiteExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"site.html.j2": template})],
                            template_file="site.html.j2")
    return exporter, stats


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.0f} s"


SECTION_HEADING = re.compile(r'<h([1-4])\b[^>]*\bid="([^"]*)"[^>]*>(.*?)</h\1>', re.DOTALL)
SEARCH_JS = Path(__file__).resolve().parent / "site_search.js"
SECTION_TEXT_LIMIT = 3000  # characters of each section kept in the search index


def sidebar(chapters: list[dict], current: str | None) -> str:
    """The chapter list beside every page, with the offline search box above it."""
    current_mark = ' aria-current="page"'
    items = "".join(
        f'<li><a href="{c["stem"]}.html"{current_mark if c["stem"] == current else ""}>'
        f'{html.escape(c["title"])}</a></li>' for c in chapters)
    return ('<nav class="workbook-sidebar" aria-label="Chapters">'
            '<h2><a href="index.html">Large Models Workbook</a></h2>'
            '<input type="search" id="workbook-search" placeholder="Search the book" aria-label="Search the book" '
            'autocomplete="off"><ol id="workbook-results"></ol>'
            f'<ol class="workbook-chapters">{items}</ol></nav>'
            '<script src="search_index.js"></script><script src="search.js"></script>')


def pager(chapters: list[dict], number: int) -> str:
    """Previous / all chapters / next links of chapter ``number`` (the position in ``chapters``)."""
    prev = chapters[number - 1] if number > 0 else None
    nxt = chapters[number + 1] if number + 1 < len(chapters) else None
    left = (f'<a class="workbook-prev" rel="prev" href="{prev["stem"]}.html">← {html.escape(prev["title"])}</a>'
            if prev else "<span></span>")
    right = (f'<a class="workbook-next" rel="next" href="{nxt["stem"]}.html">{html.escape(nxt["title"])} →</a>'
             if nxt else "<span></span>")
    return (f'<nav class="workbook-pager" aria-label="Previous and next chapter">{left}'
            f'<a href="index.html">all chapters</a>{right}</nav>')


def frame_page(body: str, chapters: list[dict], number: int) -> str:
    """Put a chapter page in the book's frame: the sidebar, and the pager above and below the chapter."""
    body = body.replace('<body class="jp-Notebook"', '<body class="jp-Notebook workbook-book"', 1)
    body = body.replace("<!--workbook-sidebar-->", sidebar(chapters, chapters[number]["stem"]), 1)
    return body.replace("<!--workbook-pager-->", pager(chapters, number))


def _plain(fragment: str) -> str:
    """Visible text of an HTML fragment: no tags, scripts, styles, formulas or heading anchors."""
    fragment = re.sub(r"<(script|style|math)\b.*?</\1>", " ", fragment, flags=re.DOTALL | re.IGNORECASE)
    fragment = re.sub(r'<a class="anchor-link".*?</a>', "", fragment, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def search_sections(body: str) -> list[dict]:
    """``[{"h": heading, "a": its anchor id, "t": text up to the next heading}]`` of a chapter page."""
    main = body.split("<main>", 1)[-1]
    marks = list(SECTION_HEADING.finditer(main))
    sections = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(main)
        sections.append({"h": _plain(mark.group(3)), "a": html.unescape(mark.group(2)),
                         "t": _plain(main[mark.end():end])[:SECTION_TEXT_LIMIT]})
    return sections


def write_search_files(out: Path, chapters: list[dict], bodies: list[str]) -> None:
    """The offline search: ``search_index.js`` (headings and text of every section, as a script so that
    pages opened from disk can read it) and ``search.js`` (the hand-written search, tools/site_search.js)."""
    pages = [{"page": f"{c['stem']}.html", "title": c["title"]} for c in chapters]
    sections = [{"p": number, **section} for number, body in enumerate(bodies) for section in search_sections(body)]
    index = json.dumps({"pages": pages, "sections": sections}, ensure_ascii=False, separators=(",", ":"))
    (out / "search_index.js").write_text(f"window.WORKBOOK_SEARCH = {index};\n", encoding="utf-8")
    shutil.copy(SEARCH_JS, out / "search.js")



def build(executed: Path = EXECUTED, out: Path = SITE) -> list[dict]:
    import nbformat

    paths = sorted(executed.glob("[0-9][0-9]_*.ipynb")) if executed.is_dir() else []
    if not paths:
        raise SystemExit(f"No executed chapters in {executed}: run `make test` first "
                         "(it executes every chapter and keeps the executed copies there).")
    notebooks = {p: nbformat.read(p, as_version=4) for p in paths}
    sources = sorted({m.strip() for nb in notebooks.values() for c in nb.cells if c.cell_type == "markdown"
                      for m in MERMAID_FENCE.findall(c.source)})
    diagrams = render_mermaid(sources)
    exporter, math = _site_exporter(TEMPLATE)
    tmp_out = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp_out, ignore_errors=True)
    tmp_out.mkdir(parents=True)
    chapters, bodies = [], []
    for path, nb in notebooks.items():
        info = chapter_info(nb, path.stem)
        panels = freeze_widgets(nb)
        before = math["formulas"], len(math["tex_left"])
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": info["title"]}})
        formulas, tex_left = math["formulas"] - before[0], len(math["tex_left"]) - before[1]

        def swap(match: re.Match) -> str:
            uri = diagrams.get(html.unescape(match.group(1)).strip())
            if uri is None:
                return match.group(0).replace('class="mermaid"', 'class="mermaid-source"')
            return (f'<div class="jp-Mermaid jp-RenderedMermaid"><img src="{html.escape(uri, quote=True)}" '
                    f'alt="diagram"></div>')

        body = MERMAID_HTML.sub(swap, body)
        bodies.append(body)
        chapters.append({**info, "stem": path.stem, "panels": panels, "formulas": formulas, "tex_left": tex_left})
        print(f"{path.stem}.html: {panels} widget panel(s) shown as saved output")
    for number, (chapter, body) in enumerate(zip(chapters, bodies)):
        body = frame_page(body, chapters, number)
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', body)
        if remote:
            raise RuntimeError(f"{chapter['stem']}.html: the page would load {remote[:3]} from the network")
        (tmp_out / f"{chapter['stem']}.html").write_text(body, encoding="utf-8")
    write_search_files(tmp_out, chapters, bodies)
    rows = "\n".join(
        f'<tr><td>{c["stem"][:2]}</td><td><a href="{c["stem"]}.html">{html.escape(c["title"])}</a></td>'
        f'<td>{html.escape(c["summary"])}</td><td class="time">'
        f'{_seconds(c["seconds"])}</td></tr>' for c in chapters)
    (tmp_out / "index.html").write_text(
        INDEX.format(rows=rows, css=SIDEBAR_CSS.replace("{", "{{").replace("}", "}}").format(),
                     sidebar=sidebar(chapters, None), built=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), count=len(chapters)),
        encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp_out.rename(out)
    missing = len(sources) - len(diagrams)
    left = math["tex_left"]
    print(f"{out}: {len(chapters)} chapters, {len(diagrams)} Mermaid diagram(s) pre-rendered"
          + (f", {missing} left as source" if missing else "")
          + f"; {math['formulas']} formula(s) as MathML" + (f", {len(left)} left as TeX" if left else ""))
    for tex in sorted(set(left))[:20]:
        print(f"  left as TeX (latex2mathml could not convert it): {tex[:120]}")
    return chapters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=EXECUTED, help="folder of executed chapters")
    parser.add_argument("--out", type=Path, default=SITE, help="folder to write the site into (replaced)")
    args = parser.parse_args(argv)
    build(args.executed, args.out)


if __name__ == "__main__":
    main()
