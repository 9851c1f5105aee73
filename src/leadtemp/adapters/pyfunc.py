"""The MLflow pyfunc that packages a :class:`~leadtemp.modelling.scorer.LeadScorer`, and its request contract.

Input: one row per lead under leadtemp's column names (``lead_id``, ``created_at``, the attribute
columns, and for a model of events its interactions nested in an ``interactions`` column: a list of
``{timestamp, type, direction[, value]}``, ``[]`` for a lead with none), and the scoring date as the
predict parameter ``as_of``. Output: one row per lead of the request, in its order (:data:`ANSWER_COLUMNS`):
scored, or with a ``status`` saying why not. The contract is checked here, by leadtemp, wherever the
model runs (``leadtemp serve``, ``mlflow models serve``, ``mlflow.pyfunc.load_model(...).predict``):
an anticipated error is an ``MlflowException`` with ``INVALID_PARAMETER_VALUE`` (HTTP 400) whose
message is one line. docs/serving.md describes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from leadtemp.core.config import InteractionColumns, LeadColumns
from leadtemp.core.errors import ConfigError, LeadtempError, SchemaError
from leadtemp.core.schema import (
    CONVERTED_AT,
    CREATED_AT,
    ISO,
    LEAD_ID,
    LOST_AT,
    REFERRED_BY,
    DateRules,
    RowProblems,
    validate_interactions,
    validate_leads,
)
from leadtemp.modelling.horizons import timing_columns
from leadtemp.modelling.partition import REJECT, ROW, canonical_rows, funnel_columns, row_reasons, score_partition
from leadtemp.modelling.scorer import REASON_COLUMNS, REEXPORT, LeadScorer, rank_order
from leadtemp.modelling.unseen import Unseen, period_warning

SCORER_ARTIFACT = "scorer"
MLMODEL = "MLmodel"
NESTED = "interactions"
EVENT_FIELDS = ("timestamp", "type", "direction", "value")
MAX_LEADS = 10_000  # per request: one request stays a few seconds; bigger batches belong to `leadtemp score`
STATUS = "status"
SCORED, CONVERTED, NOT_YET_CREATED, LOST, REJECTED = "scored", "converted", "not_yet_created", "lost", "rejected"
ANSWER_COLUMNS = ["lead_id", "as_of", STATUS, "probability", "score", "bucket", "rank", *REASON_COLUMNS,
                  "model_version", "run_id"]
SOURCE = "request"


def answer_columns(scorer: LeadScorer) -> list[str]:
    """ANSWER_COLUMNS with the model's p_<h>d and expected_days after the bucket (none for a model without them)."""
    at = ANSWER_COLUMNS.index("bucket") + 1
    return ANSWER_COLUMNS[:at] + timing_columns(scorer.timing_days) + ANSWER_COLUMNS[at:]


class LeadTempModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.scorer = LeadScorer.load(context.artifacts[SCORER_ARTIFACT])
        run_id = self.scorer.meta.get("run_id") or _run_id_of(Path(context.artifacts[SCORER_ARTIFACT]).parents[1])
        self.scorer.meta.setdefault("run_id", run_id or "")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Every lead of the request, scored or with its status; ``attrs["warnings"]`` says what was unseen."""
        from mlflow.exceptions import MlflowException

        if not self.scorer.meta.get("model_version"):  # `mlflow models serve` of a registered model: ask the registry
            run_id = self.scorer.meta.get("run_id", "")
            self.scorer.meta["model_version"] = _registry_version(run_id) or run_id
        try:
            return answer(self.scorer, model_input, params or {})
        except LeadtempError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None


# -- the request contract -------------------------------------------------------------------------

@dataclass(frozen=True)
class RequestColumns:
    """The columns of a request: those the model needs, those it reads when given, and status-only ones."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    status_only: tuple[str, ...]   # never features: they only say a lead is no longer open (never in the signature)

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional + self.status_only


def request_columns(scorer: LeadScorer) -> RequestColumns:
    spec = scorer.spec
    events = spec.mode == "events"
    required = [LEAD_ID] + ([CREATED_AT] if spec.timed else []) + ([NESTED] if events else [])
    optional = [*spec.categorical, *spec.numeric] + ([LOST_AT] if events and spec.lifecycle else [])
    optional += [REFERRED_BY] if spec.referral_columns else []  # the request's leads are the whole table it sees
    return RequestColumns(tuple(required), tuple(optional), (CONVERTED_AT,) if events else ())


