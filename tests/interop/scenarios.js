// Scenarios that drive the official phoenix client against a running Beryl.
//
//   node scenarios.js <name> '<json args>'
//
// Every scenario prints JSON lines on stdout: optional {"stage": ...} reports
// (for scenarios the Python side steps through, e.g. a server restart), then
// one final line of observations, and exits 0.  If it cannot finish within
// args.timeoutMs it prints {"error": ..., "stage": ..., "observed": ...} and
// exits 3, so a test never hangs and its failure shows how far it got.
"use strict";

const {Socket, Presence} = require("phoenix");
const WebSocket = require("ws");
const readline = require("readline");

const [, , name, rawArgs] = process.argv;
const args = JSON.parse(rawArgs || "{}");
const observed = {};
let stage = "start";

function emit(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

function finish(result) {
  emit(result);
  process.exit(0);
}

setTimeout(() => {
  emit({error: `scenario ${name} timed out`, stage, observed});
  process.exit(3);
}, args.timeoutMs || 20000).unref();

process.on("unhandledRejection", (error) => {
  emit({error: `scenario ${name} failed: ${error && error.stack || error}`, stage, observed});
  process.exit(4);
});

// Lines the Python side sends on stdin, in order.
const inbox = [];
const inboxWaiters = [];
readline.createInterface({input: process.stdin}).on("line", (line) => {
  const message = JSON.parse(line);
  const waiter = inboxWaiters.shift();
  if (waiter) { waiter(message) } else { inbox.push(message) }
});

function nextInstruction() {
  if (inbox.length) { return Promise.resolve(inbox.shift()) }
  return new Promise((resolve) => inboxWaiters.push(resolve));
}

function connect(options = {}) {
  const socket = new Socket(args.url, {
    transport: WebSocket,
    reconnectAfterMs: () => 100,
    rejoinAfterMs: () => 200,
    timeout: 10000,
    ...options,
  });
  socket.connect();
  return socket;
}

// Resolves with the first answer to a push: {status, response}.
function answer(push) {
  return new Promise((resolve) => {
    push
      .receive("ok", (response) => resolve({status: "ok", response: plain(response)}))
      .receive("error", (response) => resolve({status: "error", response: plain(response)}))
      .receive("timeout", () => resolve({status: "timeout"}));
  });
}

function join(channel) {
  return answer(channel.join());
}

function push(channel, event, payload) {
  return answer(channel.push(event, payload));
}

// ArrayBuffers become {"binary": [bytes]} so that JSON can carry them.
function plain(value) {
  if (value instanceof ArrayBuffer) { return {binary: Array.from(new Uint8Array(value))} }
  return value;
}

function waitFor(what, predicate) {
  stage = what;
  return new Promise((resolve) => {
    const check = () => {
      const value = predicate();
      if (value) { resolve(value) } else { setTimeout(check, 10) }
    };
    check();
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sameList(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// A phoenix Presence on a channel that logs its callbacks.
function watchPresence(channel, log) {
  const presence = new Presence(channel);
  presence.onJoin((key, current, joined) => {
    log.push({
      type: "join",
      key,
      first: current === undefined,
      metas: joined.metas.length,
    });
  });
  presence.onLeave((key, current, left) => {
    log.push({
      type: "leave",
      key,
      remaining: current.metas.length,
      left: left.metas.length,
    });
  });
  return {
    keys: () => presence.list((key) => key).sort(),
    metas: (key) => {
      const entry = presence.list((k, p) => (k === key ? p : null)).filter(Boolean)[0];
      return entry ? entry.metas : [];
    },
  };
}

const scenarios = {};

// A join with a user is accepted; without one it is refused.
scenarios.join = async () => {
  const socket = connect();
  const room = socket.channel(args.topic, {user: "alice"});
  const events = [];
  room.on("presence_state", (state) => events.push({event: "presence_state", payload: state}));
  room.on("presence_diff", (diff) => events.push({event: "presence_diff", payload: diff}));
  const ok = await join(room);
  await waitFor("presence after join", () => events.length >= 2);
  const refusals = {};
  for (const [label, params] of [["missing", {}], ["empty", {user: ""}], ["number", {user: 7}]]) {
    const channel = socket.channel(`${args.topic}:${label}`, params);
    refusals[label] = await join(channel);
    channel.leave();
  }
  finish({ok, events, refusals});
};

// Three clients in one room: presence converges, leave and disconnect are seen.
scenarios.presence = async () => {
  const clients = {};
  const logs = {alice: [], bob: [], carol: []};
  observed.logs = logs;
  const everyone = (names) => names.every((n) => sameList(clients[n].presence.keys(), names));
  const add = async (user) => {
    const socket = connect();
    const channel = socket.channel(args.topic, {user});
    const presence = watchPresence(channel, logs[user]);
    clients[user] = {socket, channel, presence};
    return join(channel);
  };
  const joins = {};
  joins.alice = await add("alice");
  await waitFor("alice sees herself", () => everyone(["alice"]));
  joins.bob = await add("bob");
  await waitFor("alice and bob converge", () => everyone(["alice", "bob"]));
  joins.carol = await add("carol");
  await waitFor("three converge", () => everyone(["alice", "bob", "carol"]));
  const lists = {three: ["alice", "bob", "carol"].map((n) => clients[n].presence.keys())};
  const left = await answer(clients.carol.channel.leave());
  await waitFor("carol's leave is seen", () => ["alice", "bob"].every(
    (n) => sameList(clients[n].presence.keys(), ["alice", "bob"])));
  lists.afterLeave = ["alice", "bob"].map((n) => clients[n].presence.keys());
  clients.bob.socket.disconnect();
  await waitFor("bob's disconnect is seen", () => sameList(clients.alice.presence.keys(), ["alice"]));
  lists.afterDisconnect = clients.alice.presence.keys();
  finish({joins, left, lists, logs});
};

// One user on two sockets: one key with two metas; closing one keeps the key.
scenarios.same_user = async () => {
  const log = [];
  observed.log = log;
  const observer = connect();
  const watch = observer.channel(args.topic, {user: "bob"});
  const presence = watchPresence(watch, log);
  await join(watch);
  const first = connect();
  await join(first.channel(args.topic, {user: "alice"}));
  await waitFor("first alice", () => presence.metas("alice").length === 1);
  const second = connect();
  await join(second.channel(args.topic, {user: "alice"}));
  await waitFor("second alice", () => presence.metas("alice").length === 2);
  const both = {
    keys: presence.keys(),
    refs: presence.metas("alice").map((meta) => meta.phx_ref),
    metaKeys: presence.metas("alice").map((meta) => Object.keys(meta).sort()),
  };
  const logBefore = log.length;
  second.disconnect();
  await waitFor("second alice gone", () => presence.metas("alice").length === 1);
  finish({
    both,
    after: {keys: presence.keys(), refs: presence.metas("alice").map((meta) => meta.phx_ref)},
    logAfterClose: log.slice(logBefore),
    log,
  });
};

// new_msg reaches everyone, typing everyone but the sender.
scenarios.messages = async () => {
  const users = ["alice", "bob", "carol"];
  const clients = {};
  const logs = {};
  observed.logs = logs;
  for (const user of users) {
    const socket = connect();
    const channel = socket.channel(args.topic, {user});
    logs[user] = [];
    channel.on("new_msg", (payload) => logs[user].push({event: "new_msg", payload}));
    channel.on("typing", (payload) => logs[user].push({event: "typing", payload}));
    clients[user] = {socket, channel};
    await join(channel);
  }
  const seen = (body) => users.every((u) => logs[u].some(
    (entry) => entry.event === "new_msg" && entry.payload.body === body));
  const sent = await push(clients.alice.channel, "new_msg", {body: "hello"});
  await waitFor("hello everywhere", () => seen("hello"));
  clients.bob.channel.push("typing", {});
  const after = await push(clients.bob.channel, "new_msg", {body: "after typing"});
  await waitFor("after typing everywhere", () => seen("after typing"));
  finish({replies: {sent, after}, logs});
};

// ping echoes JSON and binary payloads.
scenarios.ping = async () => {
  const socket = connect();
  const channel = socket.channel(args.topic, args.params || {});
  const joined = await join(channel);
  const json = await push(channel, "ping", args.payload);
  const bytes = new Uint8Array(args.bytes);
  const binary = await push(channel, "ping", bytes.buffer);
  const empty = await push(channel, "ping", new ArrayBuffer(0));
  finish({joined, json, binary, empty});
};

// feed:* takes any join, tracks nothing, names the sender only if given.
scenarios.feed = async () => {
  const anonymous = connect();
  const named = connect();
  const events = [];
  observed.events = events;
  const anon = anonymous.channel(args.topic, {});
  const dash = named.channel(args.topic, {user: "dash"});
  for (const event of ["presence_state", "presence_diff"]) {
    anon.on(event, (payload) => events.push({who: "anonymous", event, payload}));
    dash.on(event, (payload) => events.push({who: "dash", event, payload}));
  }
  anon.on("new_msg", (payload) => events.push({who: "anonymous", event: "new_msg", payload}));
  dash.on("new_msg", (payload) => events.push({who: "dash", event: "new_msg", payload}));
  const joins = {anonymous: await join(anon), dash: await join(dash)};
  const count = (body) => events.filter((e) => e.event === "new_msg" && e.payload.body === body).length;
  const replies = {};
  replies.anonymous = await push(anon, "new_msg", {body: "from nobody"});
  await waitFor("anonymous message", () => count("from nobody") === 2);
  replies.dash = await push(dash, "new_msg", {body: "from dash"});
  await waitFor("dash message", () => count("from dash") === 2);
  finish({joins, replies, events});
};

// The channel limit refuses the join after the last allowed one.
scenarios.too_many = async () => {
  const socket = connect();
  const channels = args.topics.map((topic) => socket.channel(topic, {}));
  const joins = [];
  for (const channel of channels.slice(0, -1)) { joins.push(await join(channel)) }
  const last = channels[channels.length - 1];
  joins.push(await join(last));
  last.leave();
  const left = await answer(channels[0].leave());
  const retry = await join(socket.channel(args.topics[args.topics.length - 1], {}));
  finish({joins, left, retry});
};

// The authToken option: offered as a subprotocol, checked by the app.
scenarios.auth = async () => {
  const opened = [];
  const errors = [];
  const options = args.authToken === undefined ? {} : {authToken: args.authToken};
  const socket = connect(options);
  socket.onOpen(() => opened.push(true));
  socket.onError(() => errors.push(true));
  observed.opened = opened;
  observed.errors = errors;
  if (args.expectRefusal) {
    await waitFor("refused twice", () => errors.length >= 2);
    socket.disconnect();
    finish({opened: opened.length, errors: errors.length});
  }
  const channel = socket.channel(args.topic, {});
  const joined = await join(channel);
  const pong = await push(channel, "ping", {hello: "token"});
  const protocol = socket.conn.protocol;
  finish({opened: opened.length, joined, pong, protocol});
};

// Frequent heartbeats keep a socket alive past the server's idle timeout.
scenarios.heartbeat = async () => {
  const closes = [];
  const heartbeats = [];
  observed.closes = closes;
  const socket = connect({heartbeatIntervalMs: args.heartbeatIntervalMs});
  socket.onClose((event) => closes.push(event.code));
  socket.onMessage((message) => {
    if (message.topic === "phoenix" && message.event === "phx_reply") {
      heartbeats.push(message.payload.status);
    }
  });
  const channel = socket.channel(args.topic, {});
  const joined = await join(channel);
  await sleep(args.durationMs);
  const pong = await push(channel, "ping", {still: "here"});
  finish({joined, closes, heartbeats, pong, connected: socket.isConnected()});
};

// The server goes away and comes back: the client reconnects and rejoins.
scenarios.restart = async () => {
  const closes = [];
  const joins = [];
  const states = [];
  const messages = [];
  Object.assign(observed, {closes, joins, states, messages});
  const socket = connect();
  socket.onClose((event) => closes.push({code: event.code, reason: event.reason}));
  const channel = socket.channel(args.topic, {user: "phoenix"});
  channel.on("presence_state", (state) => states.push(state));
  channel.on("new_msg", (payload) => messages.push(payload));
  channel.join()
    .receive("ok", (response) => joins.push({status: "ok", response}))
    .receive("error", (response) => joins.push({status: "error", response}));
  await waitFor("first join", () => joins.length === 1 && states.length === 1);
  const before = await push(channel, "new_msg", {body: "before"});
  await waitFor("first message", () => messages.length === 1);
  emit({stage: "joined", before});
  await nextInstruction(); // the server was restarted
  await waitFor("rejoin", () => joins.length === 2 && states.length === 2 && channel.state === "joined");
  const after = await push(channel, "new_msg", {body: "after"});
  await waitFor("second message", () => messages.length === 2);
  finish({closes, joins, states: states.length, before, after, messages});
};

// One join and one new_msg round trip: proof that a server still serves.
scenarios.roundtrip = async () => {
  const socket = connect();
  const channel = socket.channel(args.topic, {user: "witness"});
  const messages = [];
  channel.on("new_msg", (payload) => messages.push(payload));
  const joined = await join(channel);
  const reply = await push(channel, "new_msg", {body: "still serving"});
  await waitFor("broadcast", () => messages.length === 1);
  finish({joined, reply, messages});
};

const scenario = scenarios[name];
if (!scenario) {
  emit({error: `unknown scenario ${name}`});
  process.exit(2);
}
scenario();
