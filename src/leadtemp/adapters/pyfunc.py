"""The MLflow pyfunc that packages a :class:`~leadtemp.modelling.scorer.LeadScorer`.

Input: one row per lead (``lead_id``, ``created_at``, optional ``converted_at``, the attribute
columns) with its interactions nested in an ``interactions`` column (a list of
``{timestamp, type, direction, value}``), and the as-of date as the predict parameter ``as_of``.
Output: the scoring columns of :data:`~leadtemp.modelling.scorer.OUTPUT_COLUMNS` for the leads eligible
at ``as_of``, ranked.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from leadtemp.core.config import LeadColumns
from leadtemp.core.errors import ConfigError
from leadtemp.core.schema import CREATED_AT, validate_interactions, validate_leads
from leadtemp.modelling.scorer import OUTPUT_COLUMNS, REEXPORT, LeadScorer

SCORER_ARTIFACT = "scorer"
MLMODEL = "MLmodel"
NESTED = "interactions"


class LeadTempModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.scorer = LeadScorer.load(context.artifacts[SCORER_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        as_of = (params or {}).get("as_of")
        if not as_of:
            raise ValueError("pass the scoring date as params={'as_of': 'YYYY-MM-DD'}")
        leads, interactions = unnest(model_input, self.scorer)
        return self.scorer.score(leads, interactions, pd.Timestamp(as_of))


def input_roles(scorer: LeadScorer) -> LeadColumns:
    """The pyfunc input uses leadtemp's own column names; label tables have no conversion time."""
    spec = scorer.spec
    if spec.mode == "events":
        return LeadColumns()
    return LeadColumns(created_at=CREATED_AT if spec.timed else None, converted_at=None, label=None)


def unnest(model_input: pd.DataFrame, scorer: LeadScorer) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the nested pyfunc input into validated leads and interactions tables."""
    spec = scorer.spec
    leads = validate_leads(model_input.drop(columns=[NESTED], errors="ignore"), "model input",
                           spec.categorical, spec.numeric, columns=input_roles(scorer))
    nested = model_input[NESTED] if NESTED in model_input.columns else pd.Series([[]] * len(model_input))
    ids = np.repeat(leads["lead_id"].to_numpy(), [len(x) if x is not None else 0 for x in nested])
    rows = [event for events in nested if events is not None for event in events]
    events = pd.DataFrame.from_records(rows, columns=["timestamp", "type", "direction", "value"])
    events.insert(0, "lead_id", ids)
    return leads, validate_interactions(events, "model input interactions", leads["lead_id"])


def nest(leads: pd.DataFrame, interactions: pd.DataFrame | None, scorer: LeadScorer) -> pd.DataFrame:
    """The pyfunc input for ``leads``: the signature's columns and types, interactions nested.

    A model trained on a label table takes no interactions (pass None).
    """
    out = leads[input_columns(scorer)].astype({c: float for c in scorer.spec.numeric})
    if scorer.spec.mode != "events":
        return out
    records = interactions.assign(timestamp=interactions["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    fields = ["timestamp", "type", "direction"] + (["value"] if "value" in records.columns else [])
    grouped = {lead: g[fields].to_dict("records") for lead, g in records.groupby("lead_id", sort=False)}
    out[NESTED] = [grouped.get(lead, []) for lead in leads["lead_id"]]
    return out


def signature(scorer: LeadScorer):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

    event = Object([Property("timestamp", "string"), Property("type", "string"),
                    Property("direction", "string"), Property("value", "double", required=False)])
    events = scorer.spec.mode == "events"
    inputs = [ColSpec("string", "lead_id")]
    if scorer.spec.timed:
        inputs += [ColSpec("datetime", "created_at", required=events)]
    if events:
        inputs += [ColSpec("datetime", "converted_at", required=False)]
    inputs += [ColSpec("string", c, required=False) for c in scorer.spec.categorical]
    inputs += [ColSpec("double", c, required=False) for c in scorer.spec.numeric]
    if events:
        inputs += [ColSpec(Array(event), NESTED, required=False)]
    kinds = {"probability": "double", "score": "long", "rank": "long", "as_of": "datetime"}
    outputs = [ColSpec(kinds.get(c, "string"), c) for c in OUTPUT_COLUMNS]
    return ModelSignature(Schema(inputs), Schema(outputs), ParamSchema([ParamSpec("as_of", "string", "")]))


def input_columns(scorer: LeadScorer) -> list[str]:
    """Columns of the pyfunc input: never the excluded (personal) columns."""
    spec = scorer.spec
    roles = ["lead_id", "created_at", "converted_at"] if spec.mode == "events" else (
        ["lead_id", "created_at"] if spec.timed else ["lead_id"])
    return [*roles, *spec.categorical, *spec.numeric]


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in
            ("mlflow", "lightgbm", "pandas", "numpy", "pyarrow", "pyyaml", "scikit-learn", "scipy", "numba")]


def code_path() -> str:
    """The leadtemp package itself travels with the model, so it loads where leadtemp isn't installed."""
    return str(Path(__file__).parents[1])


