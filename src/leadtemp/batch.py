"""Score a whole lead database: streamed, partitioned by lead, resumable, every lead scored or rejected.

The run has three steps, each safe to interrupt (kill -9 included):

1. **Partition.** Both tables are read once, in batches (a database cursor, or file by file and
   batch by batch), checked row by row, and written to ``n`` partition files by a hash of the lead
   id, so every lead is in one partition together with all its interactions. Rows with bad values
   are kept with their reason; nothing is dropped here. A manifest written last marks the step done.
2. **Score** each partition with :func:`score_partition` (the same function the Spark engine runs)
   and write its scored and rejected rows to staging tables in one transaction, which also records
   the partition as done. A rerun skips the partitions already done.
3. **Finish** in one transaction: replace the rows of this ``(as_of, model_version)`` in the output
   table by the staged ones, ranked over the whole run in SQL, and the same for the rejects; then
   drop the staging tables. For a file output the staging database is a SQLite file in the work
   folder and the output is written beside its target and renamed into place.

Memory holds one batch or one partition at a time, whatever the size of the database.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from leadtemp.config import ConfigError, Params
from leadtemp.io import write_batches
from leadtemp.predict import OUTPUT_COLUMNS, LeadScorer
from leadtemp.schema import (CONVERTED_AT, CREATED_AT, DIRECTION, LABEL, LEAD_ID, TIMESTAMP, TYPE, RowProblems,
                             SchemaError, validate_interactions, validate_leads)
from leadtemp.snapshots import eligible_leads, open_leads

REJECT = "_reject"  # per-row reason a partition row cannot be used (None = fine)
ROW = "_row"        # the row's position in its source, from 1, for reject reports
REJECT_COLUMNS = ["lead_id", "as_of", "model_version", "source", "row", "reason"]
FILE_SUFFIXES = (".csv", ".parquet", ".pq")
DEFAULT_CHUNK = 50_000
READ_BATCH = 100_000  # rows per read from a source
FLUSH_ROWS = 1_000_000  # partition buffers are written out when they hold this many rows in total

# What a row-level problem says about one row (validation words it for a count of rows).
_SINGULAR = (("are not parsable timestamps", "is not a parsable timestamp"), ("are empty", "is empty"),
             ("have an empty lead id", "is empty"), ("convert before they were created", "is before the creation time"),
             ("are not numbers", "is not a number"), ("have an empty type", "is empty"),
             ("have a direction other than", "is not one of"), ("are not an outcome", "is not an outcome"))


def _singular(reason: str) -> str:
    for plural, single in _SINGULAR:
        if plural in reason:
            return reason.replace(plural, single)
    return reason


def _describe(path: Path | None, location: str | None, url: str | None, table: str | None) -> str:
    """A source or target in messages: the path as given, or the database (password hidden) and table."""
    if path is not None:
        return location or str(path)
    if url is None:
        return f"catalog table {table!r}"
    return f"{sa.engine.make_url(url).render_as_string(hide_password=True)} table {table!r}"


# -- sources ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A table to read in batches: a CSV/Parquet file, a folder of part files, or a database table."""

    path: Path | None = None
    url: str | None = None
    table: str | None = None
    separator: str = ","
    location: str | None = None  # the path as given (a cluster URI such as s3a://… survives only as text)

    @classmethod
    def file(cls, path: str | Path, separator: str = ",") -> Source:
        return cls(path=Path(path), separator=separator, location=str(path))

    @classmethod
    def database(cls, url: str, table: str) -> Source:
        return cls(url=url, table=table)

    def __str__(self) -> str:
        return _describe(self.path, self.location, self.url, self.table)

    def files(self) -> list[Path]:
        if self.path.is_dir():
            parts = sorted(p for p in self.path.iterdir()
                           if p.suffix.lower() in FILE_SUFFIXES and not p.name.startswith((".", "_")))
            if not parts:
                raise SchemaError(f"{self.path}: a folder without .csv or .parquet part files")
            kinds = {p.suffix.lower() == ".csv" for p in parts}
            if len(kinds) > 1:
                raise SchemaError(f"{self.path}: mixes CSV and Parquet part files; use one format")
            return parts
        if not self.path.is_file():
            raise SchemaError(f"{self.path}: file not found")
        if self.path.suffix.lower() not in FILE_SUFFIXES:
            raise SchemaError(f"{self.path}: unsupported file type; use .csv or .parquet (or a folder of them)")
        return [self.path]

    def fingerprint(self) -> dict:
        if self.path is not None and self.url is None:
            return {"files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files()]}
        return {"source": str(self)}

    def _table(self, engine: sa.Engine) -> sa.Table:
        try:
            return sa.Table(self.table, sa.MetaData(), autoload_with=engine)
        except sa.exc.NoSuchTableError:
            raise SchemaError(f"{self}: no such table") from None

    def count(self) -> int:
        """Rows in the source (an upper bound for CSV: lines after the header)."""
        if self.path is None:
            if self.url is None:
                raise ConfigError(f"{self}: a Spark catalog table; score it with --engine spark, or give --db URL")
            engine = sa.create_engine(self.url)
            try:
                with engine.connect() as conn:
                    return int(conn.execute(sa.select(sa.func.count()).select_from(self._table(engine))).scalar_one())
            finally:
                engine.dispose()
        total = 0
        for part in self.files():
            if part.suffix.lower() == ".csv":
                with open(part, "rb") as fh:
                    total += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b"")) - 1
            else:
                total += pq.ParquetFile(part).metadata.num_rows
        return max(total, 0)

    def batches(self, size: int | None) -> Iterator[pd.DataFrame]:
        """The rows in batches of ``size`` (None: all at once), in source order."""
        if self.path is None:
            if self.url is None:
                raise ConfigError(f"{self}: a Spark catalog table; score it with --engine spark, or give --db URL")
            yield from self._database_batches(size)
            return
        for part in self.files():
            if part.suffix.lower() == ".csv":
                if size is None:
                    yield self._read_csv(part, None)
                else:
                    yield from self._read_csv(part, size)
            else:
                pf = pq.ParquetFile(part)
                if size is None:
                    yield pf.read().to_pandas()
                else:
                    for batch in pf.iter_batches(batch_size=size):
                        yield batch.to_pandas()

    def _read_csv(self, part: Path, size: int | None):
        from leadtemp.io import check_separator, read_table

        if size is None:
            return read_table(part, self.separator)
        check_separator(pd.read_csv(part, sep=self.separator, nrows=5), part, self.separator)
        return pd.read_csv(part, sep=self.separator, chunksize=size, low_memory=False)

    def _database_batches(self, size: int | None) -> Iterator[pd.DataFrame]:
        engine = sa.create_engine(self.url)
        try:
            table = self._table(engine)
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=size or READ_BATCH).execute(
                    sa.select(table))
                columns = list(result.keys())
                if size is None:
                    yield _frame(result.fetchall(), columns)
                    return
                for rows in result.partitions():
                    yield _frame(rows, columns)
        finally:
            engine.dispose()


