"""Alerts: run failures, failed checks, stuck clients and dead-letter growth."""
