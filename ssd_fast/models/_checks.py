"""Checks of the arguments the model constructors store: each returns the value in its stored
form, or raises ValueError naming the owner and the argument and quoting the value."""
import math
import numbers

from torch import Tensor

from ..ops import _show


def _fail(owner, name, what, value):
    raise ValueError(f"{owner}: {name} must be {what}, got {_show(value)}")


def integer(owner, name, value, minimum):
    """An int >= minimum (Python or NumPy; not a bool, never a float)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum:
        return int(value)
    _fail(owner, name, f"an int >= {minimum}", value)


def number(owner, name, value, what, ok=math.isfinite):
    """A real number (Python or NumPy; not a bool) for which ok(float(value)) holds."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and ok(float(value)):
        return float(value)
    _fail(owner, name, what, value)


def positive(owner, name, value):
    return number(owner, name, value, "a finite number > 0", lambda v: 0 < v < math.inf)


def flag(owner, name, value):
    if value is True or value is False:
        return value
    _fail(owner, name, "a bool", value)


def choice(owner, name, value, choices):
    if isinstance(value, str) and value in choices:
        return value
    _fail(owner, name, f"one of {choices}", value)


def variances(owner, value):
    """4 finite positive numbers (a list, tuple or 1-D tensor) as a tuple of floats."""
    items = value.tolist() if isinstance(value, Tensor) and value.dim() == 1 else value
    if (isinstance(items, (list, tuple)) and len(items) == 4
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                    and 0 < float(v) < math.inf for v in items)):
        return tuple(float(v) for v in items)
    _fail(owner, "variances", "4 finite positive numbers", value)
