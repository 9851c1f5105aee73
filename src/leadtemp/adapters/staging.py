"""The local engine's working state (:class:`LocalScoringRun`, the ``ScoringRun`` port of the batch-scoring
workflow in :mod:`leadtemp.workflows.score`, whose docstring tells the three steps).

Partition files live in the run's own working folder; scored and rejected rows are staged in the output
database (for a file output, a SQLite file in the working folder), one transaction per partition, and
published in one transaction at the end: ranked in SQL, or written beside the target file and renamed
into place. Everything before publishing survives a kill, so the same command resumes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import sqlalchemy as sa

from leadtemp.adapters.files import write_batches
from leadtemp.adapters.paths import RunFolder, storage_errors
from leadtemp.adapters.sources import READ_BATCH, Target, database_errors, frame_from_rows
from leadtemp.core.errors import ConfigError
from leadtemp.core.lifecycle import LOST_SINCE
from leadtemp.core.schema import LEAD_ID
from leadtemp.modelling.horizons import EXPECTED_DAYS
from leadtemp.modelling.partition import REJECT_COLUMNS, partition_of
from leadtemp.modelling.scorer import CHANGE_COLUMNS, OUTPUT_COLUMNS, PREVIOUS_BUCKET, PREVIOUS_PROBABILITY, TREND, WHAT_CHANGED

FLUSH_ROWS = 1_000_000  # partition buffers are written out when they hold this many rows in total


class PartitionFiles:
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
        part = partition_of(table.column(LEAD_ID), self.n)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.n + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            self.buffers.setdefault(int(k), []).append(table.take(order[bounds[k]:bounds[k + 1]]))
        self.buffered += len(frame)
        if self.buffered >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        with storage_errors(f"working folder {self.folder}"):  # a full disk, say
            for k, tables in self.buffers.items():
                if k not in self.writers:
                    self.writers[k] = pq.ParquetWriter(self.path(k), self.schema)
                self.writers[k].write_table(pa.concat_tables(tables))
        self.buffers, self.buffered = {}, 0

    def close(self) -> None:
        self.flush()
        with storage_errors(f"working folder {self.folder}"):
            for writer in self.writers.values():
                writer.close()

    def read(self, k: int, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.path(k)
        with storage_errors(f"working folder {self.folder}"):
            table = pq.read_table(path, columns=columns) if path.exists() else self.schema.empty_table()
            return (table.select(columns) if columns is not None and not path.exists() else table).to_pandas()


def output_table(metadata: sa.MetaData, name: str, margin: bool = False, lost_since: bool = False,
                 changes: bool = False, when: tuple[str, ...] = ()) -> sa.Table:
    """The scores table; ``margin``: the staging form (margin and partition, no rank, always ``lost_since``);
    ``lost_since``: the output of a run that scores lost leads too (``--include-lost``), marked; ``changes``: of a
    run with ``--since``/``--previous`` (previous_probability, previous_bucket, trend, what_changed); ``when``: the
    model's p_<h>d and expected_days columns (none for a model saved before them)."""
    columns = [sa.Column("lead_id", sa.String, primary_key=not margin), sa.Column("as_of", sa.DateTime, primary_key=not margin),
               sa.Column("model_version", sa.String, primary_key=not margin), sa.Column("run_id", sa.String),
               sa.Column("probability", sa.Float(53)),
               sa.Column("score", sa.Integer), sa.Column("bucket", sa.String)]
    columns += [sa.Column("margin", sa.Float(53)), sa.Column("part", sa.Integer)] if margin else [sa.Column("rank", sa.BigInteger)]
    columns += [sa.Column(c, sa.Float(53)) for c in when]
    columns += [sa.Column(f"reason_{i}", sa.Text) for i in (1, 2, 3)]
    if margin or lost_since:
        columns.append(sa.Column(LOST_SINCE, sa.DateTime))
    if changes:
        columns += [sa.Column(PREVIOUS_PROBABILITY, sa.Float(53)), sa.Column(PREVIOUS_BUCKET, sa.String),
                    sa.Column(TREND, sa.String), sa.Column(WHAT_CHANGED, sa.Text)]
    return sa.Table(name, metadata, *columns)


def output_columns(include_lost: bool, changes: bool = False, when: tuple[str, ...] = ()) -> list[str]:
    at = OUTPUT_COLUMNS.index("bucket") + 1
    return (OUTPUT_COLUMNS[:at] + list(when) + OUTPUT_COLUMNS[at:] + ([LOST_SINCE] if include_lost else [])
            + (CHANGE_COLUMNS if changes else []))


def rejects_table(metadata: sa.MetaData, name: str, part: bool = False) -> sa.Table:
    columns = [sa.Column("lead_id", sa.String), sa.Column("as_of", sa.DateTime), sa.Column("model_version", sa.String),
               sa.Column("source", sa.String), sa.Column("row", sa.BigInteger), sa.Column("reason", sa.Text)]
    return sa.Table(name, metadata, *columns, *([sa.Column("part", sa.Integer)] if part else []))


