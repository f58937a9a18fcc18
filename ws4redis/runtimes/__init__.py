"""Adapters that move bytes between a server and the core, one module per runtime."""
