"""Personal and pay data never leaves the HR tables in clear (issue 11): the leak scan.

The bad-input cases run through Dagster on a real dagster-postgres instance (the project's own
dagster.yaml: HrmsPostgresStorage and PrivateComputeLogManager, on a storage database of this module
on the test server), each planting values of its own that no other case uses: salaries like
98765.43, emails like leak.probe.b1@example.org, employee numbers like ENLK7311. Then every place
Dagster keeps or sends something is scanned for those values in any of their textual forms:

- Dagster's storage: every row of every table (event logs, runs, asset keys and events, asset check
  executions, ticks...) cast whole to text;
- the compute-log files of the case's runs (and their modes: 0600 files in 0700 folders);
- the optional log file (0600 in a 0700 folder);
- a failure alert: the log line, the hrms.core_alert row, the webhook's JSON, an email (local SMTP sink);
- a `dagster job execute` subprocess: its compute logs on disk and its console output.

A canary proves the scanner finds a value when it is there, and each case proves its values did
reach the pipeline (the reject file or the HR database holds them, as it should).

Leaks whose source is in another engineer's area are marked `xfail(strict=True)` with the file and
function that leaks: the mark flips to a failure when they are fixed, so it is removed then.
"""

import email
import json
import os
import shutil
import socketserver
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql

from hrms_pipelines import alerts, errors, instance as hrms_instance, privacy, retries, settings
from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
from hrms_pipelines.resources import PinnedDatabase
from hrms_pipelines_tests.conftest import _url, create_dagster_storage, create_database, drop_database
from hrms_pipelines_tests.import_helpers import BASE, import_folder, run_stage, write, write_base
from hrms_pipelines_tests.shared_ui import capture_posts

USERS_HEADER = ["email", "employee_number", "first_name", "last_name", "status", "hire_date", "termination_date",
                "team_code", "chapter_code", "manager_email", "ladder_code", "level_number"]


def user(email_: str, number: str = "", *, status: str = "active", hire: str = "2020-01-01", left: str = "",
         manager: str = "", level: str = "1") -> list[str]:
    return [email_, number, "Probe", "Person", status, hire, left, "MOBILE", "BACKEND", manager, "ENG", level]


def base_users(*extra: list[str]) -> list[list[str]]:
    """The small company's three users in the wider header (employee numbers, dates), plus `extra`."""
    rows = [USERS_HEADER]
    for row in BASE["users.csv"][1:]:
        email_, first, last, status, hire, team, chapter, manager, ladder, level = row
        rows.append([email_, "", first, last, status, hire, "", team, chapter, manager, ladder, level])
    return rows + [list(r) for r in extra]


# ---------------------------------------------------------------------------------------------
# Planted values and their textual forms


def money_forms(amount: str) -> list[str]:
    whole, cents = amount.split(".")
    grouped = f"{int(whole):,}"
    return [amount, f"{grouped}.{cents}", f"{grouped.replace(',', ' ')}.{cents}", f"{whole},{cents}",
            f"{grouped.replace(',', '.')},{cents}", f"{amount}0"]


def email_forms(address: str) -> list[str]:
    local = address.split("@", 1)[0]
    return [address, address.replace("@", "%40"), local]     # the local part alone is distinctive enough


def number_forms(number: str) -> list[str]:
    return [number]


@dataclass
class Case:
    name: str
    planted: dict[str, list[str]]                 # what was planted -> every textual form searched
    run_ids: list[str] = field(default_factory=list)
    home: Path | None = None                      # HRMS_HOME of the case (rejects, logs)
    database_url: str = ""
    log_file: Path | None = None
    results: list = field(default_factory=list)   # Dagster results, for the alert case


def find(text: str, planted: dict[str, list[str]]) -> list[str]:
    lowered = text.lower()
    return [f"{label} as {form!r}" for label, forms in planted.items() for form in forms if form.lower() in lowered]


# ---------------------------------------------------------------------------------------------
# The module's Dagster instance: the project's dagster.yaml on a storage database of its own


@dataclass
class LeakEnv:
    instance: dg.DagsterInstance
    storage_url: str            # postgresql+psycopg2://... (dagster-postgres)
    storage_dsn: str            # the same for psycopg
    dagster_home: Path
    admin_url: str
    template: str
    root: Path
    databases: list[str] = field(default_factory=list)

    @property
    def compute_logs_dir(self) -> Path:
        return self.dagster_home / "storage"


def create_storage_database(admin_url: str) -> tuple[str, str]:
    """A fresh dagster-postgres database owned by the storage role."""
    return create_dagster_storage(admin_url, prefix="dagleak")


