"""Types are declared, not guessed: ids and categories stay text, dates have one format per column,
numbers are parsed by role and must be finite, timestamps must lie in a plausible window.

Each case goes through the path a user's data takes: ``load_leads`` (train, explain) and
``Source.batches`` + ``canonical_leads`` (batch scoring, where a bad row only rejects that lead).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.adapters.files import load_interactions, load_leads
from leadtemp.adapters.sources import Source
from leadtemp.api import parse_as_of
from leadtemp.cli import app
from leadtemp.core.config import LeadColumns, Params, params_from_dict
from leadtemp.core.errors import ConfigError, SchemaError
from leadtemp.core.schema import DateRules, validate_leads
from leadtemp.modelling.partition import REJECT, canonical_events, canonical_leads

PARAMS = str(ROOT / "params.yaml")
runner = CliRunner()


def _params(**data) -> Params:
    return Params().replace(data={"categorical": ("source",), "numeric": ("visits",), **data})


def _scorer(params: Params):
    """What canonical_leads reads of a scorer: the model's attribute columns."""
    return SimpleNamespace(spec=SimpleNamespace(categorical=list(params.data.categorical),
                                                numeric=list(params.data.numeric)))


def _reasons(frame: pd.DataFrame) -> list[str | None]:
    return [r if isinstance(r, str) else None for r in frame[REJECT]]


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _batches(path: Path, params: Params, size: int | None = None) -> pd.DataFrame:
    """Batch scoring's first step on a CSV: read in batches, every row checked (reasons in _reject)."""
    frames, first = [], 1
    for batch in Source.file(path).batches(size):
        frames.append(canonical_leads(batch, str(path), params, _scorer(params), first))
        first += len(batch)
    return pd.concat(frames, ignore_index=True)


LEADS = """lead_id,created_at,converted_at,source,visits
000123,2024-01-05,,007,3
416,2024-01-06,2024-02-01,web,
,2024-01-07,,web,1
"""


# -- ids and categories are text ---------------------------------------------------------------------
def test_ids_and_categories_keep_their_leading_zeros_through_load_leads(tmp_path):
    path = _csv(tmp_path / "leads.csv", LEADS.replace(",2024-01-07,,web,1\n", "9,2024-01-07,,web,1\n"))
    events = _csv(tmp_path / "events.csv", "lead_id,timestamp,type,direction,value\n000123,2024-01-10,email,inbound,\n")
    leads = load_leads(_params(), path)
    assert leads["lead_id"].tolist() == ["000123", "416", "9"]
    assert leads["source"].tolist() == ["007", "web", "web"]
    assert leads["visits"].tolist()[::2] == [3.0, 1.0] and np.isnan(leads["visits"][1])
    got = load_interactions(_params(), leads, events)  # 000123 is a known lead, not "123"
    assert got["lead_id"].tolist() == ["000123"]
    # A blank id is an empty id (train refuses it), whatever the other ids look like.
    with pytest.raises(SchemaError, match=r"leads.csv: column 'lead_id': 1 row\(s\) have an empty lead id; e.g. row 3"):
        load_leads(_params(), _csv(tmp_path / "leads.csv", LEADS))


@pytest.mark.parametrize("size", [None, 2])
def test_batch_scoring_keeps_ids_as_text_and_rejects_only_the_blank_id(tmp_path, size):
    got = _batches(_csv(tmp_path / "leads.csv", LEADS), _params(), size)
    assert got["lead_id"].tolist() == ["000123", "416", ""]
    assert _reasons(got) == [None, None, "column 'lead_id': is empty"]
    assert got["source"].tolist() == ["007", "web", "web"]


def test_database_integer_ids_with_a_null_read_as_whole_numbers(tmp_path):
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE leads (lead_id INTEGER, created_at TEXT, source INTEGER, visits REAL)")
        conn.executemany("INSERT INTO leads VALUES (?, ?, ?, ?)",
                         [(416, "2024-01-05", 7, 1.0), (None, "2024-01-06", None, 2.0), (17, "2024-01-07", 3, None)])
    params = _params()
    (batch,) = Source.database(f"sqlite:///{db}", "leads").batches(None)
    got = canonical_leads(batch, "crm leads", params, _scorer(params), 1)
    assert got["lead_id"].tolist() == ["416", "", "17"]  # not "416.0"
    assert got["source"].tolist()[::2] == ["7", "3"]
    assert _reasons(got) == [None, "column 'lead_id': is empty", None]


