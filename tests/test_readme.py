"""The README, run as a newcomer would: a new ``django-admin startproject`` site, its install
snippet applied as written, then its "Testing your project" example run by ``manage.py test``
(every other setting at its default). A README change that breaks them fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT

README = (ROOT / "README.md").read_text()


def snippet(section: str, contains: str) -> str:
    """The first python block of README section ``section`` that contains ``contains``."""
    part = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, re.S)
    return next(block for block in blocks if contains in block)


def test_the_readme_install_and_testing_snippets_work_in_a_new_project(tmp_path: Path, rdb):
    django_admin = [sys.executable, "-m", "django"]
    subprocess.run([*django_admin, "startproject", "mysite", str(tmp_path)], check=True)
    install = snippet("Install", "INSTALLED_APPS")
    # "[..., x]" in the README stands for the list the project has: keep it, add x
    install = install.replace("[...,", "[*INSTALLED_APPS,")
    redis_at = rdb.connection_pool.connection_kwargs
    where = f'WS4REDIS_CONNECTION = {{"host": "{redis_at["host"]}", "port": {redis_at["port"]}}}'
    with (tmp_path / "mysite" / "settings.py").open("a") as settings:
        settings.write(f"\n{install}\n{where}\n")
    (tmp_path / "test_readme_example.py").write_text(snippet("Testing your project", "class "))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "-v", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_john_gets_his_note" in result.stderr and "OK" in result.stderr
