"""The data contract and its checks: where bad input is caught, once, and reported precisely.

Leads: ``lead_id`` (text), ``created_at`` (timestamp), optional ``converted_at`` (timestamp, empty
when not converted) and attribute columns declared in params.yaml.
Interactions: ``lead_id``, ``timestamp``, ``type`` (free vocabulary), ``direction`` (``inbound`` =
the lead acted, ``outbound`` = we acted), optional numeric ``value``.

Row numbers in messages count data rows from 1 (the first row after a CSV header is row 1).
Example rows show the lead id and the offending value only, never personal columns.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from leadtemp.core.config import InteractionColumns, LeadColumns, RowOrderTime
from leadtemp.core.errors import SchemaError

LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL = "lead_id", "created_at", "converted_at", "label"
TIMESTAMP, TYPE, DIRECTION, VALUE = "timestamp", "type", "direction", "value"
DIRECTIONS = ("inbound", "outbound")
MAX_EXAMPLES = 5



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


def _fail(source: str, column: str, mask: np.ndarray | pd.Series, what: str, frame: pd.DataFrame,
          id_column: str | None = LEAD_ID, problems: RowProblems | None = None) -> None:
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
        examples.append(f"row {pos + 1} {shown}")
    raise SchemaError(
        f"{source}: column '{column}': {len(positions)} row(s) {what}; e.g. " + "; ".join(examples)
    )


def _require_columns(frame: pd.DataFrame, required: Iterable[str], source: str) -> None:
    if missing := sorted(set(required) - set(frame.columns)):
        raise SchemaError(f"{source}: missing columns {missing}; found {sorted(map(str, frame.columns))}")


def parse_timestamps(frame: pd.DataFrame, column: str, source: str, required: bool,
                     id_column: str | None = LEAD_ID, problems: RowProblems | None = None) -> pd.Series:
    """Timestamps as naive datetime64[ns]; tz-aware input is converted to UTC first."""
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype("string").str.strip()
        text = text.mask(text == "")
        parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        _fail(source, column, text.notna() & parsed.isna(), "are not parsable timestamps", frame, id_column, problems)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    if required:
        _fail(source, column, parsed.isna(), "are empty", frame, id_column, problems)
    return parsed.astype("datetime64[ns]")


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
) -> pd.DataFrame:
    """Check the leads table and return a normalised copy under leadtemp's column names.

    Output columns: ``lead_id`` (text), ``created_at`` and ``converted_at`` (datetime, NaT when the
    table has none), ``label`` (nullable 0/1, only when ``columns.label`` is set; missing from the
    input = every lead still open), the attribute columns, and every other input column untouched.

    With ``problems`` (a :class:`RowProblems` of the table's length), bad values are recorded per row
    instead of raised, and duplicate ids are left to the caller (batch scoring sees a lead's every
    row only after partitioning). Missing columns always raise.
    """
    columns = columns or LeadColumns()
    categorical, numeric = list(categorical), list(numeric)
    id_col = columns.lead_id
    required = [c for c in (id_col, columns.created_at) if c] + categorical + numeric
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
    roles = {c for c in (id_col, columns.created_at, columns.converted_at, columns.label) if c}
    out = frame.drop(columns=[c for c in frame.columns if c in roles or c in (LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL)])
    out.insert(0, LEAD_ID, ids.fillna("").astype(str).to_numpy())
    if row_order is not None:
        created = months_from_row_order(frame, row_order, source, id_col)  # whole-table rule: always raises
    elif columns.created_at is not None:
        created = parse_timestamps(frame, columns.created_at, source, required=True, id_column=id_col,
                                   problems=problems)
    else:
        created = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    out.insert(1, CREATED_AT, created.to_numpy())
    converted = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    if columns.converted_at is not None and columns.converted_at in frame.columns:
        converted = parse_timestamps(frame, columns.converted_at, source, required=False, id_column=id_col,
                                     problems=problems)
        shown = frame.assign(**{columns.converted_at: converted})
        _fail(source, columns.converted_at, (converted < created).to_numpy(), "convert before they were created",
              shown, id_col, problems)
    out.insert(2, CONVERTED_AT, converted.to_numpy())
    if columns.label is not None:
        label = (parse_label(frame, columns.label, source, id_col, problems) if columns.label in frame.columns
                 else pd.Series(pd.NA, index=frame.index, dtype="Int8"))
        out.insert(3, LABEL, label.to_numpy())
    for column in numeric:
        given = frame[column]
        if not pd.api.types.is_numeric_dtype(given):
            given = given.astype("string").str.strip().replace("", pd.NA)
        values = pd.to_numeric(given, errors="coerce")
        _fail(source, column, (given.notna() & values.isna()).to_numpy(), "are not numbers", frame, id_col, problems)
        out[column] = values.astype(float).to_numpy()
    return out


def validate_interactions(interactions: pd.DataFrame, source: str, lead_ids: pd.Series | None,
                          columns: InteractionColumns | None = None,
                          problems: RowProblems | None = None) -> pd.DataFrame:
    """Check the interaction log against the leads and return a normalised copy (leadtemp's names).

    ``lead_ids=None`` skips the check that every event's lead exists (batch scoring does it per
    partition); with ``problems``, bad values are recorded per row instead of raised.
    """
    c = columns or InteractionColumns()
    _require_columns(interactions, [c.lead_id, c.timestamp, c.type, c.direction], source)
    frame = interactions.reset_index(drop=True)
    ids = frame[c.lead_id].astype("string").str.strip()
    _fail(source, c.lead_id, (ids.isna() | (ids == "")).to_numpy(dtype=bool, na_value=True), "have an empty lead id",
          frame, c.lead_id, problems)
    if lead_ids is not None:
        _fail(source, c.lead_id, ~ids.isin(pd.Index(lead_ids)).to_numpy(), "refer to leads not in the leads table",
              frame, c.lead_id)
    out = pd.DataFrame({LEAD_ID: ids.fillna("").astype(str).to_numpy()})
    out[TIMESTAMP] = parse_timestamps(frame, c.timestamp, source, required=True, id_column=c.lead_id,
                                      problems=problems).to_numpy()
    kinds = frame[c.type].astype("string").str.strip()
    _fail(source, c.type, (kinds.isna() | (kinds == "")).to_numpy(dtype=bool, na_value=True), "have an empty type",
          frame, c.lead_id, problems)
    out[TYPE] = kinds.fillna("").astype(str).to_numpy()
    direction = frame[c.direction].astype("string").str.strip().str.lower()
    _fail(source, c.direction, ~direction.isin(DIRECTIONS).fillna(False).to_numpy(),
          f"have a direction other than {list(DIRECTIONS)}", frame, c.lead_id, problems)
    out[DIRECTION] = direction.fillna("").astype(str).to_numpy()
    if c.value in frame.columns:
        values = pd.to_numeric(frame[c.value], errors="coerce")
        _fail(source, c.value, frame[c.value].notna() & values.isna(), "are not numbers", frame, c.lead_id, problems)
        out[VALUE] = values.astype(float).to_numpy()
    return out


def empty_interactions() -> pd.DataFrame:
    return pd.DataFrame({
        LEAD_ID: pd.Series(dtype=str),
        TIMESTAMP: pd.Series(dtype="datetime64[ns]"),
        TYPE: pd.Series(dtype=str),
        DIRECTION: pd.Series(dtype=str),
    })
