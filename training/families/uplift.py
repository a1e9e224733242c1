"""Uplift training job: who does a contact change? Learned from past campaigns' control groups.

Rows are the contacts of ``campaign_history`` (one per campaign and customer; a repeated contact
keeps its first row): ``treatment`` = the group is one of ``uplift.treatment_groups``, ``label`` =
responded. Features come from one of two places (``uplift.features``):

* ``transactions`` (the default when the dataset has transactions): the experiment's feature set
  at the cutoff ``T = send date - 1 day`` of each campaign (its first contact's date), computed by
  ``features.build.compute_features``; strictly point in time, the contact and its response window
  are after ``T``. A contacted customer with no order by ``T`` keeps missing features;
* ``campaign_history``: the table's extra (passthrough) columns, as given (datasets that ship
  their features with the contacts, e.g. a prospect mailing).

Split: with two or more campaigns, out of time -- the campaigns sent on the latest send date are
the test rows, the earlier ones are fitted; with one campaign, a seeded split of its contacts
stratified by group x response (``split.test_size`` of them are test rows).

Learner (``uplift.learner``): ``x`` or ``t`` as set, or ``auto``: both are fitted on the fit rows
before a validation slice of them (the latest fit campaign when the fit rows span two or more send
dates, else a seeded quarter of the fit contacts stratified by group x response) and the higher
validation ``uplift.metric`` wins (ties to ``x``); the chosen learner is then refitted on all fit
rows. The test rows play no part in the choice (``choose_learner``).

Evaluation on the test rows: the normalised Qini coefficient, AUUC and uplift at each top-k of
the uplift model, of the *response model* (an XGBoost of P(respond | treated) fitted on the
treated fit rows: the usual way to target) and of random targeting (the mean of 20 seeded random
rankings; its uplift at k is the overall uplift). With a synthetic ``truth_uplift.parquet`` beside
the campaign_history file: the same metrics of the true uplift, the correlation of predicted with
true CATE, and the mean *true* uplift among the top k of each ranking (noise-free).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from features.build import attribute_plan, compute_features
from features.contracts import CAMPAIGN_HISTORY
from features.definitions import CurrentStateAttributes, FeatureSet, RFMPointsConfig, feature_set
from features.sources import _sha256, connect
from models.estimators import preprocessor, xgb_pipeline
from models.pyfunc import ScoringModel
from models.uplift import (
    DEFAULT_UPLIFT_PARAMS,
    make_learner,
    qini_curve,
    uplift_by_bin,
    uplift_metrics,
)
from training.config import ExperimentConfig, Split
from training.evaluate import grade, pyplot
from training.families.base import Family, Frame, RunContext, Trained, served_info, trained_from

ID, LABEL, TREATMENT, SPLIT = "customer_id", "label", "treatment", "split"
CAMPAIGN, SEND, CUTOFF = "campaign_id", "send_date", "as_of"
TRUTH_FILE = "truth_uplift.parquet"
RANDOM_DRAWS = 20
SELECTION_VALID_SHARE = 0.25


class UpliftSpec(BaseModel):
    """Uplift options: campaigns, learner, where features come from, groups, metric (see
    docs/campaigns.md)."""

    model_config = ConfigDict(extra="forbid")
    campaign_ids: list[str] | None = Field(None, description="campaigns to learn from (all)")
    learner: Literal["x", "t", "auto"] = Field(
        "x",
        description="x / t-learner, or auto: the better uplift.metric on a validation slice of "
        "the fit rows (the latest fit campaign; ties to x); never on the test rows",
    )
    top_k: list[float] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3], description="fractions for uplift at top k"
    )
    metric: Literal["qini", "auuc"] = Field(
        "qini", description="test metric for the grade and the champion / challenger decision"
    )
    features: Literal["auto", "transactions", "campaign_history"] = Field(
        "auto",
        description="transactions: the feature set at the day before each send; campaign_history:"
        " its extra (passthrough) columns; auto: transactions when the dataset has them",
    )
    treatment_groups: list[str] = Field(
        default_factory=lambda: ["treatment"], description="group values meaning treated"
    )
    control_groups: list[str] = Field(
        default_factory=lambda: ["control"], description="group values meaning control"
    )

    @model_validator(mode="after")
    def _fractions(self) -> UpliftSpec:
        if not self.top_k or any(not 0 < k <= 1 for k in self.top_k):
            raise ValueError(f"uplift.top_k must be fractions in (0, 1], got {self.top_k}")
        both = {g.lower() for g in self.treatment_groups} & {g.lower() for g in self.control_groups}
        if both:
            raise ValueError(f"uplift: groups {sorted(both)} are both treatment and control")
        return self


class UpliftConfig(ExperimentConfig):
    """An uplift experiment: its ``uplift`` block says which campaigns and how to learn."""

    family: Literal["uplift"] = "uplift"
    feature_set: str = "churn_v1"
    rfm: RFMPointsConfig = Field(default_factory=RFMPointsConfig)
    split: Split = Field(default_factory=Split)
    drop_columns: list[str] = Field(
        default_factory=list, description="campaign_history columns not to use as features"
    )
    uplift: UpliftSpec = Field(default_factory=UpliftSpec)
    current_state_attributes: CurrentStateAttributes = Field(
        default_factory=CurrentStateAttributes,
        description="attributes a customers table without history gives only today's value of; "
        "left out at the contacts' cutoffs unless named in allow (features.build.attribute_plan)",
    )

    @property
    def test_label(self) -> str:
        return "test campaigns"


@dataclass
class UpliftFrame:
    """Contacts with features, treatment, label and split; what the campaigns were."""

    frame: pd.DataFrame
    feature_names: list[str]
    categorical: list[str]
    campaigns: pd.DataFrame  # campaign_id, send_date, as_of, split, contacts, treated, control
    split_kind: str
    feature_set: FeatureSet | None = None
    truth_path: Path | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame[SPLIT] == name]


@dataclass
class UpliftResult:
    """What an uplift run produced: the model, the baseline, metrics, grade and test rows."""

    model: Pipeline  # preprocessing + learner; predict = estimated uplift
    response_model: Pipeline  # the baseline: P(respond | treated)
    feature_names: list[str]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    random_metrics: dict[str, float]
    truth_metrics: dict[str, float] | None
    test_predictions: pd.DataFrame
    test_frame: pd.DataFrame
    bins: pd.DataFrame
    campaigns: pd.DataFrame
    split_kind: str
    grade: str
    params: dict[str, Any]
    row_counts: dict[str, int] = field(default_factory=dict)
    learner_choice: LearnerChoice | None = None

    @property
    def baseline_name(self) -> str:
        return "response model"

    @property
    def learner(self) -> str:
        return self.learner_choice.learner if self.learner_choice else "x"


@dataclass(frozen=True)
class LearnerChoice:
    """Which uplift learner was fitted, and on what evidence (validation rows only)."""

    learner: str
    requested: str
    rule: str
    validation: dict[str, float] = field(default_factory=dict)  # uplift.metric per learner
    validation_rows: str = ""
    fit_rows: int = 0
    valid_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the frame


def _group_treatment(group: pd.Series, cfg: Any) -> pd.Series:
    """1 = treated, 0 = control; names every group value that is neither."""
    g = group.astype("string").str.strip().str.lower()
    treated = {v.lower() for v in cfg.uplift.treatment_groups}
    control = {v.lower() for v in cfg.uplift.control_groups}
    unknown = sorted(set(g.dropna()) - treated - control)
    if unknown or g.isna().any():
        shown = unknown[:5] + (["<missing>"] if g.isna().any() else [])
        raise ValueError(
            f"campaign_history group values {shown} are neither treatment "
            f"{sorted(treated)} nor control {sorted(control)}; set uplift.treatment_groups / "
            "uplift.control_groups or map them in the dataset config"
        )
    return g.isin(treated).astype(int)


def read_contacts(cfg: Any, ctx: RunContext) -> tuple[pd.DataFrame, dict[str, int]]:
    """The experiment's campaign contacts: one row per campaign and customer, with treatment and
    label; the send date of each campaign is its first contact's date."""
    contacts = ctx.catalog.read("campaign_history")
    contacts[CAMPAIGN] = contacts[CAMPAIGN].astype(str)
    contacts[ID] = contacts[ID].astype(str)
    wanted = cfg.uplift.campaign_ids
    if wanted:
        unknown = sorted(set(wanted) - set(contacts[CAMPAIGN]))
        if unknown:
            raise ValueError(f"uplift.campaign_ids {unknown} are not in the campaign history")
        contacts = contacts[contacts[CAMPAIGN].isin(wanted)]
    if contacts.empty:
        raise ValueError("the campaign history has no contacts to learn from")
    contacts = contacts.sort_values([CAMPAIGN, "ts"], kind="stable")
    repeated = contacts.duplicated([CAMPAIGN, ID])
    contacts = contacts[~repeated].copy()
    contacts[TREATMENT] = _group_treatment(contacts["group"], cfg).to_numpy()
    contacts[LABEL] = contacts["responded"].astype(bool).astype(int)
    first = contacts.groupby(CAMPAIGN)["ts"].transform("min")
    contacts[SEND] = pd.to_datetime(first).dt.normalize()
    contacts[CUTOFF] = contacts[SEND] - pd.Timedelta(days=1)
    return contacts.reset_index(drop=True), {"repeated_contacts_dropped": int(repeated.sum())}


