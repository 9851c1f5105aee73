"""Typed, frozen settings read from params.yaml. Nothing happens on import."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """params.yaml is missing, malformed or has a value out of range."""


@dataclass(frozen=True)
class Data:
    leads: str = "data/sim/leads.parquet"
    interactions: str | None = "data/sim/interactions.parquet"
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshots:
    horizon_days: int = 90
    frequency: str = "MS"
    observed_until: str | None = None


@dataclass(frozen=True)
class Splits:
    test_cutoffs: int = 3
    calibration_cutoffs: int = 3
    validation_cutoffs: int = 2


@dataclass(frozen=True)
class Features:
    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    just_active_days: int = 7
    max_channels: int = 40
    thermometer: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    num_leaves: int = 31
    learning_rate: float = 0.05
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    lambda_l2: float = 1.0
    seed: int = 42
    num_threads: int = 2


@dataclass(frozen=True)
class Calibration:
    method: str = "isotonic"


@dataclass(frozen=True)
class Buckets:
    method: str = "share"
    hot_share: float = 0.10
    warm_share: float = 0.30
    hot_probability: float = 0.50
    warm_probability: float = 0.15


@dataclass(frozen=True)
class Tracking:
    experiment: str = "leadtemp"
    registered_model: str = "leadtemp"
    export_dir: str = "models"


@dataclass(frozen=True)
class Simulate:
    leads: int = 20000
    seed: int = 7
    start: str = "2023-01-01"
    months: int = 30


@dataclass(frozen=True)
class Params:
    data: Data = field(default_factory=Data)
    snapshots: Snapshots = field(default_factory=Snapshots)
    splits: Splits = field(default_factory=Splits)
    features: Features = field(default_factory=Features)
    model: Model = field(default_factory=Model)
    calibration: Calibration = field(default_factory=Calibration)
    buckets: Buckets = field(default_factory=Buckets)
    mlflow: Tracking = field(default_factory=Tracking)
    simulate: Simulate = field(default_factory=Simulate)

    def replace(self, **sections: Any) -> Params:
        """A copy with some sections' fields replaced: ``replace(data={"leads": "x.csv"})``."""
        updated = {
            name: dataclasses.replace(getattr(self, name), **changes)
            for name, changes in sections.items()
        }
        return dataclasses.replace(self, **updated)

    def flat(self) -> dict[str, Any]:
        """Flattened ``section.key`` dict for MLflow params (lists and dicts as text)."""
        out: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            for key, value in dataclasses.asdict(getattr(self, section.name)).items():
                out[f"{section.name}.{key}"] = value if isinstance(value, (int, float, str)) or value is None else str(value)
        return out

    def validate(self) -> Params:
        problems = []
        if self.snapshots.horizon_days <= 0:
            problems.append("snapshots.horizon_days must be > 0")
        if any(w <= 0 for w in self.features.windows_days) or not self.features.windows_days:
            problems.append("features.windows_days must be positive numbers of days")
        if self.features.half_life_days <= 0:
            problems.append("features.half_life_days must be > 0")
        if self.calibration.method not in {"isotonic", "sigmoid"}:
            problems.append(f"calibration.method must be isotonic or sigmoid, not {self.calibration.method!r}")
        b = self.buckets
        if b.method not in {"share", "probability"}:
            problems.append(f"buckets.method must be share or probability, not {b.method!r}")
        if not (0 < b.hot_share and 0 <= b.warm_share and b.hot_share + b.warm_share < 1):
            problems.append("buckets: need 0 < hot_share and hot_share + warm_share < 1")
        if not (0 < b.warm_probability <= b.hot_probability < 1):
            problems.append("buckets: need 0 < warm_probability <= hot_probability < 1")
        s = self.splits
        if min(s.test_cutoffs, s.calibration_cutoffs, s.validation_cutoffs) < 1:
            problems.append("splits: every slice needs at least 1 cutoff")
        d = self.data
        roles = [*d.categorical, *d.numeric, *d.excluded]
        if dupes := sorted({c for c in roles if roles.count(c) > 1}):
            problems.append(f"data: columns listed in more than one role: {dupes}")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        if unknown := sorted(set(value) - names):
            raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
        return tp(**{k: _coerce(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)):
        return str(value)
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def params_from_dict(raw: dict[str, Any] | None, where: str = "params") -> Params:
    return _coerce(Params, raw or {}, where).validate()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check a params file; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (pass --params FILE)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return params_from_dict(raw, where=str(path))
