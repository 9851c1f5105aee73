"""The model report: one self-contained HTML page a sales director reads, built from what an MLflow run logged.

The page says first, in words, how well the model ranks leads, how much better it is than the
thermometer rule, whether hot / warm / cold mean what they say and whether the model is the
champion; then the bucket table, the cumulative gains curve and reliability diagram, what drives the
scores (feature groups named as the reasons name them) and the data it was trained on.

Everything comes from the run: metrics, the ``chosen.*`` params, tags, ``gates.json``,
``data_fingerprint.json``, ``splits.json``, ``warnings.txt``, ``retrain_decision.json`` (a retrain)
and ``report_data.json`` (the test slice's labels and probabilities for the curves, and the driver
importances; logged by :func:`report_data`). No lead ids or other personal data are read or written.

The page has no JavaScript, no external resource and inline CSS; the charts are base64 PNGs, so it
opens from file:// and in MLflow's artifact viewer alike.
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from leadtemp.adapters.metric_names import metric_name
from leadtemp.core.config import CHAMPION
from leadtemp.core.errors import ConfigError
from leadtemp.core.reasons import feature_groups, group_contributions, group_name
from leadtemp.modelling.results import TrainingResult

REPORT_MARKER = '<meta name="generator" content="leadtemp report">'  # how `report --out` knows a file is its own
REPORT_DATA = "report_data.json"
REPORT_ARTIFACT = "report.html"
MAX_CURVE_ROWS = 100_000     # report_data.json keeps at most this many test rows (a seeded sample beyond)
IMPORTANCE_ROWS = 2_000      # test rows whose contributions rank the drivers
BUCKETS = ("hot", "warm", "cold")

FOLDS_LOW, FOLDS_HIGH = metric_name("folds_auc_low"), metric_name("folds_auc_high")


# -- what a training run logs for its report ------------------------------------------------------------

def report_data(result: TrainingResult, seed: int = 0) -> dict:
    """The test slice's label, calibrated probability and thermometer score (rows sorted by probability: the
    order says nothing about any lead), the drivers by feature group, and the model's dates. No lead ids."""
    test = result.test
    sampled = len(test) > MAX_CURVE_ROWS
    rows = test.sample(MAX_CURVE_ROWS, random_state=seed) if sampled else test
    p = rows["probability"].to_numpy(dtype=float)
    order = np.argsort(p, kind="stable")
    thermometer = None
    if "thermometer_roc_auc" in result.metrics and "thermometer_score" in rows.columns:
        thermometer = np.round(rows["thermometer_score"].to_numpy(dtype=float)[order], 6).tolist()
    meta = result.scorer.meta
    return {
        "format": 1,
        "test_rows": len(test), "curve_rows": len(rows), "sampled": sampled,
        "label": rows["label"].to_numpy(dtype=int)[order].tolist(),
        "probability": np.round(p[order], 6).tolist(),
        "thermometer": thermometer,
        "drivers": drivers(result, seed),
        "model": {"trained_through": str(meta.get("trained_through", ""))[:10],
                  "observed_until": str(meta.get("observed_until", ""))[:10],
                  "horizon_days": result.scorer.horizon_days if result.scorer.spec.mode == "events" else None},
    }


def drivers(result: TrainingResult, seed: int = 0) -> list[dict]:
    """Mean absolute TreeSHAP contribution (log-odds) of each feature group on a sample of the test slice,
    named as the reasons name it, largest first, with its share of the total."""
    scorer, test = result.scorer, result.test
    rows = test.sample(min(IMPORTANCE_ROWS, len(test)), random_state=seed)
    grouped = group_contributions(scorer.contributions(rows), scorer.spec).abs().mean()
    total = float(grouped.sum()) or 1.0
    names = {g.key: group_name(g.key, scorer.spec, scorer.labels) for g in feature_groups(scorer.spec)}
    return [{"group": key, "name": names[key], "mean_abs_effect": round(float(v), 6), "share": round(float(v) / total, 6)}
            for key, v in grouped.sort_values(ascending=False, kind="stable").items()]


# -- reading a run --------------------------------------------------------------------------------------

@dataclass
class RunFacts:
    """What one MLflow run logged that the report shows."""

    run_id: str
    run_name: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    model_name: str
    champion_version: str | None = None   # the registry's champion now, if any
    champion_run_id: str | None = None
    gates: dict = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    decision: dict | None = None          # a retrain's retrain_decision.json
    data: dict | None = None              # report_data.json (runs logged before it have none)

    @property
    def version(self) -> str | None:
        return self.tags.get("registered_version")


