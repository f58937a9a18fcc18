"""The manual's deployments, run for real: uWSGI + gevent alone, two uWSGI instances behind
nginx, Django behind nginx with ``runwebsocket``, the uWSGI emperor, and Apache 2.4.

Each starts the shipped files of ``examples/deploy`` (paths and ports rewritten to this
run's) and checks the same thing: a page comes through, a websocket comes through, and a
message published by a Django view reaches that websocket.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket
from django.conf import settings

from tests.support.clients import chat_line
from tests.support.servers import ROOT, free_port, missing, system_binary, uwsgi_binary, wait_for
from ws4redis import settings as ws_settings

EXAMPLES = ROOT / "examples"
DEPLOY = EXAMPLES / "deploy"


class Stack:
    """Processes of one deployment, all stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.run = tmp_path / "run"
        self.run.mkdir()
        self.processes: list[subprocess.Popen] = []
        connection = ws_settings.WS4REDIS_CONNECTION_ARGS
        self.env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="chatserver.settings",
            DJANGO_DB=str(tmp_path / "db.sqlite3"),
            REDIS_HOST=str(connection["host"]),
            REDIS_PORT=str(connection["port"]),
            WS4REDIS_RUN=str(self.run),
            PYTHONPATH=os.pathsep.join([str(ROOT), str(EXAMPLES)]),
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=EXAMPLES, env=self.env, check=True,
        )  # fmt: skip

    def start(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("w")
        process = subprocess.Popen(
            command, cwd=EXAMPLES, env={**self.env, **env}, stdout=log, stderr=log
        )
        self.processes.append(process)
        return process

    def uwsgi(self, name: str, ini: str, **env: str) -> subprocess.Popen:
        return self.start(name, [uwsgi_binary(), "--ini", str(DEPLOY / "uwsgi" / ini)], **env)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def stack(tmp_path, redis_server) -> Iterator[Stack]:
    running = Stack(tmp_path)
    yield running
    running.stop()


def wait_for_stack(address: tuple[str, int] | Path, stack: Stack, what: str) -> None:
    """Until ``address`` accepts connections; fail with the logs if a process ended."""

    def ended() -> str | None:
        dead = [p.args for p in stack.processes if p.poll() is not None]
        if not dead:
            return None
        logs = "\n".join(stack.log(f.stem) for f in stack.tmp.glob("*.log"))
        return f"ended: {dead}\n{logs[-4000:]}"

    wait_for(address, what, ended)


def check_site(http_url: str) -> None:
    """A page, a websocket, and a view's publish reaching the websocket, through ``http_url``."""
    browser = requests.Session()
    page = browser.get(f"{http_url}/chat/", timeout=10)
    assert page.status_code == 200
    assert "Broadcast chat" in page.text
    ws_url = http_url.replace("http:", "ws:", 1) + "/ws/foobar?subscribe-session"
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME]}"
    ws = websocket.create_connection(ws_url, timeout=10, header=[f"Cookie: {cookie}"])
    assert chat_line(ws).startswith("Welcome")  # persisted by the page load above
    assert browser.get(f"{http_url}/chat/", timeout=10).status_code == 200
    assert chat_line(ws).startswith("Welcome")  # published live by that view
    ws.close()
    check_keep_alive(http_url)
    check_events(http_url, browser)


def check_keep_alive(http_url: str) -> None:
    """A connection the server keeps after an answer takes the next request: one it closes
    without saying so (no ``Connection: close``) makes a client that reuses it lose a request."""
    host, port = http_url.removeprefix("http://").split(":")
    request = f"GET /chat/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        answers = connection.makefile("rb")
        for _ in range(2):
            connection.sendall(request)
            status = answers.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            headers = {}
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("connection", "").lower() == "close":
                return  # said so: a client opens a new connection
            answers.read(int(headers["content-length"]))


def check_events(http_url: str, browser: requests.Session) -> None:
    """The same through an event stream: each event arrives as it is published, not when a
    proxy's buffer fills."""
    url = f"{http_url}/ws/foobar?subscribe-session"
    headers = {"Accept": "text/event-stream"}
    with browser.get(url, headers=headers, stream=True, timeout=10) as stream:
        assert stream.status_code == 200, stream.text
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(chunk_size=1, decode_unicode=True)
        for _ in range(2):  # the stored welcome, then a live one; a buffer would hold them
            assert next(line for line in lines if line.startswith("data:")).startswith(
                "data: Welcome"
            )
            assert browser.get(f"{http_url}/chat/", timeout=10).status_code == 200


def site_config(source: Path, stack: Stack, port: int) -> Path:
    """The shipped site file with this run's port and paths."""
    text = source.read_text()
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    text = text.replace("/run/ws4redis", str(stack.run))
    text = text.replace("/srv/ws4redis/static/", f"{stack.tmp}/static/")
    target = stack.tmp / source.name
    target.write_text(text)
    return target