def _split(contacts: pd.DataFrame, test_size: float, seed: int) -> tuple[pd.Series, str]:
    """fit / test per contact: out of time over campaigns, or stratified within one campaign."""
    sends = contacts.groupby(CAMPAIGN)[SEND].first()
    if len(sends) >= 2:
        latest = sends.max()
        if (sends < latest).sum() == 0:
            raise ValueError("all campaigns share one send date: nothing earlier to learn from")
        test = contacts[CAMPAIGN].map(sends == latest)
        return pd.Series(np.where(test, "test", "fit"), index=contacts.index), "out_of_time"
    strata = contacts[TREATMENT].astype(str) + "_" + contacts[LABEL].astype(str)
    if strata.value_counts().min() < 2:
        strata = contacts[TREATMENT].astype(str)
    _, test_idx = train_test_split(
        contacts.index, test_size=test_size, random_state=seed, stratify=strata
    )
    out = pd.Series("fit", index=contacts.index, dtype=object)
    out[test_idx] = "test"
    return out, "stratified_by_group_and_response"


def _truth_path(ctx: RunContext) -> Path | None:
    """A synthetic dataset's uplift truth, beside its campaign_history file, if there is one."""
    table = ctx.dataset.tables.get("campaign_history")
    if table is None:
        return None
    for src in table.sources:
        candidate = ctx.dataset.resolve_path(src.path, ctx.state).parent / TRUTH_FILE
        if candidate.exists():
            return candidate
    return None


