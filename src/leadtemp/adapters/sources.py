"""Where batch scoring reads and writes: files, folders of part files, and database tables (SQLAlchemy)."""

from __future__ import annotations

import re
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from leadtemp.adapters.paths import check_separate, check_writable_file, check_writable_folder, is_local, reason
from leadtemp.core.errors import ConfigError, LeadtempError, SchemaError, StorageError

FILE_SUFFIXES = (".csv", ".parquet", ".pq")
READ_BATCH = 100_000  # rows per read from a source
ARROW_DRIVERS = {"sqlite": "adbc_driver_sqlite", "postgresql": "adbc_driver_postgresql"}  # backend -> ADBC module


def hide_password(url: str) -> str:
    """A database URL for messages: the password replaced by ***, even in a URL SQLAlchemy cannot parse."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        return re.sub(r"(//[^:/@]*):[^@]*@", r"\1:***@", url)


def _describe(path: Path | None, location: str | None, url: str | None, table: str | None) -> str:
    """A source or target in messages: the path as given, or the database (password hidden) and table."""
    if path is not None:
        return location or str(path)
    if url is None:
        return f"catalog table {table!r}"
    return f"{hide_password(url)} table {table!r}" if table else hide_password(url)


def _one_line(exc: BaseException, url: str) -> str:
    """A driver's message on one line, without the password (some drivers repeat the connection string)."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    password = None
    try:
        password = sa.engine.make_url(url).password
    except (sa.exc.ArgumentError, ValueError, TypeError):
        pass
    if password:
        text = text.replace(str(password), "***")
    return text[:300]


@contextmanager
def database_errors(url: str, what: str) -> Iterator[None]:
    """Failures of a database or its driver as one line naming ``what`` (the database, password hidden,
    and the table): a bad URL, a missing driver, unreachable, locked, permission denied."""
    try:
        yield
    except LeadtempError:
        raise
    except sa.exc.NoSuchModuleError as exc:
        scheme = url.split(":", 1)[0]
        raise StorageError(f"--db {hide_password(url)}: no database driver for {scheme!r} is installed "
                           "(PostgreSQL: pip install 'leadtemp[postgres]' and a postgresql+psycopg:// URL)") from exc
    except sa.exc.ArgumentError as exc:
        raise StorageError(f"--db {hide_password(url)}: not a database URL ({_one_line(exc, url)}); "
                           "e.g. sqlite:///crm.db or postgresql+psycopg://user@host/crm") from exc
    except ModuleNotFoundError as exc:
        hint = "pip install 'leadtemp[postgres]'" if (exc.name or "").startswith("psycopg") else f"pip install {exc.name}"
        raise StorageError(f"{what}: the database driver {exc.name!r} is not installed ({hint})") from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError, sa.exc.InternalError,
            *_arrow_errors()) as exc:
        text = _one_line(exc, url)
        if "locked" in text.lower():
            text += " (another program is writing to it; try again when it has finished)"
        raise StorageError(f"{what}: {text}") from exc
    except OSError as exc:
        raise StorageError(f"{what}: {reason(exc)}") from exc


def _arrow_errors() -> tuple[type[BaseException], ...]:
    """The errors of an ADBC driver (its DB-API errors), when one is installed."""
    try:
        from adbc_driver_manager import Error
    except ImportError:
        return ()
    return (Error,)


@contextmanager
def file_errors(part: Path) -> Iterator[None]:
    """A file that cannot be read (empty, not UTF-8, a cut Parquet file, unreadable) as one line naming it."""
    from leadtemp.adapters.files import unreadable

    try:
        yield
    except LeadtempError:
        raise
    except (ValueError, OSError) as exc:  # pandas' parser errors, UnicodeDecodeError and ArrowInvalid are ValueErrors
        raise unreadable(part, exc) from exc


def _sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL (None for other databases, memory or URI file names)."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:" \
            or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


