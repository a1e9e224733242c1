"""The world all chunks share (daily seasonality, product catalogue, category properties) and
the sampling steps that both the purchase process and the campaigns use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from features.synthetic.config import (
    CHANNELS,
    HOUR_WEIGHTS,
    MAIN_CHANNEL_LOYALTY,
    MONTH_FACTORS,
    POPULARITY_SLOTS,
    SEASON_NORM,
    WEEKDAY_FACTORS,
    SyntheticConfig,
)


@dataclass(frozen=True)
class World:
    """What all chunks share: the daily seasonality, the catalogue, category properties."""

    n_data_days: int
    season: np.ndarray  # s(day), day = 0..G-1 from start
    cum_season: np.ndarray  # S at day boundaries 0..G, S[0] = 0
    category_names: list[str]
    category_popularity: np.ndarray
    category_return_rate: np.ndarray
    product_ids: list[str]
    product_category: np.ndarray
    product_tier: np.ndarray  # 0..2
    product_price_cents: np.ndarray
    product_lookup: np.ndarray  # (3 * category + tier) * POPULARITY_SLOTS + slot -> product


def cutoff_day(cfg: SyntheticConfig, cutoff: date) -> int:
    """The instant a cutoff date stands for (the end of day ``cutoff``), in days from ``start``."""
    return (cutoff - cfg.start).days + 1


def build_world(cfg: SyntheticConfig) -> World:
    """Draw the catalogue and the seasonality from the seed (shared by all chunks)."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_data_days = (cfg.end - cfg.start).days + 1
    last_truth_day = max((cutoff_day(cfg, c) for c in cfg.truth_cutoffs), default=0)
    n_grid = max(n_data_days, last_truth_day + cfg.horizon_days) + 1
    days = np.datetime64(cfg.start.isoformat(), "D") + np.arange(n_grid)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    season = MONTH_FACTORS[month] * WEEKDAY_FACTORS[weekday] / SEASON_NORM
    cum_season = np.concatenate([[0.0], np.cumsum(season)])

    k = cfg.n_categories
    popularity = rng.permutation(1.0 / np.arange(1, k + 1) ** 0.7)
    popularity /= popularity.sum()
    return_rate = rng.uniform(0.02, 0.07, k)
    price_level = np.exp(rng.normal(np.log(30.0), 0.6, k))
    tier_mult = np.array([0.6, 1.0, 1.8])
    ids: list[str] = []
    cats: list[np.ndarray] = []
    tiers: list[np.ndarray] = []
    prices: list[np.ndarray] = []
    lookups: list[np.ndarray] = []
    slots = (np.arange(POPULARITY_SLOTS) + 0.5) / POPULARITY_SLOTS
    for c in range(k):
        n = int(rng.integers(20, 51))
        n1, n2 = round(0.5 * n), round(0.3 * n)
        for t, m in enumerate((n1, n2, n - n1 - n2)):
            done = sum(map(len, cats[3 * c :]))  # products already made in this category
            ids.extend(f"P{c + 1:02d}{done + j + 1:03d}" for j in range(m))
            price = price_level[c] * tier_mult[t] * np.exp(rng.normal(0.0, 0.2, m))
            weight = rng.permutation(1.0 / np.arange(1, m + 1) ** 0.8)
            cdf = np.cumsum(weight) / weight.sum()
            offset = sum(map(len, cats))
            lookups.append(offset + np.minimum(np.searchsorted(cdf, slots), m - 1))
            cats.append(np.full(m, c))
            tiers.append(np.full(m, t))
            prices.append(np.maximum(np.round(price) * 100 - 1, 99).astype(np.int64))
    return World(
        n_data_days=n_data_days,
        season=season,
        cum_season=cum_season,
        category_names=[f"cat_{c + 1:02d}" for c in range(k)],
        category_popularity=popularity,
        category_return_rate=return_rate,
        product_ids=ids,
        product_category=np.concatenate(cats),
        product_tier=np.concatenate(tiers),
        product_price_cents=np.concatenate(prices),
        product_lookup=np.concatenate(lookups).astype(np.int32),
    )


def draw_categorical(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Draw one category per entry of ``rows`` from the distributions ``probs[rows]``."""
    cdf = np.ascontiguousarray(np.cumsum(probs[:, :-1], axis=1).T)
    u = rng.random(rows.size)
    picks = np.zeros(rows.size, np.int64)
    for column in cdf:  # K - 1 comparisons per row: faster than a search for small K
        picks += u > column[rows]
    return picks


def draw_time_of_day(rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
    """Seconds after midnight (1..86399) from each channel's hour-of-day profile."""
    cdf = np.cumsum(HOUR_WEIGHTS, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(len(CHANNELS))[:, None]).ravel()
    hour = np.searchsorted(flat, channel + rng.random(channel.size), side="right") - channel * 24
    sec = np.minimum(hour, 23) * 3600 + rng.integers(0, 3600, channel.size)
    return np.maximum(sec, 1)


def p_no_purchase(
    world: World, day: int, horizon: int, lam: np.ndarray, mu: np.ndarray
) -> np.ndarray:
    """P(no order in (day, day + horizon]) for customers alive at ``day`` (rates per day)."""
    cum = world.cum_season[day : day + horizon + 1] - world.cum_season[day]
    season = world.season[day : day + horizon]
    p = np.exp(-mu * horizon - lam * cum[horizon])
    for j in range(horizon):
        rate = mu + lam * season[j]
        p += mu / rate * np.exp(-mu * j - lam * cum[j]) * -np.expm1(-rate)
    return np.minimum(p, 1.0)


def draw_channels(
    rng: np.random.Generator, main_channel: np.ndarray, cust: np.ndarray
) -> np.ndarray:
    """Channel per order: the customer's main channel mostly, else any channel."""
    other = rng.integers(0, len(CHANNELS), cust.size)
    return np.where(rng.random(cust.size) < MAIN_CHANNEL_LOYALTY, main_channel[cust], other)
