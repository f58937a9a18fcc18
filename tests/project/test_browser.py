"""The example site in a real Chromium (Debian's), driven by Playwright.

Pages come from Django's live server; their websockets go to the runtime under test
(``WS4REDIS_WEBSOCKET_HOST`` points pages at the production server when it is the one tested).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test import override_settings

from tests.support.clients import SOCKET_RUNTIMES, login
from tests.support.servers import free_port, in_process_server, refusing_proxy, system_binary
from ws4redis.django_runserver import application
from ws4redis.publisher import RedisPublisher

try:
    import playwright.sync_api as playwright_api
except ImportError:  # the test extras install it; a run that requires it fails
    if os.environ.get("WS4REDIS_REQUIRE_SYSTEM_PACKAGES"):
        raise
    pytest.skip("Playwright is not installed: pip install playwright", allow_module_level=True)
expect = playwright_api.expect

# The flags a closed network needs: no background traffic, no component updates.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WELCOME = "Welcome to the broadcast chat: every page on /chat/ sees what you send."
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "chat.png"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    executable = system_binary("chromium", "chromium", "/usr/bin/chromium")
    # Playwright's sync API keeps an event loop running in this thread, which makes Django
    # refuse database calls here; the tests' own ORM calls are synchronous, so allow them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    try:
        with playwright_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture(params=SOCKET_RUNTIMES)
def site(request, live_server, rdb) -> Iterator[str]:
    """The example site's URL, its pages' websockets served by each runtime in turn."""
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    if request.param == "runserver":
        yield live_server.url
    else:
        # The same host name as the pages, so that the browser sends their session cookie;
        # another port is another origin, which the site lists as its own.
        port = request.getfixturevalue("asyncio_server").port
        with override_settings(
            WS4REDIS_WEBSOCKET_HOST=f"ws://localhost:{port}",
            WS4REDIS_ALLOWED_ORIGINS=[live_server.url],
        ):
            yield live_server.url


@pytest.fixture
def browser_context(browser) -> Iterator:
    """New browser contexts for one test, closed after it (with their websockets)."""
    contexts: list = []

    def new_context(**kwargs):
        contexts.append(browser.new_context(**kwargs))
        return contexts[-1]

    yield new_context
    for context in contexts:
        context.close()


def open_page(browser_context, url: str, as_user: str | None = None):
    context = browser_context(viewport={"width": 900, "height": 640})
    if as_user is not None:
        cookie = login(as_user).cookies[settings.SESSION_COOKIE_NAME]
        host = urlsplit(url).hostname
        session = {"name": cookie.key, "value": cookie.value, "domain": host, "path": "/"}
        context.add_cookies([session])
    page = context.new_page()
    page.goto(url)
    expect(page.locator("#status")).to_have_text("connected")
    return page


def say(page, text: str, recipient: str | None = None) -> None:
    if recipient is not None:
        page.select_option("#recipient", recipient)
    page.fill("#text_message", text)
    page.click("#send_message")


def billboard(page):
    return page.locator("#billboard p")


def test_two_pages_on_the_broadcast_chat_see_each_other(browser_context, site, tmp_path):
    first = open_page(browser_context, f"{site}/chat/")
    second = open_page(browser_context, f"{site}/chat/")
    say(first, "Hello from the first page")
    # the chat POSTs each line to a view: the second waits until the first was published
    expect(billboard(second)).to_have_text([WELCOME, "Hello from the first page"])
    say(second, "And hello from the second")
    for page in (first, second):
        # each browser is welcomed once, on its own session channel: the second page's
        # welcome does not reach the first
        expect(billboard(page)).to_have_text(
            [WELCOME, "Hello from the first page", "And hello from the second"]
        )
    shot = first.screenshot(path=str(tmp_path / "chat.png"))
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("UPDATE_SCREENSHOT"):
        SCREENSHOT.write_bytes(shot)


def test_broadcast_chat_shows_who_is_online(browser_context, site, users):
    anonymous = open_page(browser_context, f"{site}/chat/")
    expect(anonymous.locator("#online")).to_have_text("Online: nobody logged in (1 pages)")
    open_page(browser_context, f"{site}/chat/", as_user="john")
    expect(anonymous.locator("#online")).to_have_text("Online: john (2 pages)")  # announced


def test_user_chat_reaches_only_that_user(browser_context, site, users):
    john = open_page(browser_context, f"{site}/userchat/", as_user="john")
    mary = open_page(browser_context, f"{site}/userchat/", as_user="mary")
    say(john, "hi mary", recipient="mary")
    expect(billboard(mary)).to_have_text(["john → mary: hi mary"])
    say(john, "note to self", recipient="john")
    expect(billboard(john)).to_have_text(["john → mary: hi mary", "john → john: note to self"])
    expect(billboard(mary)).to_have_text(["john → mary: hi mary"])  # not john's own note


def test_group_chat_reaches_the_members(browser_context, site, users):
    john = open_page(browser_context, f"{site}/groupchat/", as_user="john")
    mary = open_page(browser_context, f"{site}/groupchat/", as_user="mary")
    eve = open_page(browser_context, f"{site}/groupchat/", as_user="eve")  # in no group
    say(mary, "hello chatters", recipient="chatters")
    expect(billboard(john)).to_have_text(["mary → chatters: hello chatters"])
    say(eve, "from outside", recipient="chatters")
    for page in (john, mary):  # once each, though mary sent it
        expect(billboard(page)).to_have_text(
            ["mary → chatters: hello chatters", "eve → chatters: from outside"]
        )
    expect(billboard(eve)).to_have_text(["eve → chatters: from outside"])  # its sender


def test_login_page_says_who_to_log_in_as(browser_context, site, users):
    page = browser_context().new_page()
    page.goto(f"{site}/userchat/")
    expect(page).to_have_url(f"{site}/login/?next=/userchat/")
    expect(page.locator("main")).to_contain_text("john or mary")
    page.fill("#id_username", "mary")
    page.fill("#id_password", "secret")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{site}/userchat/")
    expect(page.locator("#status")).to_have_text("connected")


def test_markup_in_messages_is_shown_as_text(browser_context, site):
    page = open_page(browser_context, f"{site}/chat/")
    attack = '<img src=x onerror="window.pwned = true">'
    RedisPublisher(facility="foobar", broadcast=True).publish_message(attack)
    expect(billboard(page).last).to_have_text(attack)
    assert page.locator("#billboard img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_heartbeats_keep_the_page_connected(browser_context, site):
    with override_settings(WS4REDIS_HEARTBEAT="--heartbeat--"):
        page = open_page(browser_context, f"{site}/chat/")
        # Three heartbeat periods (5 s each) without the server's heartbeat would make the
        # client give the connection up; wait past that.
        page.wait_for_timeout(17_000)
        status = page.locator("#status")
        expect(status).to_have_text("connected")
        expect(status).to_have_attribute("data-connected", "1")  # never reconnected
        assert "--heartbeat--" not in page.locator("#billboard").inner_text()


def test_close_stops_reconnecting(browser_context, site):
    page = browser_context().new_page()
    page.clock.install()
    page.goto(f"{site}/chat/")
    expect(page.locator("#status")).to_have_text("connected")
    page.click("#leave")
    expect(page.locator("#status")).to_have_text("closed")
    page.clock.fast_forward("05:00")  # far past the longest reconnect delay
    expect(page.locator("#status")).to_have_attribute("data-connecting", "1")
    page.wait_for_function("chat.is_closed()")  # the close handshake ends, nothing reopens
    expect(page.locator("#status")).to_have_attribute("data-connecting", "1")


def test_page_reconnects_after_the_server_restarts(browser_context, live_server, rdb):
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    port = free_port()
    with override_settings(
        WS4REDIS_WEBSOCKET_HOST=f"ws://localhost:{port}", WS4REDIS_ALLOWED_ORIGINS=[live_server.url]
    ):
        with in_process_server(port):
            page = open_page(browser_context, f"{live_server.url}/chat/")
        # the server is gone: the page says so, and keeps trying
        expect(page.locator("#status")).to_have_text("disconnected")
        say(page, "written while away")  # queued by the client, not lost
        with in_process_server(port):
            status = page.locator("#status")
            expect(status).to_have_text("connected", timeout=20_000)
            expect(status).to_have_attribute("data-connected", "2")
            expect(billboard(page).last).to_have_text("written while away")  # sent, echoed
            RedisPublisher(facility="foobar", broadcast=True).publish_message("after restart")
            expect(billboard(page).last).to_have_text("after restart")


def test_page_gets_what_was_published_while_it_was_away_once(browser_context, live_server, rdb):
    """The chat keeps history and its page asks for positions: what is published while the
    page is disconnected arrives after the reconnect, each line once, and no line repeats."""
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    port = free_port()
    publisher = RedisPublisher(facility="foobar", broadcast=True)
    with override_settings(
        WS4REDIS_WEBSOCKET_HOST=f"ws://localhost:{port}", WS4REDIS_ALLOWED_ORIGINS=[live_server.url]
    ):
        with in_process_server(port):
            page = open_page(browser_context, f"{live_server.url}/chat/")
            publisher.publish_message("seen live")
            expect(billboard(page).last).to_have_text("seen live")
        expect(page.locator("#status")).to_have_text("disconnected")
        publisher.publish_message("missed 1")
        publisher.publish_message("missed 2")
        with in_process_server(port):
            expect(page.locator("#status")).to_have_attribute("data-connected", "2", timeout=20_000)
            publisher.publish_message("live again")
            expect(billboard(page).last).to_have_text("live again")
    lines = billboard(page).all_text_contents()
    assert lines[-4:] == ["seen live", "missed 1", "missed 2", "live again"]
    assert len(lines) == len(set(lines))  # nothing shown twice


def test_client_loads_as_an_es_module_too(browser_context, site):
    page = open_page(browser_context, f"{site}/chat/")
    loaded = page.evaluate(
        "import('/static/js/ws4redis.mjs')"
        ".then(m => [typeof m.default, m.WS4Redis === window.WS4Redis])"
    )
    assert loaded == ["function", True]


TOKEN_CLIENT = """([uri, token, refresh]) => new Promise(resolve => {
    window.received = [];
    window.tokenClient = WS4Redis({
        uri, token,
        token_refresh: refresh || (() => window.mintToken()),
        connected: () => resolve(),
        receive_message: message => window.received.push(message),
    });
})"""


def websocket_uri(site: str) -> str:
    """Where the site's pages open websockets, for the runtime under test."""
    from ws4redis import settings as ws4redis_settings

    return (ws4redis_settings.WS4REDIS_WEBSOCKET_HOST or site.replace("http", "ws", 1)) + "/ws/"


