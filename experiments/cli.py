"""The ``experiments`` package's commands: compare, monitor, campaign plan / evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from features.cli import (
    DatasetOpt,
    HomeOpt,
    console,
    parse_date,
    report_app,
    state_of,
    write_snapshot_at,
)

app = typer.Typer()
campaign_app = typer.Typer(help="Campaign plans and read-outs.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")


@app.command()
def compare(
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="MLflow experiment (repeatable)")
    ] = None,
    run: Annotated[
        list[str] | None, typer.Option("--run", "-r", help="run id (repeatable)")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE tag filter (repeatable)")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="also write an HTML page")] = None,
    home: HomeOpt = None,
) -> None:
    """Runs side by side: params, data window, metrics against the champion, AUC difference CI."""
    from experiments.compare import run_compare

    tags: dict[str, str] = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    try:
        run_compare(
            experiment or None,
            run or None,
            tags or None,
            html,
            state_of(home).tracking_uri,
            console=console,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if html:
        console.print(f"HTML comparison written to [bold]{html}[/bold]")


@app.command()
def monitor(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment YAML of the model")],
    reference: Annotated[str, typer.Option(help="reference snapshot date (e.g. training)")],
    current: Annotated[
        str | None, typer.Option(help="current snapshot date (default: last)")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="also write the drift report as an HTML page")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Drift between two snapshots: PSI per feature, score shift, score-decile stability."""
    from experiments.monitor import run_monitor
    from features.catalog import Catalog
    from features.cli import resolve_as_of
    from features.sources import load_dataset
    from training.config import load_experiment
    from training.families import get_family

    state = state_of(home)
    cfg = load_experiment(config)
    dataset = load_dataset(cfg.dataset).name
    catalog = Catalog(state, dataset)
    # both dates inside the data, checked before any snapshot is written or run logged
    ref = resolve_as_of(state, dataset, reference, "--reference")
    cur = resolve_as_of(state, dataset, current, "--current")
    # the family's own served feature set (a first-purchase model's carries its attributes)
    fs = get_family(cfg.family).served_feature_set(cfg)
    if fs is None:
        raise typer.BadParameter("the experiment has no feature set to monitor", param_hint="-c")
    for as_of in (ref, cur):
        if not catalog.snapshot_path(fs.key, as_of).exists():
            write_snapshot_at(dataset, fs, as_of, state)
    report = run_monitor(
        state, dataset, fs.key, ref, cur, cfg.registered_model, state.tracking_uri, html_path=html
    )
    table = Table(title=f"feature drift {ref} -> {cur} (PSI)")
    for col in ("feature", "psi", "flag"):
        table.add_column(col)
    for row in report.features.itertuples(index=False):
        table.add_row(str(row.feature), f"{row.psi:.4f}", str(row.flag))
    console.print(table)
    console.print(
        f"score PSI {report.score.psi:.4f} ({report.score.flag}), mean shift "
        f"{report.score.mean_shift:+.4f}; {report.stability.change_share:.1%} of "
        f"{report.stability.n_common:,} customers changed score decile"
    )
    if report.html_path is not None:
        console.print(f"HTML drift report written to [bold]{report.html_path}[/bold]")


@campaign_app.command("evaluate")
def campaign_evaluate(
    dataset: DatasetOpt = "synthetic",
    campaign: Annotated[
        list[str] | None, typer.Option("--campaign", help="campaign id (repeatable; default all)")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="also write an HTML report")] = None,
    window_days: Annotated[int, typer.Option(help="response / revenue window after a send")] = 30,
    home: HomeOpt = None,
) -> None:
    """Per campaign and offer: treatment vs control, uplift CI and p-value, ROI, negatives."""
    from experiments.campaigns import run_campaign_evaluate

    table = run_campaign_evaluate(
        state_of(home), dataset, campaign or None, html, window_days=window_days
    )
    out = Table(title=f"campaigns of {dataset} (uplift: 95 % Newcombe interval)")
    cols = [
        "campaign_id",
        "offer_id",
        "contacts",
        "control",
        "response_rate_treatment",
        "response_rate_control",
        "uplift",
        "uplift_ci_low",
        "uplift_ci_high",
        "p_value",
        "incremental_revenue",
        "roi",
        "declined",
    ]
    cols = [c for c in cols if c in table.columns]
    for col in cols:
        out.add_column(col)
    for row in table[cols].itertuples(index=False):
        out.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(out)
    if html:
        console.print(f"campaign report written to [bold]{html}[/bold]")


