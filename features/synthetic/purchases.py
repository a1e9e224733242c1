"""The purchase process of a chunk of customers, its transaction rows and the churn truth.

The generative process, per customer ``i`` (all draws vectorised, chunk by chunk):

1. Sign-up on a day uniform over ``[start, end - 60 days]``; the first order is placed at sign-up.
2. Latent parameters drawn once (Pareto/NBD-like):
   purchase rate ``lambda_i ~ Gamma`` (mean ``LAMBDA_MEAN`` orders / year);
   drop-out rate ``mu_i ~ Gamma`` per year, lifetime after sign-up ``~ Exp(mu_i)``, then no orders;
   spend level ``m_i ~ Gamma`` (mean 1) driving the price tier, the quantities and the basket size;
   category preferences ``~ Dirichlet(concentration * popularity)``; a main channel.
3. While alive (and up to ``end``), repeat orders arrive as a Poisson process of intensity
   ``lambda_i * s(t)``, ``s`` a daily factor (month x weekday, high in November and December) of
   mean 1. It is simulated exactly: counts are Poisson of the integrated intensity and times invert
   the cumulative intensity ``S`` (piecewise linear on a daily grid). Each order then gets a time of
   day on the same day from a channel profile (stores open 9-20): daily counts are unchanged.
4. An order has ``1 + Poisson`` lines; a line draws a category from the customer's preferences, a
   price tier (1..3) from the spend level, a product by popularity within (category, tier) at the
   catalogue price, and a quantity. Amounts are computed in integer cents.
5. Returns: a line is returned with a category-specific probability (~4 %) 1-21 days after its
   order, as a row with negative quantity and amount, ``is_return = true``, order id
   ``<order_id>-R`` (one return time per order); returns that would fall after ``end`` have not
   happened and are absent.
6. Dirty rows: about ``dirty_share`` of the clean rows are copied and corrupted (missing customer
   id, unparseable ts, non-numeric amount, or missing order id) and appended, so the clean rows
   stay consistent with the truth.

Truth. At cutoff ``T`` (instant ``t``), for customers with a non-return order on days
``T-364 .. T``: ``alive`` is the latent state at ``t``; ``p_churn = 1`` if dead, else (the
lifetime being memoryless, remaining ``R ~ Exp(mu)``) ``P(no order on days T+1 .. T+H) =
E_R[exp(-lambda * (S(t + min(R, H)) - S(t)))]``, which with a daily piecewise-constant ``s`` is
``sum_j mu / (mu + lambda c_j) * exp(-mu j - lambda dS_j) * (1 - exp(-(mu + lambda c_j)))
+ exp(-mu H - lambda dS_H)`` over the days ``j = 0 .. H-1`` of the horizon (``c_j`` = ``s`` on
day ``j``, ``dS_j = S(t + j) - S(t)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.synthetic.campaigns import CampaignRows, Latent, run_campaigns
from features.synthetic.columns import encoded, id_strings, money_strings
from features.synthetic.config import (
    BAD_AMOUNT,
    BAD_TS,
    CHANNEL_SHARES,
    CHANNELS,
    CONTACT_CHANNELS,
    DAY_SECONDS,
    DIRICHLET_CONCENTRATION,
    LAMBDA_MEAN,
    LAMBDA_SHAPE,
    LINES_BASE,
    LINES_PER_SPEND,
    MU_MEAN,
    MU_SHAPE,
    POPULARITY_SLOTS,
    QTY_PER_SPEND,
    RETURN_DELAY_DAYS,
    SIGNUP_MARGIN_DAYS,
    SPEND_SHAPE,
    TIER_BASE,
    TIER_SLOPE,
    YEAR_DAYS,
    SyntheticConfig,
)
from features.synthetic.people import customers_tables
from features.synthetic.world import (
    World,
    draw_categorical,
    draw_channels,
    draw_time_of_day,
    p_no_purchase,
)

TRANSACTION_COLUMNS = (
    "customer_id",
    "ts",
    "order_id",
    "product_id",
    "category",
    "quantity",
    "amount",
    "is_return",
    "channel",
)
TRUTH_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("as_of", pa.date32()),
        ("horizon_days", pa.int32()),
        ("alive", pa.bool_()),
        ("p_churn", pa.float64()),
    ]
)


@dataclass
class Chunk:
    """One chunk of simulated customers: orders, transaction rows and churn truth."""

    index: int
    first: int
    signup_day: np.ndarray
    n_orders: int
    event_sec: np.ndarray  # seconds since start of each order, then of each return event
    return_orders: np.ndarray  # order index of each return event
    rows_cust: np.ndarray  # local customer index per transaction row
    rows_event: np.ndarray  # < n_orders: the order; else a return event
    rows_return: np.ndarray
    rows_product: np.ndarray
    rows_qty: np.ndarray
    rows_channel: np.ndarray
    truth_cust: np.ndarray
    truth_cutoff: np.ndarray  # index into the sorted cutoffs
    truth_alive: np.ndarray
    truth_p: np.ndarray
    customers: tuple[pa.Table, pa.Table, pa.Table]  # customers, duplicates, households
    campaigns: CampaignRows | None = None


def simulate_chunk(
    cfg: SyntheticConfig,
    world: World,
    cutoff_days: list[int],
    index: int,
    first: int,
    n: int,
    id_width: int,
) -> Chunk:
    """Simulate customers ``first .. first + n - 1``: customers, orders, campaigns, lines,
    returns and churn truth."""
    rng = np.random.default_rng([cfg.seed, 1, index])
    end_sec = world.n_data_days * DAY_SECONDS
    signup_day = rng.integers(0, world.n_data_days - SIGNUP_MARGIN_DAYS, n)
    customers = customers_tables(cfg, index, first, signup_day, id_width)  # its own stream
    lam, mu, spend, main_channel, prefs, tier_probs = draw_traits(rng, world, n)

    # First order at sign-up, then a Poisson process of intensity lam * s(t) until death or end.
    first_channel = draw_channels(rng, main_channel, np.arange(n))
    signup_sec = signup_day * DAY_SECONDS + draw_time_of_day(rng, first_channel)
    birth = signup_sec / DAY_SECONDS
    death = birth + rng.exponential(1.0, n) / mu
    stop = np.minimum(death, world.n_data_days)
    grid = np.arange(world.cum_season.size, dtype=float)
    s_birth = np.interp(birth, grid, world.cum_season)
    s_span = np.maximum(np.interp(stop, grid, world.cum_season) - s_birth, 0.0)
    n_repeat = rng.poisson(lam * s_span)
    cust_r = np.repeat(np.arange(n), n_repeat)
    u = s_birth[cust_r] + rng.random(cust_r.size) * s_span[cust_r]
    day_r = np.minimum(np.interp(u, world.cum_season, grid).astype(np.int64), world.n_data_days - 1)
    channel_r = draw_channels(rng, main_channel, cust_r)
    sec_r = np.maximum(day_r * DAY_SECONDS + draw_time_of_day(rng, channel_r), signup_sec[cust_r])

    order_cust = np.concatenate([np.arange(n), cust_r])
    order_sec = np.concatenate([signup_sec, sec_r])
    order_channel = np.concatenate([first_channel, channel_r])
    perm = np.argsort((order_cust << 32) | order_sec, kind="stable")
    order_cust, order_sec, order_channel = order_cust[perm], order_sec[perm], order_channel[perm]
    campaigns: CampaignRows | None = None
    if cfg.campaigns:
        consent = {
            c: customers[0][f"consent_{c}"].to_numpy(zero_copy_only=False).astype(bool)
            for c in CONTACT_CHANNELS
        }
        latent = Latent(lam, mu, death, spend, prefs, tier_probs, main_channel)
        orders, campaigns = run_campaigns(
            cfg, world, index, consent, latent, (order_cust, order_sec, order_channel)
        )
        perm = np.argsort((orders[0] << 32) | orders[1], kind="stable")
        order_cust, order_sec, order_channel = (a[perm] for a in orders)
    n_orders = order_cust.size

    # Lines: category from preferences, tier from spend, product by popularity, quantity.
    line_order, line_cust, category, product, qty = draw_lines(
        rng, world, order_cust, spend, prefs, tier_probs
    )

    # Returns: one return time per order, each line returned with its category's probability.
    lo, hi = RETURN_DELAY_DAYS
    return_sec = order_sec + rng.integers(lo * DAY_SECONDS, hi * DAY_SECONDS + 1, n_orders)
    returned = rng.random(line_order.size) < world.category_return_rate[category]
    returned &= return_sec[line_order] < end_sec
    return_qty = 1 + (rng.random(line_order.size) * qty).astype(np.int64)
    ret = np.flatnonzero(returned)
    return_orders, return_event = np.unique(line_order[ret], return_inverse=True)
    event_sec = np.concatenate([order_sec, return_sec[return_orders]])

    rows_event = np.concatenate([line_order, n_orders + return_event.reshape(-1)])
    rows_cust = np.concatenate([line_cust, line_cust[ret]])
    perm = np.argsort((rows_cust << 32) | event_sec[rows_event], kind="stable")
    rows_event = rows_event[perm]
    rows_product = np.concatenate([product, product[ret]])[perm]
    truth = _churn_truth(
        world, cutoff_days, cfg.horizon_days, order_cust, order_sec, death, lam, mu
    )
    return Chunk(
        index=index,
        first=first,
        signup_day=signup_day,
        n_orders=n_orders,
        event_sec=event_sec,
        return_orders=return_orders,
        rows_cust=rows_cust[perm],
        rows_event=rows_event,
        rows_return=rows_event >= n_orders,
        rows_product=rows_product,
        rows_qty=np.concatenate([qty, -return_qty[ret]])[perm],
        rows_channel=np.concatenate([order_channel, order_channel[return_orders]])[rows_event],
        truth_cust=truth[0],
        truth_cutoff=truth[1],
        truth_alive=truth[2],
        truth_p=truth[3],
        customers=customers,
        campaigns=campaigns,
    )


def draw_traits(
    rng: np.random.Generator, world: World, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each of ``n`` buyers' hidden traits, drawn in this order: purchase rate and dropout rate
    per day, spend scale, main channel, category preferences, and tier probabilities (which
    rise with spend)."""
    lam = rng.gamma(LAMBDA_SHAPE, LAMBDA_MEAN / LAMBDA_SHAPE, n) / YEAR_DAYS
    mu = rng.gamma(MU_SHAPE, MU_MEAN / MU_SHAPE, n) / YEAR_DAYS
    spend = rng.gamma(SPEND_SHAPE, 1.0 / SPEND_SHAPE, n)
    main_channel = rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES)
    prefs = rng.dirichlet(DIRICHLET_CONCENTRATION * world.category_popularity, n)
    tier_logit = TIER_BASE + TIER_SLOPE * np.log(spend)[:, None]
    tier_probs = np.exp(tier_logit - tier_logit.max(axis=1, keepdims=True))
    tier_probs /= tier_probs.sum(axis=1, keepdims=True)
    return lam, mu, spend, main_channel, prefs, tier_probs


