"""What the tests share: servers they start, settings, callbacks, websocket clients."""
