"""Files: reading and writing tables (atomically), hashing inputs, copying model folders."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leadtemp.adapters.paths import file_mode, storage_errors
from leadtemp.core.config import Params
from leadtemp.core.errors import ConfigError, LeadtempError, SchemaError
from leadtemp.core.schema import DateRules, empty_interactions, validate_interactions, validate_leads

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _format(path: Path, reading: bool = False) -> str:
    """``csv`` or ``parquet`` by the file's suffix; a gzip-compressed CSV (``.csv.gz``) is read, never written."""
    if reading and path.name.lower().endswith(".csv.gz"):
        return "csv"
    try:
        return TABLE_SUFFIXES[path.suffix.lower()]
    except KeyError:
        known = sorted(TABLE_SUFFIXES) + ([".csv.gz"] if reading else [])
        raise SchemaError(f"{path}: unsupported file type; use one of {known}") from None


def read_table(path: str | Path, separator: str = ",", notes: list[str] | None = None) -> pd.DataFrame:
    """A CSV (or gzip-compressed ``.csv.gz``) or Parquet file as a DataFrame. CSV cells are all read as text (empty = missing): ids and
    categories stay exactly as written (``000123``), and numbers and dates are parsed by their role
    in :mod:`leadtemp.core.schema`, never guessed here. A CSV's empty rows at the end of the file (``,,,,``,
    as Excel leaves them) are skipped, with a note in ``notes``."""
    path = Path(path)
    kind = _format(path, reading=True)
    if not path.is_file():
        raise SchemaError(f"{path}: file not found")
    try:
        if kind == "csv":
            frame = check_separator(read_csv(path, separator), path, separator)
            if skipped := blank_tail(frame):
                frame = frame.iloc[:-skipped]
                if notes is not None:
                    notes.append(skipped_note(path, skipped))
            return frame
        return pd.read_parquet(path)
    except LeadtempError:
        raise
    except (ValueError, OSError) as exc:
        raise unreadable(path, exc) from exc


def read_csv(path: Path, separator: str, **options) -> pd.DataFrame:
    """``pd.read_csv`` with every cell as text; a row with more fields than the header, in a file whose header
    holds another separator, is a wrong ``data.csv_separator`` (:func:`check_separator`), not a parser error."""
    try:
        return pd.read_csv(path, sep=separator, dtype=str, low_memory=False, **options)
    except pd.errors.ParserError:
        check_separator(pd.read_csv(path, sep=separator, dtype=str, nrows=0), path, separator)
        raise


def blank_tail(frame: pd.DataFrame) -> int:
    """How many rows at the end of a CSV's frame have every cell empty (or only spaces): no row at all, but the
    ``,,,,`` lines a spreadsheet leaves below its data. Empty rows before a filled one are rows (row numbers in
    messages stay those of the file), and refused or rejected as such."""
    filled = frame.notna().to_numpy().any(axis=1) if frame.shape[1] else np.zeros(len(frame), dtype=bool)
    end = len(frame)
    while end > 0 and not (filled[end - 1] and any(isinstance(v, str) and v.strip() for v in frame.iloc[end - 1])):
        end -= 1
    return len(frame) - end


def skipped_note(path: str | Path, rows: int) -> str:
    return f"{path}: skipped {rows:,} empty row(s) at the end of the file (every cell empty)"


def unreadable(path: Path, exc: BaseException) -> SchemaError:
    """Why a table file cannot be read, in one line that names it."""
    kind = TABLE_SUFFIXES.get(path.suffix.lower(), "table")
    if isinstance(exc, UnicodeDecodeError):
        return SchemaError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8")
    if isinstance(exc, pd.errors.EmptyDataError):
        return SchemaError(f"{path}: the file is empty (no header, no rows)")
    text = " ".join(str(exc).split())[:200]
    return SchemaError(f"{path}: cannot be read as {kind}: {text}")


