// Load client for bench/longpoll.py: the official phoenix client, over
// WebSocket or long-poll.
// usage: node longpoll_client.js URL TRANSPORT N M MODE
//   TRANSPORT: websocket | longpoll
//   MODE throughput: N sockets join feed:bench, prints READY, then socket 0
//     pushes M new_msg (each broadcast to all N); prints JSON
//     {deliveries, seconds, rate} once every socket received all M.
//   MODE memory: N sockets join feed:bench, prints READY, waits for a line
//     on stdin, exits.
"use strict";
const {Socket, LongPoll} = require("../tests/interop/node_modules/phoenix");
const WebSocket = require("../tests/interop/node_modules/ws");
const [url, transport, nArg, mArg, mode] = process.argv.slice(2);
const N = Number(nArg), M = Number(mArg);
const expected = N * M;
let received = 0, started = 0n;
const timer = setTimeout(() => {
  console.log(JSON.stringify({error: "timeout", received, expected}));
  process.exit(1);
}, 300000);

function done() {
  const s = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({deliveries: received, seconds: s, rate: received / s}));
  clearTimeout(timer);
  process.exit(0);
}

async function main() {
  const channels = [];
  const joins = [];
  for (let i = 0; i < N; i++) {
    const socket = new Socket(url, {
      transport: transport === "longpoll" ? LongPoll : WebSocket,
      timeout: 60000,
    });
    socket.connect();
    const channel = socket.channel("feed:bench", {});
    channel.on("new_msg", () => { if (++received === expected) done() });
    joins.push(new Promise((resolve, reject) => {
      channel.join().receive("ok", resolve).receive("error", reject).receive("timeout", reject);
    }));
    channels.push(channel);
    // Open gradually so the server is not flooded with handshakes at once.
    if (i % 100 === 99) await Promise.all(joins.slice(i - 99));
  }
  await Promise.all(joins);
  process.stdout.write("READY\n");
  if (mode === "memory") {
    process.stdin.once("data", () => process.exit(0));
    return;
  }
  started = process.hrtime.bigint();
  for (let i = 0; i < M; i++) channels[0].push("new_msg", {body: "tick " + i});
}

main().catch((error) => {
  console.log(JSON.stringify({error: String(error)}));
  process.exit(1);
});
