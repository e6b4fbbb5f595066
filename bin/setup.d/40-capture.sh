#!/usr/bin/env bash
# Capture endpoint (issue 13): what its tests and benchmark need beyond the Python packages.
# - Debian's chromium (headless browser test) and wrk (load generator of bench_capture);
# - posthog-js from npm (the browser SDK the test page loads), cached once under
#   ~/.cache/analytics-pipeline/posthog-js-<version>/.
# Idempotent: a second run installs nothing.
set -euo pipefail

POSTHOG_JS_VERSION=1.449.2
CACHE="${HOME}/.cache/analytics-pipeline"
log() { printf '[setup:capture] %s\n' "$*" >&2; }

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

dest="${CACHE}/posthog-js-${POSTHOG_JS_VERSION}"
if [[ ! -f ${dest}/array.full.no-external.js ]]; then
  command -v npm >/dev/null || { log "npm is required to fetch posthog-js (install Node.js)"; exit 1; }
  log "fetching posthog-js ${POSTHOG_JS_VERSION} from npm"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "posthog-js@${POSTHOG_JS_VERSION}" >/dev/null)
  tar -xzf "$tmp"/posthog-js-*.tgz -C "$tmp" package/dist/array.full.no-external.js
  mkdir -p "$dest"
  cp "$tmp/package/dist/array.full.no-external.js" "$dest/"
fi
