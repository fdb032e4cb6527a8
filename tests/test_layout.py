"""The house rule for `utils/`: each module one concern a reader can finish in one sitting.

No module over 500 lines and no function (or method) over 100 lines, counted from its ``def``
(decorators left out) to its last line, docstring included. A failure names the file, the function and
its length. Modules and functions that break the rule today are listed in ``KNOWN_OFFENDERS`` with the
reason they are allowed for now; the list may only shrink: an entry that no longer breaks the rule
fails too, so that it is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

UTILS = ROOT / "utils"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100

# Allowed for now, each with its reason. The key is the module (path under utils/) or
# "module:qualified.function_name". Remove an entry once its split lands (a stale entry fails the test).
# Line counts as measured when the list was written are in the comments.
KNOWN_OFFENDERS: dict[str, str] = {
}


def _modules() -> list[Path]:
    return sorted(p for p in UTILS.rglob("*.py") if "__pycache__" not in p.parts)


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, lines)`` of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def _offenders() -> dict[str, int]:
    found = {}
    for path in _modules():
        key = path.relative_to(UTILS).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found[key] = lines
        for name, length in _functions(ast.parse(text, filename=str(path))):
            if length > MAX_FUNCTION_LINES:
                found[f"{key}:{name}"] = length
    return found


def test_the_size_rule_counts_functions_methods_and_nested_functions():
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n            pass\n\n\ndef f():\n    pass\n")
    assert dict(_functions(tree)) == {"A.m": 3, "A.m.inner": 2, "f": 2}


def test_every_known_offender_has_a_reason():
    assert all(reason.strip() for reason in KNOWN_OFFENDERS.values())


def test_no_module_over_500_lines_and_no_function_over_100_lines_in_utils():
    found = _offenders()
    new = {key: n for key, n in found.items() if key not in KNOWN_OFFENDERS}
    assert not new, "too long (split by concern, see README 'For contributors'): " + "; ".join(
        f"utils/{key} has {n} lines (limit {MAX_FUNCTION_LINES if ':' in key else MAX_MODULE_LINES})"
        for key, n in sorted(new.items()))


def test_known_offenders_are_removed_once_they_meet_the_rule():
    found = _offenders()
    stale = sorted(key for key in KNOWN_OFFENDERS if key not in found)
    if stale:
        pytest.fail("now within the limits, remove from KNOWN_OFFENDERS in tests/test_layout.py: " + ", ".join(stale))
