"""REST serving: `leadtemp serve` against `leadtemp score` on the same leads, and its answers to bad requests.

One run simulates a CRM, trains the default model (its own MLflow store in a temporary folder), starts
`leadtemp serve` on 127.0.0.1 and measures, for requests of 1, 100 and 1,000 open leads with their
interactions (as of the day after the data ends):

  leads_per_s        leads answered per second, one request after another (200 requests of 1 lead, 20 of
                     100, 5 of 1,000), client time: JSON out, HTTP, scoring with reasons, JSON back
  latency_ms_*       median and p99 of those requests' round trips
  cli_leads_per_s    the same leads written to Parquet and scored by `leadtemp score` in a fresh process
                     (wall time, start-up included: what a scheduled job pays); cli_scoring_leads_per_s
                     counts only the scoring the command reports
  same_as_cli        the server's probabilities, buckets and model_version equal `leadtemp score`'s
  load_average_1min  the machine's 1-minute load average before and after the timed requests (2 cores are
                     shared: a load above 2 means other work competed for them)

`errors` posts one bad request per case and records the HTTP status and the answer's message; every
one must be a 4xx without a traceback. With --mlflow, the 1,000-lead request is also timed on
`mlflow models serve --env-manager local` of the same registered model (the stock server, for comparison).

Usage: python benchmarks/serving.py [--leads 6000] [--mlflow]
Writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads: the machine is shared
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = {1: 200, 100: 20, 1000: 5}   # request size -> requests timed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict | str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


def start(command: list[str], port: int, env: dict, log: Path) -> tuple[subprocess.Popen, float]:
    """A server process and the seconds until it answered /ping."""
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    while time.perf_counter() - began < 180:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
            return process, time.perf_counter() - began
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"server did not answer in 180 s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def request_body(leads: pd.DataFrame, events: pd.DataFrame, scorer, as_of: pd.Timestamp) -> bytes:
    from leadtemp.adapters.pyfunc import nest

    frame = nest(leads, events.loc[events["lead_id"].isin(leads["lead_id"])], scorer)
    frame["created_at"] = frame["created_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return json.dumps({"dataframe_records": records, "params": {"as_of": str(as_of.date())}}).encode()


def time_requests(url: str, body: bytes, n: int) -> tuple[list[float], dict]:
    took, answer = [], None
    for _ in range(n):
        began = time.perf_counter()
        status, answer = post(url, body)
        took.append(time.perf_counter() - began)
        if status != 200:
            raise SystemExit(f"{url}: {status} {str(answer)[:500]}")
    return took, answer


def run_cli(args: list[str], env: dict, cwd: Path) -> tuple[float, float | None]:
    """Wall seconds of a `leadtemp score` in a fresh process, and the scoring seconds it reports."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "leadtemp", *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"leadtemp {' '.join(args)}: {done.stderr[-2000:]}")
    reported = re.search(r" in ([0-9.]+) s", done.stdout)
    return wall, float(reported.group(1)) if reported else None


