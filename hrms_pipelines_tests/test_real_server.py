"""The deployment path on a server reached the way a user's is (marker `pg15`): a private cluster of
Debian's PostgreSQL 15 (what the distribution ships) over TCP with scram-sha-256 passwords, whose only
administrator the product meets is not a superuser (CREATEROLE, CREATEDB: what RDS, Cloud SQL and
Azure give). `roles sql` is also run on a private cluster of the bundled PostgreSQL 18 (16+ changed
what CREATEROLE may do). Skips with one line when Debian's binaries are absent (apt-get install
postgresql-15; .ci/run does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from hrms_pipelines import roles, settings

from .conftest import project_copy
from .import_helpers import DATA_TABLES
from .private_cluster import ADMIN, DEBIAN_PG15_BIN, SUPERUSER, PrivateCluster, embedded_bin

pytestmark = pytest.mark.pg15

PG15_PRESENT = (DEBIAN_PG15_BIN / "postgres").exists()
NO_PG15 = f"Debian's PostgreSQL 15 is not installed ({DEBIAN_PG15_BIN}/postgres): apt-get install postgresql-15"


def _cluster(bindir):
    cluster = PrivateCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def pg15():
    if not PG15_PRESENT:
        pytest.skip(NO_PG15)
    yield from _cluster(DEBIAN_PG15_BIN)


@pytest.fixture(scope="module")
def pg18():
    yield from _cluster(embedded_bin())


# without Debian's binaries only the 18 variant is collected: the one skip line is the deployment test's
@pytest.fixture(params=["pg15", "pg18"] if PG15_PRESENT else ["pg18"])
def server(request) -> PrivateCluster:
    return request.getfixturevalue(request.param)


def roles_sql(database: str) -> str:
    result = subprocess.run([sys.executable, "-m", "hrms_pipelines.roles", "sql", "--database", database],
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def set_password(cluster: PrivateCluster, duty: roles.Duty, database: str) -> str:
    """What psql's \\password does: the verifier computed on the client (scram-sha-256), sent in
    ALTER ROLE; the password itself never reaches the server or its log."""
    password = uuid.uuid4().hex
    with cluster.connect(ADMIN, database) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), duty.role.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(duty.role), sql.Literal(verifier)))
    cluster.passwords[duty.role] = password
    return password


def test_roles_sql_works_for_a_managed_service_administrator(server):
    database = f"hrms_{uuid.uuid4().hex[:8]}"
    with server.connect(ADMIN, "postgres") as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone() \
            == (False, True, True)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    text = roles_sql(database)
    for attempt in ("first", "again"):           # idempotent: an administrator may run it twice
        done = server.psql(ADMIN, database, "-f", "-", input=text)
        assert done.returncode == 0, f"{attempt} ({server.version}): {done.stderr}"
    with server.connect(SUPERUSER, database) as conn:
        server_version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
        # 15: CREATEROLE may grant pg_read_all_stats; 16+: only a holder of ADMIN OPTION on it, and the
        # script says what to ask the provider for
        monitor_reads = server_version < 160000
        assert conn.execute("SELECT pg_has_role('hrms_monitor', 'pg_read_all_stats', 'USAGE')").fetchone() == (monitor_reads,)
        assert ("GRANT pg_read_all_stats TO hrms_monitor" in done.stderr) is not monitor_reads, done.stderr
        # the administrator handed schemas and functions over as their owners, and holds none of them now;
        # no duty is a member of anything (the audit log's owner in particular)
        # (16+ records the creator's ADMIN OPTION as a membership with neither SET nor INHERIT: that one stays)
        usable = "set_option OR inherit_option" if server_version >= 160000 else "true"
        assert conn.execute(f"SELECT array_agg(roleid::regrole::text ORDER BY 1) FROM pg_auth_members WHERE member = "
                            f"%s::regrole AND roleid::regrole::text LIKE 'hrms%%' AND ({usable})", [ADMIN]).fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_auth_members WHERE member::regrole::text = ANY(%s)",
                            [list(roles.ALL_ROLES)]).fetchone() == (0,)
        assert conn.execute("SELECT nspname, nspowner::regrole::text FROM pg_namespace WHERE nspname LIKE 'hrms%' "
                            "ORDER BY 1").fetchall() == [("hrms", "hrms_audit_owner"), ("hrms_audit", "hrms_audit_owner"),
                                                         ("hrms_meta", "hrms_migrator"), ("hrms_monitor", "hrms_monitor")]
        assert conn.execute("SELECT DISTINCT proowner::regrole::text, prosecdef, proconfig FROM pg_proc "
                            "WHERE pronamespace::regnamespace::text IN ('hrms_audit', 'hrms_monitor') ORDER BY 1").fetchall() \
            == [("hrms_audit_owner", True, ["search_path=pg_catalog, pg_temp"]),
                ("hrms_monitor", True, ["search_path=pg_catalog, pg_temp"])]
        # what the provider grants on 16+ (and an import role an older version made a member of it)
        conn.execute("GRANT pg_read_all_stats TO hrms_monitor, hrms_importer")
    done = server.psql(ADMIN, database, "-f", "-", input=text)
    assert done.returncode == 0, done.stderr
    with server.connect(SUPERUSER, database) as conn:
        kept = conn.execute("SELECT pg_has_role('hrms_importer', 'pg_read_all_stats', 'MEMBER')").fetchone()[0]
    # 15: the administrator revokes it; 16+: it may not, and says what to ask for
    assert kept is not monitor_reads
    assert ("REVOKE pg_read_all_stats FROM hrms_importer" in done.stderr) is kept, done.stderr
    if kept:
        with server.connect(SUPERUSER, database) as conn:
            conn.execute("REVOKE pg_read_all_stats FROM hrms_importer")
    with server.connect(SUPERUSER, database) as conn:
        attributes = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, rolinherit "
            "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", [list(roles.ALL_ROLES)]).fetchall()
        assert attributes == [(r, False, False, False, False, False, True, True) for r in sorted(roles.ALL_ROLES)]
        conn.execute("ALTER ROLE hrms_importer CREATEDB NOLOGIN")   # an attribute a duty must not have, fixed by a re-run
    done = server.psql(ADMIN, database, "-f", "-", input=text)
    assert done.returncode == 0, done.stderr
    for duty in roles.Duty:
        set_password(server, duty, database)
        with psycopg.connect(roles.with_user(server.location(database), duty.role, server.passwords[duty.role])) as conn:
            roles.guard(conn, duty)          # no attribute, no membership: the duty's connection is accepted
            # the replica-lag throttle's one window on the server: the import role's only
            assert conn.execute("SELECT has_function_privilege(p.oid, 'EXECUTE') FROM pg_proc p "
                                "WHERE p.proname = 'standby_replay_lag'").fetchone() == (duty is roles.IMPORTER,)
            assert conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            # no duty creates schemas, the migrator neither (it creates inside hrms and hrms_meta)
            assert conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(roles.with_user(server.location(database), roles.READER.role, "wrong"))

    # a duty role that truly holds SUPERUSER is not quietly kept: only a superuser can take it away
    with server.connect(SUPERUSER, database) as conn:
        conn.execute("ALTER ROLE hrms_reader SUPERUSER")
    refused = server.psql(ADMIN, database, "-f", "-", input=text)
    assert refused.returncode != 0 and "superuser" in refused.stderr.lower()
    with server.connect(SUPERUSER, database) as conn:
        conn.execute("ALTER ROLE hrms_reader NOSUPERUSER")


# --------------------------------------------------------------------------------------------------
# The README's "Running it against your PostgreSQL", word for word, on PostgreSQL 15


class Deployment:
    """One database on the server, set up by its administrator as the README says, and the
    environment a deployment gives every `dagster job execute`."""

    def __init__(self, cluster: PrivateCluster, home: Path, migrations_dir: Path) -> None:
        self.cluster = cluster
        self.database = f"hrms_{uuid.uuid4().hex[:8]}"
        self.dagster_db = f"dagster_{uuid.uuid4().hex[:8]}"
        self.home = home
        with cluster.connect(ADMIN, "postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            # Dagster's own storage: its own role and database (a managed service's admin must be a
            # member of a role to hand it a database)
            if not conn.execute("SELECT FROM pg_roles WHERE rolname = 'dagster'").fetchone():
                conn.execute(sql.SQL("CREATE ROLE dagster LOGIN PASSWORD {}").format(sql.Literal(DAGSTER_PASSWORD)))
                conn.execute("GRANT dagster TO hr_admin")
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER dagster").format(sql.Identifier(self.dagster_db)))
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(settings.PROJECT_ROOT / "deploy" / "dagster.production.yaml", home / "dagster.yaml")
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PG") and k not in ("DAGSTER_HOME", settings.DATABASE_URL_ENV)
                    and not any(k in (d.url_env, d.password_env) for d in roles.Duty)}
        self.env.update({settings.DATABASE_URL_ENV: cluster.location(self.database), "DAGSTER_HOME": str(home),
                         settings.DAGSTER_PG_URL_ENV: f"postgresql+psycopg2://dagster:{DAGSTER_PASSWORD}@127.0.0.1:"
                                                      f"{cluster.port}/{self.dagster_db}",
                         settings.IMPORT_DIR_ENV: str(settings.PROJECT_ROOT / "seeds" / "sample"),
                         settings.MIGRATIONS_DIR_ENV: str(migrations_dir)})

    def hr(self, query: str, params=None):
        """The HR application's (or the test's) own look, as the provider's superuser."""
        with self.cluster.connect(SUPERUSER, self.database) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    def job(self, name: str, *args: str, config: dict | None = None) -> tuple[str, str]:
        """`dagster job execute -m hrms_pipelines -j NAME ...`: (run id, status) from Dagster's storage."""
        command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "hrms_pipelines", "-j", name, *args]
        if config is not None:
            path = self.home / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
            path.write_text(yaml.safe_dump(config))
            command += ["-c", str(path)]
        result = subprocess.run(command, env=self.env, cwd=settings.PROJECT_ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{name}: {result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        with psycopg.connect(f"postgresql://dagster:{DAGSTER_PASSWORD}@127.0.0.1:{self.cluster.port}/{self.dagster_db}") as conn:
            return conn.execute("SELECT run_id, status FROM runs WHERE pipeline_name = %s ORDER BY create_timestamp DESC, id DESC "
                                "LIMIT 1", [name]).fetchone()

    def events(self, run_id: str) -> str:
        with psycopg.connect(f"postgresql://dagster:{DAGSTER_PASSWORD}@127.0.0.1:{self.cluster.port}/{self.dagster_db}") as conn:
            return "\n".join(r[0] for r in conn.execute("SELECT event FROM event_logs WHERE run_id = %s ORDER BY id", [run_id]))

    def checksums(self) -> dict[str, str]:
        return {t: self.hr(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM hrms.{t} x")[0][0]
                for t in HR_TABLES}

    def count(self, table: str, where: str = "true") -> int:
        return self.hr(f"SELECT count(*) FROM hrms.{table} WHERE {where}")[0][0]


DAGSTER_PASSWORD = uuid.uuid4().hex
HR_TABLES = [t for t in DATA_TABLES if t != "core_auditlog"]


@pytest.mark.slow
def test_the_readme_deployment_path_on_postgresql_15(pg15, deployment_dirs, migrations, tmp_path):
    migrations_dir = project_copy(tmp_path / "migrations")
    deployment = Deployment(pg15, tmp_path / "dagster_home", migrations_dir)
    assert deployment.hr("SHOW server_version_num")[0][0].startswith("15")

    # the administrator (not a superuser) creates the roles and gives each its password
    text = subprocess.run([sys.executable, "-m", "hrms_pipelines.roles", "sql", "--database", deployment.database],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    done = pg15.psql(ADMIN, deployment.database, "-f", "-", input=text)
    assert done.returncode == 0, done.stderr
    for duty in roles.Duty:
        deployment.env[duty.password_env] = set_password(pg15, duty, deployment.database)
    assert deployment.hr("SELECT count(*) FROM pg_hba_file_rules WHERE type <> 'host' OR auth_method <> 'scram-sha-256'") == [(0,)]

    # apply_migrations: every migration, applied by the migrator, which creates in the HR schema (its
    # owner is the audit log's, which nobody logs in as) and owns the ledger's
    assert deployment.job("apply_migrations")[1] == "SUCCESS"
    assert deployment.count("employees_employee") == 0
    assert deployment.hr("SELECT count(*) FROM hrms_meta.migration_ledger")[0][0] == len(migrations)
    assert deployment.hr("SELECT nspname, nspowner::regrole::text FROM pg_namespace WHERE nspname IN ('hrms', 'hrms_meta') "
                         "ORDER BY 1") == [("hrms", "hrms_audit_owner"), ("hrms_meta", "hrms_migrator")]
    assert deployment.hr("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'hrms.core_auditlog'::regclass") \
        == [("hrms_audit_owner",)]

    # seed_environment: the fixtures of HRMS_ENV (development)
    assert deployment.job("seed_environment")[1] == "SUCCESS"
    assert deployment.count("leave_leavetype") > 0 and deployment.count("payroll_banksortcode") > 0

    # hrms_import of the sample company, then undo_import of that run (dry run, then for real): every
    # HR table as it was before the import
    before = deployment.checksums()
    assert deployment.job("hrms_import", "-c", "config/hrms_import.yaml")[1] == "SUCCESS"
    assert deployment.count("employees_employee") == 200 and deployment.count("history_timelineevent") > 0
    [(import_run,)] = deployment.hr("SELECT DISTINCT run_id FROM hrms.imports_importrecord")
    undo = {"ops": {"undo_import_run": {"config": {"run_id": import_run, "dry_run": True}}}}
    assert deployment.job("undo_import", config=undo)[1] == "SUCCESS"
    assert deployment.count("employees_employee") == 200
    undo["ops"]["undo_import_run"]["config"]["dry_run"] = False
    assert deployment.job("undo_import", config=undo)[1] == "SUCCESS"
    assert deployment.count("employees_employee") == 0 and deployment.count("org_team") == 0
    assert deployment.checksums() == before
    assert deployment.count("imports_importrecord", "outcome = 'undone'") > 0
    assert deployment.job("hrms_import", "-c", "config/hrms_import.yaml")[1] == "SUCCESS"     # imports again
    assert deployment.count("employees_employee") == 200

    # a full backup, a change, restore_backup puts it back
    assert deployment.job("backup_snapshot")[1] == "SUCCESS"
    [backup_id] = [p.name for p in deployment_dirs["backups"].iterdir() if not p.name.startswith(".")]
    assert (deployment_dirs["backups"] / backup_id / "manifest.sig").is_file()
    deployment.hr("UPDATE hrms.employees_employee SET job_title = 'Changed after the backup' "
                  "WHERE email = 'adwoa.alhassan@nhia.gov.gh'")
    restore = {"ops": {"verify_backup_files": {"config": {"backup_id": backup_id, "dry_run": False}}}}
    assert deployment.job("restore_backup", config=restore)[1] == "SUCCESS"
    assert deployment.hr("SELECT job_title FROM hrms.employees_employee WHERE email = 'adwoa.alhassan@nhia.gov.gh'") \
        == [("Engineer",)]
    assert len([p for p in deployment_dirs["backups"].iterdir() if not p.name.startswith(".")]) == 2   # and the pre-restore one

    # a backfill and its undo
    deployment.hr("UPDATE hrms.employees_employee SET status = NULL WHERE id IN "
                  "(SELECT id FROM hrms.employees_employee WHERE NOT is_placeholder ORDER BY id LIMIT 7)")
    run_id, status = deployment.job("data_backfill", "--tags", json.dumps({"dagster/partition": "set_employee_status"}))
    assert status == "SUCCESS" and deployment.count("employees_employee", "status IS NULL") == 0
    assert deployment.job("undo_backfill", "-c", "config/undo_backfill_dry_run.yaml")[1] == "SUCCESS"
    assert deployment.count("employees_employee", "status IS NULL") == 0
    undo_backfill = {"ops": {"run_undo": {"config": {"backfill": "set_employee_status", "run_id": run_id, "dry_run": False}}}}
    assert deployment.job("undo_backfill", config=undo_backfill)[1] == "SUCCESS"
    assert deployment.count("employees_employee", "status IS NULL") == 7

    # a trace dry run of a pending migration: rehearsed on the scratch cluster from pg_dump of this
    # server's schema (as the migrator), nothing changed here
    (migrations_dir / "payroll" / "0100_note.up.sql").write_text("ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n")
    (migrations_dir / "payroll" / "0100_note.down.sql").write_text("ALTER TABLE hrms.payroll_payslip DROP COLUMN note;\n")
    run_id, status = deployment.job("apply_migrations", "-c", "config/apply_migrations_dry_run.yaml")
    assert status == "SUCCESS"
    events = deployment.events(run_id)
    assert "pg_dump --schema-only" in events and "ACCESS EXCLUSIVE on hrms.payroll_payslip" in events
    assert deployment.hr("SELECT count(*) FROM pg_attribute WHERE attrelid = 'hrms.payroll_payslip'::regclass "
                         "AND attname = 'note'") == [(0,)]
    assert deployment.hr("SELECT count(*) FROM hrms_meta.migration_ledger")[0][0] == len(migrations)
