"""Referrals and repeat customers (DOMAIN section 4): who referred a lead, and whom a lead referred, as of a date.

A lead may name the lead or customer who referred it (``referred_by``, mapped by ``data.columns.referred_by``).
Its referral features at ``as_of`` see only what was known strictly before ``as_of``:

* ``referred``: it names a referrer (1) or not (0);
* ``referrer_is_lead``: the referrer is a lead of the table created before ``as_of`` (0 for an id the table does
  not hold, an outside customer: referred, history unknown; nothing about it is guessed);
* ``referrer_converted``: that referrer converted (bought) before ``as_of``; a conversion at or after it does not count;
* ``referrals_made``: leads created before ``as_of`` that name this lead as their referrer;
* ``referrals_converted``: of those, the ones that converted before ``as_of``.

The referrer's id is an id: it is read to find the referrer, never a feature, never logged or reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.core.schema import CONVERTED_AT, CREATED_AT, LEAD_ID, REFERRED_BY

REFERRAL_FEATURES = ("referred", "referrer_is_lead", "referrer_converted", "referrals_made", "referrals_converted")
LEDGER_COLUMNS = [LEAD_ID, CREATED_AT, CONVERTED_AT, REFERRED_BY]


def referral_ledger(leads: pd.DataFrame) -> pd.DataFrame:
    """What referral features read of the whole leads table: ids, times and referrers, one row per id (an id given
    more than once is left out: which of its rows is the lead cannot be known)."""
    ledger = leads[LEDGER_COLUMNS]
    return ledger.loc[~ledger[LEAD_ID].duplicated(keep=False)].reset_index(drop=True)


def outside_referrers(leads: pd.DataFrame) -> int:
    """How many leads name a referrer the table does not hold (an outside customer)."""
    named = leads[REFERRED_BY].dropna()
    return int((~named.isin(pd.Index(leads[LEAD_ID]))).sum())


def _ns(times: pd.Series | np.ndarray) -> np.ndarray:
    """int64 nanoseconds; NaT (never) as the largest value, later than any real time."""
    values = np.asarray(times, dtype="datetime64[ns]").astype(np.int64)
    return np.where(values == np.iinfo(np.int64).min, np.iinfo(np.int64).max, values)


def _count_before(parents: np.ndarray, times: np.ndarray, ids: np.ndarray, as_of: np.ndarray) -> np.ndarray:
    """For each (id, as_of): how many (parent, time) pairs have parent == id and time < as_of, vectorised.

    Ids become integer codes and times dense ranks (over both sides), so each pair is one int64 key
    ``code * width + rank``, sorted once and cut by binary search per query.
    """
    if not len(parents) or not len(ids):
        return np.zeros(len(ids))
    codes, _ = pd.factorize(np.concatenate([parents, ids]))
    ranks = np.unique(np.concatenate([times, as_of]), return_inverse=True)[1].ravel() + 1
    width = np.int64(ranks.max() + 1)
    n = len(parents)
    keys = np.sort(codes[:n].astype(np.int64) * width + ranks[:n])
    query = codes[n:].astype(np.int64) * width
    return (np.searchsorted(keys, query + ranks[n:], side="left") - np.searchsorted(keys, query, side="left")).astype(float)


def referral_features(ledger: pd.DataFrame, lead_ids: np.ndarray, referred_by: np.ndarray,
                      as_of: pd.Timestamp | np.ndarray) -> pd.DataFrame:
    """The referral features (``REFERRAL_FEATURES``) of each lead at its ``as_of`` (one date, or one per lead).

    ``ledger``: :func:`referral_ledger` of the whole leads table (referrers and referrals are looked up there);
    ``lead_ids`` and ``referred_by`` (aligned): the leads asked about and whom each names. Inputs are not modified.
    """
    n = len(lead_ids)
    if np.ndim(as_of) == 0:
        when = np.full(n, pd.Timestamp(as_of).as_unit("ns").value, dtype=np.int64)
    else:
        when = _ns(pd.DatetimeIndex(as_of).as_unit("ns"))
    named = pd.Series(referred_by, dtype="string")
    referred = named.notna().to_numpy()
    row = pd.Index(ledger[LEAD_ID].astype("string")).get_indexer(named.fillna("\x00"))  # "\x00": no lead's id
    known = row >= 0
    created, converted = _ns(ledger[CREATED_AT]), _ns(ledger[CONVERTED_AT])
    is_lead = known & (created[np.where(known, row, 0)] < when)
    bought = is_lead & (converted[np.where(known, row, 0)] < when)
    children = ledger.loc[ledger[REFERRED_BY].notna()]
    parents = children[REFERRED_BY].astype("string").to_numpy(dtype=object)
    ids = pd.Series(lead_ids, dtype="string").to_numpy(dtype=object)
    return pd.DataFrame({
        "referred": referred.astype(float),
        "referrer_is_lead": is_lead.astype(float),
        "referrer_converted": bought.astype(float),
        "referrals_made": _count_before(parents, _ns(children[CREATED_AT]), ids, when),
        # converted before as_of implies created before it (a conversion is never before the creation)
        "referrals_converted": _count_before(parents, _ns(children[CONVERTED_AT]), ids, when),
    })


def with_referrals(leads: pd.DataFrame, ledger: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """A copy of ``leads`` with their referral features at ``as_of`` (from ``ledger``: the whole table's)."""
    found = referral_features(ledger, leads[LEAD_ID].to_numpy(), leads[REFERRED_BY].to_numpy(), pd.Timestamp(as_of))
    return leads.assign(**{c: found[c].to_numpy() for c in REFERRAL_FEATURES})
