// The Switchboard console: a static page that calls AdminService (and ApprovalService, when
// the server has it) over the Connect protocol's JSON on this same port. No framework, no
// build step; every value is shown through textContent, never as HTML.
"use strict";

const KEY = "switchboard.console.key";
const REFRESH_MS = 10000;
let timer = null;

class RpcError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function rpc(service, method, body) {
  const response = await fetch(`/switchboard.v1.${service}/${method}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`,
    },
    body: JSON.stringify(body || {}),
  });
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (_) { data = {}; }
  if (!response.ok) {
    const code = data.code || (data.error && data.error.code) || String(response.status);
    const message = data.message || (data.error && data.error.message) || response.statusText;
    throw new RpcError(code, message, response.status);
  }
  return data;
}

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableId, items, render) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    render(row, item);
    body.appendChild(row);
  }
  if (!items.length) {
    const row = document.createElement("tr");
    const td = cell(row, "none");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    body.appendChild(row);
  }
}

const num = (v) => Number(v || 0);
const usd = (v) => num(v).toFixed(6);
const when = (ts) => (ts ? new Date(ts).toISOString().replace("T", " ").slice(0, 19) : "");
const seconds = (d) => (d ? parseFloat(d) : 0);
const enumName = (value, prefix) => String(value || "").replace(prefix, "").toLowerCase();

function showError(error) {
  $("error").textContent = error ? `${error.message} (${error.code})` : "";
}

// --- usage ---------------------------------------------------------------------------------

function groupLabel(row, dimension) {
  const u = row.usage || {};
  if (dimension === "USAGE_DIMENSION_TENANT") return row.tenant;
  if (dimension === "USAGE_DIMENSION_AGENT") return u.agent;
  return u.model;
}

async function loadUsage() {
  const range = Number($("range").value);
  const dimension = $("group").value;
  const end = new Date();
  const start = new Date(end.getTime() - range * 1000);
  const base = { startTime: start.toISOString(), endTime: end.toISOString(), groupBy: [dimension] };
  const interval = Math.max(60, Math.ceil(range / 24));
  const [totals, series] = await Promise.all([
    rpc("AdminService", "GetUsageReport", base),
    rpc("AdminService", "GetUsageReport", { ...base, interval: `${interval}s` }),
  ]);
  fill("usage-table", totals.rows || [], (tr, row) => {
    const u = row.usage || {};
    cell(tr, groupLabel(row, dimension));
    for (const v of [u.calls, u.failedCalls, u.cacheHits, u.inputTokens, u.outputTokens]) {
      cell(tr, num(v), "num");
    }
    cell(tr, usd(u.costUsd), "num");
  });
  drawChart(series.rows || [], start.getTime(), interval);
}

function drawChart(rows, startMs, interval) {
  const svg = $("chart");
  svg.replaceChildren();
  const buckets = new Map();
  for (const row of rows) {
    const at = new Date(row.bucketStartTime).getTime();
    const u = row.usage || {};
    const b = buckets.get(at) || { cost: 0, calls: 0 };
    b.cost += num(u.costUsd);
    b.calls += num(u.calls);
    buckets.set(at, b);
  }
  const count = 25;
  const first = Math.floor(startMs / 1000 / interval) * interval * 1000;
  const values = [];
  for (let i = 0; i < count; i++) {
    const b = buckets.get(first + i * interval * 1000);
    values.push(b || { cost: 0, calls: 0 });
  }
  const top = Math.max(...values.map((v) => v.calls)) || 1;
  const width = 720 / count;
  const ns = "http://www.w3.org/2000/svg";
  values.forEach((v, i) => {
    const h = Math.round((v.calls / top) * 130);
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(i * width + 1));
    rect.setAttribute("y", String(140 - h));
    rect.setAttribute("width", String(width - 2));
    rect.setAttribute("height", String(h));
    const title = document.createElementNS(ns, "title");
    const at = when(new Date(first + i * interval * 1000).toISOString());
    title.textContent = `${at}: ${v.calls} calls, $${v.cost.toFixed(6)}`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "155");
  label.textContent = `calls per ${interval}s bucket (most: ${top}); hover a bar for its cost`;
  svg.appendChild(label);
  svg.dataset.buckets = String(buckets.size);
}

// --- keys ----------------------------------------------------------------------------------

async function loadKeys() {
  const reply = await rpc("AdminService", "ListKeys", { pageSize: 1000, showRevoked: true });
  fill("keys-table", reply.keys || [], (tr, key) => {
    tr.dataset.keyId = key.keyId;
    cell(tr, key.keyId);
    cell(tr, key.tenant);
    cell(tr, (key.agents || []).join(", ") || "*");
    cell(tr, (key.scopes || []).join(", "));
    cell(tr, enumName(key.source, "KEY_SOURCE_"));
    const state = enumName(key.state, "KEY_STATE_");
    cell(tr, state, `state-${state}`);
    cell(tr, when(key.expireTime));
    cell(tr, key.note);
    const td = cell(tr, "");
    if (state === "active" && key.source === "KEY_SOURCE_STORE") {
      const button = document.createElement("button");
      button.textContent = "Revoke";
      button.className = "revoke";
      button.addEventListener("click", () => revoke(key.keyId));
      td.appendChild(button);
    }
  });
}

