// The admin page: cluster state polled from /_admin/api/state, a data browser on the REST
// API and a live tail of every event over /realtime, all through the JavaScript client.
// Everything shown is set as text (never as HTML): data cannot inject markup.
import { createClient } from "/_admin/client.js";

const client = createClient(location.origin);
const $ = (id) => document.getElementById(id);
const TAIL_MAX = 100;
const RATE_WINDOW_MS = 10_000;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c);
  return tr;
}

function ago(ms) {
  return ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`;
}

// Event times per collection, for the rate over the last RATE_WINDOW_MS.
const seen = new Map();

function rate(collection) {
  const times = seen.get(collection) || [];
  const since = Date.now() - RATE_WINDOW_MS;
  while (times.length && times[0] < since) times.shift();
  return (times.length / (RATE_WINDOW_MS / 1000)).toFixed(1);
}

let known = [];

function render(state) {
  $("node-name").textContent = state.node;
  const nodes = $("nodes").tBodies[0];
  nodes.replaceChildren(
    ...state.nodes.map((n) =>
      row([
        cell(n.name),
        cell(n.node_type),
        cell(n.state, `state-${n.state}`),
        cell(n.rtt_ms == null ? "—" : `${n.rtt_ms.toFixed(2)} ms`),
        cell(n.state === "self" ? "—" : ago(n.last_seen_ms)),
        cell(n.collections.join(", ")),
        cell(n.node_id, "json"),
      ]),
    ),
  );
  const cols = $("collections").tBodies[0];
  cols.replaceChildren(
    ...state.collections.map((c) =>
      row([
        cell(c.name),
        cell(c.providers.map((p) => p.name).join(", ") || "none"),
        cell([...new Set(c.providers.map((p) => p.store).filter(Boolean))].join(", "), "json"),
        cell(c.refused.map((r) => `${r.name}: ${r.reason}`).join("; "), "error"),
        cell(rate(c.name)),
      ]),
    ),
  );
  const names = state.collections.filter((c) => c.providers.length).map((c) => c.name);
  if (names.join() !== known.join()) {
    known = names;
    const select = $("b-collection");
    const current = select.value;
    select.replaceChildren(
      ...names.map((n) => {
        const o = document.createElement("option");
        o.value = n;
        o.textContent = n;
        return o;
      }),
    );
    if (names.includes(current)) select.value = current;
  }
}

async function poll() {
  try {
    const r = await fetch("/_admin/api/state", { headers: { accept: "application/json" } });
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    render(await r.json());
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("status").className = "muted";
  } catch (e) {
    $("status").textContent = `cannot read the cluster state: ${e.message}`;
    $("status").className = "error";
  }
}

async function browse(ev) {
  ev?.preventDefault();
  const c = $("b-collection").value;
  const err = $("b-error");
  err.hidden = true;
  if (!c) return;
  try {
    const where = JSON.parse($("b-where").value || "{}");
    const sort = $("b-sort").value.trim() || undefined;
    const limit = Number($("b-limit").value) || 20;
    const page = await client.collection(c).list({ where, sort, limit });
    $("b-total").textContent = `${page.items.length} of ${page.total}`;
    $("b-rows").tBodies[0].replaceChildren(
      ...page.items.map((r) => row([cell(r.resource_id), cell(JSON.stringify(r.resource_data), "json")])),
    );
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  }
}

function tail(msg) {
  if (msg.type !== "event") return;
  const collection = msg.topic.split(".")[0];
  if (!seen.has(collection)) seen.set(collection, []);
  seen.get(collection).push(Date.now());
  for (const tr of $("collections").tBodies[0].rows) {
    if (tr.cells[0].textContent === collection) tr.cells[4].textContent = rate(collection);
  }
  const d = msg.data || {};
  const body = $("tail").tBodies[0];
  body.prepend(
    row([
      cell(new Date(d.ts || Date.now()).toLocaleTimeString()),
      cell(msg.topic),
      cell((d.node_id || "").slice(0, 8), "json"),
      cell(d.seq),
      cell(JSON.stringify(d.resource_data ?? d.patch ?? d), "json"),
    ]),
  );
  while (body.rows.length > TAIL_MAX) body.deleteRow(-1);
  $("tail-count").textContent = `(latest ${body.rows.length})`;
}

$("browse").addEventListener("submit", browse);
client.subscribe("*", tail);
await poll();
setInterval(poll, 2000);
