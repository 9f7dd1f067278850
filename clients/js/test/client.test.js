// The client against a real node: `zeroservices serve` (the binary in ZS_BIN, else the debug
// build) started by the test on loopback.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, ZeroServicesError } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.ZS_BIN || join(here, "../../../target/debug/zeroservices");

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** Starts a node serving `power`; resolves once it printed its ready line. */
function serve(port, store) {
  const child = spawn(BIN, [
    "serve", "--name", "js", "--collection", "power", "--store", store,
    "--discovery", "none", "--bind", "127.0.0.1", "--http", `127.0.0.1:${port}`,
  ], { stdio: ["ignore", "pipe", "ignore"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("serve not ready in 20 s")), 20000);
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("ready")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("exit", (code) => reject(new Error(`serve exited with ${code}`)));
  });
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGKILL");
  });
}

/** Resolves with the first value `f` returns that is not undefined (polling), or rejects. */
async function until(what, f, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("CRUD and custom errors", async () => {
  const port = await freePort();
  const node = await serve(port, "memory");
  const client = createClient(`http://127.0.0.1:${port}`);
  try {
    const power = client.collection("power");
    const a = await power.create({ value: 3, status: "pending" });
    assert.equal(a.resource_data.value, 3);
    await power.create({ value: 5 }, "five");
    assert.equal((await power.get("five")).resource_data.value, 5);
    const p = await power.patch("five", { $inc: { value: 1 } });
    assert.equal(p.resource_data.value, 6);
    const page = await power.list({ where: { value: { $gt: 4 } }, sort: "-value", limit: 10 });
    assert.deepEqual(page.items.map((r) => r.resource_id), ["five"]);
    assert.equal(page.total, 1);
    await power.delete("five");
    await assert.rejects(power.get("five"), (e) => e instanceof ZeroServicesError && e.status === 404);
    await assert.rejects(power.create({ x: 1 }, "five/bad"), (e) => e.status === 400);
    // A retried create with its idempotency key answers the first and creates nothing.
    const once = await power.create({ value: 9 }, undefined, { idempotencyKey: "order-9" });
    const again = await power.create({ value: 9 }, undefined, { idempotencyKey: "order-9" });
    assert.deepEqual(again, once);
    assert.equal((await power.list({ where: { value: 9 } })).total, 1);
    await assert.rejects(
      power.create({ value: 10 }, undefined, { idempotencyKey: "order-9" }),
      (e) => e.status === 422 && e.code === "idempotency_key_reused",
    );
  } finally {
    client.close();
    await stop(node);
  }
});

test("a live query follows enter, update and leave with its filter, sort and limit", async () => {
  const port = await freePort();
  const node = await serve(port, "memory");
  const client = createClient(`http://127.0.0.1:${port}`);
  try {
    const power = client.collection("power");
    await power.create({ value: 1, status: "pending" }, "one");
    await power.create({ value: 9, status: "done" }, "nine");
    let latest = null;
    const q = client.liveQuery("power", { where: { status: "pending" }, sort: "-value", limit: 2 }, (items) => {
      latest = items.map((r) => r.resource_id);
    });
    await until("the initial set", () => (latest && latest.join() === "one" ? true : undefined));
    await power.create({ value: 5, status: "pending" }, "five");
    await until("five entering first", () => (latest.join() === "five,one" ? true : undefined));
    await power.create({ value: 7, status: "pending" }, "seven");
    await until("the limit of 2", () => (latest.join() === "seven,five" ? true : undefined));
    await power.patch("seven", { $set: { status: "done" } });
    await until("seven leaving", () => (latest.join() === "five,one" ? true : undefined));
    await power.patch("nine", { $set: { status: "pending" } });
    await until("nine entering", () => (latest.join() === "nine,five" ? true : undefined));
    await power.patch("one", { $set: { value: 100 } });
    await until("one updated to the top", () => (latest.join() === "one,nine" ? true : undefined));
    await power.delete("one");
    await until("one deleted", () => (latest.join() === "nine,five" ? true : undefined));
    q.close();
  } finally {
    client.close();
    await stop(node);
  }
});

test("subscriptions come back after the server restarts, resuming with since or told to resync", async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "zs-js-"));
  const store = `embedded:${dir}`;
  let node = await serve(port, store);
  const client = createClient(`http://127.0.0.1:${port}`, { backoff: { min: 50, max: 200 } });
  try {
    const power = client.collection("power");
    const seen = [];
    let resyncs = 0;
    client.subscribe(["power"], (msg) => {
      if (msg.type === "resync") resyncs += 1;
      else seen.push(msg.data.resource_id);
    });
    let live = null;
    client.liveQuery("power", { where: { v: { $gte: 0 } } }, (items) => {
      live = items.map((r) => r.resource_id).sort();
    });
    // The websocket opens asynchronously: create until an event shows it is subscribed.
    await until("the first event", async () => {
      await power.create({ v: 0 });
      return seen.length ? true : undefined;
    });
    await stop(node);
    node = await serve(port, store);
    await power.create({ v: 1 }, "after-restart");
    await until("an event after the restart", () => (seen.includes("after-restart") ? true : undefined), 10000);
    await until("the live query after the restart", () => (live && live.includes("after-restart") ? true : undefined), 10000);
    // The hub restarted with the node, so it cannot prove the resume complete: it says so.
    assert.ok(resyncs >= 1, "no resync after the node (and its hub) restarted");
  } finally {
    client.close();
    await stop(node);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a resume with since replays the events missed while disconnected", async () => {
  const port = await freePort();
  const node = await serve(port, "memory");
  const url = `http://127.0.0.1:${port}`;
  try {
    const first = createClient(url);
    const events = [];
    first.subscribe(["power"], (m) => events.push(m));
    const power = first.collection("power");
    await until("the first event", async () => {
      await power.create({ v: 0 });
      return events.length ? true : undefined;
    });
    const { node_id, seq } = events[0].data;
    first.close();
    await power.create({ v: 1 }, "missed-1");
    await power.create({ v: 2 }, "missed-2");
    // A raw resume, as the client sends it after a reconnect.
    const ws = new WebSocket(`ws://127.0.0.1:${port}/realtime`);
    const got = [];
    await new Promise((resolve) => (ws.onopen = resolve));
    ws.onmessage = (m) => got.push(JSON.parse(m.data));
    ws.send(JSON.stringify({ type: "subscribe", topics: ["power"], since: { [node_id]: seq } }));
    await until("the replay", () =>
      got.filter((m) => m.type === "event" && m.data.resource_id.startsWith("missed")).length === 2 ? true : undefined);
    ws.close();
  } finally {
    await stop(node);
  }
});

