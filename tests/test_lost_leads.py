"""Lost, disqualified and reopened leads (issue 18, item 1).

Units on hand-made frames (the lost/reopened rule, snapshots, features, wording, the data contract), the
simulator's story of lost leads, and, marked slow, the command line end to end on a simulated CRM whose
leads are disqualified, closed silently and recycled: train, then score with and without --include-lost.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from leadtemp.cli import app
from leadtemp.core.config import Features, LeadColumns
from leadtemp.core.errors import SchemaError
from leadtemp.core.features import build_training_frame, features_as_of, fit_feature_spec, prepare_events
from leadtemp.core.lifecycle import LossRules, loss_spells, lost_state
from leadtemp.core.reasons import describe_reopening, feature_groups
from leadtemp.core.schema import RowProblems, validate_leads
from leadtemp.core.snapshots import build_snapshots, creation_snapshots, cutoff_dates, drop_lost, scorable_leads
from leadtemp.simulate import simulate

T = pd.Timestamp
ROOT = Path(__file__).resolve().parents[1]
RULES = LossRules(lost_types=("disqualified",), reopening_types=("reactivated",))


def _leads(**lost_at) -> pd.DataFrame:
    ids = ["a", "b", "c", "d", "e"]
    return pd.DataFrame({"lead_id": ids, "created_at": T("2024-01-01"), "converted_at": pd.NaT,
                         "lost_at": [lost_at.get(i, pd.NaT) for i in ids]}).astype({"lost_at": "datetime64[ns]"})


def _events(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["lead_id", "timestamp", "type", "direction"]).astype(
        {"timestamp": "datetime64[ns]"})


def _state(leads, events, when) -> dict[str, tuple]:
    state = lost_state(loss_spells(leads, events, RULES), leads["lead_id"].to_numpy(), T(when))
    return {i: (bool(s.lost), s.lost_since, s.reopened_at) for i, s in zip(leads["lead_id"], state.itertuples())}


# -- the rule ------------------------------------------------------------------------------------------

def test_a_loss_lasts_until_a_later_inbound_or_reopening_event_and_only_the_past_counts():
    leads = _leads(a=T("2024-02-01"), c=T("2024-03-01"))
    events = _events([
        ("a", "2024-02-10", "email", "inbound"),          # a: lost by lost_at, reopened by an inbound email
        ("b", "2024-01-10", "disqualified", "outbound"),  # b: disqualified, an outbound call does not reopen it,
        ("b", "2024-01-15", "phone_call", "outbound"),
        ("b", "2024-01-20", "reactivated", "outbound"),   # ... a declared reopening type does,
        ("b", "2024-01-25", "disqualified", "outbound"),  # ... and a second disqualification closes it again
        ("c", "2024-03-01", "email", "inbound"),          # c: an inbound at the very moment of the loss: open
        ("d", "2024-01-05", "disqualified", "inbound"),   # d: a lost type is never a reopening, inbound or not
    ])
    s = _state(leads, events, "2024-01-15")
    assert s["b"][0] and s["b"][1] == T("2024-01-10") and not s["a"][0] and s["d"][0]
    s = _state(leads, events, "2024-01-20")  # the reopening stamped at the date is not yet known
    assert s["b"][0]
    s = _state(leads, events, "2024-01-21")
    assert not s["b"][0] and s["b"][2] == T("2024-01-20")
    s = _state(leads, events, "2024-02-10")
    assert s["a"][0] and s["a"][1] == T("2024-02-01") and s["b"][0] and s["b"][1] == T("2024-01-25")
    s = _state(leads, events, "2024-02-11")
    assert not s["a"][0] and s["a"][2] == T("2024-02-10")
    s = _state(leads, events, "2024-06-01")
    assert not s["c"][0] and s["d"][0] and not s["e"][0] and pd.isna(s["e"][2])


def test_state_per_row_times_equals_state_per_date():
    sim = simulate(400, seed=5, months=12, lost=True)
    spells = loss_spells(sim.leads, sim.interactions, RULES)
    assert len(spells) > 10
    dates = pd.date_range("2023-03-01", "2023-12-01", freq="MS")
    ids = np.tile(sim.leads["lead_id"].to_numpy(), len(dates))
    at = np.repeat(dates.to_numpy(), len(sim.leads))
    together = lost_state(spells, ids, at)
    apart = pd.concat([lost_state(spells, sim.leads["lead_id"].to_numpy(), d) for d in dates], ignore_index=True)
    pd.testing.assert_frame_equal(together, apart)
    assert together["lost"].any() and together["reopened_at"].notna().any()


# -- training: never a row while lost -----------------------------------------------------------------

@pytest.fixture(scope="module")
def lost_world():
    return simulate(1500, seed=3, months=18, lost=True)


def test_a_lead_is_never_a_training_row_while_lost(lost_world):
    leads, events = lost_world.leads, lost_world.interactions
    spells = loss_spells(leads, events, RULES)
    until = leads["created_at"].max()
    cutoffs = cutoff_dates(leads, until, "MS")
    plain = pd.concat([build_snapshots(leads, cutoffs, 90, until), creation_snapshots(leads, 90, until, skip=cutoffs)])
    lost_rows = lost_state(spells, plain["lead_id"].to_numpy(), plain["cutoff"].to_numpy())["lost"].to_numpy()
    assert lost_rows.sum() > 50  # without the rule, lost leads are rows: negatives ...
    assert plain["label"].to_numpy()[lost_rows].sum() > 0  # ... and positives (recycled leads convert)
    snaps = pd.concat([build_snapshots(leads, cutoffs, 90, until, spells=spells),
                       creation_snapshots(leads, 90, until, skip=cutoffs, spells=spells)])
    assert len(snaps) == len(plain) - lost_rows.sum()
    assert not lost_state(spells, snaps["lead_id"].to_numpy(), snaps["cutoff"].to_numpy())["lost"].any()
    assert drop_lost(plain, spells).shape[0] == len(snaps)


def _spec(leads, events, before):
    return fit_feature_spec(leads, events, Features(), (), (), before=before, lifecycle=RULES)


def test_loss_information_at_or_after_the_cutoff_changes_no_feature(lost_world):
    leads, events = lost_world.leads, lost_world.interactions
    cutoff = T("2024-01-01")
    spec = _spec(leads, events, cutoff)
    assert "days_since_reopened" in spec.columns and not any(c.type == "disqualified" for c in spec.channels)
    snaps = drop_lost(build_snapshots(leads, pd.DatetimeIndex([cutoff]), 90, T("2024-06-30")),
                      loss_spells(leads, events, RULES))
    rng = np.random.default_rng(0)
    later = leads.copy()
    unknown_yet = np.flatnonzero(~(later["lost_at"] < cutoff).to_numpy())  # a past lost_at is history: kept
    pick = rng.choice(unknown_yet, size=len(unknown_yet) // 3, replace=False)
    later.loc[pick, "lost_at"] = cutoff + pd.to_timedelta(rng.integers(0, 90 * 86400, len(pick)), unit="s")
    later.loc[pick[:20], "lost_at"] = cutoff  # at the cutoff is not history either
    who = rng.choice(later["lead_id"], size=3000)
    future = pd.DataFrame({"lead_id": who, "timestamp": cutoff + pd.to_timedelta(rng.integers(0, 60 * 86400, who.size), unit="s"),
                           "type": rng.choice(["disqualified", "reactivated", "email"], size=who.size),
                           "direction": rng.choice(["inbound", "outbound"], size=who.size), "value": np.nan})
    future.loc[:100, "timestamp"] = cutoff
    a = build_training_frame(snaps, leads, events, spec)
    b = build_training_frame(snaps, later, pd.concat([events, future], ignore_index=True), spec)
    pd.testing.assert_frame_equal(a, b)
    assert a["days_since_reopened"].notna().sum() > 5
    # The same at scoring: the same open leads, the same features.
    open_a, lost_a = scorable_leads(leads, events, cutoff, RULES)
    open_b, lost_b = scorable_leads(later, pd.concat([events, future], ignore_index=True), cutoff, RULES)
    assert list(open_a["lead_id"]) == list(open_b["lead_id"]) and lost_a == lost_b > 0


def test_days_since_reopened_is_counted_from_the_reopening_and_worded():
    leads = _leads(a=T("2024-02-01"))
    events = _events([("a", "2024-02-10 12:00", "email", "inbound"), ("b", "2024-01-20", "email", "inbound")])
    spec = _spec(leads, events, T("2024-03-01"))
    open_, lost = scorable_leads(leads, events, T("2024-03-01"), RULES)
    f = features_as_of(open_, prepare_events(events, spec), T("2024-03-01"), spec).set_index("lead_id")
    assert f.loc["a", "days_since_reopened"] == pytest.approx(19.5) and np.isnan(f.loc["b", "days_since_reopened"])
    assert describe_reopening(19.5) == "reopened 20 days ago"  # whole days, as the other reasons
    assert describe_reopening(1.0) == "reopened 1 day ago" and "never" in describe_reopening(np.nan)
    assert any(g.features == ("days_since_reopened",) for g in feature_groups(spec))
    with pytest.raises(ValueError, match="reopened_at"):  # never silently NaN: the caller must pass the state
        features_as_of(leads.drop(columns="lost_at"), prepare_events(events, spec), T("2024-03-01"), spec)


def test_lost_types_are_no_feature_of_a_live_lead():
    leads = _leads()
    events = _events([("a", "2024-01-10", "disqualified", "outbound"), ("a", "2024-01-12", "reactivated", "outbound")])
    spec = _spec(leads, events, T("2024-02-01"))
    open_, _ = scorable_leads(leads, events, T("2024-02-01"), RULES)
    f = features_as_of(open_, prepare_events(events, spec), T("2024-02-01"), spec).set_index("lead_id")
    assert f.loc["a", "outbound_90d"] == 1  # the reopening event counts; the disqualification does not
    assert f.loc["a", "days_since_reopened"] == pytest.approx(20)


# -- the data contract ----------------------------------------------------------------------------------

COLUMNS = LeadColumns(lost_at="Closed lost")


def _crm(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({"lead_id": ["L1", "L2", "L3"], "created_at": ["2024-01-05", "2024-01-06", "2024-01-07"],
                          "converted_at": [None, "2024-02-01", None], "Closed lost": [None, None, "2024-03-01"]})
    for column, (row, value) in changes.items():
        frame.loc[row, column.replace("_", " ") if column == "Closed_lost" else column] = value
    return frame


def test_lost_at_is_read_like_converted_at():
    leads = validate_leads(_crm(), "leads.csv", columns=COLUMNS)
    assert leads["lost_at"].tolist()[2] == T("2024-03-01") and leads["lost_at"].isna().sum() == 2
    assert "Closed lost" not in leads.columns
    with pytest.raises(SchemaError, match=r"missing columns \['Closed lost'\]"):
        validate_leads(_crm().drop(columns="Closed lost"), "leads.csv", columns=COLUMNS)


@pytest.mark.parametrize("row, value, words", [
    (2, "2024-01-01", "lost before they were created"),
    (1, "2024-02-01", "converted and lost at once"),
    (2, "someday", "not parsable timestamps"),
])
def test_bad_lost_at_values_name_file_column_and_row(row, value, words):
    frame = _crm(Closed_lost=(row, value))
    with pytest.raises(SchemaError) as caught:
        validate_leads(frame, "crm/leads.csv", columns=COLUMNS)
    message = str(caught.value)
    assert message.startswith("crm/leads.csv: column 'Closed lost': 1 row(s)") and words in message
    assert f"row {row + 1} " in message and "\n" not in message
    problems = RowProblems(len(frame))  # scoring: the row is rejected with its reason, the others go on
    validate_leads(frame, "crm/leads.csv", columns=COLUMNS, problems=problems)
    assert problems.bad.tolist() == [i == row for i in range(3)]


# -- the simulator ----------------------------------------------------------------------------------------

def test_the_simulator_tells_the_story_of_lost_leads_and_keeps_the_default_world():
    plain = simulate(300, seed=4, months=12)
    assert "lost_at" not in plain.leads.columns and plain.losses is None
    assert "disqualified" not in set(plain.interactions["type"])
    sim = simulate(1500, seed=4, months=18, lost=True)
    losses = sim.losses
    assert set(losses["story"]) == {"disqualified", "silent", "unrecorded"}
    closed = losses.dropna(subset=["closed_at"])
    assert closed["story"].ne("unrecorded").all()
    # A disqualification is an outbound event at the CRM's close; a silent close has none.
    events = sim.interactions.loc[sim.interactions["type"] == "disqualified"]
    assert (events["direction"] == "outbound").all()
    assert set(zip(events["lead_id"], events["timestamp"])) == set(
        zip(closed.loc[closed["story"] == "disqualified", "lead_id"], closed.loc[closed["story"] == "disqualified", "closed_at"]))
    # lost_at is each lead's latest close; every close is after the loss and before any comeback.
    latest = closed.groupby("lead_id")["closed_at"].max()
    lost_at = sim.leads.set_index("lead_id")["lost_at"].dropna()
    pd.testing.assert_series_equal(lost_at.sort_index(), latest.sort_index(), check_names=False)
    assert (closed["closed_at"] > closed["lost_on"]).all()
    assert not (closed["closed_at"] >= closed["recycled_on"]).any()
    # Recycled leads come back inbound and some convert; lost leads that never came back never convert.
    back = losses.dropna(subset=["recycled_on"])
    assert len(back) > 10 and sim.leads.set_index("lead_id").loc[back["lead_id"], "converted_at"].notna().any()
    gone = set(losses["lead_id"]) - set(back["lead_id"])
    assert sim.leads.set_index("lead_id").loc[sorted(gone), "converted_at"].isna().all()


# -- the command line, end to end -----------------------------------------------------------------------

def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"\s*error:\s*\S", line)]


RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "MLFLOW_DISABLE_TELEMETRY": "true"}
AS_OF = "2024-05-01"


def _cli(*args):
    result = RUNNER.invoke(app, [str(a) for a in args], env=ENV)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def trained_crm(home: Path, columns: dict, simulate_flag: str, leads: int, said: str,
                **settings) -> tuple[Path, str]:
    """In ``home``: a CRM simulated with ``simulate_flag`` (its output must say ``said``), a params file mapping
    ``columns`` (plus other ``settings`` sections) and a model trained on it. Returns the params file and train's
    output."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.chdir(home)
        values = yaml.safe_load((ROOT / "params.yaml").read_text())
        values["data"].update(leads=str(home / "data" / "leads.parquet"),
                              interactions=str(home / "data" / "interactions.parquet"), columns=columns)
        values.update(settings)
        params = home / "params.yaml"
        params.write_text(yaml.safe_dump(values, sort_keys=False))
        made = _cli("simulate", "--out", "data", "--leads", str(leads), "--seed", "3", "--months", "24", simulate_flag,
                    "--params", params)
        assert made.exit_code == 0 and said in made.stdout, made.output
        trained = _cli("train", "--params", params)
        assert trained.exit_code == 0, trained.output
    finally:
        mp.undo()
    return params, trained.stdout


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """A simulated CRM with lost leads, a params file that maps them and a model trained on it."""
    home = tmp_path_factory.mktemp("lost-crm")
    params, _ = trained_crm(home, {"lost_at": "lost_at"}, "--lost", 2000, "closed as lost",
                            events={"disqualified": {"kind": "outcome", "ends": "lost", "label": "disqualified by us"}})
    return home, params


