"""Lead cards (`explain --html`, `score --html DIR --top N`): one self-contained page per lead, read in headless Chromium.

The card must say what the terminal says (the same reasons in the same order), show the lead's interactions
before as_of and none after (point-in-time), and show no personal data but the lead's id.
"""

import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadtemp.adapters.cards import (
    CARD_MARKER,
    FOLDER_MARKER,
    INDEX_MARKER,
    NEUTRAL_COLOUR,
    OUTBOUND_COLOUR,
    LeadCard,
    check_private,
    event_style,
    render_card,
)
from leadtemp.core.errors import ConfigError
from test_report import BROWSER_FLAGS, PARAMS, chromium, enter, run, trained_world

AS_OF = "2024-10-01"
DATA = ["--leads", "sim/leads.parquet", "--interactions", "sim/interactions.parquet"]
PERSONAL = ("email", "phone", "name")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    yield from trained_world(tmp_path_factory, "cards")


@pytest.fixture()
def home(trained, monkeypatch):
    return enter(trained, monkeypatch)


def visible(page: str) -> str:
    """The text a reader sees: no style, no tags, whitespace folded."""
    page = re.sub(r"<style>.*?</style>|<title>.*?</title>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def in_order(text: str, parts: list[str]) -> bool:
    at = 0
    for part in parts:
        found = text.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


def assert_self_contained_and_private(page: str, leads: pd.DataFrame, lead_id: str | None = None) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"https?://", page), "a network reference"
    assert not re.search(r"""\bsrc\s*=\s*(?!["']?data:)""", page), "a resource that is not inline"
    text = visible(page)
    for column in PERSONAL:
        hits = [v for v in leads[column].astype(str) if v in text]
        assert not hits, (column, hits[:3])
    if lead_id is not None:  # its own id, and no other lead's
        others = [v for v in leads["lead_id"] if v != lead_id and v in text]
        assert f"Lead {lead_id}" in text and not others, others[:3]


def lead_with_history_on_both_sides(home: Path) -> str:
    """A lead scorable at AS_OF with interactions before it and on or after it (so the cut is tested)."""
    leads = pd.read_parquet(home / "sim" / "leads.parquet")
    events = pd.read_parquet(home / "sim" / "interactions.parquet")
    when = pd.Timestamp(AS_OF)
    open_ = leads[(leads["created_at"] < when) & ~(leads["converted_at"] < when)]
    before = events[events["timestamp"] < when].groupby("lead_id").size()
    after = events[events["timestamp"] >= when].groupby("lead_id").size()
    both = open_["lead_id"][open_["lead_id"].isin(before.index) & open_["lead_id"].isin(after.index)]
    return str(sorted(both, key=lambda lead: -before[lead])[0])


