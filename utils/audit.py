"""The audit of the five source documents: their headings, and which errata rows name them.

Chapter 19 and ``tests/test_audit.py`` both read the documents' headings from the text files
in ``../shared/seeds/`` so that the audit table (``data/audit.csv``) can be checked against the
documents themselves. Import it as ``from utils import audit`` (it is not re-exported by
``utils``; it needs nothing heavier than the standard library).

A heading is either a Markdown heading (``#`` … ``######``) outside a code fence, or a line that
is only a bold, numbered label such as ``**2.1 AI大模型的定义与特点**`` or
``**Q1: 如何选择合适的预训练模型？**`` (documents 002–004 number some sections that way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Iterable, Mapping

__all__ = [
    "Heading",
    "document_headings",
    "heading_copies",
    "copy_note",
    "faq_questions",
    "section_names_heading",
    "count_errata_rows",
    "notebook_headings",
    "shown_in_exists",
    "refresh_audit_counts",
    "term_used",
]

# A bold line counts as a heading only when it is numbered ("2.1 …", "9.3 …") or a "Q1:" question.
_BOLD_HEADING = re.compile(r"^\*\*\s*((?:\d+(?:\.\d+)*\.?\s*|Q\d+\s*[:：]).+?)\s*\*\*\s*$")
_MD_HEADING = re.compile(r"^(#{1,6})\s*(.*?)\s*#*\s*$")
# A bold heading has no Markdown level; it sits below every Markdown heading.
BOLD_LEVEL = 7
# Characters that may stand next to a heading's text inside an errata ``section`` field.
_EDGE = set(" \t;；/()（）,，:：、\"'")
_FAQ_MARKERS = ("常见问题与解答", "FAQ")
# "(first copy)", "(second copy; flowchart)", "(both copies)", "(all three copies)" after a heading in an errata field.
_COPY_NOTE = re.compile(r"^\s*[(（]([^()（）]*)[)）]")
_ORDINALS = {"first": 1, "second": 2, "third": 3}
# A document number written in front of a heading ("004 5.2 源代码详细实现"): the heading is that document's.
_DOC_PREFIX = re.compile(r"(00[0-4])\s*§?\s*$")


@dataclass(frozen=True)
class Heading:
    """One heading as printed: its level (1–6 for Markdown, 7 for a bold label), text and line."""

    level: int
    text: str
    line: int


def _check_path(path: str | PathLike[str], what: str) -> Path:
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"{what} must be a path (str or pathlib.Path), got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} is not a file; pass the path of an existing file")
    return p


def document_headings(path: str | PathLike[str]) -> list[Heading]:
    """Every heading of one source document, in order, duplicates included.

    Lines inside ````` fences (code, Mermaid) are skipped, so ``# 训练模型`` comments in the
    listings are not headings.

    Example:
        >>> hs = document_headings("../shared/seeds/003_76b3dc15b10e5bda.txt")  # doctest: +SKIP
        >>> hs[0].text, hs[1].text  # doctest: +SKIP
        ('1. 背景介绍', '2. 核心概念与联系')
    """
    p = _check_path(path, "path")
    headings: list[Heading] = []
    in_fence = False
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        md = _MD_HEADING.match(line)
        if md and md.group(2):
            headings.append(Heading(len(md.group(1)), md.group(2), number))
            continue
        bold = _BOLD_HEADING.match(line.strip())
        if bold:
            headings.append(Heading(BOLD_LEVEL, bold.group(1).strip(), number))
    return headings


def faq_questions(headings: Iterable[Heading]) -> list[str]:
    """The question headings (ending in ？ or ?) below any 常见问题与解答 / FAQ heading.

    A heading belongs to an FAQ section until the next heading of the same or a higher level.

    Example:
        >>> hs = [Heading(2, "9. 附录：常见问题与解答", 1), Heading(7, "9.1 如何训练？", 2),
        ...       Heading(2, "10. 扩展阅读", 3), Heading(7, "10.1 为什么？", 4)]
        >>> faq_questions(hs)
        ['9.1 如何训练？']
    """
    questions: list[str] = []
    faq_level: int | None = None
    for h in headings:
        if not isinstance(h, Heading):
            raise TypeError(f"faq_questions needs Heading objects (from document_headings), got {type(h).__name__}")
        if faq_level is not None and h.level <= faq_level:
            faq_level = None
        if any(marker in h.text for marker in _FAQ_MARKERS):
            faq_level = h.level
            continue
        if faq_level is not None and h.text.rstrip().endswith(("？", "?")):
            questions.append(h.text)
    return questions


def heading_copies(path: str | PathLike[str]) -> list[tuple[str, str]]:
    """The audit rows of one document: ``(heading, copies)`` with one row per *distinct text* of a heading.

    A document may print a section twice (document 001 prints most of its sections in two copies). The
    text of a copy is everything from its heading to the next heading of the same or a higher level
    (sub-sections included; for a bold label, to the next heading of any level), compared with spaces
    collapsed. Copies with the same text share a row; copies whose text differs get a row each, so each
    is read. ``copies`` lists the copy numbers in printed order, ``"1"`` for a heading printed once and
    e.g. ``"1;2;3"`` for three identical copies.

    Example:
        >>> rows = heading_copies("../shared/seeds/001_722433152d6653c6.txt")  # doctest: +SKIP
        >>> [r for r in rows if r[0] == "5.4 运行结果展示"]  # doctest: +SKIP
        [('5.4 运行结果展示', '1'), ('5.4 运行结果展示', '2')]
    """
    p = _check_path(path, "path")
    lines = p.read_text(encoding="utf-8").splitlines()
    headings = document_headings(p)
    bodies: dict[str, list[str]] = {}
    order: list[str] = []
    for i, h in enumerate(headings):
        end = len(lines)
        for later in headings[i + 1:]:
            if later.level <= h.level or h.level == BOLD_LEVEL:
                end = later.line - 1
                break
        body = re.sub(r"\s+", " ", "\n".join(lines[h.line:end])).strip()
        if h.text not in bodies:
            order.append(h.text)
            bodies[h.text] = []
        bodies[h.text].append(body)
    rows: list[tuple[str, str]] = []
    for text in order:
        groups: dict[str, list[int]] = {}
        for number, body in enumerate(bodies[text], start=1):
            groups.setdefault(body, []).append(number)
        for numbers in groups.values():
            rows.append((text, ";".join(str(n) for n in numbers)))
    return rows


def copy_note(section: str, heading: str) -> set[int] | None:
    """Which copies of ``heading`` an errata ``section`` field means, or None for every copy.

    The field says so in brackets right after the heading: ``(first copy)``, ``(second copy; flowchart)``;
    ``(both copies)``, ``(all three copies)`` or no note mean every copy.

    Example:
        >>> copy_note("5.2 源代码详细实现 (first copy); 5.4 运行结果展示", "5.2 源代码详细实现")
        {1}
        >>> copy_note("5.2 源代码详细实现 (first copy); 5.4 运行结果展示", "5.4 运行结果展示") is None
        True
    """
    if not isinstance(section, str) or not isinstance(heading, str):
        raise TypeError("section and heading must both be str")
    if not heading.strip():
        raise ValueError("heading is empty; pass a heading's text as printed")
    copies: set[int] = set()
    start = section.find(heading)
    while start != -1:
        note = _COPY_NOTE.match(section[start + len(heading):])
        words = re.findall(r"[a-z]+", note.group(1).lower()) if note else []
        if "copy" not in words and "copies" not in words or {"both", "all"} & set(words):
            return None
        copies |= {_ORDINALS[w] for w in words if w in _ORDINALS}
        start = section.find(heading, start + 1)
    return copies or None


def section_names_heading(section: str, heading: str) -> bool:
    """True if an errata ``section`` field names ``heading`` as a whole (not inside a longer title).

    The field may list several headings (``"2.2.4 激活函数; 2.3.4 激活函数"``), a path
    (``"附录：常见问题与解答 / 3. 如何优化大模型训练过程？"``) and notes in brackets; the heading must
    appear with a separator (space, ``;``, ``/``, ``,``, brackets, colon) or the field's edge on both sides.

    Example:
        >>> section_names_heading("2.2.4 激活函数; 2.3.4 激活函数", "2.3.4 激活函数")
        True
        >>> section_names_heading("5.2 源代码详细实现和代码解读", "5.2 源代码详细实现")
        False
    """
    if not isinstance(section, str) or not isinstance(heading, str):
        raise TypeError("section and heading must both be str")
    if not heading.strip():
        raise ValueError("heading is empty; pass a heading's text as printed")
    start = section.find(heading)
    while start != -1:
        end = start + len(heading)
        before_ok = start == 0 or section[start - 1] in _EDGE
        after_ok = end == len(section) or section[end] in _EDGE
        if before_ok and after_ok:
            return True
        start = section.find(heading, start + 1)
    return False


def count_errata_rows(rows: Iterable[Mapping[str, str]], document: str, heading: str, copies: str = "") -> int:
    """How many errata rows name ``heading`` of ``document`` (``"000"``–``"004"``) in their section.

    A row counts for its own document, and for another document whose number stands right before the
    heading in its field (``"…; 004 5.2 源代码详细实现"``). With ``copies`` (an audit row's ``"2"`` or
    ``"1;2"``) a row that names other copies only (``"(first copy)"``) does not count.

    Example:
        >>> rows = [{"document": "000", "section": "4.2.1 均方误差（MSE）; 4.5.1 均方误差（MSE）示例"}]
        >>> count_errata_rows(rows, "000", "4.5.1 均方误差（MSE）示例")
        1
        >>> rows = [{"document": "001", "section": "5.4 运行结果展示 (second copy)"}]
        >>> count_errata_rows(rows, "001", "5.4 运行结果展示", copies="1"), count_errata_rows(rows, "001", "5.4 运行结果展示", copies="2")
        (0, 1)
    """
    if not (isinstance(document, str) and len(document) == 3 and document.isdigit()):
        raise ValueError(f"document must be a three-digit string such as '000', got {document!r}")
    if not isinstance(copies, str) or (copies and not re.fullmatch(r"\d(;\d)*", copies)):
        raise ValueError(f"copies must be '' or copy numbers such as '2' or '1;2', got {copies!r}")
    wanted = {int(c) for c in copies.split(";")} if copies else None
    count = 0
    for row in rows:
        if "document" not in row or "section" not in row:
            raise ValueError("each errata row needs 'document' and 'section' fields (read data/errata.csv)")
        if not _names_for(row["section"], heading, row["document"], document):
            continue
        meant = copy_note(row["section"], heading)
        if wanted is None or meant is None or meant & wanted:
            count += 1
    return count


def _names_for(section: str, heading: str, row_document: str, document: str) -> bool:
    # Does the field name the heading as a heading of ``document``?
    start = section.find(heading)
    while start != -1:
        end = start + len(heading)
        if (start == 0 or section[start - 1] in _EDGE) and (end == len(section) or section[end] in _EDGE):
            prefix = _DOC_PREFIX.search(section[:start])
            if (prefix.group(1) if prefix else row_document) == document:
                return True
        start = section.find(heading, start + 1)
    return False


def notebook_headings(path: str | PathLike[str]) -> list[str]:
    """The Markdown headings of a notebook's Markdown cells, in order (text after the ``#`` marks).

    Example:
        >>> "Summary" in notebook_headings("chapters/02_neural_networks_and_activations.ipynb")  # doctest: +SKIP
        True
    """
    import json

    p = _check_path(path, "notebook")
    cells = json.loads(p.read_text(encoding="utf-8")).get("cells", [])
    found: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        in_fence = False
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
            if m and not in_fence:
                found.append(m.group(1))
    return found


def _normalise(text: str) -> str:
    text = text.replace("·", " ").replace("`", "")
    return re.sub(r"\s+", " ", text).strip().casefold()