# -- partitioning -------------------------------------------------------------------------------

def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    """Database rows as a DataFrame, column by column (pandas inspects row objects one by one otherwise)."""
    if not rows:
        return pd.DataFrame({c: [] for c in columns})
    return pd.DataFrame(dict(zip(columns, (list(values) for values in zip(*rows)))))


def partition_of(lead_ids: pd.Series | np.ndarray, n: int) -> np.ndarray:
    """The partition of each lead id: a stable hash (the same in every process and run) modulo ``n``."""
    return (pd.util.hash_array(np.asarray(lead_ids, dtype=object)) % np.uint64(n)).astype(np.int64)


def lead_schema(scorer: LeadScorer) -> pa.Schema:
    spec = scorer.spec
    fields = [(LEAD_ID, pa.string()), (CREATED_AT, pa.timestamp("ns")), (CONVERTED_AT, pa.timestamp("ns")),
              (LABEL, pa.int8())]
    fields += [(c, pa.string()) for c in spec.categorical] + [(c, pa.float64()) for c in spec.numeric]
    return pa.schema(fields + [(REJECT, pa.string()), (ROW, pa.int64())])


EVENT_SCHEMA = pa.schema([(LEAD_ID, pa.string()), (TIMESTAMP, pa.timestamp("ns")), (TYPE, pa.string()),
                          (DIRECTION, pa.string()), (REJECT, pa.string()), (ROW, pa.int64())])