def check_separator(frame: pd.DataFrame, path: Path, separator: str) -> pd.DataFrame:
    """A CSV read as one column whose name holds another separator was read with the wrong one."""
    header = str(frame.columns[0]) if frame.shape[1] == 1 else ""
    found = {other: header.count(other) for other in ",;\t|" if other != separator and other in header}
    if found and separator not in header:
        likely = max(found, key=found.get)
        shown = header if len(header) <= 40 else header[:40] + "\u2026"
        raise SchemaError(f"{path}: the header has 1 column {shown!r}: is data.csv_separator {likely!r}? "
                          f"(it is {separator!r})")
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write CSV or Parquet atomically: to a temporary file beside the target, then rename."""
    write_batches(path, iter([frame]), list(frame.columns))
    return Path(path)


def _stale_temporaries(path: Path) -> list[Path]:
    """Temporary files of :func:`write_batches` for ``path`` whose writer process is gone (killed while writing).

    Only leadtemp's own pattern, ``.NAME.PID.XXXXXXXX.tmp``; a temporary file of a writer still
    running (another run writing the same output) is left alone.
    """
    if os.name != "posix":  # no cheap "is this process alive?" there: leave them
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]{{8}}\.tmp")
    stale = []
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match is None or candidate.is_symlink() or not candidate.is_file():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            stale.append(candidate)
        except (PermissionError, OverflowError, ValueError):  # alive (another user's) or no such pid
            continue
    return stale


def write_batches(path: str | Path, batches: Iterator[pd.DataFrame], columns: list[str]) -> int:
    """Stream frames into one CSV or Parquet file (by extension) through a temporary file beside it,
    renamed into place at the end, so readers see the whole file or none. Returns the rows written.

    The file gets the permissions ``open()`` gives a new file (0o666 less the umask), also when it
    replaces one. Permission denied, a full disk and the like raise :class:`StorageError` naming the file.
    """
    path = Path(path)
    parquet = _format(path) == "parquet"
    with storage_errors(f"cannot write {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in _stale_temporaries(path):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, file_mode())  # mkstemp makes it 0o600
    rows, writer = 0, None
    try:
        with storage_errors(f"cannot write {path}"):
            for i, frame in enumerate(batches):
                frame = frame[columns]
                rows += len(frame)
                if parquet:
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table.cast(writer.schema))
                else:
                    frame.to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0, index=False)
            if parquet and writer is None:  # no batch at all: still a readable, empty file
                pd.DataFrame(columns=columns).to_parquet(tmp, index=False)
            elif not parquet and rows == 0:
                pd.DataFrame(columns=columns).to_csv(tmp, index=False)
            if writer is not None:
                writer.close()
            os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows


def replace_dir(source: str | Path, target: str | Path) -> None:
    """Copy a folder to ``target`` so that readers never see it half-written.

    ``target`` is replaced only when it is a model folder (it holds an ``MLmodel`` file, as every
    export does); any other existing folder is refused, never removed. The copy is made in
    ``.NAME.staging`` beside it and the old one moved to ``.NAME.old``: names of leadtemp's own.
    """
    target = Path(target)
    if target.exists() and not (target / "MLmodel").is_file():
        raise ConfigError(f"{target} exists and is not a model folder leadtemp exported (no MLmodel in it); "
                          "leadtemp does not replace it: move it away or set mlflow.export_dir to another folder")
    staging = target.with_name(f".{target.name}.staging")
    old = target.with_name(f".{target.name}.old")
    with storage_errors(f"cannot write {target}"):
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)


def load_leads(params: Params, path: str | Path | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """The leads table under leadtemp's column names (see :func:`leadtemp.schema.validate_leads`); ``notes``
    collects what the user should hear about the reading (empty rows skipped)."""
    d = params.data
    path = Path(path or d.leads)
    return validate_leads(read_table(path, d.csv_separator, notes), str(path), d.categorical, d.numeric, columns=d.columns,
                          missing_values=d.missing_values, row_order=d.created_from_row_order,
                          dates=DateRules.of(d))


def load_interactions(params: Params, leads: pd.DataFrame, path: str | Path | None = None,
                      notes: list[str] | None = None) -> pd.DataFrame:
    """The interaction log, or an empty one when params declares none."""
    path = path or params.data.interactions
    if path is None:
        return empty_interactions()
    d = params.data
    return validate_interactions(read_table(path, d.csv_separator, notes), str(path), leads["lead_id"], d.interaction_columns,
                                 dates=DateRules.of(d), stages=params.stage_names())


def load_data(params: Params, leads_path=None, interactions_path=None,
              notes: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    leads = load_leads(params, leads_path, notes)
    return leads, load_interactions(params, leads, interactions_path, notes)


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_hashes(params: Params) -> dict[str, str]:
    """SHA-256 of the input files named in params (a run's data fingerprint); folders and tables have none."""
    paths = {"leads": params.data.leads, "interactions": params.data.interactions}
    return {k: sha256(v) for k, v in paths.items() if v and Path(v).is_file()}