def uplift_frame(cfg: Any, ctx: RunContext) -> UpliftFrame:
    """The experiment's contacts with point-in-time features and a split."""
    contacts, dropped = read_contacts(cfg, ctx)
    source = cfg.uplift.features
    if source == "auto":
        source = "transactions" if ctx.catalog.has("transactions") else "campaign_history"
    fs: FeatureSet | None = None
    if source == "transactions":
        fs = feature_set(cfg.feature_set, cfg.rfm)
        tx = ctx.catalog.relation("transactions")
        # optional inputs (customers, households, contact history) as of each cutoff; attributes
        # known only as today's state are left out unless allowed (docs/features.md)
        plan = attribute_plan(ctx.state, ctx.dataset.name, fs, cfg.current_state_attributes)
        con = connect(ctx.state)
        try:
            feats = []
            cutoffs = sorted(contacts[CUTOFF].unique())
            ctx.cutoff_done(0, len(cutoffs))
            for as_of in cutoffs:
                day = pd.Timestamp(as_of).date()
                f = compute_features(con, tx, day, fs, **plan.relations(day))
                f.insert(1, CUTOFF, pd.Timestamp(as_of))
                feats.append(f)
                ctx.cutoff_done(len(feats), len(cutoffs))
        finally:
            con.close()
        base = contacts[[CAMPAIGN, ID, SEND, CUTOFF, TREATMENT, LABEL]]
        frame = base.merge(
            pd.concat(feats, ignore_index=True),
            on=[ID, CUTOFF],
            how="left",
            validate="many_to_one",
            indicator=True,
        )
        dropped["contacts_without_history"] = int((frame.pop("_merge") == "left_only").sum())
        names = [n for n in fs.names if n not in plan.dropped]
        categorical = [c for c in fs.categorical_names if c in names]
    else:
        reserved = {*CAMPAIGN_HISTORY.names, TREATMENT, LABEL, SEND, CUTOFF, *cfg.drop_columns}
        names = [c for c in contacts.columns if c not in reserved]
        if not names:
            raise ValueError(
                "uplift.features is campaign_history but the table has no extra columns to use "
                "as features; map some (passthrough) or use a dataset with transactions"
            )
        frame = contacts
        categorical = [
            c
            for c in names
            if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
        ]
        for c in categorical:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    frame = frame.reset_index(drop=True)
    frame[SPLIT], kind = _split(frame, cfg.split.test_size, cfg.seed)
    campaigns = (
        frame.groupby(CAMPAIGN)
        .agg(
            send_date=(SEND, "first"),
            as_of=(CUTOFF, "first"),
            split=(SPLIT, _label_split),
            contacts=(ID, "size"),
            treated=(TREATMENT, "sum"),
        )
        .reset_index()
        .sort_values([SEND, CAMPAIGN])
    )
    campaigns["control"] = campaigns["contacts"] - campaigns["treated"]
    return UpliftFrame(
        frame, list(names), list(categorical), campaigns, kind, fs, _truth_path(ctx), dropped
    )


