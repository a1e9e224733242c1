"""Test cell / control / roll-out by a deterministic hash of (campaign id, customer id).

The one implementation (serving's targeting uses it too):
``u = top53(splitmix64(blake2b64(customer_id) XOR blake2b64(campaign_id))) / 2**53``;
control if ``u < control_fraction``, test cell if ``u < control + test fraction``, else roll-out.
The same campaign id gives the same groups; another campaign id reshuffles them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

GROUPS = ("control", "test", "rollout")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """A stable 64-bit hash per id (BLAKE2b, 8 bytes, little-endian)."""
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(str(c).encode("utf-8"), digest_size=8).digest(), "little"
            )
            for c in ids
        ),
        dtype=np.uint64,
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def uniforms_from_hashes(hashes: np.ndarray, campaign_id: str) -> np.ndarray:
    """A number in [0, 1) per already hashed id (``id_hashes``), fixed by (campaign id, id)."""
    salt = id_hashes([campaign_id])[0]
    mixed = _splitmix64(np.asarray(hashes, dtype=np.uint64) ^ salt)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def campaign_uniforms(ids: Iterable[str], campaign_id: str) -> np.ndarray:
    """A number in [0, 1) per id, fixed by (campaign id, id) and nothing else."""
    return uniforms_from_hashes(id_hashes(ids), campaign_id)


def groups_of(
    uniforms: np.ndarray, control_fraction: float, test_fraction: float | np.ndarray
) -> np.ndarray:
    """control if u < control_fraction, test if u < control + test fraction, else rollout.
    ``test_fraction``: one for everyone, or one per id (a test cell sized per arm)."""
    t = np.asarray(test_fraction, dtype=float)
    if not (control_fraction >= 0 and (t >= 0).all() and (control_fraction + t <= 1).all()):
        raise ValueError("control and test fractions must be >= 0 and sum to at most 1")
    u = np.asarray(uniforms, dtype=float)
    codes = np.where(u < control_fraction, 0, np.where(u < control_fraction + t, 1, 2))
    return np.asarray(GROUPS, dtype=object)[codes]


def assign_groups(
    ids: Iterable[str],
    campaign_id: str,
    control_fraction: float,
    test_fraction: float | np.ndarray,
) -> np.ndarray:
    """The group of each id: "control", "test" or "rollout"."""
    return groups_of(campaign_uniforms(ids, campaign_id), control_fraction, test_fraction)