def _same_table(url: str | None, a: str, b: str) -> bool:
    """Two table names of one database (or of the Spark catalog: ``url`` None) name the same table. SQLite,
    Spark and most others ignore case; PostgreSQL folds only unquoted lower-case names, and SQLAlchemy quotes
    the others."""
    backend = (url or "").split(":", 1)[0].split("+", 1)[0]
    return a == b if backend == "postgresql" else a.casefold() == b.casefold()


@dataclass(frozen=True)
class Source:
    """A table to read in batches: a CSV/Parquet file, a folder of part files, or a database table."""

    path: Path | None = None
    url: str | None = None
    table: str | None = None
    separator: str = ","
    location: str | None = None  # the path as given (a cluster URI such as s3a://… survives only as text)
    # what the reading skipped, for the user to hear (a CSV's empty rows at its end); the reader empties it
    notes: list[str] = field(default_factory=list, compare=False, hash=False, repr=False)

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
        count and an order-independent checksum of every row (computed by PostgreSQL itself; for SQLite on
        the Arrow batches of its ADBC driver, :func:`arrow_checksum`)."""
        if self.path is not None and self.url is None:
            return {"files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files()]}
        if self.url is None:
            return {"source": str(self)}
        with database_errors(self.url, str(self)):
            engine = sa.create_engine(self.url)
            try:
                table = self._table(engine)
                arrow = _arrow_driver(self.url) if engine.dialect.name == "sqlite" else None
                if arrow is None:
                    return {"source": str(self), **table_checksum(engine, table)}
                declared = _sqlite_declared_types(engine, table)
            finally:
                engine.dispose()
            return {"source": str(self),
                    **arrow_checksum(_arrow_record_batches(arrow, engine.dialect, table, list(table.columns), declared,
                                                           READ_BATCH)[1])}

    def _table(self, engine: sa.Engine) -> sa.Table:
        try:
            return sa.Table(self.table, sa.MetaData(), autoload_with=engine)
        except sa.exc.NoSuchTableError:
            raise SchemaError(f"{self}: no such table") from None

    def check(self) -> None:
        """Before any work: the files exist, or the database is reachable and has the table."""
        if self.path is not None:
            if is_local(self.location or self.path):
                self.files()
            return
        if self.url is None:
            return  # a Spark catalog table: Spark checks it
        sqlite = _sqlite_file(self.url)
        if sqlite is not None and not sqlite.is_file():  # SQLite would create an empty database file
            raise SchemaError(f"{self}: no database file {sqlite}")
        with database_errors(self.url, str(self)):
            engine = sa.create_engine(self.url)
            try:
                self._table(engine)
            finally:
                engine.dispose()

    def count(self) -> int:
        """Rows in the source (an upper bound for CSV: lines after the header)."""
        if self.path is None:
            if self.url is None:
                raise ConfigError(f"{self}: a Spark catalog table; score it with --engine spark, or give --db URL")
            with database_errors(self.url, str(self)):
                engine = sa.create_engine(self.url)
                try:
                    with engine.connect() as conn:
                        return int(conn.execute(sa.select(sa.func.count()).select_from(self._table(engine))).scalar_one())
                finally:
                    engine.dispose()
        total = 0
        for part in self.files():
            with file_errors(part):
                if part.suffix.lower() == ".csv":
                    with open(part, "rb") as fh:
                        total += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b"")) - 1
                else:
                    total += pq.ParquetFile(part).metadata.num_rows
        return max(total, 0)

    def batches(self, size: int | None, columns: tuple[list[str], list[str]] | None = None) -> Iterator[pd.DataFrame]:
        """The rows in batches of ``size`` (None: all at once), in source order. ``columns``: the (required,
        optional) columns the caller reads; a database sends only those it has (all of its columns when a
        required one is missing, for the message that names it). A file gives all its columns."""
        if self.path is None:
            if self.url is None:
                raise ConfigError(f"{self}: a Spark catalog table; score it with --engine spark, or give --db URL")
            yield from self._database_batches(size, columns)
            return
        for part in self.files():
            with file_errors(part):
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
        from leadtemp.adapters.files import check_separator, read_csv, read_table

        if size is None:
            return read_table(part, self.separator, self.notes)
        check_separator(pd.read_csv(part, sep=self.separator, nrows=0, dtype=str), part, self.separator)
        return self._without_blank_tail(part, read_csv(part, self.separator, chunksize=size))  # as read_table

    def _without_blank_tail(self, part: Path, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """The chunks without the file's empty rows at its end (as :func:`read_table`): empty rows at the end of a
        chunk are held back and go out in front of the next one, so row numbers stay the file's."""
        from leadtemp.adapters.files import blank_tail, skipped_note

        held = None
        for chunk in chunks:
            if held is not None:
                chunk, held = pd.concat([held, chunk], ignore_index=True), None
            if skipped := blank_tail(chunk):
                chunk, held = chunk.iloc[:-skipped], chunk.iloc[-skipped:]
            if len(chunk):
                yield chunk
        if held is not None:
            self.notes.append(skipped_note(part, len(held)))

    def _database_batches(self, size: int | None, wanted: tuple[list[str], list[str]] | None = None) -> Iterator[pd.DataFrame]:
        """Arrow record batches from the database's ADBC driver when one is installed (SQLite, PostgreSQL),
        else rows through SQLAlchemy; the same frames either way (:func:`frame_from_arrow`)."""
        with database_errors(self.url, str(self)):
            engine = sa.create_engine(self.url)
            try:
                table = self._table(engine)
                columns = _chosen_columns(table, wanted)
                declared = _sqlite_declared_types(engine, table) if engine.dialect.name == "sqlite" else {}
                arrow = _arrow_driver(self.url)
                if arrow is None:
                    with engine.connect() as conn:
                        result = conn.execution_options(stream_results=True, yield_per=size or READ_BATCH).execute(
                            sa.select(*columns))
                        names = list(result.keys())
                        if size is None:
                            yield frame_from_rows(result.fetchall(), names, exact=True)
                            return
                        for rows in result.partitions():
                            yield frame_from_rows(rows, names, exact=True)
                    return
            finally:
                engine.dispose()
            yield from _arrow_batches(arrow, engine.dialect, table, columns, declared, size)