def canonical_leads(raw: pd.DataFrame, source: str, params: Params, scorer: LeadScorer, first_row: int) -> pd.DataFrame:
    """One batch of the leads table under leadtemp's names, the model's columns only, with reasons."""
    d, spec = params.data, scorer.spec
    problems = RowProblems(len(raw))
    leads = validate_leads(raw, source, spec.categorical, spec.numeric, columns=d.columns,
                           missing_values=d.missing_values, row_order=d.created_from_row_order, problems=problems)
    out = pd.DataFrame({LEAD_ID: leads[LEAD_ID], CREATED_AT: leads[CREATED_AT], CONVERTED_AT: leads[CONVERTED_AT],
                        LABEL: leads[LABEL] if LABEL in leads.columns else pd.Series(pd.NA, index=leads.index,
                                                                                     dtype="Int8")})
    for column in spec.categorical:  # as text, exactly as features._attributes reads it
        out[column] = leads[column].astype("string")
    for column in spec.numeric:
        out[column] = leads[column]
    out[REJECT] = [_singular(r) if r is not None else None for r in problems.reason]
    out[ROW] = np.arange(first_row, first_row + len(out), dtype=np.int64)
    return out


def canonical_events(raw: pd.DataFrame, source: str, params: Params, first_row: int,
                     as_of: pd.Timestamp) -> pd.DataFrame:
    """One batch of the interactions under leadtemp's names with reasons; events at or after ``as_of``
    are left out here, as scoring would never look at them (a bad row is kept whatever its time)."""
    problems = RowProblems(len(raw))
    events = validate_interactions(raw, source, None, params.data.interaction_columns, problems=problems)
    out = events[[LEAD_ID, TIMESTAMP, TYPE, DIRECTION]].copy()
    out[REJECT] = [_singular(r) if r is not None else None for r in problems.reason]
    out[ROW] = np.arange(first_row, first_row + len(out), dtype=np.int64)
    keep = problems.bad | (out[TIMESTAMP] < as_of).to_numpy()
    return out.loc[keep]


class _PartitionWriter:
    """Appends rows to ``n`` Parquet files by partition, buffering to write few, large row groups."""

    def __init__(self, folder: Path, prefix: str, n: int, schema: pa.Schema):
        self.folder, self.prefix, self.n, self.schema = folder, prefix, n, schema
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.buffers: dict[int, list[pa.Table]] = {}
        self.buffered = 0

    def path(self, k: int) -> Path:
        return self.folder / f"{self.prefix}-{k:05d}.parquet"

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        part = partition_of(frame[LEAD_ID].to_numpy(dtype=object), self.n)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.n + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            self.buffers.setdefault(int(k), []).append(table.take(order[bounds[k]:bounds[k + 1]]))
        self.buffered += len(frame)
        if self.buffered >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for k, tables in self.buffers.items():
            if k not in self.writers:
                self.writers[k] = pq.ParquetWriter(self.path(k), self.schema)
            self.writers[k].write_table(pa.concat_tables(tables))
        self.buffers, self.buffered = {}, 0

    def close(self) -> None:
        self.flush()
        for writer in self.writers.values():
            writer.close()

    def read(self, k: int) -> pd.DataFrame:
        path = self.path(k)
        return (pq.read_table(path) if path.exists() else self.schema.empty_table()).to_pandas()


# -- scoring one partition ------------------------------------------------------------------------

