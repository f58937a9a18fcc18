"""The admin's live page, fed by real websocket processes through Redis."""

from __future__ import annotations

import re
import signal

import websocket
from django.contrib.auth.models import User
from django.test import Client

from tests.support.clients import (
    FACILITY,
    connected,
    login,
    publish_marker,
    recv_close,
    session_cookie,
)
from tests.support.servers import free_port, start_runwebsocket, wait_for_listening, wait_until

HERE = "here"  # presence is kept there (tests/support/settings.py)


def live_page(client: Client) -> str:
    response = client.get("/admin/ws4redis/live/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_live_page_adds_up_every_process_and_shows_presence(rdb, transactional_db):
    User.objects.create_superuser("boss", password="secret")
    staff = Client()
    assert staff.login(username="boss", password="secret")
    port = free_port()
    process = start_runwebsocket(port, "--workers", "2")
    sockets = []
    try:
        wait_for_listening(process, 2)
        for facility in ["lobby"] * 11 + [HERE] * 2:  # the kernel spreads them over both
            url = f"ws://127.0.0.1:{port}/ws/{facility}?subscribe-broadcast"
            sockets.append(websocket.create_connection(url, timeout=10))
        wait_until(lambda: '<td class="open">11</td>' in live_page(staff), "lobby's eleven")
        page = live_page(staff)
        assert "<td>lobby</td>" in page and "<td>here</td>" in page
        # both workers (this test process may report too, from other tests' websockets)
        assert int(re.search(r"(\d+) websocket processes reporting", page)[1]) >= 2
        assert "presence not kept" in page  # lobby keeps none
        assert "nobody logged in" in page  # here does: two anonymous websockets
        for ws in sockets:
            ws.close()
        wait_until(lambda: "No websocket is open." in live_page(staff), "all closes")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_the_live_page_is_for_staff_only(transactional_db):
    response = Client().get("/admin/ws4redis/live/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_admin_index_links_to_the_live_page(rdb, transactional_db):
    staff = Client()
    staff.force_login(User.objects.create_user("staff", is_staff=True, is_superuser=True))
    index = staff.get("/admin/").content.decode()
    assert 'href="/admin/ws4redis/live/"' in index and "Live websockets" in index


def test_staff_who_may_change_users_close_a_user_s_websockets_from_the_live_page(
    socket_server, rdb, users
):
    """The form closes john's websockets on one facility (4003), in the websocket process;
    his others stay open. Staff without the permission get 403 and close nothing."""
    boss = Client()
    boss.force_login(User.objects.create_user("boss", is_staff=True, is_superuser=True))
    viewer = Client()
    viewer.force_login(User.objects.create_user("viewer", is_staff=True))
    assert 'id="ws4redis-disconnect"' in live_page(boss)
    assert 'id="ws4redis-disconnect"' not in live_page(viewer)
    cookie = [session_cookie(login("john"))]
    with connected(socket_server, "subscribe-broadcast", header=cookie) as here:
        with connected(
            socket_server, "subscribe-broadcast", facility="elsewhere", header=cookie
        ) as other:
            refused = viewer.post("/admin/ws4redis/live/", {"user": "john"})
            assert refused.status_code == 403
            answer = boss.post(
                "/admin/ws4redis/live/", {"user": "john", "facility": FACILITY}, follow=True
            )
            assert "Closed the websockets of john on unittest" in answer.content.decode()
            assert recv_close(here) == 4003
            publish_marker("elsewhere")  # the refused POST closed nothing either
            assert other.recv() == "--marker--"
