"""``leadtemp serve`` and ``leadtemp ui``: the model as a REST endpoint, and MLflow's UI on the project's store.

The endpoint speaks MLflow's scoring protocol (``POST /invocations`` with ``dataframe_records`` or
``dataframe_split`` and ``params``; ``GET /ping``), so a client of ``mlflow models serve`` works
unchanged, but it runs in this process: the model is loaded once, its version resolved from the
registry, and the request is read by leadtemp's own contract
(:func:`leadtemp.adapters.pyfunc.answer`) instead of MLflow's generic schema check. What that buys
(measured in benchmarks/serving.py, explained in docs/serving.md): every anticipated error is a 4xx whose
``message`` is leadtemp's one line (MLflow's server prefixes the whole input to it); the answer carries
``model_version``, ``run_id`` and ``warnings`` beside the ``predictions``; a request over the size limit
is a 413 (its body read and dropped, never held); no timeout can turn a large request into a 504.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from leadtemp.adapters.pyfunc import MAX_LEADS

MAX_BODY_BYTES = 64 * 1024 * 1024  # a request body above this is refused (413) before it is read
FORMATS = ("dataframe_records", "dataframe_split")
DEFAULT_PORT = 5001   # `mlflow ui` takes 5000
UI_PORT = 5000

log = logging.getLogger("leadtemp.serve")


class RequestRefused(Exception):
    """A request refused before the model sees it: HTTP status and leadtemp's one-line message."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


def read_request(body: bytes) -> tuple[pd.DataFrame, dict]:
    """The leads frame and the params of a request body in MLflow's JSON scoring format."""
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise RequestRefused(400, "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RequestRefused(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestRefused(400, f"the request body must be a JSON object with one of {list(FORMATS)} and params")
    given = [k for k in payload if k in FORMATS]
    if unknown := [k for k in payload if k not in (*FORMATS, "params")]:
        raise RequestRefused(400, f"unknown key(s) {unknown} in the request: give one of {list(FORMATS)} and params")
    if len(given) != 1:
        raise RequestRefused(400, f"give exactly one of {list(FORMATS)} (found {given or 'none'})")
    params = payload.get("params") or {}
    if not isinstance(params, dict):
        raise RequestRefused(400, 'params must be an object, e.g. {"as_of": "2025-07-01"}')
    return _frame(given[0], payload[given[0]]), params


def _frame(kind: str, data) -> pd.DataFrame:
    if kind == "dataframe_records":
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise RequestRefused(400, "dataframe_records must be a list of objects, one per lead")
        return pd.DataFrame.from_records(data) if data else pd.DataFrame()
    if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or not isinstance(data.get("data"), list):
        raise RequestRefused(400, 'dataframe_split must be an object {"columns": [...], "data": [[...], ...]}')
    columns, rows = data["columns"], data["data"]
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != len(columns)), None)
    if bad is not None:
        raise RequestRefused(400, f"dataframe_split: row {bad + 1} does not have one value per column ({len(columns)})")
    if len(set(map(str, columns))) != len(columns):
        raise RequestRefused(400, "dataframe_split: duplicate column names")
    return pd.DataFrame(rows, columns=columns)


def records(frame: pd.DataFrame) -> list[dict]:
    """``frame.to_dict(orient="records")``, built from one Python list per column (to_dict boxes each value apart:
    5x as long for a 1,000-lead answer)."""
    columns = [str(c) for c in frame.columns]
    return [dict(zip(columns, row)) for row in zip(*(frame[c].tolist() for c in frame.columns))]


