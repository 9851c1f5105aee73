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

LEAD_ID, CREATED_AT, CONVERTED_AT = "lead_id", "created_at", "converted_at"
TIMESTAMP, TYPE, DIRECTION, VALUE = "timestamp", "type", "direction", "value"
REQUIRED_LEAD_COLUMNS = frozenset({LEAD_ID, CREATED_AT})
REQUIRED_INTERACTION_COLUMNS = frozenset({LEAD_ID, TIMESTAMP, TYPE, DIRECTION})
DIRECTIONS = ("inbound", "outbound")
MAX_EXAMPLES = 5


class SchemaError(ValueError):
    """Input data breaks the contract; the message names file, column, count and example rows."""


def _fail(source: str, column: str, mask: np.ndarray | pd.Series, what: str, frame: pd.DataFrame) -> None:
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    positions = np.flatnonzero(mask)
    examples = []
    for pos in positions[:MAX_EXAMPLES]:
        row = frame.iloc[pos]
        shown = {LEAD_ID: row.get(LEAD_ID)} if LEAD_ID in frame.columns and column != LEAD_ID else {}
        shown[column] = row.get(column)
        examples.append(f"row {pos + 1} {shown}")
    raise SchemaError(
        f"{source}: column '{column}': {len(positions)} row(s) {what}; e.g. " + "; ".join(examples)
    )


def _require_columns(frame: pd.DataFrame, required: Iterable[str], source: str) -> None:
    if missing := sorted(set(required) - set(frame.columns)):
        raise SchemaError(f"{source}: missing columns {missing}; found {sorted(map(str, frame.columns))}")


def parse_timestamps(frame: pd.DataFrame, column: str, source: str, required: bool) -> pd.Series:
    """Timestamps as naive datetime64[ns]; tz-aware input is converted to UTC first."""
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        text = raw.astype("string").str.strip()
        text = text.mask(text == "")
        parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        _fail(source, column, text.notna() & parsed.isna(), "are not parsable timestamps", frame)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    if required:
        _fail(source, column, parsed.isna(), "are empty", frame)
    return parsed.astype("datetime64[ns]")


def validate_leads(
    leads: pd.DataFrame,
    source: str,
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
) -> pd.DataFrame:
    """Check the leads table and return a normalised copy (ids as text, parsed timestamps)."""
    categorical, numeric = list(categorical), list(numeric)
    _require_columns(leads, [*REQUIRED_LEAD_COLUMNS, *categorical, *numeric], source)
    ids = leads[LEAD_ID].astype("string").str.strip()
    _fail(source, LEAD_ID, ids.isna() | (ids == ""), "have an empty lead_id", leads)
    _fail(source, LEAD_ID, ids.duplicated(keep=False).to_numpy(), "have a duplicate lead_id", leads)
    out = leads.assign(**{LEAD_ID: ids.astype(str)})
    out[CREATED_AT] = parse_timestamps(leads, CREATED_AT, source, required=True)
    if CONVERTED_AT in leads.columns:
        out[CONVERTED_AT] = parse_timestamps(leads, CONVERTED_AT, source, required=False)
        _fail(source, CONVERTED_AT, out[CONVERTED_AT] < out[CREATED_AT], "convert before they were created", out)
    else:
        out[CONVERTED_AT] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
    for column in numeric:
        values = pd.to_numeric(leads[column], errors="coerce")
        _fail(source, column, leads[column].notna() & values.isna(), "are not numbers", leads)
        out[column] = values.astype(float)
    return out.reset_index(drop=True)


def validate_interactions(interactions: pd.DataFrame, source: str, lead_ids: pd.Series) -> pd.DataFrame:
    """Check the interaction log against the leads and return a normalised copy."""
    _require_columns(interactions, REQUIRED_INTERACTION_COLUMNS, source)
    ids = interactions[LEAD_ID].astype("string").str.strip()
    _fail(source, LEAD_ID, ids.isna() | (ids == ""), "have an empty lead_id", interactions)
    _fail(source, LEAD_ID, ~ids.isin(pd.Index(lead_ids)).to_numpy(), "refer to leads not in the leads table", interactions)
    out = interactions.assign(**{LEAD_ID: ids.astype(str)})
    out[TIMESTAMP] = parse_timestamps(interactions, TIMESTAMP, source, required=True)
    kinds = interactions[TYPE].astype("string").str.strip()
    _fail(source, TYPE, kinds.isna() | (kinds == ""), "have an empty type", interactions)
    out[TYPE] = kinds.astype(str)
    direction = interactions[DIRECTION].astype("string").str.strip().str.lower()
    _fail(source, DIRECTION, ~direction.isin(DIRECTIONS).fillna(False).to_numpy(),
          f"have a direction other than {list(DIRECTIONS)}", interactions)
    out[DIRECTION] = direction.astype(str)
    if VALUE in interactions.columns:
        values = pd.to_numeric(interactions[VALUE], errors="coerce")
        _fail(source, VALUE, interactions[VALUE].notna() & values.isna(), "are not numbers", interactions)
        out[VALUE] = values.astype(float)
    return out.reset_index(drop=True)


def empty_interactions() -> pd.DataFrame:
    return pd.DataFrame({
        LEAD_ID: pd.Series(dtype=str),
        TIMESTAMP: pd.Series(dtype="datetime64[ns]"),
        TYPE: pd.Series(dtype=str),
        DIRECTION: pd.Series(dtype=str),
    })
