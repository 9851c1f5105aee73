"""The user's own event vocabulary (params ``events``): touches, steps and outcomes, labels, the thermometer.

The simulator knows only contacts; the process-log world here post-processes its interactions the way a
loan-application export looks: contact types renamed to workflow codes (W_Call, W_Mail, ...), system
steps added (A_CHECKED for every application, A_PREACCEPTED, O_SENT shortly before most conversions)
and a terminal outcome (A_DECLINED).
"""

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from leadtemp.cli import _thermometer_not_applicable, app
from leadtemp.core.config import EventType, Features, load_params, params_from_dict
from leadtemp.core.errors import ConfigError
from leadtemp.core.features import FeatureSpec, build_training_frame, features_as_of, fit_feature_spec, prepare_events
from leadtemp.core.metrics import bucket_table
from leadtemp.core.schema import validate_interactions, validate_leads
from leadtemp.core.snapshots import eligible_leads
from leadtemp.core.vocabulary import thermometer_weights, vocabulary_notes
from leadtemp.workflows.quarterly import challenger_gates, window_metrics
from leadtemp.workflows.train import ship_gates

RENAME = {"phone_call": "W_Call", "email": "W_Mail", "sms": "W_Text"}   # the rest become W_<type>
EVENTS = {
    "W_Call": {"label": "call"},
    "W_Mail": {"label": "email", "kind": "touch"},
    "O_SENT": {"kind": "step", "label": "offer sent"},
    "A_PREACCEPTED": {"kind": "step"},                       # no label: its raw code, in quotes
    "A_CHECKED": {"kind": "step", "label": "application checked"},
    "A_DECLINED": {"kind": "outcome", "ends": "lost", "label": "declined"},
}
STEP_WORDS = ("offer sent", "A_PREACCEPTED", "application checked", "step")
CONTACT_WORDS = ("contact", "from us", "from them", "we ", " us ", "called", "emailed")


def vocabulary(**overrides) -> dict[str, EventType]:
    return params_from_dict({"events": {**EVENTS, **overrides}}).events


