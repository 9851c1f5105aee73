"""Lead cards: one self-contained HTML page per lead, the answer to "why is this lead hot?" a rep can open.

A card shows the lead's chance to convert, score and bucket and what the bucket means; the reasons for and
against as bars in words (the factor table of ``leadtemp explain``, in its order); the lead's interactions
before ``as_of`` on a timeline coloured by their place on the thermometer (docs/domain.md section 1); and
what would move it (the strongest groups pulling it down). The lead's id is shown, nothing else about the
person: the words come from the model's features, which never include ``data.excluded``, and the page is
checked for the lead's excluded values and for e-mail shapes before it is written.

Same look as the model report (its CSS and helpers), no JavaScript, no external resource: the bars are
HTML, the timeline inline SVG. ``leadtemp score --html DIR`` writes a folder of cards with an ``index.html``;
the folder carries ``.leadtemp-cards``, so a later run may replace it and never a user's folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from leadtemp.adapters.report import CSS, check_page_out, esc, has_marker
from leadtemp.core.checks import EMAIL
from leadtemp.core.errors import ConfigError
from leadtemp.core.reasons import INBOUND_WORDS, OUTBOUND_WORDS

CARD_MARKER = '<meta name="generator" content="leadtemp lead card">'    # how --html knows a file is a card
INDEX_MARKER = '<meta name="generator" content="leadtemp lead cards">'  # the index of a folder of cards
FOLDER_MARKER = ".leadtemp-cards"  # in every folder of cards leadtemp writes; only such a folder is replaced
INDEX = "index.html"
MOVERS = 3  # groups listed under "what would move it"

PLUS_COLOUR, MINUS_COLOUR = "#e07b00", "#1f5fbf"       # raises the chance (warmer) / lowers it (colder)
HOTTEST, COOLEST_PLACE = (198, 40, 40), (240, 196, 80)  # the thermometer's top place .. its lowest place
OUTBOUND_COLOUR, NEUTRAL_COLOUR = "#1f5fbf", "#9aa3b2"

BUCKET_MEANING = {
    "hot": "call first: among the leads most likely to convert. In sales words, a hot lead needs the solution now "
           "and decides fast.",
    "warm": "call after the hot leads: a real chance, but not the best. A warm lead knows its problem, searches and "
            "compares, and asks clarifying questions.",
    "cold": "no call needed yet: few signs of a need. A cold lead may become a client later; temperature changes, so "
            "cold leads can warm up.",
}

CARD_CSS = CSS + """
.head{display:flex;gap:24px;align-items:baseline;flex-wrap:wrap;margin:8px 0 4px}
.big{font-size:2.2em;font-weight:700}.badge{font-size:1.3em;padding:2px 12px;border-radius:4px;border:2px solid}
.badge.hot{border-color:#c62828}.badge.warm{border-color:#e07b00}.badge.cold{border-color:#1f5fbf}
table.reasons{width:100%;table-layout:fixed}.reasons td.f{width:52%}
.reasons td.e{text-align:right;font-variant-numeric:tabular-nums;width:70px}
.bar.plus{background:""" + PLUS_COLOUR + """}.bar.minus{background:""" + MINUS_COLOUR + """}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:6px 0;font-size:.9em}
.sw{display:inline-block;width:12px;height:12px;border-radius:6px;margin-right:5px;vertical-align:-1px}
.sw.step{border-radius:0}
svg text{font-size:11px;fill:#5b6475}
"""


@dataclass(frozen=True)
class LeadCard:
    """What one card shows; no column of the lead other than its id."""

    lead_id: str
    as_of: pd.Timestamp
    model_version: str
    run_id: str
    probability: float
    score: int
    bucket: str
    horizon_days: int | None
    factors: pd.DataFrame                 # factor (words), effect (log-odds), indexed by group key, largest first
    hot_cutoff: float
    warm_cutoff: float
    group_names: dict[str, str]           # group key -> its name ("calls from them")
    attributes: frozenset[str]            # group keys that are facts about the lead (sector, source...)
    timeline: pd.DataFrame | None = None  # timestamp, type, direction of the interactions before as_of; None: no log
    created_at: pd.Timestamp | None = None
    places: dict[str, float] = field(default_factory=dict)   # inbound type -> thermometer place (weight)
    kinds: dict[str, str] = field(default_factory=dict)      # type -> touch | step | outcome (undeclared: touch)
    type_labels: dict[str, str] = field(default_factory=dict)  # type -> the user's label
    top: int = 5                          # factors shown on each side, as `leadtemp explain --top`
    rank: int | None = None               # in a folder of cards: the lead's rank in the scoring run
    change: dict | None = None            # explain --since: since, previous_probability, previous_bucket, trend, what_changed
    when: dict | None = None              # p_<h>d and expected_days of a model with when.horizons_days; None: none

    def shown(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The factors shown, as the terminal shows them: raising (largest first), then lowering."""
        f = self.factors
        return f[f["effect"] > 0].head(self.top), f[f["effect"] < 0].head(self.top)


# -- the timeline's colours -------------------------------------------------------------------------------

def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def event_words(type_: str, direction: str, card: LeadCard) -> str:
    """An interaction type in the words reasons use ("phoned us", "offer sent"); raw codes in quotes."""
    label = card.type_labels.get(type_)
    kind = card.kinds.get(type_, "touch")
    if kind != "touch":
        return label or f"'{type_}'"
    if label:
        return f"{label} " + ("from them" if direction == "inbound" else "from us")
    words = (INBOUND_WORDS if direction == "inbound" else OUTBOUND_WORDS).get(type_)
    return words[0] if words else f"'{type_}' " + ("from them" if direction == "inbound" else "from us")


def event_style(type_: str, direction: str, card: LeadCard) -> tuple[str, str, float]:
    """(colour, legend words, sort key hottest first) of one kind of interaction on the timeline.

    An inbound touch with a place on the scorer's thermometer is coloured from red (its hottest place) to
    yellow (its lowest); an outbound touch (the lead only answered: passive) is cold blue; steps, outcomes and
    inbound types without a place are neutral grey.
    """
    kind = card.kinds.get(type_, "touch")
    if kind != "touch":
        return NEUTRAL_COLOUR, f"{kind}, not a contact", 1e9
    if direction != "inbound":
        return OUTBOUND_COLOUR, "our contact: the lead stayed passive (coldest)", 1e8
    place = card.places.get(type_, 0.0)
    if place <= 0:
        return NEUTRAL_COLOUR, "from them, no place on the thermometer", 1e7
    ranked = sorted({w for w in card.places.values() if w > 0}, reverse=True)
    position = ranked.index(place)
    colour = _mix(HOTTEST, COOLEST_PLACE, position / max(len(ranked) - 1, 1))
    return colour, f"thermometer place {position + 1} of {len(ranked)}", position


# -- the page -------------------------------------------------------------------------------------------

def _bars(part: pd.DataFrame, scale: float, sign: str) -> str:
    rows = "".join(
        f'<tr class="reason"><td class="f">{esc(row.factor)}</td><td class="e">{row.effect:+.3f}</td>'
        f'<td class="w"><div class="bar {sign}" style="width:{max(100 * abs(row.effect) / scale, 1):.0f}%"></div></td></tr>'
        for row in part.itertuples())
    return f'<table class="reasons {sign}">{rows}</table>' if rows else '<p class="note">none</p>'


def _movers(card: LeadCard) -> str:
    against = card.factors[card.factors["effect"] < 0].head(MOVERS)
    if against.empty:
        return '<p id="movers">Nothing pulls this lead down: every factor raises its chance or is neutral.</p>'
    items = []
    for key, row in against.iterrows():
        name = card.group_names.get(key, str(key))
        words = row["factor"] if str(row["factor"]).startswith(name) else f"{name}: {row['factor']}"
        fixed = ' <span class="na">(a fact about the lead: it will not change)</span>' if key in card.attributes else ""
        items.append(f"<li><b>{esc(words)}</b> ({row['effect']:+.3f}){fixed}</li>")
    return ('<p class="note">The groups that lower its chance most. A change there (for example, a new contact from '
            "them) would move the score most; the model learned what goes with conversion, not what causes it.</p>"
            f'<ol id="movers">{"".join(items)}</ol>')


def _timeline(card: LeadCard) -> str:
    if card.timeline is None:
        return ('<p class="note">This model was trained on one row per lead (a label column), without an interaction '
                "log: no timeline.</p>")
    events = card.timeline
    end = card.as_of
    start = min([t for t in (card.created_at, events["timestamp"].min() if len(events) else None) if t is not None
                 and pd.notna(t)] or [end - pd.Timedelta(days=30)])
    start = min(start, end - pd.Timedelta(days=7))
    width, left, right = 900, 110, 40
    lanes = {"inbound": ("from them", 30), "outbound": ("from us", 60), "other": ("steps, other", 90)}
    span = (end - start).total_seconds() or 1.0

    def x(t: pd.Timestamp) -> float:
        return left + (width - left - right) * (t - start).total_seconds() / span

    parts = [f'<svg id="timeline" width="{width}" height="130" role="img" '
             f'aria-label="interactions before {card.as_of.date()}">']
    for label, y in lanes.values():
        parts.append(f'<text x="4" y="{y + 4}">{label}</text><line x1="{left}" x2="{width - right}" y1="{y}" y2="{y}" '
                     'stroke="#e4e7ec"/>')
    ticks = pd.date_range(start.normalize(), end, freq="MS")
    if len(ticks) > 12:
        ticks = ticks[::int(len(ticks) / 12) + 1]
    for t in ticks:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="15" y2="100" stroke="#eef0f3"/>'
                     f'<text x="{x(t):.1f}" y="118" text-anchor="middle">{t:%b %Y}</text>')
    parts.append(f'<line x1="{x(end):.1f}" x2="{x(end):.1f}" y1="10" y2="104" stroke="#1d2330" stroke-dasharray="3,2"/>'
                 f'<text x="{x(end):.1f}" y="9" text-anchor="end">as of {card.as_of.date()}</text>')
    legend: dict[tuple[str, str], tuple[float, str]] = {}
    for e in events.sort_values("timestamp", kind="stable").itertuples():
        colour, place, order = event_style(e.type, e.direction, card)
        words = event_words(e.type, e.direction, card)
        legend.setdefault((colour, words), (order, place))
        kind = card.kinds.get(e.type, "touch")
        lane = lanes["other" if kind != "touch" else e.direction][1]
        tip = f"<title>{esc(f'{e.timestamp:%Y-%m-%d %H:%M}: {words}')}</title>"
        stamp = esc(pd.Timestamp(e.timestamp).isoformat())
        if kind == "touch":
            parts.append(f'<circle class="mark" data-at="{stamp}" cx="{x(e.timestamp):.1f}" cy="{lane}" r="5" '
                         f'fill="{colour}" fill-opacity="0.85">{tip}</circle>')
        else:
            parts.append(f'<rect class="mark" data-at="{stamp}" x="{x(e.timestamp) - 4:.1f}" y="{lane - 4}" width="8" '
                         f'height="8" fill="{colour}">{tip}</rect>')
    parts.append("</svg>")
    keys = sorted(legend.items(), key=lambda kv: (kv[1][0], kv[0][1]))
    items = "".join(f'<span><span class="sw" style="background:{colour}"></span>{esc(words)} '
                    f'<span class="na">({esc(place)})</span></span>' for (colour, words), (_, place) in keys)
    count = len(events)
    what = (f"{count} interaction{'s' if count != 1 else ''} before {card.as_of.date()} (none on or after it: the card "
            "sees what the score saw)") if count else f"no interactions before {card.as_of.date()}"
    return (f'<p class="note">{what}. Colour: the place of each kind of contact on the thermometer, hottest red, '
            "to cold blue for our own contacts; grey has no place on it.</p>"
            + "".join(parts) + (f'<div class="legend">{items}</div>' if items else ""))


