"""Argument checks shared by the ``utils`` modules (private: the messages are the public part).

Sizes accept any ``numbers.Integral`` (so ``np.int64(4)`` works) but never ``bool``; flags accept
only real booleans (``"False"`` is a non-empty string, hence true, and would silently do the
opposite of what was meant); real numbers must be finite unless said otherwise.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["ArgumentTypeError", "check_int", "check_bool", "check_real", "check_seed"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Both a TypeError and a ValueError, so code written for the
    ValueError these checks used to raise keeps working."""


def check_int(name: str, value: Any, *, minimum: int | None = 1) -> int:
    """``value`` as a Python int; TypeError for non-integers (bool included), ValueError below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = f" (use {int(value)})" if isinstance(value, float) and value.is_integer() else ""
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}{hint}")
    value = int(value)
    if minimum is not None and value < minimum:
        what = "positive" if minimum == 1 else ("non-negative" if minimum == 0 else f">= {minimum}")
        raise ValueError(f"{name} must be a {what} int, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (NumPy bools included); TypeError otherwise."""
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"):  # np.bool_ (NumPy 2: np.bool)
        return bool(value)
    raise ArgumentTypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_real(name: str, value: Any, *, positive: bool = False, non_negative: bool = False,
               allow_inf: bool = False) -> float:
    """``value`` as a float: a finite real number (not bool), optionally > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    if non_negative and not value >= 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def check_seed(name: str, value: Any) -> int:
    """A seed: an int in ``[0, 2**32)``."""
    value = check_int(name, value, minimum=0)
    if value >= 2**32:
        raise ValueError(f"{name} must be below 2**32, got {value}")
    return value
