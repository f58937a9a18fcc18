// Wires a chat page: the billboard shows messages (as text, never HTML), the status line
// shows the connection, and the form sends either through the websocket or, when the page
// names a post URL, to a Django view that publishes on the websocket's behalf. With an
// online URL, the page shows who is online and asks again whenever the server announces
// that someone joined or left.
(function () {
  "use strict";

  function startChat(config) {
    var billboard = document.getElementById("billboard");
    var status = document.getElementById("status");
    var form = document.getElementById("send_form");
    var input = document.getElementById("text_message");
    var counts = { connecting: 0, connected: 0 };
    var left = false;

    function setStatus(state, text) {
      status.dataset.state = state;
      status.textContent = text;
      status.dataset.connecting = counts.connecting;
      status.dataset.connected = counts.connected;
    }

    function refreshOnline() {
      var online = document.getElementById("online");
      if (!config.onlineUrl || !online) return;
      fetch(config.onlineUrl).then(function (response) { return response.json(); })
        .then(function (here) {
          var names = here.users.length ? here.users.join(", ") : "nobody logged in";
          online.textContent = "Online: " + names + " (" + here.connections + " pages)";
        });
    }

    function show(text) {
      var line = document.createElement("p");
      line.textContent = text;
      billboard.appendChild(line);
      billboard.scrollTop = billboard.scrollHeight;
    }

    var chat = WS4Redis({
      uri: config.uri,
      heartbeat_msg: config.heartbeat,
      connecting: function () { counts.connecting += 1; setStatus("connecting", "connecting…"); },
      connected: function () {
        counts.connected += 1;
        setStatus("connected", "connected");
        refreshOnline();
      },
      disconnected: function () {
        if (left) setStatus("closed", "closed");
        else setStatus("disconnected", "disconnected");
      },
      receive_message: show,
      // Announcements come apart from the chat's lines (the server's own channel name), so
      // no line a visitor types can pass for one.
      presence: refreshOnline
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!input.value) return;
      if (config.postUrl) {
        fetch(config.postUrl, { method: "POST", body: new FormData(form) });
      } else {
        chat.send_message(input.value);
      }
      input.value = "";
      input.focus();
    });

    var leave = document.getElementById("leave");
    if (leave) {
      leave.addEventListener("click", function () {
        left = true;
        chat.close();
        setStatus("closed", "closed");
      });
    }
    window.chat = chat;  // for the browser tests and the curious
    return chat;
  }

  window.startChat = startChat;
})();
