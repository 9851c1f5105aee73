"""Thin command line: parse, call one importable function, print. Heavy imports stay inside commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

PIPE_WIDTH = 130  # columns of the printed text and tables when the output is a pipe or a log, not a terminal


def _console():
    """The terminal's console; in a pipe or a log (rich's default there is 80 columns, which cut tables), tables at
    least PIPE_WIDTH wide and each message on one line (grep finds it whole)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, PIPE_WIDTH), soft_wrap=True)


app = typer.Typer(
    help="leadtemp: predict which sales leads will convert and sort them into hot / warm / cold, with reasons.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown",
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file.")]
LeadsOpt = Annotated[Optional[Path], typer.Option("--leads", help="Leads table (CSV/Parquet); overrides data.leads.")]
InterOpt = Annotated[Optional[Path], typer.Option("--interactions", help="Interactions table (CSV/Parquet); overrides data.interactions.")]
AsOfOpt = Annotated[Optional[str], typer.Option(
    "--as-of", help="Score as of this date: only data strictly before it is used. Required for tables with "
    "conversion times; for a model trained on a label column it defaults to today.")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="MLflow model URI (models:/NAME@ALIAS, runs:/...) or exported folder. "
    "Default: models:/<mlflow.registered_model>@champion.")]


def _errors(fn: Callable) -> Callable:
    """Known input problems become one clear line on stderr and exit code 2, never a traceback."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        from leadtemp.core.errors import LeadtempError

        try:
            return fn(*args, **kwargs)
        except LeadtempError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return wrapper


def _params(path: Path, leads: Path | str | None = None, interactions: Path | str | None = None):
    from leadtemp.api import params_with

    return params_with(path, leads, interactions)


def _as_of(text: str | None, mode: str = "events", option: str = "--as-of"):
    from leadtemp.api import parse_as_of

    return parse_as_of(text, mode, option)


@app.command()
@_errors
def simulate(
    out: Annotated[Path, typer.Option(help="Folder for leads.parquet, interactions.parquet, truth.parquet.")] = Path("data/sim"),
    leads: Annotated[Optional[int], typer.Option("--leads", help="Number of leads (default: simulate.leads).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: simulate.seed).")] = None,
    start: Annotated[Optional[str], typer.Option(help="First day, YYYY-MM-DD (default: simulate.start).")] = None,
    months: Annotated[Optional[int], typer.Option(help="Months of history (default: simulate.months).")] = None,
    shift_at: Annotated[Optional[str], typer.Option(
        "--shift-at", help="From this day (YYYY-MM-DD) on, the world changes: a new lead source `partner` (a quarter of "
        "new leads, converting like the best referrals) and the SMS channel goes dead (default: simulate.shift_at).")] = None,
    lost: Annotated[Optional[bool], typer.Option(
        "--lost/--no-lost", help="Lost leads are recorded: disqualified (a `disqualified` event and lost_at), closed "
        "silently weeks later (lost_at only) or not at all, and some come back (default: simulate.lost); "
        "losses.parquet holds the truth. Train with data.columns.lost_at: lost_at (docs/simulator.md).")] = None,
    referrals: Annotated[Optional[bool], typer.Option(
        "--referrals/--no-referrals", help="Leads of the `referral` source name their referrer (a `referred_by` "
        "column): an earlier lead, more often one that had bought, or an outside customer; a referrer who bought "
        "makes the lead warmer (default: simulate.referrals). Train with data.columns.referred_by: referred_by "
        "(docs/simulator.md).")] = None,
    stages: Annotated[Optional[bool], typer.Option(
        "--stages/--no-stages", help="The sales funnel: `stage` rows (new, contacted, qualified, proposal, negotiation; "
        "won, lost) in a `stage` column and the `outcome` of each of our calls, from the hidden story "
        "(default: simulate.stages). Train with the events and columns of docs/simulator.md.")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Generate a synthetic lead database with a known truth (see docs/domain.md)."""
    from leadtemp.api import simulate as run

    p = _params(params)
    data, written = run(p, out, leads, seed, start, months, shift_at, lost, referrals, stages)
    for path in written:
        typer.echo(f"wrote {path}")
    if shift_at := shift_at or p.simulate.shift_at:
        typer.echo(f"from {shift_at} on: new lead source 'partner', no more inbound SMS")
    typer.echo(f"{len(data.leads)} leads, {len(data.interactions)} interactions, "
               f"{data.leads['converted_at'].notna().mean():.1%} converted")
    if "referred_by" in data.leads.columns:
        typer.echo(f"{data.leads['referred_by'].notna().mean():.1%} name their referrer (referred_by)")
    if data.losses is not None:
        typer.echo(f"{data.leads['lost_at'].notna().mean():.1%} closed as lost (lost_at); "
                   f"{data.losses['recycled_on'].notna().sum()} of {len(data.losses)} losses came back")
    if "stage" in data.interactions.columns:
        typer.echo(f"{(data.interactions['type'] == 'stage').sum():,} stage changes, "
                   f"{data.interactions['outcome'].notna().sum():,} call outcomes")


