"""``manage.py check --deploy`` names the risks of the original's open defaults, and says
nothing of ours on the example site, which is configured safely."""

from __future__ import annotations

import os
import subprocess
import sys

from django.core import checks
from django.test import override_settings

from tests.support.servers import ROOT
from ws4redis.testing import free_port

OPEN_DEFAULTS = {
    "DEBUG": False,
    "WS4REDIS_PERMISSIONS": None,
    "WS4REDIS_ALLOWED_CHANNELS": None,
    "WSGI_APPLICATION": "ws4redis.django_runserver.application",
}


def our_warnings() -> dict[str, str]:
    found = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    return {m.id: m.msg for m in found if m.id and m.id.startswith("ws4redis.")}


def test_the_original_open_defaults_name_each_risk():
    with override_settings(**OPEN_DEFAULTS):
        found = our_warnings()
    assert set(found) == {"ws4redis.W001", "ws4redis.W002", "ws4redis.W003"}
    assert "Anonymous clients may publish" in found["ws4redis.W001"]
    assert "WS4REDIS_ALLOWED_CHANNELS" in found["ws4redis.W002"]
    assert "ws4redis.django_runserver.application" in found["ws4redis.W003"]


def test_permissions_that_let_anonymous_clients_publish_are_named():
    permissions = {
        "chat": {"publish": "anyone"},
        "news": {"publish": {"broadcast": "nobody"}},  # its other audiences stay open
        "staff": {"publish": "staff"},
    }
    with override_settings(**{**OPEN_DEFAULTS, "WS4REDIS_PERMISSIONS": permissions}):
        found = our_warnings()
    assert set(found) == {"ws4redis.W001", "ws4redis.W003"}
    assert "chat, news, every facility not listed" in found["ws4redis.W001"]
    closed = {"*": {"publish": "authenticated"}, "chat": {"publish": "tests.support.callbacks.x"}}
    with override_settings(**{**OPEN_DEFAULTS, "WS4REDIS_PERMISSIONS": closed}):
        assert set(our_warnings()) == {"ws4redis.W003"}


def test_check_deploy_on_the_example_says_nothing_of_ours():
    """The example's own settings, as ``manage.py check --deploy`` reads them, in a process
    of its own."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatserver.settings"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT / "examples"), str(ROOT)])
    result = subprocess.run(
        [sys.executable, "-m", "django", "check", "--deploy"],
        cwd=ROOT / "examples", env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert "System check identified" in result.stdout + result.stderr  # Django's own W0xx
    assert "ws4redis." not in result.stdout + result.stderr


def ours(**settings) -> dict[str, str]:
    """What the checks of every command (tag ``ws4redis``) say under ``settings``."""
    with override_settings(**settings):
        found = checks.run_checks(tags=["ws4redis"])
    return {m.id: m.msg for m in found if m.id and m.id.startswith("ws4redis.")}


def test_a_redis_that_does_not_answer_is_a_warning_naming_where(rdb):
    assert ours() == {}  # the tests' own Redis answers
    port = free_port()  # nothing listens there
    found = ours(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port})
    assert set(found) == {"ws4redis.W004"}
    assert f"127.0.0.1:{port}" in found["ws4redis.W004"]


def test_a_wrong_setting_is_an_error_naming_it_not_an_exception():
    with override_settings(WS4REDIS_EXPIRE="an hour", WS4REDIS_MAX_BUFFER_SIZE=0):
        found = checks.run_checks(tags=["ws4redis"])
    errors = [m.msg for m in found if m.id == "ws4redis.E001"]
    assert len(errors) == 2 and "WS4REDIS_EXPIRE" in errors[0] + errors[1]
    assert "WS4REDIS_MAX_BUFFER_SIZE" in errors[0] + errors[1]