def parse_request_as_of(params: dict, scorer: LeadScorer) -> pd.Timestamp:
    """The ``as_of`` parameter: an ISO 8601 date, required for a model of events (else today)."""
    value = params.get("as_of")
    if value is None or (isinstance(value, str) and not value.strip()):
        if scorer.spec.mode == "events":
            raise SchemaError('params.as_of is missing: give the scoring date, e.g. "params": {"as_of": "2025-07-01"}')
        return pd.Timestamp.today().normalize()
    try:
        when = pd.to_datetime(str(value).strip(), format="ISO8601", utc=True)
    except (ValueError, TypeError):
        when = pd.NaT
    if pd.isna(when):
        raise SchemaError(f"params.as_of {value!r} is not a date: use YYYY-MM-DD (ISO 8601)")
    when = when.tz_convert("UTC").tz_localize(None)
    window = DateRules()
    if not pd.Timestamp(window.earliest) <= when < pd.Timestamp(window.latest):
        raise SchemaError(f"params.as_of {value!r} is outside {window.earliest} .. {window.latest}")
    return when.as_unit("ns")


def check_request(frame: pd.DataFrame, scorer: LeadScorer) -> None:
    """The request's shape, before any row is read: size, columns, every lead's interactions a list."""
    if len(frame) > MAX_LEADS:
        raise SchemaError(f"the request holds {len(frame):,} leads; the limit is {MAX_LEADS:,} per request: "
                          "split it, or score files and tables with `leadtemp score`")
    if len(frame) == 0:
        raise SchemaError("the request holds no leads")
    cols = request_columns(scorer)
    names = [str(c) for c in frame.columns]
    if missing := [c for c in cols.required if c not in names]:
        hint = "; give [] for a lead without interactions" if NESTED in missing else ""
        raise SchemaError(f"missing column(s) {missing}: this model needs {list(cols.required)}{hint}")
    if unknown := [c for c in names if c not in cols.known]:
        raise SchemaError(f"column(s) the model does not read: {unknown}; it reads {list(cols.required + cols.optional)}"
                          + (f" and {list(cols.status_only)}" if cols.status_only else ""))
    if NESTED in names:
        nested = frame[NESTED].to_numpy(dtype=object)
        bad = [i for i, events in enumerate(nested) if not isinstance(events, (list, tuple, np.ndarray))]
        if bad:
            raise SchemaError(f"{NESTED}: {len(bad)} lead(s) without a list of interactions, e.g. row {bad[0] + 1} "
                              f"(lead {_id_at(frame, bad[0])!r}); give [] for a lead without interactions")


def _id_at(frame: pd.DataFrame, i: int) -> object:
    return frame[LEAD_ID].iloc[i] if LEAD_ID in frame.columns else None


def event_fields(scorer: LeadScorer) -> tuple[str, ...]:
    """The fields of a request's interaction: EVENT_FIELDS, and for a funnel model its columns (stage, outcome,
    lead_rating, task_rating; docs/own-data.md#funnel-stages-and-task-outcomes)."""
    return EVENT_FIELDS + funnel_columns(scorer)


def _shape(fields: tuple[str, ...]) -> str:
    return "{" + ", ".join(EVENT_FIELDS[:3]) + "".join(f"[, {f}]" for f in fields[3:]) + "}"


def flat_events(frame: pd.DataFrame, fields: tuple[str, ...] = EVENT_FIELDS) -> pd.DataFrame:
    """The nested interactions as one table: lead_id, the event fields, ``_row`` (the event's place in its lead, from 1).

    Read field by field: one list per field, typed by Arrow in C++ (text as ``str``, numbers as float); a
    field of mixed JSON types stays as objects for validation to word its bad values. Inferring a struct
    from every interaction object at once cost 4x as long.
    """
    import pyarrow as pa

    nested = frame[NESTED].to_numpy(dtype=object)
    counts = np.fromiter((len(x) for x in nested), dtype=np.int64, count=len(nested))
    rows = [event for events in nested for event in events]
    if not all(type(e) is dict for e in rows):  # noqa: E721 — exactly what json.loads makes; 10x the isinstance loop
        bad = next(i for i, e in enumerate(rows) if not isinstance(e, dict))
        lead = int(np.searchsorted(np.cumsum(counts), bad, side="right"))
        raise SchemaError(f"{NESTED}: row {lead + 1} (lead {_id_at(frame, lead)!r}): an interaction is not an object "
                          f"{_shape(fields)}")
    given = set().union(*rows)
    if unknown := sorted(given - set(fields)):
        raise SchemaError(f"{NESTED}: field(s) the model does not read: {unknown}; an interaction is "
                          f"{_shape(fields)}")
    columns = {}
    for field in (f for f in fields if f in given):
        values = [e.get(field) for e in rows]
        try:
            columns[field] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: validation words each bad value
            columns[field] = None
    lead_ids = pa.array(frame[LEAD_ID].astype(str)).take(np.repeat(np.arange(len(frame)), counts))
    events = pa.table({LEAD_ID: lead_ids, **{f: a for f, a in columns.items() if a is not None}}).to_pandas()
    for field, values in columns.items():
        if values is None:
            events[field] = pd.Series([e.get(field) for e in rows], dtype=object)
    events = events.reindex(columns=[LEAD_ID, *(f for f in fields if f in given or f in EVENT_FIELDS[:3])])
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    events[ROW] = np.arange(len(rows), dtype=np.int64) - starts + 1
    return events


