"""What leadtemp never does to a user's data: remove what it did not create, write over an input, leave a
file with odd permissions, run twice at once, or end an I/O failure in a traceback."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.cli import app

AS_OF = "2024-10-01"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["score", "--as-of", AS_OF, *args, "--params", str(ROOT / "params.yaml")],
                         env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def model(small_result, tmp_path_factory) -> str:
    """The small trained scorer as an exported MLflow folder, as `leadtemp train` writes models/champion."""
    import mlflow

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    folder = tmp_path_factory.mktemp("model")
    scorer = small_result.scorer
    mlflow.pyfunc.save_model(str(folder / "model"), **pyfunc_arguments(scorer, scorer.save(folder / "scorer"), None))
    return str(folder / "model")


@pytest.fixture()
def crm(small_sim, tmp_path) -> dict[str, Path]:
    """The small CRM as files in the test's folder (also the working directory)."""
    leads, events = tmp_path / "leads.csv", tmp_path / "events.parquet"
    small_sim.leads.to_csv(leads, index=False)
    small_sim.interactions.to_parquet(events)
    folder = tmp_path / "exports"
    folder.mkdir()
    small_sim.leads.to_parquet(folder / "part-0.parquet")
    return {"leads": leads, "events": events, "folder": folder}


def digest(*paths: Path) -> dict[str, str]:
    """Every file under ``paths`` with its content hash: equal before and after means untouched."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def one_error_line(result, alone: bool = True) -> str:
    """Exit 2 with one line 'error: ...' last and no traceback; ``alone``: nothing else printed (no work done)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert not alone or len(lines) == 1, result.output
    return errors[0]


@pytest.fixture()
def no_work(monkeypatch):
    """Fail the test if the command gets as far as loading the model (the first piece of work)."""
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded: the check did not come first")
    monkeypatch.setattr("leadtemp.api.load_model", refuse)


def files_of(crm) -> list[str]:
    return ["--leads", str(crm["leads"]), "--interactions", str(crm["events"])]


# -- deletes only what it created ---------------------------------------------------------------------

@pytest.mark.parametrize("where", ["a folder of the user's", "the working directory"])
def test_work_dir_keeps_everything_of_the_users_and_only_its_own_folder_goes(model, crm, tmp_path, where):
    work = tmp_path / "work" if where == "a folder of the user's" else Path(".")
    work.mkdir(exist_ok=True)
    (work / "notes.txt").write_text("mine, not leadtemp's")
    (tmp_path / "mlflow.db").write_bytes(b"a store")
    before = digest(tmp_path)
    result = run("--out", "scores.csv", "--work-dir", str(work), "--model", model, "--no-reasons", *files_of(crm))
    assert result.exit_code == 0, result.output
    after = digest(tmp_path)
    assert {k: after.get(k) for k in before} == before, "every file of the user's is there, unchanged"
    assert set(after) - set(before) == {str(tmp_path / "scores.csv"), str(tmp_path / "scores.rejects.csv")}
    assert not list(work.glob("leadtemp-score-*")) and not list(work.glob(".leadtemp-score-*"))
    assert len(pd.read_csv(tmp_path / "scores.csv")) > 100


def test_a_failed_run_keeps_its_marked_folder_and_the_same_command_resumes_from_it(model, crm, tmp_path, monkeypatch):
    import leadtemp.workflows.score as workflow

    real, calls = workflow.score_partition, []

    def crash_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if stopped by the user
        return real(*args, **kwargs)

    work = tmp_path / "work"
    args = ("--out", "scores.csv", "--work-dir", str(work), "--chunk-size", "500", "--model", model, "--no-reasons",
            *files_of(crm))
    monkeypatch.setattr(workflow, "score_partition", crash_on_the_third)
    assert run(*args).exit_code != 0
    [folder] = work.glob("leadtemp-score-*")
    assert (folder / ".leadtemp-work").read_text().strip() == folder.name.removeprefix("leadtemp-score-")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700, "the partitions hold the leads' data: the owner's only"
    assert not (tmp_path / "scores.csv").exists()
    monkeypatch.setattr(workflow, "score_partition", real)
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert "resuming: 2 of 4 partitions already scored" in again.output
    assert not folder.exists() and work.is_dir()


