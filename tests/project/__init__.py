"""Tests of what a user of the project meets: the README, the browser, the testing helpers."""
