// ZeroServices client: REST calls, topic subscriptions and live queries over one websocket.
// No runtime dependency: it uses the platform's fetch and WebSocket (pass others in options).

/** An error answered by the server: `status` (HTTP), `code` and `message`. */
export class ZeroServicesError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ZeroServicesError";
    this.status = status;
    this.code = code;
  }
}

const DEFAULT_BACKOFF = { min: 250, max: 5000 };

/** Compares two values in the order of the server's sort (numbers, strings, then the rest). */
function compareValues(a, b) {
  if (a === b) return 0;
  if (a === undefined || a === null) return -1;
  if (b === undefined || b === null) return 1;
  if (typeof a === typeof b && (typeof a === "number" || typeof a === "string")) {
    return a < b ? -1 : 1;
  }
  return String(a) < String(b) ? -1 : 1;
}

function pathValue(data, path) {
  return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), data);
}

/** `sort` as the server takes it (`"value,-created"`) → a comparator of resources. */
export function sortComparator(sort) {
  const keys = (sort || "")
    .split(",")
    .filter(Boolean)
    .map((k) => (k.startsWith("-") ? [k.slice(1), -1] : [k, 1]));
  return (a, b) => {
    for (const [path, dir] of keys) {
      const c = compareValues(pathValue(a.resource_data, path), pathValue(b.resource_data, path));
      if (c !== 0) return c * dir;
    }
    return compareValues(a.resource_id, b.resource_id);
  };
}

/**
 * A client of one ZeroServices HTTP node.
 * @param {string} url e.g. "http://127.0.0.1:5001"
 * @param {{token?: string, WebSocket?: any, fetch?: any, backoff?: {min: number, max: number}}} options
 */
