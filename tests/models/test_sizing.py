"""The test cell's sizing (models/decisions/sizing.py): the read's noise, the gate's power and
the test contacts a goal needs, checked against each other and against simulated reads."""

from __future__ import annotations

import numpy as np
import pytest

from models.decisions.readout import ArmTerms, gate, read_wave
from models.decisions.sizing import contacts_for_power, gate_power, read_variances


def test_the_contacts_asked_for_give_the_goal_and_none_when_no_number_would() -> None:
    var_t, var_c = read_variances(0.12, 0.10, 40.0, 2.0)
    assert var_t == pytest.approx(38.0**2 * 0.12 * 0.88)
    assert var_c == pytest.approx(40.0**2 * 0.10 * 0.90)
    n = contacts_for_power(0.5, var_t, var_c, 4000, 0.9, 0.8)
    assert n is not None and n > 0
    assert gate_power(0.5, var_t, var_c, n, 4000, 0.9) == pytest.approx(0.8)
    # more contacts, more power; no profit or too few controls: no number of contacts
    assert gate_power(0.5, var_t, var_c, 2 * n, 4000, 0.9) > 0.8
    assert contacts_for_power(0.0, var_t, var_c, 4000, 0.9, 0.8) is None
    assert contacts_for_power(0.5, var_t, var_c, 50, 0.9, 0.8) is None
    assert gate_power(0.5, var_t, var_c, 0, 4000, 0.9) == 0.0


def test_the_power_is_how_often_the_gate_passes_simulated_reads() -> None:
    """1,000 simulated reads at the size asked for: the gate passes about the goal's share."""
    p, r_c, v, a, c = 0.14, 0.10, 40.0, 2.0, 0.2
    profit = (p - r_c) * v - a * p - c
    var_t, var_c = read_variances(p, r_c, v, a)
    n_c = 3000
    n_t = contacts_for_power(profit, var_t, var_c, n_c, 0.9, 0.7)
    assert n_t is not None
    n_t = int(np.ceil(n_t))
    rng = np.random.default_rng(7)
    terms = {"A/email": ArmTerms(v, c, a)}
    arm = ["A/email"] * n_t + [None] * n_c
    passed = 0
    for _ in range(1000):
        y = np.concatenate([rng.random(n_t) < p, rng.random(n_c) < r_c]).astype(float)
        passed += gate(read_wave(arm, y, terms, level=0.9), 0.9)[0].roll_out
    assert abs(passed / 1000 - 0.7) < 0.05
