"""Schedules (one module per concern)."""