def _iso_rules(*sources: tuple[str, tuple[str, ...]]) -> DateRules:
    """Request timestamps are ISO 8601 only: a handful of leads cannot tell day from month."""
    return DateRules(settled={(source, c): ISO for source, columns in sources for c in columns})


def answer(scorer: LeadScorer, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Every lead of a request, in its order: scored, or ``status`` converted / not_yet_created / lost / rejected: why.

    Raises a :class:`~leadtemp.core.errors.SchemaError` (one line) for a request that breaks the contract.
    ``params``: ``as_of`` (see :func:`parse_request_as_of`), ``reasons`` (default true).
    """
    spec = scorer.spec
    as_of = parse_request_as_of(params, scorer)
    reasons = params.get("reasons", True)
    if not isinstance(reasons, (bool, np.bool_)):
        raise SchemaError(f"params.reasons {reasons!r}: use true or false")
    check_request(frame, scorer)
    frame = frame.reset_index(drop=True)
    cols = request_columns(scorer)
    absent = [c for c in (*spec.categorical, *spec.numeric) if c not in frame.columns]
    leads_in = frame.drop(columns=[NESTED], errors="ignore").assign(**{c: None for c in absent})
    if spec.referral_columns and REFERRED_BY not in leads_in.columns:  # nobody named: not referred
        leads_in = leads_in.assign(**{REFERRED_BY: None})
    roles = LeadColumns(created_at=CREATED_AT if spec.timed else None,
                        converted_at=CONVERTED_AT if CONVERTED_AT in cols.status_only else None, label=None,
                        lost_at=LOST_AT if LOST_AT in frame.columns else None,
                        referred_by=REFERRED_BY if spec.referral_columns else None)
    problems = RowProblems(len(frame))
    leads = validate_leads(leads_in, SOURCE, spec.categorical, spec.numeric, columns=roles, problems=problems,
                           dates=_iso_rules((SOURCE, (CREATED_AT, CONVERTED_AT, LOST_AT))))
    canonical = canonical_rows(leads, problems, scorer, 1)
    if spec.mode == "events":
        raw = flat_events(frame, event_fields(scorer))
        event_problems = RowProblems(len(raw))
        funnel = [c for c in funnel_columns(scorer) if c in raw.columns]
        stages = {spec.stage_type: (*spec.vocabulary[spec.stage_type].order, *spec.vocabulary[spec.stage_type].terminal)
                  } if spec.stages else None
        events = validate_interactions(raw, f"{SOURCE} {NESTED}", None, InteractionColumns(**{c: c for c in funnel}),
                                       problems=event_problems, dates=_iso_rules((f"{SOURCE} {NESTED}", ("timestamp",))),
                                       stages=stages)
        events = events[[LEAD_ID, "timestamp", "type", "direction",
                         *(c for c in funnel_columns(scorer) if c in events.columns)]].assign(
            **{REJECT: row_reasons(event_problems), ROW: raw[ROW].to_numpy()})
        events = events.loc[event_problems.bad | (events["timestamp"] < as_of).to_numpy()]
    else:
        events = pd.DataFrame({LEAD_ID: pd.Series(dtype=object), REJECT: pd.Series(dtype=object),
                               ROW: pd.Series(dtype="int64")})
    scored, rejects, _, _ = score_partition(canonical, events, scorer, as_of, reasons=bool(reasons))
    out = _assemble(canonical, scored, rejects, as_of, scorer)
    unseen = Unseen()  # counted over the leads scored, whatever their share
    valid = events.loc[events[REJECT].isna()] if spec.mode == "events" else events
    unseen.count(canonical.loc[(out[STATUS] == SCORED).to_numpy()], valid, scorer)
    for column in absent:  # said once below, not once per column
        unseen.missing.pop(column, None)
    warnings = [w for w in (period_warning(scorer, as_of),) if w] + unseen.warnings(scorer, share=0)
    if absent:
        warnings.insert(0, f"column(s) not in the request, read as empty for every lead: {absent}")
    out.attrs["warnings"] = warnings
    return out


def _assemble(canonical: pd.DataFrame, scored: pd.DataFrame, rejects: pd.DataFrame, as_of: pd.Timestamp,
              scorer: LeadScorer) -> pd.DataFrame:
    """One row per request row: the scores of the scored ones (ranked among them), the status of the rest."""
    n = len(canonical)
    status = np.full(n, "", dtype=object)
    lead_rejects = rejects.loc[rejects["source"] == "leads"]
    rejected = np.zeros(n, dtype=bool)
    positions = lead_rejects["row"].to_numpy(dtype=np.int64) - 1
    rejected[positions] = True
    status[positions] = [f"{REJECTED}: {r}" for r in lead_rejects["reason"]]
    where = {lead: i for i, lead in enumerate(canonical[LEAD_ID]) if not rejected[i]}
    scored_at = np.array([where[lead] for lead in scored[LEAD_ID]], dtype=np.int64)
    status[scored_at] = SCORED
    rest = status == ""
    created, converted = canonical[CREATED_AT].to_numpy(), canonical[CONVERTED_AT].to_numpy()
    status[rest & (created >= as_of.to_datetime64())] = NOT_YET_CREATED
    status[(status == "") & (converted < as_of.to_datetime64())] = CONVERTED
    status[status == ""] = LOST if scorer.spec.mode == "events" else NOT_YET_CREATED
    empty = np.full(n, None, dtype=object)
    out = pd.DataFrame({LEAD_ID: canonical[LEAD_ID].to_numpy(dtype=object), "as_of": as_of.isoformat(), STATUS: status})
    ranks = rank_order(scored) if len(scored) else np.array([], dtype=np.int64)
    for column, values in (("probability", scored["probability"].astype(float).tolist()),
                           ("score", scored["score"].astype(int).tolist()), ("bucket", scored["bucket"].tolist()),
                           ("rank", ranks.astype(int).tolist()),
                           *((c, scored[c].astype(float).tolist()) for c in timing_columns(scorer.timing_days)),
                           *((c, scored[c].tolist()) for c in REASON_COLUMNS)):
        full = empty.copy()
        full[scored_at] = values
        out[column] = pd.Series(full, dtype=object)  # None where not scored: JSON null under any server, never NaN
    out["model_version"] = str(scorer.meta.get("model_version") or "")
    out["run_id"] = str(scorer.meta.get("run_id") or "")
    return out[answer_columns(scorer)]


# -- building requests and the signature ----------------------------------------------------------

def input_columns(scorer: LeadScorer) -> list[str]:
    """Columns of the pyfunc input besides ``interactions``: never the excluded (personal) columns, never the outcome."""
    cols = request_columns(scorer)
    return [c for c in cols.required + cols.optional if c != NESTED]


def nest(leads: pd.DataFrame, interactions: pd.DataFrame | None, scorer: LeadScorer,
         statuses: bool = False) -> pd.DataFrame:
    """The pyfunc input for ``leads``: the signature's columns and types, interactions nested.

    A model trained on a label table takes no interactions (pass None). ``statuses``: also pass
    ``converted_at``, so a lead converted before the date is answered ``converted`` instead of scored
    (``leadtemp serve`` and a loaded python model read it; ``mlflow models serve`` drops what its
    signature does not list).
    """
    columns = [c for c in input_columns(scorer) if c in leads.columns or c not in (LOST_AT, REFERRED_BY)]
    if statuses:
        columns += [c for c in request_columns(scorer).status_only if c in leads.columns]
    out = leads[columns].astype({c: float for c in scorer.spec.numeric})
    if scorer.spec.mode != "events":
        return out
    records = interactions.assign(timestamp=interactions["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    fields = ["timestamp", "type", "direction"] + [f for f in event_fields(scorer)[3:] if f in records.columns]
    grouped = {lead: g[fields].to_dict("records") for lead, g in records.groupby("lead_id", sort=False)}
    if funnel := [f for f in fields if f in funnel_columns(scorer)]:  # a funnel field only where the row has one
        grouped = {lead: [{k: v for k, v in e.items() if k not in funnel or not pd.isna(v)} for e in events]
                   for lead, events in grouped.items()}
    out[NESTED] = [grouped.get(lead, []) for lead in leads["lead_id"]]
    return out


def signature(scorer: LeadScorer):
    """What the model reads, as MLflow shows it on the registry page (docs/serving.md has the details).

    ``interactions`` is declared an array of any: MLflow's own check of a nested object type costs
    ~20 ms per lead of 50 interactions (more than scoring); leadtemp checks each interaction itself.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

    spec = scorer.spec
    cols = request_columns(scorer)
    kinds = {LEAD_ID: "string", CREATED_AT: "datetime", LOST_AT: "datetime", REFERRED_BY: "string",
             **{c: "string" for c in spec.categorical},
             **{c: "double" for c in spec.numeric}}
    inputs = [ColSpec(Array(AnyType()) if c == NESTED else kinds[c], c, required=c in cols.required)
              for c in cols.required + cols.optional]
    types = {"probability": "double", "score": "long", "rank": "long",
             **dict.fromkeys(timing_columns(scorer.timing_days), "double")}
    outputs = [ColSpec(types.get(c, "string"), c, required=c in (LEAD_ID, "as_of", STATUS, "model_version", "run_id"))
               for c in answer_columns(scorer)]
    return ModelSignature(Schema(inputs), Schema(outputs),
                          ParamSchema([ParamSpec("as_of", "string", ""), ParamSpec("reasons", "boolean", True)]))


def _run_id_of(model_dir: Path) -> str:
    """The run id an MLmodel file records ("" where there is none)."""
    import yaml

    try:
        raw = yaml.safe_load((model_dir / MLMODEL).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    return str(raw.get("run_id") or "") if isinstance(raw, dict) else ""


def _registry_version(run_id: str) -> str:
    """The registry version of the model logged by ``run_id``, "" when the registry cannot tell (no store, not registered)."""
    if not run_id:
        return ""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        found = MlflowClient().search_model_versions(f"run_id = '{run_id}'")
    except (MlflowException, OSError):
        return ""
    return str(max(int(v.version) for v in found)) if found else ""


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

    Returns the scorer and its model version (see :func:`load_served`). A missing or damaged model is
    a :class:`~leadtemp.core.errors.ConfigError` naming the file (one line).
    """
    _, scorer = load_served(model)
    return scorer, scorer.meta["model_version"]


def load_served(model: str):
    """The loaded pyfunc and its scorer, whose meta names the model: ``model_version`` and ``run_id``.

    ``model_version`` is the registry version ("3"): recorded in an exported folder, resolved from the
    alias or version of a ``models:/`` URI, or looked up by run id; a model never registered (a dry run)
    goes by its run id. ``run_id`` is the MLflow run that logged it.
    """
    loaded = _load_pyfunc(model)
    scorer = loaded.unwrap_python_model().scorer
    run_id = str(scorer.meta.get("run_id") or loaded.metadata.run_id or "")
    version = str(scorer.meta.get("model_version") or "")
    if not version and model.startswith("models:/"):
        from mlflow import MlflowClient

        name, _, ref = model.removeprefix("models:/").partition("@")
        if ref:
            version = MlflowClient().get_model_version_by_alias(name, ref).version
        else:
            version = model.rstrip("/").rsplit("/", 1)[-1]
    version = version or _registry_version(run_id) or run_id
    scorer.meta.update(model_version=str(version), run_id=run_id)
    return loaded, scorer


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


def missing_champion(model_name: str, export_dir: str | Path) -> str | None:
    """Why ``models:/NAME@champion`` does not load, in one line, when the registry has no champion (else None: the
    failure is another one). Names a model that does load: the newest exported version, else its registry URI."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from leadtemp.core.config import CHAMPION

    client = MlflowClient()
    try:
        client.get_model_version_by_alias(model_name, CHAMPION)
        return None
    except MlflowException:
        pass
    try:
        versions = [int(v.version) for v in client.search_model_versions(f"name = '{model_name}'")]
    except (MlflowException, ValueError):
        versions = []
    store = mlflow.get_tracking_uri()
    if not versions:
        return (f"no model registered as {model_name!r} in {store} yet: train one (`leadtemp train`), or give --model "
                "with a model folder or URI")
    newest = max(versions)
    folder = Path(export_dir) / f"v{newest}"
    use = folder if (folder / "MLmodel").is_file() else f"models:/{model_name}/{newest}"
    return (f"no champion yet for registered model {model_name!r} in {store} (every version failed its ship gates, "
            f"or the alias was removed); give --model {use} (version {newest}, the newest), or train one that passes")
