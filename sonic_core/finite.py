"""The one test of "a real, finite number" for user-supplied values, and how such a value is shown in a message.

``math.isfinite`` raises ``OverflowError`` on an int beyond the float range (any JSON or Python client can send
one), and ``repr`` raises ``ValueError`` on one of more than 4300 digits: both would escape as a traceback
instead of one line naming the input.
"""

from __future__ import annotations

import math
import numbers


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) whose float value is finite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def shown(value: object) -> str:
    """``repr(value)`` for a message; an integer too long to read as its size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)
