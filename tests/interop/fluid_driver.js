// A small Fluid driver for Beryl's Levee relay, written for the interop
// tests: the real Fluid loader and runtime (@fluidframework/container-loader,
// fluid-static, map) run on it.  Storage is Beryl's git-style REST API, the
// op log is GET /deltas, and the delta stream is a Phoenix channel
// `document:<tenant>:<document>` on the official `phoenix` client.
//
//   const { documentServiceFactory, urlResolver } = leveeDriver({ httpUrl, socketUrl, tenantId, getToken });
"use strict";

const { EventEmitter } = require("node:events");
const { Socket } = require("phoenix");
const WebSocket = require("ws");

const VERSIONS = ["^0.4.0", "^0.3.0", "^0.2.0", "^0.1.0"];
const SCHEME = "beryl-levee:";

// --- REST ---------------------------------------------------------------

class Rest {
  constructor(httpUrl, tenantId, getToken) {
    this.httpUrl = httpUrl;
    this.tenantId = tenantId;
    this.getToken = getToken;
  }

  async call(method, path, documentId, body) {
    const token = await this.getToken(this.tenantId, documentId);
    const response = await fetch(this.httpUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) {
      const error = new Error(`${method} ${path} -> ${response.status} ${text}`);
      error.statusCode = response.status;
      throw error;
    }
    return JSON.parse(text);
  }
}

// --- storage ------------------------------------------------------------

