"""The best any model can do on the simulated world: the exact Bayes filter of the hidden state.

``truth.parquet``'s ``p_convert`` knows each lead's hidden state (cold / warm / hot / lost), which no model
sees. What a model *can* know at a cutoff is the lead's attributes (they set its propensity ``z`` exactly),
its creation time, that it has not converted yet, and every event before the cutoff. Given those, the best
possible probability is the posterior mean of the oracle over the hidden state:

    p_observable = sum over s of P(state = s | everything observed before the cutoff) * p_convert(z, s, cutoff)

The posterior comes from the forward algorithm on the simulator's own model (world.py): each day a lead in
state s acts inbound as a Poisson process of rate INBOUND_RATE[s], each action's type drawn from
INBOUND_MIX[s] and its time uniform in the day; we contact it OUTBOUND_RATE[s] times a day (the type tells
nothing); at the end of the day the state moves by ``transition_matrix``, and a lead whose state rises
reaches out once more in the last quarter of that day, with a type drawn from its new state's mix. A lead
still open at the cutoff did not convert on any earlier day, so the filter drops that transition.

The ROC-AUC of ``p_observable`` is the ceiling of every model on observed data; the distance from it to the
hidden oracle's is what no feature can close. Only the default world (no ``shift_at``, ``lost`` or ``referrals``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.simulate.world import (
    COLD,
    HOT,
    INBOUND_MIX,
    INBOUND_RATE,
    INBOUND_TYPES,
    LOST,
    OUTBOUND_RATE,
    SimulatedData,
    _oracle,
    market_factor,
    propensity,
    transition_matrix,
)

OPEN = 4                      # cold, warm, hot, lost: the states an open lead can be in
WARMING_START = 0.75          # a lead whose state rises reaches out in the last quarter of that day
# (from, to) moves that come with that extra inbound action
RISES = [(s, t) for s in range(OPEN) for t in range(OPEN) if COLD <= s < t <= HOT]


def observable_truth(sim: SimulatedData, start: str | pd.Timestamp = "2023-01-01",
                     horizons: tuple[int, ...] = (90,), time_of_day: bool = True) -> pd.DataFrame:
    """One row per row of ``sim.truth``: the posterior over the hidden state and ``p_observable_<h>d``.

    ``start`` must be the ``start`` the world was simulated with. ``time_of_day=False``: the filter sees each
    event's day and type but not its hour (the late hour of a warming lead's extra action is the simulator's own
    mark, which no real CRM has). Columns: lead_id, cutoff, post_cold,
    post_warm, post_hot, post_lost, and p_observable_<h>d for each of ``horizons``.
    """
    if sim.losses is not None or "partner" in set(sim.leads["source"]) or "referred_by" in sim.leads.columns:
        raise ValueError("observable_truth models the default world only (no lost story, no shift, no referrals)")
    start = pd.Timestamp(start).normalize()
    leads = sim.leads
    n = len(leads)
    z = propensity(leads)
    created_day = ((leads["created_at"] - start) / pd.Timedelta(days=1)).to_numpy().astype(int)
    code = {lead: i for i, lead in enumerate(leads["lead_id"])}

    ev = sim.interactions
    at = ((ev["timestamp"] - start) / pd.Timedelta(days=1)).to_numpy()
    ev_day = np.floor(at).astype(int)
    ev_lead = ev["lead_id"].map(code).to_numpy()
    inbound = (ev["direction"] == "inbound").to_numpy()
    type_code = pd.Categorical(ev["type"], categories=INBOUND_TYPES).codes
    order = np.argsort(ev_day, kind="stable")
    ev_day, ev_lead, inbound, type_code, tod = (ev_day[order], ev_lead[order], inbound[order], type_code[order],
                                                (at - np.floor(at))[order])
    day_start = np.searchsorted(ev_day, np.arange(ev_day.max() + 2 if len(ev_day) else 1))

    cutoffs = np.sort(sim.truth["cutoff"].unique())
    cutoff_days = {int((pd.Timestamp(c) - start) / pd.Timedelta(days=1)): pd.Timestamp(c) for c in cutoffs}
    last_day = max(cutoff_days)

    rate = INBOUND_RATE[:OPEN]
    out_rate = OUTBOUND_RATE[:OPEN]
    # intensity[s, t]: inbound actions of type t a day in state s; warming[t', t]: density of the extra action
    # of type t at a time in the last quarter of the day when the state rises to t'
    intensity = rate[:, None] * INBOUND_MIX[:OPEN]
    warming = INBOUND_MIX[:OPEN] / (1.0 - WARMING_START) if time_of_day else INBOUND_MIX[:OPEN]

    alpha = np.zeros((n, OPEN))
    q_warm = 1.0 / (1.0 + np.exp(-(z - 1.0)))
    rows = []
    for day in range(last_day + 1):
        born = created_day == day - 1          # live from the day after the one it was created on
        alpha[born, COLD], alpha[born, 1] = 1.0 - q_warm[born], q_warm[born]
        live = np.flatnonzero(created_day < day)
        if day in cutoff_days:
            post = alpha[live] / alpha[live].sum(axis=1, keepdims=True)
            rows.append((day, live, post))
        if day == last_day or live.size == 0:
            continue
        lo, hi = day_start[min(day, len(day_start) - 1)], day_start[min(day + 1, len(day_start) - 1)]
        late = tod[lo:hi] >= WARMING_START if time_of_day else np.ones(hi - lo, dtype=bool)
        likelihood = _day_likelihood(n, ev_lead[lo:hi], inbound[lo:hi], type_code[lo:hi], late,
                                     intensity, warming, rate, out_rate)[live]
        step = transition_matrix(z[live], market_factor(day))[:, :OPEN, :OPEN]
        nxt = np.einsum("ks,kst->kt", alpha[live], step * likelihood)
        total = nxt.sum(axis=1, keepdims=True)
        alpha[live] = np.where(total > 0, nxt / np.where(total > 0, total, 1.0), alpha[live])

    parts = []
    for day, live, post in rows:
        exact = {s: _oracle(z[live], np.full(live.size, s), day, horizons) for s in range(LOST)}
        frame = pd.DataFrame({"lead_id": leads["lead_id"].to_numpy()[live], "cutoff": cutoff_days[day],
                              **{f"post_{name}": post[:, s] for s, name in enumerate(("cold", "warm", "hot", "lost"))}})
        for h in horizons:
            frame[f"p_observable_{h}d"] = sum(post[:, s] * exact[s][h] for s in range(LOST))
        parts.append(frame)
    observed = pd.concat(parts, ignore_index=True)
    return sim.truth[["lead_id", "cutoff"]].merge(observed, on=["lead_id", "cutoff"], how="left", validate="one_to_one")


def _day_likelihood(n: int, lead: np.ndarray, inbound: np.ndarray, kind: np.ndarray, late: np.ndarray,
                    intensity: np.ndarray, warming: np.ndarray, rate: np.ndarray, out_rate: np.ndarray) -> np.ndarray:
    """P(the day's events | state s at its start, state t at its end), shape (n, OPEN, OPEN), up to a factor per lead."""
    n_out = np.bincount(lead[~inbound], minlength=n)
    base = np.exp(-(rate + out_rate))[None, :] * out_rate[None, :] ** n_out[:, None]      # (n, s)
    who, kinds, late = lead[inbound], kind[inbound], late[inbound]
    lam = intensity[:, kinds]                                                             # (s, events)
    positive = lam > 0
    sum_log = np.stack([np.bincount(who, np.log(np.where(positive[s], lam[s], 1.0)), minlength=n)
                        for s in range(OPEN)], axis=1)
    zeros = np.stack([np.bincount(who, ~positive[s], minlength=n) for s in range(OPEN)], axis=1)
    regular = np.exp(sum_log) * (zeros == 0)                                              # (n, s)
    out = np.repeat((base * regular)[:, :, None], OPEN, axis=2)
    for s, t in RISES:
        g = warming[t, kinds] * late
        one_of_them = np.bincount(who, np.where(positive[s], g / np.where(positive[s], lam[s], 1.0), 0.0), minlength=n)
        the_odd_one = np.bincount(who, np.where(positive[s], 0.0, g), minlength=n)
        extra = np.where(zeros[:, s] == 0, one_of_them, np.where(zeros[:, s] == 1, the_odd_one, 0.0))
        out[:, s, t] = base[:, s] * np.exp(sum_log[:, s]) * extra
    return out
