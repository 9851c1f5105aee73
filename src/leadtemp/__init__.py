"""leadtemp: predict which sales leads will convert and sort them into hot / warm / cold, with reasons.

The public API (see :mod:`leadtemp.api`)::

    import leadtemp
    leadtemp.train("params.yaml")
    leadtemp.score("params.yaml", as_of="2025-01-31", out="scores.csv")
    leadtemp.explain("params.yaml", "L000042", as_of="2025-01-31")
    leadtemp.changes("params.yaml", "2025-01-15", "2025-01-31")
    leadtemp.backtest("params.yaml", quarters=4)
    leadtemp.retrain("params.yaml", through="2025-04-01", dry_run=True)
    leadtemp.report("params.yaml", out="report.html")

Importing leadtemp imports nothing heavy: the API is loaded on first use.
"""

__version__ = "0.1.0"

_API = ("train", "score", "score_leads", "explain", "changes", "backtest", "retrain", "rollback", "report",
        "load_params", "load_data", "load_model", "params_with")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from leadtemp import api

        return getattr(api, name)
    raise AttributeError(f"module 'leadtemp' has no attribute {name!r}")
