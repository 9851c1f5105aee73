"""Contributions → grouped, worded reasons a sales rep understands.

Contributions are exact path-dependent TreeSHAP values in log-odds, from LightGBM's own
``pred_contrib`` (the algorithm ``shap.TreeExplainer`` runs for LightGBM). Derived features are
summed back into groups a rep knows ("phone calls from them", "company size"), and each group is
worded from the lead's own values with the direction of its effect: (+) raises, (−) lowers the
chance to convert.

Words come from the user's vocabulary (params ``events``) first: a touch type's ``label`` with
"from them" / "from us"; a step as a step, never as a contact ("offer sent 3 days ago", "no offer
sent yet"). Types without a label keep their raw code, in quotes.

Attributes are worded with their label from params ``data.labels`` ("company size: 50-249"). A
categorical whose values a rep cannot read (a *coded* column: many categories, or values that look
like ids or hashes) is worded by what its value did in training instead: "landing page 22c2a9…:
converts 19% (+)", from :func:`category_rates` stored in the scorer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from leadtemp.core.features import (
    RATING_FEATURES,
    REACH_DAYS,
    STAGE_FEATURES,
    STEPS_RECENT_DAYS,
    TASK_FEATURES,
    TREND_PRIOR_DAYS,
    TREND_RECENT_DAYS,
    FeatureSpec,
)
from leadtemp.core.schema import LEAD_ID, LEAD_RATING, TASK_OUTCOMES, TASK_RATING

# (what they did, what it is called) for inbound actions, hottest first (docs/domain.md section 1).
INBOUND_WORDS = {
    "pos_question": ("asked a buying question in person", "buying questions"),
    "phone_call": ("phoned us", "calls from them"),
    "sms": ("texted us", "texts from them"),
    "email": ("emailed us", "emails from them"),
    "private_message": ("sent us a private message", "private messages from them"),
    "friend_request": ("sent a friend request", "friend requests"),
    "newsletter_reply": ("replied to a newsletter", "newsletter replies"),
    "post_comment": ("commented on our posts", "comments from them"),
    "post_share": ("shared our posts", "shares of our posts"),
    "page_like": ("liked our page", "page likes"),
    "post_like": ("liked our posts", "post likes"),
    "web_visit": ("visited our website", "website visits"),
}
OUTBOUND_WORDS = {
    "phone_call": ("we called them", "calls from us"),
    "email": ("we emailed them", "emails from us"),
    "sms": ("we texted them", "texts from us"),
}
PLUS, MINUS = "(+)", "(\u2212)"
REOPENED_GROUP = "reopened"  # lost and reopened leads (core/lifecycle.py): days_since_reopened
# Referrals (core/referrals.py): who referred the lead, and whom it referred.
REFERRER_GROUP, REFERRALS_GROUP = "referrer", "referrals_made"
REFERRER_FEATURES = ("referred", "referrer_is_lead", "referrer_converted")
REFERRALS_FEATURES = ("referrals_made", "referrals_converted")
# The funnel's groups (core/features.py): where the lead is and for how long, how it got there, our attempts, the last task.
STAGE_GROUP, PATH_GROUP, REACH_GROUP, TASK_GROUP = "stage", "stage_path", "reach", "last_task"
LEAD_RATED, TASK_RATED = "rep_lead_rating", "rep_task_rating"
FUNNEL_COLUMNS = {STAGE_GROUP: STAGE_FEATURES[:2], PATH_GROUP: STAGE_FEATURES[2:], REACH_GROUP: TASK_FEATURES[:2],
                  TASK_GROUP: TASK_FEATURES[2:], LEAD_RATED: (RATING_FEATURES[LEAD_RATING],),
                  TASK_RATED: (RATING_FEATURES[TASK_RATING],)}
OUTCOME_WORDS = {"no_show": "a no-show at the meeting", "no_answer": "no answer", "voicemail": "voicemail",
                 "reached": "reached", "booked": "a meeting booked", "held": "a meeting held"}


# Coded categoricals (see category_rates). More than this many categories: a rep cannot know each
# value's meaning by name (a lead source or a sector has a handful; landing pages and campaigns have hundreds).
CODED_MAX_NAMED = 20
CODE_SHOWN_CHARS = 6   # a code is shown as its first 6 characters + "…": short, and unique enough to find in the CRM
RATE_PRIOR_ROWS = 20   # m of the m-estimate: a category's rate is pulled toward the overall rate by 20 pseudo-rows
RARE_LEADS = 30        # a category of fewer training leads says "rarely seen", not a rate from a handful of leads
# Ids and hashes: hex of 8+ characters with digits and letters (sha/md5 22c2a9f0…, a uuid), 6+ digits
# (000123456), or a 12+ character token of letters and digits mixed (3f9Kx2Lq8ZaB). Dates and names
# with digits ("2024-01-15", "Q1-2024-webinar") are no codes.
_CODE = re.compile(r"(?=.*\d)(?=.*[a-fA-F])[0-9a-fA-F-]{8,}|\d{6,}|(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9]{12,}")


def looks_like_code(value: str) -> bool:
    """A value a rep cannot read: an id, a hash, a long token of letters and digits."""
    return _CODE.fullmatch(value) is not None


def is_coded(categories: tuple[str, ...]) -> bool:
    """A categorical a rep cannot read by value: more than ``CODED_MAX_NAMED`` categories, or mostly codes."""
    return len(categories) > CODED_MAX_NAMED or (
        bool(categories) and 2 * sum(looks_like_code(c) for c in categories) >= len(categories))


def short_code(value: str) -> str:
    """An id or hash cut to its first ``CODE_SHOWN_CHARS`` characters + "…"; readable values stay whole."""
    if looks_like_code(value) and len(value) > CODE_SHOWN_CHARS + 2:
        return value[:CODE_SHOWN_CHARS] + "\u2026"
    return value


def category_rates(fitted: pd.DataFrame, spec: FeatureSpec) -> dict[str, dict[str, float | None]]:
    """Training conversion rate of each category of each coded categorical; ``None``: rarely seen.

    ``fitted``: the rows the booster learned from (a ``label`` column and the attribute columns;
    never the test slice nor anything later, so a rate is as point-in-time as the booster). A rate
    is the share of the category's rows that converted, smoothed toward the overall rate by an
    m-estimate, (conversions + m·overall) / (rows + m) with m = ``RATE_PRIOR_ROWS``; a category of
    fewer than ``RARE_LEADS`` distinct leads (or rows, without lead ids) gets ``None``. Only columns
    of ``spec.categorical`` are read (never ``data.excluded``: those are no features). Columns that
    are not coded are left out: their values are worded as they are.
    """
    y = fitted["label"].to_numpy(dtype=float)
    overall = float(y.mean()) if len(y) else 0.0
    ids = fitted[LEAD_ID].to_numpy() if LEAD_ID in fitted.columns else np.arange(len(fitted))
    out = {}
    for column, categories in spec.categorical.items():
        if not is_coded(categories):
            continue
        codes = pd.Categorical(fitted[column].astype("string"), categories=list(categories)).codes
        known = codes >= 0
        rows = np.bincount(codes[known], minlength=len(categories))
        conversions = np.bincount(codes[known], weights=y[known], minlength=len(categories))
        pairs = pd.DataFrame({"lead": ids[known], "code": codes[known]}).drop_duplicates()
        leads = np.bincount(pairs["code"].to_numpy(dtype=np.int64), minlength=len(categories))
        rate = (conversions + RATE_PRIOR_ROWS * overall) / (rows + RATE_PRIOR_ROWS)
        out[column] = {c: (float(rate[i]) if leads[i] >= RARE_LEADS else None) for i, c in enumerate(categories)}
    return out


def _percent(rate: float) -> str:
    return "under 1%" if rate < 0.005 else f"{100 * rate:.0f}%"


def describe_code(label: str, value: str, rates: dict[str, float | None]) -> str:
    """A coded value in words: shortened, with its training conversion rate (or "rarely seen")."""
    rate = rates.get(value)
    return f"{label} {short_code(value)}: " + ("rarely seen" if rate is None else f"converts {_percent(rate)}")


def _days(d: float) -> str:
    d = int(round(d))
    return "less than a day" if d < 1 else f"{d} day" + ("s" if d != 1 else "")


def _times(n: float) -> str:
    n = int(round(n))
    return f"{n} time" + ("s" if n != 1 else "")


@dataclass(frozen=True)
class Group:
    key: str
    features: tuple[str, ...]


def feature_groups(spec: FeatureSpec) -> list[Group]:
    """Model features grouped by what a rep knows; every feature is in exactly one group."""
    def window_group(prefix: str) -> Group:
        return Group(prefix, tuple(f"{prefix}_{w}d" for w in spec.windows_days)
                     + (f"{prefix}_days_since_last", f"{prefix}_decayed"))

    groups = []
    if spec.behaviour_columns:
        groups += [window_group(c.name) for c in spec.channels]
        groups += [window_group("inbound"), window_group("outbound")]
        groups += [Group("activation", ("days_since_first_inbound", "just_turned_active")),
                   Group("trend", ("inbound_trend",)), Group("lead_age", ("lead_age_days",))]
        if spec.lifecycle:
            groups.append(Group(REOPENED_GROUP, ("days_since_reopened",)))
    if spec.step_features:
        groups += [Group(name, (f"{name}_reached", f"{name}_days_since")) for name in spec.step_columns]
        groups += [Group(STEP_PACE, (f"steps_{STEPS_RECENT_DAYS}d",))]
    funnel = set(spec.funnel_features)
    groups += [Group(key, tuple(cols)) for key, cols in FUNNEL_COLUMNS.items() if funnel.issuperset(cols)]
    groups += [Group(col, (col,)) for col in [*spec.categorical, *spec.numeric]]
    if spec.referral_columns:
        groups += [Group(REFERRER_GROUP, REFERRER_FEATURES), Group(REFERRALS_GROUP, REFERRALS_FEATURES)]
    return groups


def describe_referrer(referred: float, is_lead: float, converted: float) -> str:
    """Who referred the lead, as known at the date (never who: the referrer's id is no reason)."""
    if not referred:
        return "not referred by anyone"
    if converted:
        return "referred by a customer who bought"
    if is_lead:
        return "referred by a lead who has not bought yet"
    return "referred by someone outside the leads table"


def describe_referrals(made: float, converted: float) -> str:
    """Whom the lead referred before the date, and how many of them bought."""
    made, converted = int(round(made)), int(round(converted))
    if not made:
        return "has referred no one yet"
    return f"referred {made} lead" + ("s" if made != 1 else "") + (f", {converted} bought" if converted
                                                                    else ", none bought yet")


def _activity(row: pd.Series, prefix: str, windows: tuple[int, ...], done: str, noun: str) -> str:
    for w in windows:
        if row[f"{prefix}_{w}d"] > 0:
            return f"{done} {_times(row[f'{prefix}_{w}d'])} in the last {w} days"
    last = row[f"{prefix}_days_since_last"]
    return f"no {noun} for {_days(last)}" if pd.notna(last) else f"no {noun} yet"


STEP_PACE = "step_pace"  # the group of "steps in the last 7 days"


def _step(row, name: str, type_: str, label: str | None) -> str:
    """A step as a step: when it was reached, or that it was not yet (never a contact, never "from us")."""
    since = row[f"{name}_days_since"]
    if pd.isna(since):
        return f"no {label} yet" if label else f"not yet reached '{type_}'"
    return f"{label} {_days(since)} ago" if label else f"reached '{type_}' {_days(since)} ago"


EQUAL_COUNTS = float(np.log(TREND_PRIOR_DAYS / TREND_RECENT_DAYS))  # inbound_trend when both windows hold as many


def describe_group(key: str, row: pd.Series, spec: FeatureSpec, labels: dict[str, str],
                   channels: dict | None = None, rates: dict[str, dict[str, float | None]] | None = None) -> str:
    """The group's value in words, from the lead's own feature values (``channels``: name → Channel, if known).

    ``rates``: :func:`category_rates` of the scorer; a column in it is worded as a code with its rate
    (models saved before the rates word every category as it is).
    """
    windows = spec.windows_days
    channels = channels if channels is not None else {c.name: c for c in spec.channels}
    if key in channels:
        c = channels[key]
        declared = spec.vocabulary.get(c.type)
        words = (INBOUND_WORDS if c.direction == "inbound" else OUTBOUND_WORDS).get(c.type)
        if (declared is not None and declared.label) or words is None:  # the user's own words, or the raw code
            name = declared.label if declared is not None and declared.label else f"'{c.type}'"
            phrase = f"{name} " + ("from them" if c.direction == "inbound" else "from us")
            words = (phrase, phrase)
        return _activity(row, key, windows, *words)
    if key in (steps := spec.step_columns):
        declared = spec.vocabulary.get(steps[key])
        return _step(row, key, steps[key], declared.label if declared is not None else None)
    if key == STEP_PACE:
        n = row[f"steps_{STEPS_RECENT_DAYS}d"]
        return (f"reached {int(round(n))} step" + ("s" if round(n) != 1 else "") + f" in the last {STEPS_RECENT_DAYS} days"
                if n > 0 else f"no step reached in the last {STEPS_RECENT_DAYS} days")
    if key == "inbound":
        return _activity(row, key, windows, "contacted us", "contact from them")
    if key == "outbound":
        return _activity(row, key, windows, "we contacted them", "contact from us")
    if key == "activation":
        first = row["days_since_first_inbound"]
        if pd.isna(first):
            return "still passive: has never reached out to us"
        if row["just_turned_active"]:
            return f"just turned active: first reached out {_days(first)} ago"
        return f"first reached out to us {_days(first)} ago"
    if key == "trend":
        # inbound_trend = log((recent + 0.5) / 7) - log((prior + 0.5) / 30), recent: inbound contacts in the last 7
        # days, prior: in the 30 before (core/features.py). It is log(30/7) exactly when recent == prior: either both 0
        # (the last inbound contact is at least 37 days old, or none) or both at least 1 (one within 7 days). The first
        # is no rise at all, whatever the smoothing says; the whole-day rounding of days_since_last cannot blur them.
        last = row["inbound_days_since_last"]
        if abs(row["inbound_trend"] - EQUAL_COUNTS) < 1e-9 and (pd.isna(last) or last > TREND_RECENT_DAYS + 1):
            return f"no contact from them in the last {TREND_RECENT_DAYS + TREND_PRIOR_DAYS} days"
        ratio = float(np.exp(row["inbound_trend"]))
        if ratio >= 1.5:
            return f"contact from them is picking up: {ratio:.1f}x their usual rate this week"
        if ratio <= 0.67:
            return "contact from them is slowing down this week"
        return "contact from them is steady this week"
    if key == "lead_age":
        return f"lead is {_days(row['lead_age_days'])} old"
    if key == REOPENED_GROUP:
        return describe_reopening(row["days_since_reopened"])
    if key == REFERRER_GROUP and spec.referral_columns:
        return describe_referrer(*(row[c] for c in REFERRER_FEATURES))
    if key == REFERRALS_GROUP and spec.referral_columns:
        return describe_referrals(*(row[c] for c in REFERRALS_FEATURES))
    if key in FUNNEL_COLUMNS:
        return describe_funnel(key, row, spec)
    label = labels.get(key, key.replace("_", " "))
    value = row[key]
    if pd.isna(value):
        return f"{label}: unknown"
    if rates and key in rates:
        return describe_code(label, str(value), rates[key])
    if isinstance(value, float):
        value = int(value) if value.is_integer() else f"{value:.4g}"
    return f"{label}: {value}"


def group_name(key: str, spec: FeatureSpec, labels: dict[str, str]) -> str:
    """What a group is called, in the words :func:`describe_group` uses for one lead, without the lead's values
    ("calls from them", "company size"): the label of a bar on the driver plot."""
    channels = {c.name: c for c in spec.channels}
    if key in channels:
        c = channels[key]
        declared = spec.vocabulary.get(c.type)
        words = (INBOUND_WORDS if c.direction == "inbound" else OUTBOUND_WORDS).get(c.type)
        if (declared is not None and declared.label) or words is None:
            name = declared.label if declared is not None and declared.label else f"'{c.type}'"
            return f"{name} " + ("from them" if c.direction == "inbound" else "from us")
        return words[1]
    if key in (steps := spec.step_columns):
        declared = spec.vocabulary.get(steps[key])
        return declared.label if declared is not None and declared.label else f"step '{steps[key]}'"
    fixed = {STEP_PACE: f"steps reached in the last {STEPS_RECENT_DAYS} days",
             "inbound": "contact from them (any channel)", "outbound": "contact from us (any channel)",
             "activation": "when they first reached out", "trend": "contact from them picking up or slowing",
             "lead_age": "lead age", REOPENED_GROUP: "reopened after being lost", STAGE_GROUP: "funnel stage and days in it",
             PATH_GROUP: "funnel stages skipped or moved back", REACH_GROUP: f"reach of our calls ({REACH_DAYS} days)",
             TASK_GROUP: "last task outcome", LEAD_RATED: "rep's rating of the lead",
             TASK_RATED: f"rep's rating of the tasks ({REACH_DAYS} days)"}
    if spec.referral_columns:
        fixed |= {REFERRER_GROUP: "who referred them", REFERRALS_GROUP: "leads they referred, and who bought"}
    return fixed.get(key) or labels.get(key, key.replace("_", " "))


def describe_funnel(key: str, row, spec: FeatureSpec) -> str:
    """The funnel in a rep's words: "in negotiation for 12 days", "reached on 1 of 5 calls in the last 30 days"."""
    if key == STAGE_GROUP:
        rank = row["stage_rank"]
        if pd.isna(rank):
            return "no funnel stage recorded yet"
        return f"in {spec.stages[int(rank) - 1]} for {_days(row['days_in_stage'])}"
    if key == PATH_GROUP:
        skipped, back = int(round(row["stages_skipped"])), int(round(row["stage_moves_back"]))
        said = ([f"skipped {skipped} stage" + ("s" if skipped != 1 else "")] if skipped else []) + (
            [f"moved back a stage {_times(back)}"] if back else [])
        return " and ".join(said) if said else "never skipped or moved back a funnel stage"
    if key == REACH_GROUP:
        attempts = int(round(row[TASK_FEATURES[0]]))
        if not attempts:
            return f"no call or meeting attempt by us in the last {REACH_DAYS} days"
        hits = int(round(row[TASK_FEATURES[1]] * attempts))
        return f"reached on {hits} of {attempts} call" + ("s" if attempts != 1 else "") + f" in the last {REACH_DAYS} days"
    if key in (LEAD_RATED, TASK_RATED):
        value = row[FUNNEL_COLUMNS[key][0]]
        if key == LEAD_RATED:
            return "no rating of the lead by a rep yet" if pd.isna(value) else f"rep's rating of the lead: {value:.3g}"
        return (f"no task rated in the last {REACH_DAYS} days" if pd.isna(value)
                else f"tasks rated {value:.2g} on average in the last {REACH_DAYS} days")
    code = row[TASK_FEATURES[2]]
    return "no task outcome recorded yet" if pd.isna(code) else f"last task: {OUTCOME_WORDS[TASK_OUTCOMES[int(code)]]}"


def describe_reopening(days_since_reopened: float) -> str:
    """Words for a lead that was lost (or disqualified) and came back; NaN: it never did."""
    if pd.isna(days_since_reopened):
        return "never closed as lost and reopened"
    return f"reopened {_days(days_since_reopened)} ago"


def group_contributions(contrib: np.ndarray, spec: FeatureSpec) -> pd.DataFrame:
    """Sum per-feature contributions (n, features [+ bias]) into one column per group."""
    index = {f: i for i, f in enumerate(spec.columns)}
    return pd.DataFrame({g.key: contrib[:, [index[f] for f in g.features]].sum(axis=1) for g in feature_groups(spec)})


class _Row:
    """One row of a feature frame, read column by column (a pandas row Series costs ~100x more to build)."""

    __slots__ = ("columns", "i")

    def __init__(self, columns: dict[str, np.ndarray], i: int):
        self.columns, self.i = columns, i

    def __getitem__(self, name: str):
        return self.columns[name][self.i]


def _worded_from(key: str, spec: FeatureSpec, channels: dict) -> list[str]:
    """The feature columns :func:`describe_group` reads to word group ``key``."""
    if key in channels or key in ("inbound", "outbound"):
        return [f"{key}_{w}d" for w in spec.windows_days] + [f"{key}_days_since_last"]
    if key in spec.step_columns:
        return [f"{key}_days_since"]
    if spec.referral_columns and key in (REFERRER_GROUP, REFERRALS_GROUP):
        return list(REFERRER_FEATURES if key == REFERRER_GROUP else REFERRALS_FEATURES)
    if key in FUNNEL_COLUMNS:
        return list(FUNNEL_COLUMNS[key])
    return {"activation": ["days_since_first_inbound", "just_turned_active"], "trend": ["inbound_trend", "inbound_days_since_last"],
            "lead_age": ["lead_age_days"], REOPENED_GROUP: ["days_since_reopened"],
            STEP_PACE: [f"steps_{STEPS_RECENT_DAYS}d"]}.get(key, [key])


def _in_whole_days(column: str) -> bool:
    """Columns :func:`describe_group` words through ``_days``, i.e. rounded to whole days."""
    return column.endswith(("days_since_last", "_days_since")) or column in ("days_since_first_inbound", "lead_age_days",
                                                                             "days_since_reopened", "days_in_stage")


def _value_groups(columns: list[np.ndarray]) -> np.ndarray:
    """Rows numbered by their combination of values, in order of first appearance, missing values alike.

    What ``groupby(columns, dropna=False, sort=False).ngroup()`` gives (the same hash table decides
    equality), without building a frame and a groupby per reason group: 5x faster on 1,000 leads.
    """
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for values in columns:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        key, _ = pd.factorize(key * len(uniques) + codes)  # kept below the row count: never overflows
    return key


@numba.njit(cache=True, nogil=True)
def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the ``k`` largest absolute values, largest first, ties to the lower column:
    ``np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]`` without sorting whole rows."""
    n, m = values.shape
    k = min(k, m)
    out = np.empty((n, k), dtype=np.int64)
    best = np.empty(k)
    for i in range(n):
        filled = 0
        for j in range(m):
            a = abs(values[i, j])
            if filled == k and not a > best[k - 1]:  # an equal value stays behind the earlier column
                continue
            p = filled if filled < k else k - 1
            while p > 0 and a > best[p - 1]:
                if p < k:
                    best[p], out[i, p] = best[p - 1], out[i, p - 1]
                p -= 1
            best[p], out[i, p] = a, j
            filled = min(filled + 1, k)
    return out


def _worded_values(features: pd.DataFrame, column: str, rows: np.ndarray) -> np.ndarray:
    """The values :func:`describe_group` reads, for some rows only (a categorical: its text, NaN when missing)."""
    values = features[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        names = np.append(np.asarray(values.cat.categories, dtype=object), np.nan)  # code -1: the last, NaN
        return names[values.cat.codes.to_numpy()[rows]]
    out = values.to_numpy()[rows]
    return np.rint(out) if _in_whole_days(column) else out


def top_reasons(
    features: pd.DataFrame,
    grouped: pd.DataFrame,
    spec: FeatureSpec,
    labels: dict[str, str],
    k: int = 3,
    rates: dict[str, dict[str, float | None]] | None = None,
) -> list[np.ndarray]:
    """The ``k`` groups with the largest absolute contribution per row, worded, with sign.

    Returns ``k`` columns of text, one per rank; a slot is empty where the group's contribution is
    zero (a factor the model never used is no reason). Each group is worded once per distinct value
    of what its words depend on (counts, whole days, a category) and sign, and the text is shared
    by every lead with those values: most leads of a large batch repeat a few hundred phrasings.
    ``rates``: the scorer's :func:`category_rates` (coded categoricals).
    """
    values = np.ascontiguousarray(grouped.to_numpy(dtype=np.float64))
    order = _top_k(values, k)
    chosen = np.take_along_axis(values, order, axis=1)
    used = chosen != 0
    keys = list(grouped.columns)
    channels = {c.name: c for c in spec.channels}
    out = np.full((len(values), k), "", dtype=object)  # a model with fewer than k groups leaves empty slots
    # Every (row, slot) that names a reason, grouped by the group it names (one stable sort, not a scan per group).
    cells = np.flatnonzero(used.ravel())
    named = order.ravel()[cells]
    by_group = np.argsort(named, kind="stable")
    cells, named = cells[by_group], named[by_group]
    edges = np.flatnonzero(np.diff(named)) + 1
    for part in np.split(np.arange(len(cells)), edges) if len(cells) else []:
        key = keys[named[part[0]]]
        rows, slots = np.divmod(cells[part], order.shape[1])
        columns = {c: _worded_values(features, c, rows) for c in _worded_from(key, spec, channels)}
        positive = chosen[rows, slots] > 0
        codes = _value_groups([*columns.values(), positive])
        _, first = np.unique(codes, return_index=True)
        words = np.array([
            f"{describe_group(key, _Row(columns, i), spec, labels, channels, rates)} {PLUS if positive[i] else MINUS}"
            for i in first], dtype=object)
        out[rows, slots] = words[codes]
    return [out[:, s] for s in range(k)]


def factor_table(features_row: pd.Series, grouped_row: pd.Series, spec: FeatureSpec,
                 labels: dict[str, str], rates: dict[str, dict[str, float | None]] | None = None) -> pd.DataFrame:
    """All groups of one lead, worded, with their contribution in log-odds, largest effect first."""
    table = pd.DataFrame({
        "factor": [describe_group(k, features_row, spec, labels, rates=rates) for k in grouped_row.index],
        "effect": grouped_row.to_numpy(),
    }, index=grouped_row.index)
    return table.reindex(table["effect"].abs().sort_values(ascending=False, kind="stable").index)


def what_changed(now: pd.DataFrame, before: pd.DataFrame, delta: pd.DataFrame, spec: FeatureSpec,
                 labels: dict[str, str], k: int = 2, rates: dict[str, dict[str, float | None]] | None = None) -> np.ndarray:
    """Why a lead's score moved between two dates: the ``k`` groups whose contributions moved most (``delta``: now
    minus before, one column per group, rows aligned with the two feature frames), worded as the reasons word them
    today, with the sign of the move, and what they said before when that differs: "called us 2 times in the last
    7 days (+), was: no call from them yet". Groups that did not move are no reason; "" when none did."""
    today = top_reasons(now, delta, spec, labels, k, rates)
    then = top_reasons(before, delta, spec, labels, k, rates)
    parts = []
    for a, b in zip(today, then):
        was = np.array([t.rsplit(" ", 1)[0] for t in b], dtype=object)
        same = np.array([t.rsplit(" ", 1)[0] for t in a], dtype=object) == was
        parts.append(np.where((a == "") | same, a, a + ", was: " + was))
    joined = parts[0]
    for more in parts[1:]:
        joined = np.where(more == "", joined, joined + "; " + more)
    return joined.astype(object)
