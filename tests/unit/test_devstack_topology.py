"""devstack's topology planning and `devstack env` output: pure, no server."""

from __future__ import annotations

import base64
import shlex

import pytest

from analytics_core.settings import Settings
from devstack.environment import exports, render_sh
from devstack.kafka import new_cluster_id
from devstack.options import load_options
from devstack.service import StackError
from devstack.topology import Topology, parse_bootstrap, plan

ALL = ("postgres", "redis", "kafka", "clickhouse")


def _plan(env: dict[str, str], local: tuple[str, ...] = ALL) -> Topology:
    return plan(Settings.from_env(env), load_options(env), local)


def test_single_broker_default_keeps_its_name_ports_and_no_replication() -> None:
    kafka = _plan({}).kafka
    assert [(n.name, n.broker_port, n.controller_port) for n in kafka.nodes] == [
        ("kafka", 29192, 29193)
    ]
    assert kafka.single and kafka.bootstrap_servers == "127.0.0.1:29192"
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (1, 1)


def test_three_brokers_interleave_broker_and_controller_ports_from_the_first() -> None:
    kafka = _plan({"DEVSTACK_KAFKA_BROKERS": "3"}).kafka
    assert [(n.node_id, n.name, n.broker_port, n.controller_port) for n in kafka.nodes] == [
        (1, "kafka-1", 29192, 29193),
        (2, "kafka-2", 29194, 29195),
        (3, "kafka-3", 29196, 29197),
    ]
    assert kafka.bootstrap_servers == "127.0.0.1:29192,127.0.0.1:29194,127.0.0.1:29196"
    assert kafka.voters == "1@127.0.0.1:29193,2@127.0.0.1:29195,3@127.0.0.1:29197"
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)


def test_three_listed_brokers_are_used_as_given() -> None:
    env = {
        "DEVSTACK_KAFKA_BROKERS": "3",
        "KAFKA_BOOTSTRAP_SERVERS": "PLAINTEXT://127.0.0.1:41000,127.0.0.1:41010,127.0.0.1:41020",
        "KAFKA_CONTROLLER_PORT": "42001",
    }
    kafka = _plan(env).kafka
    assert [n.broker_port for n in kafka.nodes] == [41000, 41010, 41020]
    assert [n.controller_port for n in kafka.nodes] == [42001, 42003, 42005]


def test_a_broker_list_that_does_not_match_the_node_count_is_refused() -> None:
    two = {"DEVSTACK_KAFKA_BROKERS": "3", "KAFKA_BOOTSTRAP_SERVERS": "h:1,h:2"}
    with pytest.raises(StackError, match="lists 2 brokers but DEVSTACK_KAFKA_BROKERS is 3"):
        _plan(two)
    three = {"KAFKA_BOOTSTRAP_SERVERS": "h:1,h:2,h:3"}
    with pytest.raises(StackError, match="set DEVSTACK_KAFKA_BROKERS to that count"):
        _plan(three)
    # An external cluster (kafka not run locally) may list as many brokers as it has.
    assert _plan(three, ("postgres", "redis")).kafka.nodes[0].broker_port == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2", "use an odd number"),
        ("7", "above the maximum 5"),
        ("three", "is not an integer"),
        ("0", "below the minimum 1"),
    ],
)
def test_bad_broker_counts_fail_with_what_to_fix(value: str, message: str) -> None:
    with pytest.raises(StackError, match=message):
        load_options({"DEVSTACK_KAFKA_BROKERS": value})


def test_bootstrap_without_a_port_is_refused() -> None:
    with pytest.raises(StackError, match="has no valid port"):
        parse_bootstrap("127.0.0.1")


def test_second_clickhouse_server_is_target_ch2_on_the_next_ports() -> None:
    servers = _plan({"DEVSTACK_CLICKHOUSE_SERVERS": "2"}).clickhouse
    assert [(s.target, s.name, s.http_port, s.native_port) for s in servers] == [
        ("default", "clickhouse", 28123, 29000),
        ("ch2", "clickhouse-ch2", 28124, 29001),
    ]
    assert [s.env_prefix for s in servers] == ["CLICKHOUSE_", "CLICKHOUSE_CH2_"]
    moved = _plan(
        {
            "DEVSTACK_CLICKHOUSE_SERVERS": "2",
            "CLICKHOUSE_CH2_HTTP_PORT": "48124",
            "CLICKHOUSE_CH2_NATIVE_PORT": "49001",
        }
    ).clickhouse[1]
    assert (moved.http_port, moved.native_port) == (48124, 49001)