def test_a_folder_of_the_same_name_without_leadtemps_marker_is_neither_used_nor_removed(model, crm, tmp_path,
                                                                                        monkeypatch):
    from leadtemp.adapters import staging

    work = tmp_path / "work"
    real = staging.RunFolder.open

    def squatted(base, name, key):
        (Path(base) / name).mkdir(parents=True)
        (Path(base) / name / "keep.txt").write_text("a user's")
        return real(base, name, key)

    monkeypatch.setattr(staging.RunFolder, "open", squatted)
    result = run("--out", "scores.csv", "--work-dir", str(work), "--model", model, *files_of(crm))
    assert "is not a working folder leadtemp made" in one_error_line(result, alone=False)
    [folder] = work.glob("leadtemp-score-*")
    assert (folder / "keep.txt").read_text() == "a user's" and sorted(os.listdir(folder)) == ["keep.txt"]


# -- never writes over an input, checked before any work -----------------------------------------------

REFUSED = [
    (lambda c: ["--out", str(c["leads"])], "is the leads input"),
    (lambda c: ["--out", str(c["events"]).replace("events.parquet", "./events.parquet")], "is the interactions input"),
    (lambda c: ["--out", str(c["folder"] / "scores.parquet"), "--leads", str(c["folder"])], "inside the leads input folder"),
    (lambda c: ["--out", "s.csv", "--rejects", str(c["events"])], "--rejects"),
    (lambda c: ["--out", "new/s.csv", "--rejects", "new/../new/s.csv"], "is the same file as --out"),
    (lambda c: ["--out", str(c["folder"].parent / "adir.csv")], "is a folder"),
    (lambda c: ["--out", "new/deeper/s.csv", "--rejects", "s.txt"], "use a .csv or .parquet file name"),
    (lambda c: ["--out", "s.csv", "--work-dir", str(c["folder"]), "--leads", str(c["folder"])], "--work-dir"),
    (lambda c: ["--out", "s.csv", "--leads", str(c["lead_in_work"])], "working folder of leadtemp"),
]


@pytest.mark.parametrize(("output", "message"), REFUSED)
def test_an_output_over_an_input_or_another_output_is_refused_before_any_work(crm, tmp_path, no_work, output, message):
    (tmp_path / "adir.csv").mkdir()
    old_run = tmp_path / "old" / "leadtemp-score-0123456789ab"
    old_run.mkdir(parents=True)
    (old_run / ".leadtemp-work").write_text("0123456789ab\n")
    crm["lead_in_work"] = old_run / "leads.csv"
    crm["lead_in_work"].write_bytes(crm["leads"].read_bytes())
    before = digest(tmp_path)
    result = run(*files_of(crm), *output(crm))
    assert message in one_error_line(result)
    assert digest(tmp_path) == before, "nothing written, nothing changed"
    assert not (tmp_path / "new").exists(), "a folder made to check the output's place is gone again"


