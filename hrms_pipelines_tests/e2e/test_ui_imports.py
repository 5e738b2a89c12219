"""The import as its users see it in the Dagster UI, in a real Chromium: the lineage, "Materialize all"
on the sample company, and a file with one bad row stopped by the blocking check.

"Materialize all" is shift-clicked: that opens the launchpad, where the run's options are set. The
sample's organisation files name leaders that only the users file brings, so the import needs
`create_users: true` (the same option config/hrms_import.yaml and the nightly schedule pass).

The tests share the UI's HR database and run in file order: the sample import, then the bad row.
"""

import re

import psycopg
import pytest
from playwright.sync_api import expect

from hrms_pipelines.imports import validations
from hrms_pipelines_tests.e2e.browser import (
    IMPORT_GROUP_LINEAGE, asset_node_boxes, centre_nodes, hide_side_panels, materialize_all_with_config,
    op_node_boxes, screenshot, zoom_until_detailed,
)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

STAGES = ("ladders", "org", "users", "history")
CHAIN = [f"{kind}_{stage}" for stage in STAGES for kind in ("backup", "import")]
CHECK_OPS = {stage: [f"import_{stage}_{v.name}" for v in validations.BY_STAGE[stage]] for stage in STAGES}
BLOCKING_OPS = {stage: [f"import_{stage}_{v.name}" for v in validations.BY_STAGE[stage] if v.blocking] for stage in STAGES}
ALL_CHECKS = {v.name for v in validations.VALIDATIONS}


def scalar(url: str, query: str, params=None):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_lineage_shows_backups_imports_and_checks_in_order(page, dagster_ui):
    # The global asset lineage, filtered to the import group: one row, left to right.
    page.goto(IMPORT_GROUP_LINEAGE)
    boxes = asset_node_boxes(page, CHAIN)
    screenshot(page, "01_import_lineage")
    lefts = [boxes[name]["x"] for name in CHAIN]
    assert all(a < b for a, b in zip(lefts, lefts[1:])), f"not left to right in {CHAIN}: {lefts}"
    middles = [boxes[name]["y"] + boxes[name]["height"] / 2 for name in CHAIN]
    assert max(middles) - min(middles) < 5, f"the chain is not one row: {middles}"

    # The hrms_import job as ops: every asset check is a node of its own, between its stage's import
    # and the next stage's backup; the blocking ones are what the next backup waits for.
    page.goto("/locations/hrms_pipelines/jobs/hrms_import")
    page.get_by_text("View as Asset Graph", exact=True).click()
    every_op = CHAIN + [op for ops in CHECK_OPS.values() for op in ops]
    boxes = op_node_boxes(page, every_op)
    screenshot(page, "01_hrms_import_op_graph")
    top = {name: box["y"] for name, box in boxes.items()}
    for i, stage in enumerate(STAGES):
        checks = CHECK_OPS[stage]
        assert top[f"backup_{stage}"] < top[f"import_{stage}"] < min(top[c] for c in checks), stage
        if i + 1 < len(STAGES):
            assert max(top[c] for c in checks) < top[f"backup_{STAGES[i + 1]}"], stage
    inputs = page.locator('[class*="OpIOBox"][title]').evaluate_all("els => els.map(e => e.getAttribute('title'))")
    for i, stage in enumerate(STAGES[:-1]):
        gate = [t for t in inputs if f"import_{stage}:result" in t and any(f"{c}:result" in t for c in CHECK_OPS[stage])]
        assert len(gate) == 1, f"no single input of backup_{STAGES[i + 1]} fed by the {stage} checks: {inputs}"
        sources = set(re.findall(r"^(\w+):result$", gate[0], re.MULTILINE))
        assert sources == {f"import_{stage}", *BLOCKING_OPS[stage]}, f"backup_{STAGES[i + 1]} waits for {sources}"

    # And through GraphQL: the same assets and checks in the job the UI shows.
    data = dagster_ui.graphql("""{ assetNodes(group: {groupName: "hrms_import", repositoryName: "__repository__",
        repositoryLocationName: "hrms_pipelines"}) { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } } }""")
    graph = {n["assetKey"]["path"][0]: {c["name"] for c in n["assetChecksOrError"]["checks"]} for n in data["assetNodes"]}
    assert set(graph) == set(CHAIN)
    assert set().union(*graph.values()) == ALL_CHECKS