def error_cases(open_lead: dict, as_of: str, max_leads: int) -> list[tuple[str, bytes, str]]:
    """(case, body, content type): one bad request each."""
    def body(records, params=None, **extra):
        payload = {"dataframe_records": records, **extra}
        if params is not False:
            payload["params"] = params or {"as_of": as_of}
        return json.dumps(payload).encode()

    no_events = {k: v for k, v in open_lead.items() if k != "interactions"}
    bad_event = {**open_lead, "interactions": [{"timestamp": "2024-01-01", "type": "sms", "channel": "x"}]}
    empty = {"lead_id": "L-empty", "created_at": open_lead["created_at"], "interactions": []}
    json_type = "application/json"
    return [
        ("malformed JSON", b'{"dataframe_records": [', json_type),
        ("not JSON (text)", b"lead_id,created_at\nL1,2024-01-01\n", "text/csv"),
        ("a JSON list instead of an object", b"[1, 2]", json_type),
        ("both dataframe_records and dataframe_split",
         json.dumps({"dataframe_records": [], "dataframe_split": {}, "params": {"as_of": as_of}}).encode(), json_type),
        ("unknown top-level key", body([open_lead], extra_key=1), json_type),
        ("dataframe_split row of the wrong length",
         json.dumps({"dataframe_split": {"columns": ["lead_id", "created_at"], "data": [["L1"]]},
                     "params": {"as_of": as_of}}).encode(), json_type),
        ("unknown column (a personal one)", body([{**open_lead, "email": "someone@example.com"}]), json_type),
        ("missing column created_at", body([{k: v for k, v in open_lead.items() if k != "created_at"}]), json_type),
        ("no interactions column", body([no_events]), json_type),
        ("a lead without interactions (null)", body([open_lead, {**empty, "interactions": None}]), json_type),
        ("a lead without the interactions key", body([open_lead, no_events]), json_type),
        ("an interaction with an unknown field", body([bad_event]), json_type),
        ("an interaction that is not an object", body([{**open_lead, "interactions": ["phone_call"]}]), json_type),
        ("missing as_of", body([open_lead], params={"reasons": True}), json_type),
        ("no params at all", body([open_lead], params=False), json_type),
        ("as_of not a date", body([open_lead], params={"as_of": "2024-13-45"}), json_type),
        ("as_of in words", body([open_lead], params={"as_of": "yesterday"}), json_type),
        ("as_of outside 1970..2100", body([open_lead], params={"as_of": "1900-01-01"}), json_type),
        ("reasons not a boolean", body([open_lead], params={"as_of": as_of, "reasons": "yes"}), json_type),
        ("no leads", body([]), json_type),
        (f"too many leads ({max_leads + 1:,})",
         body([{**empty, "lead_id": f"L{i}"} for i in range(max_leads + 1)]), json_type),
        ("too large a body (65 MiB)", b'{"dataframe_records": [' + b" " * (65 * 2**20) + b"]}", json_type),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=6000, help="leads in the simulated CRM")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mlflow", action="store_true", help="also time `mlflow models serve` on 1,000 leads")
    args = parser.parse_args()

    from leadtemp import api
    from leadtemp.adapters.pyfunc import MAX_LEADS
    from leadtemp.core.snapshots import observed_until
    from leadtemp.simulate import simulate

    work = Path(tempfile.mkdtemp(prefix="leadtemp-serving-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    sim = simulate(args.leads, seed=args.seed, months=24)
    sim.leads.to_parquet(work / "leads.parquet")
    sim.interactions.to_parquet(work / "interactions.parquet")
    params = api.params_with(ROOT / "params.yaml", work / "leads.parquet", work / "interactions.parquet")
    began = time.perf_counter()
    trained = api.train(params, sim.leads, sim.interactions)
    print(f"trained version {trained.logged.version} on {args.leads:,} simulated leads in {time.perf_counter() - began:.0f} s")
    scorer, version = api.load_model(params)
    as_of = observed_until(sim.leads, sim.interactions).normalize() + pd.Timedelta(days=1)
    events = sim.interactions.loc[sim.interactions["timestamp"] < as_of]
    open_leads, _ = scorer.eligible(sim.leads, events, as_of)
    pool = sim.leads.loc[sim.leads["lead_id"].isin(open_leads["lead_id"])].sample(frac=1, random_state=1)
    if len(pool) < max(SIZES):
        raise SystemExit(f"only {len(pool)} open leads at {as_of.date()}: simulate more (--leads)")

    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    server, startup = start([sys.executable, "-m", "leadtemp", "serve", "--params", str(ROOT / "params.yaml"),
                             "--port", str(port)], port, env, work / "serve.log")
    print(f"leadtemp serve answered /ping after {startup:.1f} s")
    rows, errors, mlflow_row = [], [], None
    try:
        for size, repeats in SIZES.items():
            leads = pool.head(size)
            body = request_body(leads, events, scorer, as_of)
            post(url, body)  # warm-up: the first request compiles nothing, but pages in the model
            load_before = os.getloadavg()[0]
            took, answer = time_requests(url, body, repeats)
            load_after = os.getloadavg()[0]
            leads.to_parquet(work / "some.parquet")
            events.loc[events["lead_id"].isin(leads["lead_id"])].to_parquet(work / "some_events.parquet")
            wall, scoring = run_cli(["score", "--as-of", str(as_of.date()), "--leads", "some.parquet", "--interactions",
                                     "some_events.parquet", "--out", "cli.csv", "--params", str(ROOT / "params.yaml")],
                                    env, work)
            cli = pd.read_csv(work / "cli.csv", dtype={"model_version": str}).set_index("lead_id")
            served = pd.DataFrame(answer["predictions"]).set_index("lead_id").loc[cli.index]
            same = bool(np.allclose(served["probability"].astype(float), cli["probability"], rtol=1e-12, atol=0)
                        and (served["bucket"] == cli["bucket"]).all()
                        and (served["model_version"] == cli["model_version"]).all()
                        and (served["status"] == "scored").all())
            ms = sorted(1000 * t for t in took)
            rows.append({"request_leads": size, "requests": repeats, "leads_per_s": round(size * repeats / sum(took), 1),
                         "latency_ms_median": round(statistics.median(ms), 1),
                         "latency_ms_p99": round(ms[min(len(ms) - 1, int(np.ceil(0.99 * len(ms))) - 1)], 1),
                         "cli_leads_per_s": round(size / wall, 1),
                         "cli_scoring_leads_per_s": round(size / scoring, 1) if scoring else None,
                         "request_bytes": len(body), "interactions": int(events["lead_id"].isin(leads["lead_id"]).sum()),
                         "same_as_cli": same,
                         "load_average_1min": [round(load_before, 2), round(load_after, 2)]})
            print(rows[-1])
        first = json.loads(request_body(pool.head(1), events, scorer, as_of))["dataframe_records"][0]
        for case, body, content_type in error_cases(first, str(as_of.date()), MAX_LEADS):
            status, answer = post(url, body, content_type)
            message = answer.get("message", "") if isinstance(answer, dict) else str(answer)
            errors.append({"case": case, "status": status, "message": message,
                           "client_error": 400 <= status < 500,
                           "traceback": "Traceback" in message or 'File "' in message or "site-packages" in message})
            print(f"{status} {case}: {message[:150]}")
    finally:
        stop(server)
    if args.mlflow:
        port = free_port()
        stock, stock_startup = start([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/leadtemp@champion",
                                      "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], port, env,
                                     work / "mlflow-serve.log")
        try:
            body = request_body(pool.head(1000), events, scorer, as_of)
            post(f"http://127.0.0.1:{port}/invocations", body)
            took, _ = time_requests(f"http://127.0.0.1:{port}/invocations", body, 3)
            mlflow_row = {"server": "mlflow models serve --env-manager local", "request_leads": 1000,
                          "leads_per_s": round(3000 / sum(took), 1), "startup_s": round(stock_startup, 1)}
            print(mlflow_row)
        finally:
            stop(stock)
    result = {
        "what": "leadtemp serve on 127.0.0.1, one request after another, reasons on; leadtemp score in a fresh process",
        "world": {"leads": args.leads, "seed": args.seed, "months": 24, "as_of": str(as_of.date()),
                  "model_version": version, "open_leads": int(len(pool))},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "startup_s": round(startup, 1), "rows": rows, "errors": errors,
        **({"stock_mlflow_server": mlflow_row} if mlflow_row else {}),
    }
    out = HERE / "results" / "serving.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    bad = [e["case"] for e in errors if not e["client_error"] or e["traceback"]]
    print(f"wrote {out}; {len(errors)} bad requests, {len(errors) - len(bad)} answered 4xx without a traceback"
          + (f"; NOT: {bad}" if bad else ""))


if __name__ == "__main__":
    main()
