// A puppet of several official phoenix clients, steered line by line from
// Python (tests/interop/puppet.py) for multi-node tests.
//
//   node puppet.js
//
// Each stdin line is one JSON command; each answer is one JSON line on
// stdout, {"ok": ...} or {"error": ...}.  Clients are named by the test.
//
//   {"op": "join", "id": "a", "url": U, "topic": T, "params": {...}}
//        -> {"ok": {"status": "ok"|"error", "response": ...}}
//        optional: "package": "phoenix" | "phoenix17" (the 1.7 client),
//        "transport": "websocket" (default) | "longpoll" | "default" (phoenix.js
//        picks), "serializer": "v1"
//        (vsn 1.0.0 with V1 objects), "socketOptions": {...}
//   {"op": "leave", "id": "a"}                             -> {"ok": {"status", "response"}}
//   {"op": "transport", "id": "a"}                         -> {"ok": "WebSocket"|"LongPoll"}
//   {"op": "push", "id": "a", "event": E, "payload": P}   -> {"ok": {"status", "response"}}
//        ("binary": [bytes] instead of "payload" pushes an ArrayBuffer)
//   {"op": "cast", "id": "a", "event": E, "payload": P}   -> {"ok": true} (no reply awaited)
//   {"op": "wait", "id": "a", "event": E, "count": N}     -> {"ok": [payloads of E so far]}
//   {"op": "wait_for", "id": "a", "event": E, "payload": P} -> {"ok": [payloads of E so far]}
//        once an E with exactly payload P arrived
//   {"op": "events", "id": "a", "event": E}               -> {"ok": [payloads of E so far]}
//   {"op": "wait_presence", "id": "a", "keys": {k: metas}} -> {"ok": {k: metas}} once the
//        Presence list has exactly these keys with these meta counts
//   {"op": "presence", "id": "a"}                          -> {"ok": {"list": {k: metas}, "joins": [...], "leaves": [...]}}
//   {"op": "close", "id": "a"}                             -> {"ok": true}
//   {"op": "exit"}
// Every wait gives up after "timeoutMs" (default 15 s) with {"error": ..., "observed": ...}.
"use strict";

const packages = {phoenix: require("phoenix")};
// phoenix.js 1.7 finds XMLHttpRequest (its only long-poll HTTP client) on
// `self` or `window`, read once when it loads; Node has neither, so it gets
// a `self` holding one, which 1.8 (loaded first, using fetch) never sees.
globalThis.self = {XMLHttpRequest: require("xmlhttprequest-ssl").XMLHttpRequest};
packages.phoenix17 = require("phoenix17");
delete globalThis.self;
const WebSocket = require("ws");

// V1 (vsn 1.0.0) frames: JSON objects, for the V1 serializer tests.
const v1 = {
  vsn: "1.0.0",
  encode: (msg, callback) => callback(JSON.stringify({
    topic: msg.topic, event: msg.event, payload: msg.payload, ref: msg.ref, join_ref: msg.join_ref,
  })),
  decode: (raw, callback) => {
    const {topic, event, payload, ref} = JSON.parse(raw);
    return callback({join_ref: null, ref, topic, event, payload});
  },
};
const readline = require("readline");

const clients = {};

function emit(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

// Long strings (the 1 MiB payload) are reported by length and ends.
function summarize(value) {
  if (typeof value === "string" && value.length > 200) {
    return `<${value.length} chars ${value.slice(0, 8)}..${value.slice(-8)}>`;
  }
  if (Array.isArray(value)) return value.map(summarize);
  if (value instanceof ArrayBuffer) return `<binary ${value.byteLength}>`;
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) out[key] = summarize(value[key]);
    return out;
  }
  return value;
}

function until(check, timeoutMs, describe) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const value = check();
      if (value !== undefined) return resolve(value);
      if (Date.now() - started > timeoutMs) return reject(new Error(`timed out waiting for ${describe()}`));
      setTimeout(poll, 20);
    };
    poll();
  });
}

function presenceCounts(presence) {
  const counts = {};
  presence.list((key, {metas}) => { counts[key] = metas.length; });
  return counts;
}