def test_card_of_one_lead_says_what_explain_says_in_a_real_browser(home):
    import leadtemp
    from leadtemp.api import params_with

    browser = chromium()
    lead = lead_with_history_on_both_sides(home)
    done = run("explain", lead, "--as-of", AS_OF, "--html", "card.html", *DATA)
    assert done.exit_code == 0, done.output
    assert done.output.rstrip().endswith("wrote card.html")
    page = (home / "card.html").read_text(encoding="utf-8")
    assert page.count(CARD_MARKER) == 1

    why = leadtemp.explain(params_with(PARAMS, "sim/leads.parquet", "sim/interactions.parquet"), lead, AS_OF)
    table = why.factors
    shown = [*table[table["effect"] > 0].head(5)["factor"], *table[table["effect"] < 0].head(5)["factor"]]
    assert len(shown) >= 4
    assert in_order(done.output, shown), "the terminal's order"
    assert in_order(visible(page), shown), "the card's order differs from the terminal's"
    assert len(re.findall(r'class="bar (?:plus|minus)"', page)) == len(shown)
    assert len(re.findall(r'class="bar plus"', page)) == min(5, int((table["effect"] > 0).sum()))

    # The timeline: one mark per interaction before as_of, none at or after it.
    events = pd.read_parquet(home / "sim" / "interactions.parquet")
    own = events[events["lead_id"] == lead]
    before, after = own[own["timestamp"] < pd.Timestamp(AS_OF)], own[own["timestamp"] >= pd.Timestamp(AS_OF)]
    assert len(before) > 0 and len(after) > 0
    marks = [pd.Timestamp(t) for t in re.findall(r'class="mark" data-at="([^"]+)"', page)]
    assert len(marks) == len(before) and max(marks) < pd.Timestamp(AS_OF)
    assert sorted(marks) == sorted(before["timestamp"])
    assert "thermometer place 1 of 11" in page or "thermometer place 2 of 11" in page  # coloured by the coach's order

    # What would move it: the strongest negative groups, worded.
    movers = re.search(r'<ol id="movers">(.*?)</ol>', page, flags=re.S)
    assert movers and in_order(visible(movers.group(1)), list(table[table["effect"] < 0].head(3)["factor"]))

    leads = pd.read_parquet(home / "sim" / "leads.parquet")
    assert_self_contained_and_private(page, leads, lead)
    # No trend is made up: without --since the card says how to ask for one (tests/test_changes.py shows one).
    assert "Trend: not asked for" in visible(page) and "warming" not in page and "cooling" not in page

    # What the browser shows, and that it is not blank.
    dom = subprocess.run([browser, *BROWSER_FLAGS, "--enable-logging=stderr", "--v=0", "--dump-dom",
                          (home / "card.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    body = visible(dom.stdout)
    assert f"{why.probability:.1%} chance to convert within {why.horizon_days} days" in body
    assert f"{why.bucket} {why.probability:.1%}" in body and f"{why.bucket.capitalize()} (" in body
    # How soon, as the terminal says it (the test world's model has when.horizons_days 7 / 30 / 90).
    soon = re.search(r"chance within 7 / 30 / 90 days: [^\n]+\(median\)", done.output)
    assert soon and why.when and f"How soon: {soon.group(0)}." in body
    shot = home / "card.png"
    subprocess.run([browser, *BROWSER_FLAGS, "--window-size=1000,1400", f"--screenshot={shot}",
                    (home / "card.html").as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50

    again = run("explain", lead, "--as-of", AS_OF, "--html", "card.html", *DATA)  # an earlier card is replaced
    assert again.exit_code == 0, again.output


def test_top_leads_folder_of_cards_and_index(home):
    done = run("score", "--as-of", AS_OF, "--out", "scores.csv", *DATA, "--html", "cards", "--top", "4")
    assert done.exit_code == 0, done.output
    assert "wrote the cards of the top 4 leads and their index -> cards/index.html" in done.output
    folder = home / "cards"
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".html")[-1] == "index.html"
    assert (folder / FOLDER_MARKER).is_file() and len(list(folder.glob("*.html"))) == 5
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert INDEX_MARKER in index
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', index)
    scores = pd.read_csv(home / "scores.csv", dtype={"lead_id": str})
    assert [lead for _, lead in links] == list(scores["lead_id"].head(4))
    leads = pd.read_parquet(home / "sim" / "leads.parquet")
    assert_self_contained_and_private(index, leads)
    for (href, lead), row in zip(links, scores.head(4).itertuples()):
        assert "/" not in href and not href.startswith(("http", "file"))
        card = (folder / href).read_text(encoding="utf-8")  # the relative link resolves
        assert CARD_MARKER in card and 'href="index.html"' in card
        assert f"{row.probability:.1%}" in card and f"rank {row.rank} of the scoring run" in card
        assert_self_contained_and_private(card, leads, lead)

    # Again into the same folder: replaced whole (a smaller top leaves no stale card).
    again = run("score", "--as-of", AS_OF, "--out", "scores.csv", *DATA, "--html", "cards", "--top", "2")
    assert again.exit_code == 0, again.output
    assert len(list(folder.glob("*.html"))) == 3


@pytest.mark.parametrize("make, args, message", [
    (lambda h: (h / "mine").mkdir() or (h / "mine" / "notes.txt").write_text("my notes"), ["--html", "mine"],
     "exists and is not a folder of leadtemp lead cards"),
    (lambda h: (h / "mine.txt").write_text("my notes"), ["--html", "mine.txt"], "is a file; give a folder"),
    (lambda h: None, ["--html", "sim"], "exists and is not a folder of leadtemp lead cards"),  # the inputs' folder
    (lambda h: None, ["--html", "sim/leads.parquet"], "is the leads input"),
    (lambda h: None, ["--top", "3"], "--top N needs --html DIR"),
    (lambda h: None, ["--html", "new", "--top", "0"], "give at least 1"),
    (lambda h: None, ["--html", "new", "--engine", "spark"], "needs the local engine"),
])
def test_score_html_refuses_before_any_work(home, make, args, message):
    make(home)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file() and "mlflow" not in p.name}
    result = run("score", "--as-of", AS_OF, "--out", "refused.csv", *DATA, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (home / "refused.csv").exists() and not (home / "new").exists()
    after = {p: p.read_bytes() for p in home.rglob("*") if p.is_file() and "mlflow" not in p.name}
    assert after == before


def test_a_card_folder_with_a_users_file_in_it_is_not_replaced(home):
    made = run("score", "--as-of", AS_OF, "--out", "scores2.csv", *DATA, "--html", "cards2", "--top", "1")
    assert made.exit_code == 0, made.output
    (home / "cards2" / "mine.txt").write_text("my notes")
    result = run("score", "--as-of", AS_OF, "--out", "scores2.csv", *DATA, "--html", "cards2", "--top", "1")
    assert result.exit_code == 2 and "is not a folder of leadtemp lead cards" in result.output
    assert (home / "cards2" / "mine.txt").read_text() == "my notes"


@pytest.mark.parametrize("html, message", [
    ("notes.txt", "give an .html file name"),
    ("mine.html", "exists and is not a leadtemp lead card"),
])
def test_explain_html_refuses_bad_output(home, html, message):
    (home / "mine.html").write_text("<html>my own page</html>")
    lead = lead_with_history_on_both_sides(home)
    result = run("explain", lead, "--as-of", AS_OF, "--html", html, *DATA)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (home / "mine.html").read_text() == "<html>my own page</html>" and not (home / "notes.txt").exists()


def test_explain_html_of_an_unknown_lead_writes_nothing(home):
    result = run("explain", "NO-SUCH-LEAD", "--as-of", AS_OF, "--html", "nobody.html", *DATA)
    assert result.exit_code == 2 and "no lead 'NO-SUCH-LEAD'" in result.output
    assert not (home / "nobody.html").exists()


# -- units: no model needed ---------------------------------------------------------------------------------

def small_card(**kw) -> LeadCard:
    factors = pd.DataFrame({"factor": ["phoned us 2 times in the last 7 days", "sector: retail"],
                            "effect": [0.8, -0.3]}, index=["phone_call_in", "sector"])
    base = dict(lead_id="L1", as_of=pd.Timestamp("2024-10-01"), model_version="3", run_id="r", probability=0.42,
                score=42, bucket="hot", horizon_days=90, factors=factors, hot_cutoff=0.4, warm_cutoff=0.1,
                group_names={"phone_call_in": "calls from them", "sector": "sector"}, attributes=frozenset({"sector"}),
                timeline=pd.DataFrame({"timestamp": pd.to_datetime(["2024-09-01", "2024-09-20", "2024-09-25"]),
                                       "type": ["phone_call", "phone_call", "offer_sent"],
                                       "direction": ["inbound", "outbound", "outbound"]}),
                places={"phone_call": 10.0, "post_like": 1.0}, kinds={"offer_sent": "step"},
                type_labels={"offer_sent": "offer sent"})
    return LeadCard(**{**base, **kw})


def test_timeline_colours_follow_the_thermometer():
    card = small_card()
    hottest, _, _ = event_style("phone_call", "inbound", card)
    coolest, _, _ = event_style("post_like", "inbound", card)
    assert hottest == "#c62828" and coolest != hottest
    assert event_style("phone_call", "outbound", card)[0] == OUTBOUND_COLOUR
    assert event_style("offer_sent", "outbound", card)[0] == NEUTRAL_COLOUR  # a step
    assert event_style("web_visit", "inbound", card)[0] == NEUTRAL_COLOUR    # no place on the thermometer
    page = render_card(card)
    assert page.count('class="mark"') == 3 and "offer sent" in page and "rect class=\"mark\"" in page
    assert "a fact about the lead" in page and "sector: retail" in page


def test_a_card_that_would_show_personal_data_is_refused():
    page = render_card(small_card(factors=pd.DataFrame({"factor": ["contact: noa@example.com"], "effect": [0.2]},
                                                       index=["x"])))
    with pytest.raises(ConfigError, match="shaped like an e-mail"):
        check_private(page, "L1", {})
    page = render_card(small_card(factors=pd.DataFrame({"factor": ["sector: Noa Levi"], "effect": [0.2]}, index=["x"])))
    with pytest.raises(ConfigError, match="would show its 'name'"):
        check_private(page, "L1", {"name": "Noa Levi", "email": None})
    check_private(render_card(small_card()), "L1", {"name": "Noa Levi", "email": "l1@example.com"})