function toBase64(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

class StorageService {
  constructor(rest, documentId) {
    this.rest = rest;
    this.documentId = documentId;
    this.repo = `/repos/${rest.tenantId}/git`;
    this.policies = undefined;
  }

  get(path) {
    return this.rest.call("GET", this.repo + path, this.documentId);
  }

  post(path, body) {
    return this.rest.call("POST", this.repo + path, this.documentId, body);
  }

  async getVersions(_versionId, _count) {
    let ref;
    try {
      ref = await this.get(`/refs/heads/${this.documentId}`);
    } catch (error) {
      if (error.statusCode === 404) return [];
      throw error;
    }
    const commit = await this.get(`/commits/${ref.object.sha}`);
    return [{ id: commit.sha, treeId: commit.tree.sha, date: commit.author.date }];
  }

  async getSnapshotTree(version) {
    const versions = version ? [version] : await this.getVersions(null, 1);
    if (versions.length === 0) return null;
    const listing = await this.get(`/trees/${versions[0].treeId}?recursive=1`);
    const root = { id: listing.sha, blobs: {}, trees: {} };
    const byPath = new Map([["", root]]);
    for (const entry of listing.tree) {
      // A recursive listing names every tree before the entries inside it.
      const slash = entry.path.lastIndexOf("/");
      const parent = byPath.get(slash < 0 ? "" : entry.path.slice(0, slash));
      const name = entry.path.slice(slash + 1);
      if (entry.type === "tree") {
        const tree = { id: entry.sha, blobs: {}, trees: {} };
        parent.trees[name] = tree;
        byPath.set(entry.path, tree);
      } else {
        parent.blobs[name] = entry.sha;
      }
    }
    return root;
  }

  async readBlob(id) {
    const blob = await this.get(`/blobs/${id}`);
    const bytes = Buffer.from(blob.content, blob.encoding === "base64" ? "base64" : "utf8");
    return new Uint8Array(bytes).buffer;
  }

  async createBlob(file) {
    const blob = await this.post("/blobs", { content: toBase64(new Uint8Array(file)), encoding: "base64" });
    return { id: blob.sha };
  }

  // Every path of the parent summary (the last acknowledged one), so that
  // handles (unchanged subtrees) resolve to the shas already stored.
  async previousPaths(ackHandle) {
    const paths = new Map();
    if (!ackHandle) return paths;
    const commit = await this.get(`/commits/${ackHandle}`);
    const listing = await this.get(`/trees/${commit.tree.sha}?recursive=1`);
    for (const entry of listing.tree) paths.set(entry.path, entry);
    return paths;
  }

  async writeTree(tree, previous) {
    const entries = [];
    for (const [name, node] of Object.entries(tree.tree)) {
      if (node.type === 1) {
        entries.push({ path: name, mode: "040000", type: "tree", sha: await this.writeTree(node, previous) });
      } else if (node.type === 2) {
        const body = typeof node.content === "string"
          ? { content: node.content, encoding: "utf-8" }
          : { content: toBase64(node.content), encoding: "base64" };
        const blob = await this.post("/blobs", body);
        entries.push({ path: name, mode: "100644", type: "blob", sha: blob.sha });
      } else if (node.type === 3) {
        const path = node.handle.replace(/^\/+/, "");
        const known = previous.get(path);
        if (!known) throw new Error(`summary handle ${node.handle} is not in the parent summary`);
        entries.push({ path: name, mode: known.mode, type: known.type, sha: known.sha });
      } else if (node.type === 4) {
        entries.push({ path: name, mode: "100644", type: "blob", sha: node.id });
      }
    }
    const created = await this.post("/trees", { tree: entries });
    return created.sha;
  }

  async uploadSummaryWithContext(summary, context) {
    const previous = await this.previousPaths(context.ackHandle);
    const tree = await this.writeTree(summary, previous);
    const commit = await this.post("/commits", {
      message: `Summary at ${context.referenceSequenceNumber}`,
      tree,
      parents: context.ackHandle ? [context.ackHandle] : [],
    });
    return commit.sha;
  }

  async downloadSummary(handle) {
    const commit = await this.get(`/commits/${handle.handle ?? handle}`);
    const read = async (sha) => {
      const listing = await this.get(`/trees/${sha}`);
      const result = { type: 1, tree: {} };
      for (const entry of listing.tree) {
        result.tree[entry.path] = entry.type === "tree"
          ? await read(entry.sha)
          : { type: 2, content: new Uint8Array(await this.readBlob(entry.sha)) };
      }
      return result;
    };
    return read(commit.tree.sha);
  }

  dispose() {}
}

// --- op log -------------------------------------------------------------

class DeltaStorageService {
  constructor(rest, documentId) {
    this.rest = rest;
    this.documentId = documentId;
  }

  // Fluid's bounds: `from` inclusive, `to` exclusive; the server answers
  // exactly those, a page at a time, and the next page starts after the
  // last op received.
  fetchMessages(from, to, abortSignal) {
    let next = from;
    let done = false;
    return {
      read: async () => {
        if (done || abortSignal?.aborted || (to !== undefined && next >= to)) return { done: true };
        const bound = to === undefined ? "" : `&to=${to}`;
        const answer = await this.rest.call(
          "GET", `/deltas/${this.rest.tenantId}/${this.documentId}?from=${next}${bound}`, this.documentId,
        );
        if (answer.value.length === 0) {
          done = true;
          return { done: true };
        }
        next = answer.value[answer.value.length - 1].sequenceNumber + 1;
        return { done: false, value: answer.value };
      },
    };
  }
}

// --- delta stream -------------------------------------------------------

function networkError(message) {
  return Object.assign(new Error(message), { errorType: "genericNetworkError", canRetry: true });
}

class DeltaConnection extends EventEmitter {
  constructor(documentId) {
    super();
    this.documentId = documentId;
    this.initialMessages = [];
    this.initialSignals = [];
    this.initialClients = [];
    this.disposed = false;
    this.live = false;
    this.pending = [];
  }

  static async connect(socketUrl, tenantId, documentId, token, client) {
    const connection = new DeltaConnection(documentId);
    await connection.open(socketUrl, tenantId, documentId, token, client);
    return connection;
  }

  open(socketUrl, tenantId, documentId, token, client) {
    return new Promise((resolve, reject) => {
      this.socket = new Socket(socketUrl, { transport: WebSocket, reconnectAfterMs: () => 60_000 });
      this.socket.onError(() => this.lost("socket error"));
      this.socket.onClose(() => this.lost("socket closed"));
      this.socket.connect();
      const channel = this.socket.channel(`document:${tenantId}:${documentId}`, { token });
      this.channel = channel;
      channel.on("op", (payload) => this.deliver("op", [this.documentId, payload.ops ?? payload.op ?? payload]));
      channel.on("signal", (payload) => {
        if (this.live) this.deliver("signal", [payload]);
        else this.initialSignals.push(...[].concat(payload));
      });
      channel.on("nack", (payload) => this.deliver("nack", [this.documentId, payload.nacks ?? [payload]]));
      channel.on("connect_document_error", (payload) => {
        this.dispose();
        reject(Object.assign(new Error(`connect_document_error ${payload.code} ${payload.message}`), {
          errorType: payload.code === 401 || payload.code === 403 ? "authorizationError" : "genericNetworkError",
          canRetry: payload.code >= 500,
          statusCode: payload.code,
        }));
      });
      channel.on("connect_document_success", (connected) => {
        this.clientId = connected.clientId;
        this.claims = connected.claims;
        this.mode = connected.mode;
        this.existing = connected.existing;
        this.version = connected.version;
        this.serviceConfiguration = connected.serviceConfiguration;
        this.checkpointSequenceNumber = connected.checkpointSequenceNumber;
        this.initialClients = connected.initialClients;
        this.initialMessages.push(...connected.initialMessages);
        this.initialSignals.push(...connected.initialSignals);
        resolve();
        // The loader adds its listeners when the promise settles; what came
        // in meanwhile is handed over on the next turn.
        setImmediate(() => {
          this.live = true;
          for (const [event, args] of this.pending.splice(0)) this.emit(event, ...args);
        });
      });
      channel.join()
        .receive("ok", () => channel.push("connect_document", {
          tenantId, id: documentId, token, client, mode: client.mode ?? "write", versions: VERSIONS,
        }))
        .receive("error", (reason) => reject(networkError(`join refused: ${JSON.stringify(reason)}`)))
        .receive("timeout", () => reject(networkError("join timed out")));
    });
  }

  deliver(event, args) {
    if (this.disposed) return;
    if (this.clientId === undefined && event === "op") {
      this.initialMessages.push(...args[1]);
    } else if (this.live) {
      this.emit(event, ...args);
    } else {
      this.pending.push([event, args]);
    }
  }

  lost(reason) {
    if (this.disposed) return;
    this.dispose();
    this.emit("disconnect", networkError(reason));
  }

  submit(messages) {
    this.channel.push("submitOp", { clientId: this.clientId, messageBatches: [messages] });
  }

  submitSignal(content, targetClientId) {
    const signal = targetClientId === undefined ? { content } : { content, targetClientId };
    this.channel.push("submitSignal", { clientId: this.clientId, contentBatches: [[signal]] });
  }

  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    this.socket.disconnect();
  }
}

