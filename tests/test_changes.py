"""Temperature over time (issue 14, item 1): how each lead moved between two dates, by one model, and why."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.cli import app
from leadtemp.core.reasons import MINUS, PLUS
from leadtemp.modelling.scorer import CHANGE_COLUMNS, OUTPUT_COLUMNS
from leadtemp.workflows.changes import crossed, scores_with_changes

EARLIER, LATER = pd.Timestamp("2024-09-15"), pd.Timestamp("2024-10-01")
HEAT = {"cold": 0, "warm": 1, "hot": 2}


@pytest.fixture(scope="module")
def scorer(small_result):
    return dataclasses.replace(small_result.scorer, meta={**small_result.scorer.meta, "model_version": "3",
                                                          "run_id": "0123abcd"})


@pytest.fixture(scope="module")
def moved(small_sim, scorer):
    return scores_with_changes(scorer, small_sim.leads, small_sim.interactions, EARLIER, LATER, 0.02)


def _both_dates(small_sim, scorer):
    leads, events = small_sim.leads, small_sim.interactions
    now = scorer.features(leads, events, LATER)
    before = scorer.features(leads, events, EARLIER)
    before = before.loc[before["lead_id"].isin(now["lead_id"])].reset_index(drop=True)
    return now.set_index("lead_id").loc[before["lead_id"]].reset_index(), before


def test_the_moves_of_a_leads_groups_add_up_to_the_move_of_its_margin(small_sim, scorer):
    later, earlier = _both_dates(small_sim, scorer)
    delta, m_now, m_before = scorer.group_moves(later, earlier)
    assert len(delta) > 500 and (np.abs(m_now - m_before) > 1e-6).mean() > 0.5  # there are moves to add up
    np.testing.assert_allclose(delta.sum(axis=1).to_numpy(), m_now - m_before, rtol=0, atol=1e-9)


def test_the_earlier_scores_are_that_dates_scores_and_the_later_ones_todays(small_sim, scorer, moved):
    leads, events = small_sim.leads, small_sim.interactions
    now = scorer.score(leads, events, LATER)
    pd.testing.assert_frame_equal(moved[OUTPUT_COLUMNS], now[OUTPUT_COLUMNS])
    then = scorer.score(leads, events, EARLIER, reasons=False).set_index("lead_id")
    known = moved.loc[moved["trend"] != "new"]
    np.testing.assert_allclose(known["previous_probability"], then.loc[known["lead_id"], "probability"], rtol=0, atol=1e-12)
    assert (known["previous_bucket"].to_numpy() == then.loc[known["lead_id"], "bucket"].to_numpy()).all()
    new = moved.loc[moved["trend"] == "new"]
    assert len(new) > 0 and set(new["lead_id"]) == set(moved["lead_id"]) - set(then.index)
    assert (new["previous_bucket"] == "").all() and new["previous_probability"].isna().all() and (new["what_changed"] == "").all()


def test_nothing_at_or_after_the_earlier_date_reaches_its_scores(small_sim, scorer, moved):
    """Point in time: inbound calls for every lead on the earlier date itself and after it move today's scores, never
    the earlier ones."""
    leads, events = small_sim.leads, small_sim.interactions
    ids = moved["lead_id"].to_numpy()
    calls = pd.DataFrame({"lead_id": np.repeat(ids, 2), "timestamp": np.tile([EARLIER, EARLIER + pd.Timedelta(days=3)], len(ids)),
                          "type": "phone_call", "direction": "inbound"})
    busier = pd.concat([events, calls.astype({c: events[c].dtype for c in calls.columns if c in events.columns})],
                       ignore_index=True)
    again = scores_with_changes(scorer, leads, busier, EARLIER, LATER, 0.02).set_index("lead_id").loc[ids]
    np.testing.assert_array_equal(again["previous_probability"].to_numpy(), moved["previous_probability"].to_numpy())
    assert (again["probability"].to_numpy() != moved["probability"].to_numpy()).mean() > 0.5


def test_the_trend_follows_the_buckets_and_within_one_the_steady_band(small_sim, scorer, moved):
    known = moved.loc[moved["trend"] != "new"]
    step = known["bucket"].map(HEAT) - known["previous_bucket"].map(HEAT)
    rise = known["probability"] - known["previous_probability"]
    expected = np.where(step > 0, "warming", np.where(step < 0, "cooling", np.where(
        rise > 0.02, "warming", np.where(rise < -0.02, "cooling", "steady"))))
    assert (known["trend"].to_numpy() == expected).all()
    assert {"warming", "cooling", "steady"} <= set(known["trend"])
    wide = scores_with_changes(scorer, small_sim.leads, small_sim.interactions, EARLIER, LATER, 0.99)
    same = wide.loc[(wide["trend"] != "new") & (wide["bucket"] == wide["previous_bucket"])]
    assert (same["trend"] == "steady").all()


def test_what_changed_words_the_groups_that_moved_most_with_the_sign_of_the_move(small_sim, scorer, moved):
    movers = crossed(moved)
    assert len(movers) > 10 and (movers["what_changed"] != "").all()
    assert (movers["bucket"].map(HEAT).diff().fillna(0) <= 0).all(), "hottest bucket first"
    later, earlier = _both_dates(small_sim, scorer)
    delta, _, _ = scorer.group_moves(later, earlier)
    biggest = delta.abs().idxmax(axis=1)
    sign = np.sign(delta.to_numpy()[np.arange(len(delta)), delta.columns.get_indexer(biggest)])
    words = moved.set_index("lead_id").loc[later["lead_id"], "what_changed"].to_numpy()
    first = np.array([w.split("; ")[0] for w in words])
    marks = np.array([PLUS in f.split(", was: ")[0] for f in first])
    assert (marks == (sign > 0)).all() and all(MINUS in f.split(", was: ")[0] for f, s in zip(first, sign) if s < 0)
    assert any(", was: " in w for w in words), "a state that changed says what it was"


def test_the_changes_command_lists_the_movers_and_refuses_bad_input(small_sim, scorer, tmp_path):
    from test_batch import _export

    leads, events = tmp_path / "leads.parquet", tmp_path / "events.parquet"
    small_sim.leads.to_parquet(leads)
    small_sim.interactions.to_parquet(events)
    model = _export(scorer, tmp_path)
    args = ["changes", "--model", str(model), "--params", str(ROOT / "params.yaml"), "--leads", str(leads),
            "--interactions", str(events)]
    runner = CliRunner()
    done = runner.invoke(app, [*args, "--from", str(EARLIER.date()), "--to", str(LATER.date()), "--out",
                               str(tmp_path / "moved.csv"), "--limit", "3"])
    assert done.exit_code == 0, done.output
    written = pd.read_csv(tmp_path / "moved.csv", keep_default_na=False)
    assert list(written.columns) == scorer.output_columns() + CHANGE_COLUMNS
    assert "crossed buckets" in done.output and f"wrote {len(written):,} leads" in done.output
    assert (written["bucket"] != written["previous_bucket"]).all() and len(written) > 10
    for bad, message in (([*args, "--from", "2024-10-01", "--to", "2024-09-15"], "is not before --to 2024-09-15"),
                         ([*args, "--from", "2024-09-15", "--to", "2024-10-01", "--out", str(leads)],
                          "leadtemp never writes over an input")):
        refused = runner.invoke(app, bad)
        assert refused.exit_code == 2 and message in refused.output and len(refused.output.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def files(small_sim, scorer, tmp_path_factory):
    from test_batch import _export

    folder = tmp_path_factory.mktemp("changes")
    small_sim.leads.to_parquet(folder / "leads.parquet")
    small_sim.interactions.to_parquet(folder / "events.parquet")
    return folder, _export(scorer, folder)


def _score(folder, model, *more):
    return CliRunner().invoke(app, ["score", "--model", str(model), "--params", str(ROOT / "params.yaml"),
                                    "--leads", str(folder / "leads.parquet"), "--interactions",
                                    str(folder / "events.parquet"), "--work-dir", str(folder / "work"), *more])


def test_score_since_and_previous_add_the_changes_to_files_and_tables(files, moved):
    import sqlalchemy as sa

    folder, model = files
    first = _score(folder, model, "--as-of", str(EARLIER.date()), "--out", str(folder / "then.csv"))
    assert first.exit_code == 0, first.output
    expected = moved.set_index("lead_id")
    for how in (["--previous", str(folder / "then.csv")], ["--since", str(EARLIER.date())]):
        out = folder / f"now-{how[0][2:]}.parquet"
        done = _score(folder, model, "--as-of", str(LATER.date()), "--out", str(out), *how)
        assert done.exit_code == 0, done.output
        got = pd.read_parquet(out)
        assert list(got.columns) == list(moved.columns)
        want = expected.loc[got["lead_id"]]
        for column in ("probability", "previous_probability"):
            np.testing.assert_allclose(got[column], want[column], rtol=0, atol=1e-12)
        for column in ("bucket", "previous_bucket", "trend", "what_changed", "reason_1"):
            assert (got[column].fillna("").to_numpy() == want[column].to_numpy()).all(), column
    url = f"sqlite:///{folder / 'crm.db'}"
    done = _score(folder, model, "--as-of", str(LATER.date()), "--db", url, "--write-table", "scores", "--since",
                  str(EARLIER.date()))
    assert done.exit_code == 0, done.output
    engine = sa.create_engine(url)
    table = pd.read_sql("SELECT * FROM scores", engine)
    engine.dispose()
    assert set(CHANGE_COLUMNS) <= set(table.columns) and len(table) == len(moved)
    assert (table.set_index("lead_id").loc[moved["lead_id"], "trend"].to_numpy() == moved["trend"].to_numpy()).all()


def test_score_refuses_changes_it_cannot_vouch_for(files):
    folder, model = files
    then = pd.read_csv(folder / "then.csv", dtype=str) if (folder / "then.csv").exists() else None
    if then is None:
        assert _score(folder, model, "--as-of", str(EARLIER.date()), "--out", str(folder / "then.csv")).exit_code == 0
        then = pd.read_csv(folder / "then.csv", dtype=str)
    then.assign(model_version="2").to_csv(folder / "other-model.csv", index=False)
    then.assign(as_of="2024-10-05").to_csv(folder / "later.csv", index=False)
    pd.concat([then, then.assign(as_of="2024-09-01")]).to_csv(folder / "two-dates.csv", index=False)
    out = folder / "refused.csv"
    for more, message in (
            (["--previous", str(folder / "other-model.csv")], "scored by model version 2 (run 0123abcd); this run "
                                                               "scores with version 3"),
            (["--previous", str(folder / "later.csv")], "its date 2024-10-05 is not before --as-of 2024-10-01"),
            (["--previous", str(folder / "two-dates.csv")], "column 'as_of' holds 2 dates"),
            (["--since", "2024-10-01"], "--since 2024-10-01 is not before --as-of 2024-10-01"),
            (["--since", "2024-09-01", "--previous", str(folder / "then.csv")], "give --since DATE or --previous FILE"),
            (["--since", "yesterday"], "--since 'yesterday' is not a date")):
        refused = _score(folder, model, "--as-of", str(LATER.date()), "--out", str(out), *more)
        assert refused.exit_code == 2, (more, refused.output)
        assert message in refused.output and len(refused.output.strip().splitlines()) == 1, refused.output
        assert not out.exists()


def test_explain_since_says_how_the_lead_moved_in_the_terminal_and_on_its_card(files, moved):
    import html as html_lib

    folder, model = files
    mover = crossed(moved).iloc[0]
    card = folder / "card.html"
    done = CliRunner().invoke(app, ["explain", str(mover["lead_id"]), "--as-of", str(LATER.date()), "--since",
                                    str(EARLIER.date()), "--html", str(card), "--model", str(model), "--params",
                                    str(ROOT / "params.yaml"), "--leads", str(folder / "leads.parquet"),
                                    "--interactions", str(folder / "events.parquet")], terminal_width=400)
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())  # rich wraps long lines
    assert f"since {EARLIER.date()}: {mover['trend']} ({mover['previous_bucket']} " in said
    assert " ".join(mover["what_changed"].split()) in said
    page = html_lib.unescape(card.read_text())
    assert f"Trend since {EARLIER.date()}: {mover['trend']}" in page and mover["what_changed"] in page