def _print_gates(console, gates) -> None:
    for gate in gates:
        mark = "[green]pass[/green]" if gate.passed else "[bold red]FAIL[/bold red]"
        if not gate.applicable:
            mark = "[dim]n/a[/dim]"
        console.print(f"{mark} {gate.name}: {gate.detail}")


def _rate(value: float, fmt: str = "{:.1%}") -> str:
    """A conversion rate for a table; an empty bucket has none and reads "empty", never "nan%"."""
    return "empty" if value != value else fmt.format(value)


def _horizons_of(names) -> list[int]:
    """The horizons h of the ``p_<h>d_ece`` among metric names (modelling/horizons.py), shortest first."""
    return sorted(int(n[2:-5]) for n in names if n.startswith("p_") and n.endswith("d_ece") and n[2:-5].isdigit())


def _print_training(result, logged, data_args: list[str] | None = None) -> None:
    """``data_args``: the options that name this run's params and data, so that a command printed works as printed."""
    from rich.table import Table

    m = result.metrics
    console = _console()
    for note in result.warnings:
        console.print(f"[bold red]warning:[/bold red] {note}" if note.startswith("NO OUT-OF-TIME")
                      else f"[yellow]note:[/yellow] {note}")
    snapshots = "snapshots" if "cutoff" in result.test.columns else "leads"
    outcome = "converted within the horizon" if snapshots == "snapshots" else "converted"
    console.print(f"test slice {result.splits.describe()['test']}: {int(m['rows']):,} {snapshots}, "
                  f"{m['positive_rate']:.1%} {outcome}")
    baseline = f" (thermometer baseline {m['thermometer_roc_auc']:.3f})" if "thermometer_roc_auc" in m else ""
    console.print(f"ROC-AUC {m['roc_auc']:.3f}{baseline}, "
                  f"PR-AUC {m['pr_auc']:.3f}, lift@10% {m['lift_at_10']:.2f}, "
                  f"ECE {m['raw_ece']:.4f} raw -> {m['ece']:.4f} calibrated")
    if (ceiling := result.scorer.calibrator.ceiling) is not None:
        console.print(f"highest probability shown: {ceiling:.3f} (95% upper end of the conversion rate of the "
                      "best-scored calibration leads; leads above it keep their order by margin)")
    if "within_cutoff_roc_auc" in m:
        kinds = [f"periodic cutoffs ROC-AUC {m['periodic_roc_auc']:.3f} (within a cutoff {m['within_cutoff_roc_auc']:.3f})"
                 if "periodic_roc_auc" in m else ""]
        if "creation_roc_auc" in m:
            kinds.append(f"first morning after creation ROC-AUC {m['creation_roc_auc']:.3f} "
                         f"on {int(m['creation_rows']):,} snapshots, ECE {m['creation_ece']:.4f}")
        console.print("; ".join(k for k in kinds if k))
    if "within_month_roc_auc" in m:
        console.print(f"ROC-AUC within each month of the test slice {m['within_month_roc_auc']:.3f}")
    if when := [f"{h} days: ROC-AUC {m[f'p_{h}d_roc_auc']:.3f}, ECE {m[f'p_{h}d_ece']:.4f} on {int(m[f'p_{h}d_rows']):,} "
                f"(converted {m[f'p_{h}d_positive_rate']:.1%})" for h in _horizons_of(m)]:
        console.print("converts within (p_<h>d, test rows whose h days are observed): " + "; ".join(when))
    if "folds_roc_auc" in m:
        sel = result.scorer.meta["selection"]
        console.print(f"{int(m['folds'])} rolling-origin fold(s): within-cutoff ROC-AUC {m['folds_roc_auc']:.3f} "
                      f"(logistic regression {m['folds_logistic_roc_auc']:.3f}); chosen: {sel['family']}, "
                      f"{int(sel['rounds'])} rounds, min_data_in_leaf {sel['min_data_in_leaf']}, calibration {sel['calibration']}")
    table = Table("bucket", "leads", "converted", "rate", "95% interval")
    for row in result.buckets.itertuples():
        table.add_row(row.bucket, str(row.leads), str(row.converted), _rate(row.rate),
                      "—" if row.leads == 0 else f"{row.rate_low:.1%}-{row.rate_high:.1%}")
    console.print(table)
    _print_gates(console, result.gates)
    alias = " (alias champion)" if logged.champion else ""
    console.print(f"MLflow run {logged.run_id}; registered version {logged.version}{alias}; exported to {logged.export_path}")
    this_one = logged.export_path or logged.model_uri
    if not result.fit_to_ship:
        failed = ", ".join(g.name for g in result.gates if not g.passed)
        console.print(f"[bold red]not made champion[/bold red] (failed: {failed}): version {logged.version} is kept "
                      f"for inspection; scoring uses the champion (--model {this_one} scores with this one)")
    elif logged.version and not logged.champion and logged.champion_version:
        console.print(_stays_champion(result, logged, this_one, data_args or []), soft_wrap=True, markup=False)