@pytest.fixture(scope="module")
def crm_db_file(small_sim, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "crm.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    small_sim.leads.to_sql("leads", engine, index=False)
    small_sim.interactions.to_sql("events", engine, index=False)
    engine.dispose()
    return path


@pytest.fixture()
def crm_db(crm_db_file, tmp_path) -> str:
    """A SQLite CRM with the tables leads and events, a copy of its own for each test."""
    (tmp_path / "crm.db").write_bytes(crm_db_file.read_bytes())
    return f"sqlite:///{tmp_path / 'crm.db'}"


def tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    names = sa.inspect(engine).get_table_names()
    engine.dispose()
    return sorted(names)


@pytest.mark.parametrize(("output", "message"), [
    (["--write-table", "leads"], "--write-table 'leads' is the leads table"),
    (["--write-table", "LEADS"], "--write-table 'LEADS' is the leads table"),  # SQLite ignores case
    (["--write-table", "scores", "--rejects", "events"], "--rejects 'events' is the interactions table"),
    (["--write-table", "scores", "--rejects", "scores"], "is the same table as --write-table"),
])
def test_an_output_table_that_is_an_input_table_is_refused_before_any_work(crm_db, tmp_path, no_work, output, message):
    before = digest(tmp_path)
    result = run("--db", crm_db, "--leads-table", "leads", "--interactions-table", "events", *output)
    assert message in one_error_line(result)
    assert digest(tmp_path) == before


def test_an_output_table_of_the_wrong_shape_is_found_before_the_work_and_leaves_no_staging_table(model, crm_db):
    engine = sa.create_engine(crm_db)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE scores (lead_id TEXT, note TEXT)'))
    engine.dispose()
    result = run("--db", crm_db, "--leads-table", "leads", "--interactions-table", "events", "--write-table", "scores",
                 "--model", model)
    assert "exists without the columns" in one_error_line(result, alone=False)
    assert "read " not in result.output, "refused before reading the leads"
    assert tables(crm_db) == ["events", "leads", "scores"]


# -- permissions ---------------------------------------------------------------------------------------------

def test_outputs_get_the_mode_open_gives_a_new_file_also_when_replacing_one(model, crm, tmp_path):
    mask = os.umask(0o027)
    try:
        for i in range(2):
            result = run("--out", "scores.parquet", "--model", model, "--no-reasons", *files_of(crm))
            assert result.exit_code == 0, result.output
            for name in ("scores.parquet", "scores.rejects.parquet"):
                assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, (i, name)
                (tmp_path / name).chmod(0o600)  # the next run replaces a file of another mode
    finally:
        os.umask(mask)


def test_a_full_disk_while_writing_is_one_line_leaves_no_file_and_the_run_resumes(model, crm, tmp_path, monkeypatch):
    real = pd.DataFrame.to_csv

    def full(self, path=None, *args, **kwargs):
        if Path(str(path)).name.startswith(".scores.csv."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path, *args, **kwargs)

    args = ("--out", "scores.csv", "--work-dir", "work", "--model", model, "--no-reasons", *files_of(crm))
    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    message = one_error_line(run(*args), alone=False)
    assert "scores.csv" in message and "no space left on the device" in message
    assert not (tmp_path / "scores.csv").exists() and not list(tmp_path.glob(".scores.csv.*"))
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    again = run(*args)
    assert again.exit_code == 0 and "resuming" in again.output, again.output


# -- one run at a time -----------------------------------------------------------------------------------------

def test_the_same_run_twice_at_once_second_exits_2_and_touches_nothing(model, crm, tmp_path, monkeypatch):
    from leadtemp.adapters import staging

    real, holders = staging.RunFolder.open, []

    def held_elsewhere(base, name, key):
        holders.append(real(base, name, key))  # as another process running the same command would
        return real(base, name, key)

    monkeypatch.setattr(staging.RunFolder, "open", held_elsewhere)
    result = run("--out", "scores.csv", "--work-dir", "work", "--model", model, *files_of(crm))
    message = one_error_line(result, alone=False)
    assert f"another leadtemp score run with the same inputs and output is running (pid {os.getpid()})" in message
    assert holders[0].path.is_dir() and not (tmp_path / "scores.csv").exists()
    holders[0].release()
    monkeypatch.setattr(staging.RunFolder, "open", real)
    assert run("--out", "scores.csv", "--work-dir", "work", "--model", model, "--no-reasons",
               *files_of(crm)).exit_code == 0


# -- one error path for databases ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("db", "tables_in", "message"), [
    ("sqlite:/crm.db", True, "not a database URL"),
    ("nosuchdb://host/crm", True, "no database driver for 'nosuchdb'"),
    ("postgresql+psycopg://scoring:s3cret@127.0.0.1:9/crm", True, "postgresql+psycopg://scoring:***@127.0.0.1:9/crm"),
    ("sqlite:///{tmp}/no/such/folder/crm.db", True, "no database file"),
    ("sqlite:///{tmp}/no/such/folder/crm.db", False, "no folder"),
])
def test_a_database_that_cannot_be_used_is_one_line_with_exit_2(crm, tmp_path, no_work, db, tables_in, message):
    db = db.format(tmp=tmp_path)
    inputs = ["--leads-table", "leads", "--interactions-table", "events"] if tables_in else files_of(crm)
    result = run("--db", db, *inputs, "--write-table", "scores")
    text = one_error_line(result)
    assert message in text and "s3cret" not in result.output
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_a_locked_sqlite_database_is_one_line_with_exit_2(crm_db, tmp_path, no_work):
    holder = sqlite3.connect(tmp_path / "crm.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run("--db", crm_db, "--leads-table", "leads", "--interactions-table", "events", "--write-table", "s")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    text = one_error_line(result)
    assert "table 'leads'" in text and "database is locked" in text
    assert tables(crm_db) == ["events", "leads"]


def test_a_database_failure_while_scoring_drops_the_staging_tables_when_nothing_was_staged(model, crm_db, monkeypatch):
    from leadtemp.adapters.staging import Staging

    def locked(*_a, **_k):
        raise sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(Staging, "write", locked)
    result = run("--db", crm_db, "--leads-table", "leads", "--interactions-table", "events", "--write-table", "scores",
                 "--model", model, "--no-reasons")
    assert "table 'scores'" in (text := one_error_line(result, alone=False)) and "database is locked" in text
    assert tables(crm_db) == ["events", "leads"], "no staging table left behind"


# -- the files leadtemp replaces or cleans up ---------------------------------------------------------------------

def test_only_leftovers_of_dead_writers_are_cleaned_beside_an_output(tmp_path):
    import subprocess

    from leadtemp.adapters.files import write_table

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".scores.csv.{gone.pid}.abcd_123.tmp"      # a writer killed mid-file: cleaned
    running = tmp_path / f".scores.csv.{os.getpid()}.efgh_456.tmp"  # a writer still at work: left alone
    users = [tmp_path / ".scores.csv.draft.tmp", tmp_path / ".scores.csv.tmp", tmp_path / ".other.csv.1.abcdefgh.tmp"]
    for path in (stale, running, *users):
        path.write_text("x")
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "scores.csv")
    assert not stale.exists() and running.exists() and all(p.read_text() == "x" for p in users)


