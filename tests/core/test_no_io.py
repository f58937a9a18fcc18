"""The core stays sans-I/O and framework-free: none of its modules imports a network, event
loop or thread library, Django, nor the parts of ws4redis above the core (the settings,
what talks to Redis, the runtimes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ws4redis.core

CORE = sorted(Path(ws4redis.core.__file__).parent.glob("*.py"))
ABOVE = sorted(
    f"ws4redis.{path.stem}"
    for path in Path(ws4redis.__file__).parent.glob("*.py")
    if path.stem != "__init__"
)
"""Every module of ws4redis outside the core (settings, publisher, live, metrics...)."""
FORBIDDEN = {
    "redis", "socket", "selectors", "select", "asyncio", "gevent", "uwsgi", "threading",
    "concurrent", "django", "ws4redis.settings", "ws4redis.runtimes", "ws4redis.management",
    "ws4redis.bus",
    *ABOVE,
}  # fmt: skip


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_module_imports_no_io(path):
    bad = {
        name
        for name in imported(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_module_counts_into_the_stats_it_is_given(path):
    """The process-wide counts are the runtimes' to hand in: a core object counts into the
    ``Stats`` it was given, so that its unit tests (and two hubs) never share counts."""
    assert "ws4redis.core.stats.STATS" not in imported(path), f"{path.name} imports STATS"
