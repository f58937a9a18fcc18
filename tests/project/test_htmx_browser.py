"""The example's HTMX page (/htmx/) in a real Chromium: HTMX and its ``sse`` extension, no
JavaScript of the site's own, append what Django publishes with ``publish_fragment``.

The page and its event stream come from Django's live server (runserver's application): one
origin, as an ``EventSource`` with credentials needs (docs/reference.md#html-fragments-for-htmx).
Chromium is launched as tests/project/test_browser.py launches it, but driven from a thread
of this module's own: Playwright's sync API runs one instance per thread, and that module's
stays open for the whole session.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler

from tests.project import test_browser
from tests.support.servers import system_binary
from ws4redis.django_runserver import application
from ws4redis.publisher import RedisPublisher

expect = test_browser.expect

# Test code only: counts the page's opened event streams in <html data-streams>, which
# says when the page listens (the stream's response starts once it is subscribed).
COUNT_OPEN_STREAMS = """
document.addEventListener("htmx:sseOpen", () => {
  const html = document.documentElement;
  html.dataset.streams = String(Number(html.dataset.streams || 0) + 1);
});
"""


class Chromium:
    """A Chromium whose Playwright lives in one thread: :meth:`run` calls ``test(browser)``
    there and raises what it raised; the contexts it opened are closed after."""

    def __init__(self) -> None:
        self.playwright: Any = None
        self.browser: Any = None
        executable = system_binary("chromium", "chromium", "/usr/bin/chromium")  # or skip
        self.thread = concurrent.futures.ThreadPoolExecutor(1, "htmx-chromium")
        self.thread.submit(self._launch, executable).result()

    def _launch(self, executable: str) -> None:
        self.playwright = test_browser.playwright_api.sync_playwright().start()
        chromium = self.playwright.chromium
        self.browser = chromium.launch(executable_path=executable, args=test_browser.CHROMIUM_ARGS)

    def run(self, test: Callable[[Any], None]) -> None:
        def in_thread() -> None:
            try:
                test(self.browser)
            finally:
                for context in self.browser.contexts:
                    context.close()

        self.thread.submit(in_thread).result()

    def close(self) -> None:
        def in_thread() -> None:
            if self.browser is not None:
                self.browser.close()
            if self.playwright is not None:
                self.playwright.stop()

        self.thread.submit(in_thread).result()
        self.thread.shutdown()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    launched = Chromium()
    yield launched
    launched.close()


@pytest.fixture
def htmx_site(live_server, rdb) -> Iterator[str]:
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    yield live_server.url


def open_htmx_page(browser, site: str):
    context = browser.new_context(viewport={"width": 900, "height": 640})
    context.add_init_script(COUNT_OPEN_STREAMS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{site}/htmx/")
    expect(page.locator("html[data-streams='1']")).to_have_count(1)
    assert errors == []
    return page


def test_the_htmx_page_appends_what_django_publishes(chromium, htmx_site):
    chromium.run(lambda browser: appends_what_django_publishes(browser, htmx_site))


def appends_what_django_publishes(browser, site: str) -> None:
    page = open_htmx_page(browser, site)
    expect(page.locator("#items li")).to_have_count(0)
    publisher = RedisPublisher(facility="htmx", broadcast=True)
    publisher.publish_fragment("chatserver/item.html", {"text": "From Django <b>"}, event="item")
    publisher.publish_fragment("chatserver/item.html", {"text": "Second"}, event="item")
    expect(page.locator("#items li")).to_have_text(["From Django <b>", "Second"])
    # A fragment of another event name is not this list's
    publisher.publish_fragment("chatserver/item.html", {"text": "elsewhere"}, event="other")
    publisher.publish_fragment("chatserver/item.html", {"text": "Third"}, event="item")
    expect(page.locator("#items li")).to_have_text(["From Django <b>", "Second", "Third"])
    assert page.locator("#items b").count() == 0  # the text was escaped by the template


def test_the_form_adds_an_item_to_every_open_page_without_a_reload(chromium, htmx_site):
    chromium.run(lambda browser: the_form_adds_an_item(browser, htmx_site))


def the_form_adds_an_item(browser, site: str) -> None:
    first = open_htmx_page(browser, site)
    second = open_htmx_page(browser, site)
    first.evaluate("document.body.dataset.loaded = 'once'")  # gone if the page reloaded
    first.fill("#item_text", "Milk")
    first.click("#add_item")
    for page in (first, second):
        expect(page.locator("#items li")).to_have_text(["Milk"])
    expect(first.locator("#item_text")).to_have_value("")  # the form came back empty
    second.fill("#item_text", "Bread")
    second.press("#item_text", "Enter")
    for page in (first, second):
        expect(page.locator("#items li")).to_have_text(["Milk", "Bread"])
    expect(first.locator("body[data-loaded='once']")).to_have_count(1)
    # What the view refuses is said in the form, and published nowhere
    first.fill("#item_text", "x" * 201)
    first.click("#add_item")
    expect(first.locator("#item_form .errors")).to_contain_text("1 to 200 characters")
    first.fill("#item_text", "Eggs")
    first.click("#add_item")
    for page in (first, second):
        expect(page.locator("#items li")).to_have_text(["Milk", "Bread", "Eggs"])
