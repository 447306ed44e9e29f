// Capacity load client for bench/capacity.py.
// usage: node capacity_client.js URL N PER_ROOM
// Opens N sockets, each joining room:cap<k> (PER_ROOM sockets a room) as a
// distinct user, so each holds a socket, a channel and a presence.  Prints
// READY once every join was answered and the presence_state arrived, then
// waits for a line on stdin before closing.
const WebSocket = require("ws");
const [url, nArg, perRoomArg] = process.argv.slice(2);
const N = Number(nArg), PER_ROOM = Number(perRoomArg);
let ready = 0, inFlight = 0, next = 0;
const sockets = [];
const timer = setTimeout(() => { console.log(JSON.stringify({error: "timeout", ready})); process.exit(1); }, 300000);

function openOne() {
  const i = next++;
  inFlight++;
  const ws = new WebSocket(url, {perMessageDeflate: false});
  sockets.push(ws);
  let state = false;
  ws.on("open", () => ws.send(JSON.stringify(["1", "1", `room:cap${Math.floor(i / PER_ROOM)}`, "phx_join", {user: `user${i}`}])));
  ws.on("message", (data) => {
    if (!state && data.includes("presence_state")) {
      state = true;
      inFlight--;
      if (++ready === N) { clearTimeout(timer); process.stdout.write("READY\n"); }
      else if (next < N) openOne();
    }
  });
  ws.on("error", (e) => { console.log(JSON.stringify({error: String(e), ready})); process.exit(1); });
}
for (let k = 0; k < Math.min(200, N); k++) openOne();
process.stdin.on("data", () => process.exit(0));