// --- service, factory, URLs ---------------------------------------------

class DocumentService extends EventEmitter {
  constructor(options, resolvedUrl, documentId) {
    super();
    this.options = options;
    this.resolvedUrl = resolvedUrl;
    this.documentId = documentId;
    this.rest = new Rest(options.httpUrl, options.tenantId, options.getToken);
    // With summarizeProtocolTree the loader adds .protocol to each summary
    // it uploads (single-commit summaries); without it Beryl writes
    // .protocol itself, as Routerlicious's scribe does.
    this.policies = { summarizeProtocolTree: options.summarizeProtocolTree ?? false };
  }

  async connectToStorage() {
    return new StorageService(this.rest, this.documentId);
  }

  async connectToDeltaStorage() {
    return new DeltaStorageService(this.rest, this.documentId);
  }

  async connectToDeltaStream(client) {
    const token = await this.options.getToken(this.options.tenantId, this.documentId);
    return DeltaConnection.connect(this.options.socketUrl, this.options.tenantId, this.documentId, token, client);
  }

  dispose() {}
}

function resolvedUrlFor(options, documentId) {
  return {
    type: "fluid",
    id: documentId,
    url: `${SCHEME}//beryl/${options.tenantId}/${documentId}`,
    tokens: {},
    endpoints: {},
  };
}

function leveeDriver(options) {
  const urlResolver = {
    async resolve(request) {
      const url = new URL(request.url, `${SCHEME}//beryl/${options.tenantId}/`);
      const [, , documentId = ""] = url.pathname.split("/");
      return resolvedUrlFor(options, decodeURIComponent(documentId));
    },
    async getAbsoluteUrl(resolvedUrl, relativeUrl) {
      return `${resolvedUrl.url}/${relativeUrl.replace(/^\/+/, "")}`;
    },
  };
  const documentServiceFactory = {
    async createDocumentService(resolvedUrl) {
      return new DocumentService(options, resolvedUrl, resolvedUrl.id);
    },
    async createContainer(createNewSummary, createNewResolvedUrl) {
      const rest = new Rest(options.httpUrl, options.tenantId, options.getToken);
      const documentId = await rest.call("POST", `/documents/${options.tenantId}`, "__new__", {
        summary: createNewSummary,
      });
      const resolvedUrl = resolvedUrlFor(options, documentId);
      Object.assign(createNewResolvedUrl, resolvedUrl);
      return new DocumentService(options, resolvedUrl, documentId);
    },
  };
  return { urlResolver, documentServiceFactory, documentUrl: (id) => resolvedUrlFor(options, id).url };
}

module.exports = { leveeDriver };
