"""Referrals and repeat customers (issue 14, item 5; DOMAIN section 4).

Units on hand-made frames (the referral features are point-in-time, the wording, the data contract and the
params' checks), the simulator's referral story, and the command line end to end on a small simulated CRM
with referrals: train, score (the batch engine, several partitions, agrees with the whole table in memory)
and the lift the referral features carry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadtemp.core.config import Features, LeadColumns, params_from_dict
from leadtemp.core.errors import ConfigError, SchemaError
from leadtemp.core.features import build_training_frame, features_as_of, fit_feature_spec, prepare_events
from leadtemp.core.reasons import describe_referrals, describe_referrer, feature_groups
from leadtemp.core.referrals import REFERRAL_FEATURES, referral_features, referral_ledger, with_referrals
from leadtemp.core.schema import RowProblems, validate_leads
from leadtemp.simulate import simulate
from test_lost_leads import _cli, error_lines, trained_crm

T = pd.Timestamp
ROOT = Path(__file__).resolve().parents[1]
CUTOFF = T("2024-03-01")


def _leads() -> pd.DataFrame:
    """a bought before the cutoff, b at the cutoff, c after it; d (created after the cutoff) names a."""
    return pd.DataFrame({
        "lead_id": ["a", "b", "c", "x", "y", "z", "w", "d", "e"],
        "created_at": [T("2024-01-01")] * 7 + [T("2024-03-01"), T("2024-04-01")],
        "converted_at": [T("2024-02-01"), CUTOFF, T("2024-03-02"), pd.NaT, T("2024-02-20"), T("2024-03-05"), pd.NaT,
                         pd.NaT, pd.NaT],
        #              x: by a, y: by b, z: by c, w: outside, d and e: by x (d at the cutoff, e after it)
        "referred_by": pd.array([None, None, None, "a", "b", "c", "C000001", "x", "x"], dtype="string"),
    })


def _at(leads: pd.DataFrame, when) -> pd.DataFrame:
    return with_referrals(leads, referral_ledger(leads), T(when)).set_index("lead_id")[list(REFERRAL_FEATURES)]


# -- point in time ---------------------------------------------------------------------------------------

def test_a_referrer_counts_as_a_customer_only_once_it_bought_strictly_before_the_cutoff():
    f = _at(_leads(), CUTOFF)
    assert f.loc["x"].tolist() == [1, 1, 1, 0, 0]   # a bought in February
    assert f.loc["y"].tolist() == [1, 1, 0, 0, 0]   # b bought at the cutoff itself: not yet known
    assert f.loc["z"].tolist() == [1, 1, 0, 0, 0]   # c bought after it
    assert f.loc["w"].tolist() == [1, 0, 0, 0, 0]   # an outside customer: referred, nothing else guessed
    assert f.loc["a"].tolist() == [0, 0, 0, 1, 0]   # not referred itself; it referred x, who has not bought
    assert _at(_leads(), "2024-03-06").loc[["y", "z"], "referrer_converted"].tolist() == [1, 1]


def test_referrals_made_count_only_leads_created_and_conversions_made_before_the_cutoff():
    f = _at(_leads(), CUTOFF)
    assert f.loc["a", "referrals_made"] == 1 and f.loc["a", "referrals_converted"] == 0  # x has not bought
    assert f.loc["b", ["referrals_made", "referrals_converted"]].tolist() == [1, 1]       # y bought 20 February
    assert f.loc["c", ["referrals_made", "referrals_converted"]].tolist() == [1, 0]       # z buys after the cutoff
    assert f.loc["x", "referrals_made"] == 0  # d is created at the cutoff, e after it
    later = _at(_leads(), "2024-04-02")
    assert later.loc["x", "referrals_made"] == 2 and later.loc["c", "referrals_converted"] == 1


def test_a_referrer_created_after_the_cutoff_is_not_yet_a_known_lead():
    leads = _leads()
    leads.loc[leads["lead_id"] == "a", "created_at"] = T("2024-03-10")  # named by x before the table held it
    leads.loc[leads["lead_id"] == "a", "converted_at"] = pd.NaT
    f = _at(leads, CUTOFF)
    assert f.loc["x"].tolist() == [1, 0, 0, 0, 0]


def test_the_future_changes_no_referral_feature():
    """What happens at or after the cutoff (new referrals, referrers buying, new leads) changes nothing before it."""
    leads = _leads()
    before = _at(leads.loc[leads["created_at"] < CUTOFF].assign(
        converted_at=lambda f: f["converted_at"].where(f["converted_at"] < CUTOFF)), CUTOFF)
    assert _at(leads, CUTOFF).loc[before.index].equals(before)


def test_per_row_cutoffs_equal_one_date_at_a_time():
    sim = simulate(600, seed=5, months=12, referrals=True)
    leads = sim.leads
    cutoffs = pd.DatetimeIndex(["2023-05-01", "2023-09-01", "2023-12-01"])
    ledger = referral_ledger(leads)
    rows = leads.sample(400, random_state=1).reset_index(drop=True)
    when = cutoffs[np.arange(len(rows)) % 3]
    together = referral_features(ledger, rows["lead_id"].to_numpy(), rows["referred_by"].to_numpy(), when.to_numpy())
    for cutoff in cutoffs:
        mask = when == cutoff
        alone = with_referrals(rows.loc[mask], ledger, cutoff)[list(REFERRAL_FEATURES)].reset_index(drop=True)
        assert together.loc[mask].reset_index(drop=True).equals(alone)
    assert together["referrer_converted"].sum() > 5 and together["referrals_made"].sum() > 5


def test_training_frame_and_scoring_path_agree_and_the_model_has_the_features_only_when_declared():
    sim = simulate(600, seed=5, months=12, referrals=True)
    leads, events = sim.leads, sim.interactions
    args = (leads, events, Features(), ("source",), (), T("2023-10-01"))
    plain, spec = fit_feature_spec(*args), fit_feature_spec(*args, referrals=True)
    assert not set(REFERRAL_FEATURES) & set(plain.columns)
    assert spec.columns[-len(REFERRAL_FEATURES):] == list(REFERRAL_FEATURES)
    assert [g.key for g in feature_groups(spec)][-2:] == ["referrer", "referrals_made"]
    cutoff = T("2023-11-01")
    open_ = leads.loc[(leads["created_at"] < cutoff) & ~(leads["converted_at"] < cutoff)].reset_index(drop=True)
    snaps = pd.DataFrame({"lead_id": open_["lead_id"], "cutoff": cutoff, "label": 0})
    trained = build_training_frame(snaps, leads, events, spec)
    scored = features_as_of(with_referrals(open_, referral_ledger(leads), cutoff), prepare_events(events, spec), cutoff,
                            spec)
    pd.testing.assert_frame_equal(trained[spec.columns], scored[spec.columns])
    with pytest.raises(ValueError, match="referral features"):
        features_as_of(open_, prepare_events(events, spec), cutoff, spec)


# -- words -----------------------------------------------------------------------------------------------

def test_reasons_say_who_referred_them_and_whom_they_referred_never_an_id():
    assert describe_referrer(1, 1, 1) == "referred by a customer who bought"
    assert describe_referrer(1, 1, 0) == "referred by a lead who has not bought yet"
    assert describe_referrer(1, 0, 0) == "referred by someone outside the leads table"
    assert describe_referrer(0, 0, 0) == "not referred by anyone"
    assert describe_referrals(3, 1) == "referred 3 leads, 1 bought"
    assert describe_referrals(1, 0) == "referred 1 lead, none bought yet"
    assert describe_referrals(0, 0) == "has referred no one yet"


# -- the data contract and the params ----------------------------------------------------------------------

def _raw() -> pd.DataFrame:
    return pd.DataFrame({"id": ["1", "2", "3"], "made": ["2024-01-01"] * 3, "won": ["", "2024-02-01", ""],
                         "ref": ["", " 1 ", "OUT-7"]})


ROLES = LeadColumns(lead_id="id", created_at="made", converted_at="won", referred_by="ref")


def test_referred_by_is_read_as_text_ids_and_an_outside_id_is_allowed():
    leads = validate_leads(_raw(), "leads.csv", columns=ROLES)
    assert leads["referred_by"].tolist()[1:] == ["1", "OUT-7"] and pd.isna(leads["referred_by"].iloc[0])
    assert "ref" not in leads.columns


def test_a_lead_referring_to_itself_is_a_bad_value_raised_in_training_and_rejected_in_scoring():
    raw = _raw().assign(ref=["", "1", "3"])
    with pytest.raises(SchemaError, match=r"leads.csv: column 'ref': 1 row\(s\) refer to themselves .* row 3 "):
        validate_leads(raw, "leads.csv", columns=ROLES)
    problems = RowProblems(3)
    validate_leads(raw, "leads.csv", columns=ROLES, problems=problems)
    assert problems.bad.tolist() == [False, False, True]
    with pytest.raises(SchemaError, match=r"missing columns \['ref'\]"):
        validate_leads(_raw().drop(columns="ref"), "leads.csv", columns=ROLES)


@pytest.mark.parametrize("data, words", [
    ({"columns": {"referred_by": "lead_id"}}, "data.columns.referred_by: 'lead_id' is already another role's column"),
    ({"columns": {"referred_by": "converted_at"}}, "already another role's column"),
    ({"columns": {"referred_by": "ref"}, "categorical": ["ref"]}, "are data.columns roles and cannot also be attributes"),
    ({"columns": {"referred_by": "ref"}, "numeric": ["referrals_made"]}, "names of the referral features"),
    ({"columns": {"referred_by": "ref", "label": "won", "converted_at": None}, "interactions": None},
     "referred_by needs conversion times"),
])
def test_params_refuse_a_referrer_column_that_is_another_role_with_one_line(data, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        params_from_dict({"data": data})
    assert "\n" not in str(caught.value)


# -- the simulator ----------------------------------------------------------------------------------------

def test_the_simulator_keeps_every_world_without_referrals_and_tells_the_referral_story():
    plain, off = simulate(500, seed=2, months=12), simulate(500, seed=2, months=12, referrals=False)
    pd.testing.assert_frame_equal(plain.leads, off.leads)
    pd.testing.assert_frame_equal(plain.interactions, off.interactions)
    assert "referred_by" not in plain.leads.columns
    world = simulate(3000, seed=2, months=18, referrals=True).leads
    named = world.loc[world["referred_by"].notna()]
    assert set(named["source"]) == {"referral"} and 0.6 < len(named) / (world["source"] == "referral").sum() < 0.95
    by = named.merge(world[["lead_id", "created_at", "converted_at"]], left_on="referred_by", right_on="lead_id",
                     suffixes=("", "_referrer"))
    outside = len(named) - len(by)
    assert outside > 0 and named["referred_by"].str.fullmatch(r"C\d{6}").sum() == outside
    assert (by["created_at_referrer"] < by["created_at"]).all()  # an earlier lead
    bought = by["converted_at_referrer"] < by["created_at"]
    assert bought.mean() > (world["converted_at"].notna().mean() / 2)  # named far more often than chance
    rate = by.groupby(bought)["converted_at"].apply(lambda s: s.notna().mean())
    assert rate[True] > rate[False] + 0.15  # a customer's word warms the lead


# -- the command line, end to end --------------------------------------------------------------------------

AS_OF = "2024-10-01"


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """A small simulated CRM with referrals, a params file that maps referred_by and a model trained on it."""
    home = tmp_path_factory.mktemp("referral-crm")
    params, trained = trained_crm(home, {"referred_by": "referred_by"}, "--referrals", 3000,
                                  "name their referrer (referred_by)", when={"horizons_days": []})
    return home, params, trained


@pytest.mark.slow
@pytest.mark.e2e
def test_train_notes_outside_referrers_and_score_in_partitions_equals_the_whole_table(crm, tmp_path):
    from leadtemp.adapters.pyfunc import load_scorer

    home, params, trained = crm
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    events = pd.read_parquet(home / "data" / "interactions.parquet")
    outside = int((leads["referred_by"].notna() & ~leads["referred_by"].isin(leads["lead_id"])).sum())
    flat = " ".join(trained.split())
    assert f"{int(leads['referred_by'].notna().sum()):,} leads name a referrer; {outside:,} of them one not in the leads" \
        in flat and outside > 0
    out = tmp_path / "scores.csv"
    model = home / "models" / "latest"
    result = _cli("score", "--as-of", AS_OF, "--out", out, "--chunk-size", 500, "--model", model, "--params", params)
    assert result.exit_code == 0, result.output
    assert re.search(r"into [2-9] partitions", result.output), result.output  # referrers in other partitions
    scores = pd.read_csv(out, dtype={"lead_id": str}).set_index("lead_id")
    scorer, _ = load_scorer(str(home / "models" / "latest"))
    assert set(REFERRAL_FEATURES) <= set(scorer.spec.columns)
    saved = json.loads(next((home / "models" / "latest").rglob("scorer.json")).read_text())
    assert saved["format_version"] == 3 and saved["spec"]["referrals"] is True  # older readers refuse it
    memory = scorer.score(leads, events, T(AS_OF)).set_index("lead_id")
    assert set(scores.index) == set(memory.index)
    np.testing.assert_allclose(scores.loc[memory.index, "probability"], memory["probability"], rtol=0, atol=1e-12)
    reasons = pd.concat([scores[c] for c in ("reason_1", "reason_2", "reason_3")])
    assert reasons.str.fullmatch(r"referred by a customer who bought \(\+\)").any()
    assert not reasons.str.contains(r"\bL\d{7}\b|\bC\d{6}\b").any()  # no referrer id in any reason
    assert "referred_by" not in scores.columns
    # from database tables (SQLite) into a table: the same scores (referrers found across the whole leads table)
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    leads.to_sql("leads", engine, index=False)
    events.to_sql("interactions", engine, index=False)
    result = _cli("score", "--as-of", AS_OF, "--db", url, "--leads-table", "leads", "--interactions-table",
                  "interactions", "--write-table", "lead_scores", "--chunk-size", 500, "--model", model, "--params", params)
    assert result.exit_code == 0, result.output
    table = pd.read_sql("SELECT lead_id, probability FROM lead_scores", engine).set_index("lead_id")
    engine.dispose()
    np.testing.assert_allclose(table.loc[memory.index, "probability"], memory["probability"], rtol=0, atol=1e-12)
    # the Spark engine does not look referrers up across partitions: refused in one line, before any Spark work
    result = _cli("score", "--as-of", AS_OF, "--out", tmp_path / "spark.csv", "--engine", "spark", "--model", model,
                  "--params", params)
    assert result.exit_code == 2 and "referral features" in result.output and "local engine" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "spark.csv").exists()
    # how each lead moved since a month before, in partitions, equals the whole table in memory (leadtemp changes)
    from leadtemp.workflows.changes import scores_with_changes

    moved_out = tmp_path / "moved.csv"
    result = _cli("score", "--as-of", AS_OF, "--since", "2024-09-01", "--out", moved_out, "--chunk-size", 500,
                  "--model", model, "--params", params)
    assert result.exit_code == 0, result.output
    moved = pd.read_csv(moved_out, dtype={"lead_id": str}).set_index("lead_id")
    expected = scores_with_changes(scorer, leads, events, T("2024-09-01"), T(AS_OF), 0.02).set_index("lead_id")
    np.testing.assert_allclose(moved.loc[expected.index, "previous_probability"], expected["previous_probability"],
                               rtol=0, atol=1e-12)
    # explain one referred lead: its referrer is found in the whole table, not only among its own rows
    referred = memory.loc[memory.index.isin(leads.loc[leads["referred_by"].isin(leads["lead_id"]), "lead_id"])].index[0]
    why = _cli("explain", referred, "--as-of", AS_OF, "--model", model, "--params", params)
    assert why.exit_code == 0 and re.search(r"referred by a (customer who bought|lead who has not bought yet)",
                                            why.stdout), why.output


@pytest.mark.slow
@pytest.mark.e2e
def test_a_lead_referring_to_itself_stops_train_with_one_line_and_score_rejects_it(crm, tmp_path, monkeypatch):
    home, params, _ = crm
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    leads.loc[5, "referred_by"] = leads.loc[5, "lead_id"]
    bad = tmp_path / "leads.csv"
    leads.to_csv(bad, index=False)
    monkeypatch.chdir(tmp_path)
    result = _cli("train", "--params", params, "--leads", bad)
    lines = error_lines(result.stderr)
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(bad) in lines[0] and "'referred_by'" in lines[0] and "row 6 " in lines[0] and "themselves" in lines[0]
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlflow.db").exists()
    out = tmp_path / "scores.csv"
    result = _cli("score", "--as-of", AS_OF, "--out", out, "--model", home / "models" / "latest", "--params", params,
                  "--leads", bad, "--fail-on-rejects")
    assert result.exit_code == 3 and out.exists(), result.output
    rejects = pd.read_csv(tmp_path / "scores.rejects.csv", dtype={"lead_id": str})
    assert rejects["lead_id"].tolist() == [leads.loc[5, "lead_id"]] and "themselves" in rejects["reason"].iloc[0]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_referral_features_carry_lift_on_the_referral_world(crm):
    """Same data, same split: with the referrer column the booster uses the referral features, and the test ROC-AUC
    on the referred leads rises (the printed numbers are the measured lift; the asserts are truths, not a level)."""
    from leadtemp.api import load_data
    from leadtemp.core.config import load_params
    from leadtemp.core.metrics import ranking_metrics
    from leadtemp.workflows.train import train

    home, params, _ = crm
    p = load_params(params)
    leads, events = load_data(p)
    plain = train(leads.drop(columns="referred_by"), events, p.replace(data={"columns": LeadColumns()}))
    rich = train(leads, events, p)
    assert plain.splits.describe() == rich.splits.describe() and len(plain.test) == len(rich.test)
    gain = dict(zip(rich.scorer.spec.columns, rich.scorer.booster.feature_importance("gain")))
    used = {c: round(float(gain[c]), 1) for c in REFERRAL_FEATURES}
    assert used["referrer_converted"] > 0, used
    referred = rich.test["lead_id"].isin(leads.loc[leads["referred_by"].notna(), "lead_id"]).to_numpy()

    def auc(result, rows=slice(None)) -> float:
        return round(ranking_metrics(result.test["label"].to_numpy()[rows], result.test["margin"].to_numpy()[rows])
                     ["roc_auc"], 4)

    print(f"test ROC-AUC without / with referred_by: all {auc(plain)} / {auc(rich)}, referred leads "
          f"({referred.sum()} rows) {auc(plain, referred)} / {auc(rich, referred)}; gain {used}")
    assert auc(rich, referred) > auc(plain, referred)


@pytest.mark.slow
@pytest.mark.e2e
def test_a_serve_request_names_referrers_among_its_own_leads(crm):
    """A request's leads are the whole table it sees: with the referrers in it, the answer equals scoring those leads
    in memory; a request without referred_by scores its leads as not referred."""
    from leadtemp.adapters.pyfunc import answer, load_scorer, nest

    home, _, _ = crm
    scorer, _ = load_scorer(str(home / "models" / "latest"))
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    events = pd.read_parquet(home / "data" / "interactions.parquet")
    as_of = T(AS_OF)
    referrer = leads.set_index("lead_id")["converted_at"].reindex(leads["referred_by"]).to_numpy()
    open_ = (leads["created_at"] < as_of) & ~(leads["converted_at"] < as_of)
    chosen = leads.loc[open_.to_numpy() & (referrer < as_of)].head(15)
    assert len(chosen) == 15
    subset = leads.loc[leads["lead_id"].isin(set(chosen["lead_id"]) | set(chosen["referred_by"]))].reset_index(drop=True)
    own = events.loc[events["lead_id"].isin(subset["lead_id"])]
    served = answer(scorer, nest(subset, own, scorer, statuses=True), {"as_of": AS_OF}).set_index("lead_id")
    memory = scorer.score(subset, own, as_of).set_index("lead_id")
    np.testing.assert_allclose(served.loc[memory.index, "probability"].astype(float), memory["probability"], atol=1e-12)
    assert memory.loc[chosen["lead_id"]].filter(like="reason_").stack().str.contains("customer who bought").any()
    alone = answer(scorer, nest(subset.drop(columns="referred_by"), own, scorer, statuses=True), {"as_of": AS_OF})
    plain = scorer.score(subset.assign(referred_by=pd.NA), own, as_of).set_index("lead_id")
    np.testing.assert_allclose(alone.set_index("lead_id").loc[plain.index, "probability"].astype(float),
                               plain["probability"], atol=1e-12)
