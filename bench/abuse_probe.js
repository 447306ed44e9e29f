// Probe client for bench/abuse.py: one socket joins feed:probe and sends
// up to SAMPLES pings one at a time (each after the previous reply and a
// 2 ms pause), for at most SECONDS, measuring each round trip.
// usage: node abuse_probe.js URL SAMPLES SECONDS
// Prints JSON {p50, p99, max, samples} (times in milliseconds).
const WebSocket = require("ws");
const [url, samplesArg, secondsArg] = process.argv.slice(2);
const SAMPLES = Number(samplesArg);
const times = [];
let sentAt = 0n, joined = false, waiting = false, n = 1;
const timer = setTimeout(report, Number(secondsArg) * 1000);
const ws = new WebSocket(url, {perMessageDeflate: false});

function ping() {
  sentAt = process.hrtime.bigint();
  waiting = true;
  ws.send(`["1","${++n}","feed:probe","ping",{"n":${n},"text":"hello"}]`);
}

function report() {
  // a ping still unanswered counts with the time it has waited so far
  if (waiting) times.push(Number(process.hrtime.bigint() - sentAt) / 1e6);
  const sorted = times.slice().sort((a, b) => a - b);
  console.log(JSON.stringify({
    p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99),
    max: sorted[sorted.length - 1], samples: sorted.length,
  }));
  process.exit(0);
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

ws.on("open", () => ws.send(`["1","1","feed:probe","phx_join",{}]`));
ws.on("message", () => {
  if (!joined) { joined = true; setTimeout(ping, 2); return; }
  waiting = false;
  times.push(Number(process.hrtime.bigint() - sentAt) / 1e6);
  if (times.length === SAMPLES) report();
  else setTimeout(ping, 2);
});
ws.on("error", (e) => { console.log(JSON.stringify({error: String(e)})); process.exit(1); });
