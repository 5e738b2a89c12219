"""Partitions launched from the UI's partition dialogs, in a real Chromium: one seed fixture of the
`reference_data` asset, and one registered backfill of the `data_backfill` job."""

import re
import time

import psycopg
import pytest
from playwright.sync_api import expect

from hrms_pipelines.resources import PinnedDatabase
from hrms_pipelines.seeding import fixtures, loader
from hrms_pipelines_tests.e2e.browser import choose_partition, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SEED_PARTITION = "roles"
BACKFILL_PARTITION = "set_employee_status"


def wait_for_partition_run(dagster_ui, job: str | None, partition: str, timeout: float = 180) -> dict:
    """The run the UI launched for a partition (a backfill's runs are created by the daemon)."""
    run_filter = {"tags": [{"key": "dagster/partition", "value": partition}]}
    if job:
        run_filter["pipelineName"] = job
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = dagster_ui.runs(**run_filter)
        if runs:
            assert len(runs) == 1, runs
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no run for partition {partition!r} within {timeout}s")


def test_seed_partition_from_the_partitions_dialog(page, dagster_ui, e2e_database_url):
    fixture = fixtures.get(SEED_PARTITION)
    page.goto("/assets/reference_data")
    page.get_by_role("button", name=re.compile(r"Materialize")).first.click()
    dialog = page.locator(".bp5-dialog").filter(has_text="Launch runs to materialize reference_data")
    expect(dialog).to_be_visible()
    choose_partition(page, dialog, SEED_PARTITION, "Launch runs to materialize reference_data")
    expect(dialog).to_contain_text("1 partition")
    screenshot(page, "04_seed_partition_dialog")
    dialog.get_by_role("button", name=re.compile(r"Launch 1 run")).click()

    run = wait_for_partition_run(dagster_ui, None, SEED_PARTITION)
    assert dagster_ui.wait_for_run(run["runId"]) == "SUCCESS", dagster_ui.step_stats(run["runId"])
    assert dagster_ui.check_evaluations(run["runId"]) == {"fixture_rows_present": True}
    assert SEED_PARTITION in dagster_ui.materialized_partitions("reference_data")
    rows_in_file, missing = loader.missing_natural_keys(PinnedDatabase(location=e2e_database_url), fixture)
    with psycopg.connect(e2e_database_url) as conn:
        loaded = conn.execute(f"SELECT count(*) FROM hrms.{fixture.table}").fetchone()[0]
    assert rows_in_file > 0 and missing == [] and loaded == rows_in_file

    page.goto(f"/runs/{run['runId']}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    screenshot(page, "04_seed_partition_run")
    page.goto("/assets/reference_data?view=partitions")
    expect(page.get_by_text(SEED_PARTITION, exact=True).first).to_be_visible()
    screenshot(page, "04_seed_partitions_status")


def test_backfill_partition_from_the_partitions_dialog(page, dagster_ui, e2e_database_url):
    # Three employees without a status: the backfill's work (one of them has left).
    with psycopg.connect(e2e_database_url) as conn:
        conn.execute("""INSERT INTO hrms.employees_employee (email, first_name, last_name, hire_date, termination_date)
                        VALUES ('e2e.one@nhia.gov.gh', 'Efua', 'One', '2020-01-06', NULL),
                               ('e2e.two@nhia.gov.gh', 'Kojo', 'Two', '2019-03-04', NULL),
                               ('e2e.left@nhia.gov.gh', 'Akua', 'Left', '2015-05-05', '2021-06-30')""")

    page.goto("/locations/hrms_pipelines/jobs/data_backfill/partitions")
    page.get_by_role("button", name=re.compile(r"Launch backfill")).click()
    dialog = page.locator(".bp5-dialog").filter(has_text="Launch data_backfill backfill")
    expect(dialog).to_be_visible()
    choose_partition(page, dialog, BACKFILL_PARTITION, "Launch data_backfill backfill")
    screenshot(page, "04_backfill_partition_dialog")
    submit = dialog.get_by_role("button", name=re.compile(r"Submit 1 run"))
    expect(submit).to_be_enabled()
    submit.click()

    run = wait_for_partition_run(dagster_ui, "data_backfill", BACKFILL_PARTITION)
    assert dagster_ui.wait_for_run(run["runId"]) == "SUCCESS", dagster_ui.step_stats(run["runId"])
    backfill_id = next(tag["value"] for tag in run["tags"] if tag["key"] == "dagster/backfill")
    assert dagster_ui.wait_for_backfill(backfill_id) in ("COMPLETED", "COMPLETED_SUCCESS")
    with psycopg.connect(e2e_database_url) as conn:
        statuses = dict(conn.execute("SELECT email, status FROM hrms.employees_employee WHERE email LIKE 'e2e.%'").fetchall())
        checkpoint = conn.execute("SELECT status, rows_done FROM hrms.core_backfillcheckpoint WHERE name = %s",
                                  [BACKFILL_PARTITION]).fetchone()
    assert statuses == {"e2e.one@nhia.gov.gh": "active", "e2e.two@nhia.gov.gh": "active", "e2e.left@nhia.gov.gh": "terminated"}
    assert checkpoint == ("completed", 3)

    page.goto("/locations/hrms_pipelines/jobs/data_backfill/partitions")
    expect(page.get_by_text("Backfill history")).to_be_visible()
    history = page.get_by_role("row").filter(has_text=backfill_id)
    expect(history).to_contain_text("1 partition")
    expect(history).to_contain_text("Succeeded")
    screenshot(page, "04_backfill_partitions_status", docs="backfill-partitions")
