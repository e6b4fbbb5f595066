"""ClickHouse schema migrations per client database: pure planning + I/O applying."""
