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
 *                                          // presence: {presence: "join"|"leave", user},
 *                                          // or {presence: "diff", joined, left, ...}
 *     disconnected: function (event) {},   // closed; a reconnect follows unless close()
 *     unrecovered: function (channel) {},  // with `recover`: messages of that channel were
 *                                          // lost while disconnected (reload its state)
 *     heartbeat_msg: {{ WS4REDIS_HEARTBEAT }},
 *     token: "...",                        // a connection token (ws4redis.tokens), for a
 *                                          // page without the site's session cookie
 *     token_refresh: "/ws-token/",         // or function () { return promise of
 *                                          // {token, max_age} (or the token) }
 *     transport: "auto"                    // or "websocket", or "sse" (Server-Sent Events)
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
 *
 * Server-Sent Events, when websockets cannot get through (a proxy that refuses the
 * upgrade): the same uri in its http(s) form is an event stream (EventSource) for what the
 * server sends, and send_message POSTs each message to it, in order, with the
 * X-CSRFToken header read from the csrftoken cookie (option csrf_cookie) and the page's
 * credentials. The callbacks stay the same; heartbeats are not sent (the server's keepalive
 * comments keep the stream up). A hook's answer to a POST reaches receive_message as on a
 * websocket; a POST that gets no answer at all ends the stream and waits, with those after
 * it, for the next connection; one the server refuses is dropped. On every reconnect the uri carries `since`, as for a
 * websocket; a `close` event of the server reaches disconnected({code, reason}) as a
 * websocket's close would. transport "auto" (the default) starts with a websocket and
 * changes to an event stream after two attempts in a row that fail before they open, as
 * long as no connection of this client ever opened (then the server is merely away); it
 * keeps changing so every two failures until one opens, and keeps what opened. "sse" uses
 * only event streams, "websocket" only websockets; multiplex always uses websockets.
 *
 * Many facilities on one websocket (`multiplex: true`, the `ws4redis.v1` subprotocol): the
 * uri is WEBSOCKET_URI itself, and facilities are subscribed while the connection lives:
 *
 *   const ws = WS4Redis({uri: "{{ WEBSOCKET_URI }}", multiplex: true, heartbeat_msg: ...});
 *   const room = ws.subscribe("room", ["subscribe-broadcast", "publish-broadcast"], {
 *     message: function (data, message) {},  // message: its JSON (facility, channel...)
 *     presence: function (message) {},       // {presence, user, channel: "presence"}
 *     unrecovered: function (message) {},    // {recovered: false, channel}: reload state
 *     subscribed: function () {},            // the server said subscribed (each connection)
 *     unsubscribed: function (info) {},      // Django ended it: {code, reason}; not resumed
 *     rejected: function (reason, message) {},  // a hook refused a publish
 *     error: function (err) {}               // an error answer: err.status, err.reason
 *   });
 *   room.publish("hello");                   // text; waits until the facility is subscribed
 *   room.call("name", {any: "json"}).then(function (data) {}, function (err) {});
 *   room.unsubscribe();                      // or ws.unsubscribe("room"); both return a
 *                                            // promise of the server's answer
 *
 * Every facility recovers by itself: the client keeps the last epoch:offset of each of its
 * channels and resubscribes it with `since` on every reconnect, until the page (or Django)
 * unsubscribes it. A subscription the server refuses (an error answer) is dropped.
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
  var SUBPROTOCOL = "ws4redis.v1";  // many facilities on one websocket
  var FAILURES_TO_SWITCH = 2;   // attempts in a row that never open before "auto" changes
  var CONNECTING = 0, OPEN = 1, CLOSED = 3;  // readyState, as WebSocket's

  // An Error for an `error` answer of the server: its status and reason.
  function answerError(message) {
    var error = new Error("WS4Redis: " + message.status + " " + message.reason);
    error.status = message.status;
    error.reason = message.reason;
    error.facility = message.facility;
    return error;
  }

  // The http(s) form of a websocket URL: where its event stream and POSTs go.
  function httpForm(uri) {
    return uri.replace(/^ws(s?):/i, "http$1:");
  }

  function cookie(name) {
    var found = null;
    (document.cookie || "").split(";").forEach(function (pair) {
      var at = pair.indexOf("=");
      if (at >= 0 && pair.slice(0, at).trim() === name) {
        found = decodeURIComponent(pair.slice(at + 1).trim());
      }
    });
    return found;
  }

  // An event stream dressed as a WebSocket (readyState, onopen, onmessage, onclose, send,
  // close), so that the client's logic serves both. `postUri` is where send() POSTs; what
  // the server answers with a body (a hook's reply or rejection, JSON) goes to `answer`.
  // A POST that fails on the way (no answer at all) ends the stream, and it and those after
  // it go back, in order, to the client's queue by `requeue(text, index)`.
  function EventStreamSocket(uri, postUri, csrfCookie, answer, requeue) {
    var self = { readyState: CONNECTING, onopen: null, onmessage: null, onclose: null,
                 isEventStream: true };
    var source = new EventSource(httpForm(uri));
    var sending = Promise.resolve();  // POSTs go one after the other, in order
    var returned = -1;                // messages given back to the queue; -1: none failed

    function finish(event) {
      if (self.readyState === CLOSED) return;
      self.readyState = CLOSED;
      source.close();
      setTimeout(function () { if (self.onclose) self.onclose(event); }, 0);
    }

    source.onopen = function () {
      if (self.readyState !== CONNECTING) return;
      self.readyState = OPEN;
      if (self.onopen) self.onopen({});
    };
    source.onmessage = function (event) {
      if (self.readyState === OPEN && self.onmessage) self.onmessage({ data: event.data });
    };
    source.addEventListener("bytes", function (event) {
      if (self.readyState === OPEN && self.onmessage) {
        self.onmessage({ data: decodeBase64(event.data) });
      }
    });
    source.addEventListener("close", function (event) {  // the server ends the stream
      var info = {};
      try {
        info = JSON.parse(event.data) || {};
      } catch (error) {
        info = {};
      }
      finish({ code: info.code || 1005, reason: info.reason || "", wasClean: true });
    });
    // The stream broke or was refused: the client reconnects itself (with `since`), not
    // the browser (whose Last-Event-ID would skip the client's backoff and callbacks).
    source.onerror = function () {
      finish({ code: 1006, reason: "", wasClean: false });
    };

    self.send = function (text) {
      var headers = {};
      var csrf = cookie(csrfCookie);
      if (csrf !== null) headers["X-CSRFToken"] = csrf;
      sending = sending.then(function () {
        if (returned >= 0) {
          requeue(text, returned++);
          return null;
        }
        return fetch(httpForm(postUri), { method: "POST", body: text, headers: headers,
                                          credentials: "same-origin" }).then(null, function () {
          returned = 0;
          requeue(text, returned++);
          finish({ code: 1006, reason: "a message could not be sent", wasClean: false });
          return null;
        });
      }).then(function (response) {
        // a refusal (4xx, 5xx) is final, as a websocket's server would not take it either
        if (!response || response.status !== 200) return;
        return response.text().then(function (body) { if (body) answer(body); });
      }).catch(function () {});
    };
    self.close = function () {
      finish({ code: 1000, reason: "", wasClean: true });
    };
    return self;
  }

  function notSubscribed(facility) {
    return new Error("WS4Redis: " + facility + " is not subscribed");
  }

  function decodeBase64(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

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
    var multiplex = !!opts.multiplex;
    var transport = opts.transport || "auto";
    if (["auto", "websocket", "sse"].indexOf(transport) < 0) {
      throw new Error("WS4Redis: transport is 'auto', 'websocket' or 'sse'");
    }
    if (multiplex && transport === "sse") {
      throw new Error("WS4Redis: multiplex needs websockets, not transport 'sse'");
    }
    var canStream = !multiplex && typeof EventSource !== "undefined";
    var streaming = transport === "sse";  // the next connection is an event stream
    var failures = 0;             // attempts in a row that closed before they opened
    var everOpened = false;       // a connection of this client opened once
    var csrfCookie = opts.csrf_cookie || "csrftoken";
    var recovering = !multiplex && /[?&]recover(&|=|$)/i.test(opts.uri);
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
    // What waits to be sent: {entry, text, call}. entry is null for send_message (sent once
    // connected); else a facility's subscription (sent once it is subscribed), with call
    // the record of a call's promise.
    var queue = [];

    // Many facilities: facility -> its subscription, {facility, keys, handlers, positions
    // (channel -> "epoch:offset"), socket (where its subscribe went), ready (subscribed
    // there)}; and the requests sent that wait for their answer, by id.
    var facilities = {};
    var nextId = 1;
    var pending = {};  // id -> {kind: "subscribe"|"unsubscribe"|"call", entry, resolve, reject}

    function enqueue(item) {
      queue.push(item);
      if (queue.length > QUEUE_LIMIT) {
        var dropped = queue.shift();
        if (dropped.call) dropped.call.reject(new Error("WS4Redis: dropped from the full queue"));
      }
    }

    function isOpen(socket) {
      return !!socket && socket === ws && socket.readyState === OPEN;
    }

    // Send what may go now, in order; the rest (of facilities not subscribed yet) waits.
    function flush() {
      if (!isOpen(ws)) return;
      var waiting = [];
      for (var i = 0; i < queue.length; i++) {
        var item = queue[i];
        var entry = item.entry;
        if (entry === null) {
          ws.send(item.text);
        } else if (facilities[entry.facility] !== entry) {
          if (item.call) item.call.reject(notSubscribed(entry.facility));
        } else if (entry.ready && entry.socket === ws) {
          if (item.call) {
            request("call", { facility: entry.facility, name: item.call.name,
                              data: item.call.data }, item.call);
          } else {
            ws.send(item.text);
          }
        } else {
          waiting.push(item);
        }
      }
      queue = waiting;
    }

    // Send a request of `type` (its id, then `fields`); `record` waits for the answer.
    function request(type, fields, record) {
      var id = nextId++;
      var message = { type: type, id: id };
      for (var name in fields) message[name] = fields[name];
      pending[id] = record;
      ws.send(JSON.stringify(message));
    }

    function sendSubscribe(entry) {
      entry.socket = ws;
      entry.ready = false;
      var fields = { facility: entry.facility, keys: entry.keys };
      var since = [];
      for (var channel in entry.positions) since.push(channel + ":" + entry.positions[channel]);
      if (since.length) fields.since = since.join(",");
      request("subscribe", fields, { kind: "subscribe", entry: entry });
    }

    // The subscription is over (for the page or by the server): no more of its messages,
    // and what waited for it fails.
    function forget(entry) {
      if (facilities[entry.facility] === entry) delete facilities[entry.facility];
      entry.ready = false;
      queue = queue.filter(function (item) {
        if (item.entry !== entry) return true;
        if (item.call) item.call.reject(notSubscribed(entry.facility));
        return false;
      });
    }

    // A page's handler; what it throws is reported without upsetting the client's state.
    function call(handler, args) {
      if (typeof handler !== "function") return;
      try {
        handler.apply(null, args);
      } catch (error) {
        setTimeout(function () { throw error; }, 0);
      }
    }

    // A frame of a ws4redis.v1 connection: a facility's message or an answer.
    function receiveMultiplexed(text) {
      var message;
      try {
        message = JSON.parse(text);
      } catch (error) {
        return;
      }
      if (!message || typeof message !== "object") return;
      var entry = facilities[message.facility];
      var handlers = entry ? entry.handlers : {};
      if (message.type === "message") {
        if (!entry || !entry.ready) return;  // of a subscription that is over
        if (message.epoch !== undefined && message.offset !== undefined) {
          entry.positions[message.channel] = message.epoch + ":" + message.offset;
        }
        if (message.channel === "presence") {
          call(handlers.presence, [message]);
          return;
        }
        if (message.recovered === false) call(handlers.unrecovered, [message]);
        if (message.data !== undefined) call(handlers.message, [message.data, message]);
        else if (message.bytes !== undefined) {
          call(handlers.message, [decodeBase64(message.bytes), message]);
        }
        return;
      }
      var answered = message.id !== null && message.id !== undefined;
      var record = answered ? pending[message.id] : undefined;
      if (record) delete pending[message.id];
      switch (message.type) {
        case "subscribed":
          if (record && record.kind === "subscribe" &&
              facilities[record.entry.facility] === record.entry) {
            record.entry.ready = true;
            call(record.entry.handlers.subscribed, []);
            flush();
          }
          return;
        case "unsubscribed":
          if (record) {
            if (record.resolve) record.resolve();
          } else if (entry && entry.ready) {  // Django ended it
            forget(entry);
            call(handlers.unsubscribed, [{ code: message.code, reason: message.reason }]);
          }
          return;
        case "reply":
          if (record && record.kind === "call") record.resolve(message.data);
          return;
        case "rejected":
          if (record && record.kind === "call") record.reject(answerError(message));
          else if (entry) call(handlers.rejected, [message.reason, message]);
          return;
        case "error":
          var error = answerError(message);
          if (!record) {
            if (entry) call(handlers.error, [error]);
          } else if (record.kind === "call") {
            record.reject(error);
          } else if (record.kind === "unsubscribe") {
            record.resolve();
          } else if (facilities[record.entry.facility] === record.entry) {  // refused
            forget(record.entry);
            call(record.entry.handlers.error, [error]);
          }
          return;
      }
    }

    // The connection is gone: calls under way fail, every subscription waits to be resent.
    function dropRequests() {
      var records = pending;
      pending = {};
      for (var id in records) {
        var record = records[id];
        if (record.kind === "call") record.reject(new Error("WS4Redis: the connection closed"));
        else if (record.resolve) record.resolve();
      }
      for (var facility in facilities) facilities[facility].ready = false;
    }

    function stopHeartbeat() {
      if (heartbeatTimer !== null) clearInterval(heartbeatTimer);
      heartbeatTimer = null;
    }

    function startHeartbeat() {
      stopHeartbeat();
      if (!heartbeat || (ws && ws.isEventStream)) return;  // a stream has its keepalives
      missed = 0;
      heartbeatTimer = setInterval(function () {
        missed += 1;
        if (missed >= MISSED_LIMIT) {
          lost({ code: 4000, reason: "no heartbeat from the server", wasClean: false });
          return;
        }
        if (ws && ws.readyState === OPEN) ws.send(heartbeat);
      }, HEARTBEAT_PERIOD);
    }

    // The current socket is gone (closed, or silent too long): forget it and plan the next.
    function lost(event) {
      var old = ws;
      ws = null;
      stopHeartbeat();
      dropRequests();
      if (old) {
        old.onopen = old.onmessage = old.onclose = old.onerror = null;
        if (old.readyState === CONNECTING || old.readyState === OPEN) {
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
    function currentUri(withPositions) {
      var fields = [];
      if (token !== null) fields.push(TOKEN_KEY + "=" + encodeURIComponent(token));
      var since = [];
      if (withPositions !== false) {
        for (var channel in positions) since.push(channel + ":" + positions[channel]);
      }
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
        // made by the server: {presence: "join"|"leave", user}, or for a crowd
        // {presence: "diff", joined, left, join?, leave?} (see the docs' Presence)
        var told = { presence: message.presence };
        ["user", "joined", "left", "join", "leave"].forEach(function (key) {
          if (message[key] !== undefined) told[key] = message[key];
        });
        onPresence(told);
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
      var socket;
      if (streaming) {
        socket = EventStreamSocket(currentUri(), currentUri(false), csrfCookie, function (body) {
          if (recovering) receivePositioned(body);  // as a websocket gets the hook's answer
          else onMessage(body);
        }, function (text, index) {
          if (!closedForGood) queue.splice(index, 0, { entry: null, text: text, call: null });
        });
      } else {
        socket = multiplex ? new WebSocket(currentUri(), [SUBPROTOCOL])
                           : new WebSocket(currentUri());
      }
      var opened = false;
      ws = socket;
      socket.onopen = function () {
        opened = true;
        everOpened = true;
        failures = 0;
        ceiling = BACKOFF_START;
        startHeartbeat();
        for (var facility in facilities) sendSubscribe(facilities[facility]);
        flush();
        onConnected();
      };
      socket.onmessage = function (event) {
        if (heartbeat && event.data === heartbeat) {
          missed = 0;
          return;
        }
        if (multiplex) receiveMultiplexed(event.data);
        else if (recovering) receivePositioned(event.data);
        else onMessage(event.data);
      };
      socket.onclose = function (event) {
        failedOpening = !opened;
        if (!opened && transport === "auto" && canStream && !everOpened &&
            ++failures >= FAILURES_TO_SWITCH) {
          streaming = !streaming;  // websockets may be refused on the way: try the other
          failures = 0;
        }
        lost(event);
      };
    }

    if (opts.token) setToken(opts.token, null);
    connect();

    function unsubscribe(facility) {
      var entry = facilities[facility];
      if (!entry) return Promise.resolve();
      var sent = isOpen(entry.socket);
      forget(entry);
      if (!sent) return Promise.resolve();
      return new Promise(function (resolve) {
        request("unsubscribe", { facility: facility },
                { kind: "unsubscribe", entry: entry, resolve: resolve });
      });
    }

    function subscribe(facility, keys, handlers) {
      if (!multiplex) throw new Error("WS4Redis: subscribe() needs the option multiplex: true");
      if (typeof facility !== "string" || !facility) {
        throw new Error("WS4Redis: a facility is a non-empty text");
      }
      if (facilities[facility]) throw new Error("WS4Redis: " + facility + " is subscribed already");
      var entry = { facility: facility, keys: (keys || []).slice(), handlers: handlers || {},
                    positions: {}, socket: null, ready: false };
      if (!closedForGood) {
        facilities[facility] = entry;
        if (isOpen(ws)) sendSubscribe(entry);
      }
      return {
        facility: facility,
        publish: function (data) {
          if (facilities[facility] !== entry) return;
          enqueue({ entry: entry, call: null,
                    text: JSON.stringify({ type: "publish", facility: facility, data: data }) });
          flush();
        },
        call: function (name, data) {
          return new Promise(function (resolve, reject) {
            if (facilities[facility] !== entry) {
              reject(notSubscribed(facility));
              return;
            }
            var record = { kind: "call", entry: entry, name: name,
                           data: data === undefined ? null : data,
                           resolve: resolve, reject: reject };
            enqueue({ entry: entry, text: null, call: record });
            flush();
          });
        },
        unsubscribe: function () {
          return facilities[facility] === entry ? unsubscribe(facility) : Promise.resolve();
        }
      };
    }

    return {
      send_message: function (message) {
        if (!closedForGood) {
          enqueue({ entry: null, text: message, call: null });
          flush();
        }
      },
      subscribe: subscribe,
      unsubscribe: function (facility) {
        if (!multiplex) throw new Error("WS4Redis: unsubscribe() needs the option multiplex: true");
        return unsubscribe(facility);
      },
      close: function () {
        closedForGood = true;
        var waiting = queue;
        queue = [];
        facilities = {};
        waiting.forEach(function (item) {
          if (item.call) item.call.reject(new Error("WS4Redis: closed"));
        });
        if (reconnectTimer !== null) clearTimeout(reconnectTimer);
        reconnectTimer = null;
        stopHeartbeat();
        if (ws) ws.close();
      },
      is_connecting: function () { return !!ws && ws.readyState === CONNECTING; },
      is_connected: function () { return !!ws && ws.readyState === OPEN; },
      is_closing: function () { return !!ws && ws.readyState === WebSocket.CLOSING; },
      is_closed: function () { return !ws || ws.readyState === CLOSED; },
      // "websocket" or "sse": what the current (else the next) connection uses
      transport: function () {
        if (ws) return ws.isEventStream ? "sse" : "websocket";
        return streaming ? "sse" : "websocket";
      }
    };
  }

  root.WS4Redis = WS4Redis;
})(typeof globalThis !== "undefined" ? globalThis : this);
