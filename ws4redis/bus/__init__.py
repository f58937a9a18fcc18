"""The Redis side of ws4redis, below its public API: the process's Redis clients
(pool), commands that reach Redis at most once (commands), the history scripts
(history), the per-process workers (live: the counts the admin page reads; process:
one of each per process, forked or not)."""
