"""Fitting and applying a model: booster, calibrator, buckets, the scorer artifact and typed results."""