def _trend(card: LeadCard) -> str:
    """The lead's move since an earlier date (explain --since), or a hint how to see it."""
    c = card.change
    if c is None:
        return ('<p class="note" id="trend">Trend: not asked for. <code>leadtemp explain LEAD --as-of DATE --since '
                'EARLIER --html FILE</code> shows how the lead moved since an earlier date.</p>')
    since = pd.Timestamp(c["since"]).date()
    if c["trend"] == "new":
        return f'<p id="trend"><b>Trend since {since}:</b> new (not scorable then: created since, or reopened).</p>'
    moved = (f'{esc(c["previous_bucket"])} {c["previous_probability"]:.1%} \u2192 {esc(card.bucket)} {card.probability:.1%}')
    why = f'<br><span class="note">What changed: {esc(c["what_changed"])}</span>' if c.get("what_changed") else ""
    return f'<p id="trend"><b>Trend since {since}: {esc(c["trend"])}</b> ({moved}).{why}</p>'


def when_words(when: dict) -> str:
    """How soon, in the words ``leadtemp explain`` prints: the chance within each horizon and the median days."""
    days = [int(k[2:-1]) for k in when if k.startswith("p_")]
    return (f"chance within {' / '.join(map(str, days))} days: " + " / ".join(f"{when[f'p_{d}d']:.1%}" for d in days)
            + f"; if it converts within {max(days)} days, in about {when['expected_days']:.0f} days (median)")


