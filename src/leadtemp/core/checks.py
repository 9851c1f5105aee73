"""Checks before training: enough data, two classes, no column that gives the answer away, and no
identifier or personal data among the features."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from leadtemp.core.config import Checks, EventType
from leadtemp.core.errors import TrainingDataError

LEAKAGE_FOLDS = 5
LEAKAGE_BINS = 20
SMOOTHING = 20.0  # prior weight (in rows) of the target encoding

# A categorical's categories are stored in the model files (and its MLflow artifacts), so a column that
# names leads instead of grouping them must not become one.
IDENTIFIER_UNIQUE_SHARE = 0.5  # distinct values / filled rows above this: nearly one value per lead
IDENTIFIER_MIN_ROWS = 100      # ... judged from this many filled rows on (small tables repeat little anyway)
PERSONAL_SHARE = 0.5           # above this share of the sampled values shaped like emails or phone numbers
PERSONAL_SAMPLE = 1000         # filled values sampled (seeded) for the shapes
EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s.]+"
PHONE_CHARACTERS = r"\+?[\d\s().-]+"
NOT_PHONE = r"\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{4}|-?\d+\.\d+"  # dates and decimals


def check_amount(leads: int, conversions: int, checks: Checks) -> None:
    """Refuse to train on too little: fewer leads or conversions than params.yaml's checks ask for."""
    if leads and conversions == leads:
        raise TrainingDataError(f"every one of the {leads} labelled leads converted: a model needs both outcomes")
    if conversions == 0:
        raise TrainingDataError(f"none of the {leads} labelled leads converted: a model needs both outcomes")
    short = []
    if leads < checks.min_leads:
        short.append(f"{leads} leads (checks.min_leads: {checks.min_leads})")
    if conversions < checks.min_conversions:
        short.append(f"{conversions} conversions (checks.min_conversions: {checks.min_conversions})")
    if short:
        raise TrainingDataError(
            "not enough labelled history to learn from: " + " and ".join(short)
            + "; add more history, or lower the checks in params.yaml if you accept a noisier model"
        )


def _codes(values: pd.Series) -> np.ndarray:
    """Integer levels of one column: categories as they are, numbers in quantile bins, missing its own level."""
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        binned = pd.qcut(numbers, LEAKAGE_BINS, labels=False, duplicates="drop") if numbers.notna().any() else numbers
        return np.where(np.isnan(binned), -1, binned).astype(np.int64)
    codes, _ = pd.factorize(values.astype("string"), use_na_sentinel=True)
    return codes.astype(np.int64)


