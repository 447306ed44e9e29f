// Two phoenix clients in two rooms of a group, plus an outsider, for
// tests/integration/test_groups_clients.py.
//
//   node groups_clients.js '{"url": "ws://127.0.0.1:PORT/socket"}'
//
// Prints {"stage": "ready"} once every channel is joined, then the final
// {"result": ...} once both members got "news" and the outsider got "done"
// (the test sends "done" to the outsider's topic after the group
// broadcast, so anything the outsider received before it was misrouted).
"use strict";

const { Socket } = require("phoenix");
const WebSocket = require("ws");

const args = JSON.parse(process.argv[2] || "{}");
const timeout = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out", received }));
  process.exit(1);
}, args.timeoutMs || 20000);

const received = { alice: [], bob: [], carol: [] };
const sockets = [];
let joined = 0;
let finished = false;

function maybeDone() {
  if (finished) return;
  const gotNews = (name) => received[name].some((m) => m.event === "news");
  if (gotNews("alice") && gotNews("bob") && received.carol.some((m) => m.event === "done")) {
    finished = true;
    clearTimeout(timeout);
    console.log(JSON.stringify({ result: received }));
    sockets.forEach((socket) => socket.disconnect());
    setTimeout(() => process.exit(0), 50);
  }
}

function member(name, topic) {
  const socket = new Socket(args.url, { transport: WebSocket, params: { user: name } });
  sockets.push(socket);
  socket.connect();
  const channel = socket.channel(topic, { user: name });
  for (const event of ["news", "done"]) {
    channel.on(event, (payload) => {
      received[name].push({ topic, event, payload });
      maybeDone();
    });
  }
  channel
    .join()
    .receive("ok", () => {
      joined += 1;
      if (joined === 3) console.log(JSON.stringify({ stage: "ready" }));
    })
    .receive("error", (reason) => {
      console.log(JSON.stringify({ error: "join refused", name, reason }));
      process.exit(1);
    });
}

member("alice", "room:a");
member("bob", "room:b");
member("carol", "room:c");
