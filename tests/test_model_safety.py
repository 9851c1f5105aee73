"""Model safety: damaged model files are refused before LightGBM reads them, identifier-like columns never
become features, a resume reuses only what is unchanged, and scoring warns about what the model never saw."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from leadtemp.core.errors import ConfigError
from leadtemp.modelling.scorer import LeadScorer

AS_OF = pd.Timestamp("2024-10-01")


@pytest.fixture(scope="module")
def scorer(small_result):
    return dataclasses.replace(small_result.scorer, meta={**small_result.scorer.meta, "model_version": "3"})


@pytest.fixture(scope="module")
def exported(scorer, tmp_path_factory) -> Path:
    """The scorer as an MLflow model folder, as `leadtemp train` exports it to models/vN."""
    import mlflow

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    folder = tmp_path_factory.mktemp("export")
    mlflow.pyfunc.save_model(str(folder / "model"), **pyfunc_arguments(scorer, scorer.save(folder / "scorer"), None))
    return folder / "model"


def _copy(model: Path, where: Path) -> Path:
    shutil.copytree(model, where)
    return where


# -- damaged model files ---------------------------------------------------------------------------

def test_a_saved_scorer_records_its_boosters_hash_and_loads_the_same(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    recorded = json.loads((folder / "scorer.json").read_text())["booster"]
    assert recorded["bytes"] == (folder / "booster.txt").stat().st_size and len(recorded["sha256"]) == 64
    again = LeadScorer.load(folder)
    assert again.booster.model_to_string() == scorer.booster.model_to_string()
    assert again.fingerprint() == scorer.fingerprint()


def test_a_truncated_booster_is_a_config_error_naming_the_file(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    booster = folder / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"scorer/booster.txt: damaged \(sha256 differs from scorer.json.*re-export"):
        LeadScorer.load(folder)


def test_a_booster_changed_in_place_is_refused(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    booster = folder / "booster.txt"
    text = booster.read_text()
    at = text.index("leaf_value=") + len("leaf_value=")
    booster.write_text(text[:at] + ("7" if text[at] != "7" else "8") + text[at + 1:])  # same size, one digit
    with pytest.raises(ConfigError, match=r"booster.txt: damaged \(sha256 differs from scorer.json\)"):
        LeadScorer.load(folder)


def test_a_scorer_json_that_is_not_json_or_missing_is_a_config_error(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    (folder / "scorer.json").write_text('{"format_version": 1, "spec": {')
    with pytest.raises(ConfigError, match=r"scorer/scorer.json: damaged \(not JSON\); re-export the model"):
        LeadScorer.load(folder)
    (folder / "scorer.json").unlink()
    with pytest.raises(ConfigError, match=r"scorer/scorer.json: missing"):
        LeadScorer.load(folder)


def test_a_folder_saved_before_hashes_were_recorded_still_loads_and_a_cut_one_is_refused(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    raw = json.loads((folder / "scorer.json").read_text())
    del raw["booster"]
    (folder / "scorer.json").write_text(json.dumps(raw))
    assert LeadScorer.load(folder).booster.model_to_string() == scorer.booster.model_to_string()
    booster = folder / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"booster.txt: damaged \(incomplete LightGBM model\)"):
        LeadScorer.load(folder)


@pytest.mark.parametrize(("damage", "message"), [
    ("MLmodel missing", r"model/MLmodel: missing, so .* is not an exported model"),
    ("MLmodel not YAML", r"model/MLmodel: damaged \(not YAML\)"),
    ("MLmodel empty", r"model/MLmodel: damaged \(no python_function model in it\)"),
    ("pickle cut", r"model/python_model.pkl: damaged \(pickle data was truncated\)"),
    ("pickle missing", r"model/python_model.pkl: missing"),
    ("scorer missing", r"model/artifacts/scorer/scorer.json: missing"),
    ("no folder", r"model: no such model folder"),
])
def test_load_scorer_turns_mlflows_failures_into_one_line_config_errors(exported, tmp_path, damage, message):
    from leadtemp.adapters.pyfunc import load_scorer

    model = _copy(exported, tmp_path / "model")
    if damage == "MLmodel missing":
        (model / "MLmodel").unlink()
    elif damage == "MLmodel not YAML":
        (model / "MLmodel").write_text("flavors: [\n  : oops")
    elif damage == "MLmodel empty":
        (model / "MLmodel").write_text("")
    elif damage == "pickle cut":
        (model / "python_model.pkl").write_bytes((model / "python_model.pkl").read_bytes()[:40])
    elif damage == "pickle missing":
        (model / "python_model.pkl").unlink()
    elif damage == "scorer missing":
        shutil.rmtree(model / "artifacts")
    else:
        shutil.rmtree(model)
    with pytest.raises(ConfigError, match=message) as caught:
        load_scorer(str(model))
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_cli_score_with_a_truncated_booster_exits_2_naming_the_file_without_crashing(exported, small_sim, tmp_path):
    """LightGBM aborts the process on this file: the check must come first (run in a subprocess)."""
    model = _copy(exported, tmp_path / "latest")
    booster = model / "artifacts" / "scorer" / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    command = [sys.executable, "-m", "leadtemp.cli", "score", "--as-of", str(AS_OF.date()), "--model", "latest",
               "--leads", "leads.parquet", "--interactions", "events.parquet", "--out", "scores.csv",
               "--params", str(ROOT / "params.yaml")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "latest/artifacts/scorer/booster.txt: damaged (sha256 differs from scorer.json" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "scores.csv").exists()


# -- identifiers and personal data are never features ----------------------------------------------

def _as_categorical(params, *columns):
    return params.replace(data={"categorical": (*params.data.categorical, *columns),
                                "excluded": tuple(c for c in params.data.excluded if c not in columns)})


def _label_table(leads: pd.DataFrame, params):
    """The same leads as a table with a final label (shape b): the other training path."""
    from leadtemp.core.config import LeadColumns

    table = leads.assign(label=leads["converted_at"].notna().astype(int)).drop(columns=["converted_at"])
    return table, params.replace(data={"interactions": None, "columns": LeadColumns(converted_at=None, label="y")})


def test_an_email_column_under_categorical_stops_train_for_both_data_shapes(small_sim, params):
    from leadtemp.core.errors import TrainingDataError
    from leadtemp.core.schema import empty_interactions
    from leadtemp.workflows.train import train

    leads = small_sim.leads.assign(email=[f"name{i}@example.com" for i in range(len(small_sim.leads))])
    mislabelled = _as_categorical(params, "email")
    refused = (r"column 'email' under data.categorical looks like an identifier or personal data "
               r"\(100% unique, values like emails\); move it to data.excluded")
    with pytest.raises(TrainingDataError, match=refused):
        train(leads, small_sim.interactions, mislabelled)
    table, labelled = _label_table(leads, mislabelled)
    with pytest.raises(TrainingDataError, match=refused):
        train(table, empty_interactions(), labelled)


def test_a_phone_column_is_refused_by_its_shape_even_when_numbers_repeat(small_sim, params):
    from leadtemp.core.errors import TrainingDataError
    from leadtemp.workflows.train import train

    n = len(small_sim.leads)
    phones = [f"+44 20 7946 {i % 300:04d}" for i in range(n)]  # 300 numbers shared by 2,000 leads: 15% unique
    leads = small_sim.leads.assign(phone=phones, contact=[f"(555) 010-{i:04d}" for i in range(n)])
    with pytest.raises(TrainingDataError, match=r"column 'phone' under data.categorical .* \(\d+% unique, values like "
                                                 r"phone numbers\)"):
        train(leads, small_sim.interactions, _as_categorical(params, "phone"))
    with pytest.raises(TrainingDataError, match=r"columns 'phone' \(.*\), 'contact' \(100% unique, values like phone "
                                                 r"numbers\) under data.categorical look like identifiers"):
        train(leads, small_sim.interactions, _as_categorical(params, "phone", "contact"))


def test_ordinary_categoricals_pass_the_identifier_check():
    from leadtemp.core.checks import check_identifiers
    from leadtemp.core.errors import TrainingDataError

    n = 3000
    rows = pd.DataFrame({
        "region": ["north", "south", "east", "west", None][:5] * (n // 5),
        "product_code": ["10023456", "10023457", "20030001"] * (n // 3),  # 8-digit codes, a few of them
        "size_band": ["1-9", "10-49", "50-249", "250-999", "1000+"] * (n // 5),
        "amount_text": [f"{i % 40}.5" for i in range(n)],
    })
    check_identifiers(rows, rows.columns)
    check_identifiers(pd.DataFrame({"code": [f"c{i}" for i in range(60)]}), ["code"])  # tiny table: not judged
    with pytest.raises(TrainingDataError, match=r"column 'code' .* \(100% unique\)"):
        check_identifiers(pd.DataFrame({"code": [f"c{i}" for i in range(200)]}), ["code"])


def test_a_phone_number_declared_numeric_is_refused_but_amounts_and_counts_pass():
    """A phone read as a number (48792992973) would be split on and worded in reasons: refused like a categorical
    phone; a unique-per-lead amount, a count or a year is an ordinary number."""
    from leadtemp.core.checks import check_identifiers
    from leadtemp.core.errors import TrainingDataError

    rng = np.random.default_rng(0)
    n = 1000
    rows = pd.DataFrame({"phone": rng.integers(48_500_000_000, 48_899_999_999, n).astype(float),
                         "revenue": rng.lognormal(12, 2, n), "visits": rng.poisson(3, n),
                         "founded": rng.integers(1950, 2024, n), "orders": rng.integers(0, 10**6, n)})
    check_identifiers(rows, [], ["revenue", "visits", "founded", "orders"])
    with pytest.raises(TrainingDataError, match=r"column 'phone' under data.numeric .*phone numbers.*data.excluded"):
        check_identifiers(rows, [], list(rows.columns))


# -- a resume reuses only what is unchanged ---------------------------------------------------------

class _Killed(Exception):
    pass


def _killed_at_second_partition(monkeypatch) -> None:
    """The run dies after partitioning, with one partition staged."""
    import leadtemp.workflows.score as workflow

    real, calls = workflow.score_partition, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow, "score_partition", dies)


def _table(url: str, name: str) -> pd.DataFrame:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        return pd.read_sql(sa.select(sa.Table(name, sa.MetaData(), autoload_with=engine)), engine)
    finally:
        engine.dispose()


def _sql(url: str, *statements: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.mark.slow
def test_a_resume_after_the_source_table_changed_gives_exactly_the_rows_of_a_fresh_run(scorer, small_sim, params,
                                                                                       tmp_path, monkeypatch):
    import sqlalchemy as sa

    from leadtemp.adapters.sources import Source, Target
    from leadtemp.api import score_sources

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    small_sim.leads.to_sql("leads", engine, index=False)
    small_sim.interactions.to_sql("events", engine, index=False)
    engine.dispose()
    sources = (Source.database(url, "leads"), Source.database(url, "events"))
    with monkeypatch.context() as m:
        _killed_at_second_partition(m)
        with pytest.raises(_Killed):
            score_sources(scorer, params, AS_OF, *sources, Target(url=url, table="scores"), chunk_size=700,
                          work_dir=tmp_path / "work", reasons=False, echo=lambda m: None)
    before = scorer.score(small_sim.leads, small_sim.interactions, AS_OF)
    # The changed lead's probability lies strictly inside the calibrator's range, where it is strictly increasing
    # (beyond its first and last steps it is flat, so a change of attributes could leave the probability as it was).
    inside = before.loc[before["probability"].gt(before["probability"].min())
                        & before["probability"].lt(before["probability"].max()), "lead_id"]
    gone, changed = before["lead_id"].iloc[0], inside.iloc[len(inside) // 2]
    _sql(url, f"DELETE FROM leads WHERE lead_id = '{gone}'",
         f"UPDATE leads SET potential = 'low', need = 'no' WHERE lead_id = '{changed}'")
    lines: list[str] = []
    resumed = score_sources(scorer, params, AS_OF, *sources, Target(url=url, table="scores"), chunk_size=700,
                            work_dir=tmp_path / "work", reasons=False, echo=lines.append)
    assert "inputs changed since the unfinished run (leads): starting afresh" in lines
    assert resumed.resumed_partitions == 0
    score_sources(scorer, params, AS_OF, *sources, Target(url=url, table="fresh"), chunk_size=700,
                  work_dir=tmp_path / "fresh", reasons=False, echo=lambda m: None)
    got, fresh = (_table(url, t).sort_values("lead_id", ignore_index=True) for t in ("scores", "fresh"))
    pd.testing.assert_frame_equal(got, fresh)
    for name in ("scores_rejects", "fresh_rejects"):  # the deleted lead's interactions: rejected as unknown
        assert set(_table(url, name)["lead_id"]) == {gone}
    assert gone not in set(got["lead_id"]) and len(got) == len(before) - 1
    was = before.set_index("lead_id").loc[changed, "probability"]
    assert got.set_index("lead_id").loc[changed, "probability"] != was, "the changed attributes were read"


@pytest.mark.slow
def test_a_resume_with_another_model_of_the_same_version_starts_afresh(scorer, small_sim, params, tmp_path,
                                                                       monkeypatch):
    from leadtemp.adapters.sources import Source, Target
    from leadtemp.api import score_sources
    from leadtemp.workflows.train import train

    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    sources = (Source.file(tmp_path / "leads.parquet"), Source.file(tmp_path / "events.parquet"))
    out = Target(path=tmp_path / "scores.parquet")
    with monkeypatch.context() as m:
        _killed_at_second_partition(m)
        with pytest.raises(_Killed):
            score_sources(scorer, params, AS_OF, *sources, out, chunk_size=500, work_dir=tmp_path / "work",
                          echo=lambda m: None)
    fewer = params.replace(data={"categorical": tuple(c for c in params.data.categorical if c != "country")})
    other = train(small_sim.leads, small_sim.interactions, fewer).scorer
    other = dataclasses.replace(other, meta={**other.meta, "model_version": "3"})  # same number, another model
    lines: list[str] = []
    score_sources(other, fewer, AS_OF, *sources, out, chunk_size=500, work_dir=tmp_path / "work", echo=lines.append)
    assert "inputs changed since the unfinished run (model): starting afresh" in lines
    got = pd.read_parquet(tmp_path / "scores.parquet")
    want = other.score(small_sim.leads, small_sim.interactions, AS_OF)
    assert got["lead_id"].tolist() == want["lead_id"].tolist()
    assert got["probability"].tolist() == want["probability"].tolist()


def test_a_tables_fingerprint_changes_with_any_row_and_not_with_their_order(tmp_path):
    from leadtemp.adapters.sources import Source

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    _sql(url, "CREATE TABLE leads (lead_id TEXT, source TEXT, visits REAL)",
         "INSERT INTO leads VALUES ('a', 'web', 1.5), ('b', 'ads', NULL), ('c', 'web', 3)")
    source = Source.database(url, "leads")
    first = source.fingerprint()
    assert first["rows"] == 3 and source.fingerprint() == first
    _sql(url, "CREATE TABLE shuffled AS SELECT * FROM leads ORDER BY lead_id DESC",
         "DROP TABLE leads", "ALTER TABLE shuffled RENAME TO leads")
    assert source.fingerprint() == first, "the same rows in another order"
    _sql(url, "UPDATE leads SET source = CASE source WHEN 'web' THEN 'ads' ELSE 'web' END WHERE lead_id IN ('a', 'b')")
    swapped = source.fingerprint()
    assert swapped["rows"] == 3 and swapped != first, "two values swapped between rows"
    assert Source.database(url, "leads").identity() == source.identity()


@pytest.mark.services
def test_a_postgresql_tables_checksum_is_computed_by_the_server_and_sees_changes():
    from leadtemp.adapters.sources import Source
    from services import postgres_server

    with postgres_server() as url:
        _sql(url, 'CREATE TABLE "CRM Leads" (lead_id TEXT, source TEXT, visits REAL, created_at TIMESTAMP)',
             """INSERT INTO "CRM Leads" VALUES ('a', 'web', 1.5, '2024-01-01'), ('b', NULL, NULL, NULL)""")
        source = Source.database(url, "CRM Leads")
        first = source.fingerprint()
        assert first["rows"] == 2 and first["checksum"].startswith("postgresql:") and source.fingerprint() == first
        _sql(url, """UPDATE "CRM Leads" SET source = 'ads' WHERE lead_id = 'a'""")
        assert source.fingerprint() != first


# -- scoring warns about what the model never saw ---------------------------------------------------

def _score_files(scorer, params, leads, events, tmp_path, as_of=AS_OF):
    from leadtemp.adapters.sources import Source, Target
    from leadtemp.api import score_sources

    tmp_path.mkdir()
    leads.to_parquet(tmp_path / "leads.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    return score_sources(scorer, params, as_of, Source.file(tmp_path / "leads.parquet"),
                         Source.file(tmp_path / "events.parquet"), Target(path=tmp_path / "scores.parquet"),
                         chunk_size=700, work_dir=tmp_path / "work", reasons=False, echo=lambda m: None)


def test_scoring_warns_once_with_counts_about_unseen_types_categories_and_empty_columns(scorer, small_sim, params,
                                                                                         tmp_path):
    leads, events = small_sim.leads, small_sim.interactions
    assert _score_files(scorer, params, leads, events, tmp_path / "as-trained").warnings == []

    eligible = scorer.features(leads, events, AS_OF)["lead_id"]
    half = eligible.iloc[::2]
    new = pd.DataFrame({"lead_id": half, "timestamp": AS_OF - pd.Timedelta(days=3), "type": "tiktok_dm",
                        "direction": "inbound", "value": float("nan")})
    leads = leads.assign(source=leads["source"].where(~leads["lead_id"].isin(eligible.iloc[:len(eligible) // 3]),
                                                       "metaverse"),
                         past_purchases=float("nan"))
    result = _score_files(scorer, params, leads, pd.concat([events, new], ignore_index=True), tmp_path / "new")
    n = result.scored
    assert n == len(eligible)
    assert result.warnings == [
        f"{len(half):,} of the {n:,} leads scored (50%) have interactions of types the model never saw in training "
        "('tiktok_dm' inbound): they count only in the inbound/outbound totals",
        f"{len(eligible) // 3:,} of the {n:,} leads scored (33%) have a value of 'source' the model never saw in "
        "training: it reads as missing",
        f"'past_purchases' is empty for {n:,} of the {n:,} leads scored (100%) "
        f"({scorer.meta['missing_share']['past_purchases']:.0%} in training): check that the column is still filled",
    ]
    assert not any("metaverse" in w for w in result.warnings), "a value of a lead is never quoted"


def test_scoring_warns_about_a_date_outside_the_training_period(scorer):
    from leadtemp.modelling.unseen import period_warning

    until = pd.Timestamp(scorer.meta["observed_until"])
    first = pd.Timestamp(scorer.meta["splits"]["train"][:10])
    assert period_warning(scorer, AS_OF) is None
    assert period_warning(scorer, until + pd.Timedelta(days=scorer.horizon_days)) is None
    late = period_warning(scorer, until + pd.Timedelta(days=400))
    assert late.startswith(f"as of {until + pd.Timedelta(days=400):%Y-%m-%d} lies 400 days after the end of the "
                           f"model's training data ({until:%Y-%m-%d}), more than one horizon (90 days)")
    early = period_warning(scorer, first - pd.Timedelta(days=1))
    assert early.startswith(f"as of {first - pd.Timedelta(days=1):%Y-%m-%d} lies before the model's training period")


def test_cli_score_prints_the_warnings_on_stderr(exported, scorer, small_sim, tmp_path):
    from typer.testing import CliRunner

    from leadtemp.cli import app

    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    as_of = pd.Timestamp(scorer.meta["observed_until"]).normalize() + pd.Timedelta(days=365)
    result = CliRunner().invoke(app, ["score", "--as-of", str(as_of.date()), "--model", str(exported), "--no-reasons",
                                      "--leads", "leads.parquet", "--interactions", "events.parquet",
                                      "--out", "scores.csv", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: as of")]
    assert len(warned) == 1 and "days after the end of the model's training data" in warned[0]
    assert "warning" not in result.stdout
