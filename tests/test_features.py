import numpy as np
import pandas as pd
import pytest

from leadtemp.core.config import Features
from leadtemp.core.features import features_as_of, fit_feature_spec, prepare_events
from leadtemp.core.schema import validate_interactions, validate_leads

AS_OF = pd.Timestamp("2024-03-01")


@pytest.fixture()
def tiny():
    leads = validate_leads(pd.DataFrame({
        "lead_id": ["a", "b"], "created_at": ["2024-01-01", "2024-02-20"], "source": ["web", "referral"],
    }), "leads", categorical=["source"])
    events = validate_interactions(pd.DataFrame({
        "lead_id": ["a", "a", "a", "a", "b"],
        "timestamp": ["2024-02-27 12:00", "2024-02-10", "2024-01-15", "2024-03-01 00:00", "2024-02-25"],
        "type": ["phone_call", "phone_call", "email", "phone_call", "email"],
        "direction": ["inbound", "inbound", "inbound", "inbound", "outbound"],
    }), "interactions", leads["lead_id"])
    spec = fit_feature_spec(leads, events, Features(windows_days=(7, 30, 90), half_life_days=14), ("source",), (), before=AS_OF)
    return leads, events, spec


def test_window_counts_recency_and_activation(tiny):
    leads, events, spec = tiny
    f = features_as_of(leads, prepare_events(events, spec), AS_OF, spec).set_index("lead_id")
    a, b = f.loc["a"], f.loc["b"]
    # The call stamped exactly at AS_OF is not history yet.
    assert (a["phone_call_in_7d"], a["phone_call_in_30d"], a["phone_call_in_90d"]) == (1, 2, 2)
    assert a["phone_call_in_days_since_last"] == pytest.approx(2.5)
    assert a["inbound_90d"] == 3 and a["outbound_90d"] == 0
    assert a["days_since_first_inbound"] == pytest.approx(46)
    assert a["just_turned_active"] == 0
    assert a["phone_call_in_decayed"] == pytest.approx(2 ** (-2.5 / 14) + 2 ** (-20 / 14))
    assert b["inbound_90d"] == 0 and np.isnan(b["days_since_first_inbound"])
    assert b["email_out_days_since_last"] == pytest.approx(5)
    assert b["lead_age_days"] == pytest.approx(10)
    assert str(b["source"]) == "referral"


def test_inputs_are_not_modified(tiny):
    leads, events, spec = tiny
    before_leads, before_events = leads.copy(), events.copy()
    features_as_of(leads, prepare_events(events, spec), AS_OF, spec)
    pd.testing.assert_frame_equal(leads, before_leads)
    pd.testing.assert_frame_equal(events, before_events)


def test_unseen_category_becomes_missing_not_an_error(tiny):
    leads, events, spec = tiny
    new = leads.assign(source=["web", "trade_show"])
    f = features_as_of(new, prepare_events(events, spec), AS_OF, spec)
    assert pd.isna(f.loc[1, "source"])


def test_unsorted_scoring_path_equals_the_sorted_training_path_and_ignores_the_future(small_sim, small_result):
    """Scoring prepares events without sorting them; the features must not change, and events at or after
    the date (shuffled in anywhere) must change nothing."""
    spec = small_result.scorer.spec
    leads, events = small_sim.leads, small_sim.interactions
    as_of = pd.Timestamp("2024-06-01")
    eligible = leads[(leads["created_at"] < as_of)].reset_index(drop=True)
    sorted_path = features_as_of(eligible, prepare_events(events, spec), as_of, spec)
    shuffled = events.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert not shuffled["timestamp"].is_monotonic_increasing
    unsorted_path = features_as_of(eligible, prepare_events(shuffled, spec, sort=False), as_of, spec)
    pd.testing.assert_frame_equal(unsorted_path, sorted_path, check_exact=False, rtol=1e-12)
    past = shuffled[shuffled["timestamp"] < as_of]
    only_past = features_as_of(eligible, prepare_events(past, spec, sort=False), as_of, spec)
    pd.testing.assert_frame_equal(only_past, sorted_path, check_exact=False, rtol=1e-12)