def _chosen_columns(table: sa.Table, wanted: tuple[list[str], list[str]] | None) -> list[sa.Column]:
    """The table's columns the caller reads (in the table's order); all when ``wanted`` is None or a required
    column is missing (validation then names it, listing the columns found)."""
    if wanted is None or not set(wanted[0]) <= {c.name for c in table.columns}:
        return list(table.columns)
    return [c for c in table.columns if c.name in {*wanted[0], *wanted[1]}]


def _arrow_driver(url: str) -> tuple[object, str] | None:
    """(the ADBC DB-API module, its URI) for a SQLite file or a PostgreSQL URL; None when the driver is not
    installed or for another database (read through SQLAlchemy)."""
    import importlib

    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ARROW_DRIVERS:
        return None
    if backend == "sqlite":
        path = _sqlite_file(url)
        if path is None:
            return None
        uri = str(path)
    else:
        uri = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return importlib.import_module(f"{ARROW_DRIVERS[backend]}.dbapi"), uri
    except ImportError:
        return None


def _sqlite_declared_types(engine: sa.Engine, table: sa.Table) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"PRAGMA table_info({engine.dialect.identifier_preparer.quote(table.name)})").all()
    return {r[1]: (r[2] or "").upper() for r in rows}


def _text_affinity(declared: str) -> bool:
    """SQLite stores only text (or NULL, or a blob) in a column of TEXT affinity: it turns numbers into text."""
    return "INT" not in declared and any(word in declared for word in ("CHAR", "CLOB", "TEXT"))


# Each value of a SQLite column that may hold several storage classes travels in the column of its class, so the
# driver never guesses a type or turns a number into text its own way.
_PARTS = (("t", "CASE WHEN typeof({c}) IN ('text', 'blob') THEN CAST({c} AS TEXT) END", "''"),
          ("i", "CASE WHEN typeof({c}) = 'integer' THEN {c} END", "0"),
          ("r", "CASE WHEN typeof({c}) = 'real' THEN {c} END", "0.0"))
