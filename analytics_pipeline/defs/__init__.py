"""The code location's definitions, one folder per domain.

Each domain folder holds everything about one concern (its assets, checks, jobs, schedules
and sensors) and a `definitions.py` that lists them; `analytics_pipeline/definitions.py`
only merges the domains and adds the shared resources.
"""
