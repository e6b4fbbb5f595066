"""Sensors: registry -> partitions and provisioning runs; migration files -> migration runs."""
