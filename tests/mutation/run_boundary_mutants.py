"""Mutation check of the label and feature window boundaries: every ±1-day mutant must be caught.

Each mutant moves one boundary of the time convention (``features.definitions``) by one day on
one side: a label horizon (-H <= days_ago < 0), a lookback population (0 <= days_ago < L), a
feature window (0 <= days_ago < N, the trend's 90 <= days_ago < 180, the RFM recency bands), the
cutoff itself (``CAST(ts AS DATE) <= T``), the horizon guard, or the ``days_ago`` count. For each
one, the repository (without .git, .venv and caches) is copied into a temporary folder once,
``features/`` is copied afresh, the one replacement is applied there (the working tree is never
touched) and the boundary tests run against the copy with the venv's interpreter: by default in a
forked child of this script, which imported pandas, DuckDB, scikit-learn and pytest once (the
project's own packages are imported afresh from the copy in each child, which checks that
``features`` came from there); ``--runner subprocess`` starts a new ``python -m pytest`` with the
copy first on PYTHONPATH instead (slower by the start-up, ~3 s a mutant). A mutant is
*caught* when a test's assertion fails (pytest exit 1), *survived* when every test passes; a
first failure that is an exception (SQL that no longer runs) is *invalid*, and any other exit
(collection error, timeout) an *error*: neither counts as caught.

    .venv/bin/python tests/mutation/run_boundary_mutants.py            # all, writes the JSON
    .venv/bin/python tests/mutation/run_boundary_mutants.py --list     # the mutants, no run
    .venv/bin/python tests/mutation/run_boundary_mutants.py --only churn-horizon-T-wider

Prints a table and writes ``bench/results/boundary_mutants.json`` (full runs only); exits 1 when a
mutant is not caught, 2 when the unmutated copy fails or imports the wrong ``features``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULT_PATH = ROOT / "bench" / "results" / "boundary_mutants.json"
TESTS = (
    "tests/features/test_boundaries.py",
    "tests/features/test_labels.py",
    "tests/features/test_point_in_time.py",
)
#: -p no:... for the plugins these tests do not use: they cost seconds of start-up per mutant.
PYTEST_ARGS = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:schemathesis",
    "-p",
    "no:hypothesispytest",
    "-x",
    "-q",
)
IGNORED = (
    ".git",
    ".venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".import_linter_cache",
    ".patron",
    "mlruns",
    "__pycache__",
    "*.egg-info",
)
TIMEOUT_S = 300
WIDE = "400"


@dataclass(frozen=True)
class Mutant:
    """One replacement of ``snippet`` (found exactly once in ``file``) by ``replacement``."""

    id: str
    file: str
    snippet: str
    replacement: str
    change: str
    boundary: str


def mutant(mid: str, file: str, context: str, old: str, new: str, boundary: str) -> Mutant:
    """A mutant replacing ``old`` by ``new`` inside ``context`` (a snippet unique in ``file``)."""
    if context.count(old) != 1:
        raise ValueError(f"{mid}: {old!r} is not exactly once in its context {context!r}")
    return Mutant(mid, file, context, context.replace(old, new), f"{old} -> {new}", boundary)


def both_sides(mid: str, file: str, context: str, old: str, wider: str, narrower: str, what: str):
    """The two ±1-day mutants of one comparison: the window one day wider and one day narrower."""
    return [
        mutant(f"{mid}-wider", file, context, old, wider, f"{what}: one day more"),
        mutant(f"{mid}-narrower", file, context, old, narrower, f"{what}: one day less"),
    ]


def shifted(mid: str, file: str, context: str, expr: str, what: str) -> list[Mutant]:
    """``days_ago`` counted one day more / one day less (the whole convention shifted)."""
    return [
        mutant(f"{mid}-later", file, context, expr, f"({expr} + 1)", f"{what} one day later"),
        mutant(f"{mid}-earlier", file, context, expr, f"({expr} - 1)", f"{what} one day earlier"),
    ]


LABELS = "features/labels.py"
ENGINE = "features/engine.py"
DEFS = "features/definitions.py"
BUILD = "features/build.py"
DIFF_TS = "date_diff('day', CAST(ts AS DATE), {sql_date(as_of)})"

MUTANTS: list[Mutant] = [
    # ---- labels.py: purchase (any / category) label
    *both_sides(
        "purchase-population-T",
        LABELS,
        "FROM p WHERE days_ago >= 0 AND days_ago < {lookback_days}",
        "days_ago >= 0",
        "days_ago >= -1",
        "days_ago >= 1",
        "purchase population includes T (days_ago >= 0)",
    ),
    *both_sides(
        "purchase-population-L",
        LABELS,
        "FROM p WHERE days_ago >= 0 AND days_ago < {lookback_days}",
        "days_ago < {lookback_days}",
        "days_ago <= {lookback_days}",
        "days_ago < {lookback_days} - 1",
        "purchase population starts at T-(L-1)",
    ),
    *both_sides(
        "purchase-horizon-T",
        LABELS,
        "WHERE days_ago < 0 AND days_ago >= -{horizon_days} {in_cat}",
        "days_ago < 0",
        "days_ago <= 0",
        "days_ago < -1",
        "purchase horizon starts at T+1",
    ),
    *both_sides(
        "purchase-horizon-H",
        LABELS,
        "WHERE days_ago < 0 AND days_ago >= -{horizon_days} {in_cat}",
        "days_ago >= -{horizon_days}",
        "days_ago >= -{horizon_days} - 1",
        "days_ago > -{horizon_days}",
        "purchase horizon ends at T+H",
    ),
    # ---- labels.py: spend (CLV) label
    *both_sides(
        "spend-population-T",
        LABELS,
        "FROM l WHERE days_ago >= 0 AND NOT is_return",
        "days_ago >= 0",
        "days_ago >= -1",
        "days_ago >= 1",
        "spend population: an order on or before T",
    ),
    *both_sides(
        "spend-horizon-T",
        LABELS,
        "WHERE days_ago < 0 AND days_ago >= -{horizon_days}\n    GROUP BY",
        "days_ago < 0",
        "days_ago <= 0",
        "days_ago < -1",
        "spend horizon starts at T+1",
    ),
    *both_sides(
        "spend-horizon-H",
        LABELS,
        "WHERE days_ago < 0 AND days_ago >= -{horizon_days}\n    GROUP BY",
        "days_ago >= -{horizon_days}",
        "days_ago >= -{horizon_days} - 1",
        "days_ago > -{horizon_days}",
        "spend horizon ends at T+H",
    ),
    # ---- labels.py: campaign response label
    *both_sides(
        "campaign-horizon-T",
        LABELS,
        "WHERE days_ago < 0 AND days_ago >= -{horizon_days}\nGROUP BY",
        "days_ago < 0",
        "days_ago <= 0",
        "days_ago < -1",
        "campaign horizon starts at T+1",
    ),
    *both_sides(
        "campaign-horizon-H",
        LABELS,
        "WHERE days_ago < 0 AND days_ago >= -{horizon_days}\nGROUP BY",
        "days_ago >= -{horizon_days}",
        "days_ago >= -{horizon_days} - 1",
        "days_ago > -{horizon_days}",
        "campaign horizon ends at T+H",
    ),
    # ---- labels.py: how days_ago is counted, per label query
    *shifted(
        "purchase-days-ago",
        LABELS,
        f"CAST(amount AS DOUBLE) AS amount,\n           {DIFF_TS}",
        DIFF_TS,
        "purchase/category label rows",
    ),
    *shifted(
        "spend-days-ago",
        LABELS,
        f"AS is_return,\n           {DIFF_TS}",
        DIFF_TS,
        "spend label rows",
    ),
    *shifted(
        "campaign-days-ago",
        LABELS,
        f"AS responded,\n           {DIFF_TS}",
        DIFF_TS,
        "campaign contacts",
    ),
    # ---- engine.py: churn label
    *both_sides(
        "churn-population-T",
        ENGINE,
        "FROM o WHERE days_ago >= 0 AND days_ago < {lookback_days}",
        "days_ago >= 0",
        "days_ago >= -1",
        "days_ago >= 1",
        "churn population includes T",
    ),
    *both_sides(
        "churn-population-L",
        ENGINE,
        "FROM o WHERE days_ago >= 0 AND days_ago < {lookback_days}",
        "days_ago < {lookback_days}",
        "days_ago <= {lookback_days}",
        "days_ago < {lookback_days} - 1",
        "churn population starts at T-(L-1)",
    ),
    *both_sides(
        "churn-horizon-T",
        ENGINE,
        "FROM o WHERE days_ago < 0 AND days_ago >= -{horizon_days}",
        "days_ago < 0",
        "days_ago <= 0",
        "days_ago < -1",
        "churn horizon starts at T+1",
    ),
    *both_sides(
        "churn-horizon-H",
        ENGINE,
        "FROM o WHERE days_ago < 0 AND days_ago >= -{horizon_days}",
        "days_ago >= -{horizon_days}",
        "days_ago >= -{horizon_days} - 1",
        "days_ago > -{horizon_days}",
        "churn horizon ends at T+H",
    ),
    *shifted(
        "churn-days-ago",
        ENGINE,
        f"{DIFF_TS} AS days_ago\n    FROM {{source}}\n    WHERE NOT",
        DIFF_TS,
        "churn label rows",
    ),
    # ---- build.py: a label needs data through T+H
    *both_sides(
        "churn-guard-H",
        BUILD,
        "if (last - as_of).days < horizon_days:",
        "< horizon_days",
        "< horizon_days - 1",
        "<= horizon_days",
        "compute_churn_labels refuses data ending before T+H (accepts T+H-1 / refuses T+H)",
    ),
    # ---- engine.py: what features see (the cutoff) and how days_ago is counted
    *both_sides(
        "features-cutoff",
        ENGINE,
        'WHERE CAST(ts AS DATE) <= {sql_date(as_of)}"""',
        "<= {sql_date(as_of)}",
        "<= {sql_date(as_of)} + 1",
        "< {sql_date(as_of)}",
        "transaction lines seen by features end at T",
    ),
    *shifted(
        "features-days-ago",
        ENGINE,
        f"{DIFF_TS} AS days_ago\n    FROM {{source}}\n    WHERE CAST",
        DIFF_TS,
        "transaction lines",
    ),
    *both_sides(
        "events-cutoff",
        ENGINE,
        "WHERE CAST(ts AS DATE) <= {a}\n)",
        "<= {a}",
        "<= {a} + 1",
        "< {a}",
        "events seen by features end at T",
    ),
    *both_sides(
        "contacts-cutoff",
        ENGINE,
        "WHERE CAST(ts AS DATE) <= {a}\n      AND",
        "<= {a}",
        "<= {a} + 1",
        "< {a}",
        "contacts seen by features end at T",
    ),
    *both_sides(
        "contacts-response-known",
        DEFS,
        'parts.append(f"days_ago >= {within}")',
        ">= {within}",
        ">= {within - 1}",
        ">= {within + 1}",
        "a contact's outcome is known CONTACT_RESPONSE_DAYS after its send date",
    ),
    *shifted(
        "events-days-ago",
        ENGINE,
        "date_diff('day', CAST(ts AS DATE), {a}) AS days_ago\n    FROM {events}",
        "date_diff('day', CAST(ts AS DATE), {a})",
        "events",
    ),
    *shifted(
        "contacts-days-ago",
        ENGINE,
        "date_diff('day', CAST(ts AS DATE), {a}) AS days_ago\n    FROM {campaign_history}",
        "date_diff('day', CAST(ts AS DATE), {a})",
        "contacts",
    ),
    *shifted(
        "signup-days-ago",
        ENGINE,
        "date_diff('day', CAST(signup_date AS DATE), {sql_date(as_of)}) AS signup_days_ago",
        "date_diff('day', CAST(signup_date AS DATE), {sql_date(as_of)})",
        "sign-up dates",
    ),
    # ---- definitions.py: declared windows
    *both_sides(
        "window-count-N",
        DEFS,
        'f"count(*) FILTER (WHERE days_ago < {days})"',
        "days_ago < {days}",
        "days_ago <= {days}",
        "days_ago < {days - 1}",
        "orders_count_<N>d (N = 7 .. 730) starts at T-(N-1)",
    ),
    *both_sides(
        "window-sum-N",
        DEFS,
        'f"coalesce(sum(amount) FILTER (WHERE days_ago < {days}), 0.0)"',
        "days_ago < {days}",
        "days_ago <= {days}",
        "days_ago < {days - 1}",
        "spend_sum_<N>d starts at T-(N-1)",
    ),
    *both_sides(
        "history-count-730",
        DEFS,
        'f"count(*) FILTER (WHERE days_ago < {h})"',
        "days_ago < {h}",
        "days_ago <= {h}",
        "days_ago < {h - 1}",
        "churn_v1 orders_count_730d (RFM history) starts at T-729",
    ),
    *both_sides(
        "history-sum-730",
        DEFS,
        'f"coalesce(sum(amount) FILTER (WHERE days_ago < {h}), 0.0)"',
        "days_ago < {h}",
        "days_ago <= {h}",
        "days_ago < {h - 1}",
        "churn_v1 spend_sum_730d (RFM history) starts at T-729",
    ),
    *both_sides(
        "rfm-recency-bands",
        DEFS,
        'f"WHEN {recency} < {b} THEN {p}"',
        "{recency} < {b}",
        "{recency} <= {b}",
        "{recency} < {b - 1}",
        "RFM recency band '< b days' holds days_since_last_order 0 .. b-1",
    ),
    *both_sides(
        "trend-now-90",
        DEFS,
        'now = "days_ago < 90"',
        "days_ago < 90",
        "days_ago <= 90",
        "days_ago < 89",
        "trend: the last 90 days start at T-89",
    ),
    *both_sides(
        "trend-before-90",
        DEFS,
        'before = "days_ago >= 90 AND days_ago < 180"',
        "days_ago >= 90",
        "days_ago >= 89",
        "days_ago > 90",
        "trend: the 90 days before end at T-90",
    ),
    *both_sides(
        "trend-before-180",
        DEFS,
        'before = "days_ago >= 90 AND days_ago < 180"',
        "days_ago < 180",
        "days_ago <= 180",
        "days_ago < 179",
        "trend: the 90 days before start at T-179",
    ),
    *both_sides(
        "basket-mean-365",
        DEFS,
        '"avg(amount) FILTER (WHERE days_ago < 365)"',
        "days_ago < 365",
        "days_ago <= 365",
        "days_ago < 364",
        "spend_mean_order_365d starts at T-364",
    ),
    *both_sides(
        "returns-returned-365",
        DEFS,
        "FILTER (WHERE is_return AND days_ago < 365)",
        "days_ago < 365",
        "days_ago <= 365",
        "days_ago < 364",
        "returns_share_365d returned value starts at T-364",
    ),
    *both_sides(
        "returns-bought-365",
        DEFS,
        "FILTER (WHERE NOT is_return AND days_ago < 365)",
        "days_ago < 365",
        "days_ago <= 365",
        "days_ago < 364",
        "returns_share_365d bought value starts at T-364",
    ),
    *both_sides(
        "engagement-count-N",
        DEFS,
        'AND days_ago < {w})"',
        "days_ago < {w}",
        "days_ago <= {w}",
        "days_ago < {w - 1}",
        "<event>_count_<N>d (N = 30, 90) starts at T-(N-1)",
    ),
    *both_sides(
        "clicks-per-open-clicks-90",
        DEFS,
        "event_type = 'click' AND days_ago < 90)",
        "days_ago < 90",
        "days_ago <= 90",
        "days_ago < 89",
        "clicks_per_open_90d clicks start at T-89",
    ),
    *both_sides(
        "clicks-per-open-opens-90",
        DEFS,
        "event_type = 'email_open' AND days_ago < 90)",
        "days_ago < 90",
        "days_ago <= 90",
        "days_ago < 89",
        "clicks_per_open_90d opens start at T-89",
    ),
    *both_sides(
        "household-count-365",
        DEFS,
        '"count(*) FILTER (WHERE days_ago < 365)",',
        "days_ago < 365",
        "days_ago <= 365",
        "days_ago < 364",
        "household_orders_count_365d starts at T-364",
    ),
    *both_sides(
        "household-sum-365",
        DEFS,
        '"coalesce(sum(amount) FILTER (WHERE days_ago < 365), 0.0)",',
        "days_ago < 365",
        "days_ago <= 365",
        "days_ago < 364",
        "household_spend_sum_365d starts at T-364",
    ),
    *both_sides(
        "category-share-N",
        DEFS,
        'within = f" AND days_ago < {window_days}"',
        "days_ago < {window_days}",
        "days_ago <= {window_days}",
        "days_ago < {window_days - 1}",
        "category_share_features(window_days=N) starts at T-(N-1)",
    ),
    *both_sides(
        "signup-tenure-T",
        DEFS,
        "CASE WHEN signup_days_ago >= 0 THEN",
        "signup_days_ago >= 0",
        "signup_days_ago >= -1",
        "signup_days_ago >= 1",
        "signup_tenure_days known for a sign-up on or before T",
    ),
]


