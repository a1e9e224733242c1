"""``patron demo``: the product's whole story on the synthetic default, one command.

Generate → ingest → features → train churn, propensity, next-best offer, uplift and CLV (each
against its baseline out of time, registered, promoted only on evidence) → serve them together
from the serving YAML → one ``/score`` with reasons, one ``/next-best-offer``, one campaign planned
from the served uplift and CLV models → stop. The steps are the README's commands, called in
process; each prints what the command prints, and a closing table gives every family's figure and
the time each step took."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from features.cli import console

#: the checkout the demo's YAMLs are read from, whatever the working folder
ROOT = Path(__file__).resolve().parents[1]
#: (family, experiment YAML under ROOT): what the demo trains, in the order it trains them
DEMO_EXPERIMENTS: tuple[tuple[str, Path], ...] = (
    ("churn", Path("experiments/churn/synthetic.yaml")),
    ("propensity", Path("experiments/propensity/synthetic_any.yaml")),
    ("nbo", Path("experiments/nbo/synthetic.yaml")),
    ("uplift", Path("experiments/uplift/synthetic.yaml")),
    ("clv", Path("experiments/clv/synthetic.yaml")),
)
#: what the demo serves: every family above, by alias, and the campaign it plans by name
DEMO_SERVING = Path("experiments/serving/synthetic.yaml")
DEMO_CAMPAIGN = "retention"


@dataclass
class Trained:
    """One family's line of the closing table."""

    family: str
    registered_model: str
    version: str
    promoted: bool
    metric: str  # the family's first headline metric
    model: str
    baseline: str  # the baseline's figure and name
    test_rows: str  # where it was measured: a test cutoff, the test campaigns, a split
    served: str = "champion"  # what the demo serves of the family (served_settings)


@dataclass
class DemoResult:
    """What the demo trained, what the service answered, and how long each step took."""

    trained: list[Trained]
    timings: Timings
    served_notes: list[str]  # a family served as the challenger, and why
    answers: dict[str, Any]  # endpoint path -> the JSON the service answered
    url: str  # where the server answered (stopped when the demo returns)


@dataclass
class Timings:
    """Seconds per step, in order."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        console.rule(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((name, time.perf_counter() - start))


def headline(cfg: Any, trained: Any) -> tuple[str, str, str, str]:
    """The family's first headline metric: (name, model, baseline (name), the test rows)."""
    from training.families import get_family

    keys = [k for k in get_family(cfg.family).headline_metrics if k in trained.metrics]
    if not keys:
        return "grade", str(trained.grade), "", cfg.test_label
    key = keys[0]
    base = trained.baseline_metrics.get(key)
    versus = "" if base is None else f"{base:.3f} ({trained.baseline_name})"
    return key, f"{trained.metrics[key]:.3f}", versus, cfg.test_label


def served_settings(
    serving: Path, trained: list[Trained], champion_of: Callable[[str], str | None]
) -> tuple[Any, list[str]]:
    """The serving YAML's settings. A family whose model this run did not promote is served by
    its champion when an earlier run made one (``champion_of``: the champion's version, or
    None), else by the version this run registered (alias ``challenger``) — said, never silent."""
    from serving.settings import ServingSettings

    settings = ServingSettings.from_file(serving)
    by_family = {t.family: t for t in trained}
    models, notes = dict(settings.models), []
    for family, spec in settings.models.items():
        t = by_family.get(family)
        if t is None or t.promoted or spec.alias != "champion":
            continue
        kept = champion_of(spec.registered_model)
        if kept is not None:
            t.served = f"champion v{kept} kept"
            notes.append(
                f"{family}: version {t.version} did not beat champion v{kept} beyond noise; "
                f"v{kept} is served"
            )
            continue
        t.served = "challenger served"
        models[family] = spec.model_copy(update={"alias": "challenger"})
        notes.append(
            f"{family}: version {t.version} was not promoted (no evidence over its baseline on "
            "these rows) and there is no champion: the demo serves it as the challenger"
        )
    return settings.model_copy(update={"models": models}), notes