def print_plan(plan: Any, as_of: Any) -> None:
    """The plan's totals per offer and channel, its exclusions per reason and its solver."""
    summary = plan.summary
    incremental = summary["basis"].startswith("incremental")
    console.print(
        f"campaign [bold]{summary['campaign_id']}[/bold] as of {as_of}: base "
        f"{summary['base']:,}, selected {summary['selected']:,} = contacted "
        f"{summary['contacted']:,} (test cell {summary['test_cell']:,}, roll-out "
        f"{summary['rollout']:,}) + control {summary['control']:,}; figures: {summary['basis']}"
    )
    for key, frame in (("offer", plan.by_offer), ("channel", plan.by_channel)):
        table = Table(title=f"per {key}" + (" (incremental)" if incremental else ""))
        for col in frame.columns:
            table.add_column(col.replace("_", " "), justify="left" if col == key else "right")
        for row in frame.itertuples(index=False):
            table.add_row(
                *[
                    f"{v:,.1f}"
                    if isinstance(v, float)
                    else f"{v:,}"
                    if isinstance(v, int)
                    else str(v)
                    for v in row
                ]
            )
        console.print(table)
    excluded = Table(title="not selected, per reason (first rule failed)")
    excluded.add_column("reason")
    excluded.add_column("records", justify="right")
    for reason, count in plan.exclusions.items():
        excluded.add_row(reason.replace("_", " "), f"{count:,}")
    console.print(excluded)
    solver = summary["solver"]
    console.print(
        f"selected + excluded = {summary['selected'] + sum(plan.exclusions.values()):,} = base; "
        f"solver {solver['method']}: objective {solver['objective']:,.1f}, gap to the bound "
        f"{solver['gap']:.1e}, {solver['seconds']:.1f} s; expected spend "
        f"{summary['expected_spend_selected']:,.1f}"
    )


