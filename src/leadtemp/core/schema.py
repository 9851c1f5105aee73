"""The data contract and its checks: where bad input is caught, once, and reported precisely.

Leads: ``lead_id`` (text), ``created_at`` (timestamp), optional ``converted_at`` (timestamp, empty
when not converted), optional ``lost_at`` (timestamp: closed as lost or disqualified, empty while
open; mapped by ``data.columns.lost_at``) and attribute columns declared in params.yaml.
Interactions: ``lead_id``, ``timestamp``, ``type`` (free vocabulary), ``direction`` (``inbound`` =
the lead acted, ``outbound`` = we acted), optional numeric ``value``.

Row numbers in messages count data rows from 1 (the first row after a CSV header is row 1).
Example rows show the lead id and the offending value as written (a time before the creation also the
creation's), never personal columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadtemp.core.config import Data, InteractionColumns, LeadColumns, RowOrderTime
from leadtemp.core.errors import SchemaError

LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL = "lead_id", "created_at", "converted_at", "label"
LOST_AT = "lost_at"  # when the CRM closed the lead as lost or disqualified (NaT: open, or no such column)
REFERRED_BY = "referred_by"  # the id of whoever referred the lead (<NA>: nobody); only when data.columns.referred_by maps it
TIMESTAMP, TYPE, DIRECTION, VALUE = "timestamp", "type", "direction", "value"
STAGE, OUTCOME = "stage", "outcome"  # the funnel: a stage row's stage name, a task's outcome (text; empty: none)
LEAD_RATING, TASK_RATING = "lead_rating", "task_rating"  # the rep's ratings of the lead and of the task (numbers)
# Task outcomes a row may carry (data.interaction_columns.outcome), worst to best: calls attempted and meetings.
TASK_OUTCOMES = ("no_show", "no_answer", "voicemail", "reached", "booked", "held")
DIRECTIONS = ("inbound", "outbound")
MAX_EXAMPLES = 5
# LightGBM caps numbers at +-1e300 as its infinity (Common::AvoidInf): anything that large is no measurement.
NUMBER_LIMIT = 1e300


class RowProblems:
    """Row-level problems collected instead of raised (batch scoring): each row keeps its first one.

    Validation with a collector goes on past bad values (they become missing) so the caller can
    reject exactly the rows at fault and score the rest.
    """

    def __init__(self, n: int):
        self.reason = np.full(n, None, dtype=object)

    def add(self, column: str, mask: np.ndarray, what: str) -> None:
        new = mask & pd.isna(self.reason)
        self.reason[new] = f"column '{column}': {what}"

    @property
    def bad(self) -> np.ndarray:
        return ~pd.isna(self.reason)


def _written(value: object) -> str:
    """A cell in a message as the user wrote it: text quoted, a timestamp as text, a number plainly, nothing as
    ``empty`` (never Python's ``Timestamp('…')``, ``nan`` or ``np.float64(…)``)."""
    if value is None or value is pd.NaT or (not isinstance(value, (str, bytes)) and np.ndim(value) == 0
                                            and pd.isna(value)):
        return "empty"
    if isinstance(value, (pd.Timestamp, datetime, np.datetime64)):
        return repr(str(pd.Timestamp(value)))
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _fail(source: str, column: str, mask: np.ndarray | pd.Series, what: str, frame: pd.DataFrame,
          id_column: str | None = LEAD_ID, problems: RowProblems | None = None, hint: str = "",
          also: Iterable[str | None] = ()) -> None:
    """Raise (or, with ``problems``, record) the rows of ``mask``: the file, column, count and example rows, each
    with its id, the value at fault and the values of the columns ``also`` (as written)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    if problems is not None:
        problems.add(column, mask, what)
        return
    positions = np.flatnonzero(mask)
    examples = []
    for pos in positions[:MAX_EXAMPLES]:
        row = frame.iloc[pos]
        shown = {id_column: row.get(id_column)} if id_column in frame.columns and column != id_column else {}
        shown[column] = row.get(column)
        shown |= {c: row.get(c) for c in also if c is not None and c in frame.columns and c not in shown}
        examples.append(f"row {pos + 1} {{" + ", ".join(f"{k!r}: {_written(v)}" for k, v in shown.items()) + "}")
    raise SchemaError(
        f"{source}: column '{column}': {len(positions)} row(s) {what}; e.g. " + "; ".join(examples)
        + (f" ({hint})" if hint else "")
    )


def is_among(values: pd.Series, allowed: Iterable) -> np.ndarray:
    """``values.isin(allowed)`` as a bool array, in one Arrow hash lookup for text.

    pandas 3's ``isin`` on its Arrow-backed ``str`` builds one Arrow scalar per allowed value: 9 ms to
    find 34,000 events' leads among 1,000 ids, against 0.5 ms here. Anything but text goes to pandas.
    """
    allowed = np.asarray(allowed if isinstance(allowed, (pd.Index, pd.Series, np.ndarray)) else list(allowed), dtype=object)
    if not (pd.api.types.is_string_dtype(values.dtype) and values.dtype != object):
        return values.isin(allowed).to_numpy(dtype=bool)
    try:
        value_set = pa.array(allowed, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an id that is not text: pandas' own rules
        return values.isin(allowed).to_numpy(dtype=bool)
    found = pc.is_in(pa.array(values), value_set=value_set)
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def without_leading_zeros(ids: pd.Series) -> pd.Series:
    """Ids as text with their leading zeros dropped ('00645875' -> '645875'; '0' stays '0')."""
    return ids.astype("string").str.replace(r"^0+(?=.)", "", regex=True)


ZEROS_HINT = ("they match once leading zeros are dropped: were the ids read as numbers somewhere, e.g. by a "
              "spreadsheet? Write them as text, as in the leads table")


def zeros_match(unknown: pd.Series, lead_ids: pd.Series | Iterable) -> tuple[str, str] | None:
    """An interaction lead id of ``unknown`` (a sample is enough) and the lead id it names once leading zeros are
    dropped on both sides, or None: the ids were not (only) stripped of their zeros."""
    if unknown.empty:
        return None
    lead_ids = pd.Series(lead_ids if isinstance(lead_ids, pd.Series) else list(lead_ids), dtype="string")
    bare = without_leading_zeros(lead_ids)
    found = is_among(bare, without_leading_zeros(unknown).dropna())
    if not found.any():
        return None
    lead = str(lead_ids[found].iloc[0])
    same = without_leading_zeros(unknown) == without_leading_zeros(pd.Series([lead], dtype="string")).iloc[0]
    return str(unknown[same.fillna(False).to_numpy(dtype=bool)].iloc[0]), lead


def _require_columns(frame: pd.DataFrame, required: Iterable[str], source: str) -> None:
    if missing := sorted(set(required) - set(frame.columns)):
        raise SchemaError(f"{source}: missing columns {missing}; found {sorted(map(str, frame.columns))}")


@dataclass(frozen=True)
class DateFormat:
    """One way a column writes its timestamps: a date part with an optional time after it."""

    name: str                  # as messages and data.date_format spell it
    formats: tuple[str, ...]   # tried in order on each value ("ISO8601" and "mixed" are pandas' own)
    day_first: bool | None = None  # which of two small numbers is the day (None: no such question)

    @property
    def shape(self) -> str:
        """A regular expression every value this format reads matches (a cheap filter before parsing)."""
        return _shape(self.formats[0]) + r"(?:[ T].*)?"


_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f")
_DIRECTIVES = {"d": r"\d{1,2}", "m": r"\d{1,2}", "Y": r"\d{4}", "y": r"\d{2}", "H": r"\d{1,2}", "I": r"\d{1,2}",
               "M": r"\d{1,2}", "S": r"\d{1,2}", "f": r"\d{1,9}", "%": "%"}


def _shape(fmt: str) -> str:
    if fmt == "ISO8601":
        return r"\d{4}-?\d{2}.*"
    if fmt == "mixed":
        return r".*"
    parts = re.split(r"(%.)", fmt)
    return "".join(_DIRECTIVES.get(p[1], ".+?") if p.startswith("%") and len(p) == 2 else re.escape(p) for p in parts)


def declared_format(fmt: str) -> DateFormat:
    """``data.date_format``; a format without a time also reads values with a time after the date."""
    timed = any(d in fmt for d in ("%H", "%I", "%M", "%S", "%p", "%X", "%c", "%T"))
    return DateFormat(fmt, (fmt,) if timed else tuple(fmt + t for t in _TIMES))


def _numeric(date: str, day_first: bool | None = None) -> DateFormat:
    return DateFormat(date, tuple(date + t for t in _TIMES), day_first)


ISO = DateFormat("ISO 8601 (YYYY-MM-DD[THH:MM[:SS]][+HH:MM])", ("ISO8601",))
MONTH_NAMES = DateFormat("month names (5 March 2024, Mar 5, 2024)", ("mixed",))
# The forms recognised without data.date_format, in groups of one shape; a column takes the form that
# reads most of its values, and within a group the numbers decide whether the day or the month comes first.
KNOWN_FORMATS = ((ISO,), (_numeric("%Y/%m/%d"),), (_numeric("%d/%m/%Y", True), _numeric("%m/%d/%Y", False)),
                 (_numeric("%d.%m.%Y", True),), (_numeric("%d-%m-%Y", True), _numeric("%m-%d-%Y", False)),
                 (MONTH_NAMES,))
# A month named in letters and a 4-digit year: the only values handed to dateutil (pandas' "mixed").
_MONTH_WORD = (r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b.*\b\d{4}\b|"
               r"\b\d{4}\b.*\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b")


@dataclass
class DateRules:
    """How timestamps are read: one format per text column, given or inferred, inside a plausible window.

    ``date_format`` (strftime) applies to every text timestamp column, or, a mapping, to the columns it
    names; None (or a column the mapping leaves out) infers each column's format from all its values.
    Timestamps outside ``[earliest, latest)`` are bad values. ``settled`` keeps the format each
    (source, column) was read with, so the later batches of a streamed table are read
    the same way, and a column that alone cannot tell day from month follows another column of its table.
    Columns that are already datetimes (Parquet, databases) are taken as they are.
    """

    date_format: str | dict[str, str] | None = None
    earliest: str = "1970-01-01"
    latest: str = "2100-01-01"
    settled: dict[tuple[str, str], DateFormat] = field(default_factory=dict)
    timed: set[tuple[str, str]] = field(default_factory=set)  # columns seen with a time of day (never date columns)

    @classmethod
    def of(cls, data: Data) -> DateRules:
        return cls(data.date_format, data.earliest, data.latest)

    @property
    def window(self) -> str:
        return f"outside {self.earliest} .. {self.latest} (data.earliest, data.latest)"

    def declared(self, column: str) -> tuple[str | None, str]:
        """The format declared for ``column`` (None: infer it) and how params spell it, for messages."""
        if isinstance(self.date_format, dict):
            fmt = self.date_format.get(column)
            return fmt, f"data.date_format of {column!r} is {fmt!r}"
        return self.date_format, f"data.date_format is {self.date_format!r}"

    def is_date_column(self, parsed: pd.Series, source: str, column: str) -> bool:
        """Whether a column carries no time of day: every value at midnight, as a date without a time reads.

        Once a column (of a streamed table) has shown a time of day, it stays a timestamp column.
        """
        key = (source, column)
        values = parsed.dropna()
        if key not in self.timed and len(values) and not (values == values.dt.normalize()).all():
            self.timed.add(key)
        return key not in self.timed and len(values) > 0


def _read_with(fmt: DateFormat, text: pd.Series) -> pd.Series:
    """``text`` read in one format, UTC-aware; values it does not read are NaT.

    Each value goes to pandas only in the variant whose shape it has: parsing values that do not
    fit a format is what costs time.
    """
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if fmt.formats == ("mixed",):
        fits = text.str.contains(_MONTH_WORD)
    else:
        fits = text.str.fullmatch(fmt.shape)
    todo = fits.fillna(False).to_numpy(dtype=bool)
    for f in fmt.formats:
        if not todo.any():
            break
        values = text[todo]
        if len(fmt.formats) > 1:
            values = values[values.str.fullmatch(_shape(f)).fillna(False).to_numpy(dtype=bool)]
        got = pd.to_datetime(values, format=f, errors="coerce", utc=True).astype("datetime64[us, UTC]")
        got = got[got.notna()]
        out.loc[got.index] = got
        todo = todo & out.isna().to_numpy()
    return out


def _infer_format(text: pd.Series, source: str, column: str,
                  rules: DateRules) -> tuple[DateFormat | None, pd.Series, bool]:
    """The known format that reads most of the column, the column read with it, and whether that settles it.

    A column that does not say whether the day or the month comes first is refused (see
    :func:`_day_or_month_first`), and so is one that mixes two forms in equal numbers.
    """
    present = int(text.notna().sum())
    results = []
    for group in KNOWN_FORMATS:
        fmt, settle, unsure = group[0], True, None
        if len(group) == 2:
            fits = text.str.fullmatch(fmt.shape).fillna(False).to_numpy(dtype=bool)
            if not fits.any():
                continue
            fmt, settle, unsure = _day_or_month_first(group, text[fits], source, column, rules)
        parsed = _read_with(fmt, text)
        count = int(parsed.notna().sum())
        if count:
            results.append((count, fmt, parsed, settle, unsure))
        if count == present:  # no other form reads a value this one reads
            break
    if not results:
        return None, pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]"), False
    results.sort(key=lambda r: -r[0])
    if len(results) > 1 and results[0][0] == results[1][0]:
        (n, a, *_), (_, b, *_) = results[:2]
        raise SchemaError(f"{source}: column '{column}': mixes date forms, {n} value(s) each as {a.name} and as "
                          f"{b.name}; declare the one it uses in params, e.g. data.date_format: {{{yaml_key(column)}: \"...\"}}")
    _, fmt, parsed, settle, unsure = results[0]
    if unsure is not None:  # the column's own form cannot tell day from month (a minority form is just bad)
        raise SchemaError(unsure)
    return fmt, parsed, settle


def _day_or_month_first(group: tuple[DateFormat, DateFormat], values: pd.Series, source: str, column: str,
                        rules: DateRules) -> tuple[DateFormat, bool, str | None]:
    """Day-first or month-first, from the numbers of the whole column: the order that reads more values.

    When no value has a number above 12 (and the two orders differ somewhere), or both orders read
    as many values, the column alone cannot tell: it follows another column of the same table that
    settled the order, or is refused with the line to add to params. Returns the format and whether
    it settles the column (not when both orders read every value the same, e.g. 01/01/2024), and
    the refusal when it cannot tell (raised only if this form is the column's).
    """
    day_first, month_first = group
    sep = re.escape(day_first.name[2])
    parts = pc.extract_regex(pa.array(values), rf"^(?P<first>\d{{1,2}}){sep}(?P<second>\d{{1,2}}){sep}")
    first, second = (pc.cast(pc.struct_field(parts, [i]), pa.float64()).to_numpy(zero_copy_only=False)
                     for i in (0, 1))
    reads_day_first = int(((second >= 1) & (second <= 12)).sum())
    reads_month_first = int(((first >= 1) & (first <= 12)).sum())
    if reads_day_first != reads_month_first:
        return (day_first if reads_day_first > reads_month_first else month_first), True, None
    differ = first != second
    if not differ.any():
        return day_first, False, None
    orders = {f.day_first for (s, _), f in rules.settled.items() if s == source and f.day_first is not None}
    if len(orders) == 1:
        return (day_first if orders == {True} else month_first), True, None
    why = ("no value has a day above 12" if reads_day_first == len(values)
           else f"as many values read one way as the other, {reads_day_first} each")
    return day_first, False, (f"{source}: column '{column}': dates such as {values[differ].iloc[0]!r} read as "
                              f"\"{day_first.name}\" and as \"{month_first.name}\" ({why}); declare the format in "
                              f"params, e.g. data.date_format: {{{yaml_key(column)}: \"{day_first.name}\"}}")


def yaml_key(column: str) -> str:
    """A column name as a key of a YAML flow mapping: as it is when YAML reads it back as that text, else quoted."""
    import json

    import yaml

    try:
        plain = yaml.safe_load(f"{{{column}: x}}") == {column: "x"}
    except yaml.YAMLError:
        plain = False
    return column if plain else json.dumps(column, ensure_ascii=False)


def parse_timestamps(frame: pd.DataFrame, column: str, source: str, required: bool,
                     id_column: str | None = LEAD_ID, problems: RowProblems | None = None,
                     rules: DateRules | None = None) -> pd.Series:
    """Timestamps as naive datetime64[ns]; tz-aware input is converted to UTC first.

    Text is read in one format for the whole column (``rules.date_format``, or inferred: see
    :class:`DateRules`); values not in that format, and timestamps outside the window, are bad values.
    """
    rules = rules or DateRules()
    raw = frame[column]
    if raw.dtype == object and _holds_datetimes(raw):
        raw = pd.to_datetime(raw, utc=True)  # datetime objects from a database driver: no text to read
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype("string").str.strip()
        text = text.mask(text == "")
        key = (source, column)
        settle = False
        declared, hint = rules.declared(column)
        if declared is not None:
            fmt = declared_format(declared)
        else:
            fmt = rules.settled.get(key)
        if fmt is None:
            fmt, parsed, settle = _infer_format(text, source, column, rules)
        else:
            parsed = _read_with(fmt, text)
        if settle:
            rules.settled[key] = fmt
        if declared is None:
            example = f"data.date_format: {{{yaml_key(column)}: ...}}"
            hint = (f"the column is read as {fmt.name}; declare another format in params, e.g. {example}" if fmt else
                    "no known format reads it: ISO 8601, DD/MM/YYYY, MM/DD/YYYY, DD.MM.YYYY, YYYY/MM/DD or month "
                    f"names, each with an optional HH:MM[:SS]; declare its format in params, e.g. {example}")
        _fail(source, column, text.notna() & parsed.isna(), "are not parsable timestamps", frame, id_column, problems,
              hint)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    outside = parsed.notna() & ((parsed < pd.Timestamp(rules.earliest)) | (parsed >= pd.Timestamp(rules.latest)))
    _fail(source, column, outside.to_numpy(), f"are {rules.window}", frame, id_column, problems)
    parsed = parsed.mask(outside)
    if required:
        _fail(source, column, parsed.isna(), "are empty", frame, id_column, problems)
    return parsed.astype("datetime64[ns]")


def _holds_datetimes(raw: pd.Series) -> bool:
    values = raw.dropna()
    return len(values) > 0 and isinstance(values.iloc[0], datetime) and all(isinstance(v, datetime) for v in values)


MONTHS = {name: i + 1 for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
MONTHS |= {name: i + 1 for i, name in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
MONTHS |= {str(i): i for i in range(1, 13)} | {f"{i:02d}": i for i in range(1, 10)}


def months_from_row_order(frame: pd.DataFrame, rule: RowOrderTime, source: str,
                          id_column: str | None = None) -> pd.Series:
    """First day of each row's month, for a table in time order that names months but not years.

    The first row is in ``rule.start`` (YYYY-MM); the year advances each time the month number drops
    from one row to the next. Only the row order and the month column are read, never a label.
    A gap of a year or more between consecutive rows cannot be seen this way (document it in your
    params file if your data may have one).
    """
    column = rule.month_column
    _require_columns(frame, [column], source)
    text = frame[column].astype("string").str.strip().str.lower()
    number = text.map(MONTHS)
    _fail(source, column, number.isna(), "are not month names or numbers (jan..dec, 1..12)", frame, id_column)
    number = number.to_numpy(dtype=int)
    start = pd.Period(rule.start, freq="M")
    if len(number) and number[0] != start.month:
        raise SchemaError(f"{source}: column '{column}': row 1 is month {number[0]}, but "
                          f"data.created_from_row_order.start is {start} (month {start.month})")
    year = start.year + np.concatenate([[0], np.cumsum(np.diff(number) < 0)]) if len(number) else number
    return pd.Series(pd.to_datetime({"year": year, "month": number, "day": 1}) if len(number) else [],
                     index=frame.index, dtype="datetime64[ns]")


POSITIVE = frozenset({"1", "1.0", "true", "yes", "y"})
NEGATIVE = frozenset({"0", "0.0", "false", "no", "n"})


def parse_label(frame: pd.DataFrame, column: str, source: str, id_column: str | None,
                problems: RowProblems | None = None) -> pd.Series:
    """A final outcome as nullable 0/1; empty means the lead has no outcome yet (open)."""
    text = frame[column].astype("string").str.strip().str.lower()
    text = text.mask(text == "")
    _fail(source, column, (text.notna() & ~text.isin(POSITIVE | NEGATIVE)).to_numpy(),
          "are not an outcome (use 1/0, yes/no, true/false or y/n; empty = no outcome yet)", frame, id_column,
          problems)
    label = pd.Series(np.where(text.isin(POSITIVE).to_numpy(dtype=bool), 1, 0), index=frame.index).astype("Int8")
    return label.mask(text.isna().to_numpy())


def _mark_missing(frame: pd.DataFrame, tokens: Iterable[str]) -> pd.DataFrame:
    """Cells equal to one of ``tokens`` (after trimming) become missing, in text columns only."""
    tokens = list(tokens)
    if not tokens:
        return frame
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_string_dtype(out[column]) or out[column].dtype == object:
            out[column] = out[column].mask(out[column].astype("string").str.strip().isin(tokens).fillna(False))
    return out


def validate_leads(
    leads: pd.DataFrame,
    source: str,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
    columns: LeadColumns | None = None,
    missing_values: Iterable[str] = (),
    row_order: RowOrderTime | None = None,
    problems: RowProblems | None = None,
    dates: DateRules | None = None,
) -> pd.DataFrame:
    """Check the leads table and return a normalised copy under leadtemp's column names.

    Output columns: ``lead_id`` (text), ``created_at`` and ``converted_at`` (datetime, NaT when the
    table has none), ``lost_at`` (datetime, only when ``columns.lost_at`` maps it), ``label`` (nullable
    0/1, only when ``columns.label`` is set; missing from the input = every lead still open), the
    attribute columns, and every other input column untouched.

    With ``problems`` (a :class:`RowProblems` of the table's length), bad values are recorded per row
    instead of raised, and duplicate ids are left to the caller (batch scoring sees a lead's every
    row only after partitioning). Missing columns always raise. ``dates``: how text timestamps are
    read (default: formats inferred per column, the default window).
    """
    columns, dates = columns or LeadColumns(), dates or DateRules()
    categorical, numeric = list(categorical), list(numeric)
    id_col = columns.lead_id
    required = [c for c in (id_col, columns.created_at, columns.lost_at) if c] + categorical + numeric
    _require_columns(leads, required, source)
    frame = _mark_missing(leads.reset_index(drop=True), missing_values)
    n = len(frame)
    if id_col is None:
        ids = pd.Series(np.arange(1, n + 1).astype(str), index=frame.index)
    else:
        ids = frame[id_col].astype("string").str.strip()
        _fail(source, id_col, (ids.isna() | (ids == "")).to_numpy(dtype=bool, na_value=True), "have an empty lead id",
              frame, id_col, problems)
        if problems is None:
            _fail(source, id_col, ids.duplicated(keep=False).to_numpy(), "have a duplicate lead id", frame, id_col)
    roles = {c for c in (id_col, columns.created_at, columns.converted_at, columns.label, columns.lost_at,
                         columns.referred_by) if c}
    out = frame.drop(columns=[c for c in frame.columns
                              if c in roles or c in (LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL, LOST_AT)
                              or (c == REFERRED_BY and columns.referred_by is not None)])
    out.insert(0, LEAD_ID, ids.fillna("").astype(str).to_numpy())
    if row_order is not None:
        created = months_from_row_order(frame, row_order, source, id_col)  # whole-table rule: always raises
    elif columns.created_at is not None:
        created = parse_timestamps(frame, columns.created_at, source, required=True, id_column=id_col,
                                   problems=problems, rules=dates)
    else:
        created = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    out.insert(1, CREATED_AT, created.to_numpy())
    converted = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    if columns.converted_at is not None and columns.converted_at in frame.columns:
        converted = parse_timestamps(frame, columns.converted_at, source, required=False, id_column=id_col,
                                     problems=problems, rules=dates)
        converted = on_creation_day(converted, created, dates.is_date_column(converted, source, columns.converted_at))
        _fail(source, columns.converted_at, (converted < created).to_numpy(), "convert before they were created",
              frame, id_col, problems, also=(columns.created_at,))
    out.insert(2, CONVERTED_AT, converted.to_numpy())
    if columns.lost_at is not None:
        out.insert(3, LOST_AT, _lost_times(frame, columns, source, created, converted, id_col, problems, dates).to_numpy())
    if columns.referred_by is not None:
        out[REFERRED_BY] = _referrers(frame, columns.referred_by, ids, source, id_col, problems).array
    if columns.label is not None:
        label = (parse_label(frame, columns.label, source, id_col, problems) if columns.label in frame.columns
                 else pd.Series(pd.NA, index=frame.index, dtype="Int8"))
        out.insert(3, LABEL, label.to_numpy())
    for column in categorical:
        out[column] = _blank_is_missing(out[column])
    for column in numeric:
        out[column] = parse_numbers(frame, column, source, id_col, problems)
    return out


def _blank_is_missing(values: pd.Series) -> pd.Series:
    """Empty or whitespace-only text is missing, as an empty CSV cell is: a Parquet file, a database table or a
    serve request hands it over as '', which would otherwise be a category of its own."""
    if not (pd.api.types.is_string_dtype(values.dtype) or values.dtype == object):
        return values
    text = values.astype("string") if values.dtype == object else values
    blank = text.str.strip().eq("").to_numpy(dtype=bool, na_value=False)
    if values.dtype == object:  # a str-typed check: the integers and floats of a database column stay as they are
        blank &= np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    return values.mask(blank) if blank.any() else values


def on_creation_day(when: pd.Series, created: pd.Series, date_column: bool) -> pd.Series:
    """A date column's dates on the creation's own day, read as the creation moment.

    A date without a time of day ("Dec 09, 2024") reads as midnight, which on the day the lead was created
    (09/12/2024 01:05) would be before it: the event happened that day, at the creation or after it. The
    creation moment is the earliest time it can have happened, as midnight is for any later day, so no
    snapshot sees it later than it was. An earlier day stays a bad value; a timestamp column is taken as it is.
    """
    if not date_column:
        return when
    same_day = ((when < created) & (when == created.dt.normalize())).to_numpy(dtype=bool, na_value=False)
    return when.mask(same_day, created)


def _lost_times(frame: pd.DataFrame, columns: LeadColumns, source: str, created: pd.Series, converted: pd.Series,
                id_col: str | None, problems: RowProblems | None, dates: DateRules) -> pd.Series:
    """The ``lost_at`` column (``columns.lost_at``, required once mapped), read like ``converted_at``.

    A loss before the creation time, or at the very moment of the conversion, is a bad value: the
    lead cannot be both won and lost at once, and no one closes a lead that did not exist yet.
    """
    lost = parse_timestamps(frame, columns.lost_at, source, required=False, id_column=id_col, problems=problems,
                            rules=dates)
    lost = on_creation_day(lost, created, dates.is_date_column(lost, source, columns.lost_at))
    _fail(source, columns.lost_at, (lost < created).to_numpy(), "are lost before they were created", frame, id_col,
          problems, also=(columns.created_at,))
    _fail(source, columns.lost_at, (lost == converted).to_numpy(),
          "are lost at the moment they converted (converted and lost at once)", frame, id_col, problems,
          also=(columns.converted_at,))
    return lost


def _referrers(frame: pd.DataFrame, column: str, ids: pd.Series, source: str, id_col: str | None,
               problems: RowProblems | None) -> pd.Series:
    """The ``referred_by`` column (``columns.referred_by``, required once mapped): ids as text, empty = nobody.

    A lead naming itself is a bad value. An id that is not in the table is allowed (a customer from
    before the CRM, an outside contact): it counts as referred, by someone whose history is unknown.
    """
    _require_columns(frame, [column], source)
    referrer = frame[column].astype("string").str.strip().replace("", pd.NA)
    _fail(source, column, (referrer == ids).fillna(False).to_numpy(dtype=bool), "refer to themselves (their own lead id)",
          frame, id_col, problems)
    return referrer


def parse_numbers(frame: pd.DataFrame, column: str, source: str, id_column: str | None,
                  problems: RowProblems | None = None) -> np.ndarray:
    """A numeric column as float: text is parsed here (empty = missing); non-numbers and non-finite
    numbers (``inf``, ``1e309``, anything beyond +-1e300) are bad values."""
    given = frame[column]
    if not pd.api.types.is_numeric_dtype(given):
        given = given.astype("string").str.strip().replace("", pd.NA)
    values = pd.to_numeric(given, errors="coerce").astype(float)
    _fail(source, column, (given.notna() & values.isna()).to_numpy(), "are not numbers", frame, id_column, problems)
    huge = (values.abs() >= NUMBER_LIMIT).to_numpy()  # inf included; NaN compares False
    _fail(source, column, huge, "are not finite numbers (inf, or beyond +-1e300)", frame, id_column, problems)
    return values.mask(huge).to_numpy()


def validate_interactions(interactions: pd.DataFrame, source: str, lead_ids: pd.Series | None,
                          columns: InteractionColumns | None = None,
                          problems: RowProblems | None = None, dates: DateRules | None = None,
                          stages: dict[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """Check the interaction log against the leads and return a normalised copy (leadtemp's names).

    ``lead_ids=None`` skips the check that every event's lead exists (batch scoring does it per
    partition); with ``problems``, bad values are recorded per row instead of raised. ``stages``
    (:meth:`Params.stage_names`): the rows of these types name a stage (in ``columns.stage``, else in
    the value column, then read as text, not a number), one of the declared ones: output column ``stage``.
    With ``columns.outcome``, the column ``outcome`` holds each row's task outcome (``TASK_OUTCOMES``); with
    ``columns.lead_rating`` / ``task_rating``, the columns ``lead_rating`` / ``task_rating`` the rep's ratings.
    """
    c = columns or InteractionColumns()
    _require_columns(interactions, [c.lead_id, c.timestamp, c.type, c.direction], source)
    frame = interactions.reset_index(drop=True)
    ids = frame[c.lead_id].astype("string").str.strip()
    _fail(source, c.lead_id, (ids.isna() | (ids == "")).to_numpy(dtype=bool, na_value=True), "have an empty lead id",
          frame, c.lead_id, problems)
    if lead_ids is not None:
        unknown = ~is_among(ids, lead_ids)
        pair = zeros_match(ids[unknown].dropna().head(1000), lead_ids) if unknown.any() else None
        hint = f"{ZEROS_HINT}: {pair[0]!r} is lead {pair[1]!r}" if pair else ""
        _fail(source, c.lead_id, unknown, "refer to leads not in the leads table", frame, c.lead_id, hint=hint)
    # text columns stay Arrow-backed (.array): a numpy round trip builds a Python str per value, twice
    out = pd.DataFrame({LEAD_ID: ids.fillna("").astype(str).array})
    out[TIMESTAMP] = parse_timestamps(frame, c.timestamp, source, required=True, id_column=c.lead_id,
                                      problems=problems, rules=dates).to_numpy()
    kinds = frame[c.type].astype("string").str.strip()
    _fail(source, c.type, (kinds.isna() | (kinds == "")).to_numpy(dtype=bool, na_value=True), "have an empty type",
          frame, c.lead_id, problems)
    out[TYPE] = kinds.fillna("").astype(str).array
    direction = frame[c.direction].astype("string").str.strip().str.lower()
    _fail(source, c.direction, ~direction.isin(DIRECTIONS).fillna(False).to_numpy(),
          f"have a direction other than {list(DIRECTIONS)}", frame, c.lead_id, problems)
    out[DIRECTION] = direction.fillna("").astype(str).array
    staged = np.zeros(len(frame), dtype=bool)
    if stages:
        staged = kinds.isin(list(stages)).to_numpy(dtype=bool, na_value=False)
    if c.value in frame.columns:
        numbers = frame if not staged.any() or c.stage else frame.assign(**{c.value: frame[c.value].mask(staged)})
        out[VALUE] = parse_numbers(numbers, c.value, source, c.lead_id, problems)
    if stages:
        out[STAGE] = _stage_names(frame, kinds, staged, stages, c, source, problems)
    if c.outcome is not None:
        _require_columns(frame, [c.outcome], source)
        text = frame[c.outcome].astype("string").str.strip().str.lower()
        text = text.mask(text == "")
        bad = (text.notna() & ~text.isin(TASK_OUTCOMES)).to_numpy(dtype=bool, na_value=False)
        _fail(source, c.outcome, bad, f"are not a task outcome {list(TASK_OUTCOMES)} (empty: none)", frame, c.lead_id,
              problems)
        out[OUTCOME] = text.mask(bad).array
    for name, column in ((LEAD_RATING, c.lead_rating), (TASK_RATING, c.task_rating)):
        if column is not None:
            _require_columns(frame, [column], source)
            out[name] = parse_numbers(frame, column, source, c.lead_id, problems)
    return out


def _stage_names(frame: pd.DataFrame, kinds: pd.Series, staged: np.ndarray, stages: dict[str, tuple[str, ...]],
                 c: InteractionColumns, source: str, problems: RowProblems | None) -> pd.Series:
    """The stage each row of a stage type names (missing on other rows); a stage not declared is a bad value."""
    column = c.stage or c.value
    if not staged.any() and column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string").array
    _require_columns(frame, [column], source)
    text = frame[column].astype("string").str.strip()
    declared = np.zeros(len(frame), dtype=bool)
    for type_, names in stages.items():
        declared |= (kinds == type_).to_numpy(dtype=bool, na_value=False) & text.isin(names).to_numpy(
            dtype=bool, na_value=False)
    shown = "; ".join(f"{t}: {list(n)}" for t, n in stages.items())
    _fail(source, column, staged & ~declared, f"of a stage type name a stage not declared in events ({shown})",
          frame, c.lead_id, problems, "add it to the type's order or terminal stages, or fix the rows")
    return text.where(staged & declared).array


def empty_interactions() -> pd.DataFrame:
    return pd.DataFrame({
        LEAD_ID: pd.Series(dtype=str),
        TIMESTAMP: pd.Series(dtype="datetime64[ns]"),
        TYPE: pd.Series(dtype=str),
        DIRECTION: pd.Series(dtype=str),
    })
