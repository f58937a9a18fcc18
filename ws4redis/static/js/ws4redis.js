/*
 * ws4redis browser client: a websocket that reconnects by itself and speaks heartbeats.
 * No dependencies. As a classic script it defines the global `WS4Redis`; as an ES module
 * import it from ws4redis.mjs (`import WS4Redis from ".../ws4redis.mjs"`).
 *
 *   const chat = WS4Redis({
 *     uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast&publish-broadcast&echo",
 *     connecting: function () {},          // before each connection attempt
 *     connected: function () {},           // the websocket is open
 *     receive_message: function (msg, message) {},  // every message except heartbeats;
 *                                          // with `recover`, `message` is its JSON, where
 *                                          // message.from === "client" marks a client's
 *     presence: function (event) {},       // with `recover`, on a facility announcing
 *                                          // presence: {presence: "join"|"leave", user}
 *     disconnected: function (event) {},   // closed; a reconnect follows unless close()
 *     unrecovered: function (channel) {},  // with `recover`: messages of that channel were
 *                                          // lost while disconnected (reload its state)
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
 *
 * Recovery: with the `recover` key in the uri (and history kept for the facility on the
 * server), every message arrives with its channel's position; the client remembers the
 * last one per channel and reconnects with `since=...`, so receive_message sees each
 * message once, in order, across reconnects. When the server no longer holds what was
 * missed, unrecovered(channel) is called instead.
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
    var onUnrecovered = opts.unrecovered || noop;
    var onPresence = opts.presence || noop;
    var heartbeat = opts.heartbeat_msg || null;
    var recovering = /[?&]recover(&|=|$)/i.test(opts.uri);
    var positions = {};  // channel -> "epoch:offset" of the last message seen

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

    // The uri of the next connection: with recovery, where each channel left off.
    function currentUri() {
      var since = [];
      for (var channel in positions) since.push(channel + ":" + positions[channel]);
      if (!since.length) return opts.uri;
      return opts.uri + "&since=" + encodeURIComponent(since.join(","));
    }

    // A message of a connection with recovery: keep its position, hand over its data.
    function receivePositioned(text) {
      var message = JSON.parse(text);
      if (message.epoch !== undefined) {
        positions[message.channel] = message.epoch + ":" + message.offset;
      }
      if (message.channel === "presence") {
        onPresence({ presence: message.presence, user: message.user });  // made by the server
        return;
      }
      if (message.recovered === false) onUnrecovered(message.channel);
      if (message.data !== undefined) onMessage(message.data, message);
    }

    function connect() {
      reconnectTimer = null;
      onConnecting();
      var socket = new WebSocket(currentUri());
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
        if (recovering) receivePositioned(event.data);
        else onMessage(event.data);
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
