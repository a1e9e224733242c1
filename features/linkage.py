"""Duplicate customers and households: rule-based and fuzzy record linkage with rapidfuzz.

(Over 600 lines on purpose: blocking, pair scoring, the merge map and households are one
algorithm over one frame; splitting it would spread one explanation across files.)

Pure functions over a customers frame (raw or standardised: records are standardised first with
:func:`features.customers.standardise_customers`, which is idempotent). Nothing is deleted:
:func:`find_duplicates` returns a *merge map* (one row per input customer, naming its surviving
``master_id``), :func:`assign_households` one row per customer with its ``household_id``.

Candidate pairs come from blocking (same e-mail key, phone, name + postcode, postcode, surname
Soundex + first initial + postcode district); each pair is compared once and accepted by the first
rule that holds (``email``, ``phone``, ``name_postcode``, ``fuzzy``). Accepted pairs are joined into
clusters strongest first (transitively), except where a cluster would then hold a *cannot-link*
pair (evidently two people). docs/customer_processing.md explains the rules and guards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz
from rapidfuzz.distance import JaroWinkler, Levenshtein
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.customers import email_match_key, fold, map_values, standardise_customers

Rule = Literal["email", "phone", "name_postcode", "fuzzy"]
RULES: tuple[Rule, ...] = ("email", "phone", "name_postcode", "fuzzy")

MERGE_MAP_COLUMNS = [
    "customer_id",
    "master_id",
    "match_rule",
    "score",
    "evidence",
    "matched_to",
    "cluster_size",
]
HOUSEHOLD_COLUMNS = ["customer_id", "household_id", "household_size", "household_rule"]

#: Address words written in several ways -> one form (applied to folded address tokens).
ADDRESS_ABBREVIATIONS: dict[str, str] = {
    "street": "st",
    "str": "st",
    "road": "rd",
    "avenue": "ave",
    "av": "ave",
    "lane": "ln",
    "drive": "dr",
    "court": "ct",
    "place": "pl",
    "crescent": "cres",
    "close": "cl",
    "gardens": "gdns",
    "terrace": "ter",
    "terr": "ter",
    "square": "sq",
    "mount": "mt",
    "park": "pk",
    "grove": "gr",
    "highway": "hwy",
    "boulevard": "blvd",
    "parade": "pde",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "apartment": "flat",
    "apt": "flat",
    "flt": "flat",
    "saint": "st",
}
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "rev"})
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd"})
_STREET_SUFFIX = re.compile(r"(?<=[a-z])(strasse|straat)$")
_NUMBER = re.compile(r"\d+[a-z]?\b")
_SOUNDEX = str.maketrans("bfpvcgjkqsxzdtlmnr", "111122222222334556")


class LinkageConfig(BaseModel):
    """Rules and thresholds of duplicate detection and household assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_country: str = Field("GB", description="country of records without one (phones)")
    rules: tuple[Rule, ...] = Field(RULES, description="rules that may merge two records")
    drop_email_plus_tag: bool = Field(True, description="a.b+shop@x.com matches a.b@x.com")
    generic_email_locals: tuple[str, ...] = Field(
        (
            "info",
            "admin",
            "office",
            "contact",
            "sales",
            "enquiries",
            "enquiry",
            "hello",
            "mail",
            "home",
            "family",
            "accounts",
            "noreply",
            "no-reply",
            "test",
            "none",
            "nobody",
        ),
        description="shared e-mail local parts: never a duplicate by themselves",
    )
    first_name_min: float = Field(0.9, ge=0, le=1, description="Jaro-Winkler, first names")
    email_first_name_min: float = Field(
        0.8, ge=0, le=1, description="first-name guard of the e-mail rule (a shared mailbox)"
    )
    last_name_min: float = Field(0.9, ge=0, le=1, description="Jaro-Winkler, surnames")
    address_min: float = Field(0.85, ge=0, le=1, description="token-sort ratio, addresses")
    postcode_min: float = Field(0.8, ge=0, le=1, description="Levenshtein similarity, postcodes")
    fuzzy_threshold: float = Field(0.92, ge=0, le=1, description="weighted fuzzy score to merge")
    max_block_size: int = Field(
        400, ge=2, description="blocks with more records are skipped (their pairs are not compared)"
    )
    conflict_columns: tuple[str, ...] = Field(
        ("birth_date", "date_of_birth", "dob"),
        description="two records whose values here differ are never merged",
    )
    email_conflict_blocks: bool = Field(
        True,
        description="records with different valid personal e-mails are never merged by the "
        "phone, name_postcode or fuzzy rules (precision first: a wrong merge mixes two people)",
    )
    household_address_min: float = Field(0.9, ge=0, le=1, description="address similarity")
    household_postcode_only: bool = Field(
        True, description="same surname + postcode is a household when an address is missing"
    )
    max_phone_household: int = Field(
        6, ge=2, description="a phone shared by more customers is not a household link"
    )