test("the client resumes with since after its connection drops, and gets exactly what it missed", async () => {
  const port = await freePort();
  const node = await serve(port, "memory");
  // A TCP proxy between the client and the node, to cut the client's connection while the
  // node (and its replay buffer) stays up.
  const pipes = new Set();
  const proxy = createServer((down) => {
    const up = connect(port, "127.0.0.1");
    down.pipe(up);
    up.pipe(down);
    const cut = () => {
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      pipes.add(s);
      s.on("error", cut);
      s.on("close", cut);
    }
  });
  const proxyPort = await freePort();
  const listen = () => new Promise((r) => proxy.listen(proxyPort, "127.0.0.1", r));
  await listen();
  const client = createClient(`http://127.0.0.1:${proxyPort}`, { backoff: { min: 200, max: 200 } });
  const direct = createClient(`http://127.0.0.1:${port}`).collection("power");
  try {
    const seen = [];
    let resyncs = 0;
    client.subscribe(["power"], (m) => (m.type === "resync" ? (resyncs += 1) : seen.push(m.data.resource_id)));
    await until("the first event", async () => {
      await direct.create({ v: 0 });
      return seen.length ? true : undefined;
    });
    await new Promise((r) => {
      proxy.close(r);
      for (const s of pipes) s.destroy();
    });
    await direct.create({ v: 1 }, "missed-1");
    await direct.create({ v: 2 }, "missed-2");
    await listen();
    await until("the missed events", () =>
      seen.includes("missed-1") && seen.includes("missed-2") ? true : undefined, 10000);
    assert.equal(resyncs, 0, "the node kept the events: no resync needed");
    assert.equal(seen.filter((id) => id.startsWith("missed")).length, 2, "each missed event once");
  } finally {
    client.close();
    proxy.close();
    for (const s of pipes) s.destroy();
    await stop(node);
  }
});
