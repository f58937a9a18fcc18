"""The README, run as a newcomer would: a new ``django-admin startproject`` site with its
install snippet applied as written (every other setting at its default), then its
"Testing your project" example under ``manage.py test``, and ``runserver`` answering a
websocket that its publishing snippet reaches. A README change that breaks them fails here."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
from pathlib import Path

import websocket

from tests.support.servers import ROOT, free_port, wait_for

README = (ROOT / "README.md").read_text()


def snippet(section: str, contains: str) -> str:
    """The first python block of README section ``section`` that contains ``contains``."""
    part = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, re.S)
    return next(block for block in blocks if contains in block)


def new_project(where: Path, rdb) -> dict[str, str]:
    """A ``startproject`` site in ``where`` with the README's install snippet applied as
    written and the tests' Redis configured; the environment to run its manage.py in."""
    django_admin = [sys.executable, "-m", "django"]
    subprocess.run([*django_admin, "startproject", "mysite", str(where)], check=True)
    install = snippet("Install", "INSTALLED_APPS")
    # "[..., x]" in the README stands for the list the project has: keep it, add x
    install = install.replace("[...,", "[*INSTALLED_APPS,")
    redis_at = rdb.connection_pool.connection_kwargs
    redis = f'WS4REDIS_CONNECTION = {{"host": "{redis_at["host"]}", "port": {redis_at["port"]}}}'
    with (where / "mysite" / "settings.py").open("a") as settings:
        settings.write(f"\n{install}\n{redis}\n")
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def test_the_readme_install_and_testing_snippets_work_in_a_new_project(tmp_path: Path, rdb):
    env = new_project(tmp_path, rdb)
    (tmp_path / "test_readme_example.py").write_text(snippet("Testing your project", "class "))
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "-v", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_john_gets_his_note" in result.stderr and "OK" in result.stderr


VIEW = """
from pathlib import Path

from django.http import HttpResponse


def readme_publishing(request):
    exec(Path(__file__).with_name("publishing.py").read_text(), {"request": request})
    return HttpResponse("published")


urlpatterns += [path("publish/", readme_publishing)]
"""

LOGIN = """
from django.contrib.auth.models import Group, User
from django.test import Client

john = User.objects.create_user("john", password="secret")
john.groups.add(Group.objects.create(name="chatters"))
client = Client()
assert client.login(username="john", password="secret")
print(client.cookies["sessionid"].value)
"""


def test_runserver_of_the_new_project_answers_websockets_and_the_publishing_snippet(
    tmp_path: Path, rdb
):
    """``./manage.py runserver`` of that project answers websockets under /ws/, and the
    README's publishing snippet, run as written in a view of that project that john
    requests, reaches john's websocket: the broadcast, the message to him and to SELF (one
    channel, so once) and the one to his group."""
    env = new_project(tmp_path, rdb)
    (tmp_path / "mysite" / "publishing.py").write_text(snippet("Use it", "broadcast=True"))
    with (tmp_path / "mysite" / "urls.py").open("a") as urls:
        urls.write(VIEW)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=tmp_path, env=env, check=True)
    login = [*manage, "shell", "-c", LOGIN]
    done = subprocess.run(login, cwd=tmp_path, env=env, check=True, capture_output=True)
    session = done.stdout.decode().split()[-1]
    port = free_port()
    command = [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"]
    log = tmp_path / "runserver.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=output)
    try:
        ended = lambda: None if server.poll() is None else log.read_text()  # noqa: E731
        wait_for(("127.0.0.1", port), "the new project's runserver", ended)
        keys = "subscribe-broadcast&subscribe-user&subscribe-group"
        url = f"ws://127.0.0.1:{port}/ws/foobar?{keys}"
        ws = websocket.create_connection(url, timeout=10, cookie=f"sessionid={session}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/publish/", headers={"Cookie": f"sessionid={session}"})
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, b"published"), log.read_text()
            received = {ws.recv() for _ in range(3)}
            # bytes that are valid UTF-8 arrive as text, as the README says
            assert received == {"Hello all", "Hello john, and me", "binary is fine"}
        finally:
            ws.close()
    finally:
        server.terminate()
        server.wait(30)