def test_materialize_all_on_the_sample_succeeds_and_checks_pass(page, browser, dagster_ui, e2e_database_url):
    run_id = materialize_all_with_config(page, {"create_users: false": "create_users: true"})
    screenshot(page, "02_sample_run_launched")
    assert dagster_ui.wait_for_run(run_id) == "SUCCESS", dagster_ui.step_stats(run_id)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()
    screenshot(page, "02_sample_run_succeeded")

    steps = dagster_ui.step_stats(run_id)
    assert {name: steps.get(name) for name in CHAIN} == dict.fromkeys(CHAIN, "SUCCESS")
    evaluations = dagster_ui.check_evaluations(run_id)
    assert evaluations == dict.fromkeys(ALL_CHECKS, True)
    assert scalar(e2e_database_url, "SELECT count(*) FROM hrms.employees_employee WHERE NOT is_placeholder") == 200
    assert scalar(e2e_database_url, "SELECT count(*) FROM hrms.history_timelineevent") == 2000

    # Each import asset's Checks tab: every check of the stage passed.
    for stage in STAGES:
        page.goto(f"/assets/import_{stage}?view=checks")
        names = [v.name for v in validations.BY_STAGE[stage]]
        expect(page.get_by_text(f"Checks ({len(names)})")).to_be_visible()
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(names))
        expect(page.get_by_text("Failed", exact=True)).to_have_count(0)
        screenshot(page, f"02_checks_import_{stage}")

    # The lineage once more, in detail: every asset materialized, every import's checks passed.
    # Wide enough for the eight nodes in one row; this is the README's picture.
    wide = browser.new_page(dagster_ui.base_url, viewport={"width": 2000, "height": 500})
    try:
        wide.goto(IMPORT_GROUP_LINEAGE)
        asset_node_boxes(wide, CHAIN)
        hide_side_panels(wide)
        centre_nodes(wide, CHAIN[0], CHAIN[-1])   # zooming keeps the middle of the viewport in place
        zoom_until_detailed(wide)
        asset_node_boxes(wide, [CHAIN[0], CHAIN[-1]])   # both ends still in view
        for stage in STAGES:
            expect(wide.get_by_text(f"{len(CHECK_OPS[stage])} / {len(CHECK_OPS[stage])} Passed").first).to_be_visible()
        expect(wide.get_by_text("Materialized", exact=True)).to_have_count(len(CHAIN))
        screenshot(wide, "02_import_lineage_materialized", docs="asset-graph")
    finally:
        wide.close()