def draw_lines(
    rng: np.random.Generator,
    world: World,
    order_cust: np.ndarray,
    spend: np.ndarray,
    prefs: np.ndarray,
    tier_probs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The order lines of the orders of ``order_cust``: (order of each line, its customer,
    category, product, quantity); the category from preferences, the tier from spend, the
    product by popularity, the quantity from spend (drawn in that order)."""
    n_lines = 1 + rng.poisson(LINES_BASE + LINES_PER_SPEND * spend[order_cust])
    line_order = np.repeat(np.arange(order_cust.size), n_lines)
    line_cust = order_cust[line_order]
    category = draw_categorical(rng, prefs, line_cust)
    tier = draw_categorical(rng, tier_probs, line_cust)
    slot = (rng.random(line_cust.size) * POPULARITY_SLOTS).astype(np.int64)
    product = world.product_lookup[(3 * category + tier) * POPULARITY_SLOTS + slot]
    qty = 1 + rng.poisson(QTY_PER_SPEND * spend[line_cust])
    return line_order, line_cust, category, product, qty


def _churn_truth(
    world: World,
    cutoff_days: list[int],
    horizon: int,
    order_cust: np.ndarray,
    order_sec: np.ndarray,
    death: np.ndarray,
    lam: np.ndarray,
    mu: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True churn probability at each cutoff for customers with an order in the past 365 days."""
    custs: list[np.ndarray] = []
    cuts: list[np.ndarray] = []
    alives: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    for k, day in enumerate(cutoff_days):
        in_lookback = (order_sec > (day - 365) * DAY_SECONDS) & (order_sec <= day * DAY_SECONDS)
        active = np.unique(order_cust[in_lookback])
        alive = death[active] > day
        p = np.ones(active.size)
        p[alive] = p_no_purchase(world, day, horizon, lam[active[alive]], mu[active[alive]])
        custs.append(active)
        cuts.append(np.full(active.size, k))
        alives.append(alive)
        ps.append(p)
    if not custs:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, bool), np.zeros(0)
    cust, cut = np.concatenate(custs), np.concatenate(cuts)
    perm = np.lexsort((cut, cust))
    return cust[perm], cut[perm], np.concatenate(alives)[perm], np.concatenate(ps)[perm]


