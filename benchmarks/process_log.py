"""A loan-application process log, scored the way issue 18 judged one: leadtemp against a logistic
regression on per-type counts, on the applications still open at a date late in the log.

The real log of issue 18 is not in the repository (and this machine has no network), so this script
writes one shaped like it: about 13,000 applications over five and a half months, a quarter of a million
events with the codes and the story of a bank's loan process. An application is submitted (the
applicant's own event); a third are declined by the automatic screening within minutes; the rest are
pre-accepted, a work item is opened and the bank calls to complete the application; an offer is
created and sent; the bank calls after sent offers; the applicant returns the signed offer or not (no
answer within about a month: the application is cancelled; some ask for a new offer); returned offers
are validated (calls about missing documents on the way) and end approved or declined. Two hidden
traits per applicant drive it: creditworthiness (screening, final decision) and commitment (returning
the offer, how fast). Work items appear twice (started, completed), as in a flattened export. The
directions are what a user would add: the applicant's own events inbound, the rest outbound.

Protocol (issue 18): the data observed before AS_OF (the log's end minus 30 days) is all a model sees;
the applications open at AS_OF (created, not approved, not declined or cancelled) are scored and judged
on the next 30 days: ROC-AUC (with a bootstrap interval of the difference to the logistic regression on
the same rows), ECE (10 equal-frequency bins), the bucket shares and conversion rates, how many lost
applications were scored, and how many reasons word a status change as a contact.

leadtemp is run through its CLI, as a user would, in a temporary folder, with params files holding:
  naive       a data section only (no loss information, no vocabulary): what issue 18 measured
  lost_at     + data.columns.lost_at (the declined/cancelled time as a column)
  vocabulary  + an events section: steps, touches with labels, outcomes that end the application
  vocab_30d   the same with snapshots.horizon_days: 30 (probabilities of the horizon being judged)
The logistic regression learns from weekly snapshots of open applications whose 30-day label is
observed before AS_OF: counts of each event type in the last 1, 7 and 30 days, age, log amount and purpose.

Usage: python benchmarks/process_log.py [--applications 13000] [--seed 1] [--configs naive vocabulary]
Writes benchmarks/results/process_log.md and process_log.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from leadtemp.core.metrics import expected_calibration_error

HERE = Path(__file__).resolve().parent
START, MONTHS = pd.Timestamp("2011-10-01"), 5.5
JUDGE_DAYS = 30
CONTACT_WORDS = ("contact", "from us", "from them", "we contacted", "called", "emailed")

STEP_LABELS = {
    "A_SUBMITTED": "application submitted", "A_PARTLYSUBMITTED": "application partly submitted",
    "A_PREACCEPTED": "application pre-accepted", "A_ACCEPTED": "application accepted",
    "A_FINALIZED": "application finalised", "O_SELECTED": "offer selected", "O_CREATED": "offer created",
    "O_SENT": "offer sent", "O_CANCELLED": "offer withdrawn", "W_Afhandelen leads": "lead handled",
    "W_Valideren aanvraag": "validation",
}
TOUCH_LABELS = {
    "W_Completeren aanvraag": "call to complete the application",
    "W_Nabellen offertes": "call about the offer",
    "W_Nabellen incomplete dossiers": "call about missing documents",
}
LOST_TYPES = ("A_DECLINED", "A_CANCELLED", "O_DECLINED")
WON_TYPES = ("A_APPROVED", "A_REGISTERED", "A_ACTIVATED", "O_ACCEPTED")


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def generate(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Applications (id, created, amount, purpose, approved_at, lost_at) and their events (see the docstring)."""
    rng = np.random.default_rng(seed)
    end = START + pd.Timedelta(days=MONTHS * 30.4)
    span = (end - START).days
    day = rng.uniform(0, span, 3 * n)
    weekday = ((START + pd.to_timedelta(np.floor(day), unit="D")).day_of_week < 5)
    day = np.sort(day[weekday | (rng.random(3 * n) < 0.2)][:n])
    n = len(day)
    credit, commit = rng.normal(size=n), rng.normal(size=n)
    amount = np.round(np.exp(9.4 + 0.8 * rng.normal(size=n) - 0.25 * credit), -2).clip(500, 100_000)
    purpose = rng.choice(["car", "home improvement", "debt consolidation", "other"], n, p=[.35, .25, .25, .15])
    commit += np.where(purpose == "debt consolidation", -0.3, 0) + np.where(purpose == "car", 0.2, 0)

    rows: list[tuple[int, float, str, str]] = []   # (application, day, type, direction)
    approved = np.full(n, np.nan)
    lost = np.full(n, np.nan)

    def add(i, t, type_, direction="outbound"):
        rows.append((i, t, type_, direction))

    def work(i, t0, t1, type_):
        add(i, t0, type_)
        add(i, t1, type_)

    for i in range(n):
        t = day[i]
        add(i, t, "A_SUBMITTED", "inbound")
        add(i, t + 1e-3, "A_PARTLYSUBMITTED")
        if rng.random() < sigmoid(-0.9 - 1.6 * credit[i]):               # automatic screening
            lost[i] = t + rng.uniform(0.001, 0.02)
            add(i, lost[i], "A_DECLINED")
            continue
        t += rng.uniform(0.002, 0.3)
        add(i, t, "A_PREACCEPTED")
        work(i, t, t + rng.uniform(0.01, 0.5), "W_Afhandelen leads")
        calls = 1 + rng.poisson(1.2 - 0.4 * commit[i].clip(-1, 1))
        call_days = t + np.sort(rng.exponential(1.5 + 1.0 * (commit[i] < 0), calls))
        for c in call_days:
            work(i, c, c + rng.uniform(0.005, 0.05), "W_Completeren aanvraag")
        t = call_days[-1] + rng.gamma(1.5, 1.0)
        if rng.random() < sigmoid(-2.2 - 1.2 * credit[i]):                # declined while completing
            add(i, t, "A_DECLINED")
            lost[i] = t
            continue
        if rng.random() < sigmoid(-2.4 - 1.0 * commit[i]):                # the applicant drops out
            t += rng.uniform(5, 25)
            add(i, t, "A_CANCELLED")
            lost[i] = t
            continue
        for type_ in ("A_ACCEPTED", "A_FINALIZED", "O_SELECTED", "O_CREATED", "O_SENT"):
            add(i, t + rng.uniform(0, 0.01), type_)
        offers = 0
        while True:
            offers += 1
            returns = rng.random() < sigmoid(0.7 + 1.3 * commit[i] - 0.3 * (offers - 1))
            wait = rng.lognormal(np.log(9 - 3 * np.tanh(commit[i])), 0.7)
            deadline = rng.uniform(28, 40)
            for c in t + np.arange(rng.uniform(2, 5), min(wait, deadline), rng.uniform(4, 8)):
                work(i, c, c + rng.uniform(0.005, 0.05), "W_Nabellen offertes")
            if returns and wait < deadline:
                t += wait
                add(i, t, "O_SENT_BACK", "inbound")
                break
            if offers < 3 and rng.random() < 0.15:                        # a new offer asked for
                t += rng.uniform(2, max(3.0, min(wait, deadline)))
                add(i, t, "O_CANCELLED")
                for type_ in ("O_SELECTED", "O_CREATED", "O_SENT"):
                    add(i, t + rng.uniform(0, 0.01), type_)
                continue
            t += deadline
            add(i, t, "A_CANCELLED")
            lost[i] = t
            break
        if not np.isnan(lost[i]):
            continue
        t += rng.uniform(0.1, 2)
        work(i, t, t + rng.uniform(0.05, 1), "W_Valideren aanvraag")
        if rng.random() < sigmoid(-0.4 - 0.8 * credit[i]):                # documents missing
            for c in t + np.sort(rng.uniform(1, 10, 1 + rng.poisson(1.0))):
                work(i, c, c + rng.uniform(0.005, 0.05), "W_Nabellen incomplete dossiers")
            t += rng.uniform(3, 12)
            work(i, t, t + rng.uniform(0.05, 1), "W_Valideren aanvraag")
        t += rng.lognormal(np.log(4), 0.6)
        if rng.random() < sigmoid(1.6 + 1.6 * credit[i]):
            for type_ in WON_TYPES:
                add(i, t + rng.uniform(0, 0.01), type_)
            approved[i] = t
        else:
            add(i, t, "A_DECLINED")
            add(i, t, "O_DECLINED")
            lost[i] = t

    ids = np.array([f"{173688 + 3 * i}" for i in range(n)])
    when = lambda d: START + pd.to_timedelta(np.round(np.asarray(d) * 86400), unit="s")  # noqa: E731
    events = pd.DataFrame(rows, columns=["case", "day", "event", "direction"])
    events = events.loc[events["day"] < span].sort_values(["day", "case"], kind="stable")
    log = pd.DataFrame({"case": ids[events["case"].to_numpy()], "time": when(events["day"]),
                        "event": events["event"].to_numpy(), "direction": events["direction"].to_numpy()})
    apps = pd.DataFrame({"case": ids, "submitted": when(day), "amount_requested": amount, "purpose": purpose,
                         "approved_at": when(np.where(approved < span, approved, np.nan)),
                         "closed_lost_at": when(np.where(lost < span, lost, np.nan))})
    return apps, log, when([span])[0]


