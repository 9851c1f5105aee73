"""Orchestration of train, score, backtest and retrain over the ports in core.ports; no I/O of their own."""
