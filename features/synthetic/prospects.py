"""Prospects: visitors and registered non-buyers with a known first-purchase process (opt-in).

With a ``prospects`` block the generator adds ``n_prospects`` people after the customers, each in
their own random streams (``[seed, 11, chunk]``, customer records ``[seed, 2, PROSPECT_STREAM +
chunk]``, dirty rows ``[seed, 3, PROSPECT_STREAM + chunk]``), so every row of a generator without
the block is unchanged and the files only gain rows appended after them (and ``events.csv``,
``truth_first_purchase.parquet``). Ids continue after the customers' (``C<n_customers + 1>`` ...).

The process, per prospect ``i`` (times in days from ``start``):

1. First visit at ``a_i ~ Uniform(0, G)`` (``G`` days of data); latent interest ``z_i ~ N(0, 1)``;
   interest fades as ``e_i(t) = exp(-(t - a_i) / INTEREST_DAYS)``; an age band (the customer
   record's, drawn for everyone, seen only once the person registers).
2. Repeat visits: a Poisson process of intensity ``VISIT_RATE exp(VISIT_INTEREST z_i) e_i(t)``
   until the first order or the end of the data (``event_type = visit`` in ``events.csv``).
3. Registration at ``r_i``, the first event of the fading hazard ``REGISTER_RATE
   exp(REGISTER_INTEREST z_i) e_i(t)`` (never, for some); the customer record appears with
   ``signup_date`` = the day of ``min(r_i, c_i)`` (a first order registers a person too); people
   who never register by the end have no record.
4. First order: hazard ``h_i(t) = A_i e_i(t) (REGISTERED_LIFT if t >= r_i else 1)`` with ``A_i =
   CONVERT_RATE exp(CONVERT_INTEREST z_i) AGE_LIFT[age_i]``; its cumulative ``L_i(t) = A_i tau
   [(1 - e_i(min(t, r_i))) + K (e_i(r_i) - e_i(t)) 1(t > r_i)]`` (``tau`` = INTEREST_DAYS, ``K`` =
   REGISTERED_LIFT) is finite, so some never buy; the time ``c_i`` solves ``L_i(c_i) = E_i``,
   ``E_i ~ Exp(1)``.
5. After the first order a converted prospect is an ordinary customer: latent purchase rate,
   lifetime, spend and preferences drawn as in ``purchases``, repeat orders on the seasonal
   Poisson process, lines and dirty copies as for customers (no returns, no campaigns), and rows
   in the churn truth like every customer's.

Truth. At cutoff ``T`` (instant ``t``) for each prospect known by then (first visit by ``t``) with
no order by ``t``: ``p_first_purchase = 1 - exp(-(L_i(t + H) - L_i(t)))``, the probability of a
first order on days ``T+1 .. T+H``, and whether the person was registered at ``t``
(``truth_first_purchase.parquet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.synthetic.columns import encoded, id_strings
from features.synthetic.config import (
    AGE_LIFT,
    CONVERT_INTEREST,
    CONVERT_RATE,
    DAY_SECONDS,
    INTEREST_DAYS,
    PROSPECT_STREAM,
    REGISTER_INTEREST,
    REGISTER_RATE,
    REGISTERED_LIFT,
    VISIT_INTEREST,
    VISIT_RATE,
    SyntheticConfig,
)
from features.synthetic.people import customers_tables
from features.synthetic.purchases import Chunk, _churn_truth, draw_lines, draw_traits
from features.synthetic.world import World, draw_channels, draw_time_of_day

EVENT_COLUMNS = ("customer_id", "ts", "event_type")
FIRST_PURCHASE_TRUTH_FILE = "truth_first_purchase.parquet"
FIRST_PURCHASE_TRUTH_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("as_of", pa.date32()),
        ("horizon_days", pa.int32()),
        ("registered", pa.bool_()),
        ("p_first_purchase", pa.float64()),
    ]
)


@dataclass(frozen=True)
class Prospects:
    """A chunk of prospects' latent state (times in days from ``start``; inf = never)."""

    arrival: np.ndarray
    register: np.ndarray
    convert: np.ndarray
    rate: np.ndarray  # A_i, first orders per day at the first visit before registration


def cumulative_hazard(p: Prospects, t: np.ndarray | float) -> np.ndarray:
    """``L_i(t)``: the integrated first-order hazard from the first visit to ``t`` (>= arrival)."""
    tau = INTEREST_DAYS
    t = np.maximum(np.asarray(t, dtype=float), p.arrival)
    fade = np.exp(-(np.minimum(t, p.register) - p.arrival) / tau)
    fade_r = np.exp(-(p.register - p.arrival) / tau)  # 0 when never registered
    fade_t = np.exp(-(t - p.arrival) / tau)
    after = np.where(t > p.register, REGISTERED_LIFT * (fade_r - fade_t), 0.0)
    return p.rate * tau * ((1.0 - fade) + after)