def _score(crm, tmp_path, *extra, leads=None):
    home, params = crm
    out = tmp_path / "scores.csv"
    args = ["score", "--as-of", AS_OF, "--out", out, "--model", home / "models" / "latest", "--params", params,
            *(["--leads", leads] if leads else []), *extra]
    return _cli(*args), out


@pytest.mark.slow
@pytest.mark.e2e
def test_lost_leads_are_counted_and_skipped_and_include_lost_scores_them_marked(crm, tmp_path):
    home, _ = crm
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    events = pd.read_parquet(home / "data" / "interactions.parquet")
    as_of = T(AS_OF)
    eligible = leads.loc[(leads["created_at"] < as_of) & ~(leads["converted_at"] < as_of), "lead_id"]
    state = lost_state(loss_spells(leads, events, LossRules(("disqualified",))), eligible.to_numpy(), as_of)
    lost_ids = set(eligible[state["lost"].to_numpy()])
    reopened = set(eligible[state["reopened_at"].notna().to_numpy()])
    assert len(lost_ids) > 50 and reopened

    result, out = _score(crm, tmp_path)
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out, dtype={"lead_id": str})
    assert set(scores["lead_id"]) == set(eligible) - lost_ids and "lost_since" not in scores.columns
    assert reopened <= set(scores["lead_id"])  # reopened leads are live again
    assert re.search(rf"{len(lost_ids):,} skipped as lost before {AS_OF}", result.stdout), result.stdout
    assert not scores[["reason_1", "reason_2", "reason_3"]].stack().str.contains("disqualif").any()

    result, out = _score(crm, tmp_path, "--include-lost")
    assert result.exit_code == 0, result.output
    marked = pd.read_csv(out, dtype={"lead_id": str}, parse_dates=["lost_since"])
    assert set(marked["lead_id"]) == set(eligible)
    assert set(marked.loc[marked["lost_since"].notna(), "lead_id"]) == lost_ids
    assert f"{len(lost_ids):,} lost before {AS_OF} and scored, marked by lost_since" in result.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_reopened_leads_carry_the_feature_and_can_get_the_reason(crm):
    from leadtemp.adapters.pyfunc import load_scorer
    from leadtemp.core.reasons import factor_table, group_contributions

    home, _ = crm
    scorer, _ = load_scorer(str(home / "models" / "latest"))
    assert "days_since_reopened" in scorer.spec.columns and scorer.spec.lifecycle["lost_types"] == ["disqualified"]
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    events = pd.read_parquet(home / "data" / "interactions.parquet")
    features = scorer.features(leads, events, T(AS_OF))
    back = features.loc[features["days_since_reopened"].notna()]
    assert len(back) and (back["days_since_reopened"] > 0).all()

    row = back.index[0]
    grouped = group_contributions(scorer.contributions(features.loc[[row]]), scorer.spec).iloc[0]
    table = factor_table(features.loc[row], grouped, scorer.spec, scorer.labels)
    assert table["factor"].str.fullmatch(r"reopened \d+ days? ago").any()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("row_change, words", [
    (lambda f: f.assign(lost_at=f["lost_at"].where(f.index != 5, f["created_at"] - pd.Timedelta(days=1))),
     "lost before they were created"),
    (lambda f: f.assign(lost_at=f["lost_at"].where(f.index != 5, f["created_at"] + pd.Timedelta(days=1)),
                        converted_at=f["converted_at"].where(f.index != 5, f["created_at"] + pd.Timedelta(days=1))),
     "converted and lost at once"),
])
def test_bad_lost_at_stops_train_with_one_line_and_writes_nothing_and_score_rejects_the_lead(crm, tmp_path, monkeypatch,
                                                                                             row_change, words):
    home, params = crm
    leads = row_change(pd.read_parquet(home / "data" / "leads.parquet"))
    bad = tmp_path / "leads.csv"
    leads.to_csv(bad, index=False)
    before = bad.read_bytes()
    monkeypatch.chdir(tmp_path)
    result = _cli("train", "--params", params, "--leads", bad)
    lines = error_lines(result.stderr)
    assert result.exit_code == 2 and len(lines) == 1, result.output
    line = lines[0]
    assert str(bad) in line and "'lost_at'" in line and "row 6 " in line and words in line
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()
    assert bad.read_bytes() == before
    # score: that one lead is rejected with its reason, the others are scored
    result, out = _score(crm, tmp_path, "--fail-on-rejects", leads=bad)
    assert result.exit_code == 3 and out.exists(), result.output
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv", dtype={"lead_id": str})
    assert rejects["lead_id"].tolist() == [leads.loc[5, "lead_id"]] and "lost_at" in rejects["reason"].iloc[0]


