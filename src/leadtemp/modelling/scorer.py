"""Score leads with a trained model: probability, score 1-99, bucket, rank and reasons.

Everything learned (booster, feature spec, calibrator, bucket cut-offs) lives in one
:class:`LeadScorer`, saved as a folder of plain files: ``booster.txt`` (LightGBM's own text
format) and ``scorer.json`` (spec, calibrator, cut-offs, versions, and the SHA-256 and size of
``booster.txt``, checked before LightGBM reads a byte of it). Nothing depends on the batch:
a lead's probability and bucket are the same whichever other leads are scored with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadtemp.core.errors import ConfigError
from leadtemp.core.features import FeatureSpec, attribute_features, feature_matrix, features_as_of, prepare_events
from leadtemp.core.lifecycle import LOST_SINCE
from leadtemp.core.metrics import BUCKETS
from leadtemp.core.reasons import group_contributions, top_reasons, what_changed
from leadtemp.core.referrals import referral_ledger, with_referrals
from leadtemp.core.schema import LEAD_ID
from leadtemp.core.snapshots import open_leads, scorable_leads
from leadtemp.modelling.booster import reads_spec_codes
from leadtemp.modelling.buckets import BucketCutoffs
from leadtemp.modelling.calibration import Calibrator
from leadtemp.modelling.horizons import HorizonModel, timing, timing_columns

if TYPE_CHECKING:
    import lightgbm as lgb

OUTPUT_COLUMNS = ["lead_id", "as_of", "probability", "score", "bucket", "rank",
                  "reason_1", "reason_2", "reason_3", "model_version", "run_id"]  # the registry version, its MLflow run
REASON_COLUMNS = [c for c in OUTPUT_COLUMNS if c.startswith("reason_")]
# Temperature over time (score --previous, leadtemp changes): the lead as the same model saw it at an earlier date.
PREVIOUS_PROBABILITY, PREVIOUS_BUCKET, TREND, WHAT_CHANGED = "previous_probability", "previous_bucket", "trend", "what_changed"
CHANGE_COLUMNS = [PREVIOUS_PROBABILITY, PREVIOUS_BUCKET, TREND, WHAT_CHANGED]
FAST_REASONS_MIN_ROWS = 5000  # below this, compiling the fast TreeSHAP tables costs more than it saves
# Of scorer.json. A folder without it was written before versions were recorded (same format as 1);
# 2 adds the event vocabulary and step types to the spec (a version-1 spec reads as: every type a touch).
# The optional "category_rates" (coded categoricals' training conversion rates, for reasons) needs no new
# version: a file without it words every category as it is, and a reader that predates it ignores it.
# Likewise the optional "when" (the horizons of p_<h>d and each other horizon's booster file and calibrator):
# a model saved without it scores without the p_<h>d and expected_days columns; an older reader ignores it.
# 3: the spec has referral features (``referrals``) or the funnel's (stage type, stages, task outcomes); written
# only by such models, so a reader that predates them refuses the model with "upgrade leadtemp" instead of scoring
# with the wrong columns. Every other model stays 2.
PLAIN_FORMAT, EXTENDED_FORMAT = 2, 3
FORMAT_VERSION = EXTENDED_FORMAT  # the newest this code reads
BOOSTER_FILE = "booster.txt"
REEXPORT = "re-export the model"  # what to do about a damaged model folder


def score_from_probability(p: np.ndarray) -> np.ndarray:
    """Score 1-99: the calibrated chance to convert within the horizon, in percent."""
    return np.clip(np.rint(100 * np.asarray(p)), 1, 99).astype(int)


def rank_order(scored: pd.DataFrame) -> np.ndarray:
    """Rank 1..n: probability first, the booster's margin breaks calibration ties, then the lead id.

    Batch scoring ranks in SQL with the same order (lead ids compared byte-wise, as Python does).
    """
    order = np.lexsort((scored[LEAD_ID].to_numpy(), -scored["margin"].to_numpy(), -scored["probability"].to_numpy()))
    rank = np.empty(len(scored), dtype=np.int64)
    rank[order] = np.arange(1, len(scored) + 1)
    return rank


@dataclass
class LeadScorer:
    booster: lgb.Booster
    spec: FeatureSpec
    calibrator: Calibrator
    buckets: BucketCutoffs
    horizon_days: int
    labels: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    # Coded categoricals: category → smoothed training conversion rate (None: rarely seen); core/reasons.py.
    category_rates: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # When, not only if (modelling/horizons.py): the horizons of the p_<h>d columns and each one's booster and
    # calibrator (the main horizon's is this scorer's own); empty in a model saved before them.
    timing_days: tuple[int, ...] = ()
    horizon_models: dict[int, HorizonModel] = field(default_factory=dict)
    _fast: object = field(default=None, init=False, repr=False, compare=False)

    def output_columns(self) -> list[str]:
        """The columns of ``score``: OUTPUT_COLUMNS with this model's p_<h>d and expected_days after the bucket."""
        at = OUTPUT_COLUMNS.index("bucket") + 1
        return OUTPUT_COLUMNS[:at] + timing_columns(self.timing_days) + OUTPUT_COLUMNS[at:]

    # -- computing -------------------------------------------------------------------------------
    def margin(self, features: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(features[self.spec.columns], raw_score=True)

    def _matrix(self, features: pd.DataFrame) -> np.ndarray | None:
        """The features as LightGBM sees them (:func:`feature_matrix`), when its codes are the booster's own: the
        spec's categories are those the booster was trained with, so no recoding of a frame is needed; else None."""
        return feature_matrix(features, self.spec) if reads_spec_codes(self.booster, self.spec) else None

    def contributions(self, features: pd.DataFrame, margin: np.ndarray | None = None,
                      matrix: np.ndarray | None = None) -> np.ndarray:
        """Exact TreeSHAP contributions (n, n_features + 1); the last column is the base value.

        Small batches go to LightGBM's ``pred_contrib``; from ``FAST_REASONS_MIN_ROWS`` leads on, or
        whatever the batch once :meth:`compile_reasons` has run, the table-driven exact TreeSHAP of
        :mod:`leadtemp.core.treeshap` (same values to ~1e-15, several times faster; compiled once per
        scorer). ``margin``: the booster's raw prediction of these rows when the caller has it (the
        fast path checks that every row's values add up to it); ``matrix``: their :func:`feature_matrix`, if the
        caller has it.
        """
        if self._fast is None and len(features) < FAST_REASONS_MIN_ROWS:
            return self.booster.predict(features[self.spec.columns], pred_contrib=True)
        self.compile_reasons()
        return self._fast(feature_matrix(features, self.spec) if matrix is None else matrix, margin)

    def compile_reasons(self) -> None:
        """Compile the fast TreeSHAP tables now (a few seconds, once); from then on every batch uses them.

        A long-lived process (``leadtemp serve``) pays this at start instead of LightGBM's ``pred_contrib``
        on every request, which costs most of a request's time.
        """
        if self._fast is None:
            from leadtemp.core.treeshap import ExactContributions

            self._fast = ExactContributions(self.booster)

    def eligible(self, leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp,
                 include_lost: bool = False, ledger: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int]:
        """The leads to score at ``as_of`` and how many eligible ones were lost then (left out unless ``include_lost``).

        Eligible: created before ``as_of``, not converted before it and not lost at it (closed as lost and
        not reopened since, by the model's loss rules and the leads' ``lost_at``:
        :func:`~leadtemp.core.snapshots.scorable_leads`); for a model trained on a table with final
        labels, every lead without an outcome yet (and, when the table has time, created before ``as_of``).
        A model with referral features gets them here, as of ``as_of``, from ``ledger``
        (:func:`~leadtemp.core.referrals.referral_ledger` of the whole table; default: ``leads`` is the whole table).
        """
        as_of = pd.Timestamp(as_of)
        if self.spec.mode == "events":
            found, lost = scorable_leads(leads, interactions, as_of, self.spec.loss_rules, include_lost)
            if self.spec.referral_columns:
                found = with_referrals(found, referral_ledger(leads) if ledger is None else ledger, as_of)
            return found, lost
        return open_leads(leads, as_of), 0

    def features_of(self, eligible: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
        """Features of leads already found eligible by :meth:`eligible`, aligned with them."""
        as_of = pd.Timestamp(as_of)
        if self.spec.mode == "events":
            return features_as_of(eligible, prepare_events(interactions, self.spec, sort=False), as_of, self.spec)
        return attribute_features(eligible, as_of, self.spec)

    def features(self, leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp,
                 include_lost: bool = False, ledger: pd.DataFrame | None = None) -> pd.DataFrame:
        """Features of the leads eligible at ``as_of`` (see :meth:`eligible`; ``ledger`` when ``leads`` are a few)."""
        eligible, _ = self.eligible(leads, interactions, as_of, include_lost, ledger)
        return self.features_of(eligible, interactions, as_of)

    def score_rows(self, features: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Unranked scores of a feature frame: the output columns without ``rank``, plus ``margin``.

        Every value of a row depends on that lead alone, so batches can be scored apart and ranked
        together afterwards (:func:`rank_order`).
        """
        X = self._matrix(features)  # one matrix for the margin and the reasons: LightGBM recodes no frame
        margin = self.margin(features) if X is None else self.booster.predict(X, raw_score=True)
        p = self.calibrator(margin)
        out = pd.DataFrame({
            LEAD_ID: features[LEAD_ID].to_numpy(),
            "as_of": features["as_of"].to_numpy(),
            "probability": p,
            "score": score_from_probability(p),
            "bucket": self.buckets.assign(p),
        })
        if self.timing_days:
            when = timing(self.horizon_models, self.horizon_days, self.timing_days, features, self.spec, p, X)
            for column in when.columns:
                out[column] = when[column].to_numpy()
        if reasons and len(out):
            contrib = self.contributions(features, margin, X)
            words = top_reasons(features, group_contributions(contrib, self.spec), self.spec, self.labels,
                                rates=self.category_rates)
            for name, column in zip(REASON_COLUMNS, words):
                out[name] = column
        else:
            for name in REASON_COLUMNS:
                out[name] = ""
        out["model_version"] = str(self.meta.get("model_version", ""))
        out["run_id"] = str(self.meta.get("run_id") or "")
        out["margin"] = margin
        return out

    def score_features(self, features: pd.DataFrame, reasons: bool = True,
                       lost_since: np.ndarray | None = None) -> pd.DataFrame:
        """Scores, buckets, ranks and reasons for a feature frame (one as_of).

        ``lost_since`` (aligned with ``features``): add the column that marks leads scored although lost.
        """
        out = self.score_rows(features, reasons)
        out["rank"] = rank_order(out)
        columns = self.output_columns()
        if lost_since is not None:
            out[LOST_SINCE] = lost_since
            columns = columns + [LOST_SINCE]
        return out.sort_values("rank", kind="stable").reset_index(drop=True)[columns]

    def score(self, leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp,
              reasons: bool = True, include_lost: bool = False) -> pd.DataFrame:
        """Score the leads eligible at ``as_of``; ``include_lost``: the lost ones too, marked by ``lost_since``."""
        eligible, _ = self.eligible(leads, interactions, as_of, include_lost)
        lost_since = eligible[LOST_SINCE].to_numpy() if include_lost and LOST_SINCE in eligible.columns else None
        if include_lost and lost_since is None:  # a model of a label table: nothing is ever lost
            lost_since = np.full(len(eligible), np.datetime64("NaT", "ns"))
        return self.score_features(self.features_of(eligible, interactions, as_of), reasons, lost_since)

    # -- temperature over time ---------------------------------------------------------------------
    def changes(self, now: pd.DataFrame, before: pd.DataFrame, steady_within: float) -> pd.DataFrame:
        """How each lead of ``now`` (features at the later date) moved since ``before`` (features of leads at the
        earlier date; a lead absent there is ``new``), by this one model: ``previous_probability``,
        ``previous_bucket``, ``trend`` and ``what_changed``, aligned with ``now``.

        ``trend``: ``warming`` or ``cooling`` when the bucket moved, or within a bucket when the probability moved
        by more than ``steady_within``; else ``steady``. ``what_changed`` words the groups whose TreeSHAP
        contributions moved most; with one model the base value is the same at both dates, so the moves of all
        groups add up exactly to the move of the margin (:meth:`group_moves`).
        """
        ids = now[LEAD_ID].to_numpy()
        out = pd.DataFrame({PREVIOUS_PROBABILITY: np.full(len(now), np.nan), PREVIOUS_BUCKET: "", TREND: "new",
                            WHAT_CHANGED: ""})
        before = before.loc[before[LEAD_ID].isin(pd.Index(ids))].drop_duplicates(LEAD_ID)
        if before.empty:
            return out
        rows = pd.Index(ids).get_indexer(before[LEAD_ID].to_numpy())
        later = now.iloc[rows].reset_index(drop=True)
        earlier = before.reset_index(drop=True)
        delta, m_now, m_before = self.group_moves(later, earlier)
        p_now, p_before = self.calibrator(m_now), self.calibrator(m_before)
        rank = {b: i for i, b in enumerate(reversed(BUCKETS))}  # cold 0, warm 1, hot 2
        b_now, b_before = self.buckets.assign(p_now), self.buckets.assign(p_before)
        step = np.array([rank[b] for b in b_now]) - np.array([rank[b] for b in b_before])
        moved = p_now - p_before
        trend = np.where(step > 0, "warming", np.where(step < 0, "cooling", np.where(
            moved > steady_within, "warming", np.where(moved < -steady_within, "cooling", "steady"))))
        out.loc[rows, PREVIOUS_PROBABILITY] = p_before
        out.loc[rows, PREVIOUS_BUCKET] = b_before
        out.loc[rows, TREND] = trend
        out.loc[rows, WHAT_CHANGED] = what_changed(later, earlier, delta, self.spec, self.labels,
                                                   rates=self.category_rates)
        return out

    def changes_since(self, now: pd.DataFrame, leads: pd.DataFrame, interactions: pd.DataFrame, since: pd.Timestamp,
                      steady_within: float, ledger: pd.DataFrame | None = None) -> pd.DataFrame:
        """:meth:`changes` of the leads of ``now`` since ``since``: those of ``leads`` scorable then, with the features
        they had then (``interactions``: at least theirs; only what came before ``since`` counts)."""
        if self.spec.referral_columns and ledger is None:
            ledger = referral_ledger(leads)
        then = leads.loc[leads[LEAD_ID].isin(pd.Index(now[LEAD_ID]))].drop(columns=[LOST_SINCE], errors="ignore")
        then, _ = self.eligible(then, interactions, since, ledger=ledger)
        return self.changes(now.reset_index(drop=True), self.features_of(then, interactions, since), steady_within)

    def group_moves(self, later: pd.DataFrame, earlier: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Per group, the move of its contribution from ``earlier`` to ``later`` (same leads, same order), and the two
        margins. Exact: the moves of a row add up to its margin's move (same model, same base value)."""
        m_now, m_before = self.margin(later), self.margin(earlier)
        g_now = group_contributions(self.contributions(later, m_now), self.spec)
        g_before = group_contributions(self.contributions(earlier, m_before), self.spec)
        return g_now - g_before, m_now, m_before

    # -- storing ---------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """SHA-256 of everything that decides a score: booster, spec, calibrator, cut-offs, horizon, labels, rates.

        Two scorers with the same fingerprint give the same rows, whatever their version number or run.
        """
        digest = hashlib.sha256(self.booster.model_to_string().encode())
        for days in sorted(self.horizon_models):
            digest.update(self.horizon_models[days].booster.model_to_string().encode())
        digest.update(json.dumps(self._settings(), sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def _settings(self) -> dict:
        settings = {"spec": self.spec.to_dict(), "calibrator": self.calibrator.to_dict(), "buckets": vars(self.buckets),
                    "horizon_days": self.horizon_days, "labels": self.labels}
        if self.category_rates:  # absent when empty: a model saved before the rates keeps its fingerprint
            settings["category_rates"] = self.category_rates
        if self.timing_days:  # likewise the horizons (their boosters' hashes are added on save)
            settings["when"] = {"horizons_days": list(self.timing_days), "models": {
                str(d): {"calibrator": m.calibrator.to_dict()} for d, m in sorted(self.horizon_models.items())}}
        return settings

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        booster = self.booster.model_to_string().encode()
        (folder / BOOSTER_FILE).write_bytes(booster)
        settings = self._settings()
        for days, model in self.horizon_models.items():
            text = model.booster.model_to_string().encode()
            name = horizon_booster_file(days)
            (folder / name).write_bytes(text)
            settings["when"]["models"][str(days)]["booster"] = {"file": name, "sha256": hashlib.sha256(text).hexdigest(),
                                                                "bytes": len(text)}
        (folder / "scorer.json").write_text(json.dumps({
            "format_version": (EXTENDED_FORMAT if self.spec.referral_columns or self.spec.funnel_features
                               else PLAIN_FORMAT),
            "booster": {"file": BOOSTER_FILE, "sha256": hashlib.sha256(booster).hexdigest(), "bytes": len(booster)},
            **settings,
            "meta": self.meta,
        }, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LeadScorer:
        """Read a saved scorer; a missing or damaged file is a ConfigError naming it, never a crash in LightGBM.

        Folders saved before the booster's hash was recorded still load (with a check of its shape only).
        """
        import lightgbm as lgb

        folder = Path(folder)
        raw = _read_json(folder / "scorer.json")
        if raw.get("format_version", PLAIN_FORMAT) > FORMAT_VERSION:
            raise ConfigError(f"{folder / 'scorer.json'}: format version {raw['format_version']} is newer than this "
                              f"leadtemp reads ({FORMAT_VERSION}); upgrade leadtemp")
        text = _read_booster(folder / BOOSTER_FILE, raw.get("booster"))
        try:
            cal = raw["calibrator"]
            parts = dict(
                spec=FeatureSpec.from_dict(raw["spec"]),
                calibrator=_calibrator(cal),
                buckets=BucketCutoffs(**raw["buckets"]),
                horizon_days=int(raw["horizon_days"]),
                labels=raw.get("labels", {}),
                meta=raw.get("meta", {}),
                category_rates=_read_rates(raw.get("category_rates", {})),
            )
            when = raw.get("when") or {}
            parts["timing_days"] = tuple(int(d) for d in when.get("horizons_days", ()))
            horizons = {int(d): (_calibrator(m["calibrator"]), m["booster"]) for d, m in when.get("models", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{folder / 'scorer.json'}: damaged ({type(exc).__name__}: {exc}); {REEXPORT}") from None
        if missing := [d for d in parts["timing_days"] if d != parts["horizon_days"] and d not in horizons]:
            raise ConfigError(f"{folder / 'scorer.json'}: damaged (no booster for the horizons {missing}); {REEXPORT}")
        try:
            booster = lgb.Booster(model_str=text)
            parts["horizon_models"] = {
                d: HorizonModel(d, lgb.Booster(model_str=_read_booster(folder / horizon_booster_file(d), recorded)), cal)
                for d, (cal, recorded) in horizons.items()}
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"{folder}: a booster file is damaged (LightGBM: {exc}); {REEXPORT}") from None
        return cls(booster=booster, **parts)


def horizon_booster_file(days: int) -> str:
    return f"booster_{days}d.txt"


def _calibrator(cal: dict) -> Calibrator:
    return Calibrator(cal["method"], tuple(cal["knots_x"]), tuple(cal["knots_y"]), cal["slope"], cal["intercept"],
                      cal.get("ceiling"))


def _read_rates(raw: dict) -> dict[str, dict[str, float | None]]:
    """``category_rates`` of scorer.json (absent in models saved before them: {}); a bad one is a TypeError/ValueError."""
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise TypeError("category_rates is not a mapping of columns to categories")
    return {str(c): {str(k): None if r is None else float(r) for k, r in v.items()} for c, v in raw.items()}


def _read_json(path: Path) -> dict:
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; {REEXPORT}") from None
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{path}: damaged (not JSON); {REEXPORT}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: damaged (not a JSON object); {REEXPORT}")
    return raw


def _read_booster(path: Path, recorded: dict | None) -> str:
    """The booster's text, checked against the hash and size recorded at save (when there is one).

    LightGBM aborts the whole process on some truncated files, so nothing unchecked reaches it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; {REEXPORT}") from None
    if isinstance(recorded, dict) and "sha256" in recorded:
        size = recorded.get("bytes", len(data))
        if len(data) != size or hashlib.sha256(data).hexdigest() != recorded["sha256"]:
            sizes = f": {len(data):,} of {size:,} bytes" if len(data) != size else ""
            raise ConfigError(f"{path}: damaged (sha256 differs from scorer.json{sizes}); {REEXPORT}")
    # Without a recorded hash (older folders): LightGBM's python package always ends a saved model
    # with its pandas_categorical line, after the trees; a cut file lacks one or the other.
    lines = data.rstrip().rsplit(b"\n", 1)
    if b"\nend of trees\n" not in data or not lines[-1].startswith(b"pandas_categorical:"):
        raise ConfigError(f"{path}: damaged (incomplete LightGBM model); {REEXPORT}")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: damaged (not text); {REEXPORT}") from None
