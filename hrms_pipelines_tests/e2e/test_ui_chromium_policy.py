"""Without Chromium, a browser test fails when CI is set and skips (saying why) otherwise: CI can
never go green by silently not running the browser tests."""

import os
import subprocess
import sys

import pytest

from hrms_pipelines import settings

BROWSER_TEST = "hrms_pipelines_tests/e2e/test_ui_imports.py::test_lineage_shows_backups_imports_and_checks_in_order"


def run_without_chromium(ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["HRMS_CHROMIUM"] = "/nonexistent/chromium"
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", BROWSER_TEST],
                          cwd=settings.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [True, False], ids=["CI", "local"])
def test_missing_chromium_fails_under_ci_and_skips_locally(ci):
    result = run_without_chromium(ci)
    output = result.stdout + result.stderr
    assert "Chromium not found at /nonexistent/chromium" in output, output[-3000:]
    if ci:
        assert result.returncode == 1, output[-3000:]
        assert "1 error" in output and "CI is set, so the browser tests fail instead of skipping" in output
        assert "skipped" not in output
    else:
        assert result.returncode == 0, output[-3000:]
        assert "1 skipped" in output
