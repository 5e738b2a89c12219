"""The seed data: fixture files, idempotent loading by natural key, environments, the admin user."""

import json
import shutil
import subprocess
from decimal import Decimal

import dagster as dg
import psycopg
import pytest
from argon2 import PasswordHasher

from hrms_pipelines.seeding import assets, checks, fixtures, loader
from hrms_pipelines.seeding.fixtures import FixtureError

SEED_COUNTS = {
    "core_role": 11, "core_permission": 20, "employees_jobgrade": 10, "employees_jobcategory": 8,
    "leave_leavetype": 9, "payroll_taxbracket": 7, "payroll_taxrelief": 5, "payroll_ssnitrate": 3,
    "payroll_paycomponent": 14, "discipline_misconductcategory": 12, "discipline_grievancecategory": 10,
}
CORE = ["permissions", "roles", "job_grades", "job_categories", "leave_types", "tax_brackets", "tax_reliefs",
        "ssnit_rates", "pay_components", "misconduct_categories", "grievance_categories", "bank_sort_codes"]
ADMIN_PASSWORD = "correct horse battery staple"


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM hrms.{table}").fetchone()[0]


def seed_audit_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM hrms.core_auditlog WHERE action = 'seed'").fetchone()[0]


@pytest.fixture
def no_admin_password(monkeypatch):
    monkeypatch.delenv(fixtures.STAGING_ADMIN_PASSWORD_ENV, raising=False)


# --- the fixture files --------------------------------------------------------------------------

def test_every_fixture_file_has_the_seeds_count():
    for fixture in fixtures.FIXTURES:
        rows = fixtures.read(fixture)
        if fixture.expected_rows is not None:
            assert len(rows.rows) == fixture.expected_rows, fixture.key
    assert len(fixtures.read(fixtures.get("bank_sort_codes")).rows) >= 20
    assert len(fixtures.read(fixtures.get("payroll_roles")).rows) >= 3


def test_environments_follow_the_seeds_table():
    keys = lambda env: [f.key for f in fixtures.for_environment(env)]  # noqa: E731
    assert sorted(keys("development")) == sorted(CORE)
    assert sorted(keys("staging")) == sorted(CORE + ["staging_admin_user"])
    assert sorted(keys("production")) == sorted(CORE + ["payroll_roles"])
    assert keys(" Production ") == keys("production")
    with pytest.raises(FixtureError, match="HRMS_ENV='prod' is not an environment.*development, staging, production"):
        fixtures.for_environment("prod")


def test_paye_bands_and_ssnit_rates_add_up():
    bands = fixtures.read(fixtures.get("tax_brackets")).rows
    widths = [Decimal(r[2]) for r in bands if r[2]]
    assert sum(widths) == Decimal("50416.67")  # GHS 605,000 a year / 12
    assert [Decimal(r[3]) for r in bands] == [Decimal(x) for x in ("0", "5", "10", "17.5", "25", "30", "35")]
    assert bands[-1][2] is None  # the top band has no width
    ssnit = {r[0]: (Decimal(r[2]), Decimal(r[3])) for r in fixtures.read(fixtures.get("ssnit_rates")).rows}
    assert sum(e for e, _ in ssnit.values()) == Decimal("5.5")
    assert sum(r for _, r in ssnit.values()) == Decimal("13")
    assert sum(ssnit["TIER1"]) == Decimal("13.5") and sum(ssnit["TIER2"]) == Decimal("5")


# --- loading ------------------------------------------------------------------------------------

def test_seeding_twice_inserts_nothing_the_second_time(hrms_db, database_url):
    first = loader.load_fixtures(hrms_db, CORE, environment="development", run_id="r1")
    assert {r.fixture.key: len(r.inserted) for r in first}["roles"] == 11
    for table, expected in SEED_COUNTS.items():
        assert count(database_url, table) == expected, table
    audited = seed_audit_rows(database_url)
    assert audited == sum(len(r.inserted) for r in first)

    second = loader.load_fixtures(hrms_db, CORE, environment="development", run_id="r2")
    assert [len(r.inserted) for r in second] == [0] * len(second)
    assert all(r.already_present == r.rows_in_file for r in second)
    assert seed_audit_rows(database_url) == audited
    for table, expected in SEED_COUNTS.items():
        assert count(database_url, table) == expected, table


