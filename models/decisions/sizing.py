"""The test cell's sizing: how large an arm's test cell must be for the roll-out gate to pass
the arm if the model's expectation is right (docs/campaign_loop.md §1 and §6).

The read of an arm is its test contacts' profit per contact against its controls'
(``readout``): with response rates ``p`` (contacts) and ``r_c`` (controls), value ``v`` per
response and acceptance cost ``a``, its variance per contact is ``(v - a)^2 p (1 - p)`` on the
test side and ``v^2 r_c (1 - r_c)`` on the control side. The gate passes it when the read's
lower bound at its confidence is above zero. Only response noise counts here: the model's own
error is what the test cell is there to find out.
"""

from __future__ import annotations

import math
from statistics import NormalDist


def read_variances(
    response: float, control_rate: float, value: float, cost_per_acceptance: float
) -> tuple[float, float]:
    """The variance per contact of an arm's read on the test side and on the control side."""
    p = min(max(response, 0.0), 1.0)
    r_c = min(max(control_rate, 0.0), 1.0)
    return (value - cost_per_acceptance) ** 2 * p * (1 - p), value**2 * r_c * (1 - r_c)


def gate_power(
    profit: float,
    var_test: float,
    var_control: float,
    n_test: float,
    n_control: float,
    level: float,
) -> float:
    """The chance the gate, one-sided at ``level``, passes an arm whose true profit per contact
    is ``profit``, read on ``n_test`` contacts against ``n_control`` controls."""
    if n_test <= 0 or n_control <= 0:
        return 0.0
    se = math.sqrt(var_test / n_test + var_control / n_control)
    if se == 0:
        return float(profit > 0)
    return NormalDist().cdf(profit / se - NormalDist().inv_cdf(level))


def contacts_for_power(
    profit: float, var_test: float, var_control: float, n_control: float, level: float, goal: float
) -> float | None:
    """The test contacts that give the gate the chance ``goal`` of passing an arm whose true
    profit per contact is ``profit``, against ``n_control`` controls (fixed: the control group
    does not grow with the test cell); None when no number of contacts would (no profit, or
    the controls alone are too noisy)."""
    if profit <= 0 or n_control <= 0:
        return None
    z = NormalDist().inv_cdf(level) + NormalDist().inv_cdf(goal)
    room = (profit / z) ** 2 - var_control / n_control  # what the test side may add
    if room <= 0:
        return None
    return var_test / room
