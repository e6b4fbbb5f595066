"""Alerts: what to say (pure rules), and where to send it (pluggable sinks).

Modules:
- `model`     the Alert, and its JSON / Slack payloads (pure);
- `rules`     pure decisions: run failure, failed asset check, stuck clients, dead-letter
              growth -> alerts + the next sensor cursor (dedupe);
- `config`    AlertSettings from the environment;
- `sinks`     log, stdout and webhook sinks, and `deliver`;
- `kafka_io`  end offsets of the dead-letter topic and a bounded breakdown by reason.
The Dagster sensors that use them are in analytics_pipeline/sensors/alerts.py.

Environment variables (read in `config` with the analytics_core.settings helpers):

| variable                         | default | meaning                                        |
|----------------------------------|---------|------------------------------------------------|
| ALERT_SINKS                      | log     | comma list of log, stdout (JSON lines)         |
| ALERT_WEBHOOK_URL                | (none)  | POST every alert here (adds the webhook sink)  |
| ALERT_WEBHOOK_FORMAT             | json    | json (full alert) or slack ({"text": ...})     |
| ALERT_WEBHOOK_TIMEOUT_S          | 5       | webhook request timeout                        |
| ALERT_STUCK_CLIENT_MINUTES       | 30      | pending/failed longer than this -> alert       |
| ALERT_DEAD_LETTER_THRESHOLD      | 100     | this many new dead letters ...                 |
| ALERT_DEAD_LETTER_WINDOW_MINUTES | 60      | ... within this window -> alert                |
| ALERT_DAGSTER_URL                | (none)  | Dagster UI base URL for links in alerts        |
"""