def score_partition(leads: pd.DataFrame, events: pd.DataFrame, scorer: LeadScorer, as_of: pd.Timestamp,
                    reasons: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Score one partition: canonical leads and all their events (with ``_reject`` reasons).

    Returns the scored rows (output columns without ``rank``, plus ``margin``), the rejected rows
    (``lead_id, source, row, reason``) and the number of valid leads not eligible at ``as_of``.
    A lead is rejected for a bad value of its own, a duplicate id (every copy) or a bad interaction.
    Interactions of a lead that is not in the leads table are rejected as ``interactions`` rows.
    """
    leads = leads.reset_index(drop=True)
    reason = leads[REJECT].astype(object).where(leads[REJECT].notna(), None).to_numpy()
    ids = leads[LEAD_ID].to_numpy(dtype=object)
    copies = leads.groupby(LEAD_ID, sort=False)[LEAD_ID].transform("size").to_numpy()
    duplicate = (copies > 1) & (ids != "")
    reason = np.where(duplicate, [f"duplicate lead id ({c} rows)" for c in copies], reason)

    bad_events = events.loc[events[REJECT].notna()]
    orphan = ~events[LEAD_ID].isin(pd.Index(ids)).to_numpy()
    event_reason = bad_events.drop_duplicates(LEAD_ID).set_index(LEAD_ID)
    for i in np.flatnonzero(pd.Series(ids).isin(event_reason.index).to_numpy() & pd.isna(reason)):
        first = event_reason.loc[ids[i]]
        reason[i] = f"interaction row {first[ROW]}: {first[REJECT]}"
    rejected = ~pd.isna(reason)
    rejects = [pd.DataFrame({LEAD_ID: ids[rejected], "source": "leads", "row": leads[ROW].to_numpy()[rejected],
                             "reason": reason[rejected].astype(str)})]
    stray = events.loc[orphan]
    if len(stray):
        rejects.append(pd.DataFrame({LEAD_ID: stray[LEAD_ID].to_numpy(), "source": "interactions",
                                     "row": stray[ROW].to_numpy(),
                                     "reason": np.where(stray[REJECT].notna(), stray[REJECT].astype(object),
                                                        "its lead is not in the leads table").astype(str)}))
    good = leads.loc[~rejected].drop(columns=[REJECT, ROW])
    good[LABEL] = good[LABEL].astype("Int8")
    for column in scorer.spec.categorical:
        good[column] = good[column].astype("string")
    eligible = eligible_leads(good, as_of) if scorer.spec.mode == "events" else open_leads(good, as_of)
    valid_events = events.loc[~orphan & events[REJECT].isna()].drop(columns=[REJECT, ROW])
    valid_events = valid_events.loc[valid_events[LEAD_ID].isin(pd.Index(eligible[LEAD_ID]))]
    if len(eligible):
        scored = scorer.score_rows(scorer.features(eligible, valid_events, as_of), reasons=reasons)
    else:
        scored = pd.DataFrame({c: [] for c in OUTPUT_COLUMNS if c != "rank"} | {"margin": []})
    return scored, pd.concat(rejects, ignore_index=True), len(good) - len(eligible)


# -- staging and output ---------------------------------------------------------------------------

def output_table(metadata: sa.MetaData, name: str, margin: bool = False) -> sa.Table:
    columns = [sa.Column("lead_id", sa.String, primary_key=not margin), sa.Column("as_of", sa.DateTime, primary_key=not margin),
               sa.Column("model_version", sa.String, primary_key=not margin), sa.Column("probability", sa.Float(53)),
               sa.Column("score", sa.Integer), sa.Column("bucket", sa.String)]
    columns += [sa.Column("margin", sa.Float(53)), sa.Column("part", sa.Integer)] if margin else [sa.Column("rank", sa.BigInteger)]
    columns += [sa.Column(f"reason_{i}", sa.Text) for i in (1, 2, 3)]
    return sa.Table(name, metadata, *columns)


def rejects_table(metadata: sa.MetaData, name: str, part: bool = False) -> sa.Table:
    columns = [sa.Column("lead_id", sa.String), sa.Column("as_of", sa.DateTime), sa.Column("model_version", sa.String),
               sa.Column("source", sa.String), sa.Column("row", sa.BigInteger), sa.Column("reason", sa.Text)]
    return sa.Table(name, metadata, *columns, *([sa.Column("part", sa.Integer)] if part else []))


def _byte_order(column, dialect: str):
    """Lead ids compared byte-wise (as Python compares them), whatever the database's collation."""
    collation = {"postgresql": "C", "sqlite": "BINARY"}.get(dialect)
    return sa.collate(column, collation) if collation else column


def _check_columns(engine: sa.Engine, table: sa.Table) -> None:
    """An existing output table must have leadtemp's columns; it is created when missing."""
    inspector = sa.inspect(engine)
    if not inspector.has_table(table.name):
        table.create(engine)
        return
    found = {c["name"] for c in inspector.get_columns(table.name)}
    if missing := [c.name for c in table.columns if c.name not in found]:
        raise ConfigError(f"table {table.name!r} exists without the columns {missing}; "
                          f"write to a new table or add them")


@dataclass
class Staging:
    """Staging tables of one run in the output database, named after the run's key."""

    engine: sa.Engine
    key: str
    as_of: pd.Timestamp
    model_version: str
    metadata: sa.MetaData = field(default_factory=sa.MetaData)

    def __post_init__(self):
        self.rows = output_table(self.metadata, f"leadtemp_stage_{self.key}", margin=True)
        self.rejects = rejects_table(self.metadata, f"leadtemp_stage_rejects_{self.key}", part=True)
        self.done = sa.Table(f"leadtemp_stage_done_{self.key}", self.metadata,
                             sa.Column("part", sa.Integer, primary_key=True), sa.Column("scored", sa.BigInteger),
                             sa.Column("rejected", sa.BigInteger), sa.Column("not_eligible", sa.BigInteger),
                             sa.Column("manifest", sa.Text))

    def create(self) -> None:
        self.metadata.create_all(self.engine)

    def drop(self) -> None:
        self.metadata.drop_all(self.engine)

    def finished(self, manifest: str) -> dict[int, tuple[int, int, int]]:
        """Partitions done under this manifest (staged under another one are discarded)."""
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(self.done)).all()
        if any(r.manifest != manifest for r in rows):
            self.drop()
            self.create()
            return {}
        return {r.part: (r.scored, r.rejected, r.not_eligible) for r in rows}

    def write(self, part: int, scored: pd.DataFrame, rejects: pd.DataFrame, not_eligible: int, manifest: str) -> None:
        """One partition's rows and its done mark, in one transaction (all or nothing)."""
        rows = scored.drop(columns=["as_of", "model_version"]).assign(
            as_of=self.as_of.to_pydatetime(), model_version=self.model_version, part=part)
        rej = rejects.assign(as_of=self.as_of.to_pydatetime(), model_version=self.model_version, part=part)
        with self.engine.begin() as conn:  # a partition without its done mark has no staged rows either
            for table, frame in ((self.rows, rows), (self.rejects, rej)):
                if len(frame):
                    records = frame[[c.name for c in table.columns]].astype(object).where(frame.notna(), None)
                    conn.execute(table.insert(), records.to_dict("records"))
            conn.execute(self.done.insert(), [{"part": part, "scored": len(scored), "rejected": len(rejects),
                                               "not_eligible": not_eligible, "manifest": manifest}])

    def ranked(self) -> sa.Select:
        """The staged rows with their rank over the whole run (the order of :func:`rank_order`)."""
        s = self.rows.c
        rank = sa.func.row_number().over(order_by=[s.probability.desc(), s.margin.desc(),
                                                   _byte_order(s.lead_id, self.engine.dialect.name)])
        return sa.select(s.lead_id, s.as_of, s.probability, s.score, s.bucket, rank.label("rank"),
                         s.reason_1, s.reason_2, s.reason_3, s.model_version)

    def rejected(self) -> sa.Select:
        r = self.rejects.c
        return sa.select(*(getattr(r, c) for c in REJECT_COLUMNS)).order_by(r.part, r.source, r.row)


