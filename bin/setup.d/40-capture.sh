#!/usr/bin/env bash
# Capture endpoint (issue 13): what its tests and benchmark need beyond the Python packages.
# - Debian's chromium (headless browser test) and wrk (closed-loop load generator of
#   bench/bench_capture.py);
# - posthog-js, Segment's analytics-next and RudderStack's analytics-js from npm (the
#   browser SDKs the test pages load), cached once under ~/.cache/analytics-pipeline/<package>-<version>/;
# - the Node.js SDKs of Segment, PostHog and RudderStack from npm (their test), installed
#   once into ~/.cache/analytics-pipeline/node-sdks/ (reinstalled when NODE_SDKS changes);
# - the JVM SDKs of Segment, RudderStack and PostHog from Maven Central (their test),
#   copied with their dependencies into ~/.cache/analytics-pipeline/java-sdks/lib/;
# - capture_native, the compiled fast path (native/, needs Rust: https://rustup.rs);
# - vegeta (open-loop load generator of the benchmark's latency runs), built once from the
#   Go module proxy into ~/.cache/analytics-pipeline/vegeta-<version>/ and linked as
#   ~/.cache/analytics-pipeline/bin/vegeta.
# Idempotent: a second run installs nothing.
set -euo pipefail

POSTHOG_JS_VERSION=1.449.2
ANALYTICS_NEXT_VERSION=1.84.3
RUDDERSTACK_JS_VERSION=3.34.1
# tests/integration/capture/test_node_sdks.py names the same versions.
NODE_SDKS="@segment/analytics-node@3.1.0 posthog-node@5.74.0 @rudderstack/rudder-sdk-node@3.0.13"
VEGETA_VERSION=v12.12.0
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

# npm_file PACKAGE VERSION FILE DEST: FILE of the npm package, in DEST (once).
npm_file() {
  local package=$1 version=$2 file=$3 dest=$4 tmp out
  out="${dest}/$(basename "$file" .gz)"
  [[ -f $out ]] && return 0
  command -v npm >/dev/null || { log "npm is required to fetch ${package} (install Node.js)"; exit 1; }
  log "fetching ${package} ${version} from npm"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "${package}@${version}" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" "package/${file}"
  mkdir -p "$dest"
  if [[ $file == *.gz ]]; then
    gunzip -c "$tmp/package/${file}" >"${out}.partial"
  else
    cp "$tmp/package/${file}" "${out}.partial"
  fi
  mv "${out}.partial" "$out"
  rm -rf "$tmp"
}
npm_file posthog-js "$POSTHOG_JS_VERSION" dist/array.full.no-external.js \
  "${CACHE}/posthog-js-${POSTHOG_JS_VERSION}"
# analytics-next ships its browser bundle gzipped (the global AnalyticsNext).
npm_file @segment/analytics-next "$ANALYTICS_NEXT_VERSION" dist/umd/index.js.gz \
  "${CACHE}/analytics-next-${ANALYTICS_NEXT_VERSION}"
# RudderStack's bundle with its plugins inside (the global rudderanalytics).
npm_file @rudderstack/analytics-js "$RUDDERSTACK_JS_VERSION" dist/npm/modern/bundled/umd/index.js \
  "${CACHE}/rudderstack-analytics-js-${RUDDERSTACK_JS_VERSION}"

node_dir="${CACHE}/node-sdks"
if [[ $(cat "${node_dir}/versions.txt" 2>/dev/null) != "$NODE_SDKS" ]]; then
  command -v npm >/dev/null || { log "npm is required to fetch the Node.js SDKs (install Node.js)"; exit 1; }
  log "installing the Node.js SDKs from npm: ${NODE_SDKS}"
  rm -rf "${node_dir}.partial"
  # shellcheck disable=SC2086  # one word per package
  npm install --prefix "${node_dir}.partial" --silent --no-audit --no-fund --no-save $NODE_SDKS
  printf '%s' "$NODE_SDKS" >"${node_dir}.partial/versions.txt"
  rm -rf "$node_dir"
  mv "${node_dir}.partial" "$node_dir"
fi

# The JVM SDKs (their test runs tests/fixtures/capture/java/SendWithJavaSdks.java), with their
# dependencies, copied by Maven into ${CACHE}/java-sdks/lib/; pom.sha256 says from which pom.
java_pom=tests/fixtures/capture/java/pom.xml
java_dir="${CACHE}/java-sdks"
java_hash=$(sha256sum "$java_pom" | cut -d' ' -f1)
if [[ $(cat "${java_dir}/pom.sha256" 2>/dev/null) != "$java_hash" ]]; then
  log "fetching the JVM SDKs with Maven (${java_pom})"
  rm -rf "${java_dir}.partial"
  mkdir -p "${java_dir}.partial"
  if ! mvn -q -B -f "$java_pom" dependency:copy-dependencies \
    -DoutputDirectory="${java_dir}.partial/lib" >"${java_dir}.partial/maven.log" 2>&1; then
    cat "${java_dir}.partial/maven.log" >&2
    exit 1
  fi
  printf '%s' "$java_hash" >"${java_dir}.partial/pom.sha256"
  rm -rf "$java_dir"
  mv "${java_dir}.partial" "$java_dir"
fi

vegeta_dir="${CACHE}/vegeta-${VEGETA_VERSION}"
if [[ ! -x ${vegeta_dir}/vegeta ]]; then
  go=$(command -v go || true)
  [[ -n $go ]] || go=/usr/local/go/bin/go
  if [[ ! -x $go ]]; then
    log "Go is needed to build vegeta ${VEGETA_VERSION} (the benchmark's load generator)"
    exit 1
  fi
  log "building vegeta ${VEGETA_VERSION} with go install (once; cached in ${vegeta_dir})"
  rm -rf "${vegeta_dir}.partial"
  mkdir -p "${vegeta_dir}.partial"
  GOBIN="${vegeta_dir}.partial" GOPATH="${CACHE}/go" GOFLAGS=-mod=mod \
    "$go" install "github.com/tsenart/vegeta/v12@${VEGETA_VERSION}"
  rm -rf "$vegeta_dir"
  mv "${vegeta_dir}.partial" "$vegeta_dir"
fi
mkdir -p "${CACHE}/bin"
ln -sfn "${vegeta_dir}/vegeta" "${CACHE}/bin/vegeta"

# The compiled fast path for Segment batches (native/, Rust + PyO3; capture.native_path),
# installed into .venv as `capture_native`. Rebuilt only when native/ changes; cargo's
# build directory is cached under ~/.cache so a clean clone rebuilds in seconds.
cargo=$(command -v cargo || true)
[[ -n $cargo ]] || cargo="${HOME}/.cargo/bin/cargo"
native_hash=$(cat native/Cargo.toml native/Cargo.lock native/pyproject.toml native/src/*.rs | sha256sum | cut -c1-16)
native_stamp=".venv/.capture-native-${native_hash}"
if [[ ! -f $native_stamp ]] || ! .venv/bin/python -c 'import capture_native' 2>/dev/null; then
  if [[ ! -x $cargo ]]; then
    log "Rust (cargo) is needed to build capture's compiled fast path (native/): install it"
    log "from https://rustup.rs, then run bin/setup again"
    exit 1
  fi
  log "building capture's compiled fast path (native/, $("$cargo" --version))"
  PATH="$(dirname "$cargo"):${PATH}" CARGO_TARGET_DIR="${CACHE}/capture-native-target" \
    .venv/bin/pip install -q --disable-pip-version-check ./native
  rm -f .venv/.capture-native-*
  touch "$native_stamp"
fi