def test_client_refreshes_a_refused_token_and_connects_with_the_fresh_one(
    browser_context, site, users
):
    """A page without a session cookie starts with an expired token: the handshake is
    refused, the client asks its token_refresh for one token and opens with it as john."""
    from django.core import signing

    from ws4redis import tokens

    class Earlier(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 120)

    expired = Earlier(salt=tokens.SALT).sign_object(
        tokens.claims(users["john"], ["subscribe-user"], "tokens", max_age=60)
    )
    minted: list[str] = []

    def mint() -> dict:
        minted.append(tokens.connection_token(users["john"], ["subscribe-user"], "tokens"))
        return {"token": minted[-1], "max_age": 60}

    page = open_page(browser_context, f"{site}/chat/")
    page.expose_function("mintToken", mint)
    page.evaluate(TOKEN_CLIENT, [f"{websocket_uri(site)}tokens?subscribe-user", expired, None])
    assert len(minted) == 1
    RedisPublisher(facility="tokens", users=["john"]).publish_message("for john")
    page.wait_for_function("window.received.length > 0")
    assert page.evaluate("window.received") == ["for john"]


def test_client_fetches_its_first_token_from_the_token_view(browser_context, site, users):
    """With only a token_refresh URL the client fetches a token first (the answer of
    ws4redis.tokens.token_view for mary, served at that URL) and opens with it."""
    from django.test import RequestFactory

    from ws4redis import tokens

    view = tokens.token_view(["subscribe-user"], facility="tokens", max_age=60)
    fetched: list[str] = []

    def answer(route) -> None:
        request = RequestFactory().get("/ws-token/")
        request.user = users["mary"]  # the view as it answers mary's page
        response = view(request)
        fetched.append(route.request.url)
        route.fulfill(status=response.status_code, body=response.content,
                      content_type=response["Content-Type"])  # fmt: skip

    page = open_page(browser_context, f"{site}/chat/")
    page.route("**/ws-token/", answer)
    page.evaluate(TOKEN_CLIENT, [f"{websocket_uri(site)}tokens?subscribe-user", None, "/ws-token/"])
    assert len(fetched) == 1
    RedisPublisher(facility="tokens", users=["mary"]).publish_message("for mary")
    page.wait_for_function("window.received.length > 0")
    assert page.evaluate("window.received") == ["for mary"]


