/*
 * ws4redis browser client: a websocket that reconnects by itself and speaks heartbeats.
 * No dependencies. As a classic script it defines the global `WS4Redis`; as an ES module
 * import it from ws4redis.mjs (`import WS4Redis from ".../ws4redis.mjs"`).
 *
 *   const chat = WS4Redis({
 *     uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast&publish-broadcast&echo",
 *     connecting: function () {},          // before each connection attempt
 *     connected: function () {},           // the websocket is open
 *     receive_message: function (msg) {},  // every message except heartbeats
 *     disconnected: function (event) {},   // closed; a reconnect follows unless close()
 *     heartbeat_msg: {{ WS4REDIS_HEARTBEAT }}
 *   });
 *   chat.send_message("hello");
 *   chat.close();                          // for good: no reconnect after this
 *
 * Reconnecting: after any close that close() did not ask for, wait a random time between 0
 * and a ceiling that starts at 0.5 s and doubles up to 30 s ("full jitter"), so that clients
 * of a restarted server do not all come back at once. The ceiling resets once a connection
 * opens.
 *
 * Heartbeats (with heartbeat_msg): the client sends it every 5 s; if three periods pass
 * without one from the server, the connection is taken as dead and replaced.
 *
 * Messages sent while not connected wait in a queue of at most 100 (the oldest is dropped
 * first) and go out, in order, as soon as a connection opens. close() discards the queue.
 */
(function (root) {
  "use strict";

  var HEARTBEAT_PERIOD = 5000;  // ms between heartbeats sent
  var MISSED_LIMIT = 3;         // periods without a heartbeat from the server
  var BACKOFF_START = 500;      // ms, first ceiling of the reconnect delay
  var BACKOFF_MAX = 30000;      // ms, largest ceiling
  var QUEUE_LIMIT = 100;        // messages kept while disconnected

  function WS4Redis(options) {
    var opts = options || {};
    if (!opts.uri) throw new Error("WS4Redis: the option 'uri' is required");
    var noop = function () {};
    var onConnecting = opts.connecting || noop;
    var onConnected = opts.connected || noop;
    var onMessage = opts.receive_message || noop;
    var onDisconnected = opts.disconnected || noop;
    var heartbeat = opts.heartbeat_msg || null;

    var ws = null;
    var closedForGood = false;
    var ceiling = BACKOFF_START;
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
          lost({ code: 4000, reason: "no heartbeat from the server", wasClean: false });
          return;
        }
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(heartbeat);
      }, HEARTBEAT_PERIOD);
    }

    // The current socket is gone (closed, or silent too long): forget it and plan the next.
    function lost(event) {
      var old = ws;
      ws = null;
      stopHeartbeat();
      if (old) {
        old.onopen = old.onmessage = old.onclose = old.onerror = null;
        if (old.readyState === WebSocket.CONNECTING || old.readyState === WebSocket.OPEN) {
          old.close();
        }
      }
      onDisconnected(event);
      if (closedForGood) return;
      reconnectTimer = setTimeout(connect, Math.random() * ceiling);
      ceiling = Math.min(ceiling * 2, BACKOFF_MAX);
    }

    function connect() {
      reconnectTimer = null;
      onConnecting();
      var socket = new WebSocket(opts.uri);
      ws = socket;
      socket.onopen = function () {
        ceiling = BACKOFF_START;
        startHeartbeat();
        while (queue.length && socket.readyState === WebSocket.OPEN) socket.send(queue.shift());
        onConnected();
      };
      socket.onmessage = function (event) {
        if (heartbeat && event.data === heartbeat) {
          missed = 0;
          return;
        }
        onMessage(event.data);
      };
      socket.onclose = lost;
    }

    connect();

    return {
      send_message: function (message) {
        if (ws && ws.readyState === WebSocket.OPEN) {
          ws.send(message);
        } else if (!closedForGood) {
          queue.push(message);
          if (queue.length > QUEUE_LIMIT) queue.shift();
        }
      },
      close: function () {
        closedForGood = true;
        queue = [];
        if (reconnectTimer !== null) clearTimeout(reconnectTimer);
        reconnectTimer = null;
        stopHeartbeat();
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
