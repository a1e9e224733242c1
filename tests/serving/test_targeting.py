"""Campaign rules without a server: consent, exclusion counts, budget, control and test cells."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.decisions.groups import id_hashes
from models.decisions.value import BASIS_NON_CAUSAL, BASIS_UPLIFT
from serving.targeting import (
    EXCLUSION_REASONS,
    LABEL_MEANINGS,
    SCORE_KINDS,
    CampaignRules,
    assign_groups,
    basis_for,
    budget_prefix,
    campaign_uniforms,
    consent_flags,
    label_meaning,
    score_kind,
    select_customers,
)


def candidates(n: int, seed: int = 0, **overrides) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"C{i:05d}" for i in range(n)]
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "score": rng.uniform(0, 1, n),
            "consent": rng.uniform(size=n) < 0.7,
            "rfm_segment": rng.choice(["Champions", "At risk", "Lost"], n),
            "abc_class": rng.choice(["A", "B", "C"], n),
            "lifecycle_stage": rng.choice(["active", "lapsing", "lapsed"], n),
            "lapsed_recently": rng.uniform(size=n) < 0.1,
            "id_hash": id_hashes(ids),
        }
    )
    for k, v in overrides.items():
        frame[k] = v
    return frame


def rules(**kw) -> CampaignRules:
    base = {"campaign_id": "camp-1", "value_per_conversion": 10.0, "cost_per_contact": 1.0}
    return CampaignRules(**{**base, **kw})


# --------------------------------------------------------------------------- consent


def test_consent_needs_an_explicit_yes_and_missing_means_no():
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "e", "f"],
            "consent_email": [True, False, None, "yes", True, False, 1],
        }
    )
    flags = consent_flags(["a", "b", "c", "d", "e", "f", "zz"], customers, "email")
    # c: missing value; e: one of its duplicated rows says no; zz: not in the table
    assert flags.tolist() == [True, False, False, True, False, True, False]


def test_consent_without_the_table_or_column_is_no_consent():
    assert not consent_flags(["a"], None, "sms").any()
    no_column = pd.DataFrame({"customer_id": ["a"], "consent_email": [True]})
    assert not consent_flags(["a"], no_column, "sms").any()
    with pytest.raises(ValueError, match="channel"):
        consent_flags(["a"], no_column, "fax")


# --------------------------------------------------------------------------- groups


def test_group_membership_depends_only_on_campaign_and_customer():
    ids = [f"C{i}" for i in range(2000)]
    u1 = campaign_uniforms(id_hashes(ids), "spring")
    u2 = campaign_uniforms(id_hashes(list(reversed(ids))), "spring")[::-1]
    assert np.array_equal(u1, u2)  # order of the base does not matter
    other = campaign_uniforms(id_hashes(ids), "autumn")
    assert np.mean(u1 < 0.1) != pytest.approx(np.mean((u1 < 0.1) & (other < 0.1)), abs=0.02)
    assert ((u1 >= 0) & (u1 < 1)).all()


def test_group_shares_follow_the_fractions():
    u = campaign_uniforms(id_hashes([f"C{i}" for i in range(50_000)]), "c")
    groups = assign_groups(u, 0.1, 0.05)
    shares = pd.Series(groups).value_counts(normalize=True)
    assert shares["control"] == pytest.approx(0.10, abs=0.01)
    assert shares["test"] == pytest.approx(0.05, abs=0.01)
    with pytest.raises(ValueError):
        assign_groups(u, 0.7, 0.5)


# --------------------------------------------------------------------------- selection


def test_no_consent_is_never_selected_and_counts_add_up():
    c = candidates(3000)
    sel = select_customers(c, rules(max_contacts=400, control_fraction=0.1))
    chosen = set(sel.customers["customer_id"])
    no_consent = set(c.loc[~c["consent"], "customer_id"])
    assert not chosen & no_consent
    excluded = sel.summary["excluded"]
    assert list(excluded) == list(EXCLUSION_REASONS)
    assert excluded["no_consent"] == len(no_consent)
    assert sum(excluded.values()) + sel.summary["selected"] == len(c)
    assert sel.summary["contacted"] == 400
    assert sel.summary["control"] + sel.summary["contacted"] == sel.summary["selected"]


def test_each_customer_is_counted_under_the_first_rule_it_fails():
    c = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],
            "score": [0.9, 0.9, 0.9, 0.05, 0.01, 0.8],
            "consent": [False, True, True, True, True, True],
            "rfm_segment": ["Lost", "Lost", "At risk", "At risk", "At risk", "At risk"],
            "abc_class": ["A"] * 6,
            "lifecycle_stage": ["lapsed", "lapsed", "active", "lapsed", "lapsed", "lapsed"],
            "lapsed_recently": [False] * 6,
            "id_hash": id_hashes("abcdef"),
        }
    )
    r = rules(
        segments=frozenset({"At risk"}),
        lifecycle_stages=frozenset({"lapsed"}),
        min_score=0.03,
        control_fraction=0.0,
    )
    sel = select_customers(c, r)
    # a: no consent (also the wrong segment); b: segment; c: stage; e: score; d: 0.05*10-1 < 0
    assert sel.summary["excluded"] == {
        "no_consent": 1,
        "not_eligible": 0,
        "segment": 1,
        "lifecycle_stage": 1,
        "min_score": 1,
        "unprofitable": 1,
        "budget": 0,
    }
    assert sel.customers["customer_id"].tolist() == ["f"]


def test_not_eligible_scores_are_excluded():
    c = candidates(10, score=[np.nan] * 5 + [0.9] * 5, consent=True)
    sel = select_customers(c, rules(control_fraction=0.0))
    assert sel.summary["excluded"]["not_eligible"] == 5
    assert sel.summary["selected"] == 5


def test_selection_maximises_expected_profit_within_the_contact_budget():
    c = candidates(12, seed=3, consent=True)
    r = rules(max_contacts=4, control_fraction=0.0, value_per_conversion=7.0)
    sel = select_customers(c, r)
    profit = c["score"] * 7.0 - 1.0
    best = max(
        profit.iloc[list(combo)].clip(lower=0).sum()
        for combo in itertools.combinations(range(12), 4)
    )
    assert sel.summary["expected_profit"] == pytest.approx(best)
    assert sel.summary["expected_responses"] == pytest.approx(sel.customers["score"].sum())
    assert sel.customers["expected_profit"].is_monotonic_decreasing


def test_money_budget_and_controls_cost_nothing():
    c = candidates(500, consent=True)
    sel = select_customers(c, rules(max_cost=30.0, cost_per_contact=0.5, control_fraction=0.2))
    assert sel.summary["contacted"] == 60
    assert sel.summary["spend"] == pytest.approx(30.0)
    assert sel.summary["control"] > 0
    last = sel.customers.iloc[-1]
    assert last["group"] != "control"  # the list ends at the last contact the budget pays for


def test_budget_prefix_counts_only_treated():
    treated = np.array([True, False, True, False, True, True])
    assert budget_prefix(treated, rules(max_contacts=2)) == 3
    assert budget_prefix(treated, rules(max_contacts=0)) == 0
    assert budget_prefix(treated, rules()) == 6
    assert budget_prefix(treated, rules(max_cost=2.5, cost_per_contact=1.0)) == 3


def test_win_back_first_moves_recent_lapses_to_the_front():
    c = candidates(200, consent=True)
    plain = select_customers(c, rules(control_fraction=0.0))
    first = select_customers(c, rules(control_fraction=0.0, win_back_first=True))
    n_wb = int((c["lapsed_recently"] & (c["score"] * 10.0 - 1.0 > 0)).sum())
    assert n_wb > 3
    assert first.customers["win_back_priority"].iloc[:n_wb].all()
    assert not plain.customers["win_back_priority"].iloc[:n_wb].all()
    assert first.summary["win_back_priority"] == plain.summary["win_back_priority"] == n_wb


def test_membership_is_the_same_whatever_the_budget():
    c = candidates(2000, consent=True)
    small = select_customers(
        c, rules(max_contacts=100, control_fraction=0.2, test_cell_fraction=0.1)
    )
    large = select_customers(
        c, rules(max_contacts=900, control_fraction=0.2, test_cell_fraction=0.1)
    )
    merged = small.customers.merge(large.customers, on="customer_id", suffixes=("_s", "_l"))
    assert len(merged) == len(small.customers)
    assert (merged["group_s"] == merged["group_l"]).all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    max_contacts=st.one_of(st.none(), st.integers(0, 40)),
    control=st.floats(0, 0.5),
    test=st.floats(0, 0.5),
)
def test_property_consent_budget_and_counts(n, seed, max_contacts, control, test):
    c = candidates(n, seed=seed)
    sel = select_customers(
        c, rules(max_contacts=max_contacts, control_fraction=control, test_cell_fraction=test)
    )
    chosen = c.set_index("customer_id").loc[sel.customers["customer_id"]]
    assert chosen["consent"].all()
    if max_contacts is not None:
        assert sel.summary["contacted"] <= max_contacts
    else:  # no budget: nobody is left out for budget, every profitable consenting one is chosen
        assert sel.summary["excluded"].get("budget", 0) == 0
        profitable = c["consent"] & (c["score"] * 10.0 - 1.0 > 0)  # the rules' value and cost
        assert sel.summary["selected"] == int(profitable.sum())
    assert sum(sel.summary["excluded"].values()) + sel.summary["selected"] == n
    assert (sel.customers["expected_profit"] > 0).all()


# --------------------------------------------------------------------------- what a score is


@pytest.mark.parametrize(
    ("output", "meaning", "kind"),
    [
        ("uplift", "other", "uplift"),  # an uplift is an effect whatever its label
        ("uplift", "churn", "uplift"),
        ("probability", "churn", "churn_probability"),
        ("probability", "response", "response_probability"),
    ],
)
def test_the_score_kind_follows_the_label_meaning_not_a_name(output, meaning, kind):
    assert score_kind(output, meaning) == kind
    assert kind in SCORE_KINDS


def test_a_value_or_a_label_meaning_other_is_no_campaign_score():
    with pytest.raises(ValueError, match="value"):
        score_kind("value", "churn")
    with pytest.raises(ValueError, match="label_meaning is 'other'"):
        score_kind("probability", "other")
    with pytest.raises(ValueError, match="label_meaning must be one of"):
        score_kind("probability", "attrition")


@pytest.mark.parametrize(
    ("family", "recorded", "meaning"),
    [
        ("labelled", "churn", "churn"),
        ("labelled", "response", "response"),
        ("labelled", "other", "other"),
        ("labelled", None, "other"),  # registered before meanings were recorded: no guess
        ("churn", None, "churn"),  # families whose label is fixed
        ("propensity", None, "response"),
        ("", None, "other"),
    ],
)
def test_the_label_meaning_is_the_recorded_one_else_the_family_s(family, recorded, meaning):
    assert label_meaning(family, recorded) == meaning
    assert meaning in LABEL_MEANINGS


def test_an_unknown_recorded_label_meaning_is_refused():
    with pytest.raises(ValueError, match="label_meaning must be one of"):
        label_meaning("labelled", "attrition")


@pytest.mark.parametrize(
    ("kind", "ranking", "basis"),
    [
        ("uplift", "uplift", BASIS_UPLIFT),
        ("churn_probability", "non_causal_score", BASIS_NON_CAUSAL),
        ("response_probability", "non_causal_score", BASIS_NON_CAUSAL),
        ("churn_probability", "uplift", None),
        ("response_probability", "uplift", None),
        ("uplift", "non_causal_score", None),
    ],
)
def test_only_an_uplift_ranks_by_default_and_the_basis_labels_the_rest(kind, ranking, basis):
    if basis is None:
        with pytest.raises(ValueError):
            basis_for(kind, ranking)
    else:
        assert basis_for(kind, ranking) == basis


def test_a_churn_probability_ranks_by_value_at_risk_and_counts_no_responses():
    c = candidates(40, seed=5, consent=True)
    as_response = select_customers(c, rules(max_contacts=10, control_fraction=0.0))
    as_churn = select_customers(
        c, rules(max_contacts=10, control_fraction=0.0, score_is_response=False)
    )
    assert as_response.summary["expected_responses"] == pytest.approx(
        as_response.customers["score"].sum()
    )
    assert as_churn.summary["expected_responses"] is None
    # same ranking (P x value - cost, here value at risk), same selection and profit figures
    pd.testing.assert_frame_equal(as_churn.customers, as_response.customers)
    assert as_churn.summary["expected_profit"] == as_response.summary["expected_profit"]
    expected = np.sort(c["score"].to_numpy() * 10.0 - 1.0)[::-1][:10]
    np.testing.assert_allclose(as_churn.customers["expected_profit"], expected)


def test_a_test_cell_of_five_percent_unless_asked_otherwise():
    from serving.schemas import TargetRequest

    body = TargetRequest.model_validate({"campaign_id": "c", "channel": "email"})
    assert body.test_cell_fraction == 0.05 and rules().test_cell_fraction == 0.05
    sel = select_customers(candidates(4000, consent=True), rules(max_contacts=3000))
    share = sel.summary["test_cell"] / max(sel.summary["contacted"], 1)
    assert 0.03 < share < 0.08  # 5 % of the selected (hash-assigned), among the contacted
    none = select_customers(candidates(4000, consent=True), rules(test_cell_fraction=0.0))
    assert none.summary["test_cell"] == 0