async function revoke(keyId) {
  if (!window.confirm(`Revoke key ${keyId}? Every replica refuses it within a second.`)) return;
  try {
    await rpc("AdminService", "RevokeKey", { keyId });
    showError(null);
  } catch (error) {
    showError(error);
  }
  await loadKeys();
}

async function createKey(event) {
  event.preventDefault();
  const agents = $("new-agents").value.split(",").map((a) => a.trim()).filter(Boolean);
  const body = { tenant: $("new-tenant").value.trim(), agents, note: $("new-note").value };
  if ($("new-admin").checked) body.scopes = ["admin"];
  const days = Number($("new-days").value);
  if (days > 0) body.expireTime = new Date(Date.now() + days * 86400000).toISOString();
  $("secret").hidden = true; // the last key's secret goes before a new answer comes
  showError(null);
  try {
    const reply = await rpc("AdminService", "CreateKey", body);
    $("secret-value").textContent = reply.secret;
    $("secret").hidden = false;
    $("create-form").reset();
    showError(null);
  } catch (error) {
    showError(error);
  }
  await loadKeys();
}

// --- targets, calls, approvals -------------------------------------------------------------

async function loadTargets() {
  const reply = await rpc("AdminService", "ListTargets", {});
  fill("targets-table", reply.targets || [], (tr, t) => {
    cell(tr, t.name);
    cell(tr, t.provider);
    cell(tr, t.model);
    const state = enumName(t.breakerState, "BREAKER_STATE_").replace("_", "-");
    cell(tr, state, `state-${state}`);
    cell(tr, num(t.failureCount), "num");
    cell(tr, seconds(t.cooldownRemaining) ? `${seconds(t.cooldownRemaining).toFixed(1)}s` : "");
    cell(tr, t.lastError);
  });
}

async function loadCalls() {
  const reply = await rpc("AdminService", "ListRecentCalls", { pageSize: 50 });
  fill("calls-table", reply.calls || [], (tr, c) => {
    cell(tr, when(c.time));
    cell(tr, c.tenant);
    cell(tr, c.keyId);
    cell(tr, c.agent);
    cell(tr, c.model);
    cell(tr, c.status, c.status === "ok" ? "" : "error");
    cell(tr, `${Math.round(seconds(c.latency) * 1000)} ms`, "num");
    cell(tr, `${num(c.inputTokens)} / ${num(c.outputTokens)}`, "num");
    cell(tr, usd(c.costUsd), "num");
    cell(tr, c.requestId);
  });
}

async function loadApprovals() {
  let reply;
  try {
    reply = await rpc("ApprovalService", "ListApprovals", { state: "STATE_PENDING", pageSize: 100 });
  } catch (error) {
    const absent = error.status === 404 || error.code === "unimplemented";
    $("approvals-note").textContent = absent
      ? "Approvals are not available on this server."
      : error.code === "permission_denied"
        ? "This key lacks the approver scope: approvals are not shown."
        : `Approvals could not be loaded: ${error.message}`;
    fill("approvals-table", [], () => {});
    return;
  }
  $("approvals-note").textContent = "The tool calls of your key's tenant that wait for a decision.";
  fill("approvals-table", reply.approvals || [], (tr, a) => {
    cell(tr, when(a.createTime));
    cell(tr, a.agent);
    cell(tr, a.tool);
    cell(tr, a.argumentsJson);
    cell(tr, a.reason);
    const td = cell(tr, "");
    for (const [label, method] of [["Approve", "Approve"], ["Deny", "Deny"]]) {
      const button = document.createElement("button");
      button.textContent = label;
      button.className = method.toLowerCase();
      button.addEventListener("click", async () => {
        try {
          await rpc("ApprovalService", method, { id: a.id });
          showError(null);
        } catch (error) {
          showError(error);
        }
        await loadApprovals();
      });
      td.appendChild(button);
    }
  });
}

// --- sign in and refresh -------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([loadUsage(), loadKeys(), loadTargets(), loadCalls()]);
    showError(null);
  } catch (error) {
    if (error.code === "unauthenticated" || error.code === "permission_denied") {
      signOut(error.code === "permission_denied" ? "This key lacks the admin scope." : "The key was refused.");
      return;
    }
    showError(error);
  }
  await loadApprovals();
  document.body.dataset.loaded = String(Date.now());
}

async function signIn(event) {
  if (event) event.preventDefault();
  $("signin-error").textContent = "";
  const typed = $("key").value.trim();
  if (typed) sessionStorage.setItem(KEY, typed);
  $("key").value = "";
  try {
    await rpc("AdminService", "ListTargets", {});
  } catch (error) {
    signOut(error.code === "permission_denied" ? "This key lacks the admin scope." : `Sign-in failed: ${error.message}`);
    return;
  }
  $("signin").hidden = true;
  $("console").hidden = false;
  $("refresh").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = `key ${(sessionStorage.getItem(KEY) || "").split("_")[1] || ""}`;
  await refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  $("console").hidden = true;
  $("refresh").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("who").textContent = "";
  $("signin-error").textContent = typeof message === "string" ? message : "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("create-form").addEventListener("submit", createKey);
  $("refresh").addEventListener("click", refresh);
  $("signout").addEventListener("click", () => signOut(""));
  $("range").addEventListener("change", () => loadUsage().catch(showError));
  $("group").addEventListener("change", () => loadUsage().catch(showError));
  if (sessionStorage.getItem(KEY)) signIn(null);
});