@campaign_app.command("plan")
def campaign_plan(
    campaign: Annotated[Path, typer.Option("--campaign", help="campaign definition YAML")],
    learn_from: Annotated[
        list[str],
        typer.Option("--learn-from", help="randomised multi-arm campaign id (repeatable)"),
    ],
    dataset: DatasetOpt = "synthetic_arms",
    as_of: Annotated[
        str | None, typer.Option(help="plan date YYYY-MM-DD (default: the last data date)")
    ] = None,
    feature_set: Annotated[str, typer.Option(help="features of the arm model")] = "churn_v1",
    learner: Annotated[str, typer.Option(help="arm learner: x or t (per arm), s (pooled)")] = "x",
    out: Annotated[
        Path | None, typer.Option("--out", help="write the per-customer plan (parquet)")
    ] = None,
    customer_value: Annotated[
        Path | None,
        typer.Option(
            "--customer-value",
            help="per-customer value (Parquet with customer_id) of the offers with value_source: "
            "customer_value, e.g. the customer_value.parquet patron value writes; every "
            "customer of the base needs one",
        ),
    ] = None,
    value_column: Annotated[
        str | None,
        typer.Option(
            "--value-column",
            help="the column of --customer-value to use (default: npv, the NPV of the "
            "customer's margin, the figure POST /campaigns/plan takes from a served value model)",
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Plan a multi-offer, multi-channel campaign from per-arm uplift learned on randomised
    campaigns: who gets which offer on which channel, under the budgets and policies."""
    from experiments.planning import (
        ARM_LEARNER,
        ARM_PARAMS,
        VALUE_COLUMN,
        check_value_options,
        fit_arms,
        plan_inputs,
        plan_with_arms,
        read_customer_value,
    )
    from experiments.plans import save_plan
    from features.store import atomic_path
    from models.decisions import load_campaign

    state = state_of(home)
    definition = load_campaign(campaign)
    day_wanted = parse_date(as_of, "--as-of")
    # the value file is read and checked before the arm model is fitted; its customers are
    # matched to the base when the base is built
    check_value_options(definition, customer_value, value_column)
    value = None
    if customer_value is not None:
        value = read_customer_value(customer_value, value_column or VALUE_COLUMN)
        console.print(
            f"customer value: column {value.column} of {value.path} "
            f"(sha256 {value.sha256[:12]}, {len(value.values):,} customers)"
        )
    with console.status(f"learning per-arm uplift from {', '.join(learn_from)}"):
        params = ARM_PARAMS if learner == ARM_LEARNER else None
        model = fit_arms(state, dataset, learn_from, feature_set, learner, params)
    arms = ", ".join(f"{o}/{c}" for o, c in model.arms)
    console.print(f"arm model ({learner}-learner) on {model.contacts:,} contacts; arms: {arms}")
    with console.status("planning"):
        plan, day = plan_with_arms(state, dataset, definition, model, day_wanted, value)
    print_plan(plan, day)
    inputs = plan_inputs(model, dataset, learner, params, value)
    saved = save_plan(state, plan, definition, day, inputs)
    _print_power(saved.record.get("test_cell_power") or [])
    verb = "saved" if saved.created else "already saved (same inputs)"
    console.print(
        f"plan [bold]{saved.plan_id}[/bold] {verb} in {saved.folder} (MLflow experiment "
        f"campaign-plans); read its test cell with: patron campaign read --plan {saved.plan_id} "
        "--responses <file>"
    )
    if out is not None:
        with atomic_path(out) as tmp:
            plan.customers.to_parquet(tmp, index=False)
        console.print(f"plan written to [bold]{out}[/bold]")


@campaign_app.command("read")
def campaign_read(
    plan: Annotated[str, typer.Option("--plan", help="plan id (patron campaign plan prints it)")],
    responses: Annotated[
        Path,
        typer.Option(
            "--responses", help="CSV or parquet: customer_id, responded[, reason] of the wave"
        ),
    ],
    confidence: Annotated[float, typer.Option(help="the roll-out gate's confidence")] = 0.9,
    home: HomeOpt = None,
) -> None:
    """Read a plan's test cell against its control group and decide which arms roll out."""
    import pandas as pd

    from experiments.plans import read_plan

    if not responses.exists():
        raise FileNotFoundError(f"--responses {responses}: no such file")
    frame = (
        pd.read_parquet(responses)
        if responses.suffix == ".parquet"
        else pd.read_csv(responses, dtype={"customer_id": str})
    )
    out = read_plan(state_of(home), plan, frame, confidence)
    table = Table(title=f"plan {plan}: test cell vs control ({confidence:.0%} intervals)")
    for col in (
        "arm",
        "contacts",
        "control",
        "incremental response",
        "interval",
        "expected",
        "profit / contact",
        "interval ",
        "declined (arm vs control)",
    ):
        table.add_column(
            col, justify="left" if col in ("arm", "declined (arm vs control)") else "right"
        )
    for a in out["arms"]:
        lo, hi = a["incremental_response_ci"]
        plo, phi = a["profit_per_contact_ci"]
        exp = a["expected_incremental_response"]
        declined = ", ".join(f"{k} {v[0]:.1%} vs {v[1]:.1%}" for k, v in a["declined"].items())
        table.add_row(
            a["arm"],
            f"{a['contacts']:,}",
            f"{a['control']:,}",
            _pct(a["incremental_response"]),
            f"[{_pct(lo)}, {_pct(hi)}]",
            "—"
            if exp is None
            else _pct(exp) + (" (contradicts)" if a["contradicts_model"] else ""),
            _num(a["profit_per_contact"]),
            f"[{_num(plo)}, {_num(phi)}]",
            declined or "—",
        )
    console.print(table)
    console.print(
        f"{out['read']:,} responses read; {out['rejected']:,} rejected (kept in the plan folder "
        f"with the reason); {out['wave_without_response']:,} of the wave without a response row"
    )
    console.rule(f"roll-out gate at {confidence:.0%} confidence")
    for d in out["gate"]:
        console.print(f"{d['arm']}: {d['reason']}")
    _print_repricing(out.get("repricing", []))


def _print_power(rows: list[dict[str, Any]]) -> None:
    """The test cell's sizing per arm: the gate's chance to pass it if the model is right."""
    if not rows:
        return
    console.rule("test cell: the gate's chance to pass each arm if the model's expectation holds")
    for r in rows:
        head = f"{r['arm']}: {r['test_contacts']:,} test contacts, {r['controls']:,} controls"
        if r["gate_power"] is None:
            console.print(f"{head} — {r['why_none']}")
            continue
        power, need = r["gate_power"], r["test_contacts_for_goal"]
        line = (
            f"{head} — {power:.0%} at {r['confidence']:.0%} confidence (response noise only); "
            f"{r['goal']:.0%} needs about {need:,} test contacts"
        )
        console.print(f"[yellow]{line}[/yellow]" if power < 0.5 else line)


def _print_repricing(decisions: list[dict[str, Any]]) -> None:
    """A dropped arm's re-pricing decision and its evidence (models.decisions.repricing)."""
    if not decisions:
        return
    console.rule("a dropped arm with re-priced terms: re-priced or dropped")
    for d in decisions:
        even = d["break_even_acceptance_cost"]
        if even is None:
            note = ""
        elif even < 0:
            note = "; at the measured response no acceptance cost would make it pay"
        else:
            note = (
                f"; at the measured response it would break even with an acceptance cost of "
                f"{even:,.2f} (if the response stayed as measured)"
            )
        console.print(f"{d['arm']}: {d['reason']}{note}")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.2f} pp"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:+,.2f}"


@campaign_app.command("simulate")
def campaign_simulate(
    campaign: Annotated[
        Path, typer.Option("--campaign", help="campaign definition YAML (offers x channels)")
    ] = Path("experiments/campaigns/loop_demo.yaml"),
    dataset: DatasetOpt = "synthetic_loop",
    history: Annotated[
        list[str] | None,
        typer.Option("--history", help="randomised campaign known before (repeatable)"),
    ] = None,
    wave: Annotated[
        list[str] | None, typer.Option("--wave", help="campaign whose audience is a wave")
    ] = None,
    known: Annotated[
        list[str] | None,
        typer.Option("--known", help="offer/channel arm the history tested (default: all)"),
    ] = None,
    confidence: Annotated[float, typer.Option(help="the roll-out gate's confidence")] = 0.9,
    seed: Annotated[int, typer.Option(help="seed of the test cells and responses")] = 0,
    home: HomeOpt = None,
) -> None:
    """Run a campaign over waves with the loop (test cell, read-out, gate, refit, roll-out)
    against the fixed pre-campaign plan and the oracle, on a synthetic dataset's truth."""
    import numpy as np

    from experiments.offpolicy import arms_of
    from experiments.simulate import campaign_settings, simulable, simulate_loop, simulation_data
    from models.decisions import load_campaign

    definition = load_campaign(campaign)
    simulable(definition)
    arms = arms_of(definition)
    labels = [a.label for a in arms]
    unknown = sorted(set(known or []) - set(labels))
    if unknown:
        raise ValueError(f"--known {unknown} are not arms of the campaign: {labels}")
    known_idx = [labels.index(k) for k in known] if known else list(range(len(arms)))
    history = history or ["ARMS_2023_09"]
    waves = wave or ["WAVE_2024_01", "WAVE_2024_04"]
    settings = campaign_settings(definition, confidence=confidence)
    with console.status("reading the campaigns and their truth"):
        data = simulation_data(state_of(home), dataset, history, waves, arms, "churn_v1")
    with console.status(f"simulating {len(waves)} waves"):
        outcomes = simulate_loop(
            data.history,
            data.waves,
            data.features,
            data.categorical,
            arms,
            known_idx,
            settings,
            np.random.default_rng(seed),
            seed,
        )
    table = Table(title="true incremental profit per wave (synthetic truth)")
    for col in ("wave", "customers", "fixed plan", "loop", "oracle", "loop test cell"):
        table.add_column(col, justify="left" if col == "wave" else "right")
    for o in outcomes:
        table.add_row(
            o.wave,
            f"{o.customers:,}",
            f"{o.fixed:,.0f}",
            f"{o.loop:,.0f}",
            f"{o.oracle:,.0f}",
            f"{o.loop_test_cell:,.0f}",
        )
    fixed, loop, oracle = (
        sum(getattr(o, k) for o in outcomes) for k in ("fixed", "loop", "oracle")
    )
    table.add_row("total", "", f"{fixed:,.0f}", f"{loop:,.0f}", f"{oracle:,.0f}", "")
    console.print(table)
    console.print(
        f"regret (oracle − way): fixed plan {oracle - fixed:,.0f}, loop {oracle - loop:,.0f}; "
        f"loop / oracle {loop / oracle:.3f}, fixed / oracle {fixed / oracle:.3f}"
    )
    for o in outcomes:
        console.rule(f"{o.wave}: roll-out gate at {confidence:.0%} confidence")
        for d in o.gate:
            console.print(f"{d['arm']}: {d['reason']}")
    from experiments.simulate import gate_error_rates

    errors = gate_error_rates([c for o in outcomes for c in o.candidates])
    console.print(
        "the gate against the synthetic truth, over the populations it decided on: where the "
        f"arm truly loses, {errors['negative_rolled_out']} of "
        f"{errors['negative_populations']} rolled out; where it gains, "
        f"{errors['positive_rolled_out']} of {errors['positive_populations']}"
    )


@campaign_app.command("rollout")
def campaign_rollout(
    plan: Annotated[str, typer.Option("--plan", help="a plan whose test cell was read")],
    home: HomeOpt = None,
) -> None:
    """Learn from the read test cell and plan the rest of the base over the arms the gate
    passed; saved as a plan of its own."""
    from experiments.rollout import rollout

    state = state_of(home)
    with console.status("refitting with the test cell and re-planning the rest"):
        saved, result, facts = rollout(state, plan)
    if "retest_rollout" in facts:
        _print_retest_rollout(plan, facts)
        return
    console.rule("roll-out gate: each arm on its segment, pooled with the history")
    for d in facts["gate"]:
        console.print(f"{d['arm']}: {d['reason']}")
    if facts.get("fallback_gate"):
        console.rule("a dropped arm's customers: their best passed arm, read on them")
        for d in facts["fallback_gate"]:
            console.print(f"{d['arm']}: {d['reason']}")
    for arm, to in facts.get("fallback", {}).items():
        given = ", ".join(f"{n:,} {b}" for b, n in to.items())
        console.print(f"{arm} (dropped): {given} (read and passed on them)")
    for arm, n in facts.get("held", {}).items():
        console.print(f"{arm} (dropped): {n:,} customers held (re-tested in the next plan)")
    _print_repricing(facts.get("repricing", []))
    if facts.get("retest_plan"):
        r = facts["retest"]
        console.print(
            f"re-test plan [bold]{facts['retest_plan']}[/bold] saved: {r['test_cell']:,} "
            f"customers contacted at the new terms, {r['control']:,} controls, {r['waiting']:,} "
            f"waiting for its read (excluded: {r['excluded'] or 'none'}); read it with: patron "
            f"campaign read --plan {facts['retest_plan']} --responses <file>"
        )
    if saved is None or result is None:
        console.print(f"plan {plan}: no arm passed the gate — nothing rolls out")
        return
    console.print(
        f"learned from {facts['learned_rows']:,} contacts (the wave's {facts['wave_rows']:,} "
        f"included); arms rolled out: {', '.join(facts['rolled_out_arms'])}; budget left "
        f"{facts['budget']}"
    )
    print_plan(result, saved.record["as_of"])
    console.print(f"roll-out plan [bold]{saved.plan_id}[/bold] saved in {saved.folder}")


def _print_retest_rollout(plan: str, facts: dict[str, Any]) -> None:
    """The roll-out of a re-test plan: its waiting customers, contacted or held per arm."""
    out = facts["retest_rollout"]
    verb = "recorded" if facts["created"] else "already recorded (same read-out)"
    console.rule(f"re-test plan {plan}: roll-out {verb}")
    for a in out["by_arm"]:
        console.print(
            f"{a['arm']}: {a['contacted']:,} contacted, {a['held']:,} held "
            f"({a['held_for_consent']:,} for consent) — {a['gate_reason']}"
        )
    t = out["totals"]
    console.print(
        f"{t['contacted']:,} of {t['customers']:,} waiting customers contacted; consent checked "
        f"on {out['consent']['source']}; the rows: {plan}/rollout.parquet in the plans folder"
    )


@campaign_app.command("report")
def campaign_report(
    plan: Annotated[str, typer.Option("--plan", help="plan id (patron campaign plan prints it)")],
    html: Annotated[Path, typer.Option("--html", help="the HTML page to write")] = Path(
        "campaign.html"
    ),
    home: HomeOpt = None,
) -> None:
    """One HTML page for the analyst: the plan, its read-out and the gate, with charts."""
    from experiments.campaign_page import write_campaign_page

    path = write_campaign_page(state_of(home), plan, html)
    console.print(f"campaign page written to [bold]{path}[/bold]")


def _compact(x: float) -> str:
    """Money or counts in a narrow column: 9.22M, 12.3k, 512."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:,.0f}"


@app.command("value")
def value(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="value job YAML (experiments/value/*.yaml)")
    ],
    as_of: Annotated[
        str | None,
        typer.Option(help="cutoff YYYY-MM-DD (default: the config's as_of, else the last date)"),
    ] = None,
    segment_report: Annotated[
        bool,
        typer.Option(
            "--segment-report/--no-segment-report",
            help="also write the segment report with the value x churn-risk grid",
        ),
    ] = True,
    home: HomeOpt = None,
) -> None:
    """Expected customer value per year for the next K years (revenue, gross profit, P(alive),
    NPV, cumulative NPV), totals per segment and the value x churn-risk grid; MLflow run."""
    from experiments.value import BASIS, load_value_job, run_value
    from features.cli import resolve_as_of
    from features.segments_report import run_segments_report
    from features.sources import load_dataset

    state = state_of(home)
    job = load_value_job(config)
    name = load_dataset(job.dataset).name
    given = as_of if as_of is not None else (job.as_of.isoformat() if job.as_of else None)
    day = resolve_as_of(state, name, given, "--as-of" if as_of is not None else "as_of")
    with console.status(f"fitting BG/NBD + Gamma-Gamma on {name} up to {day}"):
        result, paths, run_id = run_value(state, job, day)
    f = result.facts
    console.print(
        f"[bold]{name}[/bold] at {day}: {BASIS}. Margin {f['margin_default']:.0%}"
        + (
            f" (per category for {f['revenue_share_priced_by_category']:.0%} of past revenue)"
            if f["margin_by_category"]
            else ""
        )
        + f", discount {f['annual_discount_rate']:.0%} a year ({f['discount_timing']}), "
        f"{f['years']} years"
    )
    table = Table(title="expected value by year, all customers")
    cols = {
        "year": "year",
        "expected_alive_start": "alive at start",
        "retention_rate": "retention",
        "expected_revenue": "revenue",
        "expected_gross_profit": "gross profit",
        "discount_factor": "discount",
        "npv": "NPV",
        "cumulative_npv": "cum. NPV",
    }
    for label in cols.values():
        table.add_column(label, justify="right")
    for row in result.overall.to_dict("records"):
        table.add_row(
            *[
                str(int(row[c]))
                if c == "year"
                else f"{row[c]:.1%}"
                if c == "retention_rate"
                else f"{row[c]:.4f}"
                if c == "discount_factor"
                else _compact(row[c])
                for c in cols
            ]
        )
    console.print(table)
    t = result.totals()
    console.print(
        f"{t['customers']:,.0f} customers: NPV {t['npv']:,.0f} ({t['npv_per_customer']:,.2f} per "
        f"customer); a retention contact pays for {t['worth_a_contact']:,.0f} (worthwhile spend "
        f"up to {t['max_retention_spend_total']:,.0f} in all), {t['let_go']:,.0f} let go"
    )
    for scheme, frame in result.by_segment.items():
        last = frame[frame["year"] == frame["year"].max()]
        seg = Table(title=f"NPV over {f['years']} years per {scheme}")
        for col in ("segment", "customers", "NPV", "NPV per customer"):
            seg.add_column(col, justify="left" if col == "segment" else "right")
        for row in last.sort_values("cumulative_npv", ascending=False).to_dict("records"):
            seg.add_row(
                str(row["segment"]),
                f"{row['customers']:,}",
                f"{row['cumulative_npv']:,.0f}",
                f"{row['npv_per_customer']:,.2f}",
            )
        console.print(seg)
    console.print(f"value page: {paths['page']}", soft_wrap=True, markup=False)
    console.print(f"MLflow run {run_id} (experiment value)")
    if segment_report:
        note = (
            f"From the value job {job.name}: {BASIS}; value = NPV over {f['years']} years if the "
            "customer is kept, risk = 1 - P(alive now); a cell's number is the mean most worth "
            "spending to keep one customer (risk x value if kept), below it the customers."
        )
        with console.status("writing the segment report with the value x risk grid"):
            report = run_segments_report(
                state,
                name,
                day,
                out_path=paths["page"].parent / "segments_report.html",
                value_risk=result.grid,
                value_note=note,
            )
        console.print(f"segment report with the value x risk grid: {report}", soft_wrap=True)


@report_app.command("kpis")
def report_kpis(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="KPI config YAML (experiments/kpis/*.yaml)")
    ],
    start: Annotated[str | None, typer.Option(help="first month YYYY-MM (default: config)")] = None,
    end: Annotated[str | None, typer.Option(help="last month YYYY-MM (default: config)")] = None,
    home: HomeOpt = None,
) -> None:
    """KPIs per month: active, new, won-back and churned customers, churn and retention rates,
    revenue and gross profit per segment, targets met or not; an HTML page and an MLflow run."""
    from experiments.kpis import load_kpi_job, run_kpis, target_in_words

    given = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    job = load_kpi_job(config, given)
    with console.status(f"computing the monthly KPIs of {job.dataset}"):
        result, paths, run_id = run_kpis(state_of(home), job, {k: f"--{k}" for k in given})
    table = Table(title=f"KPIs of {result.dataset} per month")
    cols = ["month", "active_end", "buyers", "new", "won_back", "churn_rate", "revenue"]
    for col in [*cols, "gross_profit"]:
        table.add_column(col.replace("_", " "), justify="left" if col == "month" else "right")
    for row in result.monthly.to_dict("records"):
        churn = f"{row['churn_rate']:.1%}" if row["churn_final"] else "not yet"
        table.add_row(
            str(row["month"]) + (" (partial)" if row["partial_month"] else ""),
            *[f"{row[c]:,}" for c in cols[1:5]],
            churn,
            f"{row['revenue']:,.0f}",
            f"{row['gross_profit']:,.0f}",
        )
    console.print(table)
    pending = result.monthly[~result.monthly["churn_final"]]
    if len(pending):
        console.print(
            f"churn not known yet for {', '.join(pending['month'])}: the "
            f"{job.churn_horizon_days}-day horizon of the last ends on "
            f"{pending['churn_known_on'].max()}, after the data"
        )
    for t in result.targets:
        console.print(f"target {target_in_words(t)}", soft_wrap=True, markup=False)
    console.print(f"KPI page: {paths['page']}", soft_wrap=True, markup=False)
    console.print(f"MLflow run {run_id} (experiment kpis)")
