"""Fixtures of the /ui tests: one headless Debian Chromium per run, a signed-in page per test at each width."""
from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db.models import KEY_SCOPES

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
VIEWPORTS = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 375, "height": 760}}


@dataclass(frozen=True)
class UiTenant:
    """A tenant and one of its keys: the token types into the sign-in form, the headers call the JSON API."""

    id: uuid.UUID
    token: str
    prefix: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_ui_tenant(session_factory) -> Callable[..., UiTenant]:
    """A new tenant with a key of the given scopes (all of them by default)."""
    from db.queries import create_api_key, get_or_create_tenant

    def make(scopes=KEY_SCOPES) -> UiTenant:
        with session_factory.begin() as session:
            tenant = get_or_create_tenant(session, name=f"ui-{secrets.token_hex(4)}")
            key, token = create_api_key(session, tenant_id=tenant.id, name="reviewer", scopes=scopes)
            return UiTenant(id=tenant.id, token=token, prefix=key.prefix)

    return make


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """Debian's Chromium driven by Playwright (its own browser download is never used)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def booting_worker(worker_pool) -> Iterator[Callable[[], None]]:
    """Starts the pool's worker in the background, so its boot overlaps the page tests that need none; the function
    it gives waits until the worker is ready (and raises what its start raised)."""
    failures: list[BaseException] = []

    def boot() -> None:
        try:
            worker_pool.ensure(1)
        except BaseException as exc:  # handed to the test that waits for it
            failures.append(exc)

    thread = threading.Thread(target=boot, name="ui-worker-boot", daemon=True)
    thread.start()

    def wait_until_ready() -> None:
        thread.join(timeout=worker_pool.ready_timeout + 30)
        if failures:
            raise failures[0]
        worker_pool.ensure(1)

    yield wait_until_ready
    thread.join(timeout=worker_pool.ready_timeout + 30)


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request) -> str:
    return request.param


@pytest.fixture
def page(browser, viewport, booting_worker) -> Iterator:
    """A fresh browser context (no cookies) at the test's width; the first one sets the worker booting.

    The page's script must raise nothing and break no Content-Security-Policy rule, in any test."""
    context = browser.new_context(viewport=VIEWPORTS[viewport])
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text else None)
    yield page
    context.close()
    assert not problems, problems


@pytest.fixture
def screenshot(page, viewport, tmp_path) -> Callable[[str], Path]:
    """Saves the whole page as <tmp_path>/<name>-<width>.png and prints where, for a person to look at."""

    def take(name: str) -> Path:
        path = tmp_path / f"{name}-{viewport}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    return take


@pytest.fixture
def sign_in(page, api) -> Callable[[str], None]:
    """Signs the test's page in through the form, as a person would."""

    def sign_in_with(token: str) -> None:
        page.goto(f"{api.url}/ui")
        page.fill("input[name=api_key]", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{api.url}/ui")

    return sign_in_with
