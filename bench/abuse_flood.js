// Flooding client for bench/abuse.py.
// usage: node abuse_flood.js URL SCENARIO   (SCENARIO: ping | new_msg)
// ping: one socket sends ping events as fast as the server takes them (it
// reads its replies).  new_msg: 100 subscribers join feed:flood and read
// everything; one more socket sends new_msg to feed:flood as fast as the
// server takes them.  Prints READY once flooding, then runs until killed.
const WebSocket = require("ws");
const [url, scenario] = process.argv.slice(2);
const SUBSCRIBERS = scenario === "new_msg" ? 100 : 0;
const HIGH_WATER = 256 * 1024;

function open(onJoined) {
  const ws = new WebSocket(url, {perMessageDeflate: false});
  let joined = false;
  // the baseline server echoes the join, which serves as its reply
  ws.on("open", () => ws.send(`["1","1","feed:flood","phx_join",{}]`));
  ws.on("message", () => { if (!joined) { joined = true; onJoined(ws); } });
  ws.on("error", () => {});
  return ws;
}

function flood(ws) {
  let n = 0;
  const event = scenario === "new_msg" ? "new_msg" : "ping";
  const body = scenario === "new_msg" ? `{"body":"flood"}` : `{"n":1,"text":"hello"}`;
  function pump() {
    while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < HIGH_WATER) {
      ws.send(`["1","${++n}","feed:flood","${event}",${body}]`);
    }
    // full: look again in a millisecond rather than spinning the core the
    // probe shares
    setTimeout(pump, 1);
  }
  process.stdout.write("READY\n");
  pump();
}

function subscribe(i) {
  if (i === SUBSCRIBERS) { open(flood); return; }
  open(() => subscribe(i + 1));
}
subscribe(0);
