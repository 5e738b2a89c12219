"""End-to-end fixtures: Debian's Chromium driven by Playwright, and one `dagster dev` (webserver +
daemon) for the e2e package on a fresh migrated HR database and its own Dagster storage database,
both on the test server. Nothing touches the developer's .hrms databases; nothing is left running.

Chromium is /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it), or the path in
HRMS_CHROMIUM. Playwright's own browser download (`playwright install`) is never used. Missing
Chromium fails the tests when CI is set, and skips them (with the reason) otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hrms_pipelines import embedded, settings
from hrms_pipelines_tests.conftest import TEST_PGDATA, _url, create_database, drop_database
from hrms_pipelines_tests.e2e import ui as dagster_ui_server
from hrms_pipelines_tests.e2e.browser import ARTIFACTS, Browser, launch_chromium

CHROMIUM_ENV = "HRMS_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
SAMPLE = settings.PROJECT_ROOT / "seeds" / "sample"
# One bad row: ENG gets level 8 while it has levels 1..6. It is well-formed (Pandera passes it) and
# refers to a known ladder (the stage's row checks pass it); only the blocking `invalid_level_numbers`
# validation catches it ("level 7 is missing").
BAD_LADDER_ROW = "level,ENG,,,,,8,Engineering Fellow,P8,17000.00,21000.00,GHS,\n"


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    reason = (f"Chromium not found at {path}: install Debian's package (apt-get install -y chromium, as .ci/run does) "
              f"or set {CHROMIUM_ENV}")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}. CI is set, so the browser tests fail instead of skipping.", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def e2e_dirs(tmp_path_factory) -> dict[str, Path]:
    """The deployment's folders for the UI: the import folder (the sample company, plus a ladders file
    with one bad row under another name, which a run selects by name) and a copy of the migrations."""
    root = tmp_path_factory.mktemp("e2e")
    sample = root / "sample"
    shutil.copytree(SAMPLE, sample)
    bad = sample / "ladders_bad_row.csv"
    bad.write_text((SAMPLE / "ladders.csv").read_text(encoding="utf-8") + BAD_LADDER_ROW, encoding="utf-8")
    migrations = root / "migrations"
    shutil.copytree(settings.migrations_dir(), migrations)
    return {"root": root, "sample": sample, "bad": bad, "migrations": migrations}


@pytest.fixture(scope="package")
def e2e_database_url(pg_admin_url: str, migrated_template: str) -> Iterator[str]:
    """The HR database behind the UI: every migration applied, nothing imported."""
    name = create_database(pg_admin_url, template=migrated_template, prefix="e2e")
    yield _url(pg_admin_url, name)
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="package")
def dagster_ui(chromium_executable, cli_base_env, pg_admin_url, e2e_database_url, e2e_dirs) -> Iterator[dagster_ui_server.DagsterUI]:
    """`dagster dev -w workspace.yaml -h 127.0.0.1 -p <free port>`, once for the e2e tests (~20 s to boot),
    stopped when they are done (not at the end of the whole suite)."""
    storage_name = create_database(pg_admin_url, prefix="dagster_e2e")   # the UI shows only these tests' runs
    socket_dir = embedded.server(TEST_PGDATA).get_postmaster_info().socket_dir
    env = dagster_ui_server.environment(
        cli_base_env,
        database_url=e2e_database_url,
        dagster_storage_url=f"postgresql+psycopg2://postgres:@/{storage_name}?host={socket_dir}",
        home=e2e_dirs["root"],
        import_dir=e2e_dirs["sample"],
        migrations_dir=e2e_dirs["migrations"],
        project_root=settings.PROJECT_ROOT,
    )
    ui = dagster_ui_server.start(settings.PROJECT_ROOT, env, ARTIFACTS / "dagster-dev.log")
    try:
        yield ui
    finally:
        ui.stop()
        drop_database(pg_admin_url, storage_name)
    assert not ui.alive(), f"dagster dev left processes running in group {ui.process.pid}"
    assert not ui.needed_sigkill, f"Ctrl-C did not stop dagster dev within {dagster_ui_server.STOP_TIMEOUT}s"


@pytest.fixture(scope="package")
def browser(chromium_executable) -> Iterator[Browser]:
    with launch_chromium(chromium_executable) as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, dagster_ui):
    """A fresh tab on the UI (1400x900); its context keeps the dismissed welcome dialog."""
    tab = browser.new_page(dagster_ui.base_url)
    yield tab
    tab.close()
