"""Plan a campaign from an arm model: per-(offer, channel) uplift learned from randomised
multi-arm campaigns, applied to today's customers, allocated under the campaign's budgets,
capacities, consent, contact and household policies (``models.decisions``).

The arm model (``ArmModel``) is a ``MultiArmUplift`` over the feature set at the day before each
send, fitted on every contact of the given campaigns; its arms are the (offer, channel) pairs the
log holds. A campaign offer is matched to the log by ``catalog_id`` (else its ``id``); every
(offer, channel) pair the campaign may choose must be an arm — the model has no evidence about
any other, and guessing it (e.g. scaling another channel's effect) would be a number that means
something it is not.

A campaign whose offers are valued per customer (``value_source: customer_value``) takes that
value from a per-customer table (``customer_value.parquet`` of ``patron value``):
``read_customer_value`` reads the file once (its sha256 and two columns), ``align_customer_value``
puts one finite number per base customer in the base's order or names what is missing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from models.decisions import (
    Campaign,
    Plan,
    ResponseProbability,
    UpliftEstimate,
    contact_history,
    plan_campaign,
)
from models.decisions.allocate import household_maps_from

ID, CAMPAIGN = "customer_id", "campaign_id"
# the value of a customer_value offer's response: the NPV of the customer's margin, as the HTTP
# planner takes it from a served value model (`npv`); `patron value` writes the same column
VALUE_COLUMN = "npv"
VALUE_OPTION, COLUMN_OPTION = "--customer-value", "--value-column"
# the per-arm X-learner and its (shallow) parameters: on the multi-arm synthetic campaigns its
# policy earned 85 % of the oracle's incremental profit and beat every single arm on every seed,
# the pooled learner's 77 % and not (bench/offpolicy.py, docs/decisions.md)
ARM_LEARNER = "x"
ARM_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "max_depth": 2,
    "learning_rate": 0.05,
    "min_child_weight": 20,
}


@dataclass(frozen=True)
class ArmModel:
    """A fitted per-arm uplift model and what it was fitted on."""

    pipeline: Pipeline
    arms: list[tuple[str, str]]  # (offer id in the data, channel), the model's arm order
    features: list[str]
    feature_set: str
    campaign_ids: list[str]
    contacts: int


@dataclass(frozen=True)
class CustomerValue:
    """A per-customer value read from a file, and what identifies what was read."""

    values: pd.Series  # float per customer_id (str, each once), from `column`
    path: str  # as given (in messages)
    resolved: str  # absolute (in the plan's inputs)
    sha256: str  # of the bytes read
    column: str

    def inputs(self) -> dict[str, str]:
        """What a plan valued by it records: the file, its digest, the column (the plan id
        hashes the inputs, so another file or column gives another plan id)."""
        return {
            "customer_value_file": self.resolved,
            "customer_value_sha256": self.sha256,
            "customer_value_column": self.column,
        }

    def aligned(self, customer_ids: pd.Series) -> np.ndarray:
        """One value per customer of ``customer_ids``, in their order."""
        return values_for(self.values, customer_ids, self.column, self.path)


def plan_inputs(
    model: ArmModel,
    dataset: str,
    learner: str,
    params: dict[str, Any] | None,
    value: CustomerValue | None = None,
) -> dict[str, Any]:
    """What a plan made from an arm model records as its inputs (the roll-out refits from
    them), with the per-customer value file when offers are valued by it."""
    inputs: dict[str, Any] = {
        "dataset": dataset,
        "feature_set": model.feature_set,
        "learner": learner,
        "learned_from": ",".join(model.campaign_ids),
        "model_contacts": model.contacts,
        "arms": ",".join(f"{o}/{c}" for o, c in model.arms),
        "model_params": json.dumps(params or {}, sort_keys=True),
    }
    # no keys without a value file: the ids of plans valued per offer stay what they were
    return inputs if value is None else {**inputs, **value.inputs()}


def check_value_options(campaign: Campaign, value_path: Path | None, column: str | None) -> None:
    """``--customer-value`` is given exactly when an offer is valued by customer_value (a file
    that would not be used is refused, not ignored: the plan would record a value it never
    used); ``--value-column`` only with it."""
    valued = [
        (i, o.id) for i, o in enumerate(campaign.offers) if o.value_source == "customer_value"
    ]
    if value_path is None and column is not None:
        raise ValueError(f"{COLUMN_OPTION} {column}: needs {VALUE_OPTION} FILE (its column)")
    if valued and value_path is None:
        i, offer = valued[0]
        raise ValueError(
            f"offers[{i}] ({offer!r}) is valued by customer_value: pass {VALUE_OPTION} FILE, a "
            "per-customer table such as the customer_value.parquet patron value writes"
        )
    if value_path is not None and not valued:
        raise ValueError(
            f"{VALUE_OPTION} {value_path}: campaign {campaign.campaign_id!r} has no offer with "
            "value_source: customer_value, so the file would not be used; drop the option"
        )


def read_customer_value(path: Path, column: str = VALUE_COLUMN) -> CustomerValue:
    """Read ``customer_id`` and ``column`` of a Parquet file and the sha256 of its bytes (one
    open file: the digest is of what was read), checked as ``value_by_customer`` checks them;
    errors name the option."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ValueError(f"{VALUE_OPTION} {path}: no such file")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        fh.seek(0)
        try:
            parquet = pq.ParquetFile(fh)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{VALUE_OPTION} {path}: not a Parquet file ({reason})") from None
        _check_columns(parquet.schema_arrow.names, column, str(path))
        table = parquet.read(columns=[ID, column]).to_pandas()
    values = value_by_customer(table, column, str(path))
    return CustomerValue(values, str(path), str(path.resolve()), digest.hexdigest(), column)