def _label_split(values: pd.Series) -> str:
    return "+".join(sorted(set(values)))


# --------------------------------------------------------------------------- fit and evaluate


def _random_metrics(
    y: np.ndarray, t: np.ndarray, top_k: list[float], seed: int
) -> dict[str, float]:
    """Random targeting: mean (and spread) of seeded random rankings; uplift at k = overall."""
    rng = np.random.default_rng(seed)
    draws = [uplift_metrics(y, t, rng.random(y.size), []) for _ in range(RANDOM_DRAWS)]
    out = {
        "qini": float(np.mean([d["qini"] for d in draws])),
        "qini_sd": float(np.std([d["qini"] for d in draws])),
        "auuc": float(np.mean([d["auuc"] for d in draws])),
    }
    overall = float(y[t == 1].mean() - y[t == 0].mean())
    for k in top_k:
        out[f"uplift_at_{round(100 * k)}pct"] = overall
    return out


def _true_uplift_at_k(true: np.ndarray, score: np.ndarray, top_k: list[float]) -> dict[str, float]:
    """Mean true uplift among the top k of a ranking (noise-free targeting value)."""
    order = np.argsort(-score, kind="mergesort")
    return {
        f"true_uplift_at_{round(100 * k)}pct": float(true[order[: math.ceil(k * true.size)]].mean())
        for k in top_k
    }


def _fit_learner(
    kind: str, rows: pd.DataFrame, uf: UpliftFrame, params: dict[str, Any], seed: int
) -> Pipeline:
    learner = make_learner(kind, params, seed)
    model = Pipeline([("pre", preprocessor(uf.feature_names, uf.categorical)), ("uplift", learner)])
    return model.fit(
        rows[uf.feature_names],
        rows[LABEL].to_numpy(),
        uplift__treatment=rows[TREATMENT].to_numpy(),
    )