def champion_lookup(settings_file: Path, state: Any) -> Callable[[str], str | None]:
    """The registry's champion version of a registered model, or None when it has none."""
    from serving.registry import Registry, tracking_uri_of
    from serving.settings import ServingSettings

    registry = Registry(tracking_uri_of(ServingSettings.from_file(settings_file), state))

    def champion_of(name: str) -> str | None:
        try:
            return str(registry.version(name, "champion")[0])
        except Exception:  # no such model or alias: MLflow raises its own error types
            return None

    return champion_of


def post(url: str, path: str, key: str, body: dict[str, Any]) -> Any:
    """POST a JSON body as a campaign system would; print the request and the answer's status."""
    import httpx

    console.print(f"[bold]POST {path}[/bold] {json.dumps(body)}")
    response = httpx.post(
        f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    response.raise_for_status()
    return response.json()


def print_plan_answer(answer: dict[str, Any]) -> None:
    """The plan in a campaign manager's words: where each estimate came from, the totals per
    channel (incremental figures: uplift x the customer's value, minus costs), who was left out
    and why, and the first selected customers."""
    from rich.markup import escape

    s = answer["summary"]
    for used in [*answer["inputs"], *answer["value_model"]]:
        console.print(
            f"{used['offer_id']}: {used['estimate']} from {used['registered_model']} "
            f"v{used['version']}" + (f" ({escape(used['basis'])})" if used.get("basis") else "")
        )
    console.print(
        f"{s['basis']}: {s['selected']:,} of {s['base']:,} customers selected — "
        f"{s['contacted']:,} contacted ({s['test_cell']:,} in the test cell, {s['rollout']:,} in "
        f"the roll-out), {s['control']:,} held out as control"
    )
    totals = Table(title="per channel, over the contacted")
    for col in ("channel", "contacted", "expected incremental profit", "expected spend"):
        totals.add_column(col, justify="left" if col == "channel" else "right")
    for t in answer["by_channel"]:
        profit = t["expected_incremental_profit_contacted"]
        totals.add_row(
            t["name"],
            f"{t['contacted']:,}",
            "" if profit is None else f"{profit:,.0f}",
            f"{t['expected_spend_contacted']:,.0f}",
        )
    console.print(totals)
    excluded = ", ".join(f"{k} {v:,}" for k, v in answer["excluded"].items() if v)
    console.print(f"not selected, by first failed rule: {excluded or 'none'}")
    rows = Table(title="first selected customers")
    for col in ("customer_id", "group", "offer", "channel", "expected incremental profit"):
        rows.add_column(col, justify="right" if col.startswith("expected") else "left")
    for row in answer["customers"]:
        profit = row.get("expected_incremental_profit")
        rows.add_row(
            row["customer_id"],
            str(row["group"]),
            str(row["offer"]),
            str(row["channel"]),
            "" if profit is None else f"{profit:,.2f}",
        )
    console.print(rows)


def run_demo(
    state: Any,
    customers: int | None,
    served_experiment: Callable[[Path], Any],
) -> DemoResult:
    """The whole story in one process (a server child for the HTTP part)."""
    from features.cli import _generate, _ingest, write_snapshot_at
    from features.sources import load_dataset
    from serving.cli import (
        _free_port,
        check_startable_state,
        ensure_snapshots,
        settings_env,
        start_server,
        stop_server,
        wait_ready,
    )
    from training.cli import train_config

    timings = Timings()
    first = served_experiment(ROOT / DEMO_EXPERIMENTS[0][1])
    dataset = load_dataset(first.dataset)
    console.rule(f"Patron demo — state folder {state.home}")
    with timings.step("1. generate synthetic CRM data"):
        if dataset.synthetic is not None:
            _generate(dataset, state, customers)
    with timings.step("2. ingest (validate into canonical tables, bad rows quarantined)"):
        _ingest(dataset, state)
    with timings.step("3. features (point-in-time snapshot at the last data date)"):
        snapshot = write_snapshot_at(first.dataset, first.feature_set, None, state)
        console.print(f"feature snapshot: {snapshot}")
    trained: list[Trained] = []
    answers: dict[str, Any] = {}
    for family, config in DEMO_EXPERIMENTS:
        with timings.step(f"4. train {family} ({config})"):
            cfg, out = train_config(ROOT / config, state)
        metric, model, baseline, test_rows = headline(cfg, out.trained)
        trained.append(
            Trained(
                family=family,
                registered_model=str(out.logged["registered_model"]),
                version=str(out.logged["version"]),
                promoted=bool(out.logged["champion"]),
                metric=metric,
                model=model,
                baseline=baseline,
                test_rows=test_rows,
            )
        )
    with timings.step(f"5. serve every family ({DEMO_SERVING})"):
        serving_file = ROOT / DEMO_SERVING
        champion_of = champion_lookup(serving_file, state)
        settings, notes = served_settings(serving_file, trained, champion_of)
        for line in notes:
            console.print(line)
        ensure_snapshots(settings, state)
        env = settings_env(settings, state)
        key = secrets.token_urlsafe(24)  # a throwaway key: the service never runs without one
        env.update({"PATRON_API_KEYS": key, "PATRON_ADMIN_KEYS": key})
        check_startable_state(env, state)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(env, "127.0.0.1", port)
    try:
        with timings.step("5b. wait until every model is loaded (/readyz)"):
            wait_ready(url, proc, timeout_s=300.0)
        with timings.step("6. ask the service as a campaign system would"):
            import pandas as pd

            ids = pd.read_parquet(snapshot, columns=["customer_id"])["customer_id"].head(2).tolist()
            score: dict[str, Any] = {"customer_ids": [*ids, "NO-SUCH-CUSTOMER"], "model": "churn"}
            answers["/score"] = post(url, "/score", key, score)
            console.print_json(json.dumps(answers["/score"]))
            offers = {"customer_ids": ids[:1], "k": 2}
            answers["/next-best-offer"] = post(url, "/next-best-offer", key, offers)
            console.print_json(json.dumps(answers["/next-best-offer"]))
        with timings.step(f"7. plan the {DEMO_CAMPAIGN!r} campaign (served uplift x served CLV)"):
            plan: dict[str, Any] = {
                "campaign_name": DEMO_CAMPAIGN,
                "selected_only": True,
                "max_rows": 3,
            }
            answers["/campaigns/plan"] = post(url, "/campaigns/plan", key, plan)
            print_plan_answer(answers["/campaigns/plan"])
    finally:
        stop_server(proc)
    return DemoResult(trained, timings, notes, answers, url)


def print_closing(state: Any, result: DemoResult) -> None:
    """Every family's figure and promotion, the time per step, and where to look next."""
    console.rule("trained against a baseline, registered, served")
    for t in result.trained:
        status = "promoted to champion" if t.promoted else f"not promoted, {t.served}"
        versus = f" vs {t.baseline}" if t.baseline else ""
        console.print(
            f"{t.family} ({t.registered_model} v{t.version}, {status}): {t.metric} {t.model}"
            f"{versus} on the {t.test_rows}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    steps = Table(title="time per step")
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for name, seconds in result.timings.steps:
        steps.add_row(name, f"{seconds:,.1f}")
    steps.add_row("total", f"{sum(s for _, s in result.timings.steps):,.1f}")
    console.print(steps)
    console.print(f"MLflow store: {state.tracking_uri}")
    console.print("open the MLflow UI, then browse http://127.0.0.1:5000:")
    # one line however narrow the terminal, so it can be copied as it is
    console.print(
        f".venv/bin/mlflow ui --backend-store-uri {state.tracking_uri} --port 5000 --workers 1",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    console.print(
        "next: the campaign loop (test cell → read-out → gate → roll-out) against a fixed plan "
        "and the oracle: [bold]patron campaign simulate[/bold] (README, Analysts, campaigns)"
    )