def check_store() -> None:
    """A SQLite store (MLflow's default ./mlflow.db) must exist: reading one that does not would create it empty."""
    uri = _store()
    if uri.startswith("sqlite:///") and not Path(path := uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {path}: run from the folder that holds mlflow.db, or set "
                          "MLFLOW_TRACKING_URI")


def champion_run(model_name: str) -> str:
    """The run that logged the registry's champion; ConfigError when there is no champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        raise ConfigError(f"no champion: registered model {model_name!r} has no version with the alias {CHAMPION} in "
                          f"{_store()} (a model that failed a ship gate never gets it); give --run RUN_ID, or train one that "
                          "passes") from None
    if not version.run_id:
        raise ConfigError(f"the champion, version {version.version} of {model_name!r}, names no MLflow run; give --run RUN_ID")
    return version.run_id


def _store() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def read_run(run_id: str, model_name: str) -> RunFacts:
    """Everything the report needs from run ``run_id``; ConfigError for an unknown run or one that trained no model."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--run {run_id}: no such MLflow run in {_store()}") from None
    if run.data.tags.get("kind") == "backtest":
        raise BacktestRun(run_id)
    if "test_roc_auc" not in run.data.metrics:
        kind = run.data.tags.get("kind", "a run without a trained model")
        raise ConfigError(f"--run {run_id} ({run.info.run_name}) is {kind}, not a training run: it logged no test "
                          "metrics; give the run of a train or a retrain")
    facts = RunFacts(run_id, run.info.run_name or run_id, dict(run.data.metrics), dict(run.data.params),
                     dict(run.data.tags), model_name)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
        facts.champion_version, facts.champion_run_id = str(champion.version), champion.run_id
    except MlflowException:
        pass  # no champion yet: the page says so
    logged = {a.path for a in client.list_artifacts(run_id)}

    def load(name: str, default=None):
        if name not in logged:
            return default
        uri = f"runs:/{run_id}/{name}"
        return mlflow.artifacts.load_text(uri) if name.endswith(".txt") else mlflow.artifacts.load_dict(uri)

    facts.gates = load("gates.json", {})
    facts.fingerprint = load("data_fingerprint.json", {})
    facts.splits = load("splits.json", {})
    facts.warnings = [w for w in load("warnings.txt", "").splitlines() if w.strip()]
    facts.decision = load("retrain_decision.json")
    facts.data = load(REPORT_DATA)
    return facts


