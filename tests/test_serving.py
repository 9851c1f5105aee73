"""REST serving: `leadtemp serve` on 127.0.0.1 answers like `leadtemp score`, every lead gets a row back,
and every bad request is a 4xx with leadtemp's one-line message. One model and one server per module."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.cli import app

PARAMS = str(ROOT / "params.yaml")
AS_OF = "2024-11-15"


def post(url, body, content_type="application/json"):
    request = urllib.request.Request(url, data=body if isinstance(body, bytes) else json.dumps(body).encode(),
                                     headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_sim, small_result, params):
    """The session's small model, logged and registered in its own store, served on a free port."""
    from leadtemp import api
    from leadtemp.adapters.tracking import log_run

    home = tmp_path_factory.mktemp("serve")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.chdir(home)
    small_sim.leads.to_parquet(home / "leads.parquet")
    small_sim.interactions.to_parquet(home / "interactions.parquet")
    p = api.params_with(params, home / "leads.parquet", home / "interactions.parquet")
    trained = log_run(small_result, p, export_dir=home / "models")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "leadtemp", "serve", "--params", PARAMS, "--port", str(port)],
                              cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            assert server.poll() is None, server.stdout.read()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("leadtemp serve did not answer /ping within 120 s")
        yield home, p, trained, f"http://127.0.0.1:{port}/invocations", small_sim
    finally:
        server.terminate()
        server.wait(timeout=30)
        mp.undo()


