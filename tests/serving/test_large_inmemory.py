"""Large /score requests of a family served in memory (issue 14, item 5): the records encoded at
load are joined as whole byte strings and the ids placed with a dict, and the answers stay byte
for byte what the service sent before (the offsets-and-slices join of 9d536e5), what
``ScoreResponse`` would write, and the 1-customer answers joined; over HTTP too, beside small
requests.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest

from serving.errors import RequestError
from serving.settings import ServingSettings
from tests.serving.conftest import (
    USER_KEY,
    Server,
    register_copy,
    server_env,
    serving_settings,
    small_beside_large,
)

NAME = "serving-large-inmemory-test"
USER = {"Authorization": f"Bearer {USER_KEY}"}


@pytest.fixture(scope="module")
def served(served_pipeline):
    """(pipeline, settings document, state) of the session's churn model served in memory."""
    from serving.state import build_state

    state = served_pipeline["state"]
    register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    doc = serving_settings(served_pipeline, NAME, reload_interval_s=0)
    built = build_state(ServingSettings.model_validate(doc), state)
    assert built.models["churn"].encoded is not None  # reasons precomputed: records encoded
    return served_pipeline, doc, built


def _asked(state, n: int = 1000) -> list[str]:
    """``n`` ids of the base in a shuffled order with two unknown ones among them."""
    index = state.models["churn"].base.features.index
    ids = np.random.default_rng(7).permutation(index.to_numpy())[:n].tolist()
    return [*ids[: n // 2], "NO-SUCH-1", *ids[n // 2 :], "NO-SUCH-2"]


def _service_answer(state, ids: list[str], reasons: bool) -> bytes:
    """What ``Patron._score`` answers (its own code, with the settings it reads)."""
    from serving.service import Patron
    from serving.shadow import ShadowStats

    owner = SimpleNamespace(
        settings=SimpleNamespace(max_batch=10_000, shadow_log_every_s=60.0), shadow=ShadowStats()
    )
    return asyncio.run(Patron.inner._score(owner, state, "churn", ids, reasons))


def _answer_before(state, ids: list[str], reasons: bool) -> bytes:
    """The answer as the service assembled it at 9d536e5: the ids placed by pandas' index, each
    record cut from two contiguous byte strings by offsets and glued to its reasons."""
    from serving.answers import score_answer, to_json
    from serving.handlers import score_records

    served = state.models["churn"]
    heads, reasons_of, head_at, reason_at = bytearray(), bytearray(), [0], [0]
    for record in score_records(served, np.arange(served.base.size)):
        whole, why = to_json(record), to_json(record["reasons"])
        heads += whole[: len(whole) - len(why) - 1]
        reasons_of += why
        head_at.append(len(heads))
        reason_at.append(len(reasons_of))
    positions = served.base.positions(ids)
    known = positions[positions >= 0]
    h0, h1 = [head_at[i] for i in known], [head_at[i + 1] for i in known]
    if reasons:
        r0, r1 = [reason_at[i] for i in known], [reason_at[i + 1] for i in known]
        records = b",".join(
            bytes(heads[a:b]) + bytes(reasons_of[c:d]) + b"}"
            for a, b, c, d in zip(h0, h1, r0, r1, strict=True)
        )
    else:
        records = b",".join(bytes(heads[a:b]) + b"[]}" for a, b in zip(h0, h1, strict=True))
    unknown = [
        {"customer_id": c, "reason": "not in the feature snapshot"}
        for c, p in zip(ids, positions, strict=True)
        if p < 0
    ]
    head = {
        "model": "churn",
        "kind": served.output,
        "registered_model": served.meta.registered_model,
        "alias": served.meta.alias,
        "version": served.meta.version,
        "as_of": served.base.as_of.isoformat(),
    }
    return score_answer(head, [records], unknown)


def _records_part(answer: bytes) -> bytes:
    """The bytes of an answer's ``scores`` list items."""
    return answer.split(b',"scores":[', 1)[1].rsplit(b'],"unknown":', 1)[0]


@pytest.mark.parametrize("reasons", [True, False])
@pytest.mark.parametrize("join_slice", [1000, 37])
def test_a_large_answer_is_byte_for_byte_the_answer_before(
    served, reasons, join_slice, monkeypatch
):
    """1 000 known and two unknown ids: the service's answer equals the previous assembly's
    bytes, the response model's own JSON, and the 1-customer answers joined, in any slicing."""
    from serving.handlers import score_customers
    from serving.schemas import ScoreResponse

    _, _, state = served
    monkeypatch.setattr("serving.service.JOIN_SLICE", join_slice)
    asked = _asked(state)
    big = _service_answer(state, asked, reasons)
    assert big == _answer_before(state, asked, reasons)
    expected = ScoreResponse.model_validate(
        score_customers(state, "churn", asked, 10_000, reasons)
    ).model_dump_json()
    assert big.decode() == expected
    singles = [_service_answer(state, [cid], reasons) for cid in asked[::25]]
    whole = json.loads(big)
    by_id = {r["customer_id"]: r for r in whole["scores"]}
    for cid, single in zip(asked[::25], singles, strict=True):
        assert single == _answer_before(state, [cid], reasons)
        records = json.loads(single)["scores"]
        assert records == ([by_id[cid]] if cid in by_id else [])
    everyone = [_service_answer(state, [cid], reasons) for cid in asked]
    assert _records_part(big) == b",".join(p for p in map(_records_part, everyone) if p)
    assert [u["customer_id"] for u in whole["unknown"]] == ["NO-SUCH-1", "NO-SUCH-2"]


def test_the_id_map_places_ids_as_the_base_index_does(served):
    _, _, state = served
    served_model = state.models["churn"]
    asked = [*_asked(state, 300), "", "C", served_model.base.features.index[0]]
    rows = served_model.encoded.rows_of(asked)
    assert rows == served_model.base.positions(asked).tolist()
    assert served_model.encoded.join(np.array([], dtype=np.int64), False) == b""
    assert served_model.encoded.join(np.array([], dtype=np.int64), True) == b""


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "at least one customer id is needed"),
        (["A", "B", "A", "B"], "duplicated ids at positions 2, 3"),
        ([f"X{i}" for i in range(11)], "11 ids exceed the maximum of 10 per request"),
    ],
)
def test_bad_id_lists_are_refused_as_before(served, ids, message):
    from serving.handlers import plan_score

    _, _, state = served
    with pytest.raises(RequestError) as caught:
        plan_score(state, "churn", ids, 10)
    assert caught.value.field == "customer_ids" and caught.value.message == message


@pytest.mark.server
def test_a_server_answers_small_requests_while_large_ones_run(served, tmp_path):
    """An in-memory server under 1 000-customer requests from two clients answers every
    1-customer request from four others; each answer is the in-process answer's bytes."""
    pipeline, doc, state = served
    asked = _asked(state)
    expected_big = _service_answer(state, asked, True)
    small = asked[::10]
    expected = {cid: _service_answer(state, [cid], True) for cid in small}
    srv = Server(server_env(doc, pipeline["state"].home), tmp_path / "server.log")
    try:
        big_out, small_out = small_beside_large(
            srv, asked, small, lambda r: r.content == expected_big, lambda r: r.content
        )
        assert big_out == [True] * 12
        assert len(small_out) == 3 * len(small)
        assert all(status == 200 for _, status, _ in small_out), small_out[:3]
        assert all(body == expected[cid] for cid, _, body in small_out)
        assert "Traceback" not in srv.log_text()
    finally:
        srv.stop()