def pyfunc_arguments(scorer: LeadScorer, scorer_dir: str | Path, example) -> dict:
    """What every log_model / save_model of a scorer passes: one place for model, schema and env."""
    return {
        "python_model": LeadTempModel(), "artifacts": {SCORER_ARTIFACT: str(scorer_dir)},
        "signature": signature(scorer), "input_example": example,
        "pip_requirements": pip_requirements(), "code_paths": [code_path()],
    }


def load_scorer(model: str) -> tuple[LeadScorer, str]:
    """A scorer from a model URI (``models:/name@alias``, ``runs:/…``) or an exported folder.

    Returns the scorer and its model version ("3" for registry version 3, else the run id). A missing
    or damaged model is a :class:`~leadtemp.core.errors.ConfigError` naming the file (one line).
    """
    loaded = _load_pyfunc(model)
    scorer = loaded.unwrap_python_model().scorer
    version = str(scorer.meta.get("model_version") or "")
    if not version and model.startswith("models:/"):
        from mlflow import MlflowClient

        name, _, ref = model.removeprefix("models:/").partition("@")
        client = MlflowClient()
        if ref:
            version = client.get_model_version_by_alias(name, ref).version
        else:
            version = model.rstrip("/").rsplit("/", 1)[-1]
    version = version or (loaded.metadata.run_id or "")
    scorer.meta["model_version"] = version
    return scorer, version


def _load_pyfunc(model: str):
    """``mlflow.pyfunc.load_model`` with its ways of failing on a damaged folder turned into one-line errors."""
    import pickle
    from urllib.parse import urlparse

    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    local = len(urlparse(model).scheme) <= 1  # a path (or a Windows drive letter), not a URI
    if local:
        folder = Path(model)
        if not folder.exists():
            raise ConfigError(f"{model}: no such model folder; give an exported folder such as models/champion "
                              f"or a URI such as models:/leadtemp@champion")
        _check_mlmodel(folder / MLMODEL)
    where = model if local else f"model {model}"
    try:
        return mlflow.pyfunc.load_model(model)
    except ConfigError as exc:  # from LeadScorer.load: names the file, under the folder as the user gave it
        if local:
            raise ConfigError(str(exc).replace(str(Path(model).resolve()), model.rstrip("/\\"), 1)) from None
        raise ConfigError(f"{where}: {exc}") from None
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ConfigError(f"{Path(model) / 'python_model.pkl' if local else where}: damaged ({exc}); "
                          f"{REEXPORT}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: damaged MLmodel file ({_first_line(exc)}); {REEXPORT}") from None
    except FileNotFoundError as exc:
        if local and exc.filename:
            raise ConfigError(f"{exc.filename}: missing; {REEXPORT}") from None
        raise ConfigError(f"cannot load {where}: {_first_line(exc)}") from None
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"cannot load {where}: {_first_line(exc)}") from None


def _check_mlmodel(path: Path) -> None:
    """An exported folder's MLmodel: present, YAML and a python_function model (MLflow raises other errors)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing, so {path.parent} is not an exported model; give a folder such as "
                          f"models/champion, or a URI such as models:/leadtemp@champion") from None
    except (UnicodeDecodeError, yaml.YAMLError):
        raise ConfigError(f"{path}: damaged (not YAML); {REEXPORT}") from None
    if not isinstance(raw, dict) or "python_function" not in (raw.get("flavors") or {}):
        raise ConfigError(f"{path}: damaged (no python_function model in it); {REEXPORT}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
