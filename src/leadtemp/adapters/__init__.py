"""The outside world: files, databases, Spark, MLflow runs and registry, the pyfunc model, plots, progress."""