def process_log(sim, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The simulated world as a loan-application process log (see the module docstring)."""
    rng = np.random.default_rng(seed)
    leads = sim.leads
    touches = sim.interactions.assign(type=sim.interactions["type"].map(lambda t: RENAME.get(t, f"W_{t}")))
    converted = leads.loc[leads["converted_at"].notna()]
    open_ = leads.loc[leads["converted_at"].isna()]

    def events(who: pd.DataFrame, when, type_: str, direction: str = "outbound") -> pd.DataFrame:
        return pd.DataFrame({"lead_id": who["lead_id"].to_numpy(), "timestamp": pd.DatetimeIndex(when),
                             "type": type_, "direction": direction, "value": np.nan})

    def days(low, high, n):
        return pd.to_timedelta(rng.uniform(low, high, n), unit="D")

    offered = converted.sample(frac=0.7, random_state=seed)
    sent = offered["converted_at"] - days(1, 20, len(offered))
    parts = [touches, events(offered.loc[sent > offered["created_at"]], sent[sent > offered["created_at"]], "O_SENT")]
    other = open_.sample(frac=0.15, random_state=seed + 1)
    parts.append(events(other, other["created_at"] + days(1, 200, len(other)), "O_SENT"))
    pre = pd.concat([converted.sample(frac=0.5, random_state=seed + 2), open_.sample(frac=0.2, random_state=seed + 3)])
    parts.append(events(pre, pre["created_at"] + days(0, 10, len(pre)), "A_PREACCEPTED", "inbound"))
    parts.append(events(leads, leads["created_at"] + pd.Timedelta(hours=20), "A_CHECKED"))
    declined = open_.sample(frac=0.2, random_state=seed + 4)
    parts.append(events(declined, declined["created_at"] + days(1, 100, len(declined)), "A_DECLINED"))
    log = pd.concat(parts, ignore_index=True)
    log = log.loc[log["timestamp"] <= touches["timestamp"].max()]
    return leads, log.sort_values("timestamp", kind="stable").reset_index(drop=True)


# -- bad input: one line, exit 2, nothing written ------------------------------------------------------
BAD_PARAMS = {
    "declared twice": ("events:\n  O_SENT: {kind: step, label: offer sent}\n  W_Call: {label: call}\n"
                       "  O_SENT: {kind: touch}\n", r"line 4: 'O_SENT' is given twice"),
    "label a number": ("events:\n  W_Call: {label: 12}\n", r"events\.W_Call\.label: expected text"),
    "label a yes": ("events:\n  W_Call: {label: yes}\n", r"events\.W_Call\.label: expected text"),
    "label a list": ("events:\n  W_Call: {label: [call, phone]}\n", r"events\.W_Call\.label: expected text"),
    "thermometer on a step": ("events:\n  O_SENT: {kind: step, thermometer: 3}\n",
                              r"events\.O_SENT\.thermometer: only a touch .* 'O_SENT' is a step"),
    "thermometer negative": ("events:\n  W_Call: {thermometer: -1}\n", r"events\.W_Call\.thermometer: -1\.0 is not a non-negative"),
    "twice in another section": ("snapshots:\n  horizon_days: 30\n  horizon_days: 90\n", r"'horizon_days' is given twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_vocabulary_is_refused_by_load_params_naming_file_and_type(tmp_path, case):
    text, message = BAD_PARAMS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_params(path)
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize("case", ["declared twice", "label a number", "thermometer on a step"])
def test_bad_vocabulary_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    text, message = BAD_PARAMS[case]
    (tmp_path / "bad.yaml").write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["train", "--params", "bad.yaml"])  # the test's cwd is tmp_path
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.yaml") and re.search(message, lines[0]), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlflow.db, no models/


def test_quoted_labels_and_yaml_merges_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("events:\n  W_Call: {label: '12', thermometer: 3}\n  O_SENT: &s {kind: step, label: offer sent}\n"
                    "  A_CHECKED:\n    <<: *s\n    label: application checked\n")
    events = load_params(path).events
    assert events["W_Call"].label == "12" and events["W_Call"].thermometer == 3.0
    assert events["A_CHECKED"] == EventType(label="application checked", kind="step")


def test_the_documented_examples_are_valid_params():
    from conftest import ROOT

    doc = (ROOT / "docs" / "own-data.md").read_text().split("## Your own event vocabulary", 1)[1]
    example = params_from_dict(yaml.safe_load(doc.split("```yaml\n", 1)[1].split("```", 1)[0]))
    assert example.events["O_Sent (mail and online)"] == EventType(label="offer sent", kind="step")
    assert example.lost_types() == ("A_Denied", "A_Cancelled")
    commented = re.search(r"^# events:\n((?:#  .*\n)+)", (ROOT / "params.yaml").read_text(), re.M).group(1)
    events = params_from_dict(yaml.safe_load("events:\n" + re.sub(r"^# ", "", commented, flags=re.M))).events
    assert events["O_Returned"].thermometer == 2.0 and events["A_Denied"].ends == "lost"


# -- the thermometer rule ----------------------------------------------------------------------------
def test_declared_places_replace_features_thermometer_and_steps_never_weigh():
    settings = Features(thermometer={"W_Call": 1.0, "O_SENT": 5.0, "web": 2.0})
    assert thermometer_weights(settings, {}) == {"W_Call": 1.0, "O_SENT": 5.0, "web": 2.0}
    # No declared place: features.thermometer, without the types declared as steps or outcomes.
    assert thermometer_weights(settings, vocabulary()) == {"W_Call": 1.0, "web": 2.0}
    # A declared place: the declared places only.
    declared = vocabulary(W_Mail={"label": "email", "thermometer": 4})
    assert thermometer_weights(settings, declared) == {"W_Mail": 4.0}


def _gate(gates, name):
    (gate,) = [g for g in gates if g.name == name]
    return gate


def test_ship_gate_says_not_applicable_instead_of_comparing_with_a_constant():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.2
    test = pd.DataFrame({"label": y.astype(int), "margin": y + rng.normal(0, 1, y.size),
                         "bucket": np.where(rng.random(y.size) < 0.5, "hot", "cold"), "thermometer_score": 0.0})
    test.loc[:2, "bucket"] = "warm"
    buckets = bucket_table(test["label"], test["bucket"])
    gates = ship_gates(test, {"roc_auc": 0.76}, buckets)
    gate = _gate(gates, "thermometer")
    assert not gate.applicable and gate.passed
    assert gate.detail.startswith("not applicable (the thermometer score is 0 on all 2,000 test rows")
    assert "vs thermometer" not in " ".join(g.detail for g in gates)
    # A thermometer that ranks: compared, and a model that loses to it fails.
    varied = test.assign(thermometer_score=rng.random(y.size))
    gate = _gate(ship_gates(varied, {"roc_auc": 0.76, "thermometer_roc_auc": 0.8}, buckets), "beats the thermometer")
    assert gate.applicable and not gate.passed and "0.760 vs thermometer rule 0.800" in gate.detail


def test_retrain_gate_and_window_metrics_say_not_applicable_for_a_constant_thermometer(params):
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.1).astype(int)
    p = np.clip(0.1 + 0.3 * y + rng.normal(0, 0.05, y.size), 0.01, 0.99)
    frame = pd.DataFrame({"label": y, "probability": p, "cutoff": pd.Timestamp("2024-01-01"),
                          "bucket": np.select([p > 0.3, p > 0.12], ["hot", "warm"], "cold"), "thermometer_score": 2.5})
    m = window_metrics(frame)
    assert "thermometer_roc_auc" not in m and m["thermometer_constant"] == 2.5
    gate = _gate(challenger_gates(m, 0.1, params.retrain), "thermometer")
    assert not gate.applicable and "2.5 on all 3,000 snapshots of the window: it ranks nobody" in gate.detail
    ranked = window_metrics(frame.assign(thermometer_score=rng.random(y.size)))
    assert "thermometer_constant" not in ranked
    assert _gate(challenger_gates(ranked, 0.1, params.retrain), "beats the thermometer").applicable
    # The backtest table: n/a in the column, and a line saying why.
    table = pd.DataFrame([{"quarter": "2024Q1", "rows": 3000, **m}, {"quarter": "2024Q2", **ranked}])
    lines = _thermometer_not_applicable(table)
    assert len(lines) == 1 and lines[0].startswith("thermometer, 2024Q1: not applicable (the thermometer score is 2.5")


# -- features ----------------------------------------------------------------------------------------
AS_OF = pd.Timestamp("2024-03-01")


@pytest.fixture()
def tiny():
    leads = validate_leads(pd.DataFrame({"lead_id": ["a", "b"], "created_at": ["2024-01-01", "2024-02-20"]}), "leads")
    events = validate_interactions(pd.DataFrame({
        "lead_id": ["a", "a", "a", "a", "a", "a", "b", "b"],
        "timestamp": ["2024-02-27", "2024-02-20", "2024-02-10", "2024-02-28", "2024-03-01", "2024-02-29", "2024-02-25",
                      "2024-02-26"],
        "type": ["W_Call", "O_SENT", "O_SENT", "A_CHECKED", "A_PREACCEPTED", "A_DECLINED", "X_UNDECLARED", "A_CHECKED"],
        "direction": ["inbound", "outbound", "inbound", "outbound", "outbound", "outbound", "outbound", "outbound"],
    }), "interactions", leads["lead_id"])
    spec = fit_feature_spec(leads, events, Features(thermometer={"W_Call": 10.0}), (), (), before=AS_OF,
                            events=vocabulary())
    return leads, events, spec


def test_steps_give_step_features_and_never_contact_features(tiny):
    leads, events, spec = tiny
    # Only touches make channels; A_PREACCEPTED is at AS_OF, not before: not seen in training.
    assert {c.type for c in spec.channels} == {"W_Call", "X_UNDECLARED"}
    assert spec.steps == ("A_CHECKED", "O_SENT")
    f = features_as_of(leads, prepare_events(events, spec), AS_OF, spec).set_index("lead_id")
    a, b = f.loc["a"], f.loc["b"]
    assert a["step_o_sent_reached"] == 1 and a["step_o_sent_days_since"] == pytest.approx(10)   # the latest one
    assert a["step_a_checked_days_since"] == pytest.approx(2) and a["steps_7d"] == 1
    assert b["step_o_sent_reached"] == 0 and np.isnan(b["step_o_sent_days_since"]) and b["steps_7d"] == 1
    # Contacts: the one call of a and the undeclared type of b; steps and the outcome are not contacts.
    assert a["inbound_90d"] == 1 and a["outbound_90d"] == 0 and b["outbound_90d"] == 1
    assert a["days_since_first_inbound"] == pytest.approx(3)
    assert a["thermometer_score"] == pytest.approx(10 * 2 ** (-3 / 14))
    assert not [c for c in spec.columns if "declined" in c.lower()]   # an outcome is never a feature


def test_step_features_are_point_in_time(small_sim):
    leads, log = process_log(small_sim)
    cutoff = pd.Timestamp("2024-06-01")
    spec = fit_feature_spec(leads, log, Features(), (), (), before=cutoff, events=vocabulary())
    assert spec.step_features
    snaps = pd.DataFrame({"lead_id": eligible_leads(leads, cutoff)["lead_id"].to_numpy(), "cutoff": cutoff, "label": 0})
    rng = np.random.default_rng(4)
    who = rng.choice(snaps["lead_id"].to_numpy(), size=3000)
    future = pd.DataFrame({"lead_id": who, "timestamp": cutoff + pd.to_timedelta(rng.integers(0, 60 * 86400, who.size), unit="s"),
                           "type": rng.choice(["O_SENT", "A_PREACCEPTED", "A_CHECKED", "A_DECLINED", "NEW_STEP"], who.size),
                           "direction": "outbound", "value": np.nan})
    future.loc[:300, "timestamp"] = cutoff   # exactly at the cutoff is not history either
    before = build_training_frame(snaps, leads, log, spec)
    after = build_training_frame(snaps, leads, pd.concat([log, future], ignore_index=True), spec)
    pd.testing.assert_frame_equal(before, after)
    assert before["step_o_sent_reached"].sum() > 0   # the steps are there to be changed


def test_undeclared_types_are_listed_once_with_counts(small_sim):
    leads, log = process_log(small_sim)
    notes = vocabulary_notes(log, Features(), vocabulary())
    listed = [n for n in notes if "not declared in events" in n]
    count = int((log["type"] == "W_web_visit").sum())
    assert len(listed) == 1 and f"'W_web_visit' {count:,}" in listed[0] and "W_Call" not in listed[0]
    assert any(n.startswith("thermometer: none of the types") for n in notes)   # the sim's types are all renamed
    assert vocabulary_notes(log, Features(), {}) == [n for n in notes if n.startswith("thermometer")]  # no events: no list


def test_a_spec_from_before_the_vocabulary_still_loads_with_the_same_columns(tiny):
    _, _, spec = tiny
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.step_features
    old = spec.to_dict()
    del old["vocabulary"], old["steps"]                    # scorer.json format 1
    legacy = FeatureSpec.from_dict(old)
    assert legacy.steps == () and legacy.kind("O_SENT") == "touch" and not legacy.step_features


# -- a model trained on the process log --------------------------------------------------------------
@pytest.fixture(scope="module")
def vocab_trained(small_sim, params):
    from leadtemp.workflows.train import train

    leads, log = process_log(small_sim)
    p = dataclasses.replace(params, events=vocabulary()).validate()
    result = train(leads, log, p)
    reasons = result.scorer.score_features(result.test.rename(columns={"cutoff": "as_of"}))
    return result, pd.concat([reasons[c] for c in ("reason_1", "reason_2", "reason_3")], ignore_index=True)


def test_step_reasons_read_as_steps_with_the_declared_labels(vocab_trained):
    _, reasons = vocab_trained
    steps = reasons.loc[reasons.str.contains("|".join(STEP_WORDS))]
    assert steps.str.startswith("offer sent ").any() and steps.str.startswith("reached 'A_PREACCEPTED' ").any()
    assert not steps.str.contains("|".join(CONTACT_WORDS)).any(), steps.loc[steps.str.contains("|".join(CONTACT_WORDS))]
    assert not reasons.str.contains("O_SENT|W_Call|W_Mail|A_CHECKED|A_DECLINED|declined").any()  # labels, no outcome
    assert reasons.str.match(r"(?:call|email) from (?:them|us) ").any()                 # a declared touch's label
    assert reasons.str.contains(r"^'W_[a-z_]+' from (?:them|us) ").any()            # an undeclared one: raw, quoted


def test_training_lists_undeclared_types_once_and_says_the_thermometer_is_not_applicable(vocab_trained):
    result, _ = vocab_trained
    assert sum("not declared in events" in w for w in result.warnings) == 1
    assert "thermometer_roc_auc" not in result.metrics
    gate = _gate(result.gates, "thermometer")
    assert not gate.applicable and gate.detail.startswith("not applicable (the thermometer score is 0 on all")
    assert result.fit_to_ship


def test_a_saved_scorer_keeps_its_vocabulary(vocab_trained, tmp_path):
    from leadtemp.modelling.scorer import LeadScorer

    result, _ = vocab_trained
    folder = result.scorer.save(tmp_path / "m")
    assert json.loads((folder / "scorer.json").read_text())["format_version"] == 2
    loaded = LeadScorer.load(folder)
    assert loaded.spec == result.scorer.spec
    test = result.test.rename(columns={"cutoff": "as_of"})
    pd.testing.assert_frame_equal(loaded.score_features(test), result.scorer.score_features(test))


def test_undeclared_types_that_look_like_outcomes_are_named_and_nothing_else():
    """Issue 18: a naive user's declines and approvals are named once, with what to declare; a touch that leads
    go on after, or that converting leads had before converting, is not."""
    from leadtemp.core.vocabulary import terminal_note, terminal_types

    rng = np.random.default_rng(0)
    n = 300
    created = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.uniform(0, 90, n), unit="D")
    leads = pd.DataFrame({"lead_id": [f"L{i}" for i in range(n)], "created_at": created,
                          "converted_at": pd.NaT})
    rows = []
    for i, t in enumerate(created):
        rows.append((f"L{i}", t, "W_Call", "outbound"))
        rows.append((f"L{i}", t + pd.Timedelta(days=3), "W_Call", "outbound"))
        if i % 3 == 0:     # declined: nothing after it
            rows.append((f"L{i}", t + pd.Timedelta(days=5), "A_DECLINED", "outbound"))
        elif i % 3 == 1:   # approved: converted at that moment
            leads.loc[i, "converted_at"] = t + pd.Timedelta(days=6)
            rows.append((f"L{i}", t + pd.Timedelta(days=6), "A_APPROVED", "outbound"))
        else:              # a reminder the lead goes on after, converting later
            rows.append((f"L{i}", t + pd.Timedelta(days=1), "O_REMINDER", "outbound"))
            rows.append((f"L{i}", t + pd.Timedelta(days=9), "W_Call", "outbound"))
    log = pd.DataFrame(rows, columns=["lead_id", "timestamp", "type", "direction"])
    assert terminal_types(leads, log, {}) == {"A_APPROVED": "won", "A_DECLINED": "lost"}
    declared = vocabulary(A_APPROVED={"kind": "outcome", "ends": "won"})
    assert terminal_types(leads, log, declared) == {}            # both declared (A_DECLINED in EVENTS)
    note = terminal_note(leads, log, {})
    assert "'A_DECLINED' {kind: outcome, ends: lost}" in note and "'A_APPROVED' {kind: outcome, ends: won}" in note
    assert "O_REMINDER" not in note and "W_Call" not in note
    few = log.loc[~log["lead_id"].isin([f"L{i}" for i in range(0, n, 3)][:60])]   # 40 declined leads left: too few
    assert "A_DECLINED" not in terminal_types(leads, few, {})
    assert any("look like an outcome" in note for note in vocabulary_notes(log, Features(), {}, leads))