MULTIPLEX_CLIENT = """([uri, facilities, keys]) => new Promise(resolve => {
    window.received = [];
    window.answers = [];
    window.handles = {};
    window.connections = 0;
    window.mux = WS4Redis({uri, multiplex: true, connected: () => window.connections++});
    let waiting = facilities.length;
    for (const facility of facilities) {
        window.handles[facility] = window.mux.subscribe(facility, keys || ["subscribe-broadcast"], {
            message: (data, message) => window.received.push([message.facility, data]),
            subscribed: () => {
                window.answers.push(["subscribed", facility]);
                if (--waiting === 0) resolve();
            },
            unsubscribed: info => window.answers.push(["unsubscribed", facility, info]),
            error: err => window.answers.push(["error", facility, err.status, err.reason]),
        });
    }
})"""


def test_one_multiplexed_websocket_carries_three_facilities(browser_context, site):
    """WS4Redis({multiplex: true}) subscribes three facilities on one ws4redis.v1 connection:
    each facility's messages reach the page marked with it; once beta is unsubscribed (and
    the server said so), nothing of beta arrives any more."""
    page = open_page(browser_context, f"{site}/chat/")
    page.evaluate(MULTIPLEX_CLIENT, [websocket_uri(site), ["alpha", "beta", "gamma"]])
    assert sorted(page.evaluate("window.answers")) == [
        ["subscribed", "alpha"], ["subscribed", "beta"], ["subscribed", "gamma"]
    ]  # fmt: skip
    for facility in ("alpha", "beta", "gamma"):
        RedisPublisher(facility=facility, broadcast=True).publish_message(
            f"to {facility}", expire=0
        )
    page.wait_for_function("window.received.length >= 3")
    assert sorted(page.evaluate("window.received")) == [
        ["alpha", "to alpha"], ["beta", "to beta"], ["gamma", "to gamma"]
    ]  # fmt: skip
    page.evaluate("window.mux.unsubscribe('beta')")  # resolves on the unsubscribed answer
    RedisPublisher(facility="beta", broadcast=True).publish_message("beta again", expire=0)
    RedisPublisher(facility="alpha", broadcast=True).publish_message("alpha again", expire=0)
    page.wait_for_function("window.received.length >= 4")
    received = page.evaluate("window.received")
    assert received[3:] == [["alpha", "alpha again"]]
    assert ["beta", "beta again"] not in received
    assert page.evaluate("window.mux.is_connected()")
    assert ["unsubscribed", "beta"] not in [a[:2] for a in page.evaluate("window.answers")]


