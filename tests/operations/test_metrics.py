"""Prometheus metrics: counted where things happen, read from runwebsocket's endpoint and
from the Django view, against a real server process and real websockets."""

from __future__ import annotations

import signal

import requests
import websocket
from django.test import RequestFactory
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import FACILITY
from tests.support.servers import free_port, start_runwebsocket, wait_for_listening, wait_until
from ws4redis import metrics
from ws4redis.publisher import RedisPublisher


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample: (name, sorted labels) -> value."""
    text = requests.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_runwebsocket_serves_metrics_that_follow_the_traffic(rdb):
    port, metrics_port = free_port(), free_port()
    process = start_runwebsocket(port, "--metrics", f"127.0.0.1:{metrics_port}")
    url = f"http://127.0.0.1:{metrics_port}/"
    base = f"ws://127.0.0.1:{port}"
    try:
        wait_for_listening(process, 1)
        ws = websocket.create_connection(f"{base}/ws/{FACILITY}?subscribe-broadcast")
        refused = requests.get(f"http://127.0.0.1:{port}/elsewhere", timeout=10)
        assert refused.status_code == 404
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message("hello", expire=0)
        assert ws.recv() == "hello"
        seen = scrape(url)
        assert seen[("ws4redis_connections", ())] == 1
        assert seen[("ws4redis_handshakes_total", (("status", "101"),))] == 1
        assert seen[("ws4redis_handshakes_total", (("status", "404"),))] == 1
        assert seen[("ws4redis_channels", ())] == 1
        assert seen[("ws4redis_subscriptions", ())] == 1
        assert seen[("ws4redis_redis_messages_total", ())] == 1
        assert seen[("ws4redis_deliveries_total", ())] == 1
        assert seen[("ws4redis_sent_bytes_total", ())] == len(b"\x81\x05hello")
        ws.send("x" * 2_000_000)  # over WS4REDIS_MAX_MESSAGE_SIZE: closed with 1009
        wait_until(lambda: scrape(url)[("ws4redis_connections", ())] == 0, "the close")
        seen = scrape(url)
        assert seen[("ws4redis_disconnects_total", (("code", "1009"),))] == 1
        assert seen[("ws4redis_channels", ())] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_the_django_view_serves_the_same_metrics():
    response = metrics.view(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"ws4redis_connections", "ws4redis_deliveries", "ws4redis_disconnects"} <= names
