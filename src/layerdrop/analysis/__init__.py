"""Analyses of a trained model's layers: scoring keep lists, choosing layers, sweeps over depth, importance."""