def publish_to_database(staging: Staging, table_name: str, rejects_name: str) -> None:
    """Replace this run's (as_of, model_version) rows in the output tables, in one transaction."""
    metadata = sa.MetaData()
    target = output_table(metadata, table_name)
    rejects = rejects_table(metadata, rejects_name)
    _check_columns(staging.engine, target)
    _check_columns(staging.engine, rejects)
    ranked = staging.ranked().subquery()
    with staging.engine.begin() as conn:
        for table in (target, rejects):
            conn.execute(sa.delete(table).where(table.c.as_of == staging.as_of.to_pydatetime(),
                                                table.c.model_version == staging.model_version))
        conn.execute(target.insert().from_select(OUTPUT_COLUMNS, sa.select(*(ranked.c[c] for c in OUTPUT_COLUMNS))))
        conn.execute(rejects.insert().from_select(REJECT_COLUMNS, staging.rejected()))


def _select_batches(engine: sa.Engine, query: sa.Select) -> Iterator[pd.DataFrame]:
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=READ_BATCH).execute(query)
        columns = list(result.keys())
        for rows in result.partitions():
            frame = _frame(rows, columns)
            if "as_of" in frame.columns:
                frame["as_of"] = pd.to_datetime(frame["as_of"])
            yield frame


def publish_to_files(staging: Staging, out: Path, rejects_out: Path) -> None:
    """Write the ranked rows (best first) and the rejects to files, each appearing at once."""
    query = staging.ranked()
    query = query.order_by(query.selected_columns["rank"])
    write_batches(out, _select_batches(staging.engine, query), OUTPUT_COLUMNS)
    write_batches(rejects_out, _select_batches(staging.engine, staging.rejected()), REJECT_COLUMNS)