function sameCounts(a, b) {
  const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

function join(command) {
  const {Socket, Presence, LongPoll} = packages[command.package || "phoenix"];
  const socket = new Socket(command.url, {
    // "default": whatever phoenix.js picks by itself (LongPoll where there is
    // no global WebSocket, as in Node 20)
    transport: command.transport === "default" ? undefined
      : command.transport === "longpoll" ? LongPoll : WebSocket,
    reconnectAfterMs: () => 200,
    rejoinAfterMs: () => 300,
    ...(command.serializer === "v1" ? v1 : {}),
    ...(command.socketOptions || {}),
  });
  socket.connect();
  const channel = socket.channel(command.topic, command.params || {});
  const client = {socket, channel, LongPoll, events: {}, presenceJoins: [], presenceLeaves: []};
  const original = channel.onMessage.bind(channel);
  channel.onMessage = (event, payload, ref) => {
    if (event !== "phx_reply") {
      (client.events[event] = client.events[event] || []).push(summarize(payload));
    }
    return original(event, payload, ref);
  };
  client.presence = new Presence(channel);
  client.presence.onJoin((key, current, joined) => {
    if (!current) client.presenceJoins.push(key);
  });
  client.presence.onLeave((key, current, left) => {
    if (current.metas.length === 0) client.presenceLeaves.push(key);
  });
  clients[command.id] = client;
  return new Promise((resolve) => {
    channel.join()
      .receive("ok", (response) => resolve({status: "ok", response}))
      .receive("error", (response) => resolve({status: "error", response}))
      .receive("timeout", () => resolve({status: "timeout"}));
  });
}

async function handle(command) {
  const timeoutMs = command.timeoutMs || 15000;
  const client = clients[command.id];
  switch (command.op) {
    case "join":
      return join(command);
    case "push":
      return new Promise((resolve) => {
        const payload = command.binary ? new Uint8Array(command.binary).buffer : command.payload || {};
        client.channel.push(command.event, payload, timeoutMs)
          .receive("ok", (response) => resolve({status: "ok", response: summarize(response)}))
          .receive("error", (response) => resolve({status: "error", response: summarize(response)}))
          .receive("timeout", () => resolve({status: "timeout"}));
      });
    case "leave":
      return new Promise((resolve) => {
        client.channel.leave(timeoutMs)
          .receive("ok", (response) => resolve({status: "ok", response}))
          .receive("timeout", () => resolve({status: "timeout"}));
      });
    case "transport":
      return client.socket.transport === client.LongPoll ? "LongPoll" : "WebSocket";
    case "cast":
      client.channel.push(command.event, command.payload || {});
      return true;
    case "wait":
      return until(
        () => ((client.events[command.event] || []).length >= command.count ? client.events[command.event] : undefined),
        timeoutMs,
        () => `${command.count} ${command.event} on ${command.id}, have ${JSON.stringify(client.events)}`,
      );
    case "wait_for": {
      const wanted = JSON.stringify(command.payload);
      return until(
        () => ((client.events[command.event] || []).some((p) => JSON.stringify(p) === wanted) ? client.events[command.event] : undefined),
        timeoutMs,
        () => `${command.event} ${wanted} on ${command.id}, have ${JSON.stringify(client.events)}`,
      );
    }
    case "events":
      return client.events[command.event] || [];
    case "wait_presence":
      return until(
        () => (sameCounts(presenceCounts(client.presence), command.keys) ? presenceCounts(client.presence) : undefined),
        timeoutMs,
        () => `presence ${JSON.stringify(command.keys)} on ${command.id}, have ${JSON.stringify(presenceCounts(client.presence))}`,
      );
    case "presence":
      return {list: presenceCounts(client.presence), joins: client.presenceJoins, leaves: client.presenceLeaves};
    case "close":
      client.socket.disconnect();
      delete clients[command.id];
      return true;
    case "exit":
      for (const c of Object.values(clients)) c.socket.disconnect();
      emit({ok: true});
      process.exit(0);
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

// Commands run one after another, in the order they arrive.
let chain = Promise.resolve();
readline.createInterface({input: process.stdin}).on("line", (line) => {
  const command = JSON.parse(line);
  chain = chain.then(() => handle(command))
    .then((ok) => emit({ok}))
    .catch((error) => emit({error: String(error && error.message || error)}));
});
readline.createInterface({input: process.stdin}).on("close", () => process.exit(0));