def test_a_bad_row_fails_the_blocking_check_and_later_stages_do_not_run(page, dagster_ui, e2e_database_url, e2e_dirs):
    # The bad file is chosen by name inside the deployment's import folder (run config never names a folder).
    bad_dir = {"ladders_file: ladders.csv": f"ladders_file: {e2e_dirs['bad'].name}", "create_users: false": "create_users: true"}
    level_8 = "SELECT count(*) FROM hrms.ladders_level v JOIN hrms.ladders_ladder l ON l.id = v.ladder_id " \
              "WHERE l.code = 'ENG' AND v.level_number = 8"
    later = [name for name in CHAIN if not name.endswith("_ladders")] + [op for s in STAGES[1:] for op in CHECK_OPS[s]]

    # As configured by default, the stage runs its blocking validations before commit: it fails, names
    # the check and the row, rolls back; nothing after it starts.
    run_id = materialize_all_with_config(page, bad_dir)
    assert dagster_ui.wait_for_run(run_id) == "FAILURE"
    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    expect(page.get_by_text("invalid_level_numbers: 1 row(s)").first).to_be_visible()
    expect(page.get_by_text("level 7 is missing", exact=False).first).to_be_visible()
    screenshot(page, "03_bad_row_stage_rolled_back")
    steps = dagster_ui.step_stats(run_id)
    assert steps.get("import_ladders") == "FAILURE"
    assert not [s for s in later if steps.get(s) == "SUCCESS"], steps
    assert scalar(e2e_database_url, level_8) == 0, "the failed stage must have rolled back"

    # With the in-stage validation off (validate: false) the row lands, and the blocking asset check
    # is what stops the chain: it fails in the UI with the offending row, and no later stage runs.
    run_id = materialize_all_with_config(page, {**bad_dir, "validate: true": "validate: false"})
    assert dagster_ui.wait_for_run(run_id) == "FAILURE"
    expect(page.get_by_text("1 blocking asset check failed with ERROR severity", exact=False).first).to_be_visible()
    screenshot(page, "03_bad_row_blocking_check_failed_run")
    steps = dagster_ui.step_stats(run_id)
    assert steps.get("import_ladders") == "SUCCESS"
    assert steps.get("import_ladders_invalid_level_numbers") == "FAILURE"
    assert not [s for s in later if steps.get(s) == "SUCCESS"], steps
    assert dagster_ui.check_evaluations(run_id) == {
        v.name: v.name != "invalid_level_numbers" for v in validations.BY_STAGE["ladders"]}
    assert scalar(e2e_database_url, level_8) == 1

    page.goto("/assets/import_ladders?view=checks")
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
    page.get_by_text("invalid_level_numbers", exact=True).first.click()
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    screenshot(page, "03_bad_row_check_in_asset_page", docs="blocked-check")
    page.get_by_text("[Show Markdown]").first.click()   # the offending rows, as a table
    expect(page.get_by_text("level 7 is missing").first).to_be_visible()
    page.wait_for_timeout(800)   # let the table's dialog finish fading in before the picture
    screenshot(page, "03_bad_row_offending_rows", docs="blocked-check-rows")


def test_a_dry_run_shows_its_preview_in_the_metadata_panel(page, dagster_ui, e2e_database_url, e2e_dirs):
    # A users export in which three people have a new job title and one person is new, imported as a
    # dry run with force_update: every stage in one transaction, rolled back, its preview recorded.
    sample_users = (e2e_dirs["sample"] / "users.csv").read_text(encoding="utf-8").splitlines()
    header, rows = sample_users[0], sample_users[1:]
    changed = [row.replace(",Engineer,", ",Principal Engineer,", 1) if i < 3 else row for i, row in enumerate(rows)]
    assert changed[:3] != rows[:3]
    new = "e2e.preview@nhia.gov.gh,NHIA900001,Esi,Preview,Analyst,active,2024-02-01,,,ICT,MOBILE,BACKEND,,ENG,1"
    (e2e_dirs["sample"] / "users_changed.csv").write_text("\n".join([header, *changed, new]) + "\n", encoding="utf-8")
    titles = "SELECT count(*) FROM hrms.employees_employee WHERE job_title = 'Principal Engineer'"
    before = scalar(e2e_database_url, titles)

    run_id = materialize_all_with_config(page, {
        "dry_run: false": "dry_run: true", "users_file: users.csv": "users_file: users_changed.csv",
        "force_update: false": "force_update: true", "create_users: false": "create_users: true"})
    assert dagster_ui.wait_for_run(run_id) == "SUCCESS", dagster_ui.step_stats(run_id)
    assert scalar(e2e_database_url, titles) == before, "a dry run must change nothing"
    assert scalar(e2e_database_url, "SELECT count(*) FROM hrms.employees_employee WHERE email = 'e2e.preview@nhia.gov.gh'") == 0

    # The users stage's observation: its metadata panel holds the preview, the new job titles in it
    # (inline when short; a long one opens from "[Show Markdown]").
    page.goto("/assets/import_users?view=events")
    row = page.locator("tr").filter(has=page.get_by_text("preview", exact=True)).first
    expect(row).to_be_visible()
    screenshot(page, "05_dry_run_observation")
    row.scroll_into_view_if_needed()
    show = row.get_by_text("[Show Markdown]")
    if show.count():
        show.first.click()
        page.wait_for_timeout(800)   # let the dialog finish fading in before the picture
    expect(page.get_by_text("Principal Engineer").first).to_be_visible()
    screenshot(page, "05_dry_run_preview", docs="dry-run-preview")