def test_a_multiplexed_call_resolves_with_the_hooks_reply(browser_context, site):
    """handle.call(name, data) sends a call on its facility; the facility's hook
    (WS4REDIS_HOOKS) answers it, and the promise resolves with the reply's data."""
    with override_settings(WS4REDIS_HOOKS={"rpc": "tests.support.callbacks.echo_call"}):
        page = open_page(browser_context, f"{site}/chat/")
        page.evaluate(MULTIPLEX_CLIENT, [websocket_uri(site), ["rpc"]])
        reply = page.evaluate("window.handles.rpc.call('sum', {numbers: [1, 2, 3]})")
        assert reply == {"echo": {"numbers": [1, 2, 3]}, "name": "sum"}
        assert page.evaluate("window.answers") == [["subscribed", "rpc"]]


def test_a_multiplexed_page_resubscribes_and_recovers_after_the_server_restarts(
    browser_context, live_server, rdb
):
    """After a restart the client subscribes again what it still has (not what it
    unsubscribed), foobar (which keeps history) with since: what was published to it while
    away arrives once, and a publish made while disconnected goes out once it is back."""
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    port = free_port()
    uri = f"ws://localhost:{port}/ws/"
    foobar = RedisPublisher(facility="foobar", broadcast=True)
    keys = ["subscribe-broadcast", "publish-broadcast", "echo"]
    with override_settings(
        WS4REDIS_WEBSOCKET_HOST=f"ws://localhost:{port}", WS4REDIS_ALLOWED_ORIGINS=[live_server.url]
    ):
        with in_process_server(port):
            page = open_page(browser_context, f"{live_server.url}/chat/")
            page.evaluate(MULTIPLEX_CLIENT, [uri, ["foobar", "alpha", "gamma"], keys])
            foobar.publish_message("seen live")
            page.wait_for_function("window.received.some(m => m[1] === 'seen live')")
            page.evaluate("window.handles.gamma.unsubscribe()")
        page.wait_for_function("!window.mux.is_connected()")
        foobar.publish_message("missed 1")
        foobar.publish_message("missed 2")
        page.evaluate("window.handles.foobar.publish('sent while away')")  # queued
        with in_process_server(port):
            page.wait_for_function("window.connections === 2", timeout=20_000)
            page.wait_for_function("window.received.some(m => m[1] === 'sent while away')")
            # foobar and alpha subscribed again (in the order asked), gamma not
            page.wait_for_function(
                "window.answers.filter(a => a[0] === 'subscribed' && a[1] === 'alpha').length == 2"
            )
            RedisPublisher(facility="gamma", broadcast=True).publish_message("gamma", expire=0)
            RedisPublisher(facility="alpha", broadcast=True).publish_message("alpha", expire=0)
            page.wait_for_function("window.received.some(m => m[0] === 'alpha')")
    received = page.evaluate("window.received")
    foobar_lines = [data for facility, data in received if facility == "foobar"]
    assert foobar_lines[-4:] == ["seen live", "missed 1", "missed 2", "sent while away"]
    assert len(foobar_lines) == len(set(foobar_lines))  # nothing twice
    assert ["gamma", "gamma"] not in received
    subscribed = [a[1] for a in page.evaluate("window.answers") if a[0] == "subscribed"]
    assert sorted(subscribed) == ["alpha", "alpha", "foobar", "foobar", "gamma"]