def single_column_auc(values: pd.Series, y: np.ndarray, seed: int = 0) -> float:
    """ROC-AUC of one column alone, target-encoded out of fold (so an id-like column does not look perfect)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=float)
    codes = _codes(values)
    codes = codes - codes.min()
    fold = np.random.default_rng(seed).integers(0, LEAKAGE_FOLDS, len(y))
    encoded = np.empty(len(y))
    for k in range(LEAKAGE_FOLDS):
        fit, apply = fold != k, fold == k
        prior = y[fit].mean()
        sums = np.bincount(codes[fit], weights=y[fit], minlength=codes.max() + 1)
        counts = np.bincount(codes[fit], minlength=codes.max() + 1)
        encoded[apply] = ((sums + SMOOTHING * prior) / (counts + SMOOTHING))[codes[apply]]
    return float(roc_auc_score(y, encoded))


def leakage_report(frame: pd.DataFrame, columns: list[str], label: str = "label", seed: int = 0) -> pd.DataFrame:
    """Single-column AUC of every attribute column on ``frame`` (the training slice), highest first."""
    y = frame[label].to_numpy()
    rows = [(c, single_column_auc(frame[c], y, seed)) for c in columns]
    return pd.DataFrame(rows, columns=["column", "auc"]).sort_values("auc", ascending=False, ignore_index=True)


def check_leakage(report: pd.DataFrame, checks: Checks) -> list[str]:
    """Refuse columns that alone predict the label almost perfectly, unless allowed; return the allowed ones."""
    leaky = report.loc[report["auc"] > checks.leakage_auc]
    refused = leaky.loc[~leaky["column"].isin(checks.allow_leaky)]
    if len(refused):
        listed = ", ".join(f"'{r.column}' (AUC {r.auc:.3f})" for r in refused.itertuples())
        raise TrainingDataError(
            f"leakage: {listed} alone predict{'s' if len(refused) == 1 else ''} the label almost perfectly on the "
            f"training slice (checks.leakage_auc: {checks.leakage_auc}). A column like that usually records the "
            "outcome or something only known after it (a sales-team tag, a call result). Move it to "
            "data.excluded, or list it in checks.allow_leaky if it is really known before the outcome"
        )
    return list(leaky["column"])


# Stage names that end a lead whatever the params say: won or lost, closed won, closed-lost, converted, disqualified.
TERMINAL_STAGE = r"(?i)(closed[\s_-]*)?(won|lost|converted|disqualified)"


def check_terminal_stages(events: dict[str, EventType]) -> None:
    """Refuse a funnel whose open stages (``order``) include a terminal one: won or lost by name
    (``TERMINAL_STAGE``), one of the type's own ``terminal`` stages, or the name of a type declared as an outcome.

    A terminal stage is the outcome itself: as "the stage the lead is in" it would tell the model the answer
    for every lead that reached it before a cutoff (a deal marked won before the invoice is paid).
    """
    import re

    for type_, e in events.items():
        if e.kind != "stage":
            continue
        outcomes = {t for t, x in events.items() if x.kind == "outcome"} | set(e.terminal)
        if refused := [s for s in e.order if s in outcomes or re.fullmatch(TERMINAL_STAGE, s.strip())]:
            raise TrainingDataError(
                f"leakage: stage(s) {refused} in events.{type_}.order end the lead (won or lost, or declared as an "
                "outcome): a terminal stage is the outcome itself and never a feature; move them to "
                f"events.{type_}.terminal (as stage: lost or won)")


CONTEXT_SHARE = 0.95    # a column whose variation is at least this share between periods describes the period
CONTEXT_MIN_PERIODS = 3  # ... judged over at least this many periods, each with CONTEXT_MIN_ROWS filled rows
CONTEXT_MIN_ROWS = 20


def period_share(values: pd.Series, period: np.ndarray, categorical: bool = False) -> float:
    """The share of a column's variation that lies between periods rather than within them.

    Numbers: the correlation ratio eta² (between-period sum of squares over the total). Categories: the
    uncertainty coefficient 1 - H(value | period) / H(value). 1.0: the period alone fixes the value (a
    macro rate, a campaign setting, the month itself); about 0: the value varies as much inside a period
    as overall. NaN when the column does not vary or fewer than ``CONTEXT_MIN_PERIODS`` periods hold
    ``CONTEXT_MIN_ROWS`` filled rows.
    """
    frame = pd.DataFrame({"v": values.to_numpy(), "p": np.asarray(period)}).dropna()
    sizes = frame.groupby("p")["v"].size()
    frame = frame.loc[frame["p"].isin(sizes.index[sizes >= CONTEXT_MIN_ROWS])]
    if frame["p"].nunique() < CONTEXT_MIN_PERIODS:
        return float("nan")
    numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype)
    if numeric and not categorical:
        v = frame["v"].astype(float)
        total = float(((v - v.mean()) ** 2).sum())
        if total <= 0:
            return float("nan")
        means = v.groupby(frame["p"]).transform("mean")
        return 1.0 - float(((v - means) ** 2).sum()) / total

    text = frame["v"].astype("string")
    q = text.value_counts().to_numpy(dtype=float) / len(frame)
    overall = float(-(q * np.log(q)).sum())
    if overall <= 0:
        return float("nan")
    joint = frame.assign(v=text).groupby(["p", "v"]).size()
    n_pv = joint.to_numpy(dtype=float)
    n_p = joint.groupby(level=0).transform("sum").to_numpy(dtype=float)
    within = float(-(n_pv / len(frame) * np.log(n_pv / n_p)).sum())  # H(value | period)
    return 1.0 - within / overall


def context_columns(frame: pd.DataFrame, columns: list[str], period: np.ndarray,
                    categorical: Iterable[str] = ()) -> dict[str, float]:
    """Attribute columns that describe the period more than the lead (``period_share`` >= ``CONTEXT_SHARE``), with
    their shares: macro indicators, campaign settings, a month name. A tree learns each period's base rate from
    them, which says nothing about a new period; it cannot rank leads of one date against each other either."""
    codes = set(categorical)  # category codes are labels, not amounts, whatever their dtype
    shares = {c: period_share(frame[c], period, c in codes) for c in columns if c in frame.columns}
    return {c: round(v, 4) for c, v in sorted(shares.items(), key=lambda kv: -kv[1] if np.isfinite(kv[1]) else 0)
            if np.isfinite(v) and v >= CONTEXT_SHARE}


def _personal_shape(values: pd.Series) -> str | None:
    """'emails' or 'phone numbers' when most of a sample of the (filled, text) values have that shape.

    A phone number: digits with optional spaces, dots, dashes, brackets and a leading +, 7 to 15 digits,
    and a + or a separator or at least 10 digits (so short codes and plain numbers are not phones);
    dates and decimal numbers are not.
    """
    sample = values.sample(PERSONAL_SAMPLE, random_state=0) if len(values) > PERSONAL_SAMPLE else values
    sample = sample.str.strip()
    if sample.str.fullmatch(EMAIL).mean() > PERSONAL_SHARE:
        return "emails"
    digits = sample.str.count(r"\d")
    phone = (sample.str.fullmatch(PHONE_CHARACTERS) & digits.between(7, 15) & ~sample.str.fullmatch(NOT_PHONE)
             & (sample.str.startswith("+") | sample.str.contains(r"[\s().-]") | (digits >= 10)))
    return "phone numbers" if phone.mean() > PERSONAL_SHARE else None


def check_identifiers(rows: pd.DataFrame, categorical: Iterable[str], numeric: Iterable[str] = ()) -> None:
    """Refuse attribute columns that name leads rather than describe them, judged on the training rows.

    A categorical column is refused when it has nearly one distinct value per lead (more than
    ``IDENTIFIER_UNIQUE_SHARE`` of its filled rows, from ``IDENTIFIER_MIN_ROWS`` filled rows on) or when
    most of its values look like emails or phone numbers. Its categories would otherwise be stored,
    verbatim, in the model files and MLflow. A numeric column is refused when most of its values are whole
    numbers shaped like phone numbers (10 to 15 digits): a phone number read as a number would be split on
    and worded in reasons ("Phone: 48792992973"). Many distinct values alone are fine for a number (an
    amount). The message never quotes a value.
    """
    found = []
    for column in categorical:
        values = rows[column].dropna().astype(str)
        values = values[values.str.strip() != ""]
        if values.empty:
            continue
        unique = values.nunique() / len(values)
        shape = _personal_shape(values)
        if shape or (unique > IDENTIFIER_UNIQUE_SHARE and len(values) >= IDENTIFIER_MIN_ROWS):
            found.append((column, "data.categorical", f"{unique:.0%} unique" + (f", values like {shape}" if shape else "")))
    for column in numeric:
        values = pd.to_numeric(rows[column], errors="coerce").dropna()
        whole = values[(values == np.round(values)) & (values.abs() < 1e16)]
        if values.empty or len(whole) <= PERSONAL_SHARE * len(values):
            continue
        if _personal_shape(whole.astype("int64").astype(str)) == "phone numbers":
            found.append((column, "data.numeric", f"{whole.nunique() / len(whole):.0%} unique, values like phone numbers"))
    if not found:
        return
    if len(found) == 1:
        (column, role, why), = found
        what = f"column '{column}' under {role} looks like an identifier or personal data ({why}); move it"
    else:
        roles = dict.fromkeys(role for _, role, _ in found)
        listed = "; ".join(", ".join(f"'{c}' ({why})" for c, r, why in found if r == role) + f" under {role}"
                           for role in roles)
        what = f"columns {listed} look like identifiers or personal data; move them"
    raise TrainingDataError(f"{what} to data.excluded (an attribute's values are stored in the model files and MLflow "
                            "and worded in reasons)")
