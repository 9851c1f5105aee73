"""The public Python API and composition root: each function picks the adapters and hands them to a workflow.

The CLI is a thin layer over these functions, so a notebook gets exactly what a command does::

    import leadtemp
    trained = leadtemp.train("params.yaml")
    scored = leadtemp.score("params.yaml", as_of="2025-01-31", out="scores.csv")
    why = leadtemp.explain("params.yaml", "L000042", as_of="2025-01-31")
    quarters = leadtemp.backtest("params.yaml", quarters=4)
    decision = leadtemp.retrain("params.yaml", through="2025-04-01", dry_run=True)

Heavy libraries (MLflow, LightGBM, Spark) are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from leadtemp.core.config import AUTO, CHAMPION, Params, load_params
from leadtemp.core.errors import ConfigError, SchemaError
from leadtemp.modelling.partition import DEFAULT_CHUNK
from leadtemp.modelling.results import Backtest, BatchResult, RetrainReport, TrainingResult
from leadtemp.modelling.scorer import LeadScorer

SIMULATED_HORIZON = 90  # the horizon of the simulator's oracle probabilities when snapshots.horizon_days is auto

SCORE_FILE_SUFFIXES = (".csv", ".parquet", ".pq")


# -- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trained:
    result: TrainingResult
    logged: object  # adapters.tracking.LoggedModel: run id, model URI, registry version, champion or not


@dataclass(frozen=True)
class Explanation:
    lead_id: str
    as_of: pd.Timestamp
    model_version: str
    probability: float
    score: int
    bucket: str
    horizon_days: int | None   # None for a model trained on a final label
    factors: pd.DataFrame      # factor (words), effect (log-odds), largest effect first
    base_value: float          # the model's average margin: the waterfall starts here
    run_id: str = ""           # the MLflow run that logged the model version
    change: dict | None = None  # with ``since``: since, previous_probability, previous_bucket, trend, what_changed
    when: dict | None = None    # p_<h>d and expected_days of a model that has them (modelling/horizons.py)


@dataclass(frozen=True)
class BacktestRun:
    backtest: Backtest
    run_id: str


@dataclass(frozen=True)
class Retrained:
    report: RetrainReport
    logged: object | None  # adapters.tracking.LoggedModel, None when nothing was logged as a model


# -- helpers ------------------------------------------------------------------------------------

def params_with(params: Params | str | Path = "params.yaml", leads: str | Path | None = None,
                interactions: str | Path | None = None) -> Params:
    """Params from a file (or as given), with the data paths overridden where given."""
    p = params if isinstance(params, Params) else load_params(params)
    overrides = {k: str(v) for k, v in (("leads", leads), ("interactions", interactions)) if v is not None}
    return p.replace(data=overrides) if overrides else p


def parse_as_of(value: str | pd.Timestamp | None, mode: str = "events", option: str = "--as-of") -> pd.Timestamp:
    """A scoring date; required for data with conversion times, today for a model trained on a final label.

    Text is ISO 8601 only (YYYY-MM-DD[THH:MM[:SS]]), so it never depends on a day/month guess. A time
    zone is taken as data timestamps are: converted to UTC, then naive. Empty text, or a date outside
    the default data window (1970 .. 2100), is a ConfigError.
    """
    from leadtemp.core.schema import DateRules

    if value is None:
        if mode == "events":
            raise ConfigError(f"{option} DATE is required: which day's view of the leads should be scored?")
        return pd.Timestamp.today().normalize()
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"{option} is empty: give a date (YYYY-MM-DD)")
    try:
        when = (pd.to_datetime(value.strip(), format="ISO8601", utc=True) if isinstance(value, str)
                else pd.Timestamp(value))
    except (ValueError, TypeError):
        raise ConfigError(f"{option} {value!r} is not a date (use YYYY-MM-DD)") from None
    if pd.isna(when):
        raise ConfigError(f"{option} {value!r} is not a date (use YYYY-MM-DD)")
    if when.tz is not None:
        when = when.tz_convert("UTC").tz_localize(None)
    window = DateRules()
    if not pd.Timestamp(window.earliest) <= when < pd.Timestamp(window.latest):
        raise ConfigError(f"{option} {value!r} is outside {window.earliest} .. {window.latest}")
    return when.as_unit("ns")


def quiet_mlflow() -> None:
    """No telemetry, no git warnings, no download progress bars from MLflow (set before it is imported)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # `report` reads a run's small artifacts