def proxied(websockets_port: int, pages_port: int):
    """The route of a :func:`refusing_proxy` in front of the site: /ws/ to the websocket
    server, the rest to Django."""
    return lambda path: websockets_port if path.startswith("/ws/") else pages_port


@pytest.mark.parametrize("runtime", SOCKET_RUNTIMES)
def test_chat_falls_back_to_server_sent_events_behind_a_proxy_refusing_websockets(
    browser_context, live_server, rdb, runtime, request
):
    """A proxy answers every websocket upgrade with 403: after two attempts the client
    opens an event stream on the same URL instead. Two pages chat as before, and a
    client's send_message goes out as a POST (with the CSRF cookie's token)."""
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    pages = urlsplit(live_server.url).port
    websockets = pages if runtime == "runserver" else request.getfixturevalue("asyncio_server").port
    with override_settings(WS4REDIS_WEBSOCKET_HOST=None, WS4REDIS_ALLOWED_ORIGINS=None):
        with refusing_proxy(proxied(websockets, pages)) as proxy:
            first = open_page(browser_context, f"{proxy.url}/chat/")
            second = open_page(browser_context, f"{proxy.url}/chat/")
            for page in (first, second):
                assert page.evaluate("chat.transport()") == "sse"
            assert len(proxy.refused) >= 4  # two websocket attempts of each page
            # the second page's stream was announced on the first's: presence works too
            expect(first.locator("#online")).to_have_text("Online: nobody logged in (2 pages)")
            say(first, "Hello over an event stream")
            expect(billboard(second)).to_have_text([WELCOME, "Hello over an event stream"])
            say(second, "And back")
            for page in (first, second):
                expect(billboard(page)).to_have_text(
                    [WELCOME, "Hello over an event stream", "And back"]
                )
            first.evaluate(
                """uri => new Promise(resolve => {
                    window.sender = WS4Redis({uri, connected: resolve});
                })""",
                f"ws://localhost:{proxy.port}/ws/foobar?publish-broadcast",
            )
            assert first.evaluate("sender.transport()") == "sse"
            first.evaluate("sender.send_message('posted to the stream URL')")
            for page in (first, second):
                expect(billboard(page).last).to_have_text("posted to the stream URL")
            assert first.evaluate("chat.is_connected()")


