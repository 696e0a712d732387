"""sonic_core.finite: the finite-number test every user-value check uses, and how a value is shown."""

import math

import numpy as np

from sonic_core.finite import is_finite_number, shown


def test_finite_numbers_and_everything_else():
    for value in (0, -3, 2.5, 2**64, np.float32(1.5), np.int64(7)):
        assert is_finite_number(value), value
    for value in (True, None, "1", [1], math.nan, math.inf, -math.inf, 10**400, -(10**400)):
        assert not is_finite_number(value), value  # an int beyond the float range: no OverflowError


def test_a_huge_integer_is_shown_by_its_size():
    assert shown(10**5000) == "an integer of 16610 bits"  # repr would raise ValueError (over 4300 digits)
    assert shown(7) == "7" and shown("x\ny") == "'x\\ny'" and shown(2**128 - 1) == str(2**128 - 1)
