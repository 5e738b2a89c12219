"""Operations: failure alerts, retries of transient database errors."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import psycopg
import pytest

from hrms_pipelines.resources import READER
from hrms_pipelines import alerts, errors, retries


def failed_run(instance: dg.DagsterInstance):
    @dg.op
    @errors.error_boundary
    def load_payroll_file() -> None:
        raise ValueError("payroll.csv row 7, column salary, value '98765.43': not a number (uploaded by ama.mensah@nhia.gov.gh)")

    @dg.job(name="payroll_load")
    def payroll_load() -> None:
        load_payroll_file()

    result = payroll_load.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result


def failure_context(instance, result, **resources):
    return dg.build_run_status_sensor_context(
        sensor_name="hrms_run_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources=resources,
    ).for_run_failure()


def test_a_failed_run_is_recorded_with_job_step_error_and_link(hrms_db):
    with dg.instance_for_test() as instance:
        result = failed_run(instance)
        context = failure_context(instance, result, hrms_db=hrms_db, alert_notifier=alerts.LogNotifier())
        alerts.hrms_run_failure_alerts(context)
        alerts.hrms_run_failure_alerts(context)  # a second evaluation records nothing twice
    with hrms_db.connection(READER) as conn:
        rows = conn.execute("SELECT run_id, job_name, step_key, error_class, error_message, run_url, delivered_to "
                            "FROM hrms.core_alert").fetchall()
    assert len(rows) == 1
    run_id, job, step, error_class, message, url, delivered = rows[0]
    assert (run_id, job, step, error_class) == (result.run_id, "payroll_load", "load_payroll_file", "ValueError")
    assert "row 7, column salary, value '#####.##': not a number (uploaded by a***@nhia.gov.gh)" in message
    assert "98765.43" not in message and "ama.mensah" not in message
    assert url.endswith(f"/runs/{result.run_id}") and delivered == []


class _Collector(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_webhook_notifier_delivers_the_alert_to_chat(hrms_db, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, f"http://127.0.0.1:{server.server_port}/hooks/hrms")
        notifier = alerts.notifier_from_environment()
        assert isinstance(notifier, alerts.WebhookNotifier)
        with dg.instance_for_test() as instance:
            result = failed_run(instance)
            alerts.hrms_run_failure_alerts(failure_context(instance, result, hrms_db=hrms_db, alert_notifier=notifier))
    finally:
        server.shutdown()
    assert len(_Collector.received) == 1
    payload = _Collector.received[0]
    assert payload["alert"]["job_name"] == "payroll_load" and payload["alert"]["step_key"] == "load_payroll_file"
    assert "HRMS run of payroll_load failed at step load_payroll_file" in payload["text"]
    assert "98765.43" not in json.dumps(payload) and "ama.mensah" not in json.dumps(payload)
    with hrms_db.connection(READER) as conn:
        assert conn.execute("SELECT delivered_to FROM hrms.core_alert").fetchone()[0] == ["webhook"]


def test_an_undeliverable_alert_is_still_recorded(hrms_db, monkeypatch):
    monkeypatch.setenv(alerts.WEBHOOK_URL_ENV, "http://127.0.0.1:9/nobody-listens")
    monkeypatch.setenv("HRMS_ALERT_TIMEOUT_SECONDS", "2")
    notifier = alerts.WebhookNotifier()
    with dg.instance_for_test() as instance:
        result = failed_run(instance)
        alerts.hrms_run_failure_alerts(failure_context(instance, result, hrms_db=hrms_db, alert_notifier=notifier))
    with hrms_db.connection(READER) as conn:
        assert conn.execute("SELECT job_name, delivered_to FROM hrms.core_alert").fetchall() == [("payroll_load", [])]


def real_error(url: str, statement: str, *, hold_lock: bool = False) -> psycopg.Error:
    with psycopg.connect(url) as holder, psycopg.connect(url) as conn:
        if hold_lock:
            holder.execute("LOCK TABLE hrms.org_team IN ACCESS EXCLUSIVE MODE")
        conn.execute("SET lock_timeout = '100ms'")
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc
    raise AssertionError("statement did not fail")


def test_transient_errors_are_told_apart_from_real_ones(database_url):
    lock_timeout = real_error(database_url, "SELECT * FROM hrms.org_team", hold_lock=True)
    unique = real_error(database_url, "INSERT INTO hrms.org_organization (code, name) VALUES ('A', 'a'), ('A', 'a')")
    syntax = real_error(database_url, "SELEC 1")
    assert retries.is_transient(lock_timeout)
    assert not retries.is_transient(unique) and not retries.is_transient(syntax)
    wrapped = RuntimeError("stage failed")
    wrapped.__cause__ = lock_timeout
    assert retries.is_transient(wrapped), "a transient cause counts through wrapping errors"
    with pytest.raises(psycopg.OperationalError) as excinfo:
        psycopg.connect("postgresql://postgres@/nowhere?host=/nonexistent-socket-dir", connect_timeout=2)
    assert retries.is_transient(excinfo.value)


def test_a_step_is_retried_after_a_lock_timeout_and_a_real_error_is_not(database_url, monkeypatch):
    monkeypatch.setattr(retries, "BASE_DELAY_SECONDS", 0.05)
    attempts: list[int] = []

    @dg.op
    @retries.transient_retries
    def rename_team(context: dg.OpExecutionContext) -> None:
        attempts.append(context.retry_number)
        with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as conn:
            if context.retry_number == 0:  # first attempt: someone holds the table
                holder.execute("LOCK TABLE hrms.org_team IN ACCESS EXCLUSIVE MODE")
            conn.execute("SET lock_timeout = '100ms'")
            conn.execute("UPDATE hrms.org_team SET name = name")

    @dg.op
    @retries.transient_retries
    def insert_duplicate(context: dg.OpExecutionContext) -> None:
        attempts.append(context.retry_number)
        with psycopg.connect(database_url) as conn:
            conn.execute("INSERT INTO hrms.org_organization (code, name) VALUES ('A', 'a'), ('A', 'a')")

    assert dg.GraphDefinition("g1", node_defs=[rename_team]).to_job().execute_in_process().success
    assert attempts == [0, 1]

    attempts.clear()
    result = dg.GraphDefinition("g2", node_defs=[insert_duplicate]).to_job().execute_in_process(raise_on_error=False)
    assert not result.success and attempts == [0]


def test_dry_run_job_is_read_only_and_outside_the_writer_pool(hrms_db, database_url, tmp_path, import_dir):
    from hrms_pipelines import settings
    from hrms_pipelines.definitions import defs
    from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
    from hrms_pipelines_tests.import_helpers import checksums, write_base

    job = defs.resolve_job_def("hrms_import_dry_run")
    assert {node.definition.pool for node in job.graph.nodes} == {None}
    stages = {f"{kind}_{name}" for kind in ("backup", "import") for name in ("ladders", "org", "users", "history")}
    writers = [n for n in defs.resolve_job_def("hrms_import").graph.nodes if n.name in stages]
    assert len(writers) == 8 and {n.definition.pool for n in writers} == {settings.WRITER_POOL}

    import_dir(write_base(tmp_path / "import"))
    before = checksums(database_url)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions()})
        observations = [e.asset_observation_data.asset_observation for e in result.all_events
                        if e.event_type_value == "ASSET_OBSERVATION"]
        assert not instance.get_latest_materialization_events([dg.AssetKey("import_users")]).get(dg.AssetKey("import_users"))
    assert result.success
    assert checksums(database_url) == before
    users = next(o for o in observations if o.asset_key == dg.AssetKey("import_users"))
    assert users.metadata["dry_run"].value is True
    assert "3" in str(users.metadata)  # three users would be inserted


def test_an_import_stage_is_retried_after_a_lock_timeout(hrms_db, database_url, tmp_path, monkeypatch, import_dir):
    from hrms_pipelines.imports import assets
    from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
    from hrms_pipelines_tests.import_helpers import scalar, write_base

    monkeypatch.setattr(retries, "BASE_DELAY_SECONDS", 0.2)
    import_dir(write_base(tmp_path / "import"))
    released = threading.Event()

    def hold_the_table_until_a_waiter_gives_up() -> None:
        with psycopg.connect(database_url) as holder, psycopg.connect(database_url, autocommit=True) as watcher:
            holder.execute("LOCK TABLE hrms.ladders_ladder IN ACCESS EXCLUSIVE MODE")
            waiter_seen = False
            for _ in range(600):  # at most ~60 s
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'hrms.ladders_ladder'::regclass"
                ).fetchone()[0]
                if waiting:
                    waiter_seen = True
                elif waiter_seen:
                    break  # the import's first attempt hit its lock_timeout
                threading.Event().wait(0.1)
            holder.rollback()
        released.set()

    holder = threading.Thread(target=hold_the_table_until_a_waiter_gives_up)
    holder.start()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [assets.import_ladders], instance=instance,
            resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions(lock_timeout="300ms")},
        )
    holder.join()
    assert released.is_set() and result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) >= 1
    assert scalar(database_url, "SELECT count(*) FROM hrms.ladders_ladder") == 1
