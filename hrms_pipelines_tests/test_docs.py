"""The manual builds and the README is a landing page.

`mkdocs build --strict` (what `make docs` runs) fails on a broken link or anchor, a page missing from
the nav, or a rule module the analyzer's rule catalogue cannot read; the README stays short and
every link in it points at a file of the project."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from hrms_pipelines import settings

ROOT = settings.PROJECT_ROOT
README_MAX_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are not links
    return LINK.findall(text)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}: move detail to docs/"


def test_every_readme_link_resolves_to_a_file():
    links = readme_links()
    assert any(link.startswith("docs/") for link in links), "the README links to no page of the manual"
    broken = []
    for link in links:
        if re.match(r"^[a-z]+:", link) or link.startswith("#"):
            continue  # web addresses and in-page anchors
        target = ROOT / link.split("#", 1)[0]
        if not target.is_file():
            broken.append(link)
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_the_manual_builds_strict(tmp_path):
    pytest.importorskip("material", reason="the docs extra is not installed (make install-docs; make test installs it)")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    rules = (tmp_path / "site" / "migrations" / "rules" / "index.html").read_text(encoding="utf-8")
    # the catalogue is generated from the rule modules: one of them, with its failing example, is in it
    from hrms_pipelines.migrations.check.rules import ban_drop_column

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", rules))   # the code is highlighted: words in spans
    assert 'id="ban-drop-column"' in rules
    assert ban_drop_column.RULE.bad.strip() in text   # its failing example, as written in the rule module