def _fading_event_time(arrival: np.ndarray, rate: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """The first event of a hazard ``rate * e(t)`` after ``arrival`` (inf: never)."""
    fade = 1.0 - draw / (rate * INTEREST_DAYS)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fade > 0, arrival - INTEREST_DAYS * np.log(fade), np.inf)


def _conversion_time(
    arrival: np.ndarray, register: np.ndarray, rate: np.ndarray, draw: np.ndarray
) -> np.ndarray:
    """The time ``c`` with ``L(c) = draw`` (inf when the total hazard stays below ``draw``)."""
    tau = INTEREST_DAYS
    fade_r = np.exp(-(register - arrival) / tau)
    before_r = rate * tau * (1.0 - fade_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        fade_c = np.where(
            draw < before_r,
            1.0 - draw / (rate * tau),
            fade_r - (draw - before_r) / (REGISTERED_LIFT * rate * tau),
        )
        return np.where(fade_c > 0, arrival - tau * np.log(fade_c), np.inf)


def first_purchase_probability(p: Prospects, t: float, horizon: int) -> np.ndarray:
    """P(first order in (t, t + horizon]) for prospects with no order by ``t``."""
    return -np.expm1(-(cumulative_hazard(p, t + horizon) - cumulative_hazard(p, t)))


@dataclass
class ProspectChunk:
    """A chunk of prospects as tables: customers (+ duplicate / household truth), events, the
    converted prospects' orders (a ``Chunk`` for ``transactions_table``) and both truths."""

    chunk: Chunk
    events: pa.Table
    first_purchase_truth: pa.Table


def simulate_prospects(
    cfg: SyntheticConfig,
    world: World,
    churn_cutoff_days: list[int],
    index: int,
    first: int,
    n: int,
    id_width: int,
) -> ProspectChunk:
    """Simulate prospects ``first .. first + n - 1`` (numbered after the customers)."""
    rng = np.random.default_rng([cfg.seed, 11, index])
    offset = cfg.n_customers + first
    g = float(world.n_data_days)
    # the records are drawn for everyone (the age band is latent until registration)
    records = customers_tables(
        cfg, PROSPECT_STREAM + index, offset, np.zeros(n, np.int64), id_width
    )
    age = records[0].column("age_band").combine_chunks().indices.to_numpy().astype(np.int64)

    arrival = rng.uniform(0.0, g, n)
    z = rng.normal(0.0, 1.0, n)
    register = _fading_event_time(
        arrival, REGISTER_RATE * np.exp(REGISTER_INTEREST * z), rng.exponential(1.0, n)
    )
    rate = CONVERT_RATE * np.exp(CONVERT_INTEREST * z) * np.asarray(AGE_LIFT)[age]
    convert = _conversion_time(arrival, register, rate, rng.exponential(1.0, n))
    latent = Prospects(arrival, register, convert, rate)

    # visits: the first at arrival, then Poisson with a fading intensity until an order or the end
    tau = INTEREST_DAYS
    stop = np.minimum(convert, g)
    reach = 1.0 - np.exp(-(stop - arrival) / tau)  # the share of the fading mass until ``stop``
    visits = rng.poisson(VISIT_RATE * np.exp(VISIT_INTEREST * z) * tau * reach)
    visit_cust = np.repeat(np.arange(n), visits)
    u = rng.random(visit_cust.size) * reach[visit_cust]
    visit_day = arrival[visit_cust] - tau * np.log1p(-u)
    visit_cust = np.concatenate([np.arange(n), visit_cust])
    visit_day = np.concatenate([arrival, visit_day])
    visit_sec = np.minimum((visit_day * DAY_SECONDS).astype(np.int64), int(g) * DAY_SECONDS - 1)
    order = np.lexsort((visit_sec, visit_cust))
    visit_cust, visit_sec = visit_cust[order], visit_sec[order]

    # customer records: from registration (or the first order), for those before the end
    signup = np.minimum(register, convert)
    known = signup < g
    signup_day = np.where(known, np.floor(np.minimum(signup, g - 1)), 0).astype(np.int64)
    customers, duplicates, households = _records(cfg, records, known, signup_day)

    chunk = _converted_orders(cfg, world, rng, churn_cutoff_days, index, offset, latent)
    chunk.customers = (customers, duplicates, households)
    ids = id_strings("C", offset + np.arange(n) + 1, id_width)
    epoch = (cfg.start - date(1970, 1, 1)).days * DAY_SECONDS
    events = pa.table(
        {
            "customer_id": ids.take(pa.array(visit_cust)),
            "ts": pa.array(visit_sec + epoch, pa.timestamp("s")).cast(pa.string()),
            "event_type": encoded(np.zeros(visit_cust.size, np.int64), pa.array(["visit"])),
        }
    )
    truth = _first_purchase_truth(cfg, latent, ids)
    return ProspectChunk(chunk, events, truth)


def _records(
    cfg: SyntheticConfig,
    records: tuple[pa.Table, pa.Table, pa.Table],
    known: np.ndarray,
    signup_day: np.ndarray,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The customer records of the registered, with their sign-up dates, and the duplicate and
    household truth among them."""
    table, duplicates, households = records
    days = signup_day + (cfg.start - date(1970, 1, 1)).days
    signup = pa.array(days, pa.int32()).cast(pa.date32())
    table = table.set_column(table.schema.get_field_index("signup_date"), "signup_date", signup)
    mask = pa.array(known)
    table, households = table.filter(mask), households.filter(mask)
    kept = table.column("customer_id")
    in_kept = pc.and_(
        pc.is_in(duplicates.column("customer_id"), kept),
        pc.is_in(duplicates.column("duplicate_of"), kept),
    )
    return table, duplicates.filter(in_kept), households


def _converted_orders(
    cfg: SyntheticConfig,
    world: World,
    rng: np.random.Generator,
    churn_cutoff_days: list[int],
    index: int,
    offset: int,
    p: Prospects,
) -> Chunk:
    """The orders of the prospects who bought: the first at ``c_i``, then a customer's life."""
    n = p.arrival.size
    g = world.n_data_days
    lam, mu, spend, main_channel, prefs, tier_probs = draw_traits(rng, world, n)
    bought = p.convert < g
    birth = np.where(bought, p.convert, np.inf)
    death = birth + rng.exponential(1.0, n) / mu
    stop = np.minimum(death, g)
    grid = np.arange(world.cum_season.size, dtype=float)
    s_birth = np.interp(np.minimum(birth, g), grid, world.cum_season)
    s_span = np.where(bought, np.maximum(np.interp(stop, grid, world.cum_season) - s_birth, 0), 0)
    n_repeat = rng.poisson(lam * s_span)
    cust_r = np.repeat(np.arange(n), n_repeat)
    u = s_birth[cust_r] + rng.random(cust_r.size) * s_span[cust_r]
    day_r = np.minimum(np.interp(u, world.cum_season, grid).astype(np.int64), g - 1)
    channel_r = draw_channels(rng, main_channel, cust_r)
    first_cust = np.flatnonzero(bought)
    first_sec = (p.convert[first_cust] * DAY_SECONDS).astype(np.int64)
    first_channel = draw_channels(rng, main_channel, first_cust)
    after_first = (birth[cust_r] * DAY_SECONDS).astype(np.int64) + 1
    sec_r = np.maximum(day_r * DAY_SECONDS + draw_time_of_day(rng, channel_r), after_first)
    order_cust = np.concatenate([first_cust, cust_r])
    order_sec = np.concatenate([first_sec, sec_r])
    order_channel = np.concatenate([first_channel, channel_r])
    perm = np.argsort((order_cust << 32) | order_sec, kind="stable")
    order_cust, order_sec, order_channel = order_cust[perm], order_sec[perm], order_channel[perm]
    n_orders = order_cust.size

    line_order, line_cust, _, product, qty = draw_lines(
        rng, world, order_cust, spend, prefs, tier_probs
    )

    truth = _churn_truth(
        world, churn_cutoff_days, cfg.horizon_days, order_cust, order_sec, death, lam, mu
    )
    empty = np.zeros(0, np.int64)
    return Chunk(
        index=PROSPECT_STREAM + index,
        first=offset,
        signup_day=np.zeros(n, np.int64),  # only its size is read: the id dictionary
        n_orders=n_orders,
        event_sec=order_sec,
        return_orders=empty,
        rows_cust=line_cust,
        rows_event=line_order,
        rows_return=np.zeros(line_order.size, bool),
        rows_product=product,
        rows_qty=qty,
        rows_channel=order_channel[line_order],
        truth_cust=truth[0],
        truth_cutoff=truth[1],
        truth_alive=truth[2],
        truth_p=truth[3],
        customers=(pa.table({}), pa.table({}), pa.table({})),  # set by the caller
    )


def _first_purchase_truth(cfg: SyntheticConfig, p: Prospects, ids: pa.Array) -> pa.Table:
    """The first-purchase truth at each prospect cutoff: prospects seen by then, no order yet."""
    parts = []
    horizon = cfg.prospect_horizon
    for cutoff in cfg.prospect_cutoffs:
        t = float((cutoff - cfg.start).days + 1)  # the end of day T
        rows = np.flatnonzero((p.arrival < t) & (p.convert > t))
        sub = Prospects(*(a[rows] for a in (p.arrival, p.register, p.convert, p.rate)))
        parts.append(
            pa.table(
                {
                    "customer_id": ids.take(pa.array(rows)),
                    "as_of": pa.array([cutoff] * rows.size, pa.date32()),
                    "horizon_days": pa.array(np.full(rows.size, horizon), pa.int32()),
                    "registered": pa.array(sub.register < t),
                    "p_first_purchase": pa.array(first_purchase_probability(sub, t, horizon)),
                },
                schema=FIRST_PURCHASE_TRUTH_SCHEMA,
            )
        )
    if not parts:
        return FIRST_PURCHASE_TRUTH_SCHEMA.empty_table()
    return pa.concat_tables(parts)