def test_two_local_servers_on_one_port_are_refused_naming_both() -> None:
    env = {"DEVSTACK_CLICKHOUSE_SERVERS": "2", "CLICKHOUSE_CH2_HTTP_PORT": "29000"}
    with pytest.raises(StackError) as info:
        _plan(env)
    msg = str(info.value)
    assert "port 29000" in msg and "clickhouse native" in msg
    assert "CLICKHOUSE_CH2_HTTP_PORT" in msg
    clash = {"DEVSTACK_KAFKA_BROKERS": "3", "REDIS_PORT": "29195"}
    with pytest.raises(StackError, match=r"redis .* and kafka-2 controller"):
        _plan(clash)
    assert _plan(clash, ("postgres", "redis", "clickhouse"))  # Kafka external: no clash


def test_env_points_at_every_broker_and_target_and_never_prints_a_password() -> None:
    env = {
        "DEVSTACK_KAFKA_BROKERS": "3",
        "DEVSTACK_CLICKHOUSE_SERVERS": "2",
        "CLICKHOUSE_PASSWORD": "s3cret",
        "POSTGRES_PASSWORD": "s3cret",
        "PIPELINE_STATE_DIR": "/tmp/a dir/with 'quotes'",
    }
    settings, options = Settings.from_env(env), load_options(env)
    pairs = exports(settings, options, plan(settings, options, ALL))
    got = dict(pairs)
    assert len(got) == len(pairs)
    assert got["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:29192,127.0.0.1:29194,127.0.0.1:29196"
    assert got["DEVSTACK_KAFKA_BROKERS"] == "3" and got["DEVSTACK_CLICKHOUSE_SERVERS"] == "2"
    assert got["CLICKHOUSE_TARGETS"] == "ch2"
    assert (got["CLICKHOUSE_CH2_HTTP_PORT"], got["CLICKHOUSE_CH2_NATIVE_PORT"]) == (
        "28124",
        "29001",
    )
    assert got["CLICKHOUSE_CH2_HOST"] == "127.0.0.1" and got["CLICKHOUSE_CH2_SECURE"] == "false"
    assert not [k for k in got if "PASSWORD" in k]
    text = render_sh(pairs)
    assert "s3cret" not in text
    # eval-safe: a shell reads back exactly the values.
    parsed = dict(
        shlex.split(line)[1].split("=", 1)
        for line in text.splitlines()
        if line.startswith("export")
    )
    assert parsed == got


def test_env_leaves_an_external_clickhouse_targets_list_alone() -> None:
    env = {"DEVSTACK_SERVICES": "pg,redis,kafka", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:29192"}
    settings, options = Settings.from_env(env), load_options(env)
    got = dict(exports(settings, options, plan(settings, options, options.managed)))
    assert "CLICKHOUSE_TARGETS" not in got
    assert got["DEVSTACK_SERVICES"] == "postgres,redis,kafka"


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        assert len(text) == 22 and not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_default_ports_are_below_the_kernels_ephemeral_range() -> None:
    """Linux hands out 32768-60999 as the local ports of outgoing connections: a server
    (re)started on a port in that range can find it taken by a client's connection and
    fail to bind. Every port devstack plans by default, the largest topology included,
    stays below it."""
    top = _plan({"DEVSTACK_KAFKA_BROKERS": "3", "DEVSTACK_CLICKHOUSE_SERVERS": "4"})
    settings = Settings.from_env({})
    ports = [settings.postgres.port, settings.redis.port]
    ports += [p for n in top.kafka.nodes for p in (n.broker_port, n.controller_port)]
    ports += [p for s in top.clickhouse for p in (s.http_port, s.native_port)]
    assert len(ports) == len(set(ports)) == 16
    assert max(ports) < 32768, ports
