"""The core stays sans-I/O: none of its modules imports a network, event loop or thread
library, nor the parts of ws4redis that talk to Redis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ws4redis.core

FORBIDDEN = {
    "redis", "socket", "selectors", "select", "asyncio", "gevent", "uwsgi", "threading",
    "concurrent", "ws4redis.subscriber", "ws4redis.redis_pool", "ws4redis.redis_store",
    "ws4redis.runtimes",
}  # fmt: skip
CORE = sorted(Path(ws4redis.core.__file__).parent.glob("*.py"))


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_module_imports_no_io(path):
    bad = {
        name
        for name in imported(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"
