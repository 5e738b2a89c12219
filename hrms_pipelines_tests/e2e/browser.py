"""Chromium through Playwright, and the few Dagster UI gestures the e2e tests share.

Every wait is on text, roles or URLs with generous timeouts (the machine is slow and shared); what
the browser shows is cross-checked through GraphQL or the database by the tests themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from hrms_pipelines import settings

ARTIFACTS = settings.PROJECT_ROOT / "test-artifacts" / "e2e"
# `make screenshots` sets it to docs/images: the pictures of the manual are these tests' own.
SCREENSHOTS_ENV = "HRMS_SCREENSHOTS_DIR"
TIMEOUT_MS = 90_000
VIEWPORT = {"width": 1400, "height": 900}
# Debian's Chromium, headless, with nothing that reaches out to the network on its own.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IMPORT_GROUP_LINEAGE = '/asset-groups~group%3A%22hrms_import%22/'   # global lineage, filtered: group:"hrms_import"

expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Browser:
    chromium: PlaywrightBrowser
    contexts: dict[str, BrowserContext] = field(default_factory=dict)

    def new_page(self, base_url: str, viewport: dict | None = None) -> Page:
        key = f"{base_url} {viewport}"
        if key not in self.contexts:
            self.contexts[key] = self.chromium.new_context(base_url=base_url, viewport=viewport or VIEWPORT)
        page = self.contexts[key].new_page()
        page.set_default_timeout(TIMEOUT_MS)
        # The UI greets a new browser with a "Join the Dagster community" dialog: skip it whenever it shows.
        page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click())
        return page


@contextmanager
def launch_chromium(executable: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield Browser(chromium)
        finally:
            chromium.close()


def screenshot(page: Page, name: str, docs: str | None = None, **options) -> Path:
    """A step's screenshot, kept as a test artifact under test-artifacts/e2e/; one the manual shows
    (`docs`, its file name there) is also copied into $HRMS_SCREENSHOTS_DIR when that is set."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), **options)
    folder = os.environ.get(SCREENSHOTS_ENV)
    if docs and folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / f"{docs}.png")
    return path


# ---- the asset graph -----------------------------------------------------------------------------

def asset_node(page: Page, name: str):
    """An asset's node in the lineage graph (not its entry in the side list)."""
    return page.locator("foreignObject").filter(has=page.get_by_text(name, exact=True)).first


def asset_node_boxes(page: Page, names: list[str]) -> dict[str, dict]:
    boxes = {}
    for name in names:
        node = asset_node(page, name)
        expect(node).to_be_visible()
        boxes[name] = node.bounding_box()
    return boxes


def op_node_boxes(page: Page, names: list[str]) -> dict[str, dict]:
    """Op (and asset check) nodes of a job's op graph, found by their full names."""
    boxes = {}
    for name in names:
        label = page.locator(f'[data-tooltip="{name}"]').first
        expect(label).to_be_attached()
        boxes[name] = label.bounding_box()
    return boxes


def zoom_until_detailed(page: Page, max_clicks: int = 15) -> None:
    """Zoom in until the asset nodes show their details (status, checks) instead of their name alone."""
    zoom_in = page.locator("button:has([aria-label=zoom_in])")
    for _ in range(max_clicks):
        if page.locator('[class*="minimalAssetNodeContainer"]').count() == 0:
            return
        zoom_in.click()
        time.sleep(0.5)
    raise AssertionError("the asset nodes never showed their details")


def centre_nodes(page: Page, first: str, last: str) -> None:
    """Drag the canvas so the nodes from `first` to `last` sit in the middle of the viewport."""
    a, b = asset_node(page, first).bounding_box(), asset_node(page, last).bounding_box()
    viewport = page.viewport_size
    canvas_top = 110
    dx = viewport["width"] / 2 - (a["x"] + b["x"] + b["width"]) / 2
    dy = (viewport["height"] + canvas_top) / 2 - (a["y"] + a["height"] / 2)
    start = (150, canvas_top + 30)   # empty canvas under the search bar, left of any node
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + dx, start[1] + dy, steps=12)
    page.mouse.up()
    time.sleep(0.5)


def hide_side_panels(page: Page) -> None:
    """Collapse the navigation and the asset list so the graph has the whole width."""
    page.get_by_text("Hide navigation", exact=True).click()
    page.locator("button:has([aria-label^=panel_show])").nth(1).click()
    time.sleep(0.5)


# ---- launching -------------------------------------------------------------------------------

def edit_launchpad_config(page: Page, replacements: dict[str, str]) -> str:
    """Edit the launchpad's YAML the way a user does, one line at a time (the editor is CodeMirror 5)."""
    editor = page.get_by_role("dialog").locator(".CodeMirror").filter(has_text="resources:").first
    expect(editor).to_contain_text("hrms_import_options")
    text = editor.evaluate("e => e.CodeMirror.getValue()")
    for old, new in replacements.items():
        assert old in text, f"{old!r} not in the launchpad's config:\n{text}"
        text = text.replace(old, new, 1)
    editor.evaluate("(e, text) => e.CodeMirror.setValue(text)", text)
    return text


def run_id_from_url(page: Page) -> str:
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)


def materialize_all_with_config(page: Page, replacements: dict[str, str]) -> str:
    """Shift-click "Materialize all" (it opens the launchpad), edit the config, launch; the run id."""
    page.goto(IMPORT_GROUP_LINEAGE)
    expect(asset_node(page, "import_history")).to_be_visible()
    page.get_by_role("button", name=re.compile(r"Materialize all$")).click(modifiers=["Shift"])
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Launchpad")
    expect(dialog).to_contain_text("16 separately executable checks")
    edit_launchpad_config(page, replacements)
    expect(dialog).to_contain_text("No errors")
    dialog.get_by_role("button", name=re.compile(r"Materialize$")).click()
    return run_id_from_url(page)


def choose_partition(page: Page, dialog, key: str, title: str) -> None:
    """Pick one partition in a partition selector ("Select a partition or create one")."""
    dialog.get_by_text("Select a partition or create one").click()
    page.keyboard.type(key)
    page.get_by_role("menuitem").filter(has=page.get_by_text(key, exact=True)).first.click()
    dialog.get_by_text(title).first.click()   # closes the suggestion list, keeps the dialog
