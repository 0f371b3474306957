"""Browser tests: Playwright for Python driving Debian's chromium (no browser download at run time)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ui.pages import CHROMIUM, CHROMIUM_ARGS

SCREENSHOTS = Path(os.environ.get("GROUNDUP_UI_SCREENSHOTS",
                                  Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"))


def _missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install chromium (Debian) to run the browser tests"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason:
        for item in items:
            if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the screenshots go (`test-artifacts/ui/`, or $GROUNDUP_UI_SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def browser_page():
    """One headless Chromium page, 1400x1000."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()
