"""Pure domain logic: config, the data contract, snapshots, features, metrics, reasons. No files, databases or MLflow."""