def apply(mut: Mutant, repo: Path) -> None:
    """Replace the snippet in the copy; fail loudly unless it is there exactly once."""
    path = repo / mut.file
    text = path.read_text()
    found = text.count(mut.snippet)
    if found != 1:
        raise SystemExit(f"mutant {mut.id}: snippet found {found} times in {mut.file}, not once")
    path.write_text(text.replace(mut.snippet, mut.replacement))


def fresh_features(repo: Path) -> None:
    """Put an unmodified copy of ``features/`` into the temporary repository."""
    shutil.rmtree(repo / "features", ignore_errors=True)
    shutil.copytree(ROOT / "features", repo / "features", ignore=shutil.ignore_patterns(*IGNORED))


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def env_for(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never a stale .pyc of a same-size mutated file
    env["COLUMNS"] = WIDE  # failure messages in the summary untruncated
    return env


@dataclass
class Outcome:
    status: str  # caught | survived | error (exit code) | timeout
    exit_code: int | None
    first_failure: str
    seconds: float


#: Exit code of a forked run whose ``features`` did not come from the copy.
WRONG_FEATURES = 97


#: The start of a failure's message when a test's own assertion failed (not an exception).
ASSERTION = re.compile(r"(?:assert\b|AssertionError|Failed: DID NOT RAISE)")


def _outcome(code: int | None, output: str, seconds: float) -> Outcome:
    """Caught: pytest exit 1 with a failed assertion first. A mutant whose first failure is an
    exception (SQL that no longer runs, say) proves nothing about the boundary: ``invalid``."""
    if code is None:
        return Outcome("timeout", None, "", seconds)
    failed = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - (.*))?$", output, re.MULTILINE)
    first = failed.group(1) if failed else ""
    reason = (failed.group(2) or "") if failed else ""
    if code == 0:
        status = "survived"
    elif code == 1 and failed and ASSERTION.match(reason):
        status = "caught"
    elif code == 1:
        status = "invalid"
    else:
        status = f"error ({code})"
    if status != "caught" and code != 0:
        first = f"{first} {reason}".strip() or next(iter(output.strip().splitlines()[-1:]), "")
    return Outcome(status, code, first, seconds)


