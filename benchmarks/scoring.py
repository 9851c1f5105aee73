"""Batch scoring speed and memory: features, prediction, reasons and end-to-end database scoring.

One run trains the default model on simulated leads, then for each N in --sizes (capped by
--max-leads) generates N synthetic leads with their interactions (attributes and channels drawn
from the simulated CRM, ~8 events per lead, some after the scoring date) and measures:

  features        events/s of the scoring path's feature builder (prepare_events + features_as_of: integer
                  channel codes, then one numba pass over each lead's events for every window, days-since,
                  decay, trend, step and thermometer column, and the attributes' category codes) against a
                  plain-numpy reference that computes the same columns one at a time (a mask and an
                  np.bincount per channel x window, np.minimum.at for days-since-last) on the same events;
                  every column the reference has must agree to 1e-9
  predict         leads/s of LeadScorer.score_rows without reasons (margin, calibration, score,
                  bucket, output frame) against bare booster.predict on the same feature rows
  reasons         leads/s of LeadScorer.score_rows with reasons (LightGBM's margin, exact TreeSHAP checked
                  against it, grouping, words) against shap.TreeExplainer(booster).shap_values on the same rows
                  (the reference runs on at most --reference-rows rows); top3_agreement = share of leads with
                  the same top-3 groups, max_abs_difference = largest |difference| of a contribution
  db_end_to_end   leads/s of `leadtemp.api.score_sources` from a database (leads and interactions tables; SQLite,
                  and PostgreSQL on loopback with --backends postgresql) into a table of it, with reasons, in a
                  fresh process; peak_rss_mb is that process's peak resident memory (VmHWM), so it shows whether
                  memory stays flat as N grows. reference_per_s: the in-memory pipeline on the same leads
                  (LeadScorer.score with reasons on the generated frames, chunk by chunk, in another fresh
                  process); ratio = database leads/s / in-memory leads/s. phases: seconds until the leads were
                  partitioned, the interactions too, the last lead scored, and the end (publishing)

Every stage uses every core (LightGBM's OpenMP threads, numba's threads; shap.TreeExplainer runs on
one). The stages run on the first --stage-leads leads of each N (their speed does not depend on N);
db_end_to_end on all N (--skip-db leaves it out). Each stage runs once untimed first (numba compiles
or loads its kernels from the cache once per process); features report the best of 3 runs, predict
and reasons the best of 5, shap.TreeExplainer the best of 2.

Targets (issue 16): features ratio >= 2; predict ratio >= 0.5; reasons ratio >= 30 with 100% top-3
agreement and max |difference| <= 1e-9; db_end_to_end peak RSS <= 1.5 GB at 10M leads and flat in N.

Usage: python benchmarks/scoring.py [--max-leads 1000000] [--sizes 10000 100000 1000000 10000000] [--skip-db]
Writes benchmarks/results/scoring.md and scoring.json (rows: n_leads, stage, ours_per_s,
reference_per_s, ratio, peak_rss_mb, top3_agreement).
`--database-only --backends sqlite postgresql` runs only db_end_to_end (and its in-memory reference) and
writes benchmarks/results/database.md and database.json instead, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
AS_OF = pd.Timestamp("2025-07-01")
START = pd.Timestamp("2023-01-01")
EVENTS_PER_LEAD = 8
# Best of several runs: at 10k leads one scoring call takes ~0.4 s and varied 11-14x against the
# reference between three runs on an idle machine (9x once). shap.TreeExplainer takes seconds per
# run, so fewer of its runs give an equally steady minimum.
REPEAT, REFERENCE_REPEAT, FEATURE_REPEAT = 5, 2, 3
GENERATE_CHUNK = 200_000


# -- synthetic data of any size ---------------------------------------------------------------------

def vocabulary(sim) -> dict:
    """What the generator draws from: the simulated CRM's attribute values and channel frequencies."""
    leads, events = sim.leads, sim.interactions
    attrs = {c: leads[c].astype("string").value_counts(normalize=True) for c in
             ("source", "sector", "company_size", "country", "potential", "need", "want", "funds", "authority")}
    channels = events.groupby(["type", "direction"]).size()
    return {"attrs": {c: (v.index.tolist(), v.to_numpy().tolist()) for c, v in attrs.items()},
            "channels": [list(k) for k in channels.index], "channel_p": (channels / channels.sum()).tolist(),
            "purchases": leads["past_purchases"].to_numpy().tolist()}