@pytest.fixture()
def here(served, monkeypatch):
    """The served model's folder and store for this test (every test otherwise gets its own, see conftest)."""
    home = served[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.chdir(home)
    return served


def request(sim, lead_ids, scorer, statuses=True, as_of=AS_OF):
    from leadtemp.adapters.pyfunc import nest

    leads = sim.leads.set_index("lead_id").loc[lead_ids].reset_index()
    events = sim.interactions.loc[sim.interactions["lead_id"].isin(lead_ids)]
    frame = nest(leads, events, scorer, statuses=statuses)
    for column in ("created_at", "converted_at"):
        if column in frame.columns:
            frame[column] = frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").astype(object).where(frame[column].notna(), None)
    return {"dataframe_records": frame.astype(object).where(frame.notna(), None).to_dict(orient="records"),
            "params": {"as_of": as_of}}


@pytest.mark.slow
def test_the_server_answers_like_leadtemp_score_and_every_lead_gets_a_row(here):
    from leadtemp import api

    home, p, trained, url, sim = here
    scorer, version = api.load_model(p)
    some = sim.leads.sample(300, random_state=2)["lead_id"].tolist()
    status, answer = post(url, request(sim, some, scorer))
    assert status == 200, answer
    rows = pd.DataFrame(answer["predictions"])
    assert rows["lead_id"].tolist() == some  # one row per lead, in the request's order
    assert answer["model_version"] == version == trained.version == "1"
    assert answer["run_id"] == trained.run_id
    assert set(rows["model_version"]) == {"1"} and set(rows["run_id"]) == {trained.run_id}

    sim.leads.loc[sim.leads["lead_id"].isin(some)].to_parquet(home / "some.parquet")
    done = CliRunner().invoke(app, ["score", "--as-of", AS_OF, "--leads", "some.parquet", "--out", "cli.csv",
                                    "--params", PARAMS, "--interactions", str(home / "interactions.parquet")])
    assert done.exit_code == 0, done.output
    cli = pd.read_csv(home / "cli.csv", dtype={"model_version": str}).set_index("lead_id")
    scored = rows.loc[rows["status"] == "scored"].set_index("lead_id").loc[cli.index]
    assert len(scored) == len(cli) > 50
    pd.testing.assert_series_equal(scored["probability"].astype(float), cli["probability"], rtol=1e-12)
    for column in ("p_7d", "p_30d", "p_90d", "expected_days"):  # when, not only if: the same as `score` writes
        pd.testing.assert_series_equal(scored[column].astype(float), cli[column], rtol=1e-12)
    for column in ("score", "rank"):
        assert scored[column].astype(int).tolist() == cli[column].tolist(), column
    for column in ("bucket", "reason_1", "reason_2", "reason_3", "model_version"):
        assert scored[column].tolist() == cli[column].fillna("").astype(str).tolist(), column
    # The rest say why they were not scored, and carry no score.
    rest = rows.loc[rows["status"] != "scored"]
    assert set(rest["status"]) <= {"converted", "not_yet_created", "lost"} and len(rest) == 300 - len(cli)
    leads = sim.leads.set_index("lead_id")
    for row in rest.itertuples():
        lead = leads.loc[row.lead_id]
        assert pd.isna(row.probability) and pd.isna(row.bucket) and pd.isna(row.rank) and pd.isna(row.p_7d)
        expected = "not_yet_created" if lead["created_at"] >= pd.Timestamp(AS_OF) else "converted"
        assert row.status == expected


@pytest.mark.slow
def test_bad_rows_are_rejected_with_their_reason_and_unknowns_are_counted(here):
    from leadtemp import api

    _, p, _, url, sim = here
    scorer, _ = api.load_model(p)
    open_ids = scorer.eligible(sim.leads, sim.interactions, pd.Timestamp(AS_OF))[0]["lead_id"].head(3).tolist()
    body = request(sim, open_ids, scorer)
    good, other, third = body["dataframe_records"]
    other["interactions"] = [{"timestamp": "last tuesday", "type": "sms", "direction": "inbound"}]
    third["source"] = "a source never seen"
    third["interactions"] = third["interactions"] + [{"timestamp": "2024-11-01T10:00:00", "type": "fax",
                                                      "direction": "inbound"}]
    duplicate = dict(good)
    status, answer = post(url, {"dataframe_records": [good, other, third, duplicate], "params": {"as_of": AS_OF}})
    assert status == 200, answer
    statuses = [row["status"] for row in answer["predictions"]]
    assert statuses[0] == statuses[3] == "rejected: duplicate lead id (2 rows)"
    assert statuses[1] == "rejected: interaction row 1: column 'timestamp': is not a parsable timestamp"
    assert statuses[2] == "scored"
    warnings = " ".join(answer["warnings"])
    assert "1 of the 1 leads scored (100%) have interactions of types the model never saw" in warnings
    assert "'fax' inbound" in warnings and "a value of 'source' the model never saw" in warnings


def _bad_requests(record):
    def body(records, **params):
        return {"dataframe_records": records, "params": params or {"as_of": AS_OF}}

    no_events = {k: v for k, v in record.items() if k != "interactions"}
    empty = {"lead_id": "E", "created_at": record["created_at"], "interactions": []}
    return {
        "malformed JSON": (b'{"dataframe_records": [', "not JSON"),
        "unknown column": (body([{**record, "email": "someone@example.com"}]), "the model does not read: ['email']"),
        "no interactions column": (body([no_events]), "missing column(s) ['interactions']"),
        "a lead without interactions": (body([record, {**empty, "interactions": None}]), "row 2 (lead 'E')"),
        "missing as_of": (body([record], reasons=True), "params.as_of is missing"),
        "as_of not a date": (body([record], as_of="2024-13-45"), "is not a date"),
        "as_of out of range": (body([record], as_of="1900-01-01"), "outside 1970-01-01 .. 2100-01-01"),
        "too many leads": (body([{**empty, "lead_id": f"L{i}"} for i in range(10_001)]), "the limit is 10,000"),
        "unknown interaction field": (body([{**record, "interactions": [{"when": "2024-01-01"}]}]), "['when']"),
        "no leads": (body([]), "no leads"),
        "two formats": ({"dataframe_records": [], "dataframe_split": {}}, "exactly one of"),
    }


@pytest.mark.slow
def test_every_bad_request_is_a_4xx_with_one_line_and_no_traceback(here):
    from leadtemp import api

    _, p, _, url, sim = here
    scorer, _ = api.load_model(p)
    record = request(sim, sim.leads["lead_id"].head(1).tolist(), scorer, statuses=False)["dataframe_records"][0]
    for case, (body, says) in _bad_requests(record).items():
        status, answer = post(url, body)
        message = answer["message"]
        assert 400 <= status < 500, (case, status, message)
        assert says in message, (case, message)
        assert "\n" not in message and "Traceback" not in message and str(ROOT) not in message, (case, message)
    too_big = b'{"dataframe_records": [' + b" " * (65 * 2**20) + b"]}"
    status, answer = post(url, too_big)
    assert status == 413 and "the limit is 64 MiB" in answer["message"]
    status, answer = post(url, b"lead_id\nL1\n", content_type="text/csv")
    assert status == 415 and "send JSON" in answer["message"]


@pytest.mark.slow
def test_the_registered_model_tells_the_truth_about_its_input(here):
    """Required columns required, attributes optional, no outcome column; its example is strict JSON; loaded as a
    pyfunc it refuses a bad request with leadtemp's line as MLflow's own exception."""
    from mlflow.exceptions import MlflowException

    from leadtemp import api
    from leadtemp.adapters.pyfunc import nest

    home, p, _, _, sim = here
    model = mlflow.pyfunc.load_model("models:/leadtemp@champion")
    inputs = {c.name: c for c in model.metadata.get_input_schema().inputs}
    assert {n for n, c in inputs.items() if c.required} == {"lead_id", "created_at", "interactions"}
    assert "converted_at" not in inputs and not inputs["source"].required and not inputs["past_purchases"].required
    example = (home / "models" / "v1" / "serving_input_example.json").read_text()

    def refuse(constant):
        raise ValueError(f"bare {constant} in the example")
    json.loads(example, parse_constant=refuse)
    scorer, _ = api.load_model(p)
    leads = sim.leads.head(5)
    frame = nest(leads, sim.interactions.loc[sim.interactions["lead_id"].isin(leads["lead_id"])], scorer)
    with pytest.raises(MlflowException) as refused:
        model.predict(frame)
    assert refused.value.get_http_status_code() == 400 and refused.value.message.startswith("params.as_of is missing")
    answer = model.predict(frame, params={"as_of": AS_OF})
    assert answer["lead_id"].tolist() == leads["lead_id"].tolist() and set(answer["model_version"]) == {"1"}


def test_printed_commands_work_without_the_venv_activated(tmp_path, monkeypatch):
    """`leadtemp ui` in a folder without a store says so (exit 2); `python -m leadtemp` is the CLI."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    done = CliRunner().invoke(app, ["ui"])
    assert done.exit_code == 2 and "no MLflow store at sqlite:///mlflow.db" in done.output
    from leadtemp.cli import _self_command

    head = _self_command("ui").split()[0]
    assert os.path.isabs(head) and os.path.exists(head)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    helped = subprocess.run([sys.executable, "-m", "leadtemp", "serve", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert helped.returncode == 0 and "/invocations" in helped.stdout


def test_readme_serve_section_is_there_and_the_readme_stays_small():
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme) <= 8192, len(readme)
    text = readme.decode()
    assert "## Serve it" in text and "curl" in text and '"model_version"' in text


def test_flat_events_reads_field_by_field_and_keeps_a_mixed_field_for_validation():
    from leadtemp.adapters.pyfunc import flat_events

    frame = pd.DataFrame({"lead_id": ["A", "B", "C"], "interactions": [
        [{"timestamp": "2024-01-02", "type": "sms", "direction": "inbound", "value": 2},
         {"timestamp": 20240103, "type": "call", "direction": "outbound"}],
        [],
        [{"timestamp": "2024-01-04", "type": "email", "direction": "inbound", "value": 1.5}]]})
    events = flat_events(frame)
    assert events["lead_id"].tolist() == ["A", "A", "C"] and events["_row"].tolist() == [1, 2, 1]
    assert events["timestamp"].tolist() == ["2024-01-02", 20240103, "2024-01-04"]  # mixed: as given, for validation
    assert pd.api.types.is_string_dtype(events["type"]) and events["type"].tolist() == ["sms", "call", "email"]
    assert events["value"].dtype == float and events["value"].isna().tolist() == [False, True, False]
    assert list(flat_events(frame.assign(interactions=[[], [], []])).columns) == [
        "lead_id", "timestamp", "type", "direction", "_row"]
