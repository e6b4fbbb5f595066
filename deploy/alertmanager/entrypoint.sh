#!/bin/sh
# Starts Alertmanager with alertmanager.yml, ALERTMANAGER_WEBHOOK_URL substituted (Alertmanager
# has no environment expansion, and the URL is a secret kept out of files). Works with the
# official image (busybox sh + sed) and the local test image alike. Arguments go to
# alertmanager.
set -eu
: "${ALERTMANAGER_WEBHOOK_URL:?set ALERTMANAGER_WEBHOOK_URL (where alerts are POSTed)}"
case "$ALERTMANAGER_WEBHOOK_URL" in
  http://* | https://*) ;;
  *) echo "ALERTMANAGER_WEBHOOK_URL must be an http(s) URL" >&2 && exit 2 ;;
esac
url=$(printf '%s' "$ALERTMANAGER_WEBHOOK_URL" | sed 's/[&|\\]/\\&/g')
sed "s|\${ALERTMANAGER_WEBHOOK_URL}|$url|" /etc/alertmanager/alertmanager.yml \
  >/alertmanager/alertmanager.yml
exec /bin/alertmanager --config.file=/alertmanager/alertmanager.yml "$@"