def generate(vocab: dict, first: int, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leads first..first+n-1 and their events (vectorised; any N in chunks)."""
    rng = np.random.default_rng(seed)
    span = (AS_OF - START).total_seconds()
    created = START + pd.to_timedelta(rng.random(n) * span * 0.98, unit="s")
    converts = rng.random(n) < 0.12
    converted = created + pd.to_timedelta(rng.exponential(60, n), unit="D")
    ids = np.char.add("L", np.char.zfill(np.arange(first, first + n).astype(str), 9))
    leads = pd.DataFrame({"lead_id": ids, "created_at": created,
                          "converted_at": pd.Series(converted).where(converts, pd.NaT).to_numpy()})
    for column, (values, p) in vocab["attrs"].items():
        leads[column] = rng.choice(np.array(values, dtype=object), n, p=np.array(p) / np.sum(p))
    leads["past_purchases"] = rng.choice(np.array(vocab["purchases"], dtype=float), n)
    counts = rng.poisson(rng.gamma(2.0, EVENTS_PER_LEAD / 2.0, n))
    owner = np.repeat(np.arange(n), counts)
    life = ((AS_OF + pd.Timedelta(days=30)) - created).total_seconds().to_numpy()
    stamps = created.to_numpy()[owner] + (rng.random(len(owner)) ** 0.5 * life[owner] * 1e9).astype("timedelta64[ns]")
    channels = np.array(vocab["channels"], dtype=object)
    pick = rng.choice(len(channels), len(owner), p=np.array(vocab["channel_p"]) / np.sum(vocab["channel_p"]))
    events = pd.DataFrame({"lead_id": ids[owner], "timestamp": stamps, "type": channels[pick, 0],
                           "direction": channels[pick, 1]})
    return leads, events


def build_database(path: Path, vocab: dict, n: int) -> int:
    """A SQLite CRM with n leads, written in chunks; returns the number of events."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    n_events, first = 0, 0
    while first < n:
        size = min(GENERATE_CHUNK, n - first)
        leads, events = generate(vocab, first, size, seed=first)
        for frame in (leads, events):
            for c in frame.columns:
                if pd.api.types.is_datetime64_any_dtype(frame[c]):
                    frame[c] = frame[c].dt.strftime("%Y-%m-%d %H:%M:%S").astype(object).where(frame[c].notna(), None)
        leads.to_sql("leads", conn, index=False, if_exists="append", chunksize=50_000)
        events.to_sql("interactions", conn, index=False, if_exists="append", chunksize=50_000)
        n_events += len(events)
        first += size
    conn.close()
    return n_events


# -- stages -----------------------------------------------------------------------------------------

def reference_features(leads: pd.DataFrame, events: pd.DataFrame, spec) -> dict[str, np.ndarray]:
    """The same counts, decayed counts and days-since-last columns, the plain numpy way: one at a time."""
    n = len(leads)
    t = events["timestamp"].to_numpy()
    pos = pd.Index(leads["lead_id"]).get_indexer(events["lead_id"])
    keep = (t < AS_OF.to_datetime64()) & (pos >= 0)
    pos, age = pos[keep], (AS_OF.to_datetime64() - t[keep]) / np.timedelta64(1, "D")
    kind = events["type"].to_numpy()[keep]
    inbound = (events["direction"].to_numpy()[keep] == "inbound")
    decay = np.exp(-np.log(2) * age / spec.half_life_days)
    groups = [(c.name, (kind == c.type) & (inbound == (c.direction == "inbound"))) for c in spec.channels]
    groups += [("inbound", inbound), ("outbound", ~inbound)]
    out = {}
    for name, mask in groups:
        for w in spec.windows_days:
            m = mask & (age < w)
            out[f"{name}_{w}d"] = np.bincount(pos[m], minlength=n).astype(float)
        out[f"{name}_decayed"] = np.bincount(pos[mask], weights=decay[mask], minlength=n)
        last = np.full(n, np.inf)
        np.minimum.at(last, pos[mask], age[mask])
        out[f"{name}_days_since_last"] = np.where(np.isinf(last), np.nan, last)
    return out


def stages(scorer, vocab: dict, n: int, reference_rows: int) -> list[dict]:
    import shap

    from leadtemp.core.features import features_as_of, prepare_events
    from leadtemp.core.snapshots import eligible_leads
    from leadtemp.modelling.scorer import feature_matrix
    from reasons import best_time as best  # benchmarks/reasons.py (not imported by the --child process)
    from reasons import top3

    leads, events = generate(vocab, 0, n, seed=0)
    spec = scorer.spec
    eligible = eligible_leads(leads, AS_OF).reset_index(drop=True)
    features_as_of(eligible.head(1000), prepare_events(events.head(8000), spec, sort=False), AS_OF, spec)  # compile
    ours_s, features = best(lambda: features_as_of(eligible, prepare_events(events, spec, sort=False), AS_OF, spec),
                            repeat=FEATURE_REPEAT)
    ref_s, reference = best(lambda: reference_features(eligible, events, spec), repeat=FEATURE_REPEAT)
    for name, column in reference.items():  # the reference computes the same numbers
        np.testing.assert_allclose(features[name].to_numpy(), column, rtol=1e-9, atol=1e-9, err_msg=name)
    rows = [{"n_leads": n, "stage": "features", "ours_per_s": len(events) / ours_s,
             "reference_per_s": len(events) / ref_s, "ratio": ref_s / ours_s, "peak_rss_mb": None,
             "top3_agreement": None, "unit": "events/s"}]

    X = feature_matrix(features, spec)
    scorer.score_rows(features.head(6000), reasons=True)  # compile numba kernels and tables once
    ours_s, _ = best(lambda: scorer.score_rows(features, reasons=False), repeat=REPEAT)
    ref_s, _ = best(lambda: scorer.booster.predict(X), repeat=REPEAT)
    rows.append({"n_leads": n, "stage": "predict", "ours_per_s": len(X) / ours_s, "reference_per_s": len(X) / ref_s,
                 "ratio": ref_s / ours_s, "peak_rss_mb": None, "top3_agreement": None, "unit": "leads/s"})

    ours_s, _ = best(lambda: scorer.score_rows(features, reasons=True), repeat=REPEAT)
    ours_contrib = scorer.contributions(features)
    m = min(len(X), reference_rows)
    explainer = shap.TreeExplainer(scorer.booster)
    ref_s, ref = best(lambda: explainer.shap_values(X[:m]), repeat=REFERENCE_REPEAT)
    ref = ref[1] if isinstance(ref, list) else ref
    ref = np.column_stack([ref, np.full(m, np.ravel(explainer.expected_value)[-1])])
    agree = float((top3(ours_contrib[:m], spec) == top3(ref, spec)).all(axis=1).mean())
    rows.append({"n_leads": n, "stage": "reasons", "ours_per_s": len(X) / ours_s, "reference_per_s": m / ref_s,
                 "ratio": (m / ref_s) and (len(X) / ours_s) / (m / ref_s), "peak_rss_mb": None,
                 "top3_agreement": agree, "unit": "leads/s", "reference_rows": m,
                 "max_abs_difference": float(np.abs(ours_contrib[:m, :-1] - ref[:, :-1]).max())})
    return rows


def build_postgres(url: str, vocab: dict, n: int) -> int:
    """The same CRM as :func:`build_database` in PostgreSQL (typed columns), loaded with COPY; returns the events."""
    import io

    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    n_events, first = 0, 0
    with psycopg.connect(conninfo) as conn:
        conn.execute("DROP TABLE IF EXISTS leads, interactions, scores, scores_rejects")
        leads, _ = generate(vocab, 0, 1, seed=0)
        text = ", ".join(f'"{c}" {"timestamp" if c.endswith("_at") else "double precision" if c == "past_purchases" else "text"}'
                         for c in leads.columns)
        conn.execute(f"CREATE TABLE leads ({text})")
        conn.execute('CREATE TABLE interactions (lead_id text, "timestamp" timestamp, type text, direction text)')
        while first < n:
            size = min(GENERATE_CHUNK, n - first)
            leads, events = generate(vocab, first, size, seed=first)
            for name, frame in (("leads", leads), ("interactions", events)):
                buffer = io.BytesIO()
                pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer,
                                 pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
                columns = ", ".join(f'"{c}"' for c in frame.columns)
                with conn.cursor().copy(f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
                    copy.write(buffer.getbuffer())
            n_events += len(events)
            first += size
    return n_events


def postgres_server():
    """The tests' throwaway PostgreSQL on 127.0.0.1 (tests/services.py: Debian's server binaries, started as the
    postgres user when run as root, removed afterwards); a context manager yielding its SQLAlchemy URL."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from services import postgres_server as server

    return server()


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent, VmHWM starts afresh at exec.
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024


def end_to_end_child(model_dir: str, db: str, work: str) -> None:
    """Runs in a fresh process: score the CRM (a SQLite file or a database URL) into a table of it; print seconds,
    phases and peak RSS as JSON."""
    from leadtemp.adapters.sources import Source, Target
    from leadtemp.api import score_sources
    from leadtemp.core.config import load_params
    from leadtemp.modelling.scorer import LeadScorer

    scorer = LeadScorer.load(model_dir)
    scorer.meta["model_version"] = "bench"
    url = db if "://" in db else f"sqlite:///{db}"
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()

    def echo(message: str) -> None:
        lines.append((time.perf_counter() - start, message))
        print(f"[{lines[-1][0]:.1f} s] {message}", file=sys.stderr)

    result = score_sources(scorer, load_params(HERE.parent / "params.yaml"), AS_OF, Source.database(url, "leads"),
                           Source.database(url, "interactions"), Target(url=url, table="scores"),
                           work_dir=Path(work), echo=echo, interactive=False)
    seconds = time.perf_counter() - start
    def at(word: str) -> float | None:
        return next((t for t, m in lines if m.startswith("read ") and f" {word} from " in m), None)

    scored = [t for t, m in lines if m.startswith("scoring:")]
    phases = {"leads_partitioned": at("leads"), "interactions_partitioned": at("interactions"),
              "last_progress_line": scored[-1] if scored else None, "end": seconds}
    print(json.dumps({"seconds": seconds, "leads": result.leads_read, "scored": result.scored,
                      "peak_rss_mb": _peak_rss_mb(), "phases": phases}))


def memory_child(model_dir: str, vocab_file: str, n: str) -> None:
    """Runs in a fresh process: the in-memory pipeline on the benchmark's leads (the same generator and seeds as
    the database), GENERATE_CHUNK leads at a time: LeadScorer.score with reasons on frames already in memory.
    Prints leads/s and peak RSS as JSON."""
    from leadtemp.modelling.scorer import LeadScorer

    scorer = LeadScorer.load(model_dir)
    vocab = json.loads(Path(vocab_file).read_text())
    warm_leads, warm_events = generate(vocab, 0, 2_000, seed=0)
    scorer.score(warm_leads, warm_events, AS_OF)  # numba kernels loaded or compiled, outside the timing
    seconds, first, total = 0.0, 0, int(n)
    while first < total:
        size = min(GENERATE_CHUNK, total - first)
        leads, events = generate(vocab, first, size, seed=first)
        start = time.perf_counter()
        scorer.score(leads, events, AS_OF)
        seconds += time.perf_counter() - start
        first += size
    print(json.dumps({"seconds": seconds, "leads": total, "peak_rss_mb": _peak_rss_mb()}))


def _child(*args: str) -> dict:
    child = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                           env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    if child.returncode != 0:
        raise RuntimeError(child.stderr)
    return json.loads(child.stdout.strip().splitlines()[-1])


def end_to_end(model_dir: Path, vocab: dict, n: int, folder: Path, backend: str = "sqlite",
               url: str | None = None, memory: dict | None = None) -> dict:
    """One db_end_to_end row: the database run and, unless given (``memory``), the in-memory run on the same leads."""
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab))
    if memory is None:
        memory = _child("--memory-child", str(model_dir), str(vocab_file), str(n))
    t0 = time.perf_counter()
    db = folder / f"crm-{n}.db"
    n_events = build_database(db, vocab, n) if backend == "sqlite" else build_postgres(url, vocab, n)
    print(f"  built {backend} CRM: {n:,} leads, {n_events:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
    load_before = os.getloadavg()
    stats = _child("--child", str(model_dir), str(db) if backend == "sqlite" else url, str(folder / "work"))
    load_after = os.getloadavg()
    db.unlink(missing_ok=True)
    ours, reference = stats["leads"] / stats["seconds"], memory["leads"] / memory["seconds"]
    return {"n_leads": n, "stage": "db_end_to_end", "backend": backend, "ours_per_s": ours, "reference_per_s": reference,
            "ratio": ours / reference, "peak_rss_mb": stats["peak_rss_mb"], "top3_agreement": None, "unit": "leads/s",
            "events": n_events, "seconds": stats["seconds"], "scored": stats["scored"], "phases": stats["phases"],
            "memory_seconds": memory["seconds"], "memory_peak_rss_mb": memory["peak_rss_mb"],
            "load_1min_before": load_before[0], "load_1min_after": load_after[0], "memory": memory}


# -- report -----------------------------------------------------------------------------------------

def fmt(value, pattern: str = "{:,.0f}") -> str:
    return "" if value is None else pattern.format(value)


def write_report(rows: list[dict], meta: dict) -> None:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "scoring.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Batch scoring benchmark", "", f"Run {meta['date']} on {meta['machine']}; `python benchmarks/scoring.py "
             f"{meta['args']}`.", f"Model: {meta['model']}.", "",
             "| n_leads | stage | ours /s | reference /s | ratio | peak RSS MB | top-3 agreement |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['n_leads']:,} | {r['stage']} ({r['unit']}) | {fmt(r['ours_per_s'])} | {fmt(r['reference_per_s'])} "
                     f"| {fmt(r['ratio'], '{:.2f}')} | {fmt(r['peak_rss_mb'])} | {fmt(r['top3_agreement'], '{:.2%}')} |")
    lines += ["", "Targets (issue 16): features ratio >= 2 (ours at least twice as fast as the plain-numpy reference); "
              "predict ratio >= 0.5 (scoring without reasons at least half as fast as bare booster.predict); reasons "
              "ratio >= 30 (against shap.TreeExplainer) with 100% top-3 agreement and max |difference| <= 1e-9; "
              "db_end_to_end peak RSS <= 1.5 GB at 10M leads and flat in N.", ""] + meta["notes"]
    (out / "scoring.md").write_text("\n".join(lines) + "\n")


def write_database_report(rows: list[dict], meta: dict) -> None:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "database.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Database scoring benchmark", "", f"Run {meta['date']} on {meta['machine']}; "
             f"`MLFLOW_DISABLE_TELEMETRY=true OMP_WAIT_POLICY=PASSIVE python benchmarks/scoring.py {meta['args']}`.",
             f"Model: {meta['model']}.", "",
             "| n_leads | database | database leads/s | in-memory leads/s | ratio | peak RSS MB (database run) "
             "| peak RSS MB (in memory) | seconds | partitioned (leads, +interactions) | last lead scored | load 1 min "
             "(before, after) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ph = r["phases"]
        lines.append(f"| {r['n_leads']:,} | {r['backend']} | {fmt(r['ours_per_s'])} | {fmt(r['reference_per_s'])} "
                     f"| {fmt(r['ratio'], '{:.2f}')} | {fmt(r['peak_rss_mb'])} | {fmt(r['memory_peak_rss_mb'])} "
                     f"| {fmt(r['seconds'], '{:.1f}')} | {fmt(ph['leads_partitioned'], '{:.1f}')}, "
                     f"{fmt(ph['interactions_partitioned'], '{:.1f}')} | {fmt(ph['last_progress_line'], '{:.1f}')} "
                     f"| {r['load_1min_before']:.1f}, {r['load_1min_after']:.1f} |")
    lines += ["", "ratio = database leads/s / in-memory leads/s on the same leads in the same run (the in-memory "
              "pipeline: LeadScorer.score with reasons on the generated frames, 200,000 leads at a time, in its own "
              "process). Target: ratio >= 0.5 at 1M leads with peak RSS <= 1.5 GB.", ""] + meta["notes"]
    (out / "database.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        end_to_end_child(*sys.argv[2:5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--max-leads", type=int, default=10_000_000, help="skip sizes above this")
    parser.add_argument("--stage-leads", type=int, default=200_000, help="leads for the in-memory stages")
    parser.add_argument("--reference-rows", type=int, default=50_000, help="rows for shap.TreeExplainer")
    parser.add_argument("--train-leads", type=int, default=20_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite"], choices=["sqlite", "postgresql"],
                        help="databases for db_end_to_end (postgresql: a server started on 127.0.0.1)")
    parser.add_argument("--database-only", action="store_true",
                        help="only db_end_to_end; writes results/database.md and .json")
    parser.add_argument("--skip-db", action="store_true", help="leave out db_end_to_end (the in-memory stages only)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from leadtemp.core.config import load_params
    from leadtemp.simulate import simulate
    from leadtemp.workflows.train import train

    sim = simulate(args.train_leads, seed=7)
    scorer = train(sim.leads, sim.interactions, load_params(HERE.parent / "params.yaml")).scorer
    vocab = vocabulary(sim)
    leaves = max(t["num_leaves"] for t in scorer.booster.dump_model()["tree_info"])
    model = (f"the default pipeline trained on {args.train_leads:,} simulated leads: {scorer.booster.num_trees()} trees of "
             f"up to {leaves} leaves, {len(scorer.spec.columns)} features")
    print(model, flush=True)
    rows: list[dict] = []
    sizes = [n for n in args.sizes if n <= args.max_leads]
    notes, loads = [f"Machine load before the run: {_load()}."], []
    if args.skip_db:
        notes.append("Run with --skip-db: no db_end_to_end rows (benchmarks/results/database.md has them).")
    server = postgres_server() if "postgresql" in args.backends and not args.skip_db else nullcontext()
    with tempfile.TemporaryDirectory(prefix="leadtemp-bench-") as tmp, server as pg_url:
        model_dir = scorer.save(Path(tmp) / "model")
        for n in sizes:
            print(f"N = {n:,}", flush=True)
            done = len(rows)
            if not args.database_only:
                staged = stages(scorer, vocab, min(n, args.stage_leads), args.reference_rows)
                for r in staged:
                    r["n_leads"] = n
                    r["measured_on"] = min(n, args.stage_leads)
                rows += staged
            memory = None
            for backend in ([] if args.skip_db else args.backends):
                rows.append(end_to_end(model_dir, vocab, n, Path(tmp), backend, pg_url, memory))
                memory = rows[-1].pop("memory")
            for r in rows[done:]:
                print(f"  {r['stage']:14s} {r.get('backend', ''):10s} ours {fmt(r['ours_per_s'])} {r['unit']}, "
                      f"reference {fmt(r['reference_per_s'])}, ratio {fmt(r['ratio'], '{:.2f}')}, "
                      f"peak RSS {fmt(r['peak_rss_mb'])} MB, top-3 {fmt(r['top3_agreement'], '{:.2%}')}", flush=True)
            loads.append(f"{n:,}: {_load()}")
            differences = "; ".join(f"{r['n_leads']:,}: {r['max_abs_difference']:.1e}" for r in rows
                                    if r["stage"] == "reasons")
            meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} cores",
                    "args": " ".join(sys.argv[1:]), "model": model,
                    "notes": notes + ([f"Reasons, max |difference| of a contribution against shap.TreeExplainer: "
                                       f"{differences}."] if differences else [])
                    + [f"Machine load after each N: {'; '.join(loads)}."]}
            if args.database_only:
                write_database_report(rows, meta)
            else:
                write_report(rows, meta)


def _load() -> str:
    """The load averages (1, 5, 15 min) of `uptime`: the machine is shared, and ratios move with its load."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