def _when(card: LeadCard) -> str:
    return f'<p id="when"><b>How soon:</b> {esc(when_words(card.when))}.</p>' if card.when else ""


def render_card(card: LeadCard, generated: pd.Timestamp | None = None, back: str | None = None) -> str:
    """One card as an HTML page; ``back``: a relative link to the index of its folder."""
    generated = generated or pd.Timestamp.now().floor("s")
    horizon = f" within {card.horizon_days} days" if card.horizon_days is not None else ""
    rule = {"hot": f"chance \u2265 {card.hot_cutoff:.1%}",
            "warm": f"{card.warm_cutoff:.1%} \u2264 chance &lt; {card.hot_cutoff:.1%}",
            "cold": f"chance &lt; {card.warm_cutoff:.1%}"}.get(card.bucket, "")
    plus, minus = card.shown()
    scale = float(pd.concat([plus["effect"], minus["effect"]]).abs().max()) if len(plus) + len(minus) else 1.0
    rank = f" \u00b7 rank {card.rank} of the scoring run" if card.rank is not None else ""
    nav = f'<p class="note"><a href="{esc(back)}">\u2190 all cards</a></p>' if back else ""
    run = f", MLflow run {esc(card.run_id)}" if card.run_id and card.run_id != card.model_version else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{CARD_MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lead {esc(card.lead_id)}: {esc(card.bucket)}</title>
<style>{CARD_CSS}</style></head>
<body><main>
{nav}
<h1>Lead {esc(card.lead_id)}</h1>
<p class="sub">as of {card.as_of.date()} (only what was known before that day) \u00b7 model version {esc(card.model_version)}{rank}</p>
<section id="summary">
<div class="head"><span class="badge {esc(card.bucket)}" id="bucket">{esc(card.bucket)}</span>
<span class="big" id="probability">{card.probability:.1%}</span><span>chance to convert{horizon}</span>
<span class="big" id="score">{card.score}</span><span>score (1\u201399)</span></div>
<p id="meaning"><b class="{esc(card.bucket)}">{esc(card.bucket.capitalize())}</b> ({rule}, cut-offs fixed when the model
was trained): {esc(BUCKET_MEANING.get(card.bucket, ""))}</p>
{_when(card)}
</section>
{_trend(card)}
<h2>Why: the reasons for and against</h2>
<p class="note">Each kind of information about the lead, in words, with how much it moves the chance (log-odds,
exact TreeSHAP, as <code>leadtemp explain</code> prints them); the {card.top} strongest on each side.</p>
<h3>Raises the chance</h3>
{_bars(plus, scale, "plus")}
<h3>Lowers the chance</h3>
{_bars(minus, scale, "minus")}
<h2>What would move it</h2>
{_movers(card)}
<h2>Its interactions</h2>
{_timeline(card)}
<footer>Generated {esc(generated)} by leadtemp from model version {esc(card.model_version)}{run}. The lead's id only:
no names, e-mails or phone numbers. See docs/lead-cards.md.</footer>
</main></body></html>
"""


def check_private(page: str, lead_id: str, private: dict[str, object]) -> None:
    """Refuse a page that shows a personal value of the lead (``data.excluded``) or anything shaped like an e-mail.

    A safety net: the words come from model features, which never include personal columns."""
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", " ", page, flags=re.S))
    for column, value in private.items():
        value = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
        if len(value) >= 3 and value != lead_id and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text):
            raise ConfigError(f"the card of lead {lead_id} would show its {column!r} (personal data, data.excluded): "
                              "not written; report this as a bug")
    if re.search(EMAIL, text.replace(lead_id, " ")):
        raise ConfigError(f"the card of lead {lead_id} would show something shaped like an e-mail address: not written; "
                          "report this as a bug")


def render_index(cards: list[tuple[LeadCard, str]], as_of: pd.Timestamp, version: str, scored: int,
                 reasons: dict[str, str], generated: pd.Timestamp | None = None) -> str:
    """The folder's index: one row per card (rank, lead, bucket, chance, top reason), linked relatively."""
    generated = generated or pd.Timestamp.now().floor("s")
    rows = "".join(
        f'<tr><td class="n">{c.rank}</td><td><a href="{esc(quote(name))}">{esc(c.lead_id)}</a></td>'
        f'<td class="{esc(c.bucket)}">{esc(c.bucket)}</td><td class="n">{c.probability:.1%}</td><td class="n">{c.score}</td>'
        f'<td>{esc(reasons.get(c.lead_id, ""))}</td></tr>' for c, name in cards)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{INDEX_MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>leadtemp: top {len(cards)} leads as of {as_of.date()}</title>
<style>{CARD_CSS}</style></head>
<body><main>
<h1>Top {len(cards)} leads as of {as_of.date()}</h1>
<p class="sub">of {scored:,} scored by model version {esc(version)}, best first; each lead has its card</p>
<table id="cards"><tr><th>rank</th><th>lead</th><th>bucket</th><th>chance</th><th>score</th><th>strongest reason</th></tr>
{rows}</table>
<footer>Generated {esc(generated)} by <code>leadtemp score --html</code>. Lead ids only: no names, e-mails or phone
numbers. See docs/lead-cards.md.</footer>
</main></body></html>
"""


# -- files ----------------------------------------------------------------------------------------------

def is_card(path: Path) -> bool:
    """A file written by leadtemp as a lead card, which a new card may replace."""
    return has_marker(path, CARD_MARKER)


def is_card_folder(folder: Path) -> bool:
    """A folder leadtemp wrote cards into: its marker, and nothing in it but cards and their index."""
    if not (folder / FOLDER_MARKER).is_file():
        return False
    for path in folder.iterdir():
        if path.name == FOLDER_MARKER:
            continue
        if not path.is_file() or not (is_card(path) or (path.name == INDEX and has_marker(path, INDEX_MARKER))):
            return False
    return True


def check_card_file(what: str, out: Path) -> None:
    """One card's file: an .html name, never over a file that is not an earlier card, in a folder that takes it."""
    check_page_out(what, out, CARD_MARKER, "lead card")


def check_card_folder(what: str, folder: Path) -> None:
    """A folder of cards: new, or one leadtemp wrote before (replaced whole); never a user's file or folder."""
    from leadtemp.adapters.paths import check_writable_folder

    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file; give a folder for the cards (new, or one of earlier cards)")
    if folder.is_dir() and not is_card_folder(folder):
        raise ConfigError(f"{what} {folder} exists and is not a folder of leadtemp lead cards (no {FOLDER_MARKER}, or "
                          "files leadtemp did not write): leadtemp does not touch it; give a new folder")
    check_writable_folder(what, folder.parent if folder.parent != folder else folder)


def write_card(page: str, out: Path, what: str = "--html") -> Path:
    """Write one page atomically (a reader never sees half a card)."""
    from leadtemp.adapters.paths import write_text_atomic

    return write_text_atomic(page, out, what)


def card_file_name(rank: int, lead_id: str) -> str:
    """A safe, unique file name for a lead's card in a folder: its rank and its id with unsafe characters as _."""
    return f"{rank:03d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', lead_id)[:60]}.html"


def write_card_folder(pages: dict[str, str], folder: Path, what: str = "--html") -> Path:
    """Write ``pages`` (file name -> page) as the folder ``folder``: made whole beside it, then swapped in, so a
    failure leaves the earlier folder (or none) and never half of one. The replaced folder held only cards."""
    from leadtemp.adapters.paths import storage_errors

    folder = Path(folder)
    with storage_errors(f"{what} {folder}"):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.staging."))
        old = None
        try:
            for name, page in pages.items():
                (staging / name).write_text(page, encoding="utf-8")
            (staging / FOLDER_MARKER).write_text("a folder of lead cards written by leadtemp; replaced whole by the "
                                                 "next `leadtemp score --html` into it\n")
            os.chmod(staging, 0o777 & ~_umask())
            if folder.exists():
                if not is_card_folder(folder):  # checked before the work; checked again: it may have changed since
                    raise ConfigError(f"{what} {folder} is no longer a folder of lead cards: not replaced")
                old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
                os.replace(folder, old / "cards")
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if old is not None and (old / "cards").exists() and not folder.exists():
                os.replace(old / "cards", folder)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    return folder


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
