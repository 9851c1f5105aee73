"""Where batch scoring reads and writes: files, folders of part files, and database tables (SQLAlchemy)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from leadtemp.core.errors import ConfigError, SchemaError

FILE_SUFFIXES = (".csv", ".parquet", ".pq")
READ_BATCH = 100_000  # rows per read from a source


def _describe(path: Path | None, location: str | None, url: str | None, table: str | None) -> str:
    """A source or target in messages: the path as given, or the database (password hidden) and table."""
    if path is not None:
        return location or str(path)
    if url is None:
        return f"catalog table {table!r}"
    return f"{sa.engine.make_url(url).render_as_string(hide_password=True)} table {table!r}"


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

    def identity(self) -> str:
        """Where the source is, whatever it holds: the resolved path, or the database (no password) and table."""
        if self.path is not None and self.url is None:
            return str(self.path.resolve())
        return str(self)

    def fingerprint(self) -> dict:
        """What the source holds, told cheaply: each file's size and modification time, or a table's row
        count and an order-independent checksum of every row (computed by PostgreSQL itself)."""
        if self.path is not None and self.url is None:
            return {"files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files()]}
        if self.url is None:
            return {"source": str(self)}
        engine = sa.create_engine(self.url)
        try:
            return {"source": str(self), **table_checksum(engine, self._table(engine))}
        finally:
            engine.dispose()

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
        from leadtemp.adapters.files import check_separator, read_table

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
                    yield frame_from_rows(result.fetchall(), columns)
                    return
                for rows in result.partitions():
                    yield frame_from_rows(rows, columns)
        finally:
            engine.dispose()


def table_checksum(engine: sa.Engine, table: sa.Table) -> dict:
    """Row count and the sum of a hash of every row, computed in the database: any deleted, added or changed
    row changes it, whatever order the rows come in, and no row travels to this process.

    PostgreSQL hashes with md5 (60 bits of it per row), SQLite with a function registered on the
    connection (CRC-32 per row); another database streams its rows here once (slower, same guarantee).
    """
    with engine.connect() as conn:
        dialect = engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import BIT

            digest = sa.func.md5(sa.cast(sa.tuple_(*table.c), sa.Text))
            value = sa.cast(sa.cast(sa.literal("x") + sa.func.substr(digest, 1, 15), BIT(60)), sa.BigInteger)
        elif dialect == "sqlite":
            conn.connection.driver_connection.create_function(SQLITE_ROW_HASH, -1, _row_hash, deterministic=True)
            value = _sqlite_row_hash(list(table.c))
        else:
            rows, total = 0, 0
            result = conn.execution_options(stream_results=True, yield_per=READ_BATCH).execute(sa.select(table))
            for batch in result.partitions():
                rows += len(batch)
                total += sum(_row_hash(*row) for row in batch)
            return {"rows": rows, "checksum": f"{total:x}"}
        rows, total = conn.execute(sa.select(sa.func.count(), sa.func.sum(value)).select_from(table)).one()
        return {"rows": int(rows), "checksum": f"{dialect}:{int(total or 0):x}"}


SQLITE_ROW_HASH = "leadtemp_row_hash"
SQLITE_MAX_ARGS = 100  # SQLite's default limit on a function's arguments is 127: wider rows are hashed in groups


def _row_hash(*values) -> int:
    """CRC-32 of the row's values as Python writes them (types included): the same in every process, and
    about 3 µs a row (80 million interactions: 4 minutes, against half an hour to score them)."""
    return zlib.crc32(repr(values).encode())


def _sqlite_row_hash(columns: list):
    if len(columns) <= SQLITE_MAX_ARGS:
        return getattr(sa.func, SQLITE_ROW_HASH)(*columns)
    groups = [columns[i:i + SQLITE_MAX_ARGS] for i in range(0, len(columns), SQLITE_MAX_ARGS)]
    return _sqlite_row_hash([_sqlite_row_hash(group) for group in groups])


def frame_from_rows(rows: list, columns: list[str]) -> pd.DataFrame:
    """Database rows as a DataFrame, column by column (pandas inspects row objects one by one otherwise)."""
    if not rows:
        return pd.DataFrame({c: [] for c in columns})
    return pd.DataFrame(dict(zip(columns, (list(values) for values in zip(*rows)))))


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
