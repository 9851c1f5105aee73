"""Where batch scoring reads and writes: files, folders of part files, and database tables (SQLAlchemy)."""

from __future__ import annotations

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
        from leadtemp.adapters.files import check_separator, read_table

        if size is None:
            return read_table(part, self.separator)
        check_separator(pd.read_csv(part, sep=self.separator, nrows=5, dtype=str), part, self.separator)
        return pd.read_csv(part, sep=self.separator, chunksize=size, dtype=str, low_memory=False)  # as read_table

    def _database_batches(self, size: int | None) -> Iterator[pd.DataFrame]:
        engine = sa.create_engine(self.url)
        try:
            table = self._table(engine)
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=size or READ_BATCH).execute(
                    sa.select(table))
                columns = list(result.keys())
                if size is None:
                    yield frame_from_rows(result.fetchall(), columns, exact=True)
                    return
                for rows in result.partitions():
                    yield frame_from_rows(rows, columns, exact=True)
        finally:
            engine.dispose()


def frame_from_rows(rows: list, columns: list[str], exact: bool = False) -> pd.DataFrame:
    """Database rows as a DataFrame, column by column (pandas inspects row objects one by one otherwise).

    ``exact``: an integer column with NULLs stays integers (object), not floats, so an id or category
    416 reads as text "416", never "416.0".
    """
    if not rows:
        return pd.DataFrame({c: [] for c in columns})
    data = dict(zip(columns, (list(values) for values in zip(*rows))))
    frame = pd.DataFrame(data)
    if exact:
        for column in columns:
            if frame[column].dtype.kind == "f" and any(
                    isinstance(v, int) and not isinstance(v, bool) for v in data[column]):
                frame[column] = pd.Series(data[column], dtype=object, index=frame.index)
    return frame


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