_NATIVE_PG = (sa.String, sa.Integer, sa.Float, sa.Boolean, sa.DateTime, sa.Date)


def _arrow_query(dialect, table: sa.Table, columns: list[sa.Column],
                 declared: dict[str, str]) -> tuple[str, bool, list[tuple[str, str]]]:
    """The SELECT the ADBC driver runs, whether its first row is a typing row to drop, and the (column, part)
    each result column holds (see :func:`frame_from_arrow`).

    SQLite types values, not columns, and the driver guesses a column's type from its first rows (failing or
    rewriting later values of another type): a first row of the right types fixes each result column's type,
    and a column that may mix classes is split by class. PostgreSQL columns have types; those Arrow has no
    exact match for (numeric, uuid, json, enums...) are read as their text, as written.
    """
    q = dialect.identifier_preparer
    name = q.format_table(table)
    if dialect.name == "postgresql":
        exprs = [q.quote(c.name) if isinstance(c.type, _NATIVE_PG) and not isinstance(c.type, sa.Enum)
                 else f"CAST({q.quote(c.name)} AS text) AS {q.quote(c.name)}" for c in columns]
        return f"SELECT {', '.join(exprs)} FROM {name}", False, [(c.name, "v") for c in columns]
    exprs, first, names = [], [], []
    for c in columns:
        col = q.quote(c.name)
        if _text_affinity(declared.get(c.name, "")):
            exprs.append(f"CAST({col} AS TEXT) AS c{len(names)}")
            first.append("''")
            names.append((c.name, "t"))
            continue
        for part, expr, typed in _PARTS:
            exprs.append(f"{expr.format(c=col)} AS c{len(names)}")
            first.append(typed)
            names.append((c.name, part))
    return f"SELECT {', '.join(first)} UNION ALL SELECT {', '.join(exprs)} FROM {name}", True, names


def _arrow_record_batches(arrow: tuple[object, str], dialect, table: sa.Table, columns: list[sa.Column],
                          declared: dict[str, str], batch_rows: int) -> tuple[list[tuple[str, str]], Iterator]:
    """The (column, part) of each result column and the driver's record batches (the typing row dropped)."""
    query, typing_row, names = _arrow_query(dialect, table, columns, declared)

    def batches():
        dbapi, uri = arrow
        nonlocal typing_row
        with dbapi.connect(uri) as conn, conn.cursor() as cursor:
            if dialect.name == "sqlite":
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            cursor.execute(query)
            for batch in cursor.fetch_record_batch():
                if typing_row:
                    batch, typing_row = batch.slice(1), False
                yield batch

    return names, batches()


def _arrow_batches(arrow: tuple[object, str], dialect, table: sa.Table, columns: list[sa.Column],
                   declared: dict[str, str], size: int | None) -> Iterator[pd.DataFrame]:
    names, reader = _arrow_record_batches(arrow, dialect, table, columns, declared, size or READ_BATCH)
    pending, rows, schema = [], 0, None  # the driver's batches, cut again to ``size`` rows (as a cursor's fetches)
    for batch in reader:
        schema = batch.schema
        pending.append(batch)
        rows += batch.num_rows
        while size is not None and rows >= size:
            whole = pa.Table.from_batches(pending, schema)
            yield frame_from_arrow(whole.slice(0, size), names)
            rest = whole.slice(size)
            pending, rows = rest.to_batches(), rest.num_rows
    if schema is None and size is None:  # no batch at all: an empty table
        yield pd.DataFrame({c.name: [] for c in columns})
    elif size is None or rows:
        yield frame_from_arrow(pa.Table.from_batches(pending, schema), names)