def load_data(params: Params, notes: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leads and interactions named in params, validated (see :mod:`leadtemp.core.schema`).

    ``notes`` collects what the reading skipped (a CSV's empty rows at its end); without it they go to stderr.
    """
    from leadtemp.adapters.files import load_data as read

    said: list[str] = [] if notes is None else notes
    frames = read(params, notes=said)
    if notes is None:
        for note in said:
            print(f"note: {note}", file=sys.stderr)
    return frames


def load_model(params: Params, model: str | None = None) -> tuple[LeadScorer, str]:
    """A scorer and its version from a model URI or exported folder (default: the registry's champion)."""
    quiet_mlflow()
    from mlflow.exceptions import MlflowException

    from leadtemp.adapters.pyfunc import load_scorer

    uri = model or f"models:/{params.mlflow.registered_model}@{CHAMPION}"
    try:
        return load_scorer(uri)
    except (ConfigError, MlflowException, OSError) as exc:
        _no_champion(params, model)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot load model {uri!r}: {exc}") from exc


def _no_champion(params: Params, model: str | None) -> None:
    """The default model (the champion) did not load: when the registry has none, say so in one line and name a
    model that loads, rather than MLflow's words."""
    if model is None:
        from leadtemp.adapters.pyfunc import missing_champion

        if why := missing_champion(params.mlflow.registered_model, params.mlflow.export_dir):
            raise ConfigError(why) from None


# -- commands -----------------------------------------------------------------------------------

def simulate(params: Params | str | Path = "params.yaml", out: str | Path = "data/sim", leads: int | None = None,
             seed: int | None = None, start: str | None = None, months: int | None = None,
             shift_at: str | None = None, lost: bool | None = None, referrals: bool | None = None,
             stages: bool | None = None):
    """Simulate a CRM (defaults from params' ``simulate`` section) and write it to ``out``.

    ``lost``: tell the story of lost leads (a ``lost_at`` column, ``disqualified`` events, recycled
    leads, and ``losses.parquet``, the truth of every loss). ``referrals``: referral leads name their referrer (a
    ``referred_by`` column; docs/simulator.md). ``stages``: the sales funnel's stage changes and call outcomes
    (docs/simulator.md). Returns the simulated data and the files written.
    """
    from leadtemp.adapters.files import write_table
    from leadtemp.simulate import simulate as run

    p = params_with(params)
    s = p.simulate
    shift_at = shift_at or s.shift_at
    first = pd.Timestamp(start or s.start)
    if shift_at is not None:
        if not first < parse_as_of(shift_at, option="--shift-at") < first + pd.DateOffset(months=months or s.months):
            raise ConfigError(f"--shift-at {shift_at} must fall inside the simulated period")
    data = run(leads or s.leads, seed if seed is not None else s.seed, start or s.start, months or s.months,
               p.snapshots.horizon_days if p.snapshots.horizon_days != AUTO else SIMULATED_HORIZON, shift_at=shift_at,
               lost=s.lost if lost is None else lost, referrals=s.referrals if referrals is None else referrals,
               stages=s.stages if stages is None else stages)
    out = Path(out)
    written = [write_table(data.leads, out / "leads.parquet"),
               write_table(data.interactions, out / "interactions.parquet"),
               write_table(data.truth, out / "truth.parquet")]
    if data.losses is not None:
        written.append(write_table(data.losses, out / "losses.parquet"))
    return data, written


def train(params: Params | str | Path = "params.yaml", leads: pd.DataFrame | None = None,
          interactions: pd.DataFrame | None = None) -> Trained:
    """Check the data, fit and calibrate, log the run to MLflow, register and export the model.

    ``leads``/``interactions``: frames already loaded (default: read the files named in params).
    """
    quiet_mlflow()
    from leadtemp.adapters.files import input_hashes
    from leadtemp.adapters.tracking import log_run
    from leadtemp.workflows.train import train as fit

    p = params_with(params)
    started = time.time()
    notes: list[str] = []
    if leads is None:
        leads, interactions = load_data(p, notes)
    result = fit(leads, interactions, p, source_hashes=input_hashes(p))
    if notes:
        result = replace(result, warnings=[*notes, *result.warnings])
    return Trained(result, log_run(result, p, export_dir=p.mlflow.export_dir, started=started))


def score_leads(leads: pd.DataFrame, interactions: pd.DataFrame, as_of: str | pd.Timestamp,
                params: Params | str | Path = "params.yaml", model: str | None = None,
                reasons: bool = True, include_lost: bool = False) -> pd.DataFrame:
    """Score frames in memory: every lead eligible at ``as_of``, ranked, with reasons.

    Leads lost at ``as_of`` (closed as lost and not reopened) are left out; ``include_lost`` scores them
    too, marked by the column ``lost_since``.
    """
    scorer, _ = load_model(params_with(params), model)
    return scorer.score(leads, interactions, pd.Timestamp(as_of), reasons=reasons, include_lost=include_lost)


def score(
    params: Params | str | Path = "params.yaml",
    as_of: str | pd.Timestamp | None = None,
    *,
    out: str | None = None,
    db: str | None = None,
    leads_table: str | None = None,
    interactions_table: str | None = None,
    write_table: str | None = None,
    rejects: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    work_dir: Path | None = None,
    engine: str = "local",
    reasons: bool = True,
    model: str | None = None,
    echo: Callable[[str], None] = print,
    interactive: bool | None = None,
    include_lost: bool = False,
    since: str | pd.Timestamp | None = None,
    previous: str | Path | None = None,
    html: str | Path | None = None,
    top: int | None = None,
) -> tuple[BatchResult, str]:
    """Score every lead eligible at ``as_of`` from files or database tables into a file or a table.

    Streamed, partitioned by lead and resumable: run the same call again after a crash. Returns the
    run's counts and the model version that scored. Leads lost at ``as_of`` are counted and skipped;
    ``include_lost`` scores them too, marked in the output column ``lost_since``. ``since`` (a date before
    ``as_of``) or ``previous`` (an earlier scores file of the same model, whose date is used): each row also gets
    ``previous_probability``, ``previous_bucket``, ``trend`` and ``what_changed`` (docs/temperature-over-time.md).
    ``html``: also write the lead cards of the ``top`` best leads (default 20) and an index.html into this folder
    (new, or one of earlier cards, replaced whole; checked before any work; docs/lead-cards.md).
    """
    p = params_with(params)
    when = parse_as_of(as_of, p.data.mode)
    if since is not None and previous is not None:
        raise ConfigError("give --since DATE or --previous FILE, not both")
    if since is not None:
        since = parse_as_of(since, p.data.mode, "--since")
        from leadtemp.workflows.changes import check_order

        check_order(since, when, "--since", "--as-of")
    if (out is None) == (write_table is None):
        raise ConfigError("give one output: --out FILE, or --db URL --write-table TABLE")
    if (leads_table or interactions_table or write_table) and not db and engine != "spark":
        raise ConfigError("--leads-table, --interactions-table and --write-table need --db URL "
                          "(with --engine spark and no --db they are Spark catalog tables)")
    if engine not in ("local", "spark"):
        raise ConfigError(f"--engine {engine!r}: use local or spark")
    if out is not None and Path(out).suffix.lower() not in SCORE_FILE_SUFFIXES:
        raise ConfigError(f"--out {out}: use a .csv or .parquet file name")
    from leadtemp.adapters.sources import Source, Target, check_run

    lead_source = Source.database(db, leads_table) if leads_table else Source.file(p.data.leads, p.data.csv_separator)
    if interactions_table:
        event_source = Source.database(db, interactions_table)
    else:
        event_source = Source.file(p.data.interactions, p.data.csv_separator) if p.data.interactions else None
    target = (Target(path=Path(out), rejects=rejects, location=out) if out is not None
              else Target(url=db, table=write_table, rejects=rejects))
    # Before any work: no output over an input or another output, inputs there, outputs writable.
    check_run(lead_source, event_source, target, work_dir, local=engine == "local")
    if html is not None or top is not None:
        _check_cards(p, html, top, target, engine, bool(leads_table or interactions_table))
    scorer, version = load_model(p, model)
    if previous is not None:
        since = _previous_date(p, Path(previous), when, scorer, version)
    if html is not None:
        result = score_sources(scorer, p, when, lead_source, event_source, target, chunk_size=chunk_size,
                               work_dir=work_dir, reasons=reasons, echo=echo, interactive=interactive,
                               include_lost=include_lost, since=since)
        written = write_cards(p, scorer, version, when, Path(out), Path(html), top or DEFAULT_CARDS, result.scored,
                              include_lost)
        return replace(result, cards=str(written)), version
    if engine == "spark":
        from leadtemp.adapters.spark import score_spark

        return score_spark(scorer, p, when, lead_source, event_source, target, reasons=reasons, echo=echo,
                           include_lost=include_lost, since=since), version
    return score_sources(scorer, p, when, lead_source, event_source, target, chunk_size=chunk_size, work_dir=work_dir,
                         reasons=reasons, echo=echo, interactive=interactive, include_lost=include_lost,
                         since=since), version


def _previous_date(p: Params, path: Path, when: pd.Timestamp, scorer: LeadScorer, version: str) -> pd.Timestamp:
    """The date of ``--previous``, an earlier scores file of this model (read, checked: workflows/changes.py)."""
    from leadtemp.adapters.files import read_table
    from leadtemp.workflows.changes import check_order, previous_date

    if path.suffix.lower() not in SCORE_FILE_SUFFIXES:
        raise ConfigError(f"--previous {path}: give the .csv or .parquet file an earlier leadtemp score wrote")
    since = previous_date(read_table(path), f"--previous {path}", version, str(scorer.meta.get("run_id") or ""))
    check_order(since, when, f"--previous {path}: its date", "--as-of")
    return since


def score_sources(scorer: LeadScorer, params: Params, as_of: pd.Timestamp, leads, interactions, target,
                  chunk_size: int = DEFAULT_CHUNK, work_dir: Path | None = None, reasons: bool = True,
                  echo: Callable[[str], None] = print, interactive: bool | None = None,
                  include_lost: bool = False, since: pd.Timestamp | None = None) -> BatchResult:
    """The local engine on this machine: ``leads``/``interactions`` are :class:`~leadtemp.adapters.sources.Source`
    (files, folders, database tables), ``target`` a :class:`~leadtemp.adapters.sources.Target`."""
    from leadtemp.adapters.progress import Progress
    from leadtemp.adapters.staging import LocalScoringRun
    from leadtemp.modelling.horizons import timing_columns
    from leadtemp.workflows.score import score_in_batches

    return score_in_batches(scorer, params, as_of, leads, interactions,
                            LocalScoringRun(target, work_dir, include_lost, changes=since is not None,
                                            when=tuple(timing_columns(scorer.timing_days))),
                            lambda total, what: Progress(echo, total, what, interactive),
                            chunk_size=chunk_size, reasons=reasons, echo=echo, include_lost=include_lost, since=since)


DEFAULT_CARDS = 20  # score --html without --top


def _ledger(scorer: LeadScorer, leads: pd.DataFrame) -> pd.DataFrame | None:
    """The whole table's referral ledger when the model has referral features and only some leads are scored."""
    if not scorer.spec.referral_columns:
        return None
    from leadtemp.core.referrals import referral_ledger

    return referral_ledger(leads)


def _check_cards(p: Params, html: str | Path | None, top: int | None, target, engine: str, tables: bool) -> None:
    """score --html DIR [--top N], before any work: a folder of cards (new or earlier cards), file inputs, --out FILE."""
    from leadtemp.adapters.cards import check_card_folder
    from leadtemp.adapters.paths import check_separate, resolved

    if html is None:
        raise ConfigError("--top N needs --html DIR: it is how many lead cards to write")
    if top is not None and top < 1:
        raise ConfigError(f"--top {top}: give at least 1")
    if engine != "local" or target.path is None:
        raise ConfigError("--html DIR needs the local engine and --out FILE: the cards are of the best rows of that file")
    files = [Path(f) for f in (p.data.leads, p.data.interactions) if f]
    if tables or not all(f.is_file() for f in files):
        raise ConfigError("--html DIR reads the top leads again from the input files: give the leads and interactions "
                          "as files (not database tables or folders), or write one card with `leadtemp explain LEAD "
                          "--html FILE`")
    folder = Path(html)
    outputs = [(what, Path(name)) for what, name in target.outputs()]
    check_separate(_inputs(p), [("--html", folder), *outputs])
    for what, path in outputs:
        if resolved(folder) in resolved(path).parents:
            raise ConfigError(f"{what} {path} is inside the --html folder {folder}, which is replaced whole; "
                              "write it elsewhere")
    check_card_folder("--html", folder)


def write_cards(p: Params, scorer: LeadScorer, version: str, when: pd.Timestamp, scores: Path, folder: Path,
                top: int, scored: int, include_lost: bool = False, factors: int = 5) -> Path:
    """The cards of the ``top`` best leads of the scores file ``scores`` (rows best first) and their index.html,
    written as the folder ``folder`` (made whole beside it, then swapped in: never half a folder)."""
    from leadtemp.adapters.cards import card_file_name, check_private, render_card, render_index, write_card_folder
    from leadtemp.adapters.paths import storage_errors

    with storage_errors(f"--out {scores}"):
        if scores.suffix.lower() == ".csv":
            best = pd.read_csv(scores, nrows=top, dtype={"lead_id": str}, sep=",")
        else:
            best = pd.read_parquet(scores).head(top)
    best = best.sort_values("rank", kind="stable")
    ids = best["lead_id"].astype(str).tolist()
    lead_table, events = load_data(p)
    chosen = lead_table.loc[lead_table["lead_id"].isin(ids)]
    own = events.loc[events["lead_id"].isin(ids)]
    features = scorer.features(chosen, own, when, include_lost=include_lost, ledger=_ledger(scorer, lead_table))
    found = {w.lead_id: w for w in _explanations(scorer, version, features, when)} if len(features) else {}
    rows = chosen.set_index("lead_id")
    pages, listed, reasons = {}, [], {}
    for lead_id, rank in zip(ids, best["rank"].astype(int)):
        if lead_id not in found:
            raise ConfigError(f"lead {lead_id!r} of {scores} is not scorable from {p.data.leads} as of {when.date()}: "
                              "the scores file and the input files disagree; score again")
        card = _card(found[lead_id], scorer, rows.loc[lead_id], own.loc[own["lead_id"] == lead_id], factors, rank)
        name = card_file_name(rank, lead_id)
        page = render_card(card, back="index.html")
        check_private(page, lead_id, _private(p, rows.loc[lead_id]))
        pages[name] = page
        listed.append((card, name))
    if "reason_1" in best.columns:
        reasons = dict(zip(ids, best["reason_1"].fillna("").astype(str)))
    pages["index.html"] = render_index(listed, when, version, scored, reasons)
    return write_card_folder(pages, folder)


def demo(params: Params | str | Path, data: str | Path) -> tuple[Trained, pd.DataFrame, pd.Timestamp, Path]:
    """Train on simulated data in ``data`` and score every lead the day after the data ends.

    Returns the trained model, the scores (best first), the scoring date and the scores file.
    """
    from leadtemp.adapters.files import write_table
    from leadtemp.core.snapshots import observed_until

    data = Path(data)
    p = params_with(params, data / "leads.parquet", data / "interactions.parquet")
    lead_table, events = load_data(p)
    trained = train(p, lead_table, events)
    as_of = observed_until(lead_table, events).normalize() + pd.Timedelta(days=1)
    version = trained.logged.version  # the registry version, so model_version reads as `leadtemp score` writes it
    uri = f"models:/{p.mlflow.registered_model}/{version}" if version else trained.logged.model_uri
    scored = score_leads(lead_table, events, as_of, p, uri)
    return trained, scored, as_of, write_table(scored, data / "scores.csv")


def explain(params: Params | str | Path, lead_id: str, as_of: str | pd.Timestamp,
            model: str | None = None, plot: str | Path | None = None, html: str | Path | None = None,
            top: int = 5, since: str | pd.Timestamp | None = None) -> Explanation:
    """Why is this lead hot (or not)? Its score and every factor, worded, with its effect.

    ``plot``: also write a SHAP waterfall of the factors to this PNG. ``html``: also write the lead's card, one
    self-contained HTML page (docs/lead-cards.md) with the ``top`` factors on each side. Both are checked before
    any work: never over an input, never over a file leadtemp did not write, in a folder that takes a new file.
    ``since`` (a date before ``as_of``): also how the lead moved since then (``Explanation.change``: its trend and
    what changed, docs/temperature-over-time.md), on the card too.
    """
    from leadtemp.core.features import attribute_features

    p = params_with(params)
    when = parse_as_of(as_of, p.data.mode)
    if since is not None:
        from leadtemp.workflows.changes import check_order

        since = parse_as_of(since, p.data.mode, "--since")
        check_order(since, when, "--since", "--as-of")
    if plot is not None:
        _check_plot(p, Path(plot))
    if html is not None:
        _check_card(p, Path(html), plot)
    lead_table, events = load_data(p)
    one = lead_table.loc[lead_table["lead_id"] == lead_id]
    if one.empty:
        raise SchemaError(f"{p.data.leads}: column '{p.data.columns.lead_id or 'row number'}': no lead {lead_id!r}")
    scorer, version = load_model(p, model)
    own = events.loc[events["lead_id"] == lead_id]
    if scorer.spec.mode == "events":
        features = scorer.features(one, own, when, ledger=_ledger(scorer, lead_table))
    else:  # a one-row-per-lead model: any lead can be explained, with or without an outcome
        features = attribute_features(one.reset_index(drop=True), when, scorer.spec)
    if features.empty:
        raise SchemaError(f"lead {lead_id!r} is not scorable as of {when.date()}: "
                          + _not_scorable(scorer, one, own, when, _ledger(scorer, lead_table)))
    why = _explanations(scorer, version, features, when)[0]
    if since is not None:
        from dataclasses import replace as with_change

        moved = scorer.changes_since(features, one, own, since, p.buckets.steady_within,
                                     _ledger(scorer, lead_table)).iloc[0]
        why = with_change(why, change={"since": since, **{k: moved[k] for k in moved.index}})
    if plot is not None:
        from leadtemp.adapters.paths import storage_errors
        from leadtemp.adapters.plots import plot_waterfall

        with storage_errors(f"--plot {plot}"):
            plot_waterfall(why.factors, why.base_value, str(plot))
    if html is not None:
        from leadtemp.adapters.cards import check_private, render_card, write_card

        card = _card(why, scorer, one.iloc[0], own, top, change=why.change)
        page = render_card(card)
        check_private(page, lead_id, _private(p, one.iloc[0]))
        write_card(page, Path(html))
    return why


def _not_scorable(scorer: LeadScorer, one: pd.DataFrame, own: pd.DataFrame, when: pd.Timestamp,
                  ledger: pd.DataFrame | None) -> str:
    """Why the one lead of ``one`` is not eligible at ``when`` (:meth:`LeadScorer.eligible`), with its date."""
    from leadtemp.core.lifecycle import LOST_SINCE

    lead = one.iloc[0]
    created, converted = lead.get("created_at"), lead.get("converted_at")
    if created is not None and pd.notna(created) and pd.Timestamp(created) >= when:
        return f"it was created on {_moment(created)}, on or after that day"
    if converted is not None and pd.notna(converted) and pd.Timestamp(converted) < when:
        return f"it converted on {_moment(converted)}, before that day"
    found, _ = scorer.eligible(one, own, when, include_lost=True, ledger=ledger)
    if len(found) and pd.notna(since := found[LOST_SINCE].iloc[0]):
        return f"it was lost on {_moment(since)} (closed as lost) and not reopened before that day"
    return "created on or after it, converted before it, or lost (closed as lost and not reopened) before it"


def _moment(value) -> str:
    """A timestamp in words: its day, with the time of day when it has one."""
    when = pd.Timestamp(value)
    return f"{when:%Y-%m-%d}" if when == when.normalize() else f"{when:%Y-%m-%d %H:%M}"


def _explanations(scorer: LeadScorer, version: str, features: pd.DataFrame, when: pd.Timestamp) -> list[Explanation]:
    """One :class:`Explanation` per row of ``features`` (exact TreeSHAP, grouped and worded)."""
    from leadtemp.core.reasons import factor_table, group_contributions
    from leadtemp.modelling.horizons import timing_columns

    scored = scorer.score_features(features, reasons=False).set_index("lead_id")
    contrib = scorer.contributions(features)
    grouped = group_contributions(contrib, scorer.spec)
    out = []
    for i in range(len(features)):
        row = features.iloc[i]
        lead = row["lead_id"]
        out.append(Explanation(
            lead_id=str(lead), as_of=when, model_version=version, probability=float(scored.at[lead, "probability"]),
            score=int(scored.at[lead, "score"]), bucket=str(scored.at[lead, "bucket"]),
            horizon_days=scorer.horizon_days if scorer.spec.mode == "events" else None,
            factors=factor_table(row, grouped.iloc[i], scorer.spec, scorer.labels, scorer.category_rates),
            base_value=float(contrib[i, -1]), run_id=str(scorer.meta.get("run_id") or ""),
            when={c: float(scored.at[lead, c]) for c in timing_columns(scorer.timing_days)} or None))
    return out


def _card(why: Explanation, scorer: LeadScorer, lead: pd.Series, events: pd.DataFrame, top: int,
          rank: int | None = None, change: dict | None = None):
    """The lead card of an explanation: ``lead`` its row, ``events`` its interactions (any time; cut at as_of here)."""
    from leadtemp.adapters.cards import LeadCard
    from leadtemp.core.reasons import feature_groups, group_name

    spec = scorer.spec
    timeline = None
    if spec.mode == "events":
        timeline = events.loc[events["timestamp"] < why.as_of, ["timestamp", "type", "direction"]].reset_index(drop=True)
    types = set(timeline["type"]) if timeline is not None else set()
    created = lead.get("created_at")
    return LeadCard(
        lead_id=why.lead_id, as_of=why.as_of, model_version=why.model_version, run_id=why.run_id,
        probability=why.probability, score=why.score, bucket=why.bucket, horizon_days=why.horizon_days,
        factors=why.factors, hot_cutoff=float(scorer.buckets.hot), warm_cutoff=float(scorer.buckets.warm),
        group_names={g.key: group_name(g.key, spec, scorer.labels) for g in feature_groups(spec)},
        attributes=frozenset([*spec.categorical, *spec.numeric]), timeline=timeline,
        created_at=pd.Timestamp(created) if created is not None and pd.notna(created) else None,
        places=dict(spec.thermometer), kinds={t: spec.kind(t) for t in types},
        type_labels={t: e.label for t, e in spec.vocabulary.items() if e.label}, top=top, rank=rank, change=change,
        when=why.when)


def _private(p: Params, lead: pd.Series) -> dict[str, object]:
    """The lead's values of its personal columns (data.excluded), which no card may show."""
    return {c: lead[c] for c in p.data.excluded if c in lead.index}


def _inputs(p: Params) -> list[tuple[str, Path]]:
    return [(what, Path(path)) for what, path in (("leads", p.data.leads), ("interactions", p.data.interactions)) if path]


def _check_card(p: Params, html: Path, plot: str | Path | None) -> None:
    """The card's file: an .html name, never an input or the --plot file, never over a file that is not a card."""
    from leadtemp.adapters.cards import check_card_file
    from leadtemp.adapters.paths import check_separate

    check_separate(_inputs(p), [("--html", html)] + ([("--plot", Path(plot))] if plot is not None else []))
    check_card_file("--html", html)


def _check_plot(p: Params, plot: Path) -> None:
    """The waterfall's file: a .png, never an input, in a place that takes a new file."""
    from leadtemp.adapters.paths import check_separate, check_writable_file

    if plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot}: give a .png file name")
    check_separate(_inputs(p), [("--plot", plot)])
    check_writable_file("--plot", plot)


def backtest(params: Params | str | Path = "params.yaml", quarters: int = 4, reps: int | None = None,
             per_rep: int | None = None) -> BacktestRun:
    """Rolling origin: each of the last ``quarters`` quarters tested on a model trained with the data known before it.

    With a team's capacity (``reps`` x ``per_rep`` calls a day, or params ``calls:``), each quarter also gets the share
    of its conversions the team would have reached following leadtemp, the thermometer and the newest leads first."""
    quiet_mlflow()
    from leadtemp.adapters.tracking import log_backtest
    from leadtemp.workflows.quarterly import backtest as run

    p = params_with(params)
    reps, per_rep = reps if reps is not None else p.calls.reps, per_rep if per_rep is not None else p.calls.per_rep
    if (reps is None) != (per_rep is None) or any(v is not None and v < 1 for v in (reps, per_rep)):
        raise ConfigError("a team's capacity needs both --reps N and --per-rep K, each at least 1")
    result = run(*load_data(p), p, quarters, reps * per_rep if reps is not None else None)
    return BacktestRun(result, log_backtest(result, p))


def retrain(params: Params | str | Path = "params.yaml", through: str | pd.Timestamp | None = None,
            dry_run: bool = False) -> Retrained:
    """A challenger trained with the data known before ``through``, promoted only if every gate passes."""
    quiet_mlflow()
    from leadtemp.adapters.tracking import load_champion, log_retrain
    from leadtemp.workflows.quarterly import retrain as run

    when = parse_as_of(through, option="--through")
    p = params_with(params)
    started = time.time()
    lead_table, events = load_data(p)
    champion = load_champion(p)
    scorer, version = champion if champion else (None, None)
    report = run(lead_table, events, p, when, scorer, version)
    return Retrained(report, log_retrain(report, p, p.mlflow.export_dir, dry_run, started))


@dataclass(frozen=True)
class Report:
    path: Path
    run_id: str
    seconds: float


def report(params: Params | str | Path = "params.yaml", out: str | Path = "report.html", run: str | None = None) -> Report:
    """Write the model report of MLflow run ``run`` (default: the run of the registry's champion) to ``out``:
    one self-contained HTML page (docs/report.md). ``out`` is checked before any work: an .html name, never over
    a file that is not an earlier report."""

    quiet_mlflow()
    from leadtemp.adapters.report import (
        BacktestRun,
        champion_run,
        check_report_out,
        check_store,
        read_backtest,
        read_run,
        render,
        render_backtest,
        write_report,
    )

    started = time.perf_counter()
    p, out = params_with(params), Path(out)
    check_report_out(out)
    check_store()
    run_id = run or champion_run(p.mlflow.registered_model)
    try:
        page = render(read_run(run_id, p.mlflow.registered_model))
    except BacktestRun:  # a backtest's parent run: its quarter table and chart
        page = render_backtest(run_id, *read_backtest(run_id))
    return Report(write_report(page, out), run_id, time.perf_counter() - started)


def serve(params: Params | str | Path = "params.yaml", model: str | None = None, host: str = "127.0.0.1",
          port: int | None = None, echo: Callable[[str], None] = print) -> None:
    """Serve a model (default: the registry's champion) as a REST endpoint until interrupted (docs/serving.md)."""
    quiet_mlflow()
    from mlflow.exceptions import MlflowException

    from leadtemp.adapters.pyfunc import load_served
    from leadtemp.adapters.serving import DEFAULT_PORT
    from leadtemp.adapters.serving import serve as run

    p = params_with(params)
    uri = model or f"models:/{p.mlflow.registered_model}@{CHAMPION}"
    try:
        loaded, scorer = load_served(uri)
    except (ConfigError, MlflowException, OSError) as exc:
        _no_champion(p, model)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot load model {uri!r}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    describe = {"model": uri, "model_version": scorer.meta["model_version"], "run_id": scorer.meta["run_id"]}
    run(loaded.unwrap_python_model(), describe, host, port or DEFAULT_PORT, echo)


def ui(host: str = "127.0.0.1", port: int | None = None, echo: Callable[[str], None] = print) -> int:
    """MLflow's UI on the project's store (``MLFLOW_TRACKING_URI``, else ./mlflow.db) until interrupted."""
    from leadtemp.adapters.serving import UI_PORT, run_ui

    return run_ui(host, port or UI_PORT, echo)


def rollback(params: Params | str | Path = "params.yaml") -> tuple[str, str, Path | None]:
    """Move the alias champion back to previous. Returns (demoted, champion now, refreshed export or None)."""
    quiet_mlflow()
    from leadtemp.adapters.tracking import rollback as run

    return run(params_with(params))


@dataclass
class Changes:
    """``leadtemp changes``: every lead scorable at ``later`` with how it moved since ``earlier`` (``scored``),
    and the leads that crossed buckets, hottest movers first (``crossed``)."""

    earlier: pd.Timestamp
    later: pd.Timestamp
    model_version: str
    scored: pd.DataFrame
    crossed: pd.DataFrame
    counts: dict[str, int]
    out: Path | None = None


def changes(params: Params | str | Path, earlier: str | pd.Timestamp, later: str | pd.Timestamp,
            model: str | None = None, out: str | Path | None = None) -> Changes:
    """Leads whose temperature changed between two dates, by one model, with what changed (exact TreeSHAP moves).

    ``out``: also write the leads that crossed buckets to this CSV/Parquet file (checked before any work)."""
    from leadtemp.workflows.changes import check_order, crossed, scores_with_changes, trend_counts

    p = params_with(params)
    earlier = parse_as_of(earlier, p.data.mode, "--from")
    later = parse_as_of(later, p.data.mode, "--to")
    check_order(earlier, later)
    if out is not None:
        _check_output(p, Path(out), "--out")
    leads, events = load_data(p)
    scorer, version = load_model(p, model)
    scored = scores_with_changes(scorer, leads, events, earlier, later, p.buckets.steady_within)
    moved = crossed(scored)
    if out is not None:
        from leadtemp.adapters.files import write_table
        from leadtemp.adapters.paths import storage_errors

        with storage_errors(f"--out {out}"):
            write_table(moved, out)
    return Changes(earlier, later, version, scored, moved, trend_counts(scored), Path(out) if out is not None else None)


def _check_output(p: Params, path: Path, option: str) -> None:
    """A table file to write: .csv or .parquet, never an input, in a place that takes a new file."""
    from leadtemp.adapters.paths import check_separate, check_writable_file

    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"{option} {path}: give a .csv or .parquet file name")
    check_separate(_inputs(p), [(option, path)])
    check_writable_file(option, path)


@dataclass
class Calls:
    """``leadtemp calls``: the day's plan (workflows/calls.py) and the model version that scored."""

    as_of: pd.Timestamp
    model_version: str
    plan: object  # workflows.calls.CallPlan
    out: Path | str | None = None  # the file, or the table, written


def calls(params: Params | str | Path, as_of: str | pd.Timestamp, reps: int | None = None, per_rep: int | None = None,
          by: str | None = None, cooldown_days: float | None = None, out: str | Path | None = None,
          model: str | None = None, db: str | None = None, write_table: str | None = None) -> Calls:
    """Who each rep calls on ``as_of``, in which order: the leads with the most expected conversions the team can
    reach that day (``reps`` x ``per_rep`` calls, from params ``calls:`` when not given), skipping leads we contacted
    within ``cooldown_days``; ``by``: keep each rep on one value of this lead column (region, segment).
    ``out``: also write the plan, one row per call (CSV/Parquet); ``db`` + ``write_table``: into that table instead
    (created when missing; the rows of the same date replaced, in one transaction). Checked before any work."""
    from leadtemp.core.schema import LEAD_ID
    from leadtemp.workflows.calls import CALL_COLUMNS, day_rows, plan_calls

    p = params_with(params)
    when = parse_as_of(as_of, p.data.mode)
    reps, per_rep = reps if reps is not None else p.calls.reps, per_rep if per_rep is not None else p.calls.per_rep
    if reps is None or per_rep is None:
        raise ConfigError("how many calls? give --reps N and --per-rep K (or calls.reps and calls.per_rep in params)")
    cooldown = p.calls.cooldown_days if cooldown_days is None else cooldown_days
    if cooldown < 0:
        raise ConfigError(f"--cooldown-days {cooldown:g}: give 0 or more days")
    if by is not None and by in p.data.excluded:
        raise ConfigError(f"--by {by!r} is in data.excluded (personal data): group the calls by another column")
    if (db is None) != (write_table is None) or (out is not None and write_table is not None):
        raise ConfigError("give one output at most: --out FILE, or --db URL with --write-table TABLE")
    if out is not None:
        _check_output(p, Path(out), "--out")
    if write_table is not None:
        from leadtemp.adapters.sources import check_plan_table

        check_plan_table(db, write_table, CALL_COLUMNS[:3] + ([by] if by else []) + CALL_COLUMNS[3:], _inputs(p))
    leads, events = load_data(p)
    if by is not None and by not in leads.columns:
        raise ConfigError(f"--by {by!r}: {p.data.leads} has no such column")
    scorer, version = load_model(p, model)
    rows = day_rows(scorer, leads, events, when)
    if by is not None:
        rows[by] = rows[LEAD_ID].map(leads.drop_duplicates(LEAD_ID).set_index(LEAD_ID)[by]).to_numpy()
    plan = plan_calls(rows, reps, per_rep, cooldown, by)
    if out is not None:
        from leadtemp.adapters.files import write_table
        from leadtemp.adapters.paths import storage_errors

        with storage_errors(f"--out {out}"):
            write_table(plan.calls, out)
    if db is not None:
        from leadtemp.adapters.sources import write_plan_table

        write_plan_table(db, write_table, plan.calls, when)
    return Calls(when, version, plan, Path(out) if out is not None else write_table)
