"""One Redis client (and so one connection pool) per process and per connection setting.

Views publish with a plain synchronous call; opening a TCP connection for each publish would
cost more than the publish itself, so every ``RedisPublisher`` shares the pool made here.
The key is the effective ``WS4REDIS_CONNECTION``, so ``override_settings`` in tests gets a
client of its own instead of silently reusing the old server.

``WS4REDIS_CONNECTION`` also names the topology: a server (``host``/``port`` or
``unix_socket_path``); Redis Sentinel (``sentinels`` and ``service_name``), whose current
master every connection asks for when it connects, so publishing and subscribing follow a
failover; or Redis Cluster (``cluster_nodes``, a few of its nodes to learn the others
from), where publishing uses sharded pub/sub (see ``docs/reference.md#redis-topologies``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured

from ws4redis import settings
from ws4redis.core.shards import SERVER, Address

ConnectionKey = str

REDIS_FAILED: tuple[type[Exception], ...] = (
    redis.RedisError,
    redis.exceptions.RedisClusterException,
)
"""What redis-py raises when Redis fails. Its cluster client's own errors (no node can be
reached, a slot no master covers while one fails over) are no ``RedisError``: a handler
that caught only those would let a cluster outage stop a thread or fail a request."""

_clients: dict[ConnectionKey, redis.Redis] = {}
_aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ConnectionKey, Any]] = (
    weakref.WeakKeyDictionary()
)
"""The ``redis.asyncio`` clients, per event loop: their connections belong to the loop that
opened them, so each loop gets its own, and loses them with the loop."""
_lock = threading.Lock()


def connection_kwargs() -> dict[str, Any]:
    """The keyword arguments for ``redis.Redis`` built from ``WS4REDIS_CONNECTION``."""
    kwargs = settings.WS4REDIS_CONNECTION_ARGS
    if kwargs.get("unix_socket_path"):
        # A unix socket replaces host and port; redis-py rejects neither, but ignores them.
        kwargs.pop("host", None)
        kwargs.pop("port", None)
    return kwargs


def connection_key(kwargs: dict[str, Any]) -> ConnectionKey:
    """A key of connection arguments: one client, or one hub, per distinct set. A string,
    whose hash is computed once: every opening looks its hub up by it."""
    return repr(sorted((name, repr(value)) for name, value in kwargs.items()))


@settings.derived
def configured_connection() -> tuple[dict[str, Any], ConnectionKey]:
    """:func:`connection_kwargs` and their :func:`connection_key`, made once per value of
    the settings: every opening asks for its client and its hub. The arguments are shared:
    callers copy them before changing any."""
    kwargs = connection_kwargs()
    return kwargs, connection_key(kwargs)


SENTINEL_DEFAULTS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
"""How long asking one Sentinel may take before the next is asked."""


def cluster_seeds(kwargs: dict[str, Any]) -> list[Address] | None:
    """The cluster nodes to learn the slot map from; None when the topology is no cluster."""
    nodes = kwargs.get("cluster_nodes")
    if nodes is None:
        return None
    if not nodes:
        raise ImproperlyConfigured("WS4REDIS_CONNECTION: 'cluster_nodes' names no node")
    return [(str(host), int(port)) for host, port in nodes]


def node_kwargs(kwargs: dict[str, Any], node: Address) -> dict[str, Any]:
    """Connection arguments for one node: a cluster master, or the server (:data:`SERVER`)
    that ``kwargs`` name."""
    if node == SERVER:
        return kwargs
    kwargs = {name: value for name, value in kwargs.items() if name != "cluster_nodes"}
    kwargs.pop("unix_socket_path", None)
    return {**kwargs, "host": node[0], "port": node[1]}


def make_client(kwargs: dict[str, Any], *, asyncio: bool = False) -> Any:
    """A redis-py client (``redis.asyncio`` with ``asyncio``) for :func:`connection_kwargs`:
    a server, the master that the Sentinels name for ``service_name``, or a cluster client
    that routes each command to the master of its slot."""
    kwargs = dict(kwargs)
    seeds = cluster_seeds(kwargs)
    if seeds is not None:
        kwargs.pop("cluster_nodes")
        if kwargs.pop("db", 0):
            raise ImproperlyConfigured("WS4REDIS_CONNECTION: a cluster has database 0 only")
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        cluster = redis.asyncio.cluster if asyncio else redis.cluster
        nodes = [cluster.ClusterNode(host, port) for host, port in seeds]
        return cluster.RedisCluster(startup_nodes=nodes, **kwargs)
    sentinels = kwargs.pop("sentinels", None)
    if sentinels is None:
        return (redis.asyncio.Redis if asyncio else redis.Redis)(**kwargs)
    service = kwargs.pop("service_name", None)
    if not service:
        raise ImproperlyConfigured("WS4REDIS_CONNECTION: 'sentinels' needs a 'service_name'")
    sentinel_kwargs = {**SENTINEL_DEFAULTS, **kwargs.pop("sentinel_kwargs", {})}
    kwargs.pop("host", None)  # the Sentinels say where the master is
    kwargs.pop("port", None)
    sentinel = redis.asyncio.sentinel.Sentinel if asyncio else redis.sentinel.Sentinel
    group = sentinel([tuple(address) for address in sentinels], sentinel_kwargs=sentinel_kwargs)
    return group.master_for(service, **kwargs)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (it then publishes with ``SPUBLISH``)."""
    return isinstance(
        client,
        redis.cluster.RedisCluster | redis.cluster.ClusterPipeline | redis.asyncio.RedisCluster,
    )


def get_many(client: Any, keys: list[str]) -> Any:
    """``MGET``, one command per slot on a cluster (a command may not span slots): the
    values (``list[bytes | None]`` when responses are not decoded), or with a
    ``redis.asyncio`` client what to await for them."""
    return client.mget_nonatomic(keys) if is_cluster(client) else client.mget(keys)


def get_redis() -> redis.Redis:
    """Return the process-wide client for the configured Redis server."""
    return _shared(_clients, asyncio=False)


def aget_redis() -> Any:
    """Return the ``redis.asyncio`` client of the running event loop for the configured
    Redis (a server, Sentinel's master or a cluster): one pool per loop and setting."""
    loop = asyncio.get_running_loop()
    with _lock:
        clients = _aclients.setdefault(loop, {})
    return _shared(clients, asyncio=True)


def _shared(clients: dict[ConnectionKey, Any], *, asyncio: bool) -> Any:
    """The client in ``clients`` for the current ``WS4REDIS_CONNECTION``, made once;
    ``redis.ConnectionError`` while no node of a cluster answers."""
    kwargs, key = configured_connection()
    client = clients.get(key)
    if client is None:
        with _lock:
            client = clients.get(key)
            if client is None:
                try:
                    client = make_client(kwargs, asyncio=asyncio)
                except TypeError as exc:
                    raise ImproperlyConfigured(f"WS4REDIS_CONNECTION: {exc}") from exc
                except redis.exceptions.RedisClusterException as exc:
                    # a cluster client learns its nodes when made: none answered. Callers
                    # (a view that publishes) expect a RedisError; nothing is kept, so the
                    # next call asks again.
                    raise redis.exceptions.ConnectionError(str(exc)) from exc
                clients[key] = client
    return client