@pytest.mark.slow
@pytest.mark.e2e
def test_explain_of_a_lead_that_is_not_scorable_says_which_reason_applies_with_its_date(crm):
    home, params = crm
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    events = pd.read_parquet(home / "data" / "interactions.parquet")
    as_of = T(AS_OF)

    def moment(value) -> str:
        return f"{T(value):%Y-%m-%d}" if T(value) == T(value).normalize() else f"{T(value):%Y-%m-%d %H:%M}"

    eligible = leads.loc[(leads["created_at"] < as_of) & ~(leads["converted_at"] < as_of)].reset_index(drop=True)
    state = lost_state(loss_spells(eligible, events, LossRules(("disqualified",))), eligible["lead_id"].to_numpy(), as_of)
    lost = eligible.loc[state["lost"].to_numpy()].index[0]
    converted = leads.loc[leads["converted_at"] < as_of].iloc[0]
    new = leads.loc[leads["created_at"] >= as_of].iloc[0]
    cases = [(converted["lead_id"], f"it converted on {moment(converted['converted_at'])}, before that day"),
             (new["lead_id"], f"it was created on {moment(new['created_at'])}, on or after that day"),
             (eligible.at[lost, "lead_id"], f"it was lost on {moment(state['lost_since'].iloc[lost])} (closed as lost) "
                                           "and not reopened before that day")]
    for lead, words in cases:
        result = _cli("explain", lead, "--as-of", AS_OF, "--model", home / "models" / "latest", "--params", params)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == f"error: lead {lead!r} is not scorable as of {AS_OF}: {words}", result.output
