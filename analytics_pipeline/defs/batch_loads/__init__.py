"""Batch loads: each client's landing-zone files loaded by dlt into its own database."""