# --------------------------------------------------------------------------- match keys


def soundex(name: str) -> str:
    """American Soundex of a folded name ("" for an empty one)."""
    letters = re.sub(r"[^a-z]", "", name)
    if not letters:
        return ""
    codes = letters.translate(_SOUNDEX)
    out, last = letters[0].upper(), codes[0]
    for ch, code in zip(letters[1:], codes[1:], strict=True):
        if code.isdigit() and code != last:
            out += code
        if ch not in "hw":
            last = code
    return (out + "000")[:4]


def address_key(address: str | None) -> str | None:
    """Folded address with common abbreviations unified ("Street" and "St." both give "st")."""
    if not address:
        return None
    tokens = [ADDRESS_ABBREVIATIONS.get(t, t) for t in fold(address).split()]
    # German / Dutch street names written as one word: "Hauptstrasse" and "Hauptstr." agree
    tokens = [_STREET_SUFFIX.sub("str", t) for t in tokens]
    return " ".join(tokens) or None


def split_name(full: str | None) -> tuple[str | None, str | None]:
    """(first, last) of a folded full name: titles dropped, "Last, First" understood."""
    if not full:
        return None, None
    if "," in full:
        last, _, first = full.partition(",")
        full = f"{first} {last}"
    tokens = [t for t in fold(full).split() if t not in _TITLES and t not in _SUFFIXES]
    if not tokens:
        return None, None
    if len(tokens) == 1:
        return None, tokens[0]
    return tokens[0], tokens[-1]


def _numbers(address: str | None) -> str | None:
    """House / flat numbers of an address key, sorted and space-separated."""
    return None if address is None else " ".join(sorted(set(_NUMBER.findall(address))))


def _col(df: pd.DataFrame, *names: str) -> list[object]:
    """Values of the first of ``names`` present in ``df`` (all None when none is)."""
    for name in names:
        if name in df.columns:
            return [None if pd.isna(v) else v for v in df[name].tolist()]
    return [None] * len(df)


def _name_key(value: object) -> str | None:
    if value is None:
        return None
    key = fold(str(value)).replace(" ", "")
    return key or None