def start_nginx(stack: Stack, site: Path) -> int:
    nginx = system_binary("nginx", "nginx", "/usr/sbin/nginx")
    port = free_port()
    conf = stack.tmp / "nginx.conf"
    # workers as this user: the sockets and the temporary folder are this user's alone
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""daemon off;
{user}
pid {stack.tmp}/nginx.pid;
error_log {stack.tmp}/nginx-error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {stack.tmp}/client_body;
    proxy_temp_path {stack.tmp}/proxy;
    fastcgi_temp_path {stack.tmp}/fastcgi;
    uwsgi_temp_path {stack.tmp}/uwsgi;
    scgi_temp_path {stack.tmp}/scgi;
    include {site_config(site, stack, port)};
}}
"""
    )
    stack.start("nginx", [nginx, "-c", str(conf), "-p", str(stack.tmp)])
    wait_for_stack(("127.0.0.1", port), stack, "nginx")
    return port


def test_uwsgi_standalone(stack):
    port = free_port()
    stack.uwsgi("standalone", "standalone.ini", WS4REDIS_HTTP=f"127.0.0.1:{port}")
    wait_for_stack(("127.0.0.1", port), stack, "uWSGI")
    check_site(f"http://127.0.0.1:{port}")


def test_nginx_in_front_of_two_uwsgi_instances(stack):
    stack.uwsgi("django", "django.ini")
    stack.uwsgi("websocket", "websocket.ini")
    wait_for_stack(stack.run / "django.socket", stack, "the Django uWSGI")
    wait_for_stack(stack.run / "web.socket", stack, "the websocket uWSGI")
    port = start_nginx(stack, DEPLOY / "nginx" / "ws4redis-uwsgi.conf")
    check_site(f"http://127.0.0.1:{port}")


def test_nginx_in_front_of_django_and_runwebsocket(stack):
    stack.uwsgi("django", "django.ini")
    websockets_port = free_port()
    stack.start(
        "runwebsocket",
        [sys.executable, "manage.py", "runwebsocket", f"127.0.0.1:{websockets_port}"],
    )
    site = stack.tmp / "site-template.conf"
    site.write_text(
        (DEPLOY / "nginx" / "ws4redis-runwebsocket.conf")
        .read_text()
        .replace("127.0.0.1:8001", f"127.0.0.1:{websockets_port}")
    )
    wait_for_stack(stack.run / "django.socket", stack, "the Django uWSGI")
    wait_for_stack(("127.0.0.1", websockets_port), stack, "runwebsocket")
    port = start_nginx(stack, site)
    check_site(f"http://127.0.0.1:{port}")


NO_PCRE = (
    "uWSGI was built without PCRE, so it cannot route: install libpcre2-dev (Debian/Ubuntu) "
    "and run scripts/test again, which rebuilds uWSGI"
)


def test_uwsgi_emperor_with_internal_routing(stack):
    flags = subprocess.run([uwsgi_binary(), "--cflags"], capture_output=True, text=True).stdout
    if "-DUWSGI_PCRE" not in flags:
        missing(NO_PCRE)
    port = free_port()
    stack.uwsgi("emperor", "emperor.ini", WS4REDIS_HTTP=f"127.0.0.1:{port}")
    wait_for_stack(stack.run / "django.socket", stack, "the Django vassal")
    wait_for_stack(stack.run / "web.socket", stack, "the websocket vassal")
    wait_for_stack(("127.0.0.1", port), stack, "the emperor")
    # uWSGI built without PCRE cannot route: say so rather than fail on the page's 500
    assert "no internal routing support" not in stack.log("emperor"), NO_PCRE
    check_site(f"http://127.0.0.1:{port}")


def test_apache_in_front_of_uwsgi(stack):
    apache = system_binary("apache2", "apache2", "/usr/sbin/apache2")
    modules = Path("/usr/lib/apache2/modules")
    backend = free_port()
    stack.uwsgi("standalone", "standalone.ini", WS4REDIS_HTTP=f"127.0.0.1:{backend}")
    wait_for_stack(("127.0.0.1", backend), stack, "uWSGI")
    port = free_port()
    site = (DEPLOY / "apache" / "ws4redis.conf").read_text()
    site = site.replace("*:80", f"127.0.0.1:{port}").replace(
        "127.0.0.1:9090", f"127.0.0.1:{backend}"
    )
    conf = stack.tmp / "apache2.conf"
    load = "\n".join(
        f"LoadModule {name}_module {modules}/mod_{name}.so"
        for name in ("mpm_event", "authz_core", "proxy", "proxy_http", "proxy_wstunnel")
    )
    conf.write_text(
        f"""ServerRoot {stack.tmp}
{load}
Listen 127.0.0.1:{port}
PidFile {stack.tmp}/apache2.pid
ErrorLog {stack.tmp}/apache2-error.log
ServerName localhost
{site}
"""
    )
    stack.start("apache2", [apache, "-f", str(conf), "-DFOREGROUND"])
    wait_for_stack(("127.0.0.1", port), stack, "Apache")
    check_site(f"http://127.0.0.1:{port}")
