"""Arrow column builders shared by the tables: ids, exact money strings, dictionary columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def id_strings(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers, e.g. C0000001."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def money_strings(cents: np.ndarray) -> pa.Array:
    """Integer cents as exact two-decimal strings, e.g. -1205 -> '-12.05'."""
    mag = np.abs(cents)
    whole = pc.cast(pa.array(mag // 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(mag % 100), pa.string()), 2, "0")
    sign = pc.if_else(pa.array(cents < 0), "-", "")
    return pc.binary_join_element_wise(sign, whole, ".", frac, "")


def encoded(
    indices: np.ndarray, dictionary: pa.Array, null: np.ndarray | None = None
) -> pa.DictionaryArray:
    """A dictionary-encoded column: the CSV writer decodes it, so no per-row strings are built."""
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32), mask=null), dictionary)
