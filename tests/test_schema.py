"""Data contract: every bad input gives a clear error naming file, column, count and rows."""

import pandas as pd
import pytest

from leadtemp.core.errors import SchemaError
from leadtemp.core.schema import validate_interactions, validate_leads


def leads(**overrides):
    base = {
        "lead_id": ["a", "b", "c"],
        "created_at": ["2024-01-01", "2024-01-02", "2024-01-03"],
        "converted_at": [None, "2024-02-01", None],
        "source": ["web", "referral", "web"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def events(**overrides):
    base = {
        "lead_id": ["a", "b"],
        "timestamp": ["2024-01-05 10:00", "2024-01-06"],
        "type": ["phone_call", "email"],
        "direction": ["inbound", "outbound"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_valid_input_is_normalised_without_touching_the_input():
    raw = leads()
    before = raw.copy()
    out = validate_leads(raw, "leads.csv", categorical=["source"])
    pd.testing.assert_frame_equal(raw, before)
    assert pd.api.types.is_datetime64_any_dtype(out["created_at"])
    assert out["converted_at"].isna().sum() == 2
    ev = validate_interactions(events(), "interactions.csv", out["lead_id"])
    assert pd.api.types.is_datetime64_any_dtype(ev["timestamp"])


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (leads().drop(columns=["created_at"]), r"leads.csv: missing columns \['created_at'\]"),
        (leads(created_at=["2024-01-01", "yesterday-ish", "2024-01-03"]),
         r"leads.csv: column 'created_at': 1 row\(s\) are not parsable timestamps; e.g. row 2"),
        (leads(lead_id=["a", "b", "a"]), r"column 'lead_id': 2 row\(s\) have a duplicate lead id; e.g. row 1"),
        (leads(converted_at=[None, "2023-12-01", None]),
         r"column 'converted_at': 1 row\(s\) convert before they were created; e.g. row 2"),
        (leads(created_at=["2024-01-01", None, "2024-01-03"]), r"column 'created_at': 1 row\(s\) are empty"),
    ],
)
def test_bad_leads(frame, pattern):
    with pytest.raises(SchemaError, match=pattern):
        validate_leads(frame, "leads.csv", categorical=["source"])


def test_declared_attribute_missing():
    with pytest.raises(SchemaError, match=r"missing columns \['sector'\]"):
        validate_leads(leads(), "leads.csv", categorical=["source", "sector"])


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (events(lead_id=["a", "zzz"]), r"interactions.csv: column 'lead_id': 1 row\(s\) refer to leads not in the leads table; e.g. row 2"),
        (events(timestamp=["2024-01-05", "31/02/2024 25:00"]), r"column 'timestamp': 1 row\(s\) are not parsable"),
        (events(direction=["inbound", "sideways"]), r"column 'direction': 1 row\(s\) have a direction other than"),
        (events().drop(columns=["type"]), r"missing columns \['type'\]"),
    ],
)
def test_bad_interactions(frame, pattern):
    with pytest.raises(SchemaError, match=pattern):
        validate_interactions(frame, "interactions.csv", pd.Series(["a", "b", "c"]))


def test_is_among_answers_like_isin_for_text_with_gaps_objects_and_numbers():
    import numpy as np

    from leadtemp.core.schema import is_among

    text = pd.Series(["a", "b", None, "c", ""], dtype="str")
    for allowed in (["a", "c"], pd.Index(["b", np.nan]), pd.Series(["", "z"]), [], ["a", 3]):
        assert is_among(text, allowed).tolist() == text.isin(list(allowed)).tolist(), allowed
    objects, numbers = pd.Series(["a", 1, None], dtype=object), pd.Series([1.0, np.nan, 2.0])
    assert is_among(objects, ["a", 1]).tolist() == [True, True, False]
    assert is_among(numbers, [2.0]).tolist() == [False, False, True]


def test_interaction_ids_that_lost_their_leading_zeros_are_refused_with_the_hint():
    with pytest.raises(SchemaError, match=r"2 row\(s\) refer to leads not in the leads table.*they match once leading "
                                          r"zeros are dropped.*'645875' is lead '00645875'"):
        validate_interactions(events(lead_id=["645875", "645876"]), "interactions.csv",
                              pd.Series(["00645875", "00645876"], dtype="string"))
    with pytest.raises(SchemaError) as other:  # ids that differ otherwise get no such hint
        validate_interactions(events(lead_id=["x1", "x2"]), "interactions.csv", pd.Series(["a", "b"], dtype="string"))
    assert "leading zeros" not in str(other.value)