def shown_in_exists(ref: str, headings: Iterable[str]) -> bool:
    """True if ``ref`` (the text after ``NN §`` in a ``shown_in`` field) names one of ``headings``.

    A heading matches when it starts with ``ref``, ignoring case, repeated spaces, backticks and the
    ``·`` of numbered headings; a note in brackets at the end of ``ref`` (``"(pruning timing cell)"``)
    is ignored when the full text does not match.

    Example:
        >>> shown_in_exists("A sourced timeline", ["A sourced timeline (001 §1 大模型的发展历程)"])
        True
        >>> shown_in_exists("5 The FAQ's other advice (pruning cell)", ["5 · The FAQ's other advice"])
        True
        >>> shown_in_exists("Summary of nothing", ["Summary"])
        False
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"ref must be a non-empty heading text, got {ref!r}")
    normalised = [_normalise(h) for h in headings]
    candidates = [_normalise(ref)]
    stripped = re.sub(r"\s*\([^()]*\)\s*$", "", ref)
    if stripped and stripped != ref:
        candidates.append(_normalise(stripped))
    return any(h.startswith(c) for c in candidates for h in normalised)


def refresh_audit_counts(audit_csv: str | PathLike[str], errata_csv: str | PathLike[str]) -> int:
    """Recompute the ``errata_rows`` column of ``audit_csv`` from ``errata_csv``; return rows changed.

    Run it after adding errata rows: ``python -m utils.audit`` (from the repository root). The file is
    rewritten atomically (temporary file beside it, fsync, ``os.replace``).

    Example:
        >>> refresh_audit_counts("data/audit.csv", "data/errata.csv")  # doctest: +SKIP
        0
    """
    import csv
    import io
    import os
    import tempfile

    audit_path = _check_path(audit_csv, "audit_csv")
    errata_path = _check_path(errata_csv, "errata_csv")
    with errata_path.open(encoding="utf-8", newline="") as f:
        errata = list(csv.DictReader(f))
    with audit_path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = list(reader)
    if "errata_rows" not in fields:
        raise ValueError(f"{audit_path} has no 'errata_rows' column (columns: {fields})")
    changed = 0
    for row in rows:
        count = str(count_errata_rows(errata, row["document"], row["section"], row.get("copies", "")))
        if row["errata_rows"] != count:
            row["errata_rows"] = count
            changed += 1
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    fd, tmp = tempfile.mkstemp(dir=audit_path.parent, prefix=".audit.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, audit_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return changed


_GENERIC_TAIL = re.compile(r"\s+(layer|layers|function|loss function|system|systems|set|sets|rate|learning|computing|algorithm)$")


def _term_variants(en: str) -> set[str]:
    en = en.casefold()
    base = re.sub(r"\s*\([^)]*\)", "", en).strip()
    forms = {en, base} | {b.strip() for b in re.findall(r"\(([^)]*)\)", en)}
    forms |= {x.strip() for x in re.split(r"[/;,]", base) if x.strip()}
    out: set[str] = set()
    for v in forms:
        for w in (v, v.replace("-", " "), v.replace(" ", "-"), v.replace("isation", "ization"),
                  v.replace("ization", "isation"), v.replace("data set", "dataset"), v.replace("–", "-")):
            out |= {w, w + "s", w + "es"}
            tail = _GENERIC_TAIL.sub("", w)
            if tail != w and len(tail) >= 5:
                out.add(tail)
    return {v for v in out if len(v) >= 3}


def term_used(text: str, zh: str, en: str) -> bool:
    """True if ``text`` (a chapter's cells) uses a glossary term: its Chinese as printed, or its English.

    The English may appear in a common variant: without the bracketed abbreviation or with it alone,
    ``-``/space, ``-isation``/``-ization``, a plural, or without a generic last word (``layer``,
    ``function``, ``system``). English matches whole words only, ignoring case.

    Example:
        >>> term_used("the convolutional block", "卷积层", "convolutional layer")
        True
        >>> term_used("a pooling step", "梯度消失", "vanishing gradient")
        False
    """
    if not all(isinstance(x, str) for x in (text, zh, en)):
        raise TypeError("text, zh and en must all be str")
    if not (zh.strip() or en.strip()):
        raise ValueError("pass the term's Chinese or English text")
    low = text.casefold()
    if zh.strip() and zh.casefold() in low:
        return True
    return any(re.search(r"(?<![a-z])" + re.escape(v) + r"(?![a-z])", low) for v in _term_variants(en))


if __name__ == "__main__":  # python -m utils.audit
    _root = Path(__file__).resolve().parent.parent
    print(refresh_audit_counts(_root / "data" / "audit.csv", _root / "data" / "errata.csv"), "rows changed")