def match_keys(df: pd.DataFrame, cfg: LinkageConfig | None = None) -> pd.DataFrame:
    """Comparison keys per record (positional index): names, e-mail, phone, postcode, address."""
    cfg = cfg or LinkageConfig()
    if "customer_id" not in df.columns:
        raise ValueError("customers frame needs a customer_id column")
    std = standardise_customers(df, cfg.default_country).reset_index(drop=True)
    ids = std["customer_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError("customer_id must be unique in the customers frame")

    split = map_values(_col(std, "name"), lambda v: split_name(None if v is None else str(v)))
    firsts = [
        f or s[0]
        for f, s in zip(map_values(_col(std, "first_name"), _name_key), split, strict=True)
    ]
    lasts = [
        x or s[1] for x, s in zip(map_values(_col(std, "last_name"), _name_key), split, strict=True)
    ]

    generic = set(cfg.generic_email_locals)

    def personal_email(value: object) -> str | None:
        key = email_match_key(value, cfg.drop_email_plus_tag)
        return None if key is None or key.split("@")[0] in generic else key

    emails = map_values(_col(std, "email"), personal_email)
    phone_ok = _col(std, "phone_valid")
    phones = [p if ok else None for p, ok in zip(_col(std, "phone"), phone_ok, strict=True)]

    if "address" in std.columns:
        lines = _col(std, "address")
    else:
        lines = [
            " ".join(str(v) for v in parts if v is not None) or None
            for parts in zip(
                _col(std, "address_line1", "address1"),
                _col(std, "address_line2", "address2"),
                strict=True,
            )
        ]
    addresses = map_values(lines, address_key)
    pc_std = _col(std, "postcode")
    postcodes = [None if p is None else str(p).replace(" ", "") for p in pc_std]

    keys = pd.DataFrame(
        {
            "customer_id": ids,
            "first": firsts,
            "last": lasts,
            "email": emails,
            "phone": phones,
            "postcode": postcodes,
            "district": [None if p is None else str(p).split(" ")[0] for p in pc_std],
            "address": addresses,
            "numbers": map_values(addresses, _numbers),
            "first_initial": [None if f is None else f[0] for f in firsts],
            "last_sx": map_values(lasts, lambda x: None if x is None else soundex(x) or None),
        }
        | {
            "conflict_" + col: [None if pd.isna(v) else str(v).strip() for v in std[col].tolist()]
            for col in cfg.conflict_columns
            if col in std.columns
        },
        dtype=object,
    )
    signup = (
        std["signup_date"] if "signup_date" in std.columns else pd.Series(pd.NaT, index=std.index)
    )
    keys["signup"] = pd.to_datetime(signup, errors="coerce").to_numpy()
    return keys


# --------------------------------------------------------------------------- candidate pairs


def block_pairs(keys: pd.DataFrame, on: Sequence[str], max_block_size: int) -> pd.DataFrame:
    """Pairs (i < j) of records sharing all ``on`` keys (none missing); oversized blocks skipped."""
    sub = keys[list(on)].dropna()
    sub = sub.assign(_pos=sub.index.to_numpy())
    sizes = sub.groupby(list(on), sort=False)["_pos"].transform("size")
    sub = sub[(sizes >= 2) & (sizes <= max_block_size)]
    if sub.empty:
        return pd.DataFrame({"i": np.array([], dtype=np.int64), "j": np.array([], dtype=np.int64)})
    pairs = sub.merge(sub, on=list(on), suffixes=("_i", "_j"))
    pairs = pairs[pairs["_pos_i"] < pairs["_pos_j"]]
    return pd.DataFrame({"i": pairs["_pos_i"].to_numpy(), "j": pairs["_pos_j"].to_numpy()})


def candidate_pairs(
    keys: pd.DataFrame, blocks: Iterable[Sequence[str]], max_block: int
) -> pd.DataFrame:
    """Union of the pairs of several blocking rules, each pair once."""
    frames = [block_pairs(keys, on, max_block) for on in blocks]
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    return pairs.sort_values(["i", "j"], ignore_index=True)


DUPLICATE_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("email",),
    ("phone",),
    ("first", "last", "postcode"),
    ("postcode",),
    ("postcode", "last_sx"),
    ("last_sx", "first_initial", "district"),
    ("last_sx", "first_initial", "numbers"),
)


# --------------------------------------------------------------------------- comparisons


def _first_sim(a: str | None, b: str | None) -> float:
    if a is None or b is None:
        return np.nan
    if len(a) == 1 or len(b) == 1:  # an initial matches a name starting with it
        return 0.9 if a[0] == b[0] else 0.0
    return JaroWinkler.similarity(a, b)


def _str_sim(a: str | None, b: str | None) -> float:
    return np.nan if a is None or b is None else JaroWinkler.similarity(a, b)


def _numbers_conflict(a: str | None, b: str | None) -> bool:
    """House / flat numbers that cannot be the same place (neither set contains the other)."""
    if not a or not b:
        return False
    sa, sb = set(a.split()), set(b.split())
    return not (sa <= sb or sb <= sa)


def _bools(values: Iterable[bool]) -> np.ndarray:
    return np.fromiter(values, dtype=bool)


def _floats(values: Iterable[float]) -> np.ndarray:
    return np.fromiter(values, dtype=float)