def arrow_checksum(batches: Iterator) -> dict:
    """Row count and an order-independent checksum of record batches: the sum (modulo 2**64) of a hash of each
    row, which mixes each column's value hash (text by its bytes, numbers by their bits, NULL and each
    column's place apart). Any deleted, added or changed row changes it; no Python object per value."""
    rows, total = 0, 0
    for batch in batches:
        h = np.zeros(batch.num_rows, dtype=np.uint64)
        for k, column in enumerate(batch.columns):
            h = _mix(h * np.uint64(0x100000001B3) + _value_hash(column) + np.uint64(k + 1))
        rows += batch.num_rows
        total = (total + int(h.sum(dtype=np.uint64))) % 2**64
    return {"rows": rows, "checksum": f"arrow:{total:x}"}


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (uint64 arithmetic wraps, as meant)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _value_hash(column: pa.Array) -> np.ndarray:
    from leadtemp.modelling.partition import text_hash

    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        h = text_hash(column)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_timestamp(kind):
        values = column.cast(pa.float64() if pa.types.is_floating(kind) else pa.int64()).fill_null(0)
        h = _mix(values.to_numpy(zero_copy_only=False).view(np.uint64) ^ np.uint64(0x5851F42D4C957F2D))
    else:
        h = text_hash(column.cast(pa.large_string()))
    valid = np.asarray(column.is_valid())
    return np.where(valid, h, np.uint64(0x9E3779B97F4A7C15))


def frame_from_arrow(batch, names: list[tuple[str, str]]) -> pd.DataFrame:
    """An Arrow batch (or table) of a database as :func:`frame_from_rows` makes it of the same rows (``exact``);
    ``names``: the (column, part) of each of its columns.

    A SQLite column read in parts by storage class (``t``, ``i``, ``r``: text, integer, real) is one column
    again: of one class, the column of that class; of several, Python values as SQLite holds them.
    Integers with NULLs stay whole numbers (Python ints), never floats.
    """
    parts: dict[str, dict[str, object]] = {}
    for (base, part), column in zip(names, batch.columns):
        parts.setdefault(base, {})[part] = column
    if batch.num_rows == 0:
        return pd.DataFrame({base: [] for base in parts})
    out = {}
    for base, found in parts.items():
        present = {k: v for k, v in found.items() if v.null_count < len(v)}
        if len(present) > 1:
            values = np.full(batch.num_rows, None, dtype=object)
            for column in present.values():
                valid = np.asarray(column.is_valid())
                values[valid] = np.asarray(column.to_pylist(), dtype=object)[valid]
            out[base] = pd.Series(values, dtype=object)
            continue
        if not present:  # every value NULL: as the rows give them
            out[base] = pd.Series(np.full(batch.num_rows, None, dtype=object), dtype=object)
            continue
        (column,) = present.values()
        if pa.types.is_integer(column.type) and column.null_count:
            out[base] = pd.Series(column.to_pylist(), dtype=object)
        else:
            out[base] = column.to_pandas()
    return pd.DataFrame(out, index=pd.RangeIndex(batch.num_rows))


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

    def outputs(self) -> list[tuple[str, str]]:
        """(option, name) of each output: the scores and the rejects, files or tables."""
        if self.path is not None:
            return [("--out", self.location or str(self.path)),
                    ("--rejects" if self.rejects is not None else "the rejects file", self.rejects_name)]
        return [("--write-table", str(self.table)),
                ("--rejects" if self.rejects is not None else "the rejects table", self.rejects_name)]

    def check(self) -> None:
        """Before any work: each output file can be written (not a folder, its folder takes a new file),
        or the database is reachable."""
        if self.path is not None:
            for what, name in self.outputs():
                if not is_local(name):
                    continue
                if Path(name).suffix.lower() not in FILE_SUFFIXES:
                    raise ConfigError(f"{what} {name}: use a .csv or .parquet file name")
                check_writable_file(what, name)
            return
        if self.url is None:
            return  # a Spark catalog table
        sqlite = _sqlite_file(self.url)
        if sqlite is not None and not sqlite.exists():  # a new database file: its folder must exist and take it
            if not sqlite.parent.is_dir():
                raise StorageError(f"--db {hide_password(self.url)}: no folder {sqlite.parent} for the database file")
            check_writable_file("--db", sqlite)
            return
        with database_errors(self.url, _describe(None, None, self.url, None)):
            engine = sa.create_engine(self.url)
            try:
                sa.inspect(engine).get_table_names()
            finally:
                engine.dispose()


