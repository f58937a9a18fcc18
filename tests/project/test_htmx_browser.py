"""The example's HTMX page (/htmx/) in a real Chromium: HTMX and its ``sse`` extension, no
JavaScript of the site's own, append what Django publishes with ``publish_fragment``.

The page and its event stream come from Django's live server (runserver's application): one
origin, as an ``EventSource`` with credentials needs (docs/reference.md#html-fragments-for-htmx).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler

from tests.project import test_browser
from ws4redis.django_runserver import application
from ws4redis.publisher import RedisPublisher

# Chromium and its contexts, as the other browser tests launch them
browser = test_browser.browser
browser_context = test_browser.browser_context
expect = test_browser.expect

# Test code only: counts the page's opened event streams in <html data-streams>, which
# says when the page listens (the stream's response starts once it is subscribed).
COUNT_OPEN_STREAMS = """
document.addEventListener("htmx:sseOpen", () => {
  const html = document.documentElement;
  html.dataset.streams = String(Number(html.dataset.streams || 0) + 1);
});
"""


@pytest.fixture
def htmx_site(live_server, rdb) -> Iterator[str]:
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    yield live_server.url


def open_htmx_page(browser_context, site: str):
    context = browser_context(viewport={"width": 900, "height": 640})
    context.add_init_script(COUNT_OPEN_STREAMS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{site}/htmx/")
    expect(page.locator("html[data-streams='1']")).to_have_count(1)
    assert errors == []
    return page


def test_the_htmx_page_appends_what_django_publishes(browser_context, htmx_site):
    page = open_htmx_page(browser_context, htmx_site)
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


def test_the_form_adds_an_item_to_every_open_page_without_a_reload(browser_context, htmx_site):
    first = open_htmx_page(browser_context, htmx_site)
    second = open_htmx_page(browser_context, htmx_site)
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
