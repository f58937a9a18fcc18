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
 *     heartbeat_msg: {{ WS4REDIS_HEARTBEAT }},
 *     token: "...",                        // a connection token (ws4redis.tokens), for a
 *                                          // page without the site's session cookie
 *     token_refresh: "/ws-token/"          // or function () { return promise of
 *                                          // {token, max_age} (or the token) }
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
 *
 * Tokens: with `token` or `token_refresh`, every connection carries the token in the query
 * field `ws4redis-token`. A token counts only when a connection opens, so the client gets
 * a fresh one from token_refresh (a URL answering {"token", "max_age"} as
 * ws4redis.tokens.token_view does, fetched with the page's credentials, or a function)
 * before a connection whenever it has none, its token is past 80% of its lifetime, or the
 * last attempt never opened (a browser cannot see the 403 of a refused handshake: an
 * expired or revoked token looks like any failed attempt). A failed refresh is retried
 * with the reconnect delay.
 */
(function (root) {
  "use strict";

  var HEARTBEAT_PERIOD = 5000;  // ms between heartbeats sent
  var MISSED_LIMIT = 3;         // periods without a heartbeat from the server
  var BACKOFF_START = 500;      // ms, first ceiling of the reconnect delay
  var BACKOFF_MAX = 30000;      // ms, largest ceiling
  var QUEUE_LIMIT = 100;        // messages kept while disconnected
  var TOKEN_KEY = "ws4redis-token";  // the query field of ws4redis.tokens.QUERY_KEY
  var TOKEN_USE = 0.8;          // share of a token's lifetime after which it is refreshed

  // The lifetime in seconds a token of ws4redis.tokens names (its signed JSON's "a"); null
  // when it cannot be read (then only a failed attempt makes the client refresh it).
  function tokenLifetime(token) {
    try {
      var payload = token.split(":")[0].replace(/-/g, "+").replace(/_/g, "/");
      while (payload.length % 4) payload += "=";
      var lifetime = JSON.parse(atob(payload)).a;
      return typeof lifetime === "number" ? lifetime : null;
    } catch (error) {
      return null;
    }
  }

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
    var token = null;
    var tokenStaleAt = Infinity;  // Date.now() after which the token is refreshed first
    var refresh = opts.token_refresh || null;
    var failedOpening = false;    // the last attempt closed before it opened

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

    // The uri of the next connection: its token, and with recovery where each channel
    // left off.
    function currentUri() {
      var fields = [];
      if (token !== null) fields.push(TOKEN_KEY + "=" + encodeURIComponent(token));
      var since = [];
      for (var channel in positions) since.push(channel + ":" + positions[channel]);
      if (since.length) fields.push("since=" + encodeURIComponent(since.join(",")));
      if (!fields.length) return opts.uri;
      return opts.uri + (opts.uri.indexOf("?") < 0 ? "?" : "&") + fields.join("&");
    }

    function setToken(value, maxAge) {
      token = value;
      var lifetime = typeof maxAge === "number" ? maxAge : tokenLifetime(value);
      tokenStaleAt = lifetime === null ? Infinity : Date.now() + lifetime * 1000 * TOKEN_USE;
    }

    function fetchToken() {
      if (typeof refresh === "function") return Promise.resolve(refresh());
      return fetch(refresh, { credentials: "include", cache: "no-store" }).then(function (r) {
        if (!r.ok) throw new Error("WS4Redis: " + refresh + " answered " + r.status);
        return r.json();
      });
    }

    // Connect once a fresh token is at hand; a failed refresh waits as a failed attempt.
    function refreshThenConnect() {
      fetchToken().then(function (answer) {
        if (closedForGood) return;
        if (typeof answer === "string") setToken(answer, null);
        else setToken(answer.token, answer.max_age);
        failedOpening = false;
        connect();
      }, function () {
        if (closedForGood) return;
        reconnectTimer = setTimeout(connect, Math.random() * ceiling);
        ceiling = Math.min(ceiling * 2, BACKOFF_MAX);
      });
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
      if (refresh && (token === null || failedOpening || Date.now() >= tokenStaleAt)) {
        refreshThenConnect();
        return;
      }
      onConnecting();
      var socket = new WebSocket(currentUri());
      var opened = false;
      ws = socket;
      socket.onopen = function () {
        opened = true;
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
      socket.onclose = function (event) {
        failedOpening = !opened;
        lost(event);
      };
    }

    if (opts.token) setToken(opts.token, null);
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