def _check_columns(names: list[str], column: str, source: str) -> None:
    if ID not in names:
        raise ValueError(
            f"{VALUE_OPTION} {source}: no {ID} column (a per-customer table such as the "
            "customer_value.parquet patron value writes)"
        )
    if column not in names:
        shown = ", ".join(n for n in names if n != ID)
        raise ValueError(
            f"{COLUMN_OPTION} {column}: {source} has no such column (columns: {shown})"
        )


def value_by_customer(table: pd.DataFrame, column: str, source: str) -> pd.Series:
    """``table``'s numeric ``column`` indexed by customer_id (as text, each once); a ValueError
    naming the option otherwise (``source`` names the table in it)."""
    _check_columns(list(table.columns), column, source)
    values = table[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{COLUMN_OPTION} {column}: not numeric in {source} ({values.dtype})")
    if table[ID].isna().any():
        missing = int(table[ID].isna().sum())
        raise ValueError(f"{VALUE_OPTION} {source}: {missing:,} rows have no {ID}")
    ids = table[ID].astype(str)
    repeated = ids.duplicated()
    if repeated.any():
        raise ValueError(
            f"{VALUE_OPTION} {source}: {int(repeated.sum()):,} customer ids appear more than "
            f"once (first: {ids[repeated].iloc[0]})"
        )
    return pd.Series(values.to_numpy(dtype=float, na_value=np.nan), index=ids.to_numpy())


def values_for(values: pd.Series, customer_ids: pd.Series, column: str, source: str) -> np.ndarray:
    """``values`` (``value_by_customer``'s) per customer of ``customer_ids``, in their order:
    one finite number each, or a ValueError naming the option, the count and one customer as
    the example (never a value)."""
    wanted = pd.Index(pd.Series(customer_ids).astype(str))
    n = len(wanted)
    absent = ~wanted.isin(values.index)
    if absent.any():
        raise ValueError(
            f"{VALUE_OPTION}: {int(absent.sum()):,} of {n:,} customers of the base have no value "
            f"in {source} (first: {wanted[absent][0]})"
        )
    out = values.reindex(wanted).to_numpy(dtype=float)
    bad = ~np.isfinite(out)
    if bad.any():
        raise ValueError(
            f"{COLUMN_OPTION} {column}: {int(bad.sum()):,} of {n:,} customers of the base have "
            f"NaN or an infinite value in {source} (first: {wanted[bad][0]})"
        )
    return out


def align_customer_value(
    table: pd.DataFrame, customer_ids: pd.Series, column: str, source: str
) -> np.ndarray:
    """A per-customer value table's ``column`` aligned to ``customer_ids`` by customer_id:
    ``value_by_customer`` then ``values_for``."""
    return values_for(value_by_customer(table, column, source), customer_ids, column, source)


def contact_frame(
    state: Any, dataset: str, campaign_ids: list[str], feature_set: str
) -> tuple[pd.DataFrame, list[str], list[str], Any]:
    """Every contact of ``campaign_ids`` with its features (the day before the send), offer,
    channel, treatment and response; with the feature and categorical names and the uplift
    frame (its split: the latest campaign is the test one)."""
    from features.sources import load_dataset
    from training.families.base import RunContext
    from training.families.uplift import UpliftConfig, uplift_frame

    cfg = UpliftConfig(
        name="arms",
        dataset=dataset,
        feature_set=feature_set,
        registered_model="arms",
        uplift={"campaign_ids": campaign_ids, "features": "transactions"},
    )
    ctx = RunContext(state, load_dataset(dataset))
    uf = uplift_frame(cfg, ctx)
    history = ctx.catalog.read("campaign_history")
    if "channel" not in history.columns:
        raise ValueError(
            "campaign_history has no `channel` column: an arm is an (offer, channel) pair; map "
            "the contact channel in the dataset config (tables.campaign_history)"
        )
    history = history.astype({CAMPAIGN: str, ID: str}).drop_duplicates([CAMPAIGN, ID])
    frame = uf.frame.merge(
        history[[CAMPAIGN, ID, "offer_id", "channel"]], on=[CAMPAIGN, ID], how="left"
    )
    return frame, list(uf.feature_names), list(uf.categorical), uf


def log_arms(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The (offer, channel) pairs of the treated contacts, sorted."""
    treated = frame[frame["treatment"] == 1]
    if treated[["offer_id", "channel"]].isna().any(axis=None):
        raise ValueError("campaign_history: a treated contact has no offer_id or no channel")
    pairs = set(zip(treated["offer_id"].astype(str), treated["channel"].astype(str), strict=True))
    return sorted(pairs)


def arm_index(contacts: pd.DataFrame, arms: list[tuple[str, str]]) -> np.ndarray:
    """Per contact (columns ``treatment``, ``offer_id``, ``channel``), the index of its (offer,
    channel) pair in ``arms``, -1 for the control group; names any treated pair that is not an
    arm."""
    treated = contacts["treatment"].to_numpy().astype(bool)
    keys = {pair: j for j, pair in enumerate(arms)}
    pairs = list(
        zip(contacts["offer_id"].astype(str), contacts["channel"].astype(str), strict=True)
    )
    unknown = sorted({p for p, t in zip(pairs, treated, strict=True) if t and p not in keys})
    if unknown:
        raise ValueError(f"campaign_history (offer_id, channel) pairs {unknown[:5]} are not arms")
    return np.array([keys[p] if t else -1 for p, t in zip(pairs, treated, strict=True)], np.int64)


def fit_arms(
    state: Any,
    dataset: str,
    campaign_ids: list[str],
    feature_set: str = "churn_v1",
    learner: str = ARM_LEARNER,
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> ArmModel:
    """Fit the arm model on every contact of the campaigns."""
    from experiments.offpolicy import fit_arm_model

    frame, features, categorical, _ = contact_frame(state, dataset, campaign_ids, feature_set)
    arms = log_arms(frame)
    frame["arm"] = arm_index(frame, arms)
    pipe = fit_arm_model(frame, features, categorical, learner, params, seed)
    return ArmModel(pipe, arms, features, feature_set, list(campaign_ids), len(frame))


def arm_estimate(model: ArmModel, features: pd.DataFrame, campaign: Campaign) -> UpliftEstimate:
    """Per (customer, offer, channel): the arm's uplift and P(accept | contacted)."""
    index = {pair: j for j, pair in enumerate(model.arms)}
    pick = np.zeros((len(campaign.offers), len(campaign.channels)), np.int64)
    for i, offer in enumerate(campaign.offers):
        for c, channel in enumerate(campaign.channels):
            key = (offer.data_id, channel.name)
            if key not in index:
                raise ValueError(
                    f"offers[{i}] ({offer.data_id!r}) on channels[{c}] ({channel.name!r}): the "
                    f"arm model has no such arm (arms: {[f'{o}/{ch}' for o, ch in model.arms]}); "
                    "set the offer's catalog_id or plan only the channels it was tested on"
                )
            pick[i, c] = index[key]
    x = model.pipeline[:-1].transform(features[model.features])
    uplift = model.pipeline[-1].predict(x)
    outcomes = model.pipeline[-1].predict_outcomes(x)[:, : len(model.arms)]
    p_accept = np.clip(outcomes[:, pick], 0.0, 1.0)
    # an incremental response is a response: a learner's effect may not exceed P(accept)
    u = np.clip(uplift[:, pick], -1.0, p_accept)
    return UpliftEstimate(u, ResponseProbability(p_accept))


def customers_frame(state: Any, dataset: str, snapshot: pd.DataFrame) -> pd.DataFrame:
    """The snapshot's customers with the customers table's columns (consent, attributes)."""
    from features.catalog import Catalog

    table = Catalog(state, dataset).read_or_none("customers")
    frame = snapshot.copy()
    frame[ID] = frame[ID].astype(str)
    if table is not None:
        table = table.astype({ID: str}).drop_duplicates(ID, keep="last")
        extra = [c for c in table.columns if c == ID or c not in frame.columns]
        frame = frame.merge(table[extra], on=ID, how="left")
    return frame


def planning_base(
    state: Any, dataset: str, feature_set_name: str, as_of: date | None = None
) -> tuple[pd.DataFrame, date]:
    """The dataset's customers at ``as_of`` (default: the last data date): the feature set's
    snapshot with the customers table's columns (consent, attributes)."""
    from features.build import data_date_range, transactions_source, write_snapshot
    from features.definitions import feature_set
    from features.sources import connect

    con = connect(state)
    try:
        if as_of is None:
            as_of = data_date_range(con, transactions_source(state, dataset))[1]
        path = write_snapshot(con, state, dataset, feature_set(feature_set_name), as_of)
    finally:
        con.close()
    return customers_frame(state, dataset, pd.read_parquet(path)), as_of


def plan_over(
    state: Any,
    dataset: str,
    campaign: Campaign,
    customers: pd.DataFrame,
    estimate: UpliftEstimate,
    as_of: date,
    customer_value: np.ndarray | None = None,
) -> Plan:
    """Allocate over ``customers`` with the dataset's households, duplicates and contact
    history (when the campaign needs it); ``customer_value`` per customer, in their order."""
    from features.catalog import Catalog

    catalog = Catalog(state, dataset)
    known = set(customers[ID])
    merge = catalog.read_or_none("merge_map", [ID, "master_id"])
    homes = catalog.read_or_none("households", [ID, "household_id"])
    households = (
        None if merge is None and homes is None else household_maps_from(merge, homes, known)
    )
    history = None
    log = catalog.read_or_none("campaign_history")
    if log is not None and campaign.needs_history:
        window = campaign.contact_policy.window_days
        history = contact_history(log, customers[ID], pd.Timestamp(as_of), window)
    return plan_campaign(
        campaign,
        customers,
        estimate,
        customer_value=customer_value,
        history=history,
        households=households,
    )


def plan_with_arms(
    state: Any,
    dataset: str,
    campaign: Campaign,
    model: ArmModel,
    as_of: date | None = None,
    customer_value: CustomerValue | None = None,
) -> tuple[Plan, date]:
    """Plan ``campaign`` over the dataset's customers at ``as_of`` (default: the last data date)
    with the arm model's estimates and, for customer_value offers, ``customer_value``."""
    customers, day = planning_base(state, dataset, model.feature_set, as_of)
    values = None if customer_value is None else customer_value.aligned(customers[ID])
    estimate = arm_estimate(model, customers, campaign)
    return plan_over(state, dataset, campaign, customers, estimate, day, values), day