def check_run(leads: Source, interactions: Source | None, target: Target, work_base: Path | None = None,
              local: bool = True) -> None:
    """Everything about where a scoring run reads and writes, checked before it reads a row.

    Refused: an output that is an input (the same file, or inside an input folder), two outputs that are
    one, an output table that is an input table of the same database, an input inside a working folder
    of leadtemp. Then each input must exist (reachable database, existing table), each output be
    writable, and the work folder's place (``work_base``, default the system temp folder) take a new folder.
    ``local``: the local engine (the Spark engine checks its own paths and tables).
    """
    sources = [("leads", leads)] + ([("interactions", interactions)] if interactions is not None else [])
    inputs: list[tuple[str, Path]] = []
    source_databases = set()
    for what, source in sources:
        if source.path is not None and is_local(source.location or source.path):
            inputs.append((what, source.path))
        elif source.url is not None and (sqlite := _sqlite_file(source.url)) is not None:
            inputs.append((f"{what} database", sqlite))
            source_databases.add(sqlite.resolve())
    outputs: list[tuple[str, Path]] = []
    if target.path is not None:
        outputs += [(what, Path(name)) for what, name in target.outputs() if is_local(name)]
    elif target.table is not None:  # a table of --db, or of the Spark catalog
        table, rejects = target.outputs()
        if _same_table(target.url, table[1], rejects[1]):
            raise ConfigError(f"{rejects[0]} {rejects[1]!r} is the same table as --write-table {table[1]!r}; "
                              "give each output its own table")
        for what, source in sources:
            if source.table is not None and source.url == target.url:
                for option, name in (table, rejects):
                    if _same_table(target.url, name, source.table):
                        raise ConfigError(f"{option} {name!r} is the {what} table {source.table!r}"
                                          f"{' of --db' if target.url else ''}: leadtemp never writes over an input; "
                                          "choose another table")
        if target.url is not None and (sqlite := _sqlite_file(target.url)) is not None \
                and sqlite.resolve() not in source_databases:
            outputs.append(("--db", sqlite))
    check_separate(inputs, outputs, ("--work-dir", work_base) if local and work_base is not None else None)
    if not local:
        return
    for _, source in sources:
        source.check()
    target.check()
    check_writable_folder("--work-dir" if work_base is not None else "the temp folder",
                          work_base if work_base is not None else tempfile.gettempdir())


# -- a small result table (the call list) ------------------------------------------------------------------

def check_plan_table(url: str, table: str, columns: list[str], inputs: list[tuple[str, Path]]) -> None:
    """Before any work: the database is reachable and not an input file; an existing ``table`` has ``columns``."""
    if (sqlite := _sqlite_file(url)) is not None:
        check_separate(inputs, [("--db", sqlite)])
    what = f"--write-table {table!r} of --db {hide_password(url)}"
    with database_errors(url, what):
        engine = sa.create_engine(url)
        try:
            inspector = sa.inspect(engine)
            if inspector.has_table(table):
                found = {c["name"] for c in inspector.get_columns(table)}
                if missing := [c for c in columns if c not in found]:
                    raise ConfigError(f"{what} exists without the columns {missing}: it is not a call list of this "
                                      "shape; write to a new table")
        finally:
            engine.dispose()


def write_plan_table(url: str, table: str, frame: pd.DataFrame, as_of: pd.Timestamp) -> None:
    """``frame`` into ``table`` (created when missing), replacing the rows of the same ``as_of``, in one transaction."""
    what = f"--write-table {table!r} of --db {hide_password(url)}"
    with database_errors(url, what):
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                if sa.inspect(conn).has_table(table):
                    target = sa.Table(table, sa.MetaData(), autoload_with=conn)
                    conn.execute(sa.delete(target).where(target.c.as_of == as_of.to_pydatetime()))
                frame.assign(as_of=as_of.to_pydatetime()).to_sql(table, conn, if_exists="append", index=False)
        finally:
            engine.dispose()
