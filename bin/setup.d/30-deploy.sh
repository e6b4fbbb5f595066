#!/usr/bin/env bash
# Deploy tooling for the compose/Helm tests: Debian's Docker engine and docker-compose (v1),
# mmdebstrap (the local base image: no container registry is reachable here), and Helm,
# built once from the Go module proxy and cached under ~/.cache/analytics-pipeline/.
# kubernetes-validate comes with the venv (pyproject's dev extra). Idempotent.
set -euo pipefail
log() { printf '[setup:deploy] %s\n' "$*" >&2; }

HELM_VERSION=v3.22.0
cache=${XDG_CACHE_HOME:-$HOME/.cache}/analytics-pipeline
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v iptables >/dev/null || missing+=(iptables)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # --no-install-recommends: docker.io recommends needrestart, whose apt hook would then
  # run after every later install.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# The Debian package starts the system daemon; our tests run their own private one and
# never use it, so it is left as the package set it up.

helm_dir=$cache/helm-$HELM_VERSION
if [[ ! -x $helm_dir/helm ]]; then
  go=$(command -v go || true)
  [[ -n $go ]] || go=/usr/local/go/bin/go
  if [[ ! -x $go ]]; then
    log "Go is needed to build Helm $HELM_VERSION (no Debian package, no binary downloads here)"
    exit 1
  fi
  log "building Helm $HELM_VERSION with go install (once, ~3 minutes; cached in $helm_dir)"
  mkdir -p "$helm_dir.partial"
  GOBIN=$helm_dir.partial GOFLAGS=-mod=mod "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$helm_dir"
  mv "$helm_dir.partial" "$helm_dir"
fi
# Tests find Helm at this path (HELM_BIN) or on PATH; a link on PATH helps people too.
ln -sf "$helm_dir/helm" /usr/local/bin/helm 2>/dev/null || true
log "docker $(dockerd --version | cut -d' ' -f3 | tr -d ,), $(docker-compose version --short), helm $HELM_VERSION"