@pytest.fixture(scope="module")
def leak_env(pg_admin_url, migrated_template, tmp_path_factory):
    root = tmp_path_factory.mktemp("leak")
    storage_name, storage_url = create_storage_database(pg_admin_url)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(settings.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv(settings.DAGSTER_PG_URL_ENV, storage_url)
        mp.delenv(hrms_instance.COMPUTE_LOGS_DIR_ENV, raising=False)
        instance = dg.DagsterInstance.get()
        # built lazily by Dagster: build it while DAGSTER_HOME points here
        assert isinstance(instance.compute_log_manager, hrms_instance.PrivateComputeLogManager)
    env = LeakEnv(instance, storage_url, _url(pg_admin_url, storage_name), home, pg_admin_url, migrated_template, root)
    yield env
    instance.dispose()
    for name in env.databases:
        drop_database(pg_admin_url, name)
    drop_database(pg_admin_url, storage_name)


def storage_hits(env: LeakEnv, planted: dict[str, list[str]]) -> list[str]:
    """Every row of every table of Dagster's storage, cast whole to text, searched for the forms."""
    forms = sorted({form.lower() for forms in planted.values() for form in forms})
    hits = []
    with psycopg.connect(env.storage_dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT t::text FROM {} t WHERE lower(t::text) LIKE ANY(%s)").format(
                sql.Identifier(table)), [[f"%{f.replace('%', chr(92) + '%').replace('_', chr(92) + '_')}%" for f in forms]]).fetchall()
            for (text,) in rows:
                for hit in find(text, planted):
                    at = text.lower().find(hit.split(" as ", 1)[1].strip("'").lower())
                    hits.append(f"{table}: {hit}: …{text[max(0, at - 160):at + 80]}…")
    return hits


def compute_log_files(env: LeakEnv, run_ids: list[str]) -> list[Path]:
    return sorted(p for run_id in run_ids for p in (env.compute_logs_dir / run_id).rglob("*") if p.is_file())


def file_hits(paths: list[Path], planted: dict[str, list[str]]) -> list[str]:
    return [f"{p}: {hit}" for p in paths for hit in find(p.read_bytes().decode("utf-8", "replace"), planted)]


def not_private(root: Path) -> list[str]:
    """Folders under (and including) `root` that are not 0700, files that are not 0600."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            wrong.append(f"{path}: {oct(mode)} (want {oct(want)})")
    return wrong


# ---------------------------------------------------------------------------------------------
# The cases


def import_job(name: str):
    from hrms_pipelines.definitions import defs
    return defs.resolve_job_def(name)


def import_graph() -> list:
    """The import assets and their checks, as the hrms_import job runs them."""
    from hrms_pipelines.imports import assets, checks
    return [*assets.import_assets, *checks.import_checks]


def materialize_stage(env: LeakEnv, case: Case, hrms_db, stage: str, **options):
    """One stage (its backup, its import, its checks) through Dagster, with the stage's options."""
    selection = dg.AssetSelection.assets(f"backup_{stage}", f"import_{stage}")
    result = dg.materialize(import_graph(), selection=selection, instance=env.instance, raise_on_error=False,
                            resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions(**options)})
    case.run_ids.append(result.run_id)
    case.results.append(result)
    return result