def compare_pairs(keys: pd.DataFrame, pairs: pd.DataFrame, cfg: LinkageConfig) -> pd.DataFrame:
    """Similarity of each candidate pair, field by field (NaN where a field is missing)."""
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()

    def both(col: str) -> tuple[list[str | None], list[str | None]]:
        values = keys[col].to_numpy(dtype=object)
        return values[i].tolist(), values[j].tolist()

    out = pairs.copy()
    fa, fb = both("first")
    la, lb = both("last")
    aa, ab = both("address")
    pa, pb = both("postcode")
    na, nb = both("numbers")
    out["first_sim"] = _floats(_first_sim(a, b) for a, b in zip(fa, fb, strict=True))
    out["last_sim"] = _floats(_str_sim(a, b) for a, b in zip(la, lb, strict=True))
    out["name_exact"] = _bools(
        a is not None and a == b and c is not None and c == d
        for a, b, c, d in zip(fa, fb, la, lb, strict=True)
    )
    out["address_sim"] = _floats(
        np.nan if a is None or b is None else fuzz.token_sort_ratio(a, b) / 100
        for a, b in zip(aa, ab, strict=True)
    )
    out["postcode_sim"] = _floats(
        np.nan if a is None or b is None else Levenshtein.normalized_similarity(a, b)
        for a, b in zip(pa, pb, strict=True)
    )
    out["numbers_conflict"] = _bools(_numbers_conflict(a, b) for a, b in zip(na, nb, strict=True))
    for col in ("email", "phone"):
        a, b = both(col)
        out[col + "_same"] = _bools(x is not None and x == y for x, y in zip(a, b, strict=True))
        out[col + "_differ"] = _bools(
            x is not None and y is not None and x != y for x, y in zip(a, b, strict=True)
        )
    conflict = np.zeros(len(out), dtype=bool)
    for col in [c for c in keys.columns if c.startswith("conflict_")]:
        a, b = both(col)
        conflict |= _bools(
            x is not None and y is not None and x != y for x, y in zip(a, b, strict=True)
        )
    out["conflict"] = conflict
    weights = {"first_sim": 0.3, "last_sim": 0.3, "address_sim": 0.3, "postcode_sim": 0.1}
    sims = out[list(weights)].to_numpy(dtype=float)
    w = np.array(list(weights.values()))
    present = ~np.isnan(sims)
    total = (np.where(present, sims, 0.0) * w).sum(axis=1)
    norm = (present * w).sum(axis=1)
    out["fuzzy_score"] = np.divide(total, norm, out=np.zeros(len(out)), where=norm > 0)
    return out


def _ok(sim: pd.Series, minimum: float) -> pd.Series:
    """Similarity at least ``minimum``, or unknown (a field missing on either side)."""
    return sim.isna() | (sim >= minimum)


def apply_rules(cmp: pd.DataFrame, cfg: LinkageConfig) -> pd.DataFrame:
    """Accepted pairs with the first matching rule, a score and evidence naming the fields."""
    free = ~cmp["conflict"]
    contact_free = free & ~(cmp["email_differ"] & cfg.email_conflict_blocks)
    first_ok = _ok(cmp["first_sim"], cfg.first_name_min)
    last_ok = _ok(cmp["last_sim"], cfg.last_name_min)
    postcode_ok = _ok(cmp["postcode_sim"], cfg.postcode_min)
    holds: dict[Rule, pd.Series] = {
        # the same mailbox; household members sharing it have different first names
        "email": cmp["email_same"] & _ok(cmp["first_sim"], cfg.email_first_name_min) & free,
        # a shared landline is a household, not a duplicate: the names must agree too
        "phone": cmp["phone_same"] & first_ok & last_ok & contact_free,
        "name_postcode": (
            cmp["name_exact"]
            & (cmp["postcode_sim"] == 1.0)
            & ~cmp["numbers_conflict"]
            & contact_free
        ),
        "fuzzy": (
            cmp["first_sim"].ge(cfg.first_name_min)
            & cmp["last_sim"].ge(cfg.last_name_min)
            & cmp["address_sim"].ge(cfg.address_min)
            & ~cmp["numbers_conflict"]
            & postcode_ok
            & cmp["fuzzy_score"].ge(cfg.fuzzy_threshold)
            & contact_free
        ),
    }
    rule = pd.Series(pd.NA, index=cmp.index, dtype="string")
    for name in reversed([r for r in RULES if r in cfg.rules]):
        rule = rule.mask(holds[name], name)
    acc = cmp[rule.notna()].copy()
    acc["rule"] = rule[rule.notna()]
    acc["score"] = np.where(acc["rule"] == "fuzzy", acc["fuzzy_score"].round(4), 1.0)
    acc["evidence"] = [_evidence(row) for row in acc.itertuples(index=False)]
    return acc[["i", "j", "rule", "score", "evidence"]].reset_index(drop=True)


def _evidence(row: object) -> str:
    """Fields that matched and their similarities; never a value."""
    parts = [f for f in ("email", "phone") if getattr(row, f + "_same")]
    text = [" + ".join(parts) + " same"] if parts else []
    for field in ("first", "last", "address", "postcode"):
        sim = getattr(row, field + "_sim")
        if not np.isnan(sim):
            label = {"first": "first_name", "last": "last_name"}.get(field, field)
            text.append(f"{label} {sim:.2f}")
    return "; ".join(text)