def build_app(python_model, describe: dict):
    """The ASGI app around a loaded :class:`~leadtemp.adapters.pyfunc.LeadTempModel` (one request scores at a time)."""
    from mlflow.exceptions import MlflowException
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    lock = threading.Lock()
    python_model.scorer.compile_reasons()  # once, here: LightGBM's pred_contrib per request cost most of its time

    def error(status: int, message: str, code: str) -> Response:
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    def score(body: bytes) -> Response:
        try:
            frame, params = read_request(body)
            with lock:
                out = python_model.predict(None, frame, params)
            answer = {"predictions": records(out), "model_version": describe["model_version"],
                      "run_id": describe["run_id"], "warnings": out.attrs.get("warnings", [])}
            text = json.dumps(answer, allow_nan=False)
        except RequestRefused as exc:
            return error(exc.status, exc.message, exc.error_code)
        except MlflowException as exc:  # the contract's refusals: leadtemp's one line, as the pyfunc raised it
            return error(exc.get_http_status_code(), exc.message, exc.error_code)
        except Exception as exc:  # noqa: BLE001 — not anticipated: the details go to the server log, never to the client
            log.exception("unexpected error while scoring")
            return error(500, f"internal error ({type(exc).__name__}); the server log has the details", "INTERNAL_ERROR")
        return Response(text, media_type="application/json")

    async def invocations(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return error(415, f"send JSON (Content-Type: application/json), not {kind or 'no content type'}", "BAD_REQUEST")
        body, size = bytearray(), 0
        async for chunk in request.stream():  # past the limit the rest is read and dropped, so the client
            size += len(chunk)                # gets its 413 instead of a connection reset mid-upload
            if size <= MAX_BODY_BYTES:
                body += chunk
        if size > MAX_BODY_BYTES:
            return error(413, _too_large(size), "BAD_REQUEST")
        return await run_in_threadpool(score, bytes(body))

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def version(request: Request) -> Response:
        return JSONResponse(describe)

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping),
                             Route("/health", ping), Route("/version", version)])


def _too_large(size: int) -> str:
    return (f"the request body is {size / 2**20:,.1f} MiB; the limit is {MAX_BODY_BYTES // 2**20} MiB and {MAX_LEADS:,} leads per "
            "request: split it, or score files and tables with `leadtemp score`")


def serve(python_model, describe: dict, host: str, port: int, echo: Callable[[str], None]) -> None:
    """Run the endpoint until interrupted (Ctrl-C)."""
    import uvicorn

    echo(f"serving {describe['model']} (model version {describe['model_version']}, run {describe['run_id']}) "
         f"at http://{host}:{port}/invocations; at most {MAX_LEADS:,} leads and {MAX_BODY_BYTES // 2**20} MiB per "
         "request; Ctrl-C stops it")
    uvicorn.run(build_app(python_model, describe), host=host, port=port, log_level="warning", access_log=False)


def store_uri() -> str:
    """The MLflow store leadtemp logs to: ``MLFLOW_TRACKING_URI``, else ``./mlflow.db`` (MLflow's default)."""
    import os

    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


# MLflow 3.17's UI takes the experiment kind from its GenAI / Model training switch (the URL's `workflowType`, else
# the browser's last choice, GenAI at first), not from the experiment's tag: `#/experiments/1` opens on an empty
# GenAI overview in a fresh browser. Links with `?workflowType=machine_learning` open on the runs.
MODEL_TRAINING = "?workflowType=machine_learning"


def ui_links(uri: str, base: str) -> list[str]:
    """Links into MLflow's UI that open on the runs: one per model-training experiment of the store, the registry."""
    from mlflow import MlflowClient

    kind = "custom_model_development"
    experiments = MlflowClient(tracking_uri=uri).search_experiments(filter_string=f"tags.`mlflow.experimentKind` = '{kind}'")
    return [*(f"  runs of {e.name}: {base}/#/experiments/{e.experiment_id}{MODEL_TRAINING}" for e in experiments),
            f"  registered models: {base}/#/models{MODEL_TRAINING}"]


def ui_command(host: str, port: int) -> list[str]:
    """``mlflow ui`` through this Python, so it works with or without the venv activated."""
    import sys

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri(), "--host", host,
            "--port", str(port)]


def run_ui(host: str, port: int, echo: Callable[[str], None]) -> int:
    """Start MLflow's UI on the project's store and wait for it; returns its exit code."""
    import subprocess

    from leadtemp.core.errors import ConfigError

    uri = store_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no MLflow store at {uri} (in {Path.cwd()}): run `leadtemp train` or `leadtemp demo` "
                          "here first, or set MLFLOW_TRACKING_URI")
    echo(f"MLflow UI on {uri}: http://{host}:{port} (Ctrl-C stops it)")
    for line in ui_links(uri, f"http://{host}:{port}"):
        echo(line)
    try:
        return subprocess.call(ui_command(host, port))
    except KeyboardInterrupt:
        return 0
