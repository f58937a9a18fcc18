"""Tests of opening a websocket, who may hear and speak, and the relay's rules, on every runtime."""