def test_hand_edited_reference_row_survives_a_reseed(hrms_db, database_url):
    loader.load_fixtures(hrms_db, ["leave_types", "tax_reliefs"], environment="development")
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE hrms.leave_leavetype SET days_per_year = 36, name = 'Annual Leave (directors)' WHERE code = 'ANNUAL'")
        conn.execute("UPDATE hrms.payroll_taxrelief SET annual_amount = 1500 WHERE code = 'MARRIAGE'")
    results = loader.load_fixtures(hrms_db, ["leave_types", "tax_reliefs"], environment="development")
    assert [len(r.inserted) for r in results] == [0, 0]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT days_per_year, name FROM hrms.leave_leavetype WHERE code = 'ANNUAL'").fetchone() == (
            Decimal("36.0"), "Annual Leave (directors)")
        assert conn.execute("SELECT annual_amount FROM hrms.payroll_taxrelief WHERE code = 'MARRIAGE'").fetchone()[0] == 1500


def test_a_deleted_reference_row_comes_back_and_only_it(hrms_db, database_url):
    loader.load_fixtures(hrms_db, ["grievance_categories"], environment="development")
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM hrms.discipline_grievancecategory WHERE code = 'PAY'")
    [result] = loader.load_fixtures(hrms_db, ["grievance_categories"], environment="development")
    assert result.inserted == ["PAY"] and result.already_present == 9


def test_dry_run_reports_what_would_be_inserted_and_changes_nothing(hrms_db, database_url):
    results = loader.load_fixtures(hrms_db, ["roles"], environment="development", dry_run=True)
    assert [(r.fixture.key, len(r.inserted)) for r in results] == [("permissions", 20), ("roles", 11)]
    assert results[-1].notes["permission grants"] > 11
    assert count(database_url, "core_role") == 0
    assert count(database_url, "core_permission") == 0
    assert seed_audit_rows(database_url) == 0


def test_roles_bring_their_permissions_and_keep_admin_grant_changes(hrms_db, database_url):
    [permissions, roles] = loader.load_fixtures(hrms_db, ["roles"], environment="development")
    assert len(permissions.inserted) == 20
    with psycopg.connect(database_url) as conn:
        grants = dict(conn.execute(
            "SELECT r.code, count(*) FROM hrms.core_rolepermission rp JOIN hrms.core_role r ON r.id = rp.role_id GROUP BY 1"
        ).fetchall())
        assert grants["system_administrator"] == 20
        assert grants["employee"] == 2
        assert sum(grants.values()) == roles.notes["permission grants"]
        # An administrator revokes a permission; the seed does not give it back.
        conn.execute("""DELETE FROM hrms.core_rolepermission WHERE role_id = (SELECT id FROM hrms.core_role WHERE code = 'hr_officer')
                        AND permission_id = (SELECT id FROM hrms.core_permission WHERE code = 'employees.import')""")
    [_, again] = loader.load_fixtures(hrms_db, ["roles"], environment="development")
    assert again.inserted == [] and again.notes["permission grants"] == 0
    assert count(database_url, "core_rolepermission") == sum(grants.values()) - 1


def test_inserted_rows_are_audited_with_their_values(hrms_db, database_url):
    loader.load_fixtures(hrms_db, ["ssnit_rates"], environment="development", run_id="run-42")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT run_id, source, table_name, row_key, after FROM hrms.core_auditlog ORDER BY row_key").fetchall()
    assert [r[3] for r in rows] == ["TIER1", "TIER2", "TIER3"]
    assert {(r[0], r[1], r[2]) for r in rows} == {("run-42", "seed:ssnit_rates", "payroll_ssnitrate")}
    assert rows[0][4]["employer_rate"] == 8.0


# --- environments and the admin user ------------------------------------------------------------

def test_production_refuses_staging_only_fixtures(hrms_db, database_url):
    with pytest.raises(FixtureError, match="'staging_admin_user'.*only in staging.*HRMS_ENV='production'"):
        loader.load_fixtures(hrms_db, ["staging_admin_user"], environment="production")
    with pytest.raises(FixtureError, match="'payroll_roles'.*only in production.*HRMS_ENV='staging'"):
        loader.load_fixtures(hrms_db, ["payroll_roles"], environment="staging")
    assert count(database_url, "core_role") == 0  # refused before anything was written