# --------------------------------------------------------------------------- clusters


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given edges (i, j)."""
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _id_order(ids: pd.Series) -> pd.Series:
    """Sort key of ids: numeric ids by value before other ids by text."""
    numeric = pd.to_numeric(ids, errors="coerce")
    return pd.Series(
        [
            (0, float(v), "") if not np.isnan(v) else (1, 0.0, s)
            for v, s in zip(numeric, ids, strict=True)
        ],
        index=ids.index,
    )


def _best_edges(edges: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Each node's strongest accepted edge (score, then rule order, then the other id)."""
    both = pd.concat(
        [
            edges.rename(columns={"i": "node", "j": "other"}),
            edges.rename(columns={"j": "node", "i": "other"}),
        ],
        ignore_index=True,
    )
    both["rule_rank"] = both["rule"].map({r: k for k, r in enumerate(RULES)}).astype(int)
    both["matched_to"] = ids.to_numpy(dtype=object)[both["other"].to_numpy()]
    both = both.sort_values(
        ["node", "score", "rule_rank", "matched_to"], ascending=[True, False, True, True]
    )
    return both.drop_duplicates("node").set_index("node")


def find_duplicates(df: pd.DataFrame, cfg: LinkageConfig | None = None) -> pd.DataFrame:
    """Merge map: each customer_id with its master_id, match_rule, score and evidence."""
    cfg = cfg or LinkageConfig()
    return merge_map_of(match_keys(df, cfg), cfg)