def test_event_stream_page_resumes_after_the_server_restarts(browser_context, live_server, rdb):
    """Behind a proxy refusing websockets the page reads an event stream: when the server
    restarts, it comes back on a stream from where it stood (its uri's since), so what was
    published while it was away arrives once; a line another client queued while away goes
    out by POST once that client is back (stored, as WS4REDIS_CLIENT_EXPIRE lets it be: the
    two clients come back in either order)."""
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    port = free_port()
    publisher = RedisPublisher(facility="foobar", broadcast=True)
    route = proxied(port, urlsplit(live_server.url).port)
    with override_settings(
        WS4REDIS_WEBSOCKET_HOST=None, WS4REDIS_ALLOWED_ORIGINS=None, WS4REDIS_CLIENT_EXPIRE=10
    ):
        with refusing_proxy(route) as proxy:
            with in_process_server(port):
                page = open_page(browser_context, f"{proxy.url}/chat/")
                assert page.evaluate("chat.transport()") == "sse"
                page.evaluate(
                    """uri => new Promise(resolve => {
                        window.sender = WS4Redis({uri, connected: resolve});
                    })""",
                    f"ws://localhost:{proxy.port}/ws/foobar?publish-broadcast",
                )
                publisher.publish_message("seen live")
                expect(billboard(page).last).to_have_text("seen live")
            expect(page.locator("#status")).to_have_text("disconnected")
            publisher.publish_message("missed 1")
            publisher.publish_message("missed 2")
            page.evaluate("sender.send_message('written while away')")  # queued
            with in_process_server(port):
                status = page.locator("#status")
                expect(status).to_have_attribute("data-connected", "2", timeout=20_000)
                expect(billboard(page).last).to_have_text("written while away", timeout=20_000)
                assert page.evaluate("chat.transport()") == "sse"  # it opened once: no change
                publisher.publish_message("live again")
                expect(billboard(page).last).to_have_text("live again")
    lines = billboard(page).all_text_contents()
    assert lines[-5:] == ["seen live", "missed 1", "missed 2", "written while away", "live again"]
    assert len(lines) == len(set(lines))  # nothing shown twice


def test_forced_event_stream_posts_through_the_facilitys_hook(browser_context, live_server, rdb):
    """transport: "sse" opens an event stream at once (Django's runserver serves it on the
    pages' own origin); each send_message is a POST through the facility's hook: what it
    publishes comes back on the stream, its reply and rejection come as their JSON text."""
    live_server.thread.httpd.set_app(StaticFilesHandler(application))
    hooks = {"moderated": "tests.support.callbacks.moderate"}
    with override_settings(WS4REDIS_WEBSOCKET_HOST=None, WS4REDIS_HOOKS=hooks):
        page = open_page(browser_context, f"{live_server.url}/chat/")
        uri = f"{websocket_uri(live_server.url)}moderated?subscribe-broadcast&publish-broadcast"
        page.evaluate(
            """uri => new Promise(resolve => {
                window.received = [];
                window.streamed = WS4Redis({uri, transport: "sse", connected: resolve,
                                            receive_message: m => window.received.push(m)});
            })""",
            uri,
        )
        assert page.evaluate("streamed.transport()") == "sse"
        for text in ("shout", "ping", "forbidden"):
            page.evaluate("text => streamed.send_message(text)", text)
        page.wait_for_function("window.received.length >= 3")
        received = page.evaluate("window.received")
    assert "SHOUT" in received  # published, so it streams back
    answers = [json.loads(text) for text in received if text != "SHOUT"]
    assert [(a["type"], a.get("data"), a.get("reason")) for a in answers] == [
        ("reply", "pong", None),
        ("rejected", None, "not here"),
    ]  # the POSTs go in order, so their answers do too


RAW_CLIENT = """uri => new Promise((resolve, reject) => {
    window.received = [];
    window.raw = new WebSocket(uri);
    window.raw.onmessage = event => window.received.push(event.data);
    window.raw.onopen = () => resolve(window.raw.extensions);
    window.raw.onerror = reject;
})"""


def test_the_browser_reads_and_sends_messages_compressed_once_for_everyone(browser_context, site):
    """Chromium offers ``permessage-deflate``: what the server compresses once (an empty
    window for every message) it inflates, message after message, and what it compresses
    comes back as it was sent."""
    page = open_page(browser_context, f"{site}/chat/")
    uri = f"{websocket_uri(site)}squeezed?subscribe-broadcast&publish-broadcast&echo"
    extensions = page.evaluate(RAW_CLIENT, uri)
    assert "permessage-deflate" in extensions and "server_no_context_takeover" in extensions
    published = [
        json.dumps({"n": n, "lines": [f"line {i} of {n}" for i in range(60)]}) for n in range(3)
    ]
    for message in [*published, "short"]:
        RedisPublisher(facility="squeezed", broadcast=True).publish_message(message)
    page.wait_for_function("window.received.length >= 4")
    sent = "x" * 5000 + "end"
    page.evaluate("text => window.raw.send(text)", sent)
    page.wait_for_function("window.received.length >= 5")
    assert page.evaluate("window.received") == [*published, "short", sent]
