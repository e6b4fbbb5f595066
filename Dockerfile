# The one application image: router, Dagster code location (gRPC), Dagster webserver and
# daemon, admin CLI. Multi-stage: dependencies are installed from the exact pins in
# pyproject.toml into a virtualenv, then the package itself (not an editable checkout:
# SQL, migrations, the event JSON Schema and sample data ship as package data), and only
# that virtualenv is copied into the runtime stage, which runs as a non-root user.
#
#   docker build -t analytics-pipeline:latest .
#   docker run --rm analytics-pipeline:latest python -m router --help
#
# PYTHON_IMAGE must be a Debian-based Python 3.11 image (the official one by default).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# capture's compiled fast path (native/: Rust + PyO3) as an abi3 wheel. Debian bookworm's
# own Rust builds it: rustc-web/cargo-web (bookworm's `rustc` 1.63 is older than PyO3's
# minimum). Crates come from crates.io at native/Cargo.lock's versions. The toolchain stays
# in this stage; the runtime image gets the wheel only.
FROM ${PYTHON_IMAGE} AS native
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CARGO_HOME=/tmp/cargo
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends cargo-web rustc-web gcc libc6-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY native/ /src/native/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel -q --no-deps --wheel-dir /wheels /src/native

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/analytics
WORKDIR /src
# Layer 1: third-party dependencies, re-used until pyproject.toml changes.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >requirements.txt \
 && /opt/analytics/bin/pip install -q -r requirements.txt
COPY --from=native /wheels /wheels
RUN /opt/analytics/bin/pip install -q --no-deps /wheels/*.whl
# Layer 2: our packages (a wheel build, no source tree left behind).
# .dockerignore lets in only pyproject.toml, README.md, dagster.yaml and the packages.
COPY . ./
RUN /opt/analytics/bin/pip install -q --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="analytics-pipeline" \
      org.opencontainers.image.description="Multi-tenant product-analytics pipeline: router, Dagster code location, webserver, daemon, admin CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 analytics \
 && useradd --system --uid 10001 --gid analytics --home-dir /var/lib/analytics --create-home analytics \
 && mkdir -p /opt/dagster/dagster_home/storage \
 && chown -R analytics:analytics /opt/dagster/dagster_home
COPY --from=build /opt/analytics /opt/analytics
# Dagster instance config: storage in PostgreSQL from the POSTGRES_* variables.
COPY --chown=analytics:analytics dagster.yaml /opt/dagster/dagster_home/dagster.yaml
# CAPTURE_NATIVE=required: the image always has the compiled path, so a capture without it
# fails at start instead of serving at a fraction of its speed.
ENV PATH=/opt/analytics/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PIPELINE_STATE_DIR=/var/lib/analytics \
    DAGSTER_DISABLE_TELEMETRY=1 \
    RUNTIME__DLTHUB_TELEMETRY=false \
    CAPTURE_NATIVE=required
USER 10001:10001
WORKDIR /var/lib/analytics
# 9108 router metrics, 4000 Dagster code location (gRPC), 3000 Dagster webserver.
EXPOSE 9108 4000 3000
CMD ["python", "-m", "router"]