# -- the run --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where the scores go: a file (CSV/Parquet) or a database table (+ its rejects table)."""

    path: Path | None = None
    url: str | None = None
    table: str | None = None
    rejects: str | Path | None = None
    location: str | None = None  # the path as given (a cluster URI such as s3a://… survives only as text)

    @property
    def rejects_name(self) -> str:
        if self.rejects is not None:
            return str(self.rejects)
        if self.path is not None:
            stem, _, suffix = (self.location or str(self.path)).rpartition(".")
            return f"{stem}.rejects.{suffix}"
        return f"{self.table}_rejects"

    def __str__(self) -> str:
        return _describe(self.path, self.location, self.url, self.table)


@dataclass
class BatchResult:
    scored: int
    rejected_leads: int
    rejected_interactions: int
    not_eligible: int
    leads_read: int
    partitions: int
    resumed_partitions: int
    buckets: dict[str, int]
    seconds: float
    target: str
    rejects: str


class Progress:
    """A rich progress bar with leads/s and ETA on a terminal, plain log lines otherwise."""

    def __init__(self, echo: Callable[[str], None], total: int, what: str, interactive: bool | None = None):
        self.echo, self.total, self.what = echo, total, what
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.done, self.started, self.last = 0, time.monotonic(), 0.0
        self.bar = None
        if self.interactive:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                       TimeRemainingColumn)

            self.bar = Bar(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task(what, total=total, rate="")
            self.bar.start()

    def advance(self, n: int) -> None:
        if n == 0:
            return
        self.done += n
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.bar is not None:
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f} leads/s")
        elif time.monotonic() - self.last >= 5 or self.done >= self.total:
            self.last = time.monotonic()
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            self.echo(f"{self.what}: {self.done:,}/{self.total:,} leads ({self.done / max(self.total, 1):.0%}), "
                      f"{rate:,.0f} leads/s, ETA {eta:,.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def interactions_read(scorer: LeadScorer, interactions: Source | None) -> Source | None:
    """The interactions a model reads: required for event models, none for one-row-per-lead models."""
    if scorer.spec.mode != "events":
        return None
    if interactions is None:
        raise ConfigError("this model reads interactions: give an interactions file, folder or table")
    return interactions


def run_key(leads: Source, interactions: Source | None, target: Target, as_of: pd.Timestamp, model_version: str,
            chunk_size: int, reasons: bool) -> str:
    """What identifies a run for resuming: inputs (with file sizes and times), output, date, model."""
    blob = json.dumps({"leads": leads.fingerprint(), "interactions": interactions.fingerprint() if interactions else None,
                       "target": str(target), "as_of": str(as_of), "model": model_version, "chunk": chunk_size,
                       "reasons": reasons}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def score_database(
    scorer: LeadScorer,
    params: Params,
    as_of: pd.Timestamp,
    leads: Source,
    interactions: Source | None,
    target: Target,
    chunk_size: int = DEFAULT_CHUNK,
    work_dir: Path | None = None,
    reasons: bool = True,
    echo: Callable[[str], None] = print,
    interactive: bool | None = None,
) -> BatchResult:
    """Score every lead of ``leads`` as of ``as_of`` into ``target``; resumable (see the module doc)."""
    started = time.monotonic()
    as_of = pd.Timestamp(as_of)
    version = str(scorer.meta.get("model_version", ""))
    interactions = interactions_read(scorer, interactions)
    key = run_key(leads, interactions, target, as_of, version, chunk_size, reasons)
    work = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / f"leadtemp-score-{key}"
    work.mkdir(parents=True, exist_ok=True)
    manifest = _partition(scorer, params, as_of, leads, interactions, work, chunk_size, echo)
    n = manifest["partitions"]

    engine = (sa.create_engine(target.url) if target.url else
              sa.create_engine(f"sqlite:///{work / 'staging.sqlite'}"))
    try:
        staging = Staging(engine, key, as_of, version)
        staging.create()
        done = staging.finished(manifest["id"])
        resumed = len(done)
        lead_parts = _PartitionWriter(work / "parts", "leads", n, lead_schema(scorer))
        event_parts = _PartitionWriter(work / "parts", "events", n, EVENT_SCHEMA)
        if done:
            echo(f"resuming: {len(done)} of {n} partitions already scored")
        progress = Progress(echo, manifest["leads"], "scoring", interactive)
        progress.advance(sum(manifest["lead_rows"][k] for k in done))
        for k in range(n):
            if k in done:
                continue
            part_leads = lead_parts.read(k)
            scored, rejects, not_eligible = score_partition(part_leads, event_parts.read(k), scorer, as_of, reasons)
            staging.write(k, scored, rejects, not_eligible, manifest["id"])
            done[k] = (len(scored), len(rejects), not_eligible)
            progress.advance(len(part_leads))
        progress.close()
        if target.path is not None:
            publish_to_files(staging, target.path, Path(target.rejects_name))
        else:
            publish_to_database(staging, target.table, str(target.rejects_name))
        with engine.connect() as conn:
            s = staging.rows.c
            buckets = dict(conn.execute(sa.select(s.bucket, sa.func.count()).group_by(s.bucket)).all())
            r = staging.rejects.c
            rejected = dict(conn.execute(sa.select(r.source, sa.func.count()).group_by(r.source)).all())
        staging.drop()
    finally:
        engine.dispose()
    shutil.rmtree(work, ignore_errors=True)
    return BatchResult(
        scored=sum(v[0] for v in done.values()), rejected_leads=int(rejected.get("leads", 0)),
        rejected_interactions=int(rejected.get("interactions", 0)),
        not_eligible=sum(v[2] for v in done.values()), leads_read=manifest["leads"], partitions=n,
        resumed_partitions=resumed, buckets={b: int(buckets.get(b, 0)) for b in ("hot", "warm", "cold")},
        seconds=time.monotonic() - started, target=str(target), rejects=str(target.rejects_name))


def _partition(scorer: LeadScorer, params: Params, as_of: pd.Timestamp, leads: Source, interactions: Source | None,
               work: Path, chunk_size: int, echo: Callable[[str], None]) -> dict:
    """Step 1 (see the module doc); returns the manifest, reused when a previous run finished the step."""
    manifest_path = work / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    parts = work / "parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    n = max(1, math.ceil(leads.count() / chunk_size))
    # Months from row order need the whole table in its order: read it at once.
    size = None if params.data.created_from_row_order is not None else READ_BATCH
    lead_parts = _PartitionWriter(parts, "leads", n, lead_schema(scorer))
    read = 0
    lead_rows = np.zeros(n, dtype=np.int64)
    for batch in leads.batches(size):
        frame = canonical_leads(batch, str(leads), params, scorer, read + 1)
        lead_rows += np.bincount(partition_of(frame[LEAD_ID].to_numpy(dtype=object), n), minlength=n)
        lead_parts.add(frame)
        read += len(batch)
    lead_parts.close()
    echo(f"read {read:,} leads from {leads} into {n} partitions")
    events_read = 0
    if interactions is not None:
        event_parts = _PartitionWriter(parts, "events", n, EVENT_SCHEMA)
        for batch in interactions.batches(READ_BATCH):
            event_parts.add(canonical_events(batch, str(interactions), params, events_read + 1, as_of))
            events_read += len(batch)
        event_parts.close()
        echo(f"read {events_read:,} interactions from {interactions}")
    manifest = {"id": hashlib.sha256(f"{work}|{time.time_ns()}".encode()).hexdigest()[:12], "partitions": n,
                "leads": read, "interactions": events_read, "lead_rows": lead_rows.tolist()}
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_path)
    return manifest
