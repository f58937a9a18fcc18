/*
 * ws4redis browser client: a websocket that reconnects by itself and speaks heartbeats.
 *
 *   var ws4redis = WS4Redis({
 *     uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast&publish-broadcast&echo",
 *     connecting: function () {},          // before each connection attempt
 *     connected: function () {},           // socket open
 *     receive_message: function (msg) {},  // every message except heartbeats
 *     disconnected: function (event) {},   // socket closed (a reconnect follows unless close())
 *     heartbeat_msg: {{ WS4REDIS_HEARTBEAT }}
 *   });
 *
 * Messages sent while not connected wait in a bounded queue (oldest dropped first) and go
 * out once connected again. No dependencies.
 */
(function (root) {
  "use strict";

  var HEARTBEAT_PERIOD = 5000;   // ms between our heartbeats
  var MISSED_LIMIT = 3;          // heartbeat periods without one from the server
  var BACKOFF_START = 500;       // ms, first reconnect delay ceiling
  var BACKOFF_MAX = 30000;       // ms, cap of the reconnect delay ceiling
  var QUEUE_LIMIT = 100;         // messages kept while disconnected

  function WS4Redis(options) {
    var opts = options || {};
    if (!opts.uri) throw new Error("WS4Redis: option 'uri' is required");
    var noop = function () {};
    var onConnecting = opts.connecting || noop;
    var onConnected = opts.connected || noop;
    var onMessage = opts.receive_message || noop;
    var onDisconnected = opts.disconnected || noop;
    var heartbeat = opts.heartbeat_msg || null;

    var ws = null;
    var closedByUser = false;
    var backoff = BACKOFF_START;
    var reconnectTimer = null;
    var heartbeatTimer = null;
    var missed = 0;
    var queue = [];

    function stopHeartbeat() {
      if (heartbeatTimer !== null) clearInterval(heartbeatTimer);
      heartbeatTimer = null;
    }

    function startHeartbeat() {
      stopHeartbeat();
      if (!heartbeat) return;
      missed = 0;
      heartbeatTimer = setInterval(function () {
        missed += 1;
        if (missed >= MISSED_LIMIT) {
          stopHeartbeat();
          ws.close();  // the close handler reconnects
          return;
        }
        ws.send(heartbeat);
      }, HEARTBEAT_PERIOD);
    }

    function connect() {
      reconnectTimer = null;
      onConnecting();
      ws = new WebSocket(opts.uri);
      ws.onopen = function () {
        backoff = BACKOFF_START;
        startHeartbeat();
        onConnected();
        while (queue.length && ws.readyState === WebSocket.OPEN) ws.send(queue.shift());
      };
      ws.onmessage = function (event) {
        if (heartbeat && event.data === heartbeat) {
          missed = 0;
          return;
        }
        onMessage(event.data);
      };
      ws.onclose = function (event) {
        stopHeartbeat();
        onDisconnected(event);
        if (closedByUser) return;
        // full jitter: anywhere between 0 and the current ceiling
        reconnectTimer = setTimeout(connect, Math.random() * backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX);
      };
    }

    connect();

    return {
      send_message: function (message) {
        if (ws && ws.readyState === WebSocket.OPEN) {
          ws.send(message);
        } else if (!closedByUser) {
          queue.push(message);
          if (queue.length > QUEUE_LIMIT) queue.shift();
        }
      },
      close: function () {
        closedByUser = true;
        if (reconnectTimer !== null) clearTimeout(reconnectTimer);
        reconnectTimer = null;
        stopHeartbeat();
        queue = [];
        if (ws) ws.close();
      },
      is_connecting: function () { return !!ws && ws.readyState === WebSocket.CONNECTING; },
      is_connected: function () { return !!ws && ws.readyState === WebSocket.OPEN; },
      is_closing: function () { return !!ws && ws.readyState === WebSocket.CLOSING; },
      is_closed: function () { return !ws || ws.readyState === WebSocket.CLOSED; }
    };
  }

  root.WS4Redis = WS4Redis;
})(typeof globalThis !== "undefined" ? globalThis : this);
