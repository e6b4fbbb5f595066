"""The deploy files validate offline and keep their promises (issue 12).

- every compose file set (local, local + bundled databases, production override) passes
  `docker-compose config`, and a missing required variable fails naming it;
- invariants read from the rendered compose model: healthchecks everywhere, dependencies
  wait on health, official images by default, only loopback ports locally, only the proxy
  public in production, no defaulted secret, restart/limits/log rotation in production;
- the Helm chart passes `helm lint`, and `helm template` with default and production values
  renders manifests that pass `kubernetes-validate --strict`; the optional operator
  templates render; the values for Dagster's chart run our code location.
Needs docker-compose and helm (bin/setup.d/30-deploy.sh installs both); fails if absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics_core.settings import REPO_ROOT
from capture.sdk_settings import parse_public_url

DEPLOY = REPO_ROOT / "deploy"
LOCAL = DEPLOY / "local"
PROD = DEPLOY / "prod"
CHART = DEPLOY / "helm" / "analytics-pipeline"
HELM_VERSION = "v3.22.0"
# A Helm built with `go install` (no release ldflags) assumes Kubernetes 1.20: say which.
KUBE_VERSION = "1.31.0"

OFFICIAL_IMAGES = {
    "APP_IMAGE": "analytics-pipeline:",
    "KAFKA_IMAGE": "apache/kafka:",
    "CLICKHOUSE_IMAGE": "clickhouse/clickhouse-server:",
    "POSTGRES_IMAGE": "postgres:",
    "REDIS_IMAGE": "redis:",
    "PROMETHEUS_IMAGE": "prom/prometheus:",
    "ALERTMANAGER_IMAGE": "prom/alertmanager:",
    "GRAFANA_IMAGE": "grafana/grafana-oss:",
}
SECRETS = ("POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "REDIS_PASSWORD", "PIPELINE_REPLAY_KEY")
ONE_SHOT = {"kafka-init", "init"}


def tool(name: str, *candidates: Path) -> str:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: run bin/setup (bin/setup.d/30-deploy.sh)")
    return found


def helm() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return tool(
        "helm",
        Path(os.environ.get("HELM_BIN", "/nonexistent")),
        cache / "analytics-pipeline" / f"helm-{HELM_VERSION}" / "helm",
    )


def env_file(path: Path, **override: str) -> dict[str, str]:
    """KEY=VALUE lines of an .env example, with the empty secrets filled in."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    env.update(override)
    return env