def test_partitions_follow_the_deployments_environment():
    production = assets.build_reference_data_asset("production")
    keys = production.partitions_def.get_partition_keys()
    assert "staging_admin_user" not in keys and "payroll_roles" in keys
    staging = assets.build_reference_data_asset("staging").partitions_def.get_partition_keys()
    assert "staging_admin_user" in staging and "payroll_roles" not in staging


def test_the_asset_refuses_a_fixture_of_another_environment_at_run_time(hrms_db, database_url, monkeypatch):
    """A staging-flavoured UI (stale or misconfigured) launching into a production deployment."""
    monkeypatch.setenv("HRMS_ENV", "production")
    monkeypatch.setenv(fixtures.STAGING_ADMIN_PASSWORD_ENV, ADMIN_PASSWORD)
    staging_asset = assets.build_reference_data_asset("staging")
    result = dg.materialize([staging_asset], partition_key="staging_admin_user",
                            resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("reference_data")
    assert "only in staging" in failure.error.message and "HRMS_ENV='production'" in failure.error.message
    assert count(database_url, "core_useraccount") == 0


def test_staging_admin_refuses_without_its_password_variable(hrms_db, database_url, no_admin_password):
    with pytest.raises(FixtureError, match="environment variable HRMS_STAGING_ADMIN_PASSWORD, which is unset"):
        loader.load_fixtures(hrms_db, ["staging_admin_user"], environment="staging")
    # One transaction: the roles loaded before the refusal are rolled back too.
    assert count(database_url, "core_useraccount") == 0
    assert count(database_url, "core_role") == 0


def test_staging_admin_password_is_an_argon2_hash_and_never_audited(hrms_db, database_url, monkeypatch):
    monkeypatch.setenv(fixtures.STAGING_ADMIN_PASSWORD_ENV, ADMIN_PASSWORD)
    results = loader.load_fixtures(hrms_db, ["staging_admin_user"], environment="staging")
    assert [r.fixture.key for r in results] == ["permissions", "roles", "staging_admin_user"]
    with psycopg.connect(database_url) as conn:
        username, password_hash, role, superuser = conn.execute(
            "SELECT u.username, u.password_hash, r.code, u.is_superuser FROM hrms.core_useraccount u "
            "JOIN hrms.core_role r ON r.id = u.role_id").fetchone()
        audit = conn.execute("SELECT after::text FROM hrms.core_auditlog WHERE table_name = 'core_useraccount'").fetchone()[0]
    assert (username, role, superuser) == ("staging.admin", "system_administrator", True)
    assert password_hash.startswith("$argon2id$") and PasswordHasher().verify(password_hash, ADMIN_PASSWORD)
    assert "password_hash" not in audit and ADMIN_PASSWORD not in audit and "argon2" not in audit
    # A second run with another password leaves the existing account (and its password) alone.
    monkeypatch.setenv(fixtures.STAGING_ADMIN_PASSWORD_ENV, "another password entirely")
    loader.load_fixtures(hrms_db, ["staging_admin_user"], environment="staging")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT password_hash FROM hrms.core_useraccount").fetchone()[0] == password_hash


def test_a_short_admin_password_is_refused(hrms_db, monkeypatch):
    monkeypatch.setenv(fixtures.STAGING_ADMIN_PASSWORD_ENV, "short")
    with pytest.raises(FixtureError, match="shorter than 12 characters"):
        loader.load_fixtures(hrms_db, ["staging_admin_user"], environment="staging")


# --- bad fixture files --------------------------------------------------------------------------

@pytest.fixture
def fixture_dir(tmp_path):
    shutil.copytree(fixtures.fixtures_dir(), tmp_path, dirs_exist_ok=True)
    return tmp_path


def rewrite(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("old, new, expected", [
    ("JG03,Senior Staff,3,4200.00", "JG03,Senior Staff,3,abc",
     r"job_grades.csv: row 3 \(file line 4\), column min_salary, value 'abc': invalid input syntax for type numeric"),
    ("JG02,Junior Staff,2,3200.00,4500.00", "JG02,Junior Staff,2,4600.00,4500.00",
     r"job_grades.csv: row 2 \(file line 3\).*violates check constraint"),
    ("JG10,Director,10,", "JG09,Director,10,", r"natural key \(code\) must be unique in the file: 'JG09' on rows 9, 10"),
    ("JG01,Auxiliary Staff,1,2500.00,3400.00,", "JG01,Auxiliary Staff,1,2500.00,", r"line 2 has 5 fields, the header has 6"),
])
def test_a_bad_value_is_named_by_file_row_column_and_changes_nothing(hrms_db, database_url, fixture_dir, old, new, expected):
    rewrite(fixture_dir / "job_grades.csv", old, new)
    with pytest.raises(FixtureError, match=expected):
        loader.load_fixtures(hrms_db, ["job_categories", "job_grades"], environment="development", directory=fixture_dir)
    assert count(database_url, "employees_jobcategory") == 0
    assert count(database_url, "employees_jobgrade") == 0


def test_an_unknown_permission_of_a_role_is_refused(hrms_db, database_url, fixture_dir):
    rewrite(fixture_dir / "roles.csv", "leave.request grievance.submit\n", "leave.request grievance.sumbit\n")
    with pytest.raises(FixtureError, match=r"roles.csv: row 11 \(file line 12\), column permissions, value 'grievance.sumbit'"):
        loader.load_fixtures(hrms_db, ["roles"], environment="development", directory=fixture_dir)
    assert count(database_url, "core_permission") == 0


def test_a_missing_row_is_refused_by_the_seeds_count(fixture_dir):
    lines = (fixture_dir / "tax_brackets.csv").read_text().splitlines()
    (fixture_dir / "tax_brackets.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(FixtureError, match="6 row\\(s\\); the seed's table has 7 for Tax brackets"):
        fixtures.read(fixtures.get("tax_brackets"), fixture_dir)


# --- Dagster ------------------------------------------------------------------------------------

def test_a_partition_materializes_and_its_check_passes(hrms_db, database_url):
    result = dg.materialize([assets.reference_data, checks.fixture_rows_present], partition_key="pay_components",
                            resources={"hrms_db": hrms_db})
    assert result.success
    [materialization] = result.asset_materializations_for_node("reference_data")
    assert materialization.partition == "pay_components"
    assert materialization.metadata["inserted"].value == 14
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["missing"].value == 0
    assert count(database_url, "payroll_paycomponent") == 14


def test_the_check_fails_after_a_dry_run(hrms_db, database_url):
    result = dg.materialize(
        [assets.reference_data, checks.fixture_rows_present], partition_key="tax_brackets",
        resources={"hrms_db": hrms_db}, run_config={"ops": {"reference_data": {"config": {"dry_run": True}}}},
    )
    [materialization] = result.asset_materializations_for_node("reference_data")
    assert materialization.metadata["would_insert"].value == 7 and materialization.metadata["dry_run"].value is True
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["missing"].value == 7
    assert count(database_url, "payroll_taxbracket") == 0


def test_seed_environment_job_through_the_cli(subprocess_env, project_root, database_url, tmp_path):
    config = tmp_path / "seed.yaml"
    config.write_text(json.dumps({"ops": {"load_environment_fixtures": {"config": {"dry_run": False}}}}))
    env = {**subprocess_env, "HRMS_ENV": "development"}
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", "seed_environment",
               "-c", str(config)]
    result = subprocess.run(command, env=env, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for table, expected in SEED_COUNTS.items():
        assert count(database_url, table) == expected, table
    assert count(database_url, "payroll_payrollrole") == 0  # production only
    assert count(database_url, "core_useraccount") == 0  # staging only


def test_production_cli_cannot_load_the_staging_admin_partition(subprocess_env, project_root, database_url):
    env = {**subprocess_env, "HRMS_ENV": "production", fixtures.STAGING_ADMIN_PASSWORD_ENV: ADMIN_PASSWORD}
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", "seed_reference_data",
               "--tags", json.dumps({"dagster/partition": "staging_admin_user"})]
    result = subprocess.run(command, env=env, cwd=project_root, capture_output=True, text=True, timeout=300)
    # The CLI does not validate the partition key against the partition set; the asset's own
    # refusal stops it before anything is written.
    assert result.returncode != 0
    assert "fixture 'staging_admin_user' (Test admin user) is loaded only in staging" in result.stdout + result.stderr
    assert count(database_url, "core_useraccount") == 0
