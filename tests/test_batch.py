"""Batch scoring of a whole database: the same scores as in memory, from files, SQLite and a real PostgreSQL,
idempotent reruns, rejects, and resume after kill -9 with no lead lost or duplicated."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from conftest import ROOT
from leadtemp.adapters.sources import Source, Target
from leadtemp.adapters.staging import output_table
from leadtemp.api import score_sources
from leadtemp.core.errors import ConfigError, SchemaError
from services import postgres_server

AS_OF = pd.Timestamp("2024-10-01")


@pytest.fixture(scope="module")
def world(small_sim, small_result):
    """The small simulated CRM plus clones of 40 leads whose ids differ only in case ('a-…' and 'B-…').

    A clone has the same attributes and events as its original, so the same score: the ranks of the
    tied leads are decided by the lead id alone, byte-wise (an English collation would say a < B).
    """
    leads, events = small_sim.leads, small_sim.interactions
    some = leads[leads["created_at"] < AS_OF].head(40)
    clones, clone_events = [leads], [events]
    for prefix in ("a-", "B-", "É-"):
        clones.append(some.assign(lead_id=prefix + some["lead_id"]))
        mine = events[events["lead_id"].isin(some["lead_id"])]
        clone_events.append(mine.assign(lead_id=prefix + mine["lead_id"]))
    scorer = dataclasses.replace(small_result.scorer, meta={**small_result.scorer.meta, "model_version": "3",
                                                            "run_id": "0123abcd"})
    return pd.concat(clones, ignore_index=True), pd.concat(clone_events, ignore_index=True), scorer


@pytest.fixture(scope="module")
def expected(world):
    leads, events, scorer = world
    return scorer.score(leads, events, AS_OF)


def _same_scores(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.sort_values("rank").reset_index(drop=True)
    assert got["lead_id"].tolist() == want["lead_id"].tolist()
    assert got["rank"].tolist() == list(range(1, len(want) + 1))
    np.testing.assert_array_equal(got["probability"].to_numpy(dtype=float), want["probability"].to_numpy())
    for column in ("score", "bucket", "reason_1", "reason_2", "reason_3"):
        assert got[column].astype(str).tolist() == want[column].astype(str).tolist(), column
    for column in ("p_7d", "p_30d", "p_90d", "expected_days"):  # when, not only if: the same on every path
        np.testing.assert_allclose(got[column].to_numpy(dtype=float), want[column].to_numpy(), rtol=0, atol=1e-12)
    assert (got["model_version"].astype(str) == "3").all() and (got["run_id"] == "0123abcd").all()  # one model identity
    assert (pd.to_datetime(got["as_of"]) == AS_OF).all()


def _write_parts(frame: pd.DataFrame, folder: Path, parts: int, kind: str) -> Path:
    folder.mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        piece = frame.iloc[chunk]
        piece.to_csv(folder / f"part-{i}.csv", index=False) if kind == "csv" else piece.to_parquet(folder / f"part-{i}.parquet")
    (folder / "_SUCCESS").write_text("")  # written by Spark and Hadoop: ignored
    return folder


@pytest.mark.parametrize(("kind", "parts", "chunk"), [("parquet", 1, 100_000), ("csv", 3, 300), ("parquet", 4, 150)])
def test_streamed_file_scoring_equals_in_memory_scoring(world, expected, params, tmp_path, kind, parts, chunk):
    leads, events, scorer = world
    lead_src = _write_parts(leads, tmp_path / "leads", parts, kind)
    event_src = _write_parts(events, tmp_path / "events", parts + 1, kind)
    out = tmp_path / "out" / f"scores.{kind}"
    result = score_sources(scorer, params, AS_OF, Source.file(lead_src), Source.file(event_src), Target(path=out),
                            chunk_size=chunk, work_dir=tmp_path / "work", echo=lambda m: None)
    got = pd.read_csv(out, dtype={"lead_id": str}, keep_default_na=False) if kind == "csv" else pd.read_parquet(out)
    _same_scores(got, expected)
    assert result.partitions == -(-len(leads) // chunk)  # CSV rows hold no line breaks here: the line count is exact
    assert result.scored == len(expected) and result.scored + result.not_eligible == len(leads)
    assert result.rejected_leads == 0 and list((tmp_path / "work").iterdir()) == [], "the run's own folder is removed"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, f"scores.rejects.{kind}"])


def _load(url: str, leads: pd.DataFrame, events: pd.DataFrame, lead_table: str, event_table: str) -> None:
    engine = sa.create_engine(url)
    leads.to_sql(lead_table, engine, index=False, if_exists="replace")
    events.to_sql(event_table, engine, index=False, if_exists="replace", chunksize=20_000)
    engine.dispose()


# Names a user may really have, and one that would do harm if it were pasted into SQL.
LEADS_TABLE, EVENTS_TABLE, SCORES_TABLE = "CRM Leads", 'events"; DROP TABLE "CRM Leads"; --', "Lead Scores"


def _database_round_trip(url: str, world, expected, params, tmp_path) -> None:
    leads, events, scorer = world
    _load(url, leads, events, LEADS_TABLE, EVENTS_TABLE)
    args = (scorer, params, AS_OF, Source.database(url, LEADS_TABLE), Source.database(url, EVENTS_TABLE),
            Target(url=url, table=SCORES_TABLE))
    first = score_sources(*args, chunk_size=400, work_dir=tmp_path / "w1", echo=lambda m: None)
    again = score_sources(*args, chunk_size=700, work_dir=tmp_path / "w2", echo=lambda m: None)
    other = dataclasses.replace(scorer, meta={**scorer.meta, "model_version": "4"})
    score_sources(other, params, AS_OF, *args[3:], chunk_size=700, work_dir=tmp_path / "w3", echo=lambda m: None)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        table = sa.Table(SCORES_TABLE, sa.MetaData(), autoload_with=conn)
        rows = pd.read_sql(sa.select(table), conn)
        assert sa.inspect(conn).has_table(LEADS_TABLE), "the leads table survived its odd name"
        staging = [t for t in sa.inspect(conn).get_table_names() if t.startswith("leadtemp_stage")]
    engine.dispose()
    assert first.scored == again.scored == len(expected)
    assert rows.groupby("model_version").size().to_dict() == {"3": len(expected), "4": len(expected)}
    assert not rows.duplicated(["lead_id", "as_of", "model_version"]).any()
    _same_scores(rows[rows["model_version"] == "3"], expected)
    assert staging == [], "staging tables are dropped when a run finishes"


def test_sqlite_database_in_and_out_is_idempotent_and_exact(world, expected, params, tmp_path):
    _database_round_trip(f"sqlite:///{tmp_path / 'crm.db'}", world, expected, params, tmp_path)


def test_a_scores_table_from_before_run_id_gets_the_column_and_keeps_its_rows(world, params, tmp_path):
    leads, events, scorer = world
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    _load(url, leads.head(300), events[events["lead_id"].isin(leads["lead_id"].head(300))], LEADS_TABLE, EVENTS_TABLE)
    engine = sa.create_engine(url)
    old = sa.Table(SCORES_TABLE, sa.MetaData(), *(c._copy() for c in output_table(sa.MetaData(), "x").columns
                                                   if c.name != "run_id"))
    old.create(engine)
    with engine.begin() as conn:
        conn.execute(old.insert(), [{"lead_id": "old", "as_of": AS_OF.to_pydatetime(), "model_version": "1"}])
    score_sources(scorer, params, AS_OF, Source.database(url, LEADS_TABLE), Source.database(url, EVENTS_TABLE),
                  Target(url=url, table=SCORES_TABLE), work_dir=tmp_path / "w", echo=lambda m: None)
    with engine.connect() as conn:
        rows = pd.read_sql(sa.select(sa.Table(SCORES_TABLE, sa.MetaData(), autoload_with=conn)), conn)
    engine.dispose()
    assert rows.loc[rows["lead_id"] == "old", "run_id"].isna().all()          # kept, with no run known
    assert (rows.loc[rows["model_version"] == "3", "run_id"] == "0123abcd").all() and len(rows) > 1
    # The table was also from before p_<h>d and expected_days: they are added the same way, empty for the old rows.
    when = ["p_7d", "p_30d", "p_90d", "expected_days"]
    assert rows.loc[rows["lead_id"] == "old", when].isna().all().all()
    assert rows.loc[rows["model_version"] == "3", when].notna().all().all()
    # A table that is not such a scores table (another column missing too) is refused and left as it was.
    other = sa.Table("other_scores", sa.MetaData(), *(c._copy() for c in output_table(sa.MetaData(), "x").columns
                                                      if c.name not in ("run_id", "reason_3")))
    other.create(engine)
    with pytest.raises(ConfigError, match=r"table 'other_scores' exists without the columns \['run_id', 'p_7d', "
                                          r"'p_30d', 'p_90d', 'expected_days', 'reason_3'\]"):
        score_sources(scorer, params, AS_OF, Source.database(url, LEADS_TABLE), Source.database(url, EVENTS_TABLE),
                      Target(url=url, table="other_scores"), work_dir=tmp_path / "w2", echo=lambda m: None)
    assert "run_id" not in {c["name"] for c in sa.inspect(engine).get_columns("other_scores")}
    engine.dispose()


@pytest.mark.services
def test_postgresql_in_and_out_is_idempotent_and_ranks_bytewise_under_an_english_collation(world, expected, params,
                                                                                             tmp_path):
    with postgres_server() as url:
        _database_round_trip(url, world, expected, params, tmp_path)


def test_bad_rows_in_a_database_become_rejects_with_their_reason(world, expected, params, tmp_path):
    leads, events, scorer = world
    bad_time, bad_event, odd_number = leads.index[leads["lead_id"].isin(expected["lead_id"])][[0, 1, 2]]
    leads = leads.astype({"created_at": str, "converted_at": str})
    leads.loc[bad_time, "created_at"] = "yesterday-ish"
    leads.loc[odd_number, "past_purchases"] = -1  # odd but a number: scored
    events = events.copy()
    events.loc[events["lead_id"] == leads.loc[bad_event, "lead_id"], "direction"] = "sideways"
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    _load(url, leads, events, "leads", "events")
    result = score_sources(scorer, params, AS_OF, Source.database(url, "leads"), Source.database(url, "events"),
                            Target(url=url, table="scores"), chunk_size=500, work_dir=tmp_path / "w",
                            echo=lambda m: None)
    engine = sa.create_engine(url)
    rejects = pd.read_sql("SELECT * FROM scores_rejects", engine).set_index("lead_id")
    scored = set(pd.read_sql("SELECT lead_id FROM scores", engine)["lead_id"])
    engine.dispose()
    time_id, event_id = leads.loc[bad_time, "lead_id"], leads.loc[bad_event, "lead_id"]
    assert result.rejected_leads == 2 and set(rejects.index) == {time_id, event_id}
    assert rejects.loc[time_id, "reason"] == "column 'created_at': is not a parsable timestamp"
    assert rejects.loc[time_id, "row"] == bad_time + 1 and rejects.loc[time_id, "source"] == "leads"
    assert "column 'direction': is not one of" in rejects.loc[event_id, "reason"]
    assert leads.loc[odd_number, "lead_id"] in scored and not set(rejects.index) & scored
    assert len(scored) == len(expected) - 2


@pytest.mark.parametrize("target", ["file", "database"])
def test_a_run_that_rejects_every_lead_fails_and_leaves_the_earlier_output_as_it_was(world, params, tmp_path, target):
    """Interactions whose direction says IN/OUT reject every lead: an error, the rejects, and no empty output."""
    leads, events, scorer = world
    good = leads[leads["lead_id"].isin(events["lead_id"])]
    good.to_parquet(tmp_path / "leads.parquet")
    events.to_parquet(tmp_path / "good.parquet")
    events.assign(direction=events["direction"].map({"inbound": "IN", "outbound": "OUT"})).to_parquet(tmp_path / "bad.parquet")
    url = f"sqlite:///{tmp_path / 'out.db'}"
    out = (Target(path=tmp_path / "s.csv") if target == "file" else Target(url=url, table="scores"))

    def run(events_file):
        return score_sources(scorer, params, AS_OF, Source.file(tmp_path / "leads.parquet"),
                             Source.file(tmp_path / events_file), out, chunk_size=500, work_dir=tmp_path / "w",
                             echo=lambda m: None)

    def scores():
        if target == "file":
            return (tmp_path / "s.csv").read_bytes()
        return pd.read_sql("SELECT * FROM scores ORDER BY lead_id", sa.create_engine(url))

    earlier = run("good.parquet")
    before = scores()
    with pytest.raises(SchemaError) as refused:
        run("bad.parquet")
    message = str(refused.value)
    assert f"no lead scored: {len(good):,} of the {len(good):,} leads were rejected, {len(good):,} for " in message
    assert "\"interaction: column 'direction': is not one of ['inbound', 'outbound']\"" in message
    assert f"-> {out.rejects_name}" in message and "not written (an earlier one is left as it was)" in message
    after = scores()
    if target == "file":
        assert after == before
        rejects = pd.read_csv(tmp_path / "s.rejects.csv")
    else:
        pd.testing.assert_frame_equal(after, before)
        rejects = pd.read_sql("SELECT * FROM scores_rejects", sa.create_engine(url))
    assert earlier.scored > 0 and (rejects["source"] == "leads").sum() == len(good)
    assert list((tmp_path / "w").iterdir()) == [], "nothing left to resume"


def test_interactions_that_name_no_lead_are_refused_before_any_work_with_the_leading_zeros_hint(world, params, tmp_path):
    """Interaction ids stripped of their zeros ('645875' for '00645875') would score every lead as one with no
    activity: refused before anything is written, with an example of each side."""
    leads, events, scorer = world
    number = {lead: f"00{i + 645875}" for i, lead in enumerate(leads["lead_id"])}
    leads.assign(lead_id=leads["lead_id"].map(number)).to_csv(tmp_path / "leads.csv", index=False)
    events.assign(lead_id=events["lead_id"].map(number).str.lstrip("0")).to_csv(tmp_path / "events.csv", index=False)
    events.assign(lead_id="x" + events["lead_id"]).to_csv(tmp_path / "other.csv", index=False)
    out = tmp_path / "s.csv"
    for file, hint in (("events.csv", True), ("other.csv", False)):
        with pytest.raises(SchemaError) as refused:
            score_sources(scorer, params, AS_OF, Source.file(tmp_path / "leads.csv"), Source.file(tmp_path / file),
                          Target(path=out), chunk_size=700, work_dir=tmp_path / "w", echo=lambda m: None)
        message = str(refused.value)
        assert message.startswith(f"none of the {len(events):,} interactions names a lead of {tmp_path / 'leads.csv'} "
                                  "(e.g. interaction lead id "), message
        assert ("they match once leading zeros are dropped" in message) == hint, message
        if hint:
            got = re.search(r"interaction lead id '(\d+)' in .*; lead ids look like '(\d+)'", message)
            assert got and got[2] == "00" + got[1], message
        assert not out.exists() and not (tmp_path / "s.rejects.csv").exists()
        assert list((tmp_path / "w").iterdir()) == [], "nothing left to resume"


def test_progress_is_plain_log_lines_with_rate_and_eta_when_not_a_terminal(world, params, tmp_path):
    leads, events, scorer = world
    lines: list[str] = []
    leads.to_parquet(tmp_path / "leads.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    score_sources(scorer, params, AS_OF, Source.file(tmp_path / "leads.parquet"), Source.file(tmp_path / "events.parquet"),
                   Target(path=tmp_path / "s.csv"), chunk_size=500, work_dir=tmp_path / "w", reasons=False,
                   echo=lines.append, interactive=False)
    progress = [line for line in lines if line.startswith("scoring:")]
    assert progress and "leads/s" in progress[-1] and "ETA" in progress[-1] and f"{len(leads):,}/{len(leads):,}" in progress[-1]


# -- kill -9 ---------------------------------------------------------------------------------------

def _done_partitions(db: Path | None) -> int:
    if db is None:
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'leadtemp_stage_done_%'")]
            return conn.execute(f'SELECT count(*) FROM "{names[0]}"').fetchone()[0] if names else 0
    except sqlite3.Error:
        return 0


def _export(scorer, folder: Path) -> Path:
    """The scorer as an MLflow model folder, as `leadtemp train` exports it to models/."""
    import mlflow

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    mlflow.pyfunc.save_model(str(folder / "model"), **pyfunc_arguments(scorer, scorer.save(folder / "scorer"), None))
    return folder / "model"


@pytest.mark.parametrize("target", ["table", "file"])
def test_kill_9_mid_run_then_rerun_resumes_with_every_lead_exactly_once(world, expected, tmp_path, target):
    """SIGKILL the CLI after some partitions are committed; the same command again finishes the job."""
    leads, events, scorer = world
    db = tmp_path / "crm.db"
    _load(f"sqlite:///{db}", leads, events, "leads", "events")
    out = ["--write-table", "scores"] if target == "table" else ["--out", str(tmp_path / "scores.parquet")]
    command = [sys.executable, "-m", "leadtemp.cli", "score", "--as-of", str(AS_OF.date()),
               "--model", str(_export(scorer, tmp_path)), "--db", f"sqlite:///{db}", "--leads-table", "leads",
               "--interactions-table", "events", "--chunk-size", "100", "--work-dir", str(tmp_path / "work"),
               "--params", str(ROOT / "params.yaml"), *out]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    def staging_db() -> Path | None:  # for a file output: in the run's own folder, named after its key
        if target == "table":
            return db
        try:  # the CLI's write probe creates --work-dir and removes it again: it may vanish under glob
            return next((tmp_path / "work").glob("leadtemp-score-*/staging.sqlite"), None)
        except FileNotFoundError:
            return None

    victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while _done_partitions(staging_db()) < 3:
        assert victim.poll() is None, victim.stdout.read().decode()
        assert time.monotonic() < deadline, "no partition was scored in 300 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_at_kill = _done_partitions(staging_db())
    n = -(-len(leads) // 100)
    assert 3 <= done_at_kill < n, "killed in the middle of scoring"
    assert not (tmp_path / "scores.parquet").exists(), "no half-written output file"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming: {done_at_kill} of {n} partitions already scored" in rerun.stderr
    if target == "table":
        engine = sa.create_engine(f"sqlite:///{db}")
        got = pd.read_sql("SELECT * FROM scores", engine)
        engine.dispose()
    else:
        got = pd.read_parquet(tmp_path / "scores.parquet")
    assert got["lead_id"].is_unique and len(got) == len(expected)
    _same_scores(got, expected)
    assert list((tmp_path / "work").iterdir()) == [], "the run's own folder is removed, --work-dir stays"


# -- Spark (local mode) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    import shutil

    if shutil.which("java") is None:
        if os.environ.get("CI"):
            pytest.fail("java not found: CI must run the Spark tests (.ci/run installs a JRE)")
        pytest.skip("java not found (Spark needs it)")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (SparkSession.builder.master("local[2]").appName("leadtemp tests")
               .config("spark.ui.enabled", "false").config("spark.sql.warehouse.dir", str(warehouse))
               .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={warehouse}").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.services
def test_spark_engine_gives_the_local_engines_rows_from_files_and_into_catalog_tables(world, expected, params,
                                                                                     tmp_path, spark):
    from leadtemp.adapters.spark import score_spark

    leads, events, scorer = world
    leads_dir = _write_parts(leads, tmp_path / "leads", 3, "parquet")
    events_dir = _write_parts(events, tmp_path / "events", 2, "parquet")
    leads_dir.joinpath("_SUCCESS").unlink()
    out = tmp_path / "spark_scores.parquet"
    result = score_spark(scorer, params, AS_OF, Source.file(leads_dir), Source.file(events_dir),
                         Target(path=out, location=str(out)), partitions=4, spark=spark, echo=lambda m: None)
    assert result.scored == len(expected) and result.scored + result.not_eligible == len(leads)
    _same_scores(pd.read_parquet(out), expected)

    # Catalog tables in and out; a rerun replaces this run's partition: one row per lead.
    spark.read.parquet(str(leads_dir)).write.saveAsTable("crm_leads")
    spark.read.parquet(str(events_dir)).write.saveAsTable("crm_events")
    for _ in range(2):
        score_spark(scorer, params, AS_OF, Source(table="crm_leads"), Source(table="crm_events"),
                    Target(table="lead_scores"), partitions=3, spark=spark, echo=lambda m: None)
    table = spark.table("lead_scores").toPandas()
    assert len(table) == len(expected) and table["lead_id"].is_unique
    _same_scores(table, expected)

    # --since: the same trend and what changed as the local engine's (workflows/changes.py).
    from leadtemp.workflows.changes import scores_with_changes

    since = AS_OF - pd.Timedelta(days=14)
    moved = tmp_path / "spark_moved.parquet"
    score_spark(scorer, params, AS_OF, Source.file(leads_dir), Source.file(events_dir),
                Target(path=moved, location=str(moved)), partitions=3, spark=spark, echo=lambda m: None, since=since)
    got = pd.read_parquet(moved).set_index("lead_id")
    local = scores_with_changes(scorer, leads, events, since, AS_OF, params.buckets.steady_within).set_index("lead_id")
    assert len(got) == len(local) and (local["trend"] != "new").sum() > 100
    for column in ("previous_bucket", "trend", "what_changed"):
        assert (got.loc[local.index, column].fillna("").to_numpy() == local[column].to_numpy()).all(), column
    np.testing.assert_allclose(got.loc[local.index, "previous_probability"], local["previous_probability"], atol=1e-12)


# -- the bulk paths write what SQLAlchemy's insert wrote ---------------------------------------------------

def _awkward_rows() -> pd.DataFrame:
    """Values a CSV or a tuple could get wrong: empty text against NULL, quotes, commas, new lines, accents,
    floats that need 17 digits, microseconds and a missing time."""
    return pd.DataFrame({
        "lead_id": ["a,\"b\"", "", "é-1\nx", "z"],
        "as_of": [AS_OF.to_pydatetime()] * 4,
        "model_version": ["3"] * 4,
        "run_id": [None, "r", "", "r"],
        "probability": [0.30000000000000004, 1e-300, np.nan, 1.0],
        "score": [30, 0, 5, 100],
        "bucket": ["warm", "cold", "cold", "hot"],
        "margin": [-0.1, 5e-324, 2.5, -1e300],
        "part": [0, 1, 2, 3],
        "reason_1": ["say \"hi\", twice", None, "", "x"],
        "reason_2": [None] * 4,
        "reason_3": ["", "", "", ""],
        "lost_since": pd.to_datetime(["2024-01-02 03:04:05.123456", None, "2023-12-31 00:00:00", None], format="ISO8601"),
    })


def _bulk_equals_insert(url: str) -> None:
    from leadtemp.adapters.staging import bulk_insert

    engine = sa.create_engine(url)
    frame = _awkward_rows()
    metadata = sa.MetaData()
    bulk, plain = (output_table(metadata, name, margin=True) for name in ("bulk_rows", "plain_rows"))
    metadata.create_all(engine)
    with engine.begin() as conn:
        bulk_insert(conn, bulk, frame[[c.name for c in bulk.columns]])
        conn.execute(plain.insert(), frame.astype(object).where(frame.notna(), None).to_dict("records"))
    with engine.begin() as conn:  # the bulk path is in the caller's transaction: a rollback leaves nothing
        bulk_insert(conn, bulk, frame[[c.name for c in bulk.columns]])
        conn.rollback()
    with engine.connect() as conn:
        got, want = ([tuple(r) for r in conn.execute(sa.select(t).order_by(t.c.part)).all()] for t in (bulk, plain))
        raw = [conn.execute(sa.text(f"SELECT CAST(lost_since AS TEXT) FROM {t.name} ORDER BY part")).scalars().all()
               for t in (bulk, plain)]
    engine.dispose()
    assert len(got) == 4 and got == want
    assert raw[0] == raw[1]  # the very text SQLite keeps, so SQL comparisons on it agree too


def test_bulk_insert_writes_the_rows_sqlalchemy_wrote_into_sqlite(tmp_path):
    _bulk_equals_insert(f"sqlite:///{tmp_path / 'out.db'}")


@pytest.mark.services
def test_bulk_insert_copy_writes_the_rows_sqlalchemy_wrote_into_postgresql():
    with postgres_server() as url:
        _bulk_equals_insert(url)