# -- the page -------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:960px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:32px 0 8px;border-bottom:2px solid #e4e7ec;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px}
#verdict{border-left:6px solid #2f6fdf;background:#eef4ff;padding:12px 18px;border-radius:4px}
#verdict.bad{border-left-color:#c62828;background:#fdeeee}
#verdict p.head{font-size:1.15em;font-weight:600;margin:4px 0 10px}
#verdict li{margin:5px 0}
table{border-collapse:collapse;margin:8px 0;font-size:.95em}
th,td{padding:6px 10px;border-bottom:1px solid #e4e7ec;text-align:left;vertical-align:top}
th{background:#f1f3f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.hot{color:#c62828;font-weight:600}.warm{color:#e07b00;font-weight:600}.cold{color:#1f5fbf;font-weight:600}
.pass{color:#1b7f3a;font-weight:600}.fail{color:#c62828;font-weight:600}.na{color:#78808f}
.bar{background:#2f6fdf;height:12px;border-radius:2px}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts figure{margin:0;flex:1 1 300px}
.charts img{width:100%;max-width:440px;height:auto;border:1px solid #e4e7ec}
figcaption,.note{color:#5b6475;font-size:.9em}
.warn{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
footer{margin-top:36px;color:#78808f;font-size:.85em}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or value != value else float(value)


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.{digits}f}%"


def auc_interval(facts: RunFacts) -> tuple[float, float] | None:
    """The test ROC-AUC's 95% interval, as the ship gate "ranks better than chance" found it (gates.json)."""
    for gate in facts.gates.get("gates", []):
        if found := re.search(r"95% interval (-?[\d.]+)\.\.(-?[\d.]+)", gate.get("detail", "")):
            if gate.get("name") == "ranks better than chance":
                return float(found.group(1)), float(found.group(2))
    return None


def captured_at(y: np.ndarray, score: np.ndarray, share: float) -> float:
    """Share of the conversions among the top ``share`` of rows by score (ties: their mean rate)."""
    from leadtemp.core.metrics import tie_groups

    rows, hits, _ = tie_groups(y, score, best_first=True)
    ends, found = np.concatenate([[0], np.cumsum(rows)]), np.concatenate([[0.0], np.cumsum(hits)])
    return float(np.interp(share * len(y), ends, found) / max(y.sum(), 1))


def _strength(auc: float) -> str:
    if auc >= 0.8:
        return "ranks leads well"
    if auc >= 0.7:
        return "ranks leads usefully"
    if auc >= 0.6:
        return "ranks leads weakly"
    return "barely ranks leads better than chance"


def bucket_rows(facts: RunFacts) -> list[dict]:
    m = facts.metrics
    columns = ("leads", "converted", "rate", "rate_low", "rate_high")
    rows = [{"bucket": b, **{k: _num(m, "test_" + metric_name(f"{b}_{k}")) for k in columns}}
            for b in BUCKETS]
    leads = sum(r["leads"] or 0 for r in rows) or 1
    converted = sum(r["converted"] or 0 for r in rows) or 1
    for r in rows:
        r["share_leads"] = (r["leads"] or 0) / leads
        r["share_conversions"] = (r["converted"] or 0) / converted
        if not r["leads"]:
            r["rate"] = None
    return rows


def champion_status(facts: RunFacts) -> tuple[bool, str]:
    """Is this run's model the champion, and if not, why not (in words)."""
    version = facts.version
    if facts.champion_run_id == facts.run_id:
        return True, f"It is the champion (version {version} of {facts.model_name!r}): `leadtemp score` uses it."
    why = []
    failed = [g["name"] for g in facts.gates.get("gates", []) if not g.get("passed", True)]
    if failed:
        why.append("it failed the ship gate(s) " + ", ".join(f"\u201c{n}\u201d" for n in failed))
    if facts.decision is not None and not facts.decision.get("promote", False):
        lost = [g["name"] for g in facts.decision.get("gates", []) if not g.get("passed", True)]
        why.append("the retrain kept the champion" + (": it failed " + ", ".join(f"\u201c{n}\u201d" for n in lost)
                                                      if lost else ""))
    if version is None:
        why.append("it was not registered (a dry run, or logged in the run only)")
    elif not why:
        why.append(f"it passed every gate, but version {facts.champion_version} was champion already (only `retrain` "
                   "and `rollback` move the alias)" if facts.champion_version else "no version holds the alias now")
    now = f"the champion is version {facts.champion_version}" if facts.champion_version else "no version is champion now"
    return False, f"It is NOT the champion ({now}), because " + "; ".join(why) + "."


def _out_of_time(facts: RunFacts) -> bool:
    """Whether the run's test slice is newer than what it learned from (runs logged before the tag: yes)."""
    return facts.tags.get("out_of_time_check", "true") != "false"


def verdict_lines(facts: RunFacts) -> tuple[str, list[str], bool]:
    """The headline, the verdict's points in words and whether the news is bad (failed gates, disordered buckets)."""
    m = facts.metrics
    auc = m["test_roc_auc"]
    interval = auc_interval(facts)
    span = f", 95% interval {interval[0]:.2f}\u2013{interval[1]:.2f}" if interval else ""
    lines = [f"<b>Ranking:</b> pick one lead that converted and one that did not: the model scores the converter higher "
             f"{auc:.0%} of the time (ROC-AUC {auc:.3f}{esc(span)}; a coin toss scores 50%)."]
    if not _out_of_time(facts):
        lines.insert(0, "<b>No out-of-time check:</b> the table has no time, so the test slice is a random sample of the "
                        "same leads the model learned from. These numbers say how well it fits leads like those, not how "
                        "it will do on next quarter's leads; add a creation time (data.columns.created_at) to measure that.")
    within = _num(m, "test_within_cutoff_roc_auc")
    if within is not None:
        lines.append(f"<b>Within one day's call list</b> (leads compared on the same date, as a rep sees them): "
                     f"ROC-AUC {within:.3f}.")
    thermo = _num(m, "test_thermometer_roc_auc")
    data = facts.data
    gains = ""
    if data:
        y, p = np.asarray(data["label"], dtype=float), np.asarray(data["probability"], dtype=float)
        if y.sum() > 0:
            top = captured_at(y, p, 0.2)
            gains = f" Calling the top 20% of leads by score reaches {top:.0%} of the conversions"
            if data.get("thermometer") is not None:
                gains += f" (the thermometer's top 20%: {captured_at(y, np.asarray(data['thermometer'], float), 0.2):.0%}"
                gains += "; at random: 20%)."
            else:
                gains += " (at random: 20%)."
    if thermo is not None:
        diff = auc - thermo
        word = "better than" if diff > 0.005 else "worse than" if diff < -0.005 else "no better than"
        lines.append(f"<b>Against the thermometer</b> (the rule sales teams use today: inbound contacts weighted by "
                     f"how hot the action is): ROC-AUC {thermo:.3f}, so the model is {abs(diff):.3f} {word} it.{gains}")
    else:
        lines.append("<b>Against the thermometer:</b> not applicable on this data (the rule gives every lead the same "
                     f"score).{gains}")
    rows = {r["bucket"]: r for r in bucket_rows(facts)}
    rates = [rows[b]["rate"] for b in BUCKETS]
    shown = ", ".join(f'<span class="{b}">{b}</span> {_pct(rows[b]["rate"])}' for b in BUCKETS)
    ordered = None not in rates and rates[0] > rates[1] > rates[2]
    if ordered:
        lines.append(f"<b>Buckets mean what they say:</b> on the test slice {shown} converted (hot &gt; warm &gt; cold).")
    else:
        lines.append(f"<b>Buckets do NOT order as they should:</b> on the test slice {shown} converted "
                     "(hot &gt; warm &gt; cold expected; an empty bucket has no rate).")
    champion, status = champion_status(facts)
    lines.append(f"<b>Champion:</b> {_code(esc(status))}")
    fit = facts.tags.get("fit_to_ship") == "true"
    head = (f"The model {_strength(auc)}" + (f" and beats the thermometer by {auc - thermo:.3f} ROC-AUC" if thermo is not None
                                              and auc > thermo else "")
            + ("; " + ("it is the champion." if champion else "it is not the champion.")))
    return head, lines, not (fit and ordered)


def _code(text: str) -> str:
    """`command` in an escaped sentence as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _gate_table(gates: list[dict]) -> str:
    out = ["<table><tr><th></th><th>gate</th><th>what it found</th></tr>"]
    for g in gates:
        mark = ('<span class="na">n/a</span>' if not g.get("applicable", True) else
                '<span class="pass">pass</span>' if g.get("passed") else '<span class="fail">FAIL</span>')
        out.append(f"<tr><td>{mark}</td><td>{esc(g.get('name', ''))}</td><td>{esc(g.get('detail', ''))}</td></tr>")
    return "".join(out) + "</table>"


def _png(draw) -> str:
    """A chart drawn by ``draw(path)`` as an <img> with a base64 PNG."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chart.png"
        draw(path)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="chart" src="data:image/png;base64,{encoded}">'


def _charts(data: dict | None) -> str:
    if not data:
        return ('<p class="note">This run did not log <code>report_data.json</code> (it was trained before the report '
                "existed): no curves. Retrain to get them.</p>")
    from leadtemp.adapters.plots import plot_gains, plot_reliability

    y, p = np.asarray(data["label"], dtype=float), np.asarray(data["probability"], dtype=float)
    curves = {"leadtemp": p}
    if data.get("thermometer") is not None:
        curves["thermometer"] = np.asarray(data["thermometer"], dtype=float)
    sample = (f" (a sample of {data['curve_rows']:,} of the {data['test_rows']:,} test rows)" if data.get("sampled") else "")
    gains = _png(lambda path: plot_gains(y, curves, path))
    reliability = _png(lambda path: plot_reliability(y, {"calibrated": p}, path))
    return (f'<div class="charts"><figure>{gains}<figcaption>Cumulative gains{esc(sample)}: call leads best score first; '
            "the curve shows the share of all conversions reached after calling a given share of leads. Higher and "
            "further left is better; the dashed line is calling at random.</figcaption></figure>"
            f"<figure>{reliability}<figcaption>Reliability: leads grouped by their predicted chance; each point is the "
            "chance the model gave against the share that really converted. On the dashed line, a score of 20% "
            "means 1 in 5 converts.</figcaption></figure></div>")


def _drivers(data: dict | None) -> str:
    if not data or not data.get("drivers"):
        return '<p class="note">This run did not log the drivers (it was trained before the report existed).</p>'
    shown = [d for d in data["drivers"] if d["share"] > 0][:12]
    top = max(d["share"] for d in shown) if shown else 1.0
    rows = "".join(
        f'<tr><td>{esc(d["name"])}</td><td class="n">{d["share"]:.0%}</td>'
        f'<td style="width:260px"><div class="bar" style="width:{100 * d["share"] / top:.0f}%"></div></td></tr>'
        for d in shown)
    rest = len([d for d in data["drivers"] if d["share"] > 0]) - len(shown)
    more = f'<p class="note">{rest} smaller driver(s) not shown.</p>' if rest > 0 else ""
    return ('<p class="note">How much each kind of information moves the scores, on average over the test slice (share of '
            "the total absolute effect, exact TreeSHAP, grouped and named as the reasons on each scored lead name them). "
            "It says what the model listens to, not that one thing causes a sale.</p>"
            f"<table><tr><th>driver</th><th>share</th><th></th></tr>{rows}</table>{more}")


def _bucket_table(facts: RunFacts) -> str:
    hot, warm = facts.params.get("chosen.hot_cutoff"), facts.params.get("chosen.warm_cutoff")
    rule = {"hot": f"chance \u2265 {float(hot):.3f}" if hot else "", "warm": f"chance \u2265 {float(warm):.3f}" if warm else "",
            "cold": f"chance &lt; {float(warm):.3f}" if warm else ""}
    out = ["<table><tr><th>bucket</th><th>cut-off in force</th><th>test leads</th><th>share of leads</th>"
           "<th>converted</th><th>conversion rate (95% interval)</th><th>share of conversions</th></tr>"]
    for r in bucket_rows(facts):
        b = r["bucket"]
        rate = ("empty" if r["rate"] is None else f"{_pct(r['rate'])} ({_pct(r['rate_low'])}\u2013{_pct(r['rate_high'])})")
        out.append(f'<tr><td class="{b}">{b}</td><td>{rule[b]}</td><td class="n">{int(r["leads"] or 0):,}</td>'
                   f'<td class="n">{_pct(r["share_leads"], 0)}</td><td class="n">{int(r["converted"] or 0):,}</td>'
                   f'<td class="n">{rate}</td><td class="n">{_pct(r["share_conversions"], 0)}</td></tr>')
    out.append("</table>")
    return "".join(out)


def _cadence(frequency: str) -> str:
    """A pandas frequency code as words: MS -> monthly, W-MON -> weekly."""
    return "monthly" if frequency.startswith("M") else "weekly" if frequency.startswith("W") else frequency or "n/a"


def _data_section(facts: RunFacts) -> str:
    f, m, p = facts.fingerprint, facts.metrics, facts.params
    model = (facts.data or {}).get("model", {})
    rows = []
    if "leads" in f:
        rows.append(("leads / interactions", f"{int(f['leads']):,} / {int(f.get('interactions', 0)):,}"))
    if "created_from" in f:
        rows.append(("data period", f"leads created from {str(f['created_from'])[:10]}; data up to "
                                    f"{str(f.get('observed_until', ''))[:10]}"))
    if model.get("trained_through"):
        rows.append(("labels learned up to", model["trained_through"]))
    if "chosen.horizon_days" in p:
        rows.append(("what counts as converted", f"a conversion within {p['chosen.horizon_days']} days after the lead is "
                                                 f"looked at (leads looked at {_cadence(p.get('chosen.frequency', ''))})"))
    if "snapshots" in f:
        rows.append(("rows learned from and tested on", f"{int(f['snapshots']):,} (one per lead and date it was looked at)"))
    if "lead_conversion_rate" in f:
        rows.append(("base rate", f"{_pct(f['lead_conversion_rate'])} of all leads converted; "
                                  f"{_pct(f.get('snapshot_positive_rate'))} of rows converted within the horizon"))
    for name, text in facts.splits.items():
        count = f.get(f"{name}_snapshots")
        rate = f.get(f"{name}_positive_rate")
        extra = f" ({int(count):,} rows, {_pct(rate)} converted)" if count is not None else ""
        rows.append((f"{name} slice", f"{text}{extra}"))
    if "test_rows" in m:
        rate = _num(m, "test_" + metric_name("positive_rate"))
        rows.append(("test slice, measured", f"{int(m['test_rows']):,} rows, {_pct(rate)} converted"))
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    warnings = "".join(f'<div class="warn">{esc(w)}</div>' for w in facts.warnings)
    return (f"<table>{table}</table>" + (f"<h3>Notes and warnings the run logged</h3>{warnings}" if warnings else
                                         '<p class="note">The run logged no warnings.</p>'))


def _when_table(m: dict) -> str:
    """The chance within each extra horizon (when.horizons_days) measured on the test slice; "" without them."""
    days = sorted(int(hit.group(1)) for hit in map(re.compile(r"test_p_(\d+)d_roc_auc").fullmatch, m) if hit)
    if not days:
        return ""
    rows = "".join(f'<tr><td>within {d} days</td><td class="n">{m[f"test_p_{d}d_roc_auc"]:.3f}</td>'
                   f'<td class="n">{m.get(f"test_p_{d}d_ece", float("nan")):.4f}</td>'
                   f'<td class="n">{int(m.get(f"test_p_{d}d_rows", 0)):,}</td></tr>' for d in days)
    return ('<h2>How soon</h2><p class="note">Each score also carries the chance to convert within each of these '
            'horizons and the median days to convert; each horizon has its own calibrated model, measured on the '
            'test slice rows whose days are observed.</p><table id="when"><tr><th>chance to convert</th>'
            f'<th>ROC-AUC</th><th>calibration error (ECE)</th><th>test rows</th></tr>{rows}</table>')


def render(facts: RunFacts, generated: pd.Timestamp | None = None) -> str:
    """The whole page as one HTML string."""
    generated = generated or pd.Timestamp.now().floor("s")
    head, lines, bad = verdict_lines(facts)
    m = facts.metrics
    version = f"version {facts.version} of {facts.model_name!r}" if facts.version else "not registered"
    gates = facts.gates.get("gates", [])
    retrain = ""
    if facts.decision is not None:
        retrain = (f"<h2>Champion against challenger (retrain)</h2><p>{esc(facts.decision.get('verdict', ''))}; "
                   f"decision: <b>{'promote' if facts.decision.get('promote') else 'keep the champion'}</b>.</p>"
                   + _gate_table(facts.decision.get("gates", []))
                   + "".join(f'<p class="note">{esc(n)}</p>' for n in facts.decision.get("notes", [])))
    ece = _num(m, "test_ece")
    quality = (f'<p class="note">Other test-slice measures: PR-AUC {m.get("test_pr_auc", float("nan")):.3f}, '
               f'lift in the top 10% {m.get("test_" + metric_name("lift_at_10"), float("nan")):.2f}\u00d7, calibration error (ECE) '
               f'{"n/a" if ece is None else f"{ece:.4f}"}'
               + (f'; on the rolling-origin folds before the test slice, within-cutoff ROC-AUC {m["folds_roc_auc"]:.3f}'
                  if "folds_roc_auc" in m else "")
               # a different quantity: the folds' centred margins pooled (the gate "ranks better than chance on the folds")
               + (f', pooled ROC-AUC 95% interval {m[FOLDS_LOW]:.3f}\u2013{m[FOLDS_HIGH]:.3f}'
                  if FOLDS_LOW in m and FOLDS_HIGH in m else "") + ".</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{REPORT_MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>leadtemp model report: {esc(facts.run_name)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Lead scoring model report</h1>
<p class="sub">{esc(facts.run_name)} \u00b7 {esc(version)} \u00b7 MLflow run {esc(facts.run_id)}</p>
<section id="verdict"{' class="bad"' if bad else ''}>
<p class="head">{esc(head)}</p>
<ul>{''.join(f'<li>{line}</li>' for line in lines)}</ul>
</section>
{quality}
<h2>Hot, warm and cold</h2>
<p class="note">Each lead's calibrated chance to convert puts it in a bucket by the cut-offs fixed at training. Counted on
the test slice ({'newest labelled data' if _out_of_time(facts) else 'a random sample held out: the table has no time'},
never trained on).</p>
{_bucket_table(facts)}
{_when_table(m)}
<h2>How much calling by score pays, and whether the scores mean what they say</h2>
{_charts(facts.data)}
<h2>What drives the scores</h2>
{_drivers(facts.data)}
<h2>Ship gates</h2>
<p class="note">What a newly trained model must show on its test slice before it may become champion.</p>
{_gate_table(gates) if gates else '<p class="note">The run logged no gates.</p>'}
{retrain}
<h2>The data</h2>
{_data_section(facts)}
<footer>Generated {esc(generated)} by <code>leadtemp report</code> from MLflow run {esc(facts.run_id)}
(git commit {esc(facts.tags.get('git_commit', 'unknown'))[:12]}). Counts, dates and rates only: no lead ids or
personal data. See docs/report.md for what each section means.</footer>
</main></body></html>
"""


# -- a backtest's page ----------------------------------------------------------------------------------

class BacktestRun(Exception):
    """``read_run`` met a backtest's parent run: its page is :func:`render_backtest`."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


BACKTEST_TABLE = "backtest.csv"


def read_backtest(run_id: str) -> tuple[str, pd.DataFrame, dict[str, str]]:
    """A backtest parent run's name, its quarter table (``backtest.csv``) and tags."""
    import io

    import mlflow
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/{BACKTEST_TABLE}")
    return run.info.run_name or run_id, pd.read_csv(io.StringIO(text)), dict(run.data.tags)


def _backtest_chart(table: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        x = np.arange(len(table))
        ax.plot(x, table["roc_auc"], marker="o", label="leadtemp")
        if "thermometer_roc_auc" in table.columns and table["thermometer_roc_auc"].notna().any():
            ax.plot(x, table["thermometer_roc_auc"], marker="s", linestyle="--", label="thermometer rule")
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance")
        ax.set_xticks(x, table["quarter"].astype(str))
        rows = int(table["rows"].sum()) if "rows" in table.columns else 0
        ax.set(ylabel="ROC-AUC", title=f"ROC-AUC per quarter, {len(table)} quarters, {rows:,} rows", ylim=(0.4, 1.0))
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return _png(draw)


def render_backtest(run_id: str, run_name: str, table: pd.DataFrame, tags: dict[str, str],
                    generated: pd.Timestamp | None = None) -> str:
    """The page of a backtest: the verdict over its quarters, the quarter table and a chart (no personal data)."""
    generated = generated or pd.Timestamp.now().floor("s")
    n = len(table)
    thermo = table["thermometer_roc_auc"] if "thermometer_roc_auc" in table.columns else pd.Series(np.nan, table.index)
    beat = int((table["roc_auc"] > thermo).sum())
    comparable = int(thermo.notna().sum())
    ordered = int(((table.get("hot_rate") > table.get("warm_rate")) & (table.get("warm_rate") > table.get("cold_rate"))).sum()) \
        if {"hot_rate", "warm_rate", "cold_rate"} <= set(table.columns) else 0
    head = (f"Over {n} quarter(s), each scored by the model trained with only the data known at its start, leadtemp "
            f"ranked leads with a mean ROC-AUC of {table['roc_auc'].mean():.3f}.")
    lines = [f"It ranked better than the thermometer rule in {beat} of {comparable} quarter(s) where that rule ranks "
             f"anyone (mean {thermo.mean():.3f})." if comparable else "The thermometer rule ranked nobody here (n/a).",
             f"Hot converted more than warm, and warm more than cold, in {ordered} of {n} quarter(s).",
             f"Calibration error (ECE) per quarter: {table['ece'].min():.3f} to {table['ece'].max():.3f}."]
    if "calls_reached_leadtemp" in table.columns:
        calls = int(table["calls_per_cutoff"].iloc[0])
        lines.append(f"A team making {calls:,} calls at each cutoff would have reached "
                     f"{table['calls_reached_leadtemp'].mean():.1%} of the conversions calling in leadtemp's order, "
                     + (f"{table['calls_reached_thermometer'].mean():.1%} in the thermometer's, "
                        if "calls_reached_thermometer" in table.columns else "")
                     + (f"{table['calls_reached_newest_first'].mean():.1%} newest first (means over the quarters)."
                        if "calls_reached_newest_first" in table.columns else "(mean over the quarters)."))
    bad = comparable > 0 and beat < comparable / 2
    columns = [("quarter", "quarter", str), ("trained_through", "labels up to", str), ("rows", "rows", lambda v: f"{int(v):,}"),
               ("positive_rate", "converted", _pct), ("roc_auc", "ROC-AUC", "{:.3f}".format),
               ("within_cutoff_roc_auc", "within a cutoff", "{:.3f}".format),
               ("thermometer_roc_auc", "thermometer", "{:.3f}".format), ("ece", "ECE", "{:.4f}".format),
               ("hot_rate", "hot", _pct), ("warm_rate", "warm", _pct), ("cold_rate", "cold", _pct)]
    def html_table(columns: list) -> str:
        shown = [c for c in columns if c[0] in table.columns]
        rows = "".join("<tr>" + "".join(f"<td>{esc('n/a' if pd.isna(r[c]) else f(r[c]))}</td>" for c, _, f in shown)
                       + "</tr>" for _, r in table.iterrows())
        return "<table><tr>" + "".join(f"<th>{esc(t)}</th>" for _, t, _ in shown) + f"</tr>{rows}</table>"

    calls_table = ""
    if "calls_reached_leadtemp" in table.columns:
        calls_table = (f"<h2>What a team of {int(table['calls_per_cutoff'].iloc[0]):,} calls a day reaches</h2>"
                       "<p class=\"note\">The share of each quarter's conversions reached by calling that many leads at "
                       "each cutoff, in leadtemp's order, the thermometer rule's, or the newest leads first.</p>"
                       + html_table([("quarter", "quarter", str)] + [(f"calls_reached_{w}", w.replace("_", " "), _pct)
                                                                     for w in ("leadtemp", "thermometer", "newest_first")]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{REPORT_MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>leadtemp backtest report: {esc(run_name)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Backtest report</h1>
<p class="sub">{esc(run_name)} \u00b7 MLflow run {esc(run_id)}</p>
<section id="verdict"{' class="bad"' if bad else ''}>
<p class="head">{esc(head)}</p>
<ul>{''.join(f'<li>{esc(line)}</li>' for line in lines)}</ul>
</section>
<h2>Quarter by quarter</h2>
<p class="note">Each quarter's model learned from the data known at the quarter's start (labels up to the date shown);
every cutoff of the quarter was then scored and judged on what happened within the horizon. Conversion by bucket on the
right.</p>
{html_table(columns)}
<div class="charts"><figure>{_backtest_chart(table)}<figcaption>ROC-AUC of each quarter's model on that quarter, beside the
thermometer rule's; 0.5 is chance.</figcaption></figure></div>
{calls_table}
<footer>Generated {esc(generated)} by <code>leadtemp report</code> from MLflow run {esc(run_id)}
(git commit {esc(tags.get('git_commit', 'unknown'))[:12]}). Counts, dates and rates only: no lead ids or personal
data. See docs/report.md.</footer>
</main></body></html>
"""


def log_backtest_report(run_id: str) -> None:
    """Add the backtest's page to its parent run as report.html."""
    from mlflow import MlflowClient

    name, table, tags = read_backtest(run_id)
    MlflowClient().log_text(run_id, render_backtest(run_id, name, table, tags), REPORT_ARTIFACT)


# -- the file -------------------------------------------------------------------------------------------

def has_marker(path: Path, marker: str) -> bool:
    """A file leadtemp wrote (its ``marker`` in the first bytes: a report's, a card's), which it may replace."""
    try:
        with open(path, "rb") as f:
            return marker.encode() in f.read(4096)
    except OSError:
        return False


def check_page_out(what: str, out: Path, marker: str, kind: str) -> None:
    """An HTML page to write: an .html file name, never over a file that is not an earlier page of this ``kind``
    (recognised by its ``marker``), in a folder that takes a file."""
    from leadtemp.adapters.paths import check_writable_file

    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{what} {out}: give an .html file name")
    if out.exists() and not out.is_dir() and not has_marker(out, marker):
        raise ConfigError(f"{what} {out} exists and is not a leadtemp {kind}: leadtemp never writes over a file it did "
                          "not write; choose another name or move that file away")
    check_writable_file(what, out)


def check_report_out(out: Path) -> None:
    """--out of `leadtemp report`: see :func:`check_page_out`."""
    check_page_out("--out", out, REPORT_MARKER, "report")


def write_report(page: str, out: Path) -> Path:
    """Write the page atomically (a reader never sees half a report)."""
    from leadtemp.adapters.paths import write_text_atomic

    return write_text_atomic(page, out, "--out")


def log_report(run_id: str, model_name: str) -> None:
    """Build run ``run_id``'s report from what it logged and add it to the run as report.html (replacing an older
    one: a retrain logs it again once the aliases have moved)."""
    from mlflow import MlflowClient

    MlflowClient().log_text(run_id, render(read_run(run_id, model_name)), REPORT_ARTIFACT)


def log_report_data(result: TrainingResult) -> None:
    """Inside the active run: :func:`report_data` as compact JSON (100,000 numbers stay ~1 MB, not one per line)."""
    import mlflow

    mlflow.log_text(json.dumps(report_data(result), separators=(",", ":")), REPORT_DATA)

