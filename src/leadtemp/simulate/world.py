"""The synthetic world of docs/domain.md: leads whose hidden temperature moves over time.

The generative story (hidden from the model, documented for the tests):

* Leads arrive uniformly over the period. Each has attributes a CRM holds: ``source`` (referral and
  former clients convert best, bought lists worst), ``sector``, ``company_size``, ``country``,
  ``potential`` (low / standard / high, from the answer to a marker question), the four
  qualification flags ``need / want / funds / authority`` and ``past_purchases``. Name, email and
  phone are fake personal data that the model must never use.
* The attributes set a propensity ``z``. Every lead carries a hidden daily Markov state:
  cold → warm → hot (and cooling back hot → warm → cold), plus two absorbing ends, *lost* ("yes, yes,
  yes… no") and *converted*. Warming and converting are faster for high ``z``.
* Each day a lead acts (inbound) at a rate set by its state, choosing the action from the
  thermometer (docs/domain.md section 1): hot leads phone, text and ask buying questions; cold leads
  at most like a post. Warming up is itself an action: a lead whose state rises reaches out that
  evening (the move from passive to active), while cooling down and giving up are silent. We contact
  leads (outbound) more when they are warm or hot.
* The market warms slowly: conversion hazards grow by ``MARKET_TREND`` per year, so the base rate
  drifts and a model trained on older data is under-confident until it is recalibrated.
* ``shift_at`` (optional) is a documented change of the world from that day on, so the quarterly
  retraining workflow can be tested where the right decision is known (SHIFT, below): a new lead
  source, ``partner``, brings a quarter of the new leads and converts like the best referrals; and
  the SMS gateway stops working, so leads' texts are no longer received (no inbound ``sms`` events).
  A model trained before the change has never seen a partner lead and still waits for texts; one
  trained after it has learnt both.
* ``lost=True`` (optional, off by default so every other world stays as it was) tells the story of
  lost leads (LOST_STORY, below). When a lead's hidden state turns lost, the team records it in one
  of three ways: it **disqualifies** the lead within a week (an outbound ``disqualified`` event and the
  CRM's ``lost_at`` at that moment), a rep closes it as lost **silently** weeks later (``lost_at``
  only, no event), or nobody records it. And lost leads **recycle**: a lost lead may warm up again
  and reach out (inbound) months later, and then convert like any warm lead; a close that would
  fall after that comeback never happens. ``SimulatedData.losses`` is the truth of every loss.
* ``referrals=True`` (optional, off by default so every other world stays as it was) tells the story of
  referrals (DOMAIN section 4; REFERRAL_STORY, below). Most leads whose source is ``referral`` name their
  referrer in ``referred_by``: an earlier lead of the table, much more often one that had already bought
  (converted before the new lead was created), or now and then a customer from outside the table (an id
  it does not hold). Being referred by a customer who bought raises the lead's ``z``; by a lead who had not
  bought lowers it (a friend's tip, not a customer's word); an outside customer changes nothing. A lead
  that sends us someone warms to us a little itself (its ``z`` rises with every referral it makes).
* ``stages=True`` (optional, off by default so every other world stays as it was) tells the funnel of
  docs/domain.md section 5 from the hidden story (STAGE_STORY, below), with its own random stream. Each
  lead enters the funnel as ``new`` when it arrives; as its hidden state warms (cold → warm, warm → hot)
  the rep moves it on a stage, now and then two; as it cools, the rep now and then moves it back a stage,
  otherwise it stalls where it is. A lead that converts reaches ``won`` at that moment, and most lost
  leads are marked ``lost`` within two weeks. Stage changes are outbound ``stage`` rows with the stage in
  a ``stage`` column; and each call we make has an ``outcome``: ``reached`` more often the hotter the lead
  is, else ``voicemail`` or ``no_answer``; and the rep's ratings (1 to 5): ``task_rating`` of each call (1 when
  it did not reach the lead), ``lead_rating`` of the lead on each call that reached it, both higher the hotter
  the lead is, with noise.
* ``truth.parquet`` holds, for every lead eligible at the first day of each month, its hidden
  state and the exact probability of converting within the horizon (``p_convert``) and within each of
  7, 14, 30, 60 and 90 days (``p_convert_7d`` ... ``p_convert_90d``), computed by propagating the
  same transition matrices the simulation uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COLD, WARM, HOT, LOST, CONVERTED = range(5)
STATE_NAMES = np.array(["cold", "warm", "hot", "lost", "converted"])
N_STATES = 5
MARKET_TREND = 0.25  # log-growth of conversion hazards per year

INBOUND_TYPES = np.array([
    "pos_question", "phone_call", "sms", "email", "private_message", "friend_request",
    "newsletter_reply", "post_comment", "post_share", "page_like", "post_like", "web_visit",
])
# Daily inbound action rate and the mix of actions per state (rows: cold, warm, hot, lost).
INBOUND_RATE = np.array([0.05, 0.35, 1.2, 0.0])
INBOUND_MIX = np.array([
    [0.000, 0.005, 0.005, 0.02, 0.02, 0.03, 0.05, 0.05, 0.05, 0.15, 0.30, 0.32],
    [0.010, 0.060, 0.050, 0.10, 0.08, 0.05, 0.08, 0.08, 0.06, 0.06, 0.10, 0.25],
    [0.080, 0.220, 0.140, 0.14, 0.08, 0.03, 0.03, 0.03, 0.02, 0.02, 0.03, 0.18],
    [0.000, 0.000, 0.000, 0.01, 0.01, 0.03, 0.05, 0.05, 0.05, 0.15, 0.33, 0.32],
])
OUTBOUND_TYPES = np.array(["phone_call", "email", "sms"])
OUTBOUND_RATE = np.array([0.02, 0.08, 0.15, 0.003])
OUTBOUND_MIX = np.array([0.5, 0.35, 0.15])

SOURCES = {"referral": 0.12, "website": 0.30, "cold_call": 0.15, "event": 0.08,
           "bought_list": 0.10, "social": 0.15, "former_client": 0.10}
SOURCE_EFFECT = {"referral": 0.8, "website": 0.0, "cold_call": -0.2, "event": 0.3,
                 "bought_list": -0.6, "social": -0.1, "former_client": 0.5}
SECTORS = ["manufacturing", "retail", "services", "healthcare", "construction", "it"]
SIZES = {"1-9": 0.4, "10-49": 0.3, "50-249": 0.2, "250+": 0.1}
SIZE_EFFECT = {"1-9": -0.15, "10-49": 0.0, "50-249": 0.1, "250+": 0.2}
COUNTRIES = {"LV": 0.25, "RO": 0.25, "PL": 0.3, "IL": 0.15, "other": 0.05}
# The change `shift_at` brings (see the module docstring).
SHIFT_SOURCE, SHIFT_SOURCE_SHARE, SHIFT_SOURCE_EFFECT = "partner", 0.25, 1.2
SHIFT_SILENT_CHANNEL = ("sms", "inbound")
POTENTIAL_EFFECT = {"low": -0.8, "standard": 0.0, "high": 0.5}
# The story of lost leads (``lost=True``): daily chance a lost lead comes back (warm), and how a loss is recorded.
RECYCLE_RATE = 0.002
LOST_STORY = {"disqualified": 0.45, "silent": 0.40, "unrecorded": 0.15}
DISQUALIFY_DAYS, SILENT_CLOSE_DAYS = (1, 7), (14, 60)   # from the hidden loss to the CRM's lost_at
DISQUALIFIED = "disqualified"  # the outbound interaction type of a disqualification
FLAG_EFFECT = {"need": 0.4, "want": 0.3, "funds": 0.3, "authority": 0.3}
# The story of referrals (``referrals=True``): who names a referrer, whom, and what it does to z.
REFERRAL_STORY = {
    "named": 0.85,        # share of the `referral` source's leads that name their referrer (the rest name no one)
    "outside": 0.15,      # of those, the share naming a customer from outside the table (an id it does not hold)
    "bought_weight": 12.0,  # an earlier lead that had bought is this many times as likely to be named as one that had not
}
REFERRAL_EFFECT = {"bought": 1.0, "lead": -0.6, "outside": 0.0}  # on the referred lead's z, by its referrer
REFERRER_EFFECT = 0.3  # on the referrer's own z, per referral it makes (while it is a lead)
# The funnel (``stages=True``): its open stages, and how the rep moves a lead as its hidden state moves.
STAGE_TYPE, STAGE_ORDER, STAGE_WON, STAGE_LOST = "stage", ("new", "contacted", "qualified", "proposal", "negotiation"), \
    "won", "lost"
STAGE_STORY = {"advance_on_warming": 0.8, "advance_on_heating": 0.9, "skip": 0.12, "back_on_cooling": 0.25,
               "lost_marked": 0.6}
LOST_MARKED_DAYS = (1, 14)  # from the hidden loss to the lost stage
REACH = np.array([0.25, 0.45, 0.7, 0.1])  # chance a call of ours reaches the lead, by state (cold, warm, hot, lost)
VOICEMAIL = 0.4  # of the calls that do not reach the lead, the share that ends on voicemail (else no answer)
# The rep's ratings, 1 to 5 (rounded, with noise RATING_NOISE): of the lead on a call that reached it, centred by
# its hidden state (cold, warm, hot, lost), and of each call (a call that did not reach the lead: 1).
LEAD_RATING_MEAN, TASK_RATING_MEAN, RATING_NOISE = np.array([2.0, 3.0, 4.0, 1.5]), np.array([2.5, 3.2, 4.0, 2.0]), 0.9


@dataclass(frozen=True)
class SimulatedData:
    leads: pd.DataFrame
    interactions: pd.DataFrame
    truth: pd.DataFrame
    # lost=True only: one row per hidden loss: lead_id, lost_on (the hidden state turned lost), story
    # (disqualified | silent | unrecorded), closed_at (the CRM's lost_at, NaT if never), recycled_on (NaT if never)
    losses: pd.DataFrame | None = None


def transition_matrix(z: np.ndarray, market: float | np.ndarray, recycle: float = 0.0) -> np.ndarray:
    """Daily transition probabilities, shape (len(z), 5, 5); rows are the current state.

    ``recycle``: daily chance a lost lead turns warm again (0: lost is absorbing, as by default)."""
    z = np.asarray(z, dtype=float)
    market = np.broadcast_to(np.asarray(market, dtype=float), z.shape)
    ez, ez2 = np.exp(z), np.exp(0.5 * z)
    p = np.zeros((z.size, N_STATES, N_STATES))
    p[:, COLD, WARM] = np.minimum(0.004 * ez, 0.2)
    p[:, COLD, LOST] = 0.0003
    p[:, COLD, CONVERTED] = 0.00005 * market
    p[:, WARM, HOT] = np.minimum(0.01 * ez2, 0.3)
    p[:, WARM, COLD] = 0.008
    p[:, WARM, LOST] = 0.002
    p[:, WARM, CONVERTED] = 0.0015 * ez2 * market
    p[:, HOT, WARM] = 0.015
    p[:, HOT, LOST] = 0.004
    p[:, HOT, CONVERTED] = np.minimum(0.02 * ez2 * market, 0.3)
    p[:, LOST, LOST] = 1.0 - recycle
    p[:, LOST, WARM] = recycle
    p[:, CONVERTED, CONVERTED] = 1.0
    for s in (COLD, WARM, HOT):
        p[:, s, s] = 1.0 - p[:, s].sum(axis=1)
    return p


def market_factor(days_from_start: np.ndarray | float) -> np.ndarray:
    return np.exp(MARKET_TREND * np.asarray(days_from_start, dtype=float) / 365.25)


def _choice(rng: np.random.Generator, options: dict[str, float], n: int) -> np.ndarray:
    names = np.array(list(options))
    probs = np.array(list(options.values()))
    return names[rng.choice(len(names), size=n, p=probs / probs.sum())]


def _attributes(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    source = _choice(rng, SOURCES, n)
    size = _choice(rng, SIZES, n)
    size_rank = pd.Series(size).map({k: i for i, k in enumerate(SIZES)}).to_numpy()
    # Marker question: "how many engineers maintain your buildings?" -> potential.
    engineers = rng.poisson(np.array([0.8, 3.0, 8.0, 20.0])[size_rank])
    potential = np.where(engineers < 2, "low", np.where(engineers >= 10, "high", "standard"))
    good_source = np.isin(source, ["referral", "former_client", "event"])
    flags = {
        name: np.where(rng.random(n) < base + 0.15 * good_source, "yes", "no")
        for name, base in {"need": 0.5, "want": 0.4, "funds": 0.5, "authority": 0.4}.items()
    }
    past = rng.poisson(np.where(source == "former_client", 2.0, 0.1))
    attrs = pd.DataFrame({
        "source": source,
        "sector": np.array(SECTORS)[rng.integers(len(SECTORS), size=n)],
        "company_size": size,
        "country": _choice(rng, COUNTRIES, n),
        "potential": potential,
        **flags,
        "past_purchases": past,
    })
    return attrs, propensity(attrs)


def propensity(attrs: pd.DataFrame) -> np.ndarray:
    """The propensity ``z`` the attributes set (before ``shift_at``'s partner source): all of it is observable."""
    return (
        -0.6
        + attrs["source"].map(SOURCE_EFFECT).to_numpy()
        + attrs["company_size"].map(SIZE_EFFECT).to_numpy()
        + attrs["potential"].map(POTENTIAL_EFFECT).to_numpy()
        + sum(effect * (attrs[name] == "yes").to_numpy() for name, effect in FLAG_EFFECT.items())
        + 0.25 * np.minimum(attrs["past_purchases"].to_numpy(), 3)
    )


def _personal(ids: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    first = np.array(["Anna", "Janis", "Maria", "Piotr", "Noa", "Ion", "Liga", "Avi", "Ewa", "Dan"])
    last = np.array(["Berzina", "Popescu", "Kowalska", "Cohen", "Ozols", "Ionescu", "Nowak", "Levi"])
    f, l_ = first[rng.integers(len(first), size=len(ids))], last[rng.integers(len(last), size=len(ids))]
    return pd.DataFrame({
        "name": np.char.add(np.char.add(f, " "), l_),
        "email": np.char.add(np.char.lower(ids.astype(str)), "@example.com"),
        "phone": [f"+000 {n:08d}" for n in rng.integers(0, 10**8, size=len(ids))],
    })


TRUTH_HORIZONS = (7, 14, 30, 60, 90)  # days: truth.parquet's p_convert_<h>d columns (the chance within each)


def _oracle(z: np.ndarray, state: np.ndarray, day: int, horizons: tuple[int, ...],
            recycle: float = 0.0) -> dict[int, np.ndarray]:
    """P(converted within h days | state at the start of ``day``), exactly, for each h of ``horizons``."""
    keys, inverse = np.unique(np.column_stack([z, state]), axis=0, return_inverse=True)
    dist = np.zeros((len(keys), N_STATES))
    dist[np.arange(len(keys)), keys[:, 1].astype(int)] = 1.0
    out = {}
    for step in range(max(horizons)):
        p = transition_matrix(keys[:, 0], market_factor(day + step), recycle)
        dist = np.einsum("ki,kij->kj", dist, p)
        if step + 1 in horizons:
            out[step + 1] = dist[inverse.ravel(), CONVERTED]
    return out


def simulate(
    n_leads: int,
    seed: int,
    start: str | pd.Timestamp = "2023-01-01",
    months: int = 30,
    horizon_days: int = 90,
    shift_at: str | pd.Timestamp | None = None,
    lost: bool = False,
    referrals: bool = False,
    stages: bool = False,
) -> SimulatedData:
    """Simulate ``months`` of leads, their interactions and conversions; deterministic per seed.

    ``shift_at``: from this day on the world changes as the module docstring says. The change draws
    from its own random stream, so before that day it is the same world as without it: the same
    leads and attributes, the same behaviour (conversion times and call lengths, drawn at the end,
    differ by chance).

    ``lost``: lost leads are recorded (disqualified, closed silently, or not at all) and may recycle,
    as the module docstring says; the leads get a ``lost_at`` column and the data a ``losses`` truth.
    Off, the world is exactly the one of earlier versions.

    ``referrals``: leads of the ``referral`` source name their referrer (a ``referred_by`` column), as the
    module docstring says; drawn from its own random stream. Off, the world is exactly the one without it.
    ``stages``: the funnel's stage changes (``stage`` rows) and the outcome of each of our calls (an
    ``outcome`` column), drawn from their own random stream: the rest of the world is the one without them.
    """
    recycle = RECYCLE_RATE if lost else 0.0
    losses, comebacks = [], []
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(start).normalize()
    end = start + pd.DateOffset(months=months)
    n_days = (end - start).days
    ids = np.array([f"L{i:07d}" for i in range(1, n_leads + 1)])
    attrs, z = _attributes(rng, n_leads)
    created_day = np.sort(rng.integers(0, n_days - 1, size=n_leads))
    created_sec = rng.random(n_leads) * 86400
    shift_day = None if shift_at is None else (pd.Timestamp(shift_at).normalize() - start).days
    if shift_day is not None:
        # Its own random stream, so the world before the shift stays the one without it.
        partner = (created_day >= shift_day) & (np.random.default_rng([seed, 1]).random(n_leads) < SHIFT_SOURCE_SHARE)
        z = z + np.where(partner, SHIFT_SOURCE_EFFECT - attrs["source"].map(SOURCE_EFFECT).to_numpy(), 0.0)
        attrs["source"] = np.where(partner, SHIFT_SOURCE, attrs["source"].to_numpy())
    initial_warm = rng.random(n_leads) < 1 / (1 + np.exp(-(z - 1.0)))
    state = np.where(initial_warm, WARM, COLD)
    converted_day = np.full(n_leads, -1)
    referred = _ReferralStory(attrs["source"].to_numpy(), np.random.default_rng([seed, 3])) if referrals else None

    cutoff_days = {
        (d - start).days
        for d in pd.date_range(start, end, freq="MS")
        if 0 < (d - start).days < n_days
    }
    truth_parts, events = [], []
    event_states, moves = [], []  # stages=True: each event's hidden state, and every state move (lead, day, from, to)
    first_live = np.searchsorted(created_day, np.arange(n_days), side="left")  # leads created before day d
    for day in range(n_days):
        if referred is not None:  # the leads created today name their referrer (before anything else of the day)
            referred.name(first_live[day], first_live[day + 1] if day + 1 < n_days else n_leads, day, z, state,
                       converted_day)
        live = np.arange(first_live[day])
        live = live[state[live] != CONVERTED]
        if day in cutoff_days:
            eligible = live
            exact = _oracle(z[eligible], state[eligible], day, (horizon_days, *TRUTH_HORIZONS), recycle)
            truth_parts.append(pd.DataFrame({
                "lead_id": ids[eligible],
                "cutoff": start + pd.Timedelta(days=day),
                "state": STATE_NAMES[state[eligible]],
                "p_convert": exact[horizon_days],
                **{f"p_convert_{h}d": exact[h] for h in TRUTH_HORIZONS},
            }))
        s = state[live]
        for rates, direction in ((INBOUND_RATE, "inbound"), (OUTBOUND_RATE, "outbound")):
            count = rng.poisson(rates[s])
            who = np.repeat(live, count)
            if who.size == 0:
                continue
            if direction == "inbound":
                cum = np.cumsum(INBOUND_MIX[state[who]], axis=1)
                kind = INBOUND_TYPES[(rng.random(who.size)[:, None] > cum).sum(axis=1).clip(max=len(INBOUND_TYPES) - 1)]
            else:
                kind = OUTBOUND_TYPES[rng.choice(len(OUTBOUND_TYPES), size=who.size, p=OUTBOUND_MIX)]
            events.append((who, np.full(who.size, day), rng.random(who.size) * 86400, kind, direction))
            if stages:
                event_states.append(state[who])
        # The state moves at the end of the day; a conversion happens during that day.
        p = transition_matrix(z[live], market_factor(day), recycle)[np.arange(live.size), s]
        nxt = (rng.random(live.size)[:, None] > np.cumsum(p, axis=1)).sum(axis=1).clip(max=N_STATES - 1)
        # Warming up is acting (docs/domain.md section 1): the lead reaches out as its state rises.
        warmed = live[(nxt > s) & (nxt <= HOT)]
        if warmed.size:
            cum = np.cumsum(INBOUND_MIX[nxt[(nxt > s) & (nxt <= HOT)]], axis=1)
            kind = INBOUND_TYPES[(rng.random(warmed.size)[:, None] > cum).sum(axis=1).clip(max=len(INBOUND_TYPES) - 1)]
            events.append((warmed, np.full(warmed.size, day), 86400 * (1 - 0.25 * rng.random(warmed.size)), kind, "inbound"))
            if stages:
                event_states.append(nxt[(nxt > s) & (nxt <= HOT)])
        if stages and (moved := nxt != s).any():
            moves.append((live[moved], day, s[moved], nxt[moved]))
        if lost:
            losses.append((live[(nxt == LOST) & (s != LOST)], day))
            back = live[(s == LOST) & (nxt == WARM)]
            if back.size:  # a recycled lead reaches out as it warms up again
                cum = np.cumsum(INBOUND_MIX[np.full(back.size, WARM)], axis=1)
                kind = INBOUND_TYPES[(rng.random(back.size)[:, None] > cum).sum(axis=1).clip(max=len(INBOUND_TYPES) - 1)]
                events.append((back, np.full(back.size, day), 86400 * (1 - 0.25 * rng.random(back.size)), kind, "inbound"))
                if stages:
                    event_states.append(np.full(back.size, WARM))
                comebacks.append((back, day))
        newly = live[(nxt == CONVERTED) & (s != CONVERTED)]
        converted_day[newly] = day
        state[live] = nxt

    if lost:
        story = _lost_story(losses, comebacks, n_days, np.random.default_rng([seed, 2]))
        closed = story.loc[(story["story"] == DISQUALIFIED) & story["closed_day"].notna()]
        events.append((closed["lead"].to_numpy(), np.floor(closed["closed_day"]).to_numpy().astype(int),
                       (closed["closed_day"] % 1).to_numpy() * 86400, np.full(len(closed), DISQUALIFIED), "outbound"))
        if stages:
            event_states.append(np.full(len(closed), LOST))
    who = np.concatenate([e[0] for e in events])
    day = np.concatenate([e[1] for e in events])
    sec = np.concatenate([e[2] for e in events])
    kind = np.concatenate([e[3] for e in events])
    direction = np.concatenate([np.full(e[0].size, e[4]) for e in events])
    # Leads act only after they exist, and converted leads stop being leads.
    ts_days = day + sec / 86400
    created = created_day + created_sec / 86400
    conv = np.where(converted_day >= 0, converted_day + rng.random(n_leads), np.inf)
    conv = np.maximum(conv, created + 1e-3)
    keep = (ts_days > created[who]) & (ts_days < conv[who])
    if shift_day is not None:  # the SMS gateway is down: their texts never reach us
        keep &= ~((kind == SHIFT_SILENT_CHANNEL[0]) & (direction == SHIFT_SILENT_CHANNEL[1]) & (ts_days >= shift_day))
    value = np.where(kind == "phone_call", np.round(rng.gamma(2.0, 3.0, size=kind.size), 1),
                     np.where(kind == "web_visit", rng.integers(1, 12, size=kind.size), np.nan))
    seconds = lambda d: start + pd.to_timedelta(np.round(d * 86400), unit="s")  # noqa: E731
    interactions = pd.DataFrame({
        "lead_id": ids[who[keep]],
        "timestamp": seconds(ts_days[keep]),
        "type": kind[keep],
        "direction": direction[keep],
        "value": value[keep],
    })
    if stages:
        # its own stream, so the world without stages stays as it was ([seed, 3], the referrals' stream, when they are
        # off: a funnel world is the one measured before both existed; [seed, 4] beside referrals, never the same draws)
        funnel_rng = np.random.default_rng([seed, 4] if referrals else [seed, 3])
        calls = (kind == "phone_call") & (direction == "outbound")
        hidden = np.concatenate(event_states)
        draw = funnel_rng.random(kind.size)
        missed = np.where(funnel_rng.random(kind.size) < VOICEMAIL, "voicemail", "no_answer")
        outcome = np.where(draw < REACH[np.minimum(hidden, LOST)], "reached", missed)
        interactions["stage"] = None
        interactions["outcome"] = np.where(calls, outcome, None)[keep]
        reached = calls & (outcome == "reached")
        level = np.minimum(hidden, LOST)

        def rating(mean: np.ndarray) -> np.ndarray:
            return np.clip(np.round(mean[level] + RATING_NOISE * funnel_rng.standard_normal(kind.size)), 1, 5)

        interactions["lead_rating"] = np.where(reached, rating(LEAD_RATING_MEAN), np.nan)[keep]
        interactions["task_rating"] = np.where(calls, np.where(reached, rating(TASK_RATING_MEAN), 1.0), np.nan)[keep]
        funnel = _stage_story(moves, created, conv, n_days, funnel_rng)
        interactions = pd.concat([interactions, pd.DataFrame({
            "lead_id": ids[funnel["lead"]], "timestamp": seconds(funnel["at"]), "type": STAGE_TYPE,
            "direction": "outbound", "value": np.nan, "stage": funnel["stage"], "outcome": None, "lead_rating": np.nan,
            "task_rating": np.nan})], ignore_index=True)
    interactions = interactions.sort_values(["timestamp", "lead_id"], kind="stable").reset_index(drop=True)

    leads = pd.concat([
        pd.DataFrame({
            "lead_id": ids,
            "created_at": seconds(created),
            "converted_at": seconds(np.where(np.isfinite(conv), conv, np.nan)),
        }),
        _personal(ids, rng),
        attrs,
    ], axis=1)
    truth = pd.concat(truth_parts, ignore_index=True)
    if referred is not None:
        leads.insert(3, "referred_by", referred.ids(ids))
    if not lost:
        return SimulatedData(leads=leads, interactions=interactions, truth=truth)
    recorded = story.loc[story["closed_day"].notna()].sort_values("closed_day").drop_duplicates("lead", keep="last")
    lost_day = np.full(n_leads, np.nan)
    lost_day[recorded["lead"].to_numpy()] = recorded["closed_day"].to_numpy()
    leads.insert(3, "lost_at", seconds(lost_day))
    truth_of_losses = pd.DataFrame({
        "lead_id": ids[story["lead"].to_numpy()],
        "lost_on": start + pd.to_timedelta(story["day"].to_numpy() + 1, unit="D"),
        "story": story["story"].to_numpy(),
        "closed_at": seconds(story["closed_day"].to_numpy()),
        "recycled_on": start + pd.to_timedelta(story["comeback_day"].to_numpy(), unit="D"),
    })
    return SimulatedData(leads=leads, interactions=interactions, truth=truth, losses=truth_of_losses)


class _ReferralStory:
    """Who names whom (``simulate(referrals=True)``), day by day, and its effect on ``z`` and the first state."""

    def __init__(self, source: np.ndarray, rng: np.random.Generator):
        n = len(source)
        self.rng = rng
        self.names = (source == "referral") & (rng.random(n) < REFERRAL_STORY["named"])
        self.outside = rng.random(n) < REFERRAL_STORY["outside"]
        self.referrer = np.full(n, -1)          # position of the referring lead (-1: none or outside)
        self.outside_id = rng.integers(1, 10**6, size=n)

    def name(self, lo: int, hi: int, day: int, z: np.ndarray, state: np.ndarray, converted_day: np.ndarray) -> None:
        """Leads ``lo``..``hi`` - 1, created on ``day``, name a referrer among the leads created on earlier days (those
        ``< lo``); ``z`` and ``state`` (their first state, drawn again from the new ``z``) change in place."""
        new = np.arange(lo, hi)
        new = new[self.names[new]]
        if not new.size:
            return
        inside = new[~self.outside[new]] if lo else new[:0]
        if inside.size:
            bought = (converted_day[:lo] >= 0) & (converted_day[:lo] < day)  # bought before today: before the creation
            weight = np.where(bought, REFERRAL_STORY["bought_weight"], 1.0)
            chosen = self.rng.choice(lo, size=inside.size, p=weight / weight.sum())
            self.referrer[inside] = chosen
            z[inside] += np.where(bought[chosen], REFERRAL_EFFECT["bought"], REFERRAL_EFFECT["lead"])
            np.add.at(z, chosen[~bought[chosen]], REFERRER_EFFECT)
        z[new[self.outside[new]]] += REFERRAL_EFFECT["outside"]
        state[new] = np.where(self.rng.random(new.size) < 1 / (1 + np.exp(-(z[new] - 1.0))), WARM, COLD)

    def ids(self, ids: np.ndarray) -> pd.Series:
        """The ``referred_by`` column: the referrer's lead id, an outside customer's id (``C`` + 6 digits), or empty."""
        out = np.full(len(ids), None, dtype=object)
        inside = self.referrer >= 0
        out[inside] = ids[self.referrer[inside]]
        outside = self.names & ~inside
        out[outside] = np.char.add("C", np.char.zfill(self.outside_id[outside].astype(str), 6))
        return pd.Series(out, dtype="string")


def _stage_story(moves: list, created: np.ndarray, conv: np.ndarray, n_days: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The funnel's stage changes (STAGE_STORY) from the hidden state moves: lead (position), at (days from the
    start, fractional) and stage, for every lead: ``new`` on arrival, then the moves, ``won`` at the conversion.

    A rep records a move the day after the hidden state moved; a lead's stage stays inside the open stages.
    """
    lead = np.concatenate([m[0] for m in moves]) if moves else np.zeros(0, int)
    day = np.concatenate([np.full(m[0].size, m[1]) for m in moves]) if moves else np.zeros(0, int)
    was = np.concatenate([m[2] for m in moves]) if moves else np.zeros(0, int)
    now = np.concatenate([m[3] for m in moves]) if moves else np.zeros(0, int)
    order = np.lexsort((day, lead))  # each lead's moves in time order
    u, hop, when = rng.random(lead.size), rng.random(lead.size), rng.random(lead.size)
    st = STAGE_STORY
    rank = np.zeros(created.size, dtype=int)
    out_lead, out_at, out_stage = [np.arange(created.size)], [created + 0.05 * rng.random(created.size)], \
        [np.full(created.size, STAGE_ORDER[0], dtype=object)]
    rows_lead, rows_at, rows_stage = [], [], []
    top = len(STAGE_ORDER) - 1
    for k in order:
        i, a, b = lead[k], was[k], now[k]
        at = day[k] + 1 + 0.5 * when[k]
        if b in (WARM, HOT) and b > a:  # warming (or back from lost): the rep moves the lead on
            if u[k] < (st["advance_on_heating"] if b == HOT else st["advance_on_warming"]) and rank[i] < top:
                rank[i] = min(top, rank[i] + (2 if hop[k] < st["skip"] else 1))
            else:
                continue
        elif b in (COLD, WARM) and b < a:  # cooling: now and then moved back, else it stalls
            if u[k] < st["back_on_cooling"] and rank[i] > 0:
                rank[i] -= 1
            else:
                continue
        elif b == LOST:
            if u[k] < st["lost_marked"]:
                at = day[k] + 1 + LOST_MARKED_DAYS[0] + when[k] * (LOST_MARKED_DAYS[1] - LOST_MARKED_DAYS[0])
                rows_lead.append(i), rows_at.append(at), rows_stage.append(STAGE_LOST)
            continue
        else:
            continue
        rows_lead.append(i), rows_at.append(at), rows_stage.append(STAGE_ORDER[rank[i]])
    out_lead.append(np.array(rows_lead, dtype=int))
    out_at.append(np.array(rows_at, dtype=float))
    out_stage.append(np.array(rows_stage, dtype=object))
    won = np.flatnonzero(np.isfinite(conv) & (conv < n_days))
    out_lead.append(won), out_at.append(conv[won]), out_stage.append(np.full(won.size, STAGE_WON, dtype=object))
    lead, at, stage = np.concatenate(out_lead), np.concatenate(out_at), np.concatenate(out_stage)
    # Recorded while the lead is a lead and inside the period; won at the very moment of the conversion.
    keep = (at < n_days) & ((at < conv[lead]) | (stage == STAGE_WON))
    return {"lead": lead[keep], "at": at[keep], "stage": stage[keep]}


def _lost_story(losses: list, comebacks: list, n_days: int, rng: np.random.Generator) -> pd.DataFrame:
    """How the team records each hidden loss (LOST_STORY), and the lead's comeback after it, if any.

    One row per loss: lead (position), day (the state turned lost at its end), comeback_day (NaN: none),
    story, closed_day (days from the start, fractional; NaN: never recorded). A close planned after the
    lead's comeback, or after the simulated period, never happens (the story stays, without a close).
    """
    def frame(parts, day):
        leads = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, int)
        days = np.concatenate([np.full(p[0].size, p[1]) for p in parts]) if parts else np.zeros(0, int)
        return pd.DataFrame({"lead": leads, day: days.astype(float)}).sort_values(day, kind="stable")

    lost, back = frame(losses, "day"), frame(comebacks, "comeback_day")
    story = pd.merge_asof(lost, back, left_on="day", right_on="comeback_day", by="lead", direction="forward",
                          allow_exact_matches=False)
    names = np.array(list(LOST_STORY))
    story["story"] = names[rng.choice(len(names), size=len(story), p=np.array(list(LOST_STORY.values())))]
    low = np.where(story["story"] == DISQUALIFIED, DISQUALIFY_DAYS[0], SILENT_CLOSE_DAYS[0])
    high = np.where(story["story"] == DISQUALIFIED, DISQUALIFY_DAYS[1], SILENT_CLOSE_DAYS[1])
    close = story["day"].to_numpy() + 1 + low + rng.random(len(story)) * (high - low)
    happens = ((story["story"] != "unrecorded") & (close < n_days)
               & ~(close >= story["comeback_day"].fillna(np.inf))).to_numpy()
    story["closed_day"] = np.where(happens, close, np.nan)
    return story.reset_index(drop=True)
