"""Client moves between ClickHouse targets: the `move_client` job (analytics_core.moves)."""