def _byte_order(column, dialect: str):
    """Lead ids compared byte-wise (as Python compares them), whatever the database's collation."""
    collation = {"postgresql": "C", "sqlite": "BINARY"}.get(dialect)
    return sa.collate(column, collation) if collation else column


def _check_columns(engine: sa.Engine, table: sa.Table, create: bool = True) -> None:
    """An existing output table must have leadtemp's columns; it is created when missing (``create``)."""
    inspector = sa.inspect(engine)
    if not inspector.has_table(table.name):
        if create:
            table.create(engine)
        return
    found = {c["name"] for c in inspector.get_columns(table.name)}
    added = {"run_id": "VARCHAR(64)", **{c.name: "DOUBLE PRECISION" for c in table.columns if _is_when(c.name)}}
    if "run_id" in table.columns and (lacking := {c.name for c in table.columns} - found) and lacking <= set(added):
        # A scores table written by a leadtemp from before scores carried their MLflow run, or their p_<h>d and
        # expected_days (every other column in place): the columns are added, empty for the old rows. Any other
        # table is refused below, untouched.
        quote = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            for name in sorted(lacking):
                conn.execute(sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(name)} {added[name]}"))
        found |= lacking
    if missing := [c.name for c in table.columns if c.name not in found]:
        raise ConfigError(f"table {table.name!r} exists without the columns {missing}; "
                          f"write to a new table or add them")


def _is_when(name: str) -> bool:
    """A column of "when, not only if": p_<h>d or expected_days (modelling/horizons.py)."""
    return name == EXPECTED_DAYS or (name.startswith("p_") and name.endswith("d") and name[2:-1].isdigit())


@dataclass
class Staging:
    """Staging tables of one run in the output database, named after the run's key."""

    engine: sa.Engine
    key: str
    as_of: pd.Timestamp
    model_version: str
    changes: bool = False
    when: tuple[str, ...] = ()
    metadata: sa.MetaData = field(default_factory=sa.MetaData)

    def __post_init__(self):
        self.rows = output_table(self.metadata, f"leadtemp_stage_{self.key}", margin=True, changes=self.changes,
                                 when=self.when)
        self.rejects = rejects_table(self.metadata, f"leadtemp_stage_rejects_{self.key}", part=True)
        self.done = sa.Table(f"leadtemp_stage_done_{self.key}", self.metadata,
                             sa.Column("part", sa.Integer, primary_key=True), sa.Column("scored", sa.BigInteger),
                             sa.Column("rejected", sa.BigInteger), sa.Column("not_eligible", sa.BigInteger),
                             sa.Column("manifest", sa.Text), sa.Column("lost", sa.BigInteger))

    def create(self) -> None:
        self.metadata.create_all(self.engine)

    def drop(self) -> None:
        self.metadata.drop_all(self.engine)

    def finished(self, manifest: str) -> dict[int, tuple[int, int, int, int]]:
        """Partitions done under this manifest (staged under another one are discarded)."""
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(self.done)).all()
        if any(r.manifest != manifest for r in rows):
            self.drop()
            self.create()
            return {}
        return {r.part: (r.scored, r.rejected, r.not_eligible, r.lost or 0) for r in rows}

    def write(self, part: int, scored: pd.DataFrame, rejects: pd.DataFrame, not_eligible: int, manifest: str,
              lost: int = 0) -> None:
        """One partition's rows and its done mark, in one transaction (all or nothing)."""
        rows = scored.drop(columns=["as_of", "model_version"]).assign(
            as_of=self.as_of.to_pydatetime(), model_version=self.model_version, part=part)
        if LOST_SINCE not in rows.columns:
            rows[LOST_SINCE] = pd.NaT
        rej = rejects.assign(as_of=self.as_of.to_pydatetime(), model_version=self.model_version, part=part)
        with self.engine.begin() as conn:  # a partition without its done mark has no staged rows either
            for table, frame in ((self.rows, rows), (self.rejects, rej)):
                if len(frame):
                    bulk_insert(conn, table, frame[[c.name for c in table.columns]])
            conn.execute(self.done.insert(), [{"part": part, "scored": len(scored), "rejected": len(rejects),
                                               "not_eligible": not_eligible, "manifest": manifest, "lost": lost}])

    def ranked(self) -> sa.Select:
        """The staged rows with their rank over the whole run (the order of :func:`rank_order`)."""
        s = self.rows.c
        rank = sa.func.row_number().over(order_by=[s.probability.desc(), s.margin.desc(),
                                                   _byte_order(s.lead_id, self.engine.dialect.name)])
        return sa.select(s.lead_id, s.as_of, s.probability, s.score, s.bucket, *(s[c] for c in self.when), rank.label("rank"),
                         s.reason_1, s.reason_2, s.reason_3, s.model_version, s.run_id, s.lost_since,
                         *((s[c] for c in CHANGE_COLUMNS) if self.changes else ()))

    def rejected(self) -> sa.Select:
        r = self.rejects.c
        return sa.select(*(getattr(r, c) for c in REJECT_COLUMNS)).order_by(r.part, r.source, r.row)