def test_empty_text_categories_are_missing_from_parquet_and_sqlite_as_from_csv(tmp_path):
    """'' from a Parquet file or a database is an empty cell, as in a CSV, never a category of its own."""
    frame = pd.DataFrame({"lead_id": ["A", "B", "C"], "created_at": ["2024-01-05"] * 3, "source": ["web", "", "  "],
                          "visits": [1.0, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "leads.parquet")
    frame.to_csv(tmp_path / "leads.csv", index=False)
    params = _params()
    for path in ("leads.parquet", "leads.csv"):
        assert load_leads(params, tmp_path / path)["source"].isna().tolist() == [False, True, True], path
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        frame.to_sql("leads", conn, index=False)
    (batch,) = Source.database(f"sqlite:///{db}", "leads").batches(None)
    got = canonical_leads(batch, "crm leads", params, _scorer(params), 1)
    assert got["source"].isna().tolist() == [False, True, True] and _reasons(got) == [None, None, None]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_wrong_separator_is_named_even_when_a_value_holds_the_configured_one(tmp_path, separator):
    """A ';' export read with ',' whose row 2 holds a comma: the header says it, not pandas' tokenizer."""
    path = _csv(tmp_path / "leads.csv", separator.join(["Lead Ref", "Full Name", "Created"]) + "\n"
                + separator.join(["L1", "Ann", "2024-01-01"]) + "\n" + separator.join(["L2", "Smith, John", "2024-01-02"]))
    wanted = f"leads.csv: the header has 1 column {separator.join(['Lead Ref', 'Full Name', 'Created'])!r}: " \
             f"is data.csv_separator {separator!r}?"
    with pytest.raises(SchemaError) as info:
        load_leads(_params(), path)
    assert wanted in str(info.value) and "tokenizing" not in str(info.value)
    for size in (None, 1):
        with pytest.raises(SchemaError) as info:
            list(Source.file(path).batches(size))
        assert wanted in str(info.value)


def test_a_csv_s_empty_rows_at_its_end_are_skipped_with_a_note(tmp_path):
    """Excel leaves ',,,,' lines below the data: no leads, and said so, in train and in score."""
    path = _csv(tmp_path / "leads.csv", LEADS.replace(",2024-01-07", "9,2024-01-07") + ",,,,\n , ,,,\n,,,,\n")
    events = _csv(tmp_path / "events.csv", "lead_id,timestamp,type,direction,value\n000123,2024-01-10,email,inbound,\n"
                                           ",,,,\n")
    notes: list[str] = []
    leads = load_leads(_params(), path, notes)
    assert leads["lead_id"].tolist() == ["000123", "416", "9"]
    assert len(load_interactions(_params(), leads, events, notes)) == 1
    assert notes == [f"{path}: skipped 3 empty row(s) at the end of the file (every cell empty)",
                     f"{events}: skipped 1 empty row(s) at the end of the file (every cell empty)"]
    for size in (None, 1, 2, 3):
        source = Source.file(path)
        batches = list(source.batches(size))
        assert pd.concat(batches)["lead_id"].tolist() == ["000123", "416", "9"], size
        assert source.notes == [notes[0]], size
    # an empty row with filled rows after it is a row: refused naming it, never dropped
    middle = _csv(tmp_path / "middle.csv", "lead_id,created_at,converted_at,source,visits\nA,2024-01-05,,web,1\n"
                                           ",,,,\nB,2024-01-06,,web,2\n")
    with pytest.raises(SchemaError, match=r"1 row\(s\) have an empty lead id; e.g. row 2"):
        load_leads(_params(), middle)


def _same_values(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """The same columns, dtypes, and values of the same Python types (NULL as NULL)."""
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        assert str(a[column].dtype) == str(b[column].dtype), column
        for x, y in zip(a[column].tolist(), b[column].tolist()):
            assert (pd.isna(x) and pd.isna(y)) or (x == y and type(x) is type(y)), (column, x, y)


@pytest.mark.parametrize("size", [None, 2, 3])
def test_a_sqlite_table_reads_through_arrow_exactly_as_row_by_row(tmp_path, monkeypatch, size):
    """SQLite types values, not columns: ids mixing integers and text, a REAL column holding a word, a
    column with no type holding all three, and a column NULL for the whole first batch all arrive as the
    driver's rows give them (the ADBC driver would guess one type per column and reword the others)."""
    import leadtemp.adapters.sources as sources

    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE leads (lead_id INTEGER, created_at TEXT, converted_at TEXT, source, visits REAL, "
                     "extra TEXT)")
        conn.executemany("INSERT INTO leads VALUES (?, ?, ?, ?, ?, ?)", [
            (416, "2024-01-05", None, 7, 1.0, "x"), ("L-1", "2024-01-06", None, "web", "abc", "y"),
            (None, "2024-01-07", None, 2.5, None, "z"), (17, "2024-01-08", "2024-02-01", None, 0.30000000000000004, "w"),
            (9007199254740993, "2024-01-09", "2024-03-01", "007", 3, None)])
    params = _params()
    wanted = (["lead_id", "created_at", "source", "visits"], ["converted_at"])
    arrow = list(Source.database(f"sqlite:///{db}", "leads").batches(size, wanted))
    monkeypatch.setattr(sources, "_arrow_driver", lambda url: None)  # the SQLAlchemy rows, as before
    rows = list(Source.database(f"sqlite:///{db}", "leads").batches(size, wanted))
    assert [len(b) for b in arrow] == [len(b) for b in rows] and "extra" not in arrow[0].columns
    first = 1
    for got, want in zip(arrow, rows):
        _same_values(got, want)
        _same_values(canonical_leads(got, "crm", params, _scorer(params), first),
                     canonical_leads(want, "crm", params, _scorer(params), first))
        first += len(got)
    every = pd.concat([canonical_leads(b, "crm", params, _scorer(params), 1) for b in arrow[:1]]) if size is None else None
    if every is not None:
        assert every["lead_id"].tolist() == ["416", "L-1", "", "17", "9007199254740993"]
        assert every["source"].tolist()[:2] == ["7", "web"] and _reasons(every)[1] == "column 'visits': is not a number"


def test_an_empty_sqlite_table_reads_through_arrow_as_row_by_row(tmp_path, monkeypatch):
    import leadtemp.adapters.sources as sources

    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE leads (lead_id INTEGER, created_at TEXT, source, visits REAL)")
    arrow = [list(Source.database(f"sqlite:///{db}", "leads").batches(size)) for size in (None, 2)]
    monkeypatch.setattr(sources, "_arrow_driver", lambda url: None)
    rows = [list(Source.database(f"sqlite:///{db}", "leads").batches(size)) for size in (None, 2)]
    assert len(arrow[0]) == 1 and arrow[1] == rows[1] == []
    _same_values(arrow[0][0], rows[0][0])


def test_an_arrow_driver_error_is_one_line_without_the_password():
    from adbc_driver_manager import OperationalError

    from leadtemp.adapters.sources import database_errors
    from leadtemp.core.errors import StorageError

    with pytest.raises(StorageError) as info:
        with database_errors("postgresql+psycopg://scoring:s3cret@db.internal/crm", "--db crm table 'leads'"):
            raise OperationalError("connection to postgresql://scoring:s3cret@db.internal/crm failed:\n refused",
                                   status_code=1)
    assert str(info.value) == "--db crm table 'leads': connection to postgresql://scoring:***@db.internal/crm failed: refused"


@pytest.mark.services
def test_a_postgresql_table_reads_through_arrow_as_row_by_row(monkeypatch):
    """Types Arrow has no exact match for (numeric, uuid) are read as their text, which reads as the driver's
    Python values did: ids and categories as written, numbers exact, times the same instants."""
    import sqlalchemy as sa

    import leadtemp.adapters.sources as sources
    from services import postgres_server

    with postgres_server() as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE leads (lead_id numeric, created_at timestamptz, converted_at timestamp, "
                                 "source uuid, visits numeric, big bigint)")
            conn.exec_driver_sql("INSERT INTO leads VALUES (416, '2024-01-05 10:00+02', NULL, "
                                 "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1.50, 9007199254740993), "
                                 "(17, '2024-01-06', '2024-02-01 10:00', NULL, NULL, NULL)")
        engine.dispose()
        params = _params()
        (arrow,) = Source.database(url, "leads").batches(None)
        monkeypatch.setattr(sources, "_arrow_driver", lambda url: None)
        (rows,) = Source.database(url, "leads").batches(None)
    assert arrow["big"].tolist() == [9007199254740993, None]
    got, want = (canonical_leads(b, "crm", params, _scorer(params), 1) for b in (arrow, rows))
    _same_values(got.drop(columns=["created_at"]), want.drop(columns=["created_at"]))
    assert (got["created_at"] == want["created_at"]).all()
    assert got["lead_id"].tolist() == ["416", "17"] and got["visits"].tolist()[0] == 1.5


# -- dates: one format per column ------------------------------------------------------------------------
def _leads(created, converted=None) -> pd.DataFrame:
    frame = pd.DataFrame({"lead_id": [f"L{i}" for i in range(len(created))], "created_at": created})
    if converted is not None:
        frame["converted_at"] = converted
    return frame


def test_an_ambiguous_date_column_is_refused_saying_how_to_declare_it(tmp_path):
    path = _csv(tmp_path / "leads.csv", "lead_id,created_at\nA,03/05/2024\nB,04/06/2024\nC,12/01/2024\n")
    with pytest.raises(SchemaError) as info:
        load_leads(Params(), path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "column 'created_at'" in message
    assert 'data.date_format: {created_at: "%d/%m/%Y"}' in message and "day above 12" in message
    with pytest.raises(SchemaError, match="data.date_format"):  # batch scoring: the whole table is refused
        _batches(path, Params().replace(data={"categorical": (), "numeric": ()}))


def test_a_day_first_column_with_one_day_above_12_reads_every_row_day_first():
    out = validate_leads(_leads(["03/05/2024", "01/02/2024 10:30", "13/05/2024", "05/06/2024"]), "leads.csv")
    assert out["created_at"].dt.strftime("%Y-%m-%d %H:%M").tolist() == [
        "2024-05-03 00:00", "2024-02-01 10:30", "2024-05-13 00:00", "2024-06-05 00:00"]


def test_a_month_first_value_in_a_day_first_column_is_a_bad_value():
    frame = _leads(["13/05/2024", "14/05/2024", "05/13/2024"])
    with pytest.raises(SchemaError, match=r"1 row\(s\) are not parsable timestamps; e.g. row 3 .*read as %d/%m/%Y"):
        validate_leads(frame, "leads.csv")


def test_the_conversion_column_follows_the_order_its_table_settled():
    """converted_at alone (03/05, 04/06) cannot tell; created_at (13/05) says day first."""
    out = validate_leads(_leads(["13/04/2024", "01/05/2024"], ["03/05/2024", "04/06/2024"]), "leads.csv")
    assert out["converted_at"].dt.strftime("%Y-%m-%d").tolist() == ["2024-05-03", "2024-06-04"]


CRM_DATES = """Lead Ref,Created,Won at,Closed lost
A,09/12/2024 01:05,"Dec 09, 2024",
B,13/12/2024 10:00,,"Dec 13, 2024"
C,14/12/2024 10:00,"Dec 20, 2024",
"""
CRM_COLUMNS = {"lead_id": "Lead Ref", "created_at": "Created", "converted_at": "Won at", "lost_at": "Closed lost"}


def test_a_date_without_a_time_on_the_creation_day_is_the_creation_moment(tmp_path):
    """A CRM's close date (no time) on the day the lead was created is not before its creation."""
    path = _csv(tmp_path / "leads.csv", CRM_DATES)
    params = _params(columns=LeadColumns(**CRM_COLUMNS), categorical=(), numeric=())
    leads = load_leads(params, path)
    assert leads["converted_at"].dt.strftime("%Y-%m-%d %H:%M").tolist()[::2] == ["2024-12-09 01:05", "2024-12-20 00:00"]
    assert leads["lost_at"].dt.strftime("%Y-%m-%d %H:%M").tolist()[1] == "2024-12-13 10:00"
    got = _batches(path, params)  # score reads them the same way and rejects nothing
    assert _reasons(got) == [None, None, None]
    assert got["converted_at"].tolist() == leads["converted_at"].tolist()
    # an earlier day stays a bad value, and so does a time of day before the creation
    with pytest.raises(SchemaError) as info:
        load_leads(params, _csv(tmp_path / "early.csv", CRM_DATES.replace('"Dec 09, 2024"', '"Dec 08, 2024"')))
    assert str(info.value).endswith("column 'Won at': 1 row(s) convert before they were created; e.g. row 1 "
                                    "{'Lead Ref': 'A', 'Won at': 'Dec 08, 2024', 'Created': '09/12/2024 01:05'}")
    with pytest.raises(SchemaError, match=r"column 'Won at': 1 row\(s\) convert before they were created; e.g. row 1"):
        load_leads(params, _csv(tmp_path / "timed.csv", CRM_DATES.replace('"Dec 09, 2024"', '"Dec 09, 2024 00:30"')))


def test_examples_show_values_as_written_never_python_reprs():
    """Timestamps from Parquet as text, an empty cell as empty, numbers plainly."""
    frame = pd.DataFrame({"lead_id": ["A", "B", None], "created_at": pd.to_datetime(["2024-12-09 01:05"] * 3),
                          "converted_at": pd.to_datetime(["2024-12-08", None, None])})
    with pytest.raises(SchemaError) as info:
        validate_leads(frame.assign(lead_id=["A", "B", "C"]), "leads.parquet")
    assert str(info.value).endswith("e.g. row 1 {'lead_id': 'A', 'converted_at': '2024-12-08 00:00:00', "
                                    "'created_at': '2024-12-09 01:05:00'}")
    with pytest.raises(SchemaError) as info:
        validate_leads(frame.assign(converted_at=pd.NaT), "leads.parquet")
    assert str(info.value).endswith("e.g. row 3 {'lead_id': empty}")
    with pytest.raises(SchemaError) as info:
        validate_leads(frame.assign(converted_at=pd.NaT, lead_id=["A", "B", "C"], visits=[1.0, np.inf, 2.0]),
                       "leads.parquet", numeric=["visits"])
    assert str(info.value).startswith("leads.parquet: column 'visits': 1 row(s) are not finite numbers")
    assert "e.g. row 2 {'lead_id': 'B', 'visits': inf}" in str(info.value)


def test_data_date_format_is_honoured_and_values_outside_it_are_bad(tmp_path):
    path = _csv(tmp_path / "leads.csv", "lead_id,created_at\nA,03/05/2024\nB,04/06/2024 10:00\nC,2024-07-01\n")
    params = Params().replace(data={"date_format": "%m/%d/%Y"})
    with pytest.raises(SchemaError, match=r"1 row\(s\) are not parsable timestamps; e.g. row 3 .*data.date_format"):
        load_leads(params, path)
    got = _batches(path, params)
    assert got["created_at"].dt.strftime("%Y-%m-%d %H:%M").tolist()[:2] == ["2024-03-05 00:00", "2024-04-06 10:00"]
    assert _reasons(got) == [None, None, "column 'created_at': is not a parsable timestamp"]


def test_a_format_declared_for_one_column_leaves_the_others_inferred(tmp_path):
    """The ambiguous Created gets its format; ISO values in Won at and the interactions stay readable."""
    path = _csv(tmp_path / "leads.csv", "Lead Ref,Created,Won at\nA,03/05/2024 10:00,2024-07-11 12:13\n"
                                        "B,04/06/2024 11:00,\n")
    events = _csv(tmp_path / "events.csv", "lead_id,timestamp,type,direction\nA,2024-05-04 09:00,email,inbound\n")
    columns = LeadColumns(lead_id="Lead Ref", created_at="Created", converted_at="Won at")
    with pytest.raises(SchemaError, match=r"column 'Created': .*e.g. data.date_format: \{Created: \"%d/%m/%Y\"\}"):
        load_leads(_params(columns=columns, categorical=(), numeric=()), path)
    params = params_from_dict({"data": {"columns": {"lead_id": "Lead Ref", "created_at": "Created",
                                                    "converted_at": "Won at"},
                                        "date_format": {"Created": "%d/%m/%Y %H:%M"}}})
    leads = load_leads(params, path)
    assert leads["created_at"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2024-05-03 10:00", "2024-06-04 11:00"]
    assert leads["converted_at"].dt.strftime("%Y-%m-%d %H:%M").tolist()[0] == "2024-07-11 12:13"
    assert load_interactions(params, leads, events)["timestamp"].tolist() == [pd.Timestamp("2024-05-04 09:00")]
    got = _batches(path, params)
    assert _reasons(got) == [None, None] and got["created_at"].tolist() == leads["created_at"].tolist()


def test_streamed_batches_keep_the_format_the_first_batch_settled(tmp_path):
    """Batch 2 alone (05/13/2024) would read month-first; the run settled day-first in batch 1."""
    path = _csv(tmp_path / "leads.csv", "lead_id,created_at\nA,13/05/2024\nB,14/05/2024\nC,05/13/2024\n")
    params = Params()
    rules = DateRules.of(params.data)
    batches = list(Source.file(path).batches(2))
    got = [canonical_leads(b, str(path), params, _scorer(params), 1, rules) for b in batches]
    assert got[0][REJECT].isna().all()
    assert _reasons(got[1]) == ["column 'created_at': is not a parsable timestamp"]


# -- the plausible window ----------------------------------------------------------------------------------
def test_years_1600_and_2300_are_refused_in_train_naming_the_rows(tmp_path):
    path = _csv(tmp_path / "leads.csv", "lead_id,created_at\nA,2024-01-05\nB,1600-01-01\nC,2300-06-01\n")
    with pytest.raises(SchemaError, match=r"column 'created_at': 2 row\(s\) are outside 1970-01-01 .. 2100-01-01 "
                                          r"\(data.earliest, data.latest\); e.g. row 2 .*row 3"):
        load_leads(Params(), path)


def test_years_1600_and_2300_reject_only_their_rows_in_scoring(tmp_path):
    path = _csv(tmp_path / "leads.csv", "lead_id,created_at,converted_at\nA,2024-01-05,\nB,1600-01-01,\n"
                                        "C,2024-01-05,2300-06-01\n")
    params = Params()
    got = _batches(path, params)
    assert _reasons(got) == [None, "column 'created_at': is outside 1970-01-01 .. 2100-01-01 "
                                    "(data.earliest, data.latest)",
                                    "column 'converted_at': is outside 1970-01-01 .. 2100-01-01 "
                                    "(data.earliest, data.latest)"]
    events = pd.DataFrame({"lead_id": ["A", "A"], "timestamp": ["2024-01-06", "2300-01-01"], "type": ["email"] * 2,
                           "direction": ["inbound"] * 2})
    ev = canonical_events(events, "events.csv", params, 1, pd.Timestamp("2024-06-01"))
    assert _reasons(ev) == [None, "column 'timestamp': is outside 1970-01-01 .. 2100-01-01 "
                                   "(data.earliest, data.latest)"]


def test_datetime_columns_from_parquet_are_checked_against_the_window_too():
    created = pd.Series(pd.to_datetime(["2024-01-05", "2300-01-01"]).as_unit("us"))
    with pytest.raises(SchemaError, match=r"1 row\(s\) are outside .*row 2"):
        validate_leads(_leads(created), "leads.parquet")
    narrow = DateRules(earliest="2020-01-01", latest="2030-01-01")
    with pytest.raises(SchemaError, match=r"are outside 2020-01-01 .. 2030-01-01"):
        validate_leads(_leads(["2019-12-31", "2024-01-05"]), "leads.csv", dates=narrow)


# -- numbers ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("number", ["inf", "-inf", "1e308", "1e309", "Infinity"])
def test_non_finite_numbers_are_bad_values(tmp_path, number):
    path = _csv(tmp_path / "leads.csv", f"lead_id,created_at,source,visits\nA,2024-01-05,web,2\nB,2024-01-05,web,{number}\n")
    with pytest.raises(SchemaError, match=r"column 'visits': 1 row\(s\) are not finite numbers .*row 2"):
        load_leads(_params(), path)
    got = _batches(path, _params())
    assert _reasons(got) == [None, "column 'visits': is not a finite number (inf, or beyond +-1e300)"]
    events = pd.DataFrame({"lead_id": ["A"], "timestamp": ["2024-01-06"], "type": ["email"], "direction": ["inbound"],
                           "value": [number]})
    ev = canonical_events(events, "events.csv", _params(), 1, pd.Timestamp("2024-06-01"))
    assert _reasons(ev) == ["column 'value': is not a finite number (inf, or beyond +-1e300)"]


def test_inf_is_rejected_while_empty_and_missing_tokens_stay_missing_and_text_is_not_a_number(tmp_path):
    path = _csv(tmp_path / "leads.csv", "lead_id,created_at,source,visits\nA,2024-01-05,web,\nB,2024-01-05,web,n/a\n"
                                        "C,2024-01-05,web,inf\nD,2024-01-05,web,NAN\nE,2024-01-05,web,1e3\n")
    got = _batches(path, _params(missing_values=("n/a",)))
    assert _reasons(got) == [None, None, "column 'visits': is not a finite number (inf, or beyond +-1e300)",
                             "column 'visits': is not a number", None]
    assert got["visits"].tolist()[4] == 1000.0


# -- params and --as-of ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "pattern"), [
    ({"date_format": "day/month"}, r"data.date_format: 'day/month' is not a strftime format"),
    ({"date_format": {"created_at": "day/month"}}, r"data.date_format of 'created_at': 'day/month' is not a strftime"),
    ({"date_format": {"Created": "%d/%m/%Y"}}, r"data.date_format: 'Created' is not a timestamp column; those are "
                                               r"\['converted_at', 'created_at', 'timestamp'\]"),
    ({"earliest": "2100-01-01", "latest": "1970-01-01"}, r"earliest \(2100-01-01\) must be before latest"),
    ({"latest": "3000-01-01"}, r"data.latest: '3000-01-01' is not a date"),
])
def test_bad_date_params_are_config_errors(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        params_from_dict({"data": data})


def test_params_yaml_documents_the_date_keys_with_their_defaults():
    text = (ROOT / "params.yaml").read_text()
    assert "date_format: null" in text and 'earliest: "1970-01-01"' in text and 'latest: "2100-01-01"' in text


def test_as_of_with_an_offset_is_utc_and_naive_like_data_and_empty_or_far_dates_are_refused():
    offset = "2024-06-01T00:00:00+02:00"
    assert parse_as_of(offset) == pd.Timestamp("2024-05-31 22:00")
    data = validate_leads(_leads([offset, "2024-06-01 00:00"]), "leads.csv")["created_at"]
    assert parse_as_of(offset) == data[0] and data[1] == pd.Timestamp("2024-06-01")  # naive data times kept
    assert parse_as_of("2024-06-01") == pd.Timestamp("2024-06-01")
    for bad, pattern in [("", "--as-of is empty"), ("  ", "--as-of is empty"), ("1600-01-01", "outside"),
                         ("2300-01-01", "outside"), ("03/05/2024", "not a date")]:
        with pytest.raises(ConfigError, match=pattern):
            parse_as_of(bad)


def test_cli_score_with_an_empty_as_of_is_one_line_and_exit_2():
    result = runner.invoke(app, ["score", "--as-of", "", "--out", "s.csv", "--params", PARAMS])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--as-of is empty" in result.output and not Path("s.csv").exists()


# -- the CLI, end to end -------------------------------------------------------------------------------------
def test_cli_train_refuses_years_1600_and_2300_with_one_line(tmp_path):
    params = _csv(tmp_path / "params.yaml", "data: {categorical: [], numeric: [], excluded: []}\n")
    leads = _csv(tmp_path / "leads.csv", "lead_id,created_at,converted_at\nA,2024-01-05,\nB,1600-01-01,\nC,2300-06-01,\n")
    events = _csv(tmp_path / "events.csv", "lead_id,timestamp,type,direction\nA,2024-01-06,email,inbound\n")
    result = runner.invoke(app, ["train", "--leads", str(leads), "--interactions", str(events), "--params", str(params)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert "column 'created_at': 2 row(s) are outside 1970-01-01 .. 2100-01-01" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_score_keeps_text_ids_with_their_history_and_rejects_bad_rows(small_sim, small_result, tmp_path):
    """A CSV export of the CRM with a zero-padded id, a blank id, a year 2300 and an inf: the padded lead
    is scored exactly like the original (its interactions found), the bad rows are rejected with reasons."""
    import mlflow

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    scorer = small_result.scorer
    model = tmp_path / "model"
    mlflow.pyfunc.save_model(str(model), **pyfunc_arguments(scorer, scorer.save(tmp_path / "scorer"), None))
    as_of = pd.Timestamp("2024-10-01")
    leads, events = small_sim.leads, small_sim.interactions
    open_leads = leads[(leads["created_at"] < as_of) & leads["converted_at"].isna()]
    original = open_leads[open_leads["lead_id"].isin(events["lead_id"])].iloc[0]
    others = open_leads[open_leads["lead_id"] != original["lead_id"]].head(3)
    rows = pd.concat([original.to_frame().T, others, original.to_frame().T.assign(lead_id="000123")], ignore_index=True)
    rows["created_at"] = rows["created_at"].astype(str)
    rows = rows.astype({"past_purchases": object})
    rows.loc[1, "lead_id"] = ""
    rows.loc[2, "created_at"] = "2300-01-01"
    rows.loc[3, "past_purchases"] = "inf"
    rows.to_csv(tmp_path / "leads.csv", index=False)
    with open(tmp_path / "leads.csv", "a") as fh:  # a spreadsheet's empty rows below the data: skipped, said
        fh.write("," * (rows.shape[1] - 1) + "\n" + "," * (rows.shape[1] - 1) + "\n")
    history = events[events["lead_id"] == original["lead_id"]]
    pd.concat([history, history.assign(lead_id="000123")]).to_csv(tmp_path / "events.csv", index=False)
    result = runner.invoke(app, ["score", "--as-of", str(as_of.date()), "--out", str(tmp_path / "scores.csv"),
                                 "--leads", str(tmp_path / "leads.csv"), "--interactions", str(tmp_path / "events.csv"),
                                 "--model", str(model), "--params", PARAMS])
    assert result.exit_code == 0, result.output
    assert f"note: {tmp_path / 'leads.csv'}: skipped 2 empty row(s) at the end of the file" in result.output
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"lead_id": str}).set_index("lead_id")
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv", dtype={"lead_id": str}, keep_default_na=False)
    assert "000123" in scores.index and scores.loc["000123", "probability"] == scores.loc[original["lead_id"], "probability"]
    assert sorted(rejects["reason"]) == sorted([
        "column 'lead_id': is empty",
        "column 'created_at': is outside 1970-01-01 .. 2100-01-01 (data.earliest, data.latest)",
        "column 'past_purchases': is not a finite number (inf, or beyond +-1e300)"])


def test_an_unquoted_yaml_date_is_taken_for_the_window(tmp_path):
    import yaml

    params = params_from_dict(yaml.safe_load("data: {earliest: 1990-01-01, latest: 2050-01-01}"))
    assert (params.data.earliest, params.data.latest) == ("1990-01-01", "2050-01-01")
