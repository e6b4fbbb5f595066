"""Reconciliation: per client and hour, every consumed event is a row or a dead letter."""