def test_a_model_export_replaces_only_a_model_folder(tmp_path):
    from leadtemp.adapters.files import replace_dir
    from leadtemp.core.errors import ConfigError

    new = tmp_path / "new"
    new.mkdir()
    (new / "MLmodel").write_text("v2")
    users = tmp_path / "models" / "latest"
    users.mkdir(parents=True)
    (users / "notes.txt").write_text("a user's folder that happens to be called latest")
    with pytest.raises(ConfigError, match="is not a model folder leadtemp exported"):
        replace_dir(new, users)
    assert (users / "notes.txt").is_file() and sorted(os.listdir(tmp_path / "models")) == ["latest"]
    (users / "notes.txt").unlink()
    (users / "MLmodel").write_text("v1")
    replace_dir(new, users)
    assert (users / "MLmodel").read_text() == "v2" and sorted(os.listdir(tmp_path / "models")) == ["latest"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_report_and_a_lead_card_get_the_mode_open_gives_a_new_file_also_when_replacing_one(tmp_path, umask):
    """`leadtemp report --out` and `explain --html` write through a temporary file, which mkstemp makes 0o600."""
    from leadtemp.adapters.cards import write_card
    from leadtemp.adapters.report import write_report

    mask = os.umask(umask)
    try:
        for i in range(2):
            for write, name in ((write_report, "report.html"), (write_card, "card.html")):
                write("<html>page</html>", tmp_path / name)
                assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, (i, name)
                (tmp_path / name).chmod(0o600)  # the next write replaces a file of another mode
    finally:
        os.umask(mask)