def case_pandera_rejects(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """history.csv: a salary written with a thousands separator, an email that is no email (Pandera)."""
    write_base(directory)
    for stage in ("ladders", "org", "users"):
        run_stage(hrms_db, stage, directory)
    write(directory, "history.csv", [
        BASE["history.csv"][0],
        ["kofi.owusu@nhia.gov.gh", "salary_change", "2022-01-01", "", "", "", "", "98,765.43", "4800.00"],
        ["leak.probe.a@@example.org", "hire", "2022-02-01", "", "", "", "", "", ""],
    ])
    case.log_file = settings.logs_dir() / "leak-a.log"
    result = materialize_stage(env, case, hrms_db, "history", log_file="leak-a.log")
    assert not result.success


def case_sql_rejects(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """users.csv: an unknown manager, a duplicate email, a duplicate employee number (SQL rejects)."""
    write_base(directory)
    for stage in ("ladders", "org"):
        run_stage(hrms_db, stage, directory)
    write(directory, "users.csv", base_users(
        user("new.one@nhia.gov.gh", "ENLK7311", manager="leak.probe.b1@example.org"),
        user("leak.probe.b2@example.org", "ENLK7312"),
        user("leak.probe.b2@example.org", "ENLK7313"),
        user("new.two@nhia.gov.gh", "ENLK7311"),
    ))
    case.log_file = settings.logs_dir() / "leak-b.log"
    result = materialize_stage(env, case, hrms_db, "users", log_file="leak-b.log")
    assert not result.success


def case_constraint_violation(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """A users row whose termination date falls before the stored hire date: PostgreSQL's CHECK
    constraint refuses it, with the whole row (email, employee number) in its DETAIL."""
    write_base(directory)
    for stage in ("ladders", "org"):
        run_stage(hrms_db, stage, directory)
    write(directory, "users.csv", base_users(user("leak.probe.c@example.org", "ENLK7322", hire="2020-01-01")))
    run_stage(hrms_db, "users", directory)
    write(directory, "users.csv", base_users(user("leak.probe.c@example.org", "ENLK7322", hire="", left="2010-01-01")))
    result = materialize_stage(env, case, hrms_db, "users", force_update=True)
    assert not result.success
    failure = result.failure_data_for_node("import_users")
    assert failure.user_failure_data.metadata["database_sqlstate"].value == "23514", failure.error.message


def case_blocking_validation(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """teams.csv names a terminated employee as leader: the blocking invalid_leader_references
    validation rolls the org stage back, quoting the offending row."""
    write_base(directory)
    for stage in ("ladders", "org"):
        run_stage(hrms_db, stage, directory)
    write(directory, "users.csv", base_users(user("leak.probe.d@example.org", "ENLK7344", status="terminated")))
    run_stage(hrms_db, "users", directory)
    write(directory, "teams.csv", [BASE["teams.csv"][0], BASE["teams.csv"][1],
                                   ["DATA", "Data", "DIGITAL", "ICT", "leak.probe.d@example.org"]])
    result = materialize_stage(env, case, hrms_db, "org")
    assert not result.success
    assert "invalid_leader_references" in result.failure_data_for_node("import_org").user_failure_data.description


def case_validation_names(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """An employee with no status, written outside any import; a users file (force_update) changes
    their row and leaves the status blank (a blank keeps the stored value): the users stage's blocking
    users_without_required_fields validation fails on the row it touched, quoting it (email, names)."""
    write_base(directory)
    for stage in ("ladders", "org", "users"):
        run_stage(hrms_db, stage, directory)
    with psycopg.connect(case.database_url) as conn:
        conn.execute("INSERT INTO hrms.employees_employee (email, employee_number, first_name, last_name) "
                     "VALUES ('leak.probe.g@example.org', 'ENLK7377', 'Leakfirstname', 'Person')")
    probe = ["leak.probe.g@example.org", "ENLK7377", "Leakfirstname", "Person", "", "2020-01-01", "", "MOBILE", "BACKEND",
             "", "ENG", "1"]
    write(directory, "users.csv", base_users(probe))
    result = materialize_stage(env, case, hrms_db, "users", force_update=True)
    assert not result.success
    assert "users_without_required_fields" in result.failure_data_for_node("import_users").user_failure_data.description


def case_dry_run(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """hrms_import_dry_run over a users file with an unknown manager and a duplicate employee number."""
    write_base(directory)
    write(directory, "users.csv", base_users(
        user("new.one@nhia.gov.gh", "ENLK7355", manager="leak.probe.e@example.org"),
        user("new.two@nhia.gov.gh", "ENLK7355"),
    ))
    result = import_job("hrms_import_dry_run").execute_in_process(
        instance=env.instance, resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions()}, raise_on_error=False)
    case.run_ids.append(result.run_id)
    assert not result.success   # a dry run that would fail reports every stage, then fails


def case_asset_checks(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """Rows that non-blocking checks report (a placeholder never completed, a promotion without its
    seniority snapshot), then the import checks run on their own."""
    write_base(directory)
    for stage in ("ladders", "org", "users"):
        run_stage(hrms_db, stage, directory)
    with psycopg.connect(case.database_url) as conn:
        conn.execute("INSERT INTO hrms.employees_employee (email, employee_number, is_placeholder) "
                     "VALUES ('leak.probe.f1@example.org', 'ENLK7366', true)")
        conn.execute("INSERT INTO hrms.employees_employee (email, employee_number, first_name, last_name, status) "
                     "VALUES ('leak.probe.f2@example.org', 'ENLK7367', 'Probe', 'Person', 'active')")
        conn.execute("INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary) "
                     "SELECT id, 'promotion', '2022-01-01', 'Promoted, salary GHS 98,765.46' FROM hrms.employees_employee "
                     "WHERE email = 'leak.probe.f2@example.org'")
    checks = dg.AssetSelection.checks_for_assets(dg.AssetKey("import_users"), dg.AssetKey("import_history"))
    result = dg.materialize(import_graph(), selection=checks, instance=env.instance, raise_on_error=False,
                            resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions()})
    case.run_ids.append(result.run_id)
    evaluations = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert any(not e.passed for e in evaluations), "the planted rows should fail a check"


def case_headerless(env: LeakEnv, case: Case, hrms_db, directory: Path) -> None:
    """users.csv exported without its header row: row 1 is a person (email, employee number, names).
    The failure describes row 1 by the shape of its cells; the person is only in the reject file."""
    write_base(directory)
    for stage in ("ladders", "org"):
        run_stage(hrms_db, stage, directory)
    person = ["leak.probe.k@example.org", "ENLK7388", "Leakheadfirst", "Leakheadlast", "active", "2020-01-01", "",
              "MOBILE", "BACKEND", "", "ENG", "1"]
    write(directory, "users.csv", [person] + base_users()[1:])
    case.log_file = settings.logs_dir() / "leak-k.log"
    result = materialize_stage(env, case, hrms_db, "users", log_file="leak-k.log")
    assert not result.success
    assert "row 1 does not look like a header: 12 cells, cell 1 an e-mail address" in \
        result.failure_data_for_node("import_users").user_failure_data.description


CASES: dict[str, tuple[Callable, dict[str, list[str]]]] = {
    "pandera_rejects": (case_pandera_rejects, {"salary": money_forms("98765.43"),
                                               "email": email_forms("leak.probe.a@@example.org")}),
    "sql_rejects": (case_sql_rejects, {"manager email": email_forms("leak.probe.b1@example.org"),
                                       "duplicate email": email_forms("leak.probe.b2@example.org"),
                                       "employee number": number_forms("ENLK7311")}),
    "constraint_violation": (case_constraint_violation, {"email": email_forms("leak.probe.c@example.org"),
                                                         "employee number": number_forms("ENLK7322")}),
    "blocking_validation": (case_blocking_validation, {"email": email_forms("leak.probe.d@example.org"),
                                                       "employee number": number_forms("ENLK7344")}),
    "validation_names": (case_validation_names, {"first name": ["Leakfirstname"]}),
    "dry_run": (case_dry_run, {"manager email": email_forms("leak.probe.e@example.org"),
                               "employee number": number_forms("ENLK7355")}),
    "asset_checks": (case_asset_checks, {"placeholder email": email_forms("leak.probe.f1@example.org"),
                                         "employee email": email_forms("leak.probe.f2@example.org"),
                                         "employee numbers": number_forms("ENLK7366") + number_forms("ENLK7367"),
                                         "salary": money_forms("98765.46")}),
    "headerless": (case_headerless, {"email": email_forms("leak.probe.k@example.org"),
                                     "employee number": number_forms("ENLK7388"),
                                     "names": ["Leakheadfirst", "Leakheadlast"]}),
}


def deployment(mp: pytest.MonkeyPatch, home: Path, import_dir: Path) -> None:
    for env, sub in ((settings.HOME_ENV, ""), (settings.BACKUP_DIR_ENV, "backups"), (settings.LOGS_DIR_ENV, "logs"),
                     (settings.REJECTS_DIR_ENV, "rejects"), (settings.KEYS_DIR_ENV, "keys")):
        mp.setenv(env, str(home / sub) if sub else str(home))
    mp.setenv(settings.IMPORT_DIR_ENV, str(import_dir))


class Cases:
    """Runs each case once for the whole module (its own HR database, folders and planted values)."""

    def __init__(self, env: LeakEnv):
        self.env = env
        self.done: dict[str, Case] = {}

    def new_database(self) -> tuple[str, PinnedDatabase]:
        name = create_database(self.env.admin_url, template=self.env.template, prefix="leak")
        self.env.databases.append(name)
        url = _url(self.env.admin_url, name)
        return url, PinnedDatabase(location=url)

    def get(self, name: str) -> Case:
        if name not in self.done:
            run, planted = CASES[name]
            url, hrms_db = self.new_database()
            case = Case(name, planted, home=self.env.root / name / "hrms_home", database_url=url)
            directory = self.env.root / name / "import"
            with pytest.MonkeyPatch.context() as mp, import_folder(directory):
                deployment(mp, case.home, directory)
                run(self.env, case, hrms_db, directory)
            self.done[name] = case
        return self.done[name]


@pytest.fixture(scope="module")
def cases(leak_env) -> Cases:
    return Cases(leak_env)


def xfail(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


STORAGE_CASES = [
    "pandera_rejects",
    "sql_rejects",
    "constraint_violation",
    "blocking_validation",
    "validation_names",
    "dry_run",
    "asset_checks",
    "headerless",
]


# ---------------------------------------------------------------------------------------------
# The scan


def test_the_scanner_finds_a_value_that_is_there(leak_env):
    """A canary: an op outside the boundary logs a planted email; the storage and compute-log scans see it."""
    planted = {"canary": email_forms(f"leak.canary.{uuid.uuid4().hex[:8]}@example.org")}

    @dg.op
    def leaky(context: dg.OpExecutionContext) -> None:
        context.log.info(f"hello {planted['canary'][0]}")
        print(planted["canary"][0])

    result = dg.GraphDefinition("leak_canary", node_defs=[leaky]).to_job().execute_in_process(instance=leak_env.instance)
    assert storage_hits(leak_env, planted)
    assert file_hits(compute_log_files(leak_env, [result.run_id]), planted)


@pytest.mark.parametrize("name", list(CASES))
def test_planted_values_reached_the_pipeline(cases, name):
    """Each planted value is where it belongs (the reject file, the HR database): the scans below
    would see it if it got out."""
    case = cases.get(name)
    found = set()
    for path in (case.home / "rejects").rglob("*.csv") if (case.home / "rejects").exists() else []:
        found |= {hit.split(" as ")[0] for hit in find(path.read_text(), case.planted)}
    with psycopg.connect(case.database_url) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_schema = 'hrms' AND table_type = 'BASE TABLE'")]
        for table in tables:
            for (text,) in conn.execute(sql.SQL("SELECT t::text FROM hrms.{} t").format(sql.Identifier(table))):
                found |= {hit.split(" as ")[0] for hit in find(text, case.planted)}
    assert found == set(case.planted), f"never reached the pipeline: {set(case.planted) - found}"


@pytest.mark.parametrize("name", STORAGE_CASES)
def test_dagster_storage_holds_no_planted_value(leak_env, cases, name):
    case = cases.get(name)
    assert case.run_ids
    hits = storage_hits(leak_env, case.planted)
    assert not hits, "\n".join(hits)


COMPUTE_LOG_CASES = list(CASES)


@pytest.mark.parametrize("name", COMPUTE_LOG_CASES)
def test_compute_logs_hold_no_planted_value_and_are_private(leak_env, cases, name):
    case = cases.get(name)
    files = compute_log_files(leak_env, case.run_ids)
    assert any(p.suffix == ".err" and p.stat().st_size for p in files), f"no compute log captured for {case.run_ids}"
    hits = file_hits(files, case.planted)
    assert not hits, "\n".join(hits)
    assert not_private(leak_env.compute_logs_dir) == []


@pytest.mark.parametrize("name", ["pandera_rejects", "sql_rejects", "headerless"])
def test_the_log_file_holds_only_masked_values(cases, name):
    case = cases.get(name)
    assert case.log_file is not None and case.log_file.stat().st_size, "the log file was written"
    text = case.log_file.read_text()
    if name == "headerless":
        assert "row 1 does not look like a header: 12 cells, cell 1 an e-mail address" in text, "said by shape"
    else:
        assert "***@example.org" in text or "#" in text, "the log file says what was wrong, masked"
    assert find(text, case.planted) == []
    assert stat.S_IMODE(case.log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(case.log_file.parent.stat().st_mode) == 0o700


# ---------------------------------------------------------------------------------------------
# Alerts: the sensor on failed runs, with a webhook and an email


# every POST body the webhook fixture's server received
_WEBHOOK_RECEIVED: list[bytes] = []


class _SmtpSink(socketserver.StreamRequestHandler):
    """Just enough SMTP to receive a message: every DATA block lands in `messages`."""

    messages: list[bytes] = []

    def handle(self) -> None:
        self.wfile.write(b"220 sink\r\n")
        data: list[bytes] | None = None
        while line := self.rfile.readline():
            if data is not None:
                if line.rstrip(b"\r\n") == b".":
                    _SmtpSink.messages.append(b"".join(data))
                    data = None
                    self.wfile.write(b"250 queued\r\n")
                else:
                    data.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb == b"DATA":
                data = []
                self.wfile.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def webhook():
    _WEBHOOK_RECEIVED.clear()
    server = capture_posts(_WEBHOOK_RECEIVED)
    yield f"http://127.0.0.1:{server.server_port}/hooks/hrms"
    server.shutdown()


@pytest.fixture
def smtp_port():
    _SmtpSink.messages = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("name", ["sql_rejects", "constraint_violation", "pandera_rejects", "validation_names",
                                  "headerless"])
def test_failure_alerts_hold_no_planted_value(leak_env, cases, name, webhook, smtp_port, caplog, monkeypatch):
    case = cases.get(name)
    [result] = case.results
    hrms_db = PinnedDatabase(location=case.database_url)
    for key, value in {alerts.WEBHOOK_URL_ENV: webhook, alerts.SMTP_HOST_ENV: "127.0.0.1",
                       "HRMS_ALERT_SMTP_PORT": str(smtp_port), "HRMS_ALERT_FROM": "hrms@example.com",
                       "HRMS_ALERT_TO": "hr-ops@example.com", "HRMS_ALERT_SMTP_STARTTLS": "false"}.items():
        monkeypatch.setenv(key, value)
    notifiers = [alerts.WebhookNotifier(), alerts.EmailNotifier()]
    caplog.set_level("DEBUG")
    for notifier in notifiers:
        context = dg.build_run_status_sensor_context(
            sensor_name="hrms_run_failure_alerts", dagster_instance=leak_env.instance, dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(), resources={"hrms_db": hrms_db, "alert_notifier": notifier},
        ).for_run_failure()
        alerts.hrms_run_failure_alerts(context)
        alert = alerts.alert_from_failure(context)
    assert len(_WEBHOOK_RECEIVED) == 1 and len(_SmtpSink.messages) == 1, "both notifiers delivered"
    mail = email.message_from_bytes(_SmtpSink.messages[0], policy=policy.default)
    with psycopg.connect(case.database_url) as conn:
        row = conn.execute("SELECT a::text FROM hrms.core_alert a").fetchone()[0]
    payloads = {"alert text": alert.text(), "webhook JSON": _WEBHOOK_RECEIVED[0].decode(), "email": mail.get_content(),
                "raw email": _SmtpSink.messages[0].decode(), "hrms.core_alert row": row, "log": caplog.text}
    hits = [f"{where}: {hit}" for where, text in payloads.items() for hit in find(text, case.planted)]
    assert not hits, "\n".join(hits)
    assert "failed at step" in alert.text() and alert.error_message, "the alert still says what failed"
    assert f"/runs/{result.run_id}" in json.loads(_WEBHOOK_RECEIVED[0])["text"]


# ---------------------------------------------------------------------------------------------
# `dagster job execute`: compute logs on disk and console output


def test_dagster_job_execute_writes_private_compute_logs_without_planted_values(leak_env, cli_base_env, project_root):
    planted = {"salary": money_forms("98765.47"), "email": email_forms("leak.probe.h@@example.org"),
               "manager": email_forms("leak.probe.h2@example.org")}
    cases_ = Cases(leak_env)
    url, _ = cases_.new_database()
    home = leak_env.root / "cli" / "hrms_home"
    directory = write_base(leak_env.root / "cli" / "import")
    write(directory, "history.csv", [
        BASE["history.csv"][0],
        ["kofi.owusu@nhia.gov.gh", "salary_change", "2022-01-01", "", "", "", "", "98,765.47", "4800.00"],
        ["leak.probe.h@@example.org", "hire", "2022-02-01", "", "", "", "", "", ""],
    ])
    config = leak_env.root / "cli" / "import.yaml"
    config.write_text(yaml.safe_dump({"resources": {RESOURCE_KEY: {"config": {"log_file": "cli.log", "create_users": True}}}}))
    env = dict(cli_base_env, DAGSTER_HOME=str(leak_env.dagster_home), **{
        settings.DAGSTER_PG_URL_ENV: leak_env.storage_url, settings.DATABASE_URL_ENV: url,
        settings.IMPORT_DIR_ENV: str(directory), settings.HOME_ENV: str(home),
        settings.BACKUP_DIR_ENV: str(home / "backups"), settings.LOGS_DIR_ENV: str(home / "logs"),
        settings.REJECTS_DIR_ENV: str(home / "rejects"), settings.KEYS_DIR_ENV: str(home / "keys")})
    env.pop(hrms_instance.COMPUTE_LOGS_DIR_ENV, None)
    before = set(leak_env.compute_logs_dir.iterdir())
    done = subprocess.run([str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines",
                           "-j", "hrms_import", "-c", str(config)],
                          env=env, cwd=project_root, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, "the history stage fails on its rejects"
    assert "history.csv" in done.stdout + done.stderr
    runs = sorted(set(leak_env.compute_logs_dir.iterdir()) - before)
    assert len(runs) == 1, runs
    files = compute_log_files(leak_env, [runs[0].name])
    err = [p for p in files if p.suffix == ".err"]
    assert err and "history.csv" in err[0].read_text(), "the compute log holds the run's console log"
    hits = file_hits(files, planted) + [f"console: {h}" for h in find(done.stdout + done.stderr, planted)]
    assert not hits, "\n".join(hits)
    assert find((home / "logs" / "cli.log").read_text(), planted) == []
    assert not_private(leak_env.compute_logs_dir) == []
    assert not_private(home / "logs") == []


# ---------------------------------------------------------------------------------------------
# The boundary itself


def _every_compute_function():
    from hrms_pipelines.definitions import defs

    seen = {}
    for job in defs.resolve_all_job_defs():
        for op in job.graph.iterate_op_defs():
            seen[f"op {op.name}"] = getattr(op.compute_fn, "decorated_fn", op.compute_fn)
    for sensor in defs.sensors:
        seen[f"sensor {sensor.name}"] = getattr(sensor, "_run_status_sensor_fn", None) or sensor._raw_fn
    for schedule in defs.schedules:
        function = getattr(schedule._execution_fn, "decorated_fn", None)
        if function is not None:   # a schedule of a job with run config only runs no code of ours
            seen[f"schedule {schedule.name}"] = function
    return seen


def test_every_op_asset_check_sensor_and_schedule_is_behind_the_error_boundary():
    functions = _every_compute_function()
    assert len(functions) > 40
    unguarded = sorted(name for name, fn in functions.items() if not errors.is_guarded(fn))
    assert unguarded == [], "wrap these with hrms_pipelines.errors.error_boundary (or retries.transient_retries)"


def database_error(url: str, *statements: str, copy: bytes | None = None) -> psycopg.Error:
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TEMP TABLE pay (id serial, email text UNIQUE, salary numeric(12,2) CHECK (salary < 50000), "
                     "employee_number text)")
        conn.execute("INSERT INTO pay (email, salary, employee_number) VALUES ('leak.probe.x@example.org', 1, 'ENLK7399')")
        try:
            for statement in statements:
                conn.execute(statement)
            if copy is not None:
                with conn.cursor().copy("COPY pay (email, salary, employee_number) FROM STDIN (FORMAT csv)") as cp:
                    cp.write(copy)
        except psycopg.Error as exc:
            return exc
    raise AssertionError("no error")


PLANTED_X = {"email": email_forms("leak.probe.x@example.org"), "salary": money_forms("98765.49"),
             "employee number": number_forms("ENLK7399")}


@pytest.mark.parametrize("statement, copy, expected", [
    ("INSERT INTO pay (email) VALUES ('leak.probe.x@example.org')", None,
     ["duplicate key value violates unique constraint \"pay_email_key\"", "SQLSTATE 23505 UniqueViolation",
      "constraint pay_email_key", "Key (email)=(l***@example.org) already exists."]),
    ("INSERT INTO pay (email, salary, employee_number) VALUES ('y@example.org', 98765.49, 'ENLK7399')", None,
     ["violates check constraint \"pay_salary_check\"", "SQLSTATE 23514", "Failing row contains (values not shown)"]),
    ("SELECT '98,765.49'::numeric", None, ['invalid input syntax for type numeric: "##,###.##"', "SQLSTATE 22P02"]),
    (None, b"a@b.org,1,E1\nz@example.org,98765.49x,ENLK7399\n",
     ['invalid input syntax for type numeric: "#####.##x"', "column salary", 'COPY pay, line 2, column salary: "#####.##x"']),
    (None, b"leak.probe.x@example.org,98765.49,ENLK7399,extra\n",
     ["extra data after last expected column", "COPY pay, line 1: (the line is not shown)"]),
])
def test_a_database_error_leaves_as_a_masked_message_that_names_what_failed(database_url, statement, copy, expected):
    err = database_error(database_url, *([statement] if statement else []), copy=copy)
    assert find(str(err), PLANTED_X), "the raw error does quote the values"

    @dg.op
    @retries.transient_retries
    def insert_pay(context: dg.OpExecutionContext) -> None:
        try:
            raise err
        except psycopg.Error as exc:
            raise RuntimeError(f"payroll stage failed: {exc}") from exc   # a careless wrapper, quoting it all

    result = dg.GraphDefinition("pay", node_defs=[insert_pay]).to_job().execute_in_process(raise_on_error=False)
    failure = result.failure_data_for_node("insert_pay")
    assert failure.error.cls_name == "Failure" and failure.error.cause is None and failure.error.context is None
    message = failure.user_failure_data.description
    assert message.startswith("payroll stage failed: ")
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    assert find(message + failure.error.message + "".join(failure.error.stack), PLANTED_X) == []
    assert failure.user_failure_data.metadata["error_class"].value == "RuntimeError"
    assert failure.user_failure_data.metadata["database_sqlstate"].value == err.sqlstate


def test_a_transient_error_is_still_retried_and_its_retry_event_is_sanitised(database_url, monkeypatch):
    monkeypatch.setattr(retries, "BASE_DELAY_SECONDS", 0.01)
    attempts = []

    @dg.op
    @retries.transient_retries
    def flaky(context: dg.OpExecutionContext) -> None:
        attempts.append(context.retry_number)
        if context.retry_number == 0:
            err = psycopg.errors.LockNotAvailable("canceling statement: row leak.probe.x@example.org is locked")
            raise err

    result = dg.GraphDefinition("flaky", node_defs=[flaky]).to_job().execute_in_process()
    assert result.success and attempts == [0, 1]
    [retry] = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    error = retry.event_specific_data.error
    assert error.cls_name == "RetryRequested" and error.cause.cls_name == "SanitisedError" and error.cause.cause is None
    assert find(str(retry), PLANTED_X) == [] and "l***@example.org" in error.cause.message


def test_dagster_control_flow_passes_the_boundary_unchanged():
    @errors.error_boundary
    def interrupted():
        raise dg.DagsterExecutionInterruptedError()

    @errors.error_boundary
    def invalid():
        raise dg.DagsterInvariantViolationError("framework says no")

    with pytest.raises(dg.DagsterExecutionInterruptedError):
        interrupted()
    with pytest.raises(dg.DagsterInvariantViolationError, match="framework says no"):
        invalid()

    @errors.error_boundary
    def own_failure():
        try:
            raise ValueError("column salary, value '98765.49' is wrong")
        except ValueError as exc:
            raise dg.Failure(description=f"stage failed: {exc}", metadata={"detail": f"{exc}"}) from exc

    with pytest.raises(dg.Failure) as info:
        own_failure()
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert info.value.description == "stage failed: column salary, value '#####.##' is wrong"
    assert info.value.metadata["detail"].value == "column salary, value '#####.##' is wrong"


def test_scrub_text_masks_what_quotes_a_value():
    assert privacy.scrub_text("Key (email)=(leak.probe.x@example.org) already exists.") == \
        "Key (email)=(l***@example.org) already exists."
    assert privacy.scrub_text("Key (code)=(ENG) already exists.") == "Key (code)=(ENG) already exists."
    assert privacy.scrub_text("Failing row contains (5, a@b.org, 98765.49).") == "Failing row contains (values not shown)."
    assert privacy.scrub_text("users.csv row 5, column employee_number, value 'ENLK7399': duplicate key") == \
        "users.csv row 5, column employee_number, value 'XXXX####': duplicate key"
    assert privacy.scrub_text("users.csv row 5, column team_code, value 'NOPE': unknown team") == \
        "users.csv row 5, column team_code, value 'NOPE': unknown team"
    assert privacy.scrub_text("value '98765.49' for column salary (numeric) was refused") == \
        "value '#####.##' for column salary (numeric) was refused"
    assert privacy.mask_database_message('relation "hrms.x" does not exist') == 'relation "hrms.x" does not exist'


def test_the_log_scrub_filter_masks_a_careless_log_line(caplog):
    import logging

    logger = privacy.scrub_logger(logging.getLogger("hrms_test.scrub"))
    privacy.scrub_logger(logger)
    assert logger.filters.count(privacy.SCRUB_FILTER) == 1
    with caplog.at_level("INFO", logger="hrms_test.scrub"):
        logger.info("user %s, column salary, value '%s'", "leak.probe.x@example.org", "98765.49")
    assert "l***@example.org, column salary, value '#####.##'" in caplog.text and not find(caplog.text, PLANTED_X)


# ---------------------------------------------------------------------------------------------
# Private files without a private umask, and with one


def test_compute_log_manager_is_private_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        manager = hrms_instance.PrivateComputeLogManager(base_dir=str(tmp_path / "logs"))
        with manager.capture_logs(["run1", "compute_logs", "abcdefgh"]):
            print("captured")
        with manager.open_log_stream(["run2", "compute_logs", "x"], hrms_instance.ComputeIOType.STDERR) as stream:
            stream.write("hello\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "logs" / "run1" / "compute_logs" / "abcdefgh.out").read_text() == "captured\n"
    assert (tmp_path / "logs" / "run1" / "compute_logs" / "abcdefgh.complete").exists()
    assert not_private(tmp_path / "logs") == []


def test_every_instance_config_keeps_compute_logs_private(project_root):
    for path in [project_root / "dagster.yaml", project_root / "deploy" / "dagster.production.yaml"]:
        assert yaml.safe_load(path.read_text())["compute_logs"] == {
            "module": "hrms_pipelines.instance", "class": "PrivateComputeLogManager"}, path
    # Kubernetes: run pods' local files are unreachable from the webserver, so nothing is written
    k8s = yaml.safe_load((project_root / "deploy" / "dagster.k8s.yaml").read_text())["compute_logs"]
    assert k8s["class"] == "NoOpComputeLogManager"


def test_the_local_launcher_runs_everything_with_a_private_umask(cli_base_env, tmp_path, project_root):
    env = dict(cli_base_env, **{settings.DATABASE_URL_ENV: "postgresql://unused@127.0.0.1:1/none",
                                "DAGSTER_HOME": str(tmp_path), settings.HOME_ENV: str(tmp_path / "home")})
    done = subprocess.run([str(project_root / ".venv/bin/python"), "-m", "hrms_pipelines.local", "run", "--",
                           str(project_root / ".venv/bin/python"), "-c", "import os; print(oct(os.umask(0)))"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0o77"
