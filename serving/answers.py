"""/score answers encoded to JSON bytes directly, in slices of records.

``pydantic_core.to_json`` writes the bytes ``ScoreResponse.model_dump_json()`` would (tested), but
without validating every row into models first and dumping them again: for a 1 000-customer
answer that was most of the request's CPU, and BentoML did the dump on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic_core import to_json

#: Records made (and JSON-encoded) per slice; the event loop serves other requests between two
#: slices, so a small request waits for at most one slice of a large one.
SLICE = 100


def record_slice(records: Sequence[Mapping[str, Any]]) -> bytes:
    """A slice of records as the JSON of their list's items (no brackets)."""
    return to_json(records)[1:-1]


def score_answer(
    head: Mapping[str, Any], slices: Sequence[bytes], unknown: Sequence[Mapping[str, Any]]
) -> bytes:
    """The /score answer: ``head``'s fields, then ``scores`` (the slices) and ``unknown``."""
    records = b",".join(part for part in slices if part)
    return b"".join(
        (to_json(head)[:-1], b',"scores":[', records, b'],"unknown":', to_json(unknown), b"}")
    )


async def sliced_records(
    count: int,
    make: Callable[[int, int], Sequence[Mapping[str, Any]]],
    threaded: bool = False,
    size: int = SLICE,
) -> list[bytes]:
    """``make(start, stop)``'s records for ``range(count)`` in slices of ``size``, encoded.

    Inline, the event loop gets control back between two slices; ``threaded``, each slice is
    made in a worker thread (for work that releases the GIL, such as XGBoost's)."""
    parts = []
    for start in range(0, count, size):
        stop = min(start + size, count)
        if threaded:
            records = await asyncio.to_thread(make, start, stop)
        else:
            if start:
                await asyncio.sleep(0)
            records = make(start, stop)
        parts.append(record_slice(records))
    return parts


@dataclass(frozen=True)
class EncodedRecords:
    """Every base row's /score record as JSON, made once at load: row ``i`` is
    ``heads[head_at[i]:head_at[i + 1]]`` (the record up to ``"reasons":``), then its reasons
    ``reasons[reason_at[i]:reason_at[i + 1]]`` (or ``[]``) and ``}``. An answer is then a join of
    byte slices: no per-row Python objects, no encoding, per request."""

    heads: bytes
    head_at: np.ndarray
    reasons: bytes
    reason_at: np.ndarray

    def join(self, positions: np.ndarray, with_reasons: bool = True) -> bytes:
        """The records of base rows ``positions``, comma-separated (a JSON list's items)."""
        h0, h1 = self.head_at[positions].tolist(), self.head_at[positions + 1].tolist()
        heads = self.heads
        if not with_reasons:
            return b",".join([heads[a:b] + b"[]}" for a, b in zip(h0, h1, strict=True)])
        r0, r1 = self.reason_at[positions].tolist(), self.reason_at[positions + 1].tolist()
        reasons = self.reasons
        return b",".join(
            [heads[a:b] + reasons[c:d] + b"}" for a, b, c, d in zip(h0, h1, r0, r1, strict=True)]
        )

    @property
    def nbytes(self) -> int:
        return len(self.heads) + len(self.reasons) + self.head_at.nbytes + self.reason_at.nbytes


def encode_records(chunks: Iterable[Sequence[Mapping[str, Any]]]) -> EncodedRecords:
    """``EncodedRecords`` of records whose last key is ``reasons``, given chunk by chunk."""
    heads, reasons = bytearray(), bytearray()
    head_at, reason_at = [0], [0]
    for chunk in chunks:
        for record in chunk:
            whole = to_json(record)
            why = to_json(record["reasons"])
            cut = len(whole) - len(why) - 1
            if whole[cut:-1] != why or not whole.endswith(b"}"):
                raise ValueError("a record's last key must be its reasons")
            heads += whole[:cut]
            reasons += why
            head_at.append(len(heads))
            reason_at.append(len(reasons))
    return EncodedRecords(
        heads=bytes(heads),
        head_at=np.asarray(head_at, dtype=np.int64),
        reasons=bytes(reasons),
        reason_at=np.asarray(reason_at, dtype=np.int64),
    )