def _stays_champion(result, logged, this_one, data_args: list[str]) -> str:
    """A train that passed its gates while another version is champion: say so, and how to change it (train never
    moves the alias: only retrain, behind its gates, and rollback do; docs/mlflow.md)."""
    import pandas as pd

    head = f"version {logged.champion_version} stays the champion (score uses it): train never replaces it; "
    until = result.scorer.meta.get("observed_until")
    if result.scorer.spec.mode == "events" and until and until != "NaT":
        through = (pd.Timestamp(until).normalize() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        head += (f"to promote a model of this data behind the gates: {_self_command('retrain', '--through', through, *data_args)}; ")
    return head + f"or score with this one: --model {this_one}"


@app.command()
@_errors
def train(params: ParamsOpt = Path("params.yaml"), leads: LeadsOpt = None, interactions: InterOpt = None) -> None:
    """Check the data, fit and calibrate the model, log and register it in MLflow.

    Tables with conversion times become point-in-time snapshots sliced by cutoff; a table with a
    label column (data.columns.label) is one row per lead, sliced by time when it has time and
    stratified at random (with a loud warning) when it has none. Too little data or a leaky column
    stops here with exit 2. Snapshot data also gets a booster per other horizon of when.horizons_days
    (p_7d, p_30d, p_90d, expected_days), each with its test ROC-AUC and ECE. Only the first version that passes its
    ship gates becomes champion: a later train says which version stays champion (score uses it), with the retrain
    command that would promote a model of this data behind the gates and the --model that scores with this one.
    """
    from leadtemp.api import train as run

    trained = run(_params(params, leads, interactions))
    _print_training(trained.result, trained.logged, _data_args(params, leads, interactions))


def _data_args(params: Path, leads=None, interactions=None) -> list[str]:
    """The options a printed command needs to read what this one read."""
    given = [] if params == Path("params.yaml") else ["--params", str(params)]
    return given + [arg for option, path in (("--leads", leads), ("--interactions", interactions)) if path is not None
                    for arg in (option, str(path))]


@app.command()
@_errors
def score(
    as_of: AsOfOpt = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", help="Output file, CSV or Parquet by extension; rows best first (with --engine spark: a folder of "
        "part files). Never an input file or inside an input folder (checked before any work). Or use --db with "
        "--write-table.")] = None,
    db: Annotated[Optional[str], typer.Option(
        "--db", help="SQLAlchemy database URL, e.g. sqlite:///crm.db or postgresql+psycopg://user@host/crm "
        "(the password from PGPASSWORD or ~/.pgpass). Used by --leads-table, --interactions-table, --write-table.")] = None,
    leads_table: Annotated[Optional[str], typer.Option("--leads-table", help="Read the leads from this table of --db.")] = None,
    interactions_table: Annotated[Optional[str], typer.Option(
        "--interactions-table", help="Read the interactions from this table of --db.")] = None,
    write_table: Annotated[Optional[str], typer.Option(
        "--write-table", help="Write the scores to this table of --db (created if missing; never an input table). "
        "Rows of the same as-of date and model version are replaced, so a rerun leaves one row per lead.")] = None,
    rejects: Annotated[Optional[str], typer.Option(
        "--rejects", help="Where leads that cannot be scored go, with the reason: a CSV/Parquet file (default: "
        "beside --out, same name and format with .rejects before the extension: scores.parquet -> "
        "scores.rejects.parquet) or a table of --db (default WRITE_TABLE_rejects). "
        "Outputs are checked before any work: never an input, never the same as --out.")] = None,
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", min=100, help="Leads per partition: memory grows with it, not with the database.")] = 50_000,
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", help="Where leadtemp makes the run's own working folder, leadtemp-score-KEY, with the "
        "partitions of an unfinished run (default: the system temp folder). Only that folder is removed, when the "
        "run finishes; nothing else in --work-dir is touched. Run the same command again after a crash or kill to "
        "resume; while it runs, the same command again exits 2.")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="local: this machine, streaming. spark: the same scoring on a Spark cluster "
        "(pip install 'leadtemp[spark]'); paths may then be cluster paths and tables catalog tables.")] = "local",
    no_reasons: Annotated[bool, typer.Option("--no-reasons", help="Skip the reasons (faster).")] = False,
    fail_on_rejects: Annotated[bool, typer.Option(
        "--fail-on-rejects", help="Exit with code 3 when any lead was rejected (the outputs are written first). "
        "Without it too, a run that scores no lead because leads were rejected exits 2, naming the main reason; "
        "it writes the rejects and leaves --out as it was.")] = False,
    include_lost: Annotated[bool, typer.Option(
        "--include-lost", help="Also score leads lost before --as-of (closed as lost or disqualified, not reopened "
        "since), marked by the output column lost_since. Default: they are counted and skipped.")] = False,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="An earlier date: each row also gets previous_probability, previous_bucket, trend (warming, "
        "cooling, steady, new) and what_changed, the lead as this model scored it then, rescored from the same data "
        "(docs/temperature-over-time.md).")] = None,
    previous: Annotated[Optional[Path], typer.Option(
        "--previous", help="An earlier scores file of this model (CSV/Parquet from leadtemp score): the same as "
        "--since its as_of date. Refused when another model version scored it.")] = None,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write a lead card (one self-contained HTML page: chance, bucket, reasons as bars, "
        "timeline) for each of the --top best leads into this folder, with an index.html linking them "
        "(docs/lead-cards.md). The folder must be new or one of earlier cards, which is replaced whole; checked "
        "before any work. Needs --out FILE, the local engine and the inputs as files.")] = None,
    top: Annotated[Optional[int], typer.Option(
        "--top", help="With --html: how many of the best leads get a card (default 20).")] = None,
    model: ModelOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    leads: Annotated[Optional[str], typer.Option(
        "--leads", help="Leads: CSV/Parquet file or folder of part files; overrides data.leads.")] = None,
    interactions: Annotated[Optional[str], typer.Option(
        "--interactions", help="Interactions: CSV/Parquet file or folder of part files; overrides data.interactions.")] = None,
) -> None:
    """Score every lead eligible at --as-of: lead_id, as_of, probability, score, bucket, p_7d, p_30d, p_90d, expected_days
    (the model's when.horizons_days; none for a model saved before them), rank, reasons, model_version, run_id.

    Eligible: created before --as-of, not converted before it and not lost at it (closed as lost or
    disqualified, not reopened since: --include-lost scores those too, marked); with a label column,
    every lead whose label is still empty. The leads are read in chunks with their interactions, so
    memory stays flat however large the database. A lead with bad values (or a bad interaction, or a duplicate id) is not
    scored but written to the rejects output with its reason. Killed or crashed? Run the same command
    again: it resumes, and the output gets exactly one row per lead.
    """
    from leadtemp.api import score as run

    p = _params(params, leads, interactions)
    when = _as_of(as_of, p.data.mode)
    result, version = run(p, when, out=out, db=db, leads_table=leads_table, interactions_table=interactions_table,
                          write_table=write_table, rejects=rejects, chunk_size=chunk_size, work_dir=work_dir,
                          engine=engine, reasons=not no_reasons, model=model, echo=lambda m: typer.echo(m, err=True),
                          include_lost=include_lost, since=since, previous=previous, html=html, top=top)
    skipped = "not yet created or already converted" if p.data.mode == "events" else "already have an outcome"
    if result.lost:
        skipped += (f", {result.lost:,} lost before {when.date()} and scored, marked by lost_since" if include_lost else
                    f", {result.lost:,} skipped as lost before {when.date()} (closed as lost and not reopened; "
                    "--include-lost scores them)")
    resumed = f"; resumed {result.resumed_partitions} of {result.partitions} partitions" if result.resumed_partitions else ""
    typer.echo(f"scored {result.scored:,} of {result.leads_read:,} leads as of {when.date()} with model version {version} "
               f"({result.not_eligible:,} {skipped}, {result.rejected_leads:,} rejected) in {result.seconds:.1f} s{resumed}: "
               + ", ".join(f"{result.buckets[b]:,} {b}" for b in ("hot", "warm", "cold")) + f" -> {result.target}")
    if result.cards:
        typer.echo(f"wrote the cards of the top {min(top or 20, result.scored)} leads and their index -> "
                   f"{Path(result.cards) / 'index.html'}")
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", err=True, fg="yellow")
    if result.rejected_leads or result.rejected_interactions:
        typer.secho(f"warning: {result.rejected_leads:,} leads and {result.rejected_interactions:,} interactions of "
                    f"unknown leads were rejected, with reasons -> {result.rejects}", err=True, fg="yellow")
        if fail_on_rejects:
            raise typer.Exit(3)


