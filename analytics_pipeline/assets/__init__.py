"""Per-client assets, partitioned by `clients` (one module per lifecycle concern)."""
