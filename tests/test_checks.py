"""Shared argument checks (utils/_checks.py), and one rule for every public utils function.

A flag given as a string (``per_user="False"``, ``log_y="no"``) is a non-empty string, hence true: it
would silently do the opposite of what was meant. Every public function refuses it through
``check_bool``; NumPy numbers are accepted wherever Python numbers are.
"""

import ast
from pathlib import Path

import numpy as np
import pytest

from utils._checks import ArgumentTypeError, check_bool, check_int, check_real

UTILS = Path(__file__).resolve().parent.parent / "utils"


def _public_flags():
    """(module, function, flag) for every public function's parameter annotated bool or defaulting to a bool."""
    for path in sorted(UTILS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or (node.name.startswith("_") and node.name != "__init__"):
                continue
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults \
                + node.args.kw_defaults
            for arg, default in zip(args, defaults):
                annotated = arg.annotation is not None and ast.unparse(arg.annotation) == "bool"
                bool_default = isinstance(default, ast.Constant) and isinstance(default.value, bool)
                if annotated or bool_default:
                    yield path, node.name, arg.arg


FLAGS = [(p, f, a) for p, f, a in _public_flags() if p.name != "_checks.py"]


@pytest.mark.parametrize("path, function, flag", FLAGS, ids=[f"{p.stem}.{f}.{a}" for p, f, a in FLAGS])
def test_every_public_flag_is_checked_as_a_real_bool(path, function, flag):
    source = path.read_text(encoding="utf-8")
    checked = f'check_bool("{flag}"' in source or f'("{flag}", {flag})' in source \
        or f'check_bool(f"{{name}}.{flag}"' in source or f'check_bool("GPTConfig.{flag}"' in source
    assert checked, (f"{path.name}: {function}({flag}=...) is a flag but is never passed through "
                     f"check_bool(\"{flag}\", {flag}); a string such as \"False\" would be taken as true")


def test_check_bool_accepts_numpy_bools_and_refuses_strings():
    assert check_bool("flag", np.bool_(True)) is True
    assert check_bool("flag", np.True_) is True and check_bool("flag", False) is False
    for bad in ("False", "no", 0, 1, None):
        with pytest.raises(ArgumentTypeError, match="True or False"):
            check_bool("flag", bad)


def test_numbers_accept_numpy_scalars_and_refuse_bools():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int32(3))) is int
    assert check_real("x", np.float32(0.5)) == 0.5
    with pytest.raises(ArgumentTypeError):
        check_int("n", True)
    with pytest.raises(ValueError):
        check_real("x", float("nan"))