@app.command()
@_errors
def explain(
    lead_id: Annotated[str, typer.Argument(help="The lead to explain (its id, or its row number when data.columns.lead_id is null).")],
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a SHAP waterfall of the factors to this PNG.")] = None,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write the lead's card to this .html file: one self-contained page with its chance, "
        "bucket, the reasons as bars, its interactions before --as-of on a timeline coloured by the thermometer, "
        "and what would move it (docs/lead-cards.md). Never over a file that is not an earlier card.")] = None,
    top: Annotated[int, typer.Option(help="Factors to show on each side (on the card too).", min=1)] = 5,
    since: Annotated[Optional[str], typer.Option(
        "--since", help="An earlier date: also how the lead moved since then (trend and what changed, by this model; "
        "on the card too).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    leads: LeadsOpt = None,
    interactions: InterOpt = None,
) -> None:
    """Why is this lead hot (or not)? Score, bucket, the chance within each horizon (when.horizons_days) with the
    expected days to convert, and the strongest factors in words; --html writes its card."""
    import pandas as pd
    from rich.table import Table

    from leadtemp.api import explain as run

    p = _params(params, leads, interactions)
    why = run(p, lead_id, _as_of(as_of, p.data.mode), model, plot, html, top, since)
    console = _console()
    run = f", run {why.run_id}" if why.run_id and why.run_id != why.model_version else ""
    console.print(f"lead {lead_id} as of {why.as_of.date()} (model version {why.model_version}{run}): [bold]{why.bucket}[/bold], "
                  f"score {why.score}, {why.probability:.1%} chance to convert"
                  + (f" within {why.horizon_days} days" if why.horizon_days is not None else ""))
    if why.when:  # when, not only if (the card says it in the same words)
        from leadtemp.adapters.cards import when_words

        console.print(when_words(why.when))
    if (c := why.change) is not None:
        since = pd.Timestamp(c["since"]).date()
        console.print(f"since {since}: new (not scorable then)" if c["trend"] == "new" else
                      f"since {since}: [bold]{c['trend']}[/bold] ({c['previous_bucket']} {c['previous_probability']:.1%} -> "
                      f"{why.bucket} {why.probability:.1%})" + (f"; what changed: {c['what_changed']}"
                                                                 if c["what_changed"] else ""))
    table = why.factors
    for title, part in (("raises the chance", table[table["effect"] > 0]), ("lowers the chance", table[table["effect"] < 0])):
        out = Table("factor", "effect (log-odds)", title=title, title_justify="left")
        for row in part.head(top).itertuples():
            out.add_row(row.factor, f"{row.effect:+.3f}")
        console.print(out)
    for path in (plot, html):
        if path is not None:
            console.print(f"wrote {path}")


@app.command()
@_errors
def demo(
    data: Annotated[Path, typer.Option(help="Folder of the simulated data (created if missing).")] = Path("data/sim"),
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Simulate (if no data yet), train, score as of the last date and show the top 10 with reasons."""
    from rich.table import Table

    from leadtemp.api import demo as run

    console = _console()
    p = _params(params)
    if not (data / "leads.parquet").exists():
        console.print(f"simulating {p.simulate.leads} leads into {data} ...")
        simulate(out=data, leads=None, seed=None, start=None, months=None, shift_at=None, lost=None, params=params)
    console.print("training ...")
    trained, scored, as_of, out = run(p, data)
    _print_training(trained.result, trained.logged,
                    _data_args(params, data / "leads.parquet", data / "interactions.parquet"))
    top = Table("rank", "lead", "bucket", "score", "reasons", title=f"Top 10 leads as of {as_of.date()}", show_lines=True)
    for row in scored.head(10).itertuples():
        top.add_row(str(row.rank), row.lead_id, row.bucket, str(row.score), "\n".join([row.reason_1, row.reason_2, row.reason_3]))
    console.print(top)
    console.print(f"all {len(scored)} scores: {out}")
    extra = [] if params == Path("params.yaml") else ["--params", str(params)]
    run = [] if trained.logged.champion else ["--run", trained.logged.run_id]  # not champion: report on this run all the same
    typer.echo(f"the model on one page for a sales director: {_self_command('report', '--out', 'report.html', *run, *extra)}"
               " (then open report.html in a browser)")
    typer.echo(f"look at the run and the model in MLflow's UI: {_self_command('ui')} (it prints the links to open)")
    typer.echo(f"serve the champion as a REST endpoint: {_self_command('serve', *extra)}  (docs/serving.md)")


def _self_command(*args: str) -> str:
    """A leadtemp command line that works as printed, pasted with or without the venv activated."""
    import shlex

    script = Path(sys.executable).parent / "leadtemp"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "leadtemp"]
    return shlex.join([*head, *args])


@app.command()
@_errors
def serve(
    model: ModelOpt = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5001,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; 127.0.0.1 answers this machine only (0.0.0.0: every interface).")] = "127.0.0.1",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Serve the model as a REST endpoint: POST leads with their interactions to /invocations, get every lead
    back scored (probability, score, bucket, p_<h>d, expected_days, rank, reasons) or with the reason it is not (docs/serving.md).
    """
    from leadtemp.api import serve as run

    run(_params(params), model, host, port, echo=typer.echo)


@app.command()
@_errors
def ui(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Open MLflow's UI on this project's runs and models (MLFLOW_TRACKING_URI, else ./mlflow.db)."""
    from leadtemp.api import ui as run

    raise typer.Exit(run(host, port, echo=typer.echo))


@app.command()
@_errors
def backtest(
    quarters: Annotated[int, typer.Option("--quarters", min=1, help="How many of the newest fully labelled quarters to test.")] = 4,
    reps: Annotated[Optional[int], typer.Option(
        "--reps", help="With --per-rep: a team's capacity; each quarter also shows the share of its conversions the "
        "team would have reached at each cutoff following leadtemp, the thermometer and the newest leads first, "
        "skipping leads contacted within calls.cooldown_days (default: calls.reps and calls.per_rep in params, if set).")] = None,
    per_rep: Annotated[Optional[int], typer.Option("--per-rep", help="Calls each rep makes a day (see --reps).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    leads: LeadsOpt = None,
    interactions: InterOpt = None,
) -> None:
    """Rolling-origin backtest: for each of the last K quarters, train with only the data known at its start
    (as `retrain` would have), then test on that quarter. Logs one MLflow parent run with a child run per quarter.
    """
    from rich.table import Table

    from leadtemp.api import backtest as run

    console = _console()
    done = run(_params(params, leads, interactions), quarters, reps, per_rep)
    table = done.backtest.table()
    out = Table("quarter", "fitted to", "snapshots", "converted", "ROC-AUC", "within a cutoff", "thermometer", "PR-AUC", "ECE",
                "lift@10%", "hot", "warm", "cold", title="labels fitted up to 'fitted to'; conversion rate by bucket "
                "on the right", title_justify="left")
    for row in table.itertuples():
        thermo = getattr(row, "thermometer_roc_auc", float("nan"))
        out.add_row(row.quarter, row.trained_through, f"{int(row.rows):,}", f"{row.positive_rate:.1%}",
                    f"{row.roc_auc:.3f}", f"{getattr(row, 'within_cutoff_roc_auc', float('nan')):.3f}",
                    "n/a" if thermo != thermo else f"{thermo:.3f}", f"{row.pr_auc:.3f}",
                    f"{row.ece:.4f}", f"{row.lift_at_10:.2f}", _rate(row.hot_rate), _rate(row.warm_rate), _rate(row.cold_rate))
    console.print(out)
    for line in _thermometer_not_applicable(table):
        console.print(line)
    if "calls_reached_leadtemp" in table.columns:
        console.print(f"share of the quarter's conversions a team making {int(table['calls_per_cutoff'].iloc[0]):,} "
                      "calls at each cutoff would have reached, calling in each order:")
        calls = Table("quarter", "leadtemp", "thermometer", "newest first")
        for row in table.itertuples():
            shares = [getattr(row, f"calls_reached_{who}", float("nan")) for who in ("leadtemp", "thermometer", "newest_first")]
            calls.add_row(row.quarter, *["n/a" if v != v else f"{v:.1%}" for v in shares])
        console.print(calls)
    if when := _horizons_of(table.columns):
        console.print("converts within h days (p_<h>d), ECE / ROC-AUC on each quarter's rows whose h days are observed:")
        timing = Table("quarter", *(f"{h} days" for h in when))
        for row in table.to_dict("records"):
            cells = [(row.get(f"p_{h}d_ece"), row.get(f"p_{h}d_roc_auc")) for h in when]
            timing.add_row(row["quarter"], *("n/a" if e is None or e != e else f"{e:.4f} / {a:.3f}" for e, a in cells))
        console.print(timing)
    console.print(f"mean ROC-AUC {table['roc_auc'].mean():.3f}; MLflow run {done.run_id}")


def _thermometer_not_applicable(table) -> list[str]:
    """One line per backtest quarter where the thermometer ranks nobody (its column says n/a there)."""
    from leadtemp.core.vocabulary import not_applicable_reason

    if "thermometer_constant" not in table.columns:
        return []
    return [f"thermometer, {row.quarter}: {not_applicable_reason(row.thermometer_constant, int(row.rows), 'snapshots')}"
            for row in table.itertuples() if row.thermometer_constant == row.thermometer_constant]


def _print_retrain(report, logged, dry_run: bool) -> str:
    """The human summary of a retrain; returns the final line."""
    from rich.table import Table

    console = _console()
    if report.challenger is not None:
        meta = report.challenger.scorer.meta
        console.print(f"challenger: data before {report.through:%Y-%m-%d}, fitted on labels up to {meta['trained_through'][:10]}"
                      + (f", registered as version {logged.version}" if logged and logged.version else ", not registered (dry run)"))
    if report.challenger_metrics:
        m, c = report.challenger_metrics, report.champion_metrics
        console.print(f"evaluation window (neither model was fitted on it): cutoffs "
                      f"{', '.join(report.window.strftime('%Y-%m-%d'))}; {int(m['rows']):,} snapshots, "
                      f"{m['positive_rate']:.1%} converted within the horizon")
        champ = f"champion v{report.champion_version}" if c else "champion"
        table = Table("", "challenger", champ, "thermometer")
        rows = [("ROC-AUC", "roc_auc", "{:.3f}", "thermometer_roc_auc"),
                ("ROC-AUC within a cutoff", "within_cutoff_roc_auc", "{:.3f}", None), ("PR-AUC", "pr_auc", "{:.3f}", None),
                ("ECE", "ece", "{:.4f}", None), ("lift@10%", "lift_at_10", "{:.2f}", "thermometer_lift_at_10"),
                ("hot conversion", "hot_rate", "{:.1%}", None), ("warm conversion", "warm_rate", "{:.1%}", None),
                ("cold conversion", "cold_rate", "{:.1%}", None)]
        for label, key, fmt, thermo in rows:
            table.add_row(label, _rate(m.get(key, float("nan")), fmt), _rate(c.get(key, float("nan")), fmt) if c else "-",
                          fmt.format(m[thermo]) if thermo and thermo in m else "n/a" if thermo else "")
        console.print(table)
        console.print(f"challenger vs champion: {report.verdict()}")
    if report.drift is not None:
        d = report.drift
        console.print(f"drift, champion's training window -> the quarter before {report.through:%Y-%m-%d}: conversion rate "
                      f"{d.label_rate[0]:.1%} -> {d.label_rate[1]:.1%} (evaluation window); bucket shares "
                      + ", ".join(f"{r.bucket} {r.training:.0%} -> {r.new:.0%}" for r in d.bucket_shares.itertuples()))
        console.print("top drifting features (PSI): " + ", ".join(
            f"{r.feature} {r.psi:.2f} ({r.level})" for r in d.top(5).itertuples()))
        for warning in d.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}")
    for note in report.notes:
        console.print(f"note: {note}")
    _print_gates(console, report.gates)
    kept = f"kept v{report.champion_version}" if report.champion_version else "kept none (no champion yet)"
    if dry_run:
        return f"{kept} (dry run: the challenger would be {'promoted' if report.promote else 'refused'})"
    return f"promoted v{logged.version}" if report.promote else kept


@app.command()
@_errors
def retrain(
    through: Annotated[str, typer.Option("--through", help="Use the data known before this date (YYYY-MM-DD), e.g. "
                                         "the day after a quarter ends; labels need a full horizon before it.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and log, but register nothing and move no alias.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    leads: LeadsOpt = None,
    interactions: InterOpt = None,
) -> None:
    """Train a challenger and replace the champion only if it passes every gate in params.yaml (retrain:).

    Both models are compared on the newest labelled data neither was fitted on. Prints the numbers,
    the drift report and each gate, logs it all to MLflow, and ends with one line: `promoted vN` or
    `kept vM`. Exit 0 either way; 2 on bad input. The replaced champion keeps the alias `previous`.
    """
    from leadtemp.api import retrain as run

    when = _as_of(through, option="--through")
    done = run(_params(params, leads, interactions), when, dry_run)
    typer.echo(_print_retrain(done.report, done.logged, dry_run))


@app.command()
@_errors
def report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write. Never over a file that is not an earlier "
                                      "leadtemp report (checked before any work).")] = Path("report.html"),
    run_id: Annotated[Optional[str], typer.Option(
        "--run", help="The MLflow run of a train or retrain to report on. Default: the run of the registry's champion.")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """One self-contained HTML page on a model for a sales director: the verdict in words, hot/warm/cold with their
    conversion, gains and reliability charts, what drives the scores, the data (docs/report.md). `train` logs the
    same page to its run as report.html.
    """
    from leadtemp.api import report as run

    done = run(_params(params), out, run_id)
    typer.echo(f"wrote {done.path} ({done.path.stat().st_size / 1024:.0f} KB) for MLflow run {done.run_id} "
               f"in {done.seconds:.1f} s")


@app.command()
@_errors
def changes(
    earlier: Annotated[str, typer.Option("--from", help="The earlier date (YYYY-MM-DD): the lead as scored then.")],
    later: Annotated[str, typer.Option("--to", help="The later date: the lead as scored now. Only data strictly "
                                       "before each date counts for that date.")],
    model: ModelOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the leads that crossed buckets (with "
                                                "previous_probability, previous_bucket, trend, what_changed) to this "
                                                "CSV/Parquet file.")] = None,
    limit: Annotated[int, typer.Option(help="Leads to print.")] = 20,
    params: ParamsOpt = Path("params.yaml"),
    leads: LeadsOpt = None,
    interactions: InterOpt = None,
) -> None:
    """Leads whose temperature changed between two dates (one model, both dates scored from the same data): the ones
    that crossed buckets, hottest movers first, and what changed, in words (docs/temperature-over-time.md)."""
    from rich.table import Table

    from leadtemp.api import changes as run

    p = _params(params, leads, interactions)
    done = run(p, earlier, later, model, out)
    c = done.counts
    console = _console()
    console.print(f"{len(done.scored):,} leads scorable on {done.later:%Y-%m-%d} (model version {done.model_version}): "
                  f"{c['warming']:,} warming, {c['cooling']:,} cooling, {c['steady']:,} steady, {c['new']:,} new since "
                  f"{done.earlier:%Y-%m-%d}; {len(done.crossed):,} crossed buckets")
    table = Table("lead", "bucket", "probability", "what changed")
    for row in done.crossed.head(limit).itertuples():
        table.add_row(str(row.lead_id), f"{row.previous_bucket} -> {row.bucket}",
                      f"{row.previous_probability:.1%} -> {row.probability:.1%}", row.what_changed)
    console.print(table)
    if done.out is not None:
        console.print(f"wrote {len(done.crossed):,} leads to {done.out}")


@app.command()
@_errors
def calls(
    as_of: AsOfOpt = None,
    reps: Annotated[Optional[int], typer.Option("--reps", help="Reps calling that day (default: calls.reps in params).")] = None,
    per_rep: Annotated[Optional[int], typer.Option(
        "--per-rep", help="Calls each rep makes that day (default: calls.per_rep in params).")] = None,
    by: Annotated[Optional[str], typer.Option(
        "--by", help="Keep each rep on one value of this lead column (region, segment); reps go to the groups where "
        "they add the most expected conversions.")] = None,
    cooldown_days: Annotated[Optional[float], typer.Option(
        "--cooldown-days", help="Leave leads we contacted within this many days for another day (default: "
        "calls.cooldown_days, 7).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Write the plan, one row per call (rep, order, lead, probability, bucket, reasons), to this "
        "CSV/Parquet file.")] = None,
    db: Annotated[Optional[str], typer.Option(
        "--db", help="With --write-table: a SQLAlchemy database URL to write the plan to.")] = None,
    write_table: Annotated[Optional[str], typer.Option(
        "--write-table", help="Write the plan to this table of --db (created if missing; the rows of the same "
        "--as-of replaced, in one transaction; an existing table must have the plan's columns).")] = None,
    model: ModelOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    leads: LeadsOpt = None,
    interactions: InterOpt = None,
) -> None:
    """Who each rep calls today, in which order: the leads with the most expected conversions the team can reach,
    balanced between reps, just-turned-active leads first within a score, recently contacted leads left for later
    (docs/calls.md)."""
    from rich.table import Table

    from leadtemp.api import calls as run

    p = _params(params, leads, interactions)
    done = run(p, _as_of(as_of, p.data.mode), reps, per_rep, by, cooldown_days, out, model, db, write_table)
    plan, console = done.plan, _console()
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    thermometer = (f", the thermometer's plan of as many calls {plan.thermometer_expected:.1f}"
                   if plan.thermometer_expected is not None else "")
    console.print(f"{len(plan.calls):,} calls as of {done.as_of:%Y-%m-%d} (model version {done.model_version}) "
                  f"from {plan.eligible:,} scorable leads ({plan.cooled:,} contacted by us within the cooldown): "
                  f"expected conversions {plan.expected:.1f}{thermometer}, a random plan {plan.random_expected:.1f} "
                  "(each by the model's calibrated chances)")
    table = Table(*[str(c) for c in plan.per_rep.columns])
    for row in plan.per_rep.itertuples(index=False):
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    if done.out is not None:
        console.print(f"wrote {len(plan.calls):,} calls to {done.out}")
        return
    import pandas as pd

    shown = plan.calls.head(CALLS_SHOWN)
    first = Table("rep", "order", "lead", "chance", "bucket", "first reason")
    for row in shown.itertuples(index=False):
        first.add_row(str(row.rep), str(row.order), str(row.lead_id), f"{row.probability:.1%}", str(row.bucket),
                      "" if pd.isna(row.reason_1) else str(row.reason_1))
    console.print(first)
    more = f"the first {len(shown)} of {len(plan.calls):,} calls; " if len(plan.calls) > len(shown) else ""
    console.print(f"{more}the whole list with every reason: add --out calls.csv (or --db URL --write-table TABLE)")


CALLS_SHOWN = 10  # calls printed when the plan is not written anywhere


@app.command()
@_errors
def rollback(params: ParamsOpt = Path("params.yaml")) -> None:
    """Move the alias `champion` back to the version with the alias `previous`."""
    from leadtemp.api import rollback as run

    demoted, champion, export = run(_params(params))
    typer.echo(f"champion is v{champion} again (v{demoted} demoted)")
    typer.echo(f"{export} now holds v{champion}" if export else
               f"models/champion not refreshed: no export of v{champion} on this machine")


if __name__ == "__main__":
    sys.exit(app())
