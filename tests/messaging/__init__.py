"""Tests of Redis: publishing, history, presence, Cluster and Sentinel, Redis faults."""