def bulk_insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """``frame`` (the table's columns, in order) appended to ``table`` in the connection's transaction.

    PostgreSQL: one ``COPY ... FROM STDIN`` of CSV written by Arrow (every value quoted, so an empty text
    stays empty and only a missing value is NULL; floats in their shortest exact form). SQLite: one
    ``executemany`` of tuples made column by column from Arrow, times in SQLAlchemy's own text form
    (``YYYY-MM-DD HH:MM:SS.ffffff``), so the rows read back as if SQLAlchemy had written them. Others:
    SQLAlchemy's insert.
    """
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        records = frame.astype(object).where(frame.notna(), None)
        conn.execute(table.insert(), records.to_dict("records"))
        return
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    columns = []
    for column in arrow.columns:
        if pa.types.is_timestamp(column.type):  # microseconds, as the DateTime columns keep them
            column = column.cast(pa.timestamp("us", column.type.tz), safe=False)
            if dialect == "sqlite":
                column = pc.strftime(column, "%Y-%m-%d %H:%M:%S")
        columns.append(column)
    arrow = pa.table(columns, names=arrow.column_names)
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in arrow.column_names)
    if dialect == "postgresql":
        text = io.BytesIO()
        pa_csv.write_csv(arrow, text, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"))
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(text.getbuffer())
        return
    marks = ", ".join("?" for _ in arrow.column_names)
    conn.exec_driver_sql(f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})",
                         list(zip(*(c.to_pylist() for c in arrow.columns))))


def publish_to_database(staging: Staging, table_name: str, rejects_name: str, include_lost: bool = False,
                        scores: bool = True) -> None:
    """Replace this run's (as_of, model_version) rows in the output tables, in one transaction; ``scores=False``:
    the rejects table only (a run that scored no lead leaves the scores as they were)."""
    metadata = sa.MetaData()
    target = output_table(metadata, table_name, lost_since=include_lost, changes=staging.changes, when=staging.when)
    columns = output_columns(include_lost, staging.changes, staging.when)
    rejects = rejects_table(metadata, rejects_name)
    _check_columns(staging.engine, target)
    _check_columns(staging.engine, rejects)
    ranked = staging.ranked().subquery()
    with staging.engine.begin() as conn:
        for table in (target, rejects) if scores else (rejects,):
            conn.execute(sa.delete(table).where(table.c.as_of == staging.as_of.to_pydatetime(),
                                                table.c.model_version == staging.model_version))
        if scores:
            conn.execute(target.insert().from_select(columns, sa.select(*(ranked.c[c] for c in columns))))
        conn.execute(rejects.insert().from_select(REJECT_COLUMNS, staging.rejected()))


def _select_batches(engine: sa.Engine, query: sa.Select) -> Iterator[pd.DataFrame]:
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=READ_BATCH).execute(query)
        columns = list(result.keys())
        for rows in result.partitions():
            frame = frame_from_rows(rows, columns)
            for column in ("as_of", LOST_SINCE):
                if column in frame.columns:
                    frame[column] = pd.to_datetime(frame[column])
            yield frame


def publish_to_files(staging: Staging, out: Path, rejects_out: Path, include_lost: bool = False,
                     scores: bool = True) -> None:
    """Write the ranked rows (best first) and the rejects to files, each appearing at once; ``scores=False``: the
    rejects only (a run that scored no lead leaves ``out`` as it was)."""
    if scores:
        query = staging.ranked()
        query = query.order_by(query.selected_columns["rank"])
        write_batches(out, _select_batches(staging.engine, query),
                      output_columns(include_lost, staging.changes, staging.when))
    write_batches(rejects_out, _select_batches(staging.engine, staging.rejected()), REJECT_COLUMNS)


