#!/usr/bin/env bash
# The router fuzzer (tests/fuzz/) needs atheris (libFuzzer for Python). pyproject's dev
# extra pins it and ships as a manylinux wheel, so this only checks it imports, and
# installs the pinned wheel if an older venv lacks it. Idempotent; fails loudly.
set -euo pipefail
if .venv/bin/python -c "import atheris" 2>/dev/null; then
  exit 0
fi
pin=$(grep -o '"atheris==[^"]*"' pyproject.toml | tr -d '"')
echo "[setup] installing ${pin:-atheris} for the router fuzzer"
.venv/bin/pip install --quiet "${pin:-atheris}"
.venv/bin/python -c "import atheris" || {
  echo "[setup] atheris does not import on this machine: the router fuzzer test will fail" >&2
  exit 1
}
