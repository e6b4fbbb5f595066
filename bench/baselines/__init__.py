"""Baselines the router benchmark compares against."""