class LocalScoringRun:
    """A batch run on this machine: partition files in a working folder, staging tables in the output
    database (or, for a file output, in a SQLite file in the working folder), published in one step.

    The working folder is ``leadtemp-score-KEY`` inside ``work_dir`` (default: the system temp folder),
    made by leadtemp with its marker and locked while the run is open (see
    :class:`~leadtemp.adapters.paths.RunFolder`); ``work_dir`` itself and anything else in it are never
    touched. The same run again (same key) finds the folder and resumes; a finished run removes it.
    """

    def __init__(self, target: Target, work_dir: Path | None = None, include_lost: bool = False, changes: bool = False,
                 when: tuple[str, ...] = ()):
        """``when``: the scoring model's p_<h>d and expected_days columns (:meth:`LeadScorer.output_columns`)."""
        self._target, self.work_dir, self.include_lost, self.changes = target, work_dir, include_lost, changes
        self.when = tuple(when)
        self.target, self.rejects = str(target), str(target.rejects_name)
        self.folder: RunFolder | None = None
        self.work: Path | None = None
        self.engine: sa.Engine | None = None
        self.staging: Staging | None = None

    def start(self, key: str, as_of: pd.Timestamp, model_version: str) -> None:
        self.key, self.as_of, self.model_version = key, as_of, model_version
        base = Path(self.work_dir) if self.work_dir else Path(tempfile.gettempdir())
        self.folder = RunFolder.open(base, f"leadtemp-score-{key}", key)
        self.work = self.folder.path
        if self._target.url is not None:  # the output database: reachable and writable before any work
            try:
                staging = self._staging()
                with self._errors():
                    metadata = sa.MetaData()
                    _check_columns(staging.engine, output_table(metadata, self._target.table, lost_since=self.include_lost,
                                                                changes=self.changes, when=self.when), create=False)
                    _check_columns(staging.engine, rejects_table(metadata, str(self._target.rejects_name)), create=False)
            except BaseException:
                self.close(False)
                raise

    def _errors(self):
        """Database failures named after the output database, or the working folder for a file output."""
        if self._target.url is not None:
            return database_errors(self._target.url, str(self._target))
        return database_errors(f"sqlite:///{self.work / 'staging.sqlite'}", f"working folder {self.work}")

    def manifest(self) -> dict | None:
        path = self.work / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else None

    def partitions(self, prefix: str, n: int, schema: pa.Schema, fresh: bool = False) -> PartitionFiles:
        parts = self.work / "parts"  # inside the run's own folder
        if fresh:
            shutil.rmtree(parts, ignore_errors=True)
            with storage_errors(f"working folder {self.work}"):
                parts.mkdir(parents=True)
        return PartitionFiles(parts, prefix, n, schema)

    def save_manifest(self, manifest: dict) -> None:
        path = self.work / "manifest.json"
        tmp = path.with_suffix(".tmp")
        with storage_errors(f"working folder {self.work}"):
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, path)

    def _staging(self) -> Staging:
        """The run's staging tables in the output database (for a file output, a SQLite file in the work folder)."""
        if self.staging is None:
            t = self._target
            with self._errors():
                self.engine = (sa.create_engine(t.url) if t.url else
                               sa.create_engine(f"sqlite:///{self.work / 'staging.sqlite'}"))
                staging = Staging(self.engine, self.key, self.as_of, self.model_version, self.changes, self.when)
                staging.create()
            self.staging = staging
        return self.staging

    def finished(self, manifest_id: str) -> dict[int, tuple[int, int, int, int]]:
        staging = self._staging()
        with self._errors():
            return staging.finished(manifest_id)

    def stage(self, part: int, scored: pd.DataFrame, rejects: pd.DataFrame, not_eligible: int,
              manifest_id: str, lost: int = 0) -> None:
        staging = self._staging()
        with self._errors():
            staging.write(part, scored, rejects, not_eligible, manifest_id, lost)

    def publish(self, scores: bool = True) -> tuple[dict[str, int], dict[str, int]]:
        staging, t = self._staging(), self._target
        with self._errors():
            if t.path is not None:
                publish_to_files(staging, t.path, Path(t.rejects_name), self.include_lost, scores)
            else:
                publish_to_database(staging, t.table, str(t.rejects_name), self.include_lost, scores)
            with self.engine.connect() as conn:
                s = staging.rows.c
                buckets = dict(conn.execute(sa.select(s.bucket, sa.func.count()).group_by(s.bucket)).all())
                r = staging.rejects.c
                rejected = dict(conn.execute(sa.select(r.source, sa.func.count()).group_by(r.source)).all())
            staging.drop()
        return buckets, rejected

    def _drop_unused_staging(self) -> None:
        """Staging tables with no partition staged are dropped: nothing in them to resume."""
        try:
            with self.engine.begin() as conn:
                staged = conn.execute(sa.select(sa.func.count()).select_from(self.staging.done)).scalar_one()
            if staged == 0:
                self.staging.drop()
        except (sa.exc.SQLAlchemyError, OSError):
            pass  # the database cannot be reached now: the error that stopped the run says so

    def close(self, finished: bool) -> None:
        try:
            if self.staging is not None and not finished:
                self._drop_unused_staging()
        finally:
            if self.engine is not None:
                self.engine.dispose()
            if self.folder is not None:
                if finished:
                    self.folder.remove()  # only the folder leadtemp made, marker checked
                else:
                    self.folder.release()  # kept for a resume
                self.folder = None