def compose_config(
    files: list[Path], env: dict[str, str], *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [tool("docker-compose"), "--project-directory", str(LOCAL)]
    for f in files:
        argv += ["-f", str(f)]
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    proc = subprocess.run(
        [*argv, *extra, "config"], env={**base, **env}, capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


LOCAL_FILES = [LOCAL / "docker-compose.yml", LOCAL / "docker-compose.bundled.yml"]
PROD_FILES = [LOCAL / "docker-compose.yml", PROD / "docker-compose.prod.yml"]


def local_env() -> dict[str, str]:
    env = env_file(LOCAL / ".env.example")
    env.pop("COMPOSE_FILE")
    return env


def prod_env() -> dict[str, str]:
    filled = {k: "x" * 40 for k in SECRETS}
    return env_file(
        PROD / ".env.example",
        **filled,
        GRAFANA_ADMIN_PASSWORD="g",
        ALERTMANAGER_WEBHOOK_URL="https://hooks.example.com/x",
    )


def model(files: list[Path], env: dict[str, str], *profiles: str) -> dict[str, Any]:
    """The rendered compose model, restricted to the services the given profiles run."""
    extra = [arg for p in profiles for arg in ("--profile", p)]
    doc = yaml.safe_load(compose_config(files, env, *extra).stdout)
    assert isinstance(doc, dict)
    doc["services"] = {
        name: svc
        for name, svc in doc["services"].items()
        if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)
    }
    return doc


def published(port: str) -> tuple[str, str, int]:
    """`HOST_IP:PUBLISHED:TARGET/proto` (docker-compose v1's rendering) as its parts."""
    host_ip, host_port, target = port.rsplit("/", 1)[0].rsplit(":", 2)
    return host_ip, host_port, int(target)


@pytest.fixture(scope="module")
def local_model() -> dict[str, Any]:
    return model(LOCAL_FILES, local_env(), "bundled", "monitoring")


@pytest.fixture(scope="module")
def prod_model() -> dict[str, Any]:
    return model(PROD_FILES, prod_env(), "monitoring")


def test_external_databases_variant_validates_without_the_bundled_ones() -> None:
    env = {**local_env(), "POSTGRES_HOST": "db.example.com", "CLICKHOUSE_HOST": "ch.example.com"}
    env.pop("COMPOSE_PROFILES")
    running = model([LOCAL / "docker-compose.yml"], env)["services"]
    assert "postgres" not in running and "clickhouse" not in running
    for name, svc in running.items():
        assert not {"postgres", "clickhouse"} & set(svc.get("depends_on", {})), name
    assert running["router"]["environment"]["POSTGRES_HOST"] == "db.example.com"


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "PIPELINE_REPLAY_KEY"])
def test_a_missing_required_variable_fails_naming_it(missing: str) -> None:
    env = local_env()
    env.pop(missing)
    proc = compose_config(LOCAL_FILES, env, check=False)
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    local_model: dict[str, Any],
) -> None:
    services = local_model["services"]
    for name, svc in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in svc.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == expected, (name, dep, cond)
    # The bundled databases gate everything that uses them.
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["router"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in ("router", "capture", "code-location"):
        assert services[name]["depends_on"]["init"]["condition"] == (
            "service_completed_successfully"
        )


def test_images_are_variables_defaulting_to_the_official_ones() -> None:
    text = (LOCAL / "docker-compose.yml").read_text()
    images = re.findall(r"image: \$\{(\w+):-([^}]+)\}", text)
    assert {var for var, _ in images} == set(OFFICIAL_IMAGES)
    for var, default in images:
        assert default.startswith(OFFICIAL_IMAGES[var]), (var, default)


def test_local_ports_are_published_on_loopback_only(local_model: dict[str, Any]) -> None:
    for name, svc in local_model["services"].items():
        for port in svc.get("ports", []):
            assert published(port)[0] == "127.0.0.1", (name, port)
    # The router scales: its metrics port is never a fixed host port.
    (router_port,) = local_model["services"]["router"]["ports"]
    assert published(router_port)[1] == ""


def test_production_exposes_only_the_proxy(prod_model: dict[str, Any]) -> None:
    public = {
        name
        for name, svc in prod_model["services"].items()
        for port in svc.get("ports", [])
        if published(port)[0] != "127.0.0.1"
    }
    assert public == {"proxy"}
    proxy_ports = {published(p)[2] for p in prod_model["services"]["proxy"]["ports"]}
    assert proxy_ports == {443, 8443}
    nginx = (PROD / "nginx" / "nginx.conf").read_text()
    assert "auth_basic_user_file" in nginx and "dagster-webserver:3000" in nginx


def test_production_services_restart_rotate_logs_and_have_memory_limits(
    prod_model: dict[str, Any],
) -> None:
    for name, svc in prod_model["services"].items():
        assert svc.get("restart") in {"unless-stopped", "on-failure:5"}, name
        assert svc["logging"]["driver"] == "json-file" and "max-size" in svc["logging"]["options"]
        if name not in ONE_SHOT:
            assert svc.get("mem_limit"), f"{name} has no memory limit"


def test_production_secrets_have_no_defaults_and_tls_is_on(prod_model: dict[str, Any]) -> None:
    text = (PROD / "docker-compose.prod.yml").read_text()
    for secret in (*SECRETS, "ALERTMANAGER_WEBHOOK_URL"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), (secret, uses)
        env = prod_env()
        env.pop(secret)
        proc = compose_config(PROD_FILES, env, check=False)
        assert proc.returncode != 0 and secret in proc.stderr
    router = prod_model["services"]["router"]["environment"]
    assert router["POSTGRES_SSLMODE"] == "verify-full"
    assert router["CLICKHOUSE_SECURE"] == "true" and router["CLICKHOUSE_VERIFY"] == "true"
    # Nothing secret is baked into the image: the Dockerfile sets no credential.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert not re.search(r"(PASSWORD|_KEY)\s*=", dockerfile)


def test_the_image_build_context_is_an_allow_list() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything is excluded unless listed
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    assert ".env" not in allowed and ".state" not in allowed and ".venv" not in allowed
    for path in allowed:
        assert (REPO_ROOT / path).exists(), path


# --- Helm ------------------------------------------------------------------------------------


def render(*values: Path, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    argv = [helm(), "template", "analytics", str(CHART), "--namespace", "analytics"]
    argv += ["--kube-version", KUBE_VERSION]
    for v in values:
        argv += ["-f", str(v)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("values", [(), (CHART / "values-production.yaml",)])
def test_chart_lints_and_renders_valid_manifests(values: tuple[Path, ...], tmp_path: Path) -> None:
    argv = [helm(), "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART)]
    for v in values:
        argv += ["-f", str(v)]
    lint = subprocess.run(argv, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(*values)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    validator = tool("kubernetes-validate", REPO_ROOT / ".venv" / "bin" / "kubernetes-validate")
    for version in ("1.30.0", "1.37.0"):
        proc = subprocess.run(
            [validator, "--strict", "--quiet", "-k", version, str(rendered)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {
        ("Deployment", "analytics-analytics-pipeline-router"),
        ("Deployment", "analytics-analytics-pipeline-capture"),
        ("PodDisruptionBudget", "analytics-analytics-pipeline-router"),
        ("HorizontalPodAutoscaler", "analytics-analytics-pipeline-router"),
        ("Job", "analytics-analytics-pipeline-migrate"),
        ("NetworkPolicy", "analytics-analytics-pipeline-router"),
        ("ConfigMap", "analytics-analytics-pipeline-config"),
    }
    assert expected <= kinds
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "migrate-metadata"


def test_production_values_use_an_existing_secret_and_tls() -> None:
    docs = render(CHART / "values-production.yaml")
    assert not [d for d in docs if d["kind"] == "Secret"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["POSTGRES_SSLMODE"] == "verify-full"
    assert config["KAFKA_SECURITY_PROTOCOL"] in {"SSL", "SASL_SSL"}
    assert config["CLICKHOUSE_SECURE"] == "true"
    router = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("router")
    )
    env_from = router["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "analytics-pipeline-secrets"}} in env_from


def test_optional_operator_templates_render() -> None:
    docs = render(
        sets=(
            "strimzi.enabled=true",
            "clickhouseOperator.enabled=true",
            "metrics.podMonitor.enabled=true",
        )
    )
    kinds = {d["kind"] for d in docs}
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "ClickHouseInstallation", "PodMonitor"} <= kinds
    default_kinds = {d["kind"] for d in render()}
    assert not default_kinds & {"Kafka", "KafkaNodePool", "ClickHouseInstallation", "PodMonitor"}


def test_dagster_values_run_our_code_location_with_k8s_run_launcher() -> None:
    doc = yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())
    (deployment,) = doc["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == [
        "-m",
        "analytics_pipeline.definitions",
        "-a",
        "defs",
    ]
    assert doc["runLauncher"]["type"] == "K8sRunLauncher"
    assert doc["postgresql"]["enabled"] is False
    limits = doc["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    instance = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    ours = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert [(t["key"], t["limit"]) for t in limits["tagConcurrencyLimits"]] == [
        (t["key"], t["limit"]) for t in ours
    ]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards(
    local_model: dict[str, Any],
) -> None:
    """Grafana cannot run here (no image): check its provisioning against the compose mounts."""
    grafana = local_model["services"]["grafana"]
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in grafana["volumes"] if "/" in v}
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "analytics.yml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    assert dashboards == DEPLOY / "grafana"
    assert {"router-dashboard.json", "capture-dashboard.json"} <= {
        p.name for p in dashboards.glob("*.json")
    }
    # Prometheus in the stack loads the project's rules file unchanged.
    prometheus = local_model["services"]["prometheus"]
    rules = [v for v in prometheus["volumes"] if v.split(":")[1] == "/etc/prometheus/alerts.yml"]
    assert [Path(r.split(":")[0]) for r in rules] == [DEPLOY / "prometheus" / "alerts.yml"]


def test_capture_is_told_the_url_browsers_reach_it_at(prod_model: dict[str, Any]) -> None:
    """Behind a TLS proxy the request's own scheme and Host are not what browsers use: the
    production files set CAPTURE_PUBLIC_URL (named in analytics-next's settings), to a value
    the service accepts."""
    compose_url = prod_model["services"]["capture"]["environment"]["CAPTURE_PUBLIC_URL"]
    assert parse_public_url("CAPTURE_PUBLIC_URL", compose_url).startswith("https://")

    def capture_env(docs: list[dict[str, Any]]) -> dict[str, str]:
        deployment = next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("capture")
        )
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e["value"] for e in env}

    helm_url = capture_env(render(CHART / "values-production.yaml"))["CAPTURE_PUBLIC_URL"]
    assert parse_public_url("CAPTURE_PUBLIC_URL", helm_url) == "https://capture.example.com"
    assert "CAPTURE_PUBLIC_URL" not in capture_env(render())
