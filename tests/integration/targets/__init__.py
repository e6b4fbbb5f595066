"""Two ClickHouse targets: placement, client moves and their fault tests (issue 15)."""