def run_subprocess(repo: Path) -> Outcome:
    """``python -m pytest`` in the copy, ``features`` from the copy first on PYTHONPATH."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [python(), "-m", "pytest", *PYTEST_ARGS, *TESTS],
            cwd=repo,
            env=env_for(repo),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return _outcome(None, "", time.perf_counter() - start)
    return _outcome(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start)


def preload() -> None:
    """Import the heavy third-party modules once, before forking: seconds saved per mutant."""
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import pytest  # noqa: F401
    import sklearn.base  # noqa: F401
    import sklearn.utils.validation  # noqa: F401
    import sqlglot  # noqa: F401

    loaded = [m for m in sys.modules if m.split(".")[0] in ("features", "tests")]
    if loaded:  # the project's own code must be imported fresh, from the copy, in each child
        raise SystemExit(f"project modules imported before forking: {loaded}")


def run_forked(repo: Path) -> Outcome:
    """A fresh pytest run in a forked child of this (preloaded) interpreter, in the copy."""
    start = time.perf_counter()
    log = repo.parent / "pytest.log"
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 70
        try:
            import pytest

            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(repo)
            sys.path.insert(0, str(repo))
            sys.dont_write_bytecode = True  # never a stale .pyc of a same-size mutated file
            os.environ["COLUMNS"] = WIDE  # failure messages in the summary untruncated
            code = int(pytest.main([*PYTEST_ARGS, *TESTS]))
            origin = Path(sys.modules["features"].__file__ or "").resolve()
            if not origin.is_relative_to(repo.resolve()):
                print(f"features was imported from {origin}, not from the copy")
                code = WRONG_FEATURES
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = start + TIMEOUT_S
    exit_code: int | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            exit_code = os.waitstatus_to_exitcode(status)
            break
        if time.perf_counter() > deadline:  # our own child, by its pid
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    return _outcome(exit_code, log.read_text(errors="replace"), time.perf_counter() - start)


def imported_features(repo: Path) -> Path:
    """Where an interpreter started in the copy imports ``features`` from (must be the copy)."""
    out = subprocess.run(
        [python(), "-c", "import features; print(features.__file__)"],
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip()).resolve()


def git_head() -> str:
    """The commit the working tree is on (the mutated files are copied from the working tree)."""
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("#", "mutant", "file", "change", "result", "first failing test", "s")
    lines = [
        (
            str(i),
            str(r["id"]),
            str(r["file"]).removeprefix("features/"),
            str(r["change"]).replace("\n", " "),
            str(r["status"]),
            str(r["first_failure"]).removeprefix("tests/features/"),
            f"{r['seconds']:.1f}",
        )
        for i, r in enumerate(rows, 1)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    for line in (head, tuple("-" * w for w in widths), *lines):
        print("| " + " | ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutant ids")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", type=Path, default=RESULT_PATH, help="where to write results")
    parser.add_argument(
        "--runner",
        choices=("fork", "subprocess"),
        default="fork" if hasattr(os, "fork") else "subprocess",
        help="fork: each pytest run in a fresh child of a preloaded interpreter (the default, "
        "seconds faster per mutant); subprocess: each one a new `python -m pytest`",
    )
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    if len(set(ids)) != len(ids):
        raise SystemExit("mutant ids are not unique")
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        raise SystemExit(f"unknown mutant ids: {sorted(set(args.only) - set(ids))}")
    for m in chosen:  # every snippet must be in the working tree's file exactly once
        found = (ROOT / m.file).read_text().count(m.snippet)
        if found != 1:
            raise SystemExit(f"mutant {m.id}: snippet found {found} times in {m.file}, not once")
    if args.list:
        for m in chosen:
            print(f"{m.id:32} {m.file:24} {m.change}")
        return 0

    load_at_start = os.getloadavg()[0]
    started = time.perf_counter()
    if args.runner == "fork":
        preload()
    run_tests = run_forked if args.runner == "fork" else run_subprocess
    with tempfile.TemporaryDirectory(prefix="patron-mutants-") as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(*IGNORED))
        where = imported_features(repo)
        if not where.is_relative_to(repo.resolve()):
            print(f"the copy imports features from {where}, not from {repo}", file=sys.stderr)
            return 2
        baseline = run_tests(repo)
        print(f"baseline (no mutant): {baseline.status}, {baseline.seconds:.1f} s")
        if baseline.status != "survived":
            print(f"the unmutated copy fails: {baseline.first_failure}", file=sys.stderr)
            return 2
        rows: list[dict[str, Any]] = []
        for i, m in enumerate(chosen, 1):
            fresh_features(repo)
            apply(m, repo)
            out = run_tests(repo)
            print(f"[{i}/{len(chosen)}] {m.id}: {out.status} ({out.seconds:.1f} s)", flush=True)
            rows.append({**asdict(m), **asdict(out)})
    total = time.perf_counter() - started

    print()
    print_table(rows)
    caught = sum(r["status"] == "caught" for r in rows)
    print(f"\n{caught}/{len(rows)} mutants caught; {total:.0f} s in all")
    if not args.only:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "tests": list(TESTS),
            "pytest_args": list(PYTEST_ARGS),
            "runner": args.runner,
            "python": platform.python_version(),
            "git_head": git_head(),
            "load_average_1min_at_start": round(load_at_start, 2),
            "baseline_seconds": round(baseline.seconds, 2),
            "total_seconds": round(total, 1),
            "mutants_total": len(rows),
            "mutants_caught": caught,
            "mutants": [{**r, "seconds": round(r["seconds"], 2)} for r in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"wrote {args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json}"
        )
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
