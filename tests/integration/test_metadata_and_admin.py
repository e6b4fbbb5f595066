"""Registry schema bootstrap and the operator CLI, against the real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics_core import pg, registry
from analytics_core.clients import ClientStatus
from analytics_core.event_contract import hash_api_key
from analytics_core.settings import Settings
from tests.conftest import ch_scalar, unique_id

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def schema_snapshot(settings: Settings) -> list[tuple[object, ...]]:
    conn = pg.connect(settings.postgres)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns WHERE table_schema = 'public'"
                " UNION ALL SELECT tablename, indexname, indexdef, '', '' FROM pg_indexes"
                " WHERE schemaname = 'public'"
                " UNION ALL SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid),"
                " '', '' FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                " ORDER BY 1, 2"
            )
            rows = cur.fetchall()
            cur.execute("SELECT count(*) FROM clients")
            rows.append(("clients rows", cur.fetchone()))
    finally:
        conn.close()
    return rows


def test_metadata_bootstrap_twice_changes_nothing(stack: Settings) -> None:
    before = schema_snapshot(stack)
    assert any(r[0] == "clients" and r[1] == "api_key_hash" for r in before)
    assert any(r[0] == "schema_versions" and r[1] == "checksum" for r in before)
    conn = pg.connect(stack.postgres)
    try:
        registry.apply_metadata_schema(conn)
        registry.apply_metadata_schema(conn)
    finally:
        conn.close()
    assert schema_snapshot(stack) == before


def test_registry_constraints_refuse_bad_hashes_and_statuses(stack: Settings) -> None:
    import psycopg2

    conn = pg.connect(stack.postgres)
    try:
        with pytest.raises(psycopg2.IntegrityError):
            registry.add_client(conn, unique_id("bad"), "not-a-hash")
        conn.rollback()
        with pytest.raises(psycopg2.IntegrityError), conn.cursor() as cur:
            cur.execute(
                "INSERT INTO clients (client_id, status, api_key_hash) VALUES (%s, %s, %s)",
                (unique_id("bad"), "sleeping", hash_api_key("k")),
            )
        conn.rollback()
    finally:
        conn.close()


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analytics_core.admin", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_admin_cli_adds_provisions_and_rotates(stack: Settings) -> None:
    cid = unique_id("cli")
    # Keys are unique per run: a key another client holds is refused (the stack may be kept).
    added = admin("add-client", cid, "--api-key", f"first-key-{cid}", "--target", "default")
    assert added.returncode == 0 and f"first-key-{cid}" in added.stdout
    again = admin("add-client", cid)
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = admin("provision", unique_id("nosuch"))  # a refusal (2), not a failure (1)
    assert missing.returncode == 2 and "no client" in missing.stderr
    prov = admin("provision", cid)
    assert prov.returncode == 0, prov.stderr
    db = "client_" + cid.replace("-", "_")
    assert (
        ch_scalar(
            stack,
            "SELECT count() FROM system.tables WHERE database = {d:String}"
            " AND name = 'events_base'",
            d=db,
        )
        == 1
    )
    conn = pg.connect(stack.postgres)
    try:
        row = registry.get_client(conn, cid)
        assert row is not None and row.status == "active"
        rotated = admin("rotate-key", cid, "--api-key", f"second-key-{cid}")
        assert rotated.returncode == 0
        row = registry.get_client(conn, cid)
        assert row is not None and row.api_key_hash == hash_api_key(f"second-key-{cid}")
    finally:
        conn.close()
    listed = admin("list-clients")
    assert listed.stdout.startswith("CLIENT ")
    mine = [line.split() for line in listed.stdout.splitlines() if line.startswith(cid + " ")]
    assert mine == [[cid, "active", "default", db]]  # (added without --name)


def test_admin_cli_refuses_a_shared_key_or_database_and_an_active_start(stack: Settings) -> None:
    cid = unique_id("clash")
    key = f"key-{cid}"
    assert admin("add-client", cid, "--api-key", key).returncode == 0
    twin = admin("add-client", cid.replace("-", "_"))
    assert twin.returncode == 2 and f"client_{cid.replace('-', '_')}" in twin.stderr
    other = unique_id("other")
    shared = admin("add-client", other, "--api-key", key)
    assert shared.returncode == 2 and "already uses this API key" in shared.stderr
    assert admin("add-client", other).returncode == 0
    taken = admin("rotate-key", other, "--api-key", key)
    assert taken.returncode == 2 and repr(cid) in taken.stderr
    # Active means provisioned: a client can not start so (the router would have no database).
    started_active = admin("add-client", unique_id("act"), "--status", "active")
    assert started_active.returncode == 2 and "invalid choice" in started_active.stderr
    conn = pg.connect(stack.postgres)
    try:
        assert registry.get_client(conn, cid.replace("-", "_")) is None
        row = registry.get_client(conn, other)
        assert row is not None and row.api_key_hash != hash_api_key(key)
    finally:
        conn.close()


def test_provisioning_records_the_database_of_a_row_written_active_without_one(
    stack: Settings,
) -> None:
    cid = unique_id("handmade")
    conn = pg.connect(stack.postgres)
    try:
        registry.add_client(conn, cid, hash_api_key("k"), status=ClientStatus.ACTIVE)
        prov = admin("provision", cid)
        assert prov.returncode == 0, prov.stderr
        row = registry.get_client(conn, cid)
        assert row is not None and row.ch_database_name == "client_" + cid.replace("-", "_")
    finally:
        conn.close()


def test_admin_cli_refuses_bad_ids_and_seeds_the_demo_idempotently(stack: Settings) -> None:
    bad = admin("add-client", "Robert'); DROP TABLE clients;--")
    assert bad.returncode == 2 and "client_id" in bad.stderr
    first, second = admin("seed-demo"), admin("seed-demo")
    assert first.returncode == second.returncode == 0
    assert "demo-key-change-me" in second.stdout


def test_admin_cli_says_how_to_fix_an_unreachable_registry() -> None:
    env = dict(os.environ, POSTGRES_PORT="1")
    out = subprocess.run(
        [sys.executable, "-m", "analytics_core.admin", "list-clients"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "cannot reach PostgreSQL" in out.stderr
    assert "devstack up" in out.stderr


def test_admin_cli_accepts_an_api_key_that_starts_with_a_dash(stack: Settings) -> None:
    cid = unique_id("dash")
    added = admin("add-client", cid, "--api-key", f"-starts-with-a-dash-{cid}")
    assert added.returncode == 0, added.stderr
    rotated = admin("rotate-key", cid, "--api-key", f"--two-dashes-{cid}")
    assert rotated.returncode == 0, rotated.stderr
    conn = pg.connect(stack.postgres)
    try:
        row = registry.get_client(conn, cid)
        assert row is not None and row.api_key_hash == hash_api_key(f"--two-dashes-{cid}")
    finally:
        conn.close()
    too_long = admin("add-client", unique_id("dash"), "--api-key", "k" * 201)
    assert too_long.returncode == 2 and "--api-key" in too_long.stderr


def test_admin_cli_deprovisions_only_with_the_confirmation_and_audits_it(
    stack: Settings,
) -> None:
    cid = unique_id("depro")
    assert admin("add-client", cid).returncode == 0
    assert admin("provision", cid).returncode == 0
    db = "client_" + cid.replace("-", "_")

    def db_exists() -> bool:
        return (
            ch_scalar(stack, "SELECT count() FROM system.databases WHERE name = {d:String}", d=db)
            == 1
        )

    missing = admin("deprovision", cid)
    assert missing.returncode == 2 and "--confirm" in missing.stderr and db_exists()
    typo = admin("deprovision", cid, "--confirm", cid + "x")
    assert typo.returncode == 2 and "does not match" in typo.stderr and db_exists()
    done = admin("deprovision", cid, "--confirm", cid, "--requested-by", "ops@example.com")
    assert done.returncode == 0, done.stderr
    assert not db_exists() and "deprovisioned" in done.stdout
    again = admin("deprovision", cid, "--confirm", cid)
    assert again.returncode == 0 and "already deprovisioned" in again.stdout
    reused = admin("add-client", cid)
    assert reused.returncode == 1 and "deprovisioned; a client id is never reused" in reused.stderr
    rotated = admin("rotate-key", cid)
    assert rotated.returncode == 2 and "is deprovisioned" in rotated.stderr
    conn = pg.connect(stack.postgres)
    try:
        row = registry.get_client(conn, cid)
        assert row is not None and row.status == "deprovisioned"
        with conn.cursor() as cur:
            cur.execute(
                "SELECT action, actor FROM client_audit_log WHERE client_id = %s ORDER BY id",
                (cid,),
            )
            actions = [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
    assert ("deprovision_refused", "cli") in actions
    assert ("deprovisioned", "ops@example.com") in actions


def test_admin_cli_sets_a_capture_quota_keeps_what_is_left_out_and_audits_it(
    stack: Settings,
) -> None:
    from analytics_core import quotas

    cid = unique_id("quota")
    assert admin("add-client", cid).returncode == 0
    both = admin("set-quota", cid, "--events-per-s", "250", "--burst", "500")
    assert both.returncode == 0, both.stderr
    assert f"{cid}: 250 events/s, burst 500" in both.stdout
    only_burst = admin("set-quota", cid, "--burst", "900")
    assert only_burst.returncode == 0 and "250 events/s, burst 900" in only_burst.stdout
    conn = pg.connect(stack.postgres)
    try:
        assert quotas.get_quota(conn, cid) == quotas.StoredQuota(cid, 250.0, 900)
        reset = admin("set-quota", cid, "--default")
        assert reset.returncode == 0 and "default events/s, burst default" in reset.stdout
        assert quotas.get_quota(conn, cid) == quotas.StoredQuota(cid, None, None)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM client_audit_log WHERE client_id = %s"
                " AND action = 'quota_set'",
                (cid,),
            )
            assert cur.fetchone() == (3,)
        conn.commit()
    finally:
        conn.close()
    negative = admin("set-quota", cid, "--events-per-s", "-1")
    assert negative.returncode == 2 and "positive" in negative.stderr
    nothing = admin("set-quota", cid)
    assert nothing.returncode == 2 and "--default" in nothing.stderr
    clash = admin("set-quota", cid, "--default", "--burst", "3")
    assert clash.returncode == 2
    unknown = admin("set-quota", unique_id("nobody"), "--burst", "3")
    assert unknown.returncode == 1 and "no client" in unknown.stderr
