"""The family registry: a family name → its ``Family`` (training/families/base.py).

Built-in families live one per module here and are registered on first lookup (importing them is
the only work, done when a family is first asked for). A new family is one module plus one line in
``BUILTIN``; code outside the family modules never branches on a family name.
"""

from __future__ import annotations

import importlib

from training.families.base import Family

#: name → module defining ``FAMILY`` (the one registry line per built-in family)
BUILTIN: dict[str, str] = {
    "churn": "training.families.churn",
    "propensity": "training.families.propensity",
    "labelled": "training.families.labelled",
    "clv": "training.families.clv",
    "nbo": "training.families.nbo",
    "uplift": "training.families.uplift",
    "first_purchase": "training.families.first_purchase",
}

_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add (or replace) a family under its name."""
    _REGISTRY[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family of that name; a clear error naming the ``family`` key otherwise."""
    if name not in _REGISTRY and name in BUILTIN:
        register(importlib.import_module(BUILTIN[name]).FAMILY)
    if name not in _REGISTRY:
        raise ValueError(f"family: unknown family {name!r}; known: {sorted(family_names())}")
    return _REGISTRY[name]


def family_names() -> list[str]:
    """Every family that can be asked for."""
    return sorted({*BUILTIN, *_REGISTRY})


__all__ = ["Family", "family_names", "get_family", "register"]