def find_duplicate_pairs(
    keys: pd.DataFrame, cfg: LinkageConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accepted duplicate pairs (positions i < j, rule, score, evidence) and cannot-link pairs."""
    pairs = candidate_pairs(keys, DUPLICATE_BLOCKS, cfg.max_block_size)
    cmp = compare_pairs(keys, pairs, cfg)
    return apply_rules(cmp, cfg), cmp.loc[cannot_link(cmp, cfg), ["i", "j"]]


def cannot_link(cmp: pd.DataFrame, cfg: LinkageConfig) -> pd.Series:
    """Compared pairs that are evidently two people: no cluster may contain both."""
    first_clash = cmp["first_sim"].lt(min(cfg.first_name_min, cfg.email_first_name_min))
    other_flat = (
        cmp["numbers_conflict"]
        & cmp["postcode_sim"].eq(1.0)
        & cmp["address_sim"].ge(cfg.address_min)
    )
    other_mailbox = cmp["email_differ"] & cfg.email_conflict_blocks
    return cmp["conflict"] | first_clash | other_flat | other_mailbox


def _ordered_edges(edges: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Edges strongest first; ties broken by rule order and ids (not by row order)."""
    a, b = ids[edges["i"].to_numpy()], ids[edges["j"].to_numpy()]
    return edges.assign(
        _rank=edges["rule"].map({r: k for k, r in enumerate(RULES)}).astype(int),
        _lo=np.minimum(a, b),
        _hi=np.maximum(a, b),
    ).sort_values(["score", "_rank", "_lo", "_hi"], ascending=[False, True, True, True])


def constrained_clusters(
    n: int, edges: pd.DataFrame, cannot: pd.DataFrame, ids: np.ndarray
) -> np.ndarray:
    """Cluster label per record: edges joined strongest first, never across a cannot-link pair."""
    parent = np.arange(n)
    members: dict[int, set[int]] = {}
    apart: dict[int, set[int]] = {}
    for a, b in zip(cannot["i"].tolist(), cannot["j"].tolist(), strict=True):
        apart.setdefault(a, set()).add(b)
        apart.setdefault(b, set()).add(a)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    ordered = _ordered_edges(edges, ids)
    for a, b in zip(ordered["i"].tolist(), ordered["j"].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        ma, mb = members.get(ra, {ra}), members.get(rb, {rb})
        if len(ma) > len(mb):
            ra, rb, ma, mb = rb, ra, mb, ma
        if any(apart.get(m, set()) & mb for m in ma):
            continue  # joining would put two evidently different people together
        parent[ra] = rb
        members[rb] = mb | ma
        members.pop(ra, None)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def merge_map(
    keys: pd.DataFrame, edges: pd.DataFrame, cannot: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Merge map from accepted pairs: master = earliest signup, then smallest id, per cluster."""
    n = len(keys)
    ids = keys["customer_id"]
    if cannot is None:
        cannot = edges.iloc[:0][["i", "j"]]
    label = constrained_clusters(n, edges, cannot, ids.to_numpy(dtype=object))
    # an edge between two clusters that were kept apart is not evidence for either
    edges = edges[label[edges["i"].to_numpy()] == label[edges["j"].to_numpy()]]
    order = pd.DataFrame(
        {"label": label, "signup": keys["signup"], "id_key": _id_order(ids), "pos": np.arange(n)}
    )
    order = order.sort_values(["label", "signup", "id_key"], na_position="last")
    master_pos = order.drop_duplicates("label").set_index("label")["pos"]
    sizes = pd.Series(label).map(pd.Series(label).value_counts())

    out = pd.DataFrame(
        {
            "customer_id": ids.to_numpy(),
            "master_id": ids.to_numpy()[master_pos.loc[label].to_numpy()],
            "match_rule": "none",
            "score": np.nan,
            "evidence": "",
            "matched_to": pd.array([None] * n, dtype="string"),
            "cluster_size": sizes.to_numpy(dtype=np.int64),
        }
    )
    if len(edges):
        best = _best_edges(edges, ids)
        pos = best.index.to_numpy()
        out.loc[pos, "match_rule"] = best["rule"].astype(str).to_numpy()
        out.loc[pos, "score"] = best["score"].to_numpy(dtype=float)
        out.loc[pos, "evidence"] = best["evidence"].to_numpy()
        out.loc[pos, "matched_to"] = best["matched_to"].to_numpy()
    return out[MERGE_MAP_COLUMNS]


# --------------------------------------------------------------------------- households


HOUSEHOLD_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("last", "postcode"),
    ("last", "address"),
    ("phone",),
)


def assign_households(
    df: pd.DataFrame, merge_map: pd.DataFrame | None = None, cfg: LinkageConfig | None = None
) -> pd.DataFrame:
    """Household per customer: same surname + address (or postcode), or a shared phone."""
    cfg = cfg or LinkageConfig()
    keys = match_keys(df, cfg)
    if merge_map is None:
        merge_map = merge_map_of(keys, cfg)
    return households_from_keys(keys, merge_map, cfg)


def link_customers(
    df: pd.DataFrame, cfg: LinkageConfig | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge map and households in one pass (records standardised once)."""
    cfg = cfg or LinkageConfig()
    keys = match_keys(df, cfg)
    mm = merge_map_of(keys, cfg)
    return mm, households_from_keys(keys, mm, cfg)


def households_from_keys(
    keys: pd.DataFrame, merge_map: pd.DataFrame, cfg: LinkageConfig
) -> pd.DataFrame:
    """Households from ready match keys and a merge map (duplicates share their household)."""
    n = len(keys)
    ids = keys["customer_id"]
    master = ids.map(
        merge_map.set_index(merge_map["customer_id"].astype(str))["master_id"].astype(str)
    )
    if master.isna().any():
        raise ValueError("the merge map does not cover every customer_id")

    pos_of = pd.Series(np.arange(n), index=ids.to_numpy())
    dup_i = np.arange(n)
    dup_j = pos_of.loc[master].to_numpy()
    rules = [pd.DataFrame({"i": dup_i, "j": dup_j, "rule": "duplicate"})]

    cmp = compare_pairs(keys, candidate_pairs(keys, HOUSEHOLD_BLOCKS[:2], cfg.max_block_size), cfg)
    same_last = cmp["last_sim"].eq(1.0)
    with_address = (
        cmp["address_sim"].ge(cfg.household_address_min)
        & ~cmp["numbers_conflict"]
        & _ok(cmp["postcode_sim"], 1.0)
    )
    postcode_only = (
        cmp["address_sim"].isna() & cmp["postcode_sim"].eq(1.0) & cfg.household_postcode_only
    )
    ok = same_last & (with_address | postcode_only)
    rules.append(cmp.loc[ok, ["i", "j"]].assign(rule="surname_address"))
    rules.append(block_pairs(keys, ("phone",), cfg.max_phone_household).assign(rule="phone"))
    edges = pd.concat(rules, ignore_index=True)
    edges = edges[edges["i"] != edges["j"]]

    label = _components(n, edges["i"].to_numpy(), edges["j"].to_numpy())
    frame = pd.DataFrame({"label": label, "id_key": _id_order(ids), "pos": np.arange(n)})
    first = (
        frame.sort_values(["label", "id_key"]).drop_duplicates("label").set_index("label")["pos"]
    )
    persons = pd.DataFrame({"label": label, "master": master.to_numpy()}).groupby("label")["master"]
    size = persons.nunique()

    node_rules = pd.concat(
        [
            edges[["i", "rule"]].rename(columns={"i": "node"}),
            edges[["j", "rule"]].rename(columns={"j": "node"}),
        ]
    )
    rule_text = node_rules.groupby("node")["rule"].agg(lambda r: "+".join(sorted(set(r))))
    household_rule = pd.Series("single", index=np.arange(n), dtype=object)
    household_rule.loc[rule_text.index] = rule_text.to_numpy()
    return pd.DataFrame(
        {
            "customer_id": ids.to_numpy(),
            "household_id": ["HH-" + ids.iloc[p] for p in first.loc[label].to_numpy()],
            "household_size": size.loc[label].to_numpy(dtype=np.int64),
            "household_rule": household_rule.to_numpy(),
        }
    )[HOUSEHOLD_COLUMNS]


def merge_map_of(keys: pd.DataFrame, cfg: LinkageConfig) -> pd.DataFrame:
    """Merge map from ready match keys (saves standardising twice)."""
    return merge_map(keys, *find_duplicate_pairs(keys, cfg))


# --------------------------------------------------------------------------- evaluation


def pairwise_scores(predicted: pd.Series, truth: pd.Series) -> dict[str, float]:
    """Pairwise precision / recall / F1 of a clustering against a true one (both id -> cluster)."""
    joined = pd.DataFrame({"pred": predicted, "true": truth}).dropna()

    def pairs(counts: pd.Series) -> int:
        c = counts.to_numpy(dtype=np.int64)
        return int((c * (c - 1) // 2).sum())

    tp = pairs(joined.groupby(["pred", "true"]).size())
    n_pred = pairs(joined.groupby("pred").size())
    n_true = pairs(joined.groupby("true").size())
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_pairs": float(n_true),
        "predicted_pairs": float(n_pred),
        "correct_pairs": float(tp),
    }


# --------------------------------------------------------------------------- applying the map

#: The merge map as applied by a dataset's ``identity`` option: written beside the tables it
#: re-keyed (``identity_map``), one row per record, so every merge is explained and reversible.
IDENTITY_MAP = "identity_map"
#: The column a re-keyed table keeps each row's original customer id in.
SOURCE_ID = "source_customer_id"
_YES = frozenset({"true", "t", "yes", "y", "1"})
_NO = frozenset({"false", "f", "no", "n", "0"})


class IdentityConfig(BaseModel):
    """``identity:`` of a dataset YAML: resolve duplicate records to one master id at ingest,
    before any feature, label or score sees them (docs/customer_processing.md, section 7)."""

    model_config = ConfigDict(extra="forbid")

    resolve_duplicates: bool = Field(
        False, description="re-key every customer-keyed table to the merge map's master_id"
    )
    merge_map: str = Field(
        "derived",
        min_length=1,
        description="'derived' (link the ingested customers table, as `patron customers link`) "
        "or a CSV / Parquet file with customer_id, master_id (optional match_rule, score, "
        "evidence), relative to the YAML",
    )
    linkage: LinkageConfig = Field(
        default_factory=LinkageConfig, description="rules of the derived merge map"
    )


def applied_merge_map(merge_map: pd.DataFrame, source: str = "given") -> pd.DataFrame:
    """A merge map checked for applying (columns ``MERGE_MAP_COLUMNS``, ids as text): each
    record once, every master its own master (no chains); a master missing from the map is
    added as itself. A map without explanations (a given file) gets ``match_rule`` = ``source``
    and ``matched_to`` = the master. Raises ValueError saying what is wrong."""
    missing = [c for c in ("customer_id", "master_id") if c not in merge_map.columns]
    if missing:
        raise ValueError(f"the merge map has no column {missing[0]!r}")
    mm = merge_map.copy()
    for c in ("customer_id", "master_id"):
        if mm[c].isna().any():
            raise ValueError(f"the merge map has a missing {c}")
        mm[c] = mm[c].astype(str).str.strip()
    mm = mm.drop_duplicates(["customer_id", "master_id"])
    twice = mm["customer_id"][mm["customer_id"].duplicated()]
    if len(twice):
        raise ValueError(f"customer_id {twice.iloc[0]!r} is mapped to two master ids")
    master_of = mm.set_index("customer_id")["master_id"]
    chained = mm["master_id"].map(master_of).fillna(mm["master_id"]) != mm["master_id"]
    if chained.any():
        row = mm[chained].iloc[0]
        raise ValueError(
            f"master_id {row['master_id']!r} (of {row['customer_id']!r}) is itself mapped to "
            f"{master_of[row['master_id']]!r}: map every record to its final master"
        )
    absent = sorted(set(mm["master_id"]) - set(mm["customer_id"]))
    if absent:
        mm = pd.concat([mm, pd.DataFrame({"customer_id": absent, "master_id": absent})])
    mm = mm.reset_index(drop=True)
    merged = mm["customer_id"] != mm["master_id"]
    if "match_rule" not in mm.columns:
        mm["match_rule"] = np.where(merged, source, "none")
    mm["match_rule"] = mm["match_rule"].fillna("none").astype(str)
    mm["score"] = pd.to_numeric(mm["score"], errors="coerce") if "score" in mm else np.nan
    mm["score"] = mm["score"].astype(float)
    mm["evidence"] = mm["evidence"].fillna("").astype(str) if "evidence" in mm else ""
    if "matched_to" not in mm.columns:
        mm["matched_to"] = mm["master_id"].where(merged, None)
    mm["matched_to"] = mm["matched_to"].astype("string")
    mm["cluster_size"] = mm["master_id"].map(mm["master_id"].value_counts()).astype(np.int64)
    return mm[MERGE_MAP_COLUMNS]


def consent_column(name: str) -> bool:
    """Whether a customers column is a consent flag (combined most restrictively)."""
    return name.startswith("consent")


def _consent_values(values: pd.Series) -> pd.Series:
    """A consent column as True (an explicit yes), False (an explicit no) or NA (unknown)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean")
    text = values.astype("string").str.strip().str.lower()
    flags = text.map({**dict.fromkeys(_YES, True), **dict.fromkeys(_NO, False)})
    return flags.astype("boolean")


def _combine_records(records: pd.DataFrame, master: pd.Series) -> pd.DataFrame:
    """The rows of records that share a master, one row per master (``combine_customers``)."""
    ids = records["customer_id"].astype(str)
    signup = (
        pd.to_datetime(records["signup_date"], errors="coerce")
        if "signup_date" in records.columns
        else pd.Series(pd.NaT, index=records.index)
    )
    order = pd.DataFrame(
        {"master": master, "not_master": ids != master, "signup": signup, "id_key": _id_order(ids)}
    ).sort_values(["master", "not_master", "signup", "id_key"], na_position="last", kind="stable")
    df = records.loc[order.index]
    groups = order["master"].to_numpy(dtype=object)
    columns = [c for c in df.columns if c != "customer_id"]
    out = df[columns].groupby(groups, sort=False).first()
    for c in columns:
        if consent_column(c):
            flag = df[c]
            no = flag.eq(False).fillna(False).groupby(groups, sort=False).any()
            unknown = flag.isna().groupby(groups, sort=False).any()
            combined = pd.Series(True, index=no.index, dtype="boolean").mask(unknown)
            out[c] = combined.mask(no, False).reindex(out.index)
        elif c == "signup_date":
            out[c] = df[c].groupby(groups, sort=False).min().reindex(out.index)
    out.insert(0, "customer_id", out.index.astype(str))
    return out.reset_index(drop=True)


def combine_customers(customers: pd.DataFrame, merge_map: pd.DataFrame) -> pd.DataFrame:
    """One customers row per master id (the rule of docs/customer_processing.md, section 7):
    consent columns (``consent*``, read as yes / no / unknown) the most restrictive of the
    records — no when any record says no, unknown when any is unknown, yes only when every
    record says yes, so a merge never widens consent; ``signup_date`` the earliest; every other
    column the first value present in master order (the master record, then the others by
    signup date, then id). Records absent from the map stay as they are. Each person takes the
    place of their first record; columns keep their order, consent columns come out boolean."""
    master_of = merge_map.set_index(merge_map["customer_id"].astype(str))["master_id"].astype(str)
    df = customers.copy()
    for c in df.columns:
        if consent_column(c):
            df[c] = _consent_values(df[c])
    ids = df["customer_id"].astype(str)
    df["customer_id"] = ids
    master = ids.map(master_of).fillna(ids)
    shared = master.duplicated(keep=False).to_numpy()
    if not shared.any():
        return df
    place = pd.Series(np.arange(len(df)), index=df.index).groupby(master).min()
    out = pd.concat([df[~shared], _combine_records(df[shared], master[shared])])
    out = out.iloc[np.argsort(out["customer_id"].map(place).to_numpy(), kind="stable")]
    return out.reset_index(drop=True)[list(customers.columns)]


def identity_summary(merge_map: pd.DataFrame) -> dict[str, object]:
    """Counts of an applied merge map (no ids, no values): records, persons, merged records and
    merged records by rule."""
    merged = merge_map[merge_map["customer_id"] != merge_map["master_id"]]
    return {
        "records": int(len(merge_map)),
        "persons": int(merge_map["master_id"].nunique()),
        "merged_records": int(len(merged)),
        "merged_by_rule": {str(k): int(v) for k, v in merged["match_rule"].value_counts().items()},
    }