def _slow_features(leads: pd.DataFrame, events: pd.DataFrame, as_of: pd.Timestamp, spec) -> pd.DataFrame:
    """Every behaviour column by its definition, one lead and one event at a time (the slow, obvious way)."""
    from leadtemp.core.vocabulary import STEP, TOUCH

    rows = []
    by_lead = {k: g for k, g in events.loc[events["timestamp"] < as_of].groupby("lead_id")}
    for lead in leads.itertuples(index=False):
        past = by_lead.get(lead.lead_id, events.iloc[:0])
        ages = [(as_of - t) / pd.Timedelta(days=1) for t in past["timestamp"]]
        evs = list(zip(past["type"], past["direction"], ages))
        touch = [(t, d, a) for t, d, a in evs if spec.kind(t) == TOUCH]
        groups = {c.name: [a for t, d, a in touch if (t, d) == (c.type, c.direction)] for c in spec.channels}
        groups["inbound"] = [a for _, d, a in touch if d == "inbound"]
        groups["outbound"] = [a for _, d, a in touch if d != "inbound"]
        row = {}
        for name, group in groups.items():
            for w in spec.windows_days:
                row[f"{name}_{w}d"] = float(sum(a < w for a in group))
            row[f"{name}_days_since_last"] = min(group) if group else np.nan
            row[f"{name}_decayed"] = sum(0.5 ** (a / spec.half_life_days) for a in group)
        first = max(groups["inbound"]) if groups["inbound"] else np.nan
        row["days_since_first_inbound"] = first
        row["just_turned_active"] = float(first < spec.just_active_days)
        recent = sum(a < 7 for a in groups["inbound"])
        prior = sum(7 <= a < 37 for a in groups["inbound"])
        row["inbound_trend"] = np.log((recent + 0.5) / 7) - np.log((prior + 0.5) / 30)
        row["lead_age_days"] = (as_of - lead.created_at) / pd.Timedelta(days=1)
        for column, type_ in spec.step_columns.items():
            reached = [a for t, _, a in evs if t == type_]
            row[f"{column}_reached"] = float(bool(reached))
            row[f"{column}_days_since"] = min(reached) if reached else np.nan
        if spec.step_features:
            row["steps_7d"] = float(sum(a < 7 for t, _, a in evs if spec.kind(t) == STEP))
        row["thermometer_score"] = sum(spec.thermometer.get(t, 0.0) * 0.5 ** (a / spec.half_life_days)
                                       for t, d, a in touch if d == "inbound")
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sort", [True, False])
def test_features_equal_a_slow_reference_with_steps_outcomes_and_unknown_types(sort):
    """The one-pass kernel against each column's definition: touches, declared steps (tracked and not),
    an outcome, a type never seen in training, events at and after the date, leads without events."""
    from leadtemp.core.config import params_from_dict

    rng = np.random.default_rng(5)
    n = 300
    leads = validate_leads(pd.DataFrame({
        "lead_id": [f"L{i}" for i in range(n)],
        "created_at": AS_OF - pd.to_timedelta(rng.uniform(1, 200, n), unit="D"),
        "source": rng.choice(["web", "referral"], n)}), "leads", categorical=["source"])
    types = np.array(["call", "mail", "visit", "OFFER", "CHECK", "RARE_STEP", "DECLINED", "NEVER_SEEN"])
    m = 4000
    events = validate_interactions(pd.DataFrame({
        "lead_id": rng.choice(leads["lead_id"].to_numpy()[: n - 20], m),   # the last 20 leads have no events
        "timestamp": AS_OF - pd.to_timedelta(rng.uniform(-20, 150, m), unit="D").round("h"),
        "type": types[rng.choice(len(types), m, p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.02, 0.03, 0.05])],
        "direction": rng.choice(["inbound", "outbound"], m),
    }), "interactions", leads["lead_id"])
    vocab = params_from_dict({"events": {"call": {"label": "call"}, "OFFER": {"kind": "step"}, "CHECK": {"kind": "step"},
                                         "RARE_STEP": {"kind": "step"}, "DECLINED": {"kind": "outcome", "ends": "lost"}}}).events
    training = events.loc[events["type"] != "NEVER_SEEN"]
    spec = fit_feature_spec(leads, training, Features(windows_days=(7, 30, 90), half_life_days=14, max_channels=3,
                                                      thermometer={"call": 3.0, "visit": 1.0}),
                            ("source",), (), before=AS_OF, events=vocab)
    spec = type(spec)(**{**spec.__dict__, "steps": spec.steps[:2]})   # one declared step type left untracked
    assert len(spec.channels) == 3 and len(spec.steps) == 2
    got = features_as_of(leads, prepare_events(events, spec, sort=sort), AS_OF, spec)
    want = _slow_features(leads, events, AS_OF, spec)
    assert list(want.columns[:-1]) == spec.behaviour_columns
    for column in want.columns:
        np.testing.assert_allclose(got[column].to_numpy(dtype=float), want[column].to_numpy(dtype=float),
                                   rtol=1e-12, atol=1e-12, err_msg=column)
    assert got["steps_7d"].sum() > 0 and got["step_" + spec.steps[0].lower() + "_reached"].sum() > 0


def test_categories_as_codes_equal_pandas_categorical():
    values = pd.Series(["b", None, "a", "zz", "b", "c"], dtype="str")
    cats = ("a", "b", "c")
    from leadtemp.core.features import _category_codes

    with pytest.warns(Warning):   # pandas deprecates values outside the categories: why the codes are computed apart
        want = pd.Categorical(values.astype("string"), categories=list(cats))
    got = pd.Categorical.from_codes(_category_codes(values, cats), dtype=pd.CategoricalDtype(list(cats)))
    pd.testing.assert_extension_array_equal(pd.array(got), pd.array(want))
    assert list(_category_codes(pd.Series([1.0, np.nan, 2.0]), ("1.0", "2.0"))) == [0, -1, 1]