def churn_truth_table(
    cfg: SyntheticConfig, chunk: Chunk, as_of: pa.Array, id_width: int
) -> pa.Table:
    """A chunk's churn-truth rows (``as_of``: the date of each sorted cutoff)."""
    return pa.table(
        {
            "customer_id": id_strings("C", chunk.first + chunk.truth_cust + 1, id_width),
            "as_of": as_of.take(pa.array(chunk.truth_cutoff)),
            "horizon_days": pa.array(np.full(chunk.truth_cust.size, cfg.horizon_days), pa.int32()),
            "alive": pa.array(chunk.truth_alive),
            "p_churn": pa.array(chunk.truth_p),
        },
        schema=TRUTH_SCHEMA,
    )


def transactions_table(
    cfg: SyntheticConfig, world: World, chunk: Chunk, order_offset: int, id_width: int
) -> tuple[pa.Table, int]:
    """A chunk's rows, dirty copies appended, as a CSV-ready table; returns (table, n_dirty)."""
    n_rows = chunk.rows_cust.size
    epoch = (cfg.start - date(1970, 1, 1)).days * DAY_SECONDS
    order_id = id_strings("O", order_offset + np.arange(chunk.n_orders) + 1, 9)
    return_id = pc.binary_join_element_wise(order_id.take(pa.array(chunk.return_orders)), "-R", "")
    event_ts = pa.array(chunk.event_sec + epoch, pa.timestamp("s")).cast(pa.string())
    q_max = int(np.abs(chunk.rows_qty).max()) if n_rows else 1
    width = 2 * q_max + 1
    amount_cents = world.product_price_cents[:, None] * np.arange(-q_max, q_max + 1)
    amount_idx = chunk.rows_product * width + chunk.rows_qty + q_max

    rng = np.random.default_rng([cfg.seed, 3, chunk.index])
    n_dirty = int(rng.binomial(n_rows, cfg.dirty_share)) if n_rows else 0
    source = rng.integers(0, max(n_rows, 1), n_dirty)
    kind = rng.integers(0, 4, n_dirty)
    variant = rng.integers(0, 4, n_dirty)

    def with_dirty(values: np.ndarray) -> np.ndarray:
        return np.concatenate([values, values[source]])

    clean = np.zeros(n_rows, bool)
    ts_idx = with_dirty(chunk.rows_event)
    ts_idx[n_rows:][kind == 1] = len(event_ts) + variant[kind == 1]
    amount_idx = with_dirty(amount_idx)
    amount_idx[n_rows:][kind == 2] = amount_cents.size + variant[kind == 2]
    product = with_dirty(chunk.rows_product)
    table = pa.table(
        {
            "customer_id": encoded(
                with_dirty(chunk.rows_cust),
                id_strings("C", chunk.first + np.arange(chunk.signup_day.size) + 1, id_width),
                np.concatenate([clean, kind == 0]),
            ),
            "ts": encoded(ts_idx, pa.concat_arrays([event_ts, pa.array(BAD_TS)])),
            "order_id": encoded(
                with_dirty(chunk.rows_event),
                pa.concat_arrays([order_id, return_id]),
                np.concatenate([clean, kind == 3]),
            ),
            "product_id": encoded(product, pa.array(world.product_ids)),
            "category": encoded(world.product_category[product], pa.array(world.category_names)),
            "quantity": pa.array(with_dirty(chunk.rows_qty), pa.int64()),
            "amount": encoded(
                amount_idx,
                pa.concat_arrays([money_strings(amount_cents.ravel()), pa.array(BAD_AMOUNT)]),
            ),
            "is_return": pa.array(with_dirty(chunk.rows_return)),
            "channel": encoded(with_dirty(chunk.rows_channel), pa.array(CHANNELS)),
        }
    )
    return table, n_dirty
