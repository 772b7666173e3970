"""Browser tests: the portal in Debian's headless Chromium, driven by Playwright's sync API.

Chromium is the system's (``make system-deps`` installs it); Playwright's own browser
download is never used. Without ``/usr/bin/chromium`` these tests fail, they are not
skipped. Screenshots go to ``CG_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the
repository's root). Every view screenshotted is also checked with axe-core (from npm,
through the portal's package-lock.json): no serious or critical accessibility violation."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# MACHINE.md's flags: what a headless Chromium needs as root in a container, and no
# background traffic of its own
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "services" / "bff" / "portal" / "node_modules" / "axe-core" / "axe.min.js"
AXE_FAILS_ON = ("serious", "critical")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module, not per session: Playwright's sync API keeps an event loop running in
    # this thread while it is started, and the modules after this one (in the same xdist
    # worker) call asyncio.run().
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium; run `make system-deps` as root")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    out = Path(os.environ.get("CG_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def assert_accessible(page: Page, what: str) -> None:
    """Runs axe-core on the page as it is now and fails on any serious or critical violation,
    listing each rule, its help text and the selectors of the elements concerned."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make portal` (npm ci installs axe-core from the lock)")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate("axe.run(document, {resultTypes: ['violations']}).then(r => r.violations)")
    bad = [v for v in violations if v.get("impact") in AXE_FAILS_ON]
    if bad:
        lines = [
            f"- {v['id']} ({v['impact']}): {v['help']} — {', '.join(str(n['target']) for n in v['nodes'][:8])}"
            for v in bad
        ]
        pytest.fail(f"{what}: {len(bad)} serious/critical accessibility violation(s)\n" + "\n".join(lines))


# What makes a screenshotted state a view of its own: the path, the open dialog (its
# data-dialog name), the window's width, and which test hooks (data-* attributes) and ARIA
# roles are on it (in the dialog when one is open): a dialog's next step, a field error, a
# banner or a table's first row is a new view; the same view with other rows or text is not.
VIEW = """() => {
  const open = document.querySelectorAll("dialog[open]");
  const dialog = open[open.length - 1];
  const marks = new Set();
  for (const e of (dialog || document.body).querySelectorAll("*")) {
    for (const a of e.getAttributeNames()) {
      if (a.startsWith("data-")) marks.add(a);
      else if (a === "role") marks.add("role=" + e.getAttribute(a));
    }
  }
  return [location.pathname, dialog ? dialog.dataset.dialog || "dialog" : "", String(window.innerWidth),
          ...[...marks].sort()].join(" ");
}"""


class Shots:
    """Numbered screenshots of one test: ``<test>-NN-<name>.png``. The first time its module
    shows a view (``VIEW``), the screenshot is of the full page and axe-core checks it
    (``assert_accessible``); a view shown before gets a screenshot of the window only."""

    def __init__(self, directory: Path, test: str, seen: set[str]) -> None:
        self.directory, self.test, self.n = directory, re.sub(r"[^\w-]+", "_", test), 0
        self.seen = seen

    def __call__(self, page: Page, name: str) -> Path:
        self.n += 1
        path = self.directory / f"{self.test}-{self.n:02d}-{name}.png"
        view = page.evaluate(VIEW)
        new = view not in self.seen
        page.screenshot(path=str(path), full_page=new)
        if new:
            assert_accessible(page, f"{self.test}: {name}")
            self.seen.add(view)
        return path


@pytest.fixture(scope="module")
def views_seen() -> set[str]:
    """The views (``VIEW``) of this module already screenshotted in full and checked with axe-core."""
    return set()


@pytest.fixture
def shot(artifacts: Path, request: pytest.FixtureRequest, views_seen: set[str]) -> Shots:
    return Shots(artifacts, request.node.name, views_seen)