export function createClient(url, options = {}) {
  const base = url.replace(/\/+$/, "");
  const doFetch = options.fetch || globalThis.fetch.bind(globalThis);
  const WS = options.WebSocket || globalThis.WebSocket;
  const backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
  let token = options.token;

  async function request(method, path, body, opts = {}) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    // A retry with the same key answers the first answer and changes nothing (24 h).
    if (opts.idempotencyKey) headers["idempotency-key"] = opts.idempotencyKey;
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await doFetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    const json = text ? JSON.parse(text) : null;
    if (!r.ok) {
      const e = (json && json.error) || {};
      throw new ZeroServicesError(r.status, e.code || String(r.status), e.message || r.statusText);
    }
    return { json, headers: r.headers };
  }

  function collection(name) {
    const c = encodeURIComponent(name);
    const one = (id) => `/${c}/${encodeURIComponent(id)}`;
    return {
      /** Matching resources: `{items, total}`. */
      async list({ where, sort, skip, limit, fields } = {}) {
        const q = new URLSearchParams();
        if (where !== undefined) q.set("where", JSON.stringify(where));
        if (sort) q.set("sort", sort);
        if (skip !== undefined) q.set("skip", String(skip));
        if (limit !== undefined) q.set("limit", String(limit));
        if (fields) q.set("fields", fields);
        const qs = q.toString();
        const { json, headers } = await request("GET", `/${c}${qs ? `?${qs}` : ""}`);
        const items = Array.isArray(json) ? json : json.items;
        const total = Number(headers.get("x-total-count") ?? (json.total ?? items.length));
        return { items, total };
      },
      async get(id) {
        return (await request("GET", one(id))).json;
      },
      /**
       * Creates a resource (with `id` when given). Every change takes `{idempotencyKey}`: sent
       * again with the same key, it answers the first answer and changes nothing.
       */
      async create(data, id, opts) {
        const body = id === undefined ? data : { resource_id: id, resource_data: data };
        return (await request("POST", `/${c}`, body, opts)).json;
      },
      /** Applies an update document (`{"$set": {...}}`, ...). */
      async patch(id, update, opts) {
        return (await request("PATCH", one(id), update, opts)).json;
      },
      async delete(id, opts) {
        await request("DELETE", one(id), undefined, opts);
      },
      /** A custom action, on the collection or on resource `id`. */
      async action(action, args = {}, id, opts) {
        const path = id === undefined ? `/${c}/${encodeURIComponent(action)}` : `${one(id)}/${encodeURIComponent(action)}`;
        return (await request("POST", path, args, opts)).json;
      },
    };
  }

  // One websocket for every subscription; reopened with backoff, resuming each subscription.
  const topicSubs = new Set(); // {topics, onEvent}
  const liveSubs = new Map(); // query id -> {collection, where, onMessage}
  const since = {}; // node_id -> last seq seen
  let ws = null;
  let open = false;
  let closed = false;
  let attempt = 0;
  let timer = null;
  let nextQuery = 1;

  function send(msg) {
    if (open) ws.send(JSON.stringify(msg));
  }

  function subscribeAll(resume) {
    const topics = [...new Set([...topicSubs].flatMap((s) => s.topics))];
    if (topics.length) {
      send({ type: "subscribe", topics, ...(resume && Object.keys(since).length ? { since } : {}) });
    }
    for (const [id, q] of liveSubs) {
      send({ type: "subscribe", collection: q.collection, where: q.where ?? {}, id });
    }
  }

  function connect() {
    if (closed || ws) return;
    const wsUrl = base.replace(/^http/, "ws") + "/realtime" + (token ? `?token=${encodeURIComponent(token)}` : "");
    ws = new WS(wsUrl);
    ws.onopen = () => {
      open = true;
      const resume = attempt > 0;
      attempt = 0;
      subscribeAll(resume);
    };
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(typeof m.data === "string" ? m.data : String(m.data));
      } catch {
        return;
      }
      dispatch(msg);
    };
    ws.onclose = () => {
      ws = null;
      open = false;
      if (closed) return;
      const delay = Math.min(backoff.max, backoff.min * 2 ** attempt);
      attempt += 1;
      timer = setTimeout(connect, delay);
    };
    ws.onerror = () => {};
  }

  function dispatch(msg) {
    if (msg.type === "event") {
      const d = msg.data || {};
      if (d.node_id && typeof d.seq === "number") since[d.node_id] = Math.max(since[d.node_id] || 0, d.seq);
      for (const s of topicSubs) {
        if (s.topics.some((t) => t === "*" || t === "" || msg.topic === t || msg.topic.startsWith(`${t}.`))) s.onEvent(msg);
      }
    } else if (msg.type === "resync") {
      if (msg.query) {
        const q = liveSubs.get(msg.query);
        if (q) send({ type: "subscribe", collection: q.collection, where: q.where ?? {}, id: msg.query });
      } else {
        for (const s of topicSubs) s.onEvent(msg);
        for (const [id, q] of liveSubs) send({ type: "subscribe", collection: q.collection, where: q.where ?? {}, id });
      }
    } else if (msg.query && liveSubs.has(msg.query)) {
      liveSubs.get(msg.query).onMessage(msg);
    } else if (msg.type === "error") {
      for (const q of liveSubs.values()) q.onError?.(msg.error);
    }
  }

  /**
   * Receives events under `topics` (`"power"`, `"power.create"`, `"*"`). After a reconnect the
   * client resumes with `since`; `onEvent({type: "resync"})` means reload what you show.
   * Returns a function that unsubscribes.
   */
  function subscribe(topics, onEvent) {
    const s = { topics: Array.isArray(topics) ? topics : [topics], onEvent };
    topicSubs.add(s);
    connect();
    send({ type: "subscribe", topics: s.topics });
    return () => {
      topicSubs.delete(s);
      const still = new Set([...topicSubs].flatMap((x) => x.topics));
      const gone = s.topics.filter((t) => !still.has(t));
      if (gone.length) send({ type: "unsubscribe", topics: gone });
    };
  }

  /**
   * A result set kept in sync by the server: the resources of `collection` matching `where`,
   * sorted by `sort` and cut to `limit` here. `onChange(items)` runs with every change; a
   * reconnect or `resync` subscribes again and replaces the set with the server's.
   */
  function liveQuery(collectionName, { where = {}, sort, limit } = {}, onChange = () => {}) {
    const id = `q${nextQuery++}`;
    const members = new Map();
    const cmp = sortComparator(sort);
    let current = [];
    let error = null;
    const publish = () => {
      current = [...members.values()].sort(cmp);
      if (limit !== undefined) current = current.slice(0, limit);
      onChange(current);
    };
    liveSubs.set(id, {
      collection: collectionName,
      where,
      onMessage(msg) {
        if (msg.type === "subscribed") {
          members.clear();
          for (const r of msg.items || []) members.set(r.resource_id, r);
          error = null;
        } else if (msg.type === "enter" || msg.type === "update") {
          members.set(msg.resource_id, { resource_id: msg.resource_id, resource_data: msg.resource_data });
        } else if (msg.type === "leave") {
          members.delete(msg.resource_id);
        } else {
          return;
        }
        publish();
      },
      onError(e) {
        error = e;
      },
    });
    connect();
    send({ type: "subscribe", collection: collectionName, where, id });
    return {
      id,
      items: () => current,
      error: () => error,
      close() {
        liveSubs.delete(id);
        send({ type: "unsubscribe", query: id });
      },
    };
  }

  return {
    collection,
    subscribe,
    liveQuery,
    /** Uses another token from now on (the websocket is told at once). */
    setToken(t) {
      token = t;
      send({ type: "auth", token: t });
    },
    /** Closes the websocket for good. */
    close() {
      closed = true;
      clearTimeout(timer);
      if (ws) ws.close();
    },
  };
}