def observed(apps: pd.DataFrame, log: pd.DataFrame, as_of: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a user exporting at ``as_of`` has: events before it, outcome times only when before it."""
    apps = apps.loc[apps["submitted"] < as_of].copy()
    for c in ("approved_at", "closed_lost_at"):
        apps[c] = apps[c].where(apps[c] < as_of)
    return apps, log.loc[log["time"] < as_of]


def open_at(apps: pd.DataFrame, when: pd.Timestamp) -> pd.DataFrame:
    return apps.loc[(apps["submitted"] < when) & ~(apps["approved_at"] < when) & ~(apps["closed_lost_at"] <= when)]


# -- the logistic regression on per-type counts -------------------------------------------------------

def count_features(apps: pd.DataFrame, log: pd.DataFrame, when: pd.Timestamp, types: list[str]) -> pd.DataFrame:
    seen = log.loc[(log["time"] < when) & log["case"].isin(apps["case"])]
    age = (when - seen["time"]).dt.total_seconds() / 86400
    out = pd.DataFrame(index=pd.Index(apps["case"].to_numpy(), name="case"))
    for days in (1, 7, 30):
        counts = seen.loc[age < days].groupby(["case", "event"]).size().unstack(fill_value=0)
        out = out.join(counts.reindex(columns=types, fill_value=0).add_suffix(f"_{days}d"))
    out = out.fillna(0)
    out["age_days"] = ((when - apps["submitted"]).dt.total_seconds() / 86400).to_numpy()
    out["log_amount"] = np.log(apps["amount_requested"].to_numpy())
    for p in ("car", "home improvement", "debt consolidation"):
        out[f"purpose_{p}"] = (apps["purpose"].to_numpy() == p).astype(float)
    return out


def logistic_regression(apps: pd.DataFrame, log: pd.DataFrame, as_of: pd.Timestamp, score_apps: pd.DataFrame,
                        horizon: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    types = sorted(log["event"].unique())
    cutoffs = pd.date_range(apps["submitted"].min().normalize() + pd.Timedelta(days=7),
                            as_of - pd.Timedelta(days=horizon), freq="W-MON")
    X, y = [], []
    for c in cutoffs:
        at = open_at(apps, c)
        X.append(count_features(at, log, c, types))
        y.append(((at["approved_at"] >= c) & (at["approved_at"] < c + pd.Timedelta(days=horizon))).to_numpy())
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(pd.concat(X).to_numpy(), np.concatenate(y).astype(int))
    scored = count_features(score_apps, log, as_of, types)
    return model.predict_proba(scored.to_numpy())[:, 1], len(cutoffs), int(sum(map(len, y)))


# -- metrics ------------------------------------------------------------------------------------------

def auc(p, y) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def paired_interval(a: np.ndarray, b: np.ndarray, y: np.ndarray, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of AUC(a) − AUC(b) on the same rows (one row per application)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            diffs.append(auc(a[i], y[i]) - auc(b[i], y[i]))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


# -- leadtemp through its CLI -------------------------------------------------------------------------

def params_for(config: str) -> dict:
    data = {"leads": "applications.csv", "interactions": "events.csv",
            "columns": {"lead_id": "case", "created_at": "submitted", "converted_at": "approved_at"},
            "interaction_columns": {"lead_id": "case", "timestamp": "time", "type": "event", "direction": "direction"},
            "categorical": ["purpose"], "numeric": ["amount_requested"]}
    params: dict = {"data": data}
    if config == "naive":
        data["excluded"] = ["closed_lost_at"]
    elif config == "lost_at":
        data["columns"]["lost_at"] = "closed_lost_at"
    else:
        data["excluded"] = ["closed_lost_at"]
        events = {t: {"kind": "step", "label": w} for t, w in STEP_LABELS.items()}
        events |= {t: {"label": w} for t, w in TOUCH_LABELS.items()}
        events["O_SENT_BACK"] = {"label": "signed offer returned", "thermometer": 1}
        events |= {t: {"kind": "outcome", "ends": "lost"} for t in LOST_TYPES}
        events |= {t: {"kind": "outcome", "ends": "won"} for t in WON_TYPES}
        params["events"] = events
        if config == "vocab_30d":
            params["snapshots"] = {"horizon_days": 30}
    return params


def leadtemp(folder: Path, config: str, as_of: pd.Timestamp) -> tuple[pd.DataFrame, dict, str]:
    exe = Path(sys.executable).with_name("leadtemp")
    (folder / "params.yaml").write_text(yaml.safe_dump(params_for(config), sort_keys=False))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    trained = subprocess.run([str(exe), "train"], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if trained.returncode:
        return pd.DataFrame(), {"train_seconds": seconds}, trained.stdout + trained.stderr
    scored = subprocess.run([str(exe), "score", "--as-of", as_of.strftime("%Y-%m-%d"), "--out", "scores.csv",
                             "--model", "models/latest"], cwd=folder, env=env, capture_output=True, text=True)
    if scored.returncode:
        return pd.DataFrame(), {"train_seconds": seconds}, trained.stdout + scored.stdout + scored.stderr
    meta = json.loads(next((folder / "models" / "latest").rglob("scorer.json")).read_text())
    scores = pd.read_csv(folder / "scores.csv", dtype={"lead_id": str})
    return scores, {"train_seconds": seconds, "horizon_days": meta.get("horizon_days")}, trained.stdout + scored.stderr


STEP_WORDS = tuple(STEP_LABELS.values()) + tuple(f"'{t}'" for t in STEP_LABELS)


def worded_as_contact(reason: str) -> bool:
    """A reason about a status change (its label or its raw code) in the words of a contact."""
    return any(w in reason for w in STEP_WORDS) and any(c in reason for c in CONTACT_WORDS)


def judge(config: str, h: int, scores: pd.DataFrame, live: pd.DataFrame, truth: pd.Series, lr: pd.Series,
          y_h: pd.Series, lost_before: set, seconds: float) -> dict:
    """The numbers of one configuration on the applications open at AS_OF (see the module docstring)."""
    scored = scores.set_index("lead_id")
    on = [c for c in live["case"] if c in scored.index]
    ours, theirs = scored.loc[on, "probability"].to_numpy(), lr.loc[on].to_numpy()
    reasons = scored[[c for c in scored.columns if c.startswith("reason_")]].fillna("").astype(str)
    buckets = scored.loc[on, "bucket"].to_numpy()
    y30, yh = truth.loc[on].to_numpy(), y_h.loc[on].to_numpy()
    lo, hi = paired_interval(ours, theirs, y30)
    return {"config": config, "horizon_days": h, "scored": len(scored), "open_scored": len(on), "open": len(live),
            "lost_scored": int(scored.index.isin(list(lost_before)).sum()),
            "roc_auc_30d": auc(ours, y30), "lr_roc_auc_30d": auc(theirs, y30), "difference_interval": [lo, hi],
            "ece": expected_calibration_error(yh, ours), "lr_ece": expected_calibration_error(yh, theirs),
            "buckets": {b: {"share": float((buckets == b).mean()),
                            "converted_30d": float(y30[buckets == b].mean()) if (buckets == b).any() else None}
                        for b in ("hot", "warm", "cold")},
            "step_reasons_worded_as_contact": int(reasons.map(worded_as_contact).to_numpy().sum()),
            "reasons_with_raw_codes": int(reasons.map(lambda r: "'A_" in r or "'O_" in r or "'W_" in r).to_numpy().sum()),
            "train_seconds": round(seconds, 1)}


def write_report(meta: dict, rows: list[dict]) -> None:
    lines = ["# A loan-application process log: leadtemp against a logistic regression on per-type counts", "",
             f"Written by `{meta['command']}` on {meta['date']} (data: {meta['applications']:,} simulated applications, "
             f"{meta['events']:,} events; see the script's docstring for the story and the protocol). Scored at "
             f"{meta['as_of']}: {meta['open']:,} open applications, {meta['approved_next_30d']} approved in the next "
             f"30 days; {meta['lost_before']:,} were declined or cancelled before. Same rows for both models. ECE: 10 "
             "equal-frequency bins, against conversion within the model's own horizon (the logistic regression is "
             "fitted for that horizon too). Interval: 95% bootstrap of the ROC-AUC difference (1,000 draws).", "",
             "| params | horizon | lost scored | ROC-AUC 30 d | logistic regression | difference | ECE | "
             "logistic regression ECE | hot / warm / cold share (converted in 30 d) | steps worded as contacts | "
             "raw codes in reasons | train s |", "| " + " | ".join(["---"] * 12) + " |"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['config']} | failed: {r['failed'].strip().splitlines()[-1][:200]} |" + " |" * 10)
            continue
        b = r["buckets"]
        shares = " / ".join(f"{b[k]['share']:.0%} ({b[k]['converted_30d']:.0%})" if b[k]["converted_30d"] is not None
                            else "empty" for k in ("hot", "warm", "cold"))
        lo, hi = r["difference_interval"]
        lines.append(f"| {r['config']} | {r['horizon_days']} d | {r['lost_scored']:,} of {r['scored']:,} | "
                     f"{r['roc_auc_30d']:.3f} | {r['lr_roc_auc_30d']:.3f} | {r['roc_auc_30d'] - r['lr_roc_auc_30d']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] | {r['ece']:.3f} | {r['lr_ece']:.3f} | {shares} | "
                     f"{r['step_reasons_worded_as_contact']:,} | {r['reasons_with_raw_codes']:,} | {r['train_seconds']} |")
    (HERE / "results" / "process_log.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--applications", type=int, default=13_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=["naive", "lost_at", "vocabulary", "vocab_30d"])
    parser.add_argument("--keep", type=Path, help="write the data and runs here instead of a temporary folder")
    args = parser.parse_args()
    apps, log, end = generate(args.applications, args.seed)
    as_of = (end - pd.Timedelta(days=JUDGE_DAYS)).normalize()
    seen_apps, seen_log = observed(apps, log, as_of)
    live = open_at(apps, as_of)
    outcome = (live["approved_at"] >= as_of) & (live["approved_at"] < as_of + pd.Timedelta(days=JUDGE_DAYS))
    truth = pd.Series(outcome.to_numpy().astype(int), index=live["case"].to_numpy())
    lost_before = set(apps.loc[apps["closed_lost_at"] < as_of, "case"])
    print(f"{len(apps):,} applications, {len(log):,} events, {START:%Y-%m-%d}..{end:%Y-%m-%d}; "
          f"approved {apps['approved_at'].notna().mean():.1%}, declined or cancelled {apps['closed_lost_at'].notna().mean():.1%}; "
          f"as of {as_of:%Y-%m-%d}: {len(live):,} open, {int(truth.sum())} approved in the next {JUDGE_DAYS} days; "
          f"{len(lost_before):,} closed as lost before", flush=True)
    rows, baselines = [], {}
    with tempfile.TemporaryDirectory(prefix="leadtemp-process-") as tmp:
        base = args.keep or Path(tmp)
        for config in args.configs:
            folder = base / config
            folder.mkdir(parents=True, exist_ok=True)
            seen_apps.to_csv(folder / "applications.csv", index=False, date_format="%Y-%m-%d %H:%M:%S")
            seen_log.to_csv(folder / "events.csv", index=False, date_format="%Y-%m-%d %H:%M:%S")
            scores, meta, output = leadtemp(folder, config, as_of)
            if scores.empty:
                print(f"{config}: failed\n{output[-2000:]}", flush=True)
                rows.append({"config": config, "failed": output[-500:]})
                continue
            h = int(meta["horizon_days"] or JUDGE_DAYS)
            if h not in baselines:
                label = (live["approved_at"] >= as_of) & (live["approved_at"] < as_of + pd.Timedelta(days=h))
                p, cutoffs, n_rows = logistic_regression(seen_apps, seen_log, as_of, live, h)
                baselines[h] = (pd.Series(p, index=live["case"].to_numpy()),
                                pd.Series(label.to_numpy().astype(int), index=live["case"].to_numpy()), cutoffs, n_rows)
            lr, y_h, _, _ = baselines[h]
            row = judge(config, h, scores, live, truth, lr, y_h, lost_before, meta["train_seconds"])
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta = {"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/process_log.py " + " ".join(sys.argv[1:]),
            "applications": len(apps), "events": int(len(log)), "as_of": f"{as_of:%Y-%m-%d}", "open": len(live),
            "approved_next_30d": int(truth.sum()), "lost_before": len(lost_before),
            "lr": {h: {"cutoffs": b[2], "rows": b[3]} for h, b in baselines.items()}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "process_log.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    write_report(meta, rows)
    print(json.dumps(meta, default=str))


if __name__ == "__main__":
    main()
