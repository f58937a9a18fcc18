"""Tests of running it: checks, metrics, the live page, deployment, Autobahn, stress."""