def selection_split(fit_rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(inner fit, validation, how) within the fit rows: the latest fit campaign(s) validate when
    the fit rows span two or more send dates, else a seeded stratified share of the contacts."""
    sends = fit_rows.groupby(CAMPAIGN)[SEND].first()
    if sends.nunique() >= 2:
        valid = fit_rows[CAMPAIGN].map(sends == sends.max()).astype(bool)
        names = ",".join(sorted(sends.index[sends == sends.max()]))
        return fit_rows[~valid], fit_rows[valid], f"latest fit campaign ({names}), out of time"
    strata = fit_rows[TREATMENT].astype(str) + "_" + fit_rows[LABEL].astype(str)
    if strata.value_counts().min() < 2:
        strata = fit_rows[TREATMENT].astype(str)
    inner, valid = train_test_split(
        fit_rows.index, test_size=SELECTION_VALID_SHARE, random_state=seed, stratify=strata
    )
    how = f"{SELECTION_VALID_SHARE:.0%} of the fit contacts, stratified by group x response"
    return fit_rows.loc[inner], fit_rows.loc[valid], how


def choose_learner(cfg: Any, uf: UpliftFrame, params: dict[str, Any]) -> LearnerChoice:
    """The learner to fit: as set, or for ``auto`` the higher ``uplift.metric`` on validation rows
    carved from the fit rows (ties to x). Reads no test row."""
    requested = cfg.uplift.learner
    if requested != "auto":
        return LearnerChoice(requested, requested, "set in the experiment config")
    inner, valid, how = selection_split(uf.part("fit"), cfg.seed)
    for rows in (inner, valid):
        if rows[TREATMENT].nunique() < 2 or rows[LABEL].nunique() < 2:
            return LearnerChoice(
                "x",
                "auto",
                "auto: too few validation contacts to compare (both groups and "
                "both outcomes needed): the default x-learner",
                {},
                how,
                len(inner),
                len(valid),
            )
    metric = cfg.uplift.metric
    y, t = valid[LABEL].to_numpy(), valid[TREATMENT].to_numpy()
    scores = {
        kind: float(
            uplift_metrics(
                y,
                t,
                _fit_learner(kind, inner, uf, params, cfg.seed).predict(valid[uf.feature_names]),
                [],
            )[metric]
        )
        for kind in ("x", "t")
    }
    best = "t" if scores["t"] > scores["x"] else "x"
    rule = (
        f"auto: the higher validation {metric} wins, ties to x "
        f"(x {scores['x']:.4f}, t {scores['t']:.4f}: {best}-learner)"
    )
    return LearnerChoice(best, "auto", rule, scores, how, len(inner), len(valid))


def train_uplift(cfg: Any, uf: UpliftFrame, params: dict[str, Any] | None = None) -> UpliftResult:
    """Fit the uplift learner and the response model on ``fit`` rows; evaluate on ``test``."""
    fit_rows, test_rows = uf.part("fit"), uf.part("test")
    for name, rows in (("fit", fit_rows), ("test", test_rows)):
        if rows[TREATMENT].nunique() < 2:
            raise ValueError(f"the {name} rows need both treated and control contacts")
        if rows[LABEL].nunique() < 2:
            raise ValueError(f"the {name} rows need both responders and non-responders")
    params = {**DEFAULT_UPLIFT_PARAMS, **cfg.model.params, **(params or {})}
    names, categorical = uf.feature_names, uf.categorical
    choice = choose_learner(cfg, uf, params)
    model = _fit_learner(choice.learner, fit_rows, uf, params, cfg.seed)
    treated_fit = fit_rows[fit_rows[TREATMENT] == 1]
    response = xgb_pipeline(names, categorical, params, cfg.seed)
    response.fit(treated_fit[names], treated_fit[LABEL].to_numpy())

    x_test = test_rows[names]
    y, t = test_rows[LABEL].to_numpy(), test_rows[TREATMENT].to_numpy()
    uplift = model.predict(x_test)
    p_respond = response.predict_proba(x_test)[:, 1]
    top_k = list(cfg.uplift.top_k)
    preds = pd.DataFrame(
        {
            CAMPAIGN: test_rows[CAMPAIGN].to_numpy(),
            ID: test_rows[ID].to_numpy(),
            TREATMENT: t,
            LABEL: y,
            "uplift": uplift,
            "response_score": p_respond,
        }
    )
    metrics = uplift_metrics(y, t, uplift, top_k)
    base = uplift_metrics(y, t, p_respond, top_k)
    rand = _random_metrics(y, t, top_k, cfg.seed)
    truth_metrics: dict[str, float] | None = None
    true = None
    if uf.truth_path is not None:
        truth = pd.read_parquet(uf.truth_path, columns=[CAMPAIGN, ID, "true_uplift"])
        truth[CAMPAIGN], truth[ID] = truth[CAMPAIGN].astype(str), truth[ID].astype(str)
        preds = preds.merge(truth, on=[CAMPAIGN, ID], how="left", validate="one_to_one")
        if preds["true_uplift"].notna().all():
            true = preds["true_uplift"].to_numpy()
            truth_metrics = uplift_metrics(y, t, true, top_k)
            truth_metrics["mean_true_uplift"] = float(true.mean())
            truth_metrics.update(_true_uplift_at_k(true, true, top_k))
            metrics["corr_true_uplift"] = float(np.corrcoef(uplift, true)[0, 1])
            metrics["spearman_true_uplift"] = float(
                pd.Series(uplift).corr(pd.Series(true), method="spearman")
            )
            base["corr_true_uplift"] = float(np.corrcoef(p_respond, true)[0, 1])
            metrics.update(_true_uplift_at_k(true, uplift, top_k))
            base.update(_true_uplift_at_k(true, p_respond, top_k))
            for k in top_k:
                rand[f"true_uplift_at_{round(100 * k)}pct"] = float(true.mean())
    metric = cfg.uplift.metric
    counts = {
        "fit_rows": len(fit_rows),
        "test_rows": len(test_rows),
        "fit_treated": int(fit_rows[TREATMENT].sum()),
        "test_treated": int(t.sum()),
        **uf.dropped,
    }
    return UpliftResult(
        model=model,
        response_model=response,
        feature_names=names,
        metrics=metrics,
        baseline_metrics=base,
        random_metrics=rand,
        truth_metrics=truth_metrics,
        test_predictions=preds,
        test_frame=test_rows.reset_index(drop=True),
        bins=uplift_by_bin(y, t, uplift, 10, true),
        campaigns=uf.campaigns,
        split_kind=uf.split_kind,
        grade=grade(metrics[metric], base[metric], cfg.grade.a_margin, True),
        params=params,
        row_counts=counts,
        learner_choice=choice,
    )


# --------------------------------------------------------------------------- logging


def plot_qini(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str
) -> Path:
    """Qini curves (incremental responses against the share targeted) of several rankings."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    end = (0.0, 0.0)
    for name, (y, t, s) in curves.items():
        x, q = qini_curve(y, t, s)
        ax.plot(100 * x / x[-1], q, label=name)
        end = (100.0, float(q[-1]))
    ax.plot([0, end[0]], [0, end[1]], ls="--", color="grey", label="random")
    ax.set_xlabel("customers targeted (%, highest score first)")
    ax.set_ylabel("incremental responses (Qini)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_description(cfg: Any, result: UpliftResult) -> str:
    """A human sentence for the MLflow UI's run list."""
    m, b = result.metrics, result.baseline_metrics
    text = (
        f"uplift ({result.learner}-learner) on {cfg.dataset}, {result.split_kind}: Qini "
        f"{m['qini']:.3f} vs response model {b['qini']:.3f}"
    )
    if result.truth_metrics:
        text += f" (truth {result.truth_metrics['qini']:.3f})"
    return f"{text}, grade {result.grade}. {cfg.description}".strip()


def uplift_manifest(uf: UpliftFrame) -> dict[str, Any]:
    """The family's manifest facts: feature source, split, campaigns with send dates, truth."""
    manifest: dict[str, Any] = {
        "feature_set": uf.feature_set.key if uf.feature_set else None,
        "features_from": "transactions" if uf.feature_set else "campaign_history",
        "split": uf.split_kind,
        "campaigns": [
            {
                CAMPAIGN: r[CAMPAIGN],
                "send_date": pd.Timestamp(r[SEND]).date().isoformat(),
                "feature_cutoff": pd.Timestamp(r[CUTOFF]).date().isoformat(),
                "split": r["split"],
                "contacts": int(r["contacts"]),
                "treated": int(r["treated"]),
                "control": int(r["control"]),
            }
            for _, r in uf.campaigns.iterrows()
        ],
    }
    if uf.truth_path is not None:
        manifest["truth_file"] = {"path": str(uf.truth_path), "sha256": _sha256(uf.truth_path)}
    return manifest


class Uplift(Family):
    name = "uplift"
    config = UpliftConfig
    headline_metrics = ("qini", "auuc", "uplift_at_10pct", "uplift_at_20pct", "uplift_at_30pct")

    def build_frame(self, cfg: Any, ctx: RunContext) -> Frame:
        uf = uplift_frame(cfg, ctx)
        return Frame(
            uf.frame,
            uf.feature_names,
            uf.categorical,
            uf.feature_set,
            None,
            manifest=uplift_manifest(uf),
            details=uf,
        )

    def train(self, cfg: Any, frame: Frame, params: dict[str, Any] | None = None) -> Trained:
        r = train_uplift(cfg, frame.details, params)
        extra = {"random": r.random_metrics}
        if r.truth_metrics is not None:
            extra["truth"] = r.truth_metrics
        return trained_from(r, r.test_predictions, extra_metrics=extra)

    def promotion_metric(self, cfg: Any) -> tuple[str, bool]:
        return cfg.uplift.metric, True

    def model_scores(self, cfg: Any, trained: Trained) -> np.ndarray:
        return trained.test_predictions["uplift"].to_numpy(dtype=float)

    def baseline_scores(self, cfg: Any, trained: Trained) -> np.ndarray:
        return trained.test_predictions["response_score"].to_numpy(dtype=float)

    def evaluate(self, cfg: Any, trained: Trained, scores: np.ndarray) -> dict[str, float]:
        preds = trained.test_predictions
        return uplift_metrics(
            preds[LABEL].to_numpy(),
            preds[TREATMENT].to_numpy(),
            np.asarray(scores, dtype=float),
            list(cfg.uplift.top_k),
        )

    def wrap(self, cfg: Any, frame: Frame, trained: Trained) -> Any:
        return ScoringModel(
            trained.model, trained.feature_names, self.name, None, served_info(frame)
        )

    def log_params(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        campaigns = trained.details.campaigns
        return {
            "learner": trained.details.learner,
            "learner.requested": cfg.uplift.learner,
            "split": trained.details.split_kind,
            "train_campaigns": ",".join(
                campaigns.loc[campaigns["split"].str.contains("fit"), CAMPAIGN]
            ),
            "test_campaigns": ",".join(
                campaigns.loc[campaigns["split"].str.contains("test"), CAMPAIGN]
            ),
            "metric": cfg.uplift.metric,
            "top_k": ",".join(str(k) for k in cfg.uplift.top_k),
        }

    def tags(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, str]:
        return {"split": trained.details.split_kind}

    def artifacts(self, cfg: Any, frame: Frame, trained: Trained) -> dict[str, Any]:
        r: UpliftResult = trained.details
        metrics = {
            "test": r.metrics,
            "response_model": r.baseline_metrics,
            "random": r.random_metrics,
        }
        if r.truth_metrics is not None:
            metrics["truth"] = r.truth_metrics
        return {
            "uplift_by_decile.csv": r.bins,
            "campaigns.csv": r.campaigns.astype({SEND: str, CUTOFF: str}),
            "metrics.json": metrics,
            **({"learner_choice.json": r.learner_choice.to_dict()} if r.learner_choice else {}),
        }

    def charts(self, cfg: Any, trained: Trained, folder: Path) -> list[Path]:
        preds = trained.test_predictions
        y, t = preds[LABEL].to_numpy(), preds[TREATMENT].to_numpy()
        curves = {
            f"uplift model ({trained.details.learner}-learner)": (y, t, preds["uplift"].to_numpy()),
            "response model": (y, t, preds["response_score"].to_numpy()),
        }
        if "true_uplift" in preds and preds["true_uplift"].notna().all():
            curves["true uplift"] = (y, t, preds["true_uplift"].to_numpy())
        title = f"Qini, test campaigns ({trained.details.split_kind})"
        return [plot_qini(curves, folder / "qini.png", title)]

    def notes(self, cfg: Any, trained: Trained) -> list[str]:
        choice = trained.details.learner_choice
        return [f"learner: {choice.learner} ({choice.rule})"] if choice else []

    def describe(self, cfg: Any, trained: Trained) -> str:
        return run_description(cfg, trained.details)


FAMILY = Uplift()
