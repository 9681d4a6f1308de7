// The eventmgmt web console: plain JavaScript against the REST API of the gateway that serves
// it (same origin), no build step and no dependencies. Data from the server is only ever put
// into the page as text (textContent), never as HTML.
"use strict";

const KEY_STORAGE = "eventmgmt.apiKey";
const TOKEN_STORAGE = "eventmgmt.token"; // a signed-in user's token (POST /auth/login)
const SEVERITY_NAMES = { 1: "critical", 2: "high", 3: "medium", 4: "low", 5: "trivial" };
const STANDARD_EVENT = "com.siemens.mindsphere.eventmgmt.event.type.MindSphereStandardEvent";
const LIVE_ROWS = 500; // rows kept in the live table
const HEARTBEAT_SECONDS = 10; // asked of the server; silence for 3 of them means a dead link
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  token: sessionStorage.getItem(TOKEN_STORAGE) || "",
  live: null, // the running LiveFeed
  list: { path: null, next: null, prev: null },
  back: "list", // the view the detail returns to
  detailId: null,
};

const $ = (selector) => document.querySelector(selector);

// --- talking to the API -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
  }
}

function describeError(status, body) {
  if (!body || typeof body !== "object") return `HTTP ${status}`;
  const lines = [`${status}: ${body.message || body.error || "request failed"}`];
  for (const detail of body.details || []) {
    for (const violation of detail.fieldViolations || []) {
      lines.push(`  ${violation.field}: ${violation.description}`);
    }
  }
  return lines.join("\n");
}

// The credentials of every call: the user's token when signed in with a password, else the key.
function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : { "x-api-key": state.key };
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...authHeaders(), "Content-Type": "application/json", ...(options.headers || {}) },
    cache: "no-store",
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text };
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// A query string with spaces as %20: the gateway keeps `+` a plus (timestamps such as
// 2026-01-01T00:00:00+01:00 arrive intact), so URLSearchParams' `+` for a space would not do.
function queryString(pairs) {
  return pairs.map(([name, value]) => `${encodeURIComponent(name)}=${encodeURIComponent(value)}`).join("&");
}

// Links in HAL pages are absolute; the console follows them on its own origin.
function relative(href) {
  const url = new URL(href, location.href);
  return url.pathname + url.search;
}

function showError(error) {
  const banner = $("#error");
  banner.textContent = error ? String(error.message || error) : "";
  banner.hidden = !error;
}

// --- rendering ----------------------------------------------------------------------------

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function severityCell(row, severity) {
  const td = row.insertCell();
  const badge = document.createElement("span");
  badge.className = `sev sev-${SEVERITY_NAMES[severity] ? severity : severity ? "other" : 0}`;
  badge.textContent = SEVERITY_NAMES[severity] || (severity ? String(severity) : "–");
  td.appendChild(badge);
}

function typeName(typeId) {
  return typeId === STANDARD_EVENT ? "StandardEvent" : typeId;
}

function shortTime(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

function eventRow(tbody, event, atTop) {
  const row = atTop ? tbody.insertRow(0) : tbody.insertRow();
  row.dataset.id = event.id;
  cell(row, shortTime(event.timestamp), "time");
  severityCell(row, event.severity);
  cell(row, typeName(event.typeId));
  cell(row, [event.entityType, event.entityId].filter(Boolean).join("/"));
  cell(row, event.domain);
  cell(row, event.description);
  row.addEventListener("click", () => showDetail(event.id));
  return row;
}

// The list's last column: an alarm's status (with its count of occurrences) and what can be
// done with it next; for other events, whether they are acknowledged.
function statusCell(row, event) {
  const td = row.insertCell();
  if (event.classification === "ALARM") {
    alarmCell(td, event);
  } else {
    ackCell(td, event);
  }
}

function alarmCell(td, event) {
  td.className = "alarm-cell";
  td.replaceChildren();
  const badge = document.createElement("span");
  badge.className = `alarm alarm-${(event.status || "").toLowerCase()}`;
  badge.textContent = event.status || "";
  td.appendChild(badge);
  if (event.count > 1) {
    const count = document.createElement("span");
    count.className = "count";
    count.title = `first ${shortTime(event.firstOccurrenceTime)}, last ${shortTime(event.lastOccurrenceTime)}`;
    count.textContent = `×${event.count}`;
    td.appendChild(count);
  }
  const act = (label, className, call) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = className;
    button.textContent = label;
    button.addEventListener("click", async (click) => {
      click.stopPropagation(); // not a click on the row
      button.disabled = true;
      try {
        await call(event.id);
        alarmCell(td, await api(`/events/${encodeURIComponent(event.id)}`));
      } catch (error) {
        button.disabled = false;
        showError(error);
      }
    });
    td.appendChild(button);
  };
  if (event.status === "ACTIVE") act("Acknowledge", "ack", acknowledge);
  if (event.status !== "CLEARED") act("Clear", "clear", clear);
}

function ackCell(td, event) {
  td.className = "ack-cell";
  if (event.acknowledged) {
    td.textContent = `✓ ${event.acknowledgedBy || ""}`;
    td.classList.add("acked");
    return;
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "ack";
  button.textContent = "Acknowledge";
  button.addEventListener("click", async (click) => {
    click.stopPropagation(); // not a click on the row
    button.disabled = true;
    try {
      const answer = await acknowledge(event.id);
      td.textContent = `✓ ${answer.acknowledgedBy || ""}`;
      td.classList.add("acked");
    } catch (error) {
      button.disabled = false;
      showError(error);
    }
  });
  td.appendChild(button);
}

function acknowledge(id) {
  return api(`/events/${encodeURIComponent(id)}/acknowledge`, { method: "POST" });
}

function clear(id) {
  return api(`/events/${encodeURIComponent(id)}/clear`, { method: "POST" });
}

// --- views --------------------------------------------------------------------------------

function show(view) {
  for (const section of document.querySelectorAll("section.view")) {
    section.hidden = section.id !== view;
  }
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.classList.toggle("active", tab.dataset.view === view);
  }
  if (view !== "detail") state.back = view;
  if (view === "list" && state.list.path === null) searchList();
}

function signedIn() {
  $("#tabs").hidden = false;
  $("#sign-out").hidden = false;
  show("live");
  startLive();
}

async function signIn(event) {
  event.preventDefault();
  state.key = $("#api-key").value.trim();
  try {
    await api("/events?size=1");
  } catch (error) {
    state.key = "";
    showError(error.status === 401 ? new Error("That API key is not valid.") : error);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, state.key);
  $("#api-key").value = "";
  showError(null);
  signedIn();
}

async function signInUser(event) {
  event.preventDefault();
  const credentials = { username: $("#username").value.trim(), password: $("#password").value };
  let session;
  try {
    session = await api("/auth/login", { method: "POST", body: JSON.stringify(credentials) });
  } catch (error) {
    showError(error.status === 401 ? new Error("Wrong username or password.") : error);
    return;
  }
  state.key = "";
  state.token = session.token;
  sessionStorage.setItem(TOKEN_STORAGE, state.token);
  $("#password").value = "";
  $("#signed-in-as").textContent = `${session.username} (${session.role}, ${session.tenant})`;
  showError(null);
  signedIn();
}

async function signOut() {
  if (state.live) state.live.stop();
  if (state.token) {
    // Ends the session on the server too: the token is refused from now on.
    await api("/auth/logout", { method: "POST", body: "{}" }).catch(() => null);
  }
  sessionStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem(TOKEN_STORAGE);
  location.reload();
}

// --- the live tail over server-sent events ------------------------------------------------

// Reads `GET /liveEvents` with fetch, so that the API key travels in a header (EventSource
// cannot send one), and parses the event stream itself. Each message's id is its cursor:
// after a drop the feed reconnects with `Last-Event-ID`, and the server sends exactly what
// was committed in between.
class LiveFeed {
  constructor(query, onEvent, onState, onTransition) {
    this.query = query;
    this.onEvent = onEvent;
    this.onTransition = onTransition;
    this.onState = onState;
    this.lastId = null;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
    this.onState("stopped");
  }

  async run() {
    let retry = RETRY_FIRST_MS;
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        const headers = authHeaders();
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        const response = await fetch(`/liveEvents?${this.query}`, {
          headers,
          signal: this.controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          const body = await response.json().catch(() => null);
          if (response.status < 500) {
            // Bad filters or credentials: retrying would not help.
            showError(new ApiError(response.status, body));
            this.stopped = true;
            this.onState("stopped");
            return;
          }
          throw new ApiError(response.status, body);
        }
        this.onState("live");
        retry = RETRY_FIRST_MS;
        await this.read(response.body);
      } catch (error) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, RETRY_MAX_MS);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => this.controller.abort(), 3 * HEARTBEAT_SECONDS * 1000);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  dispatch(block) {
    const message = { id: null, event: "message", data: "" };
    for (const line of block.split("\n")) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon);
      const value = line.slice(colon + 1).replace(/^ /, "");
      if (name === "data") message.data += value;
      else if (name in message) message[name] = value;
    }
    if (message.id) this.lastId = message.id;
    if (message.event === "event") this.onEvent(JSON.parse(message.data));
    if (message.event === "transition") this.onTransition(JSON.parse(message.data));
  }
}

function liveQuery() {
  const pairs = [["heartbeatSeconds", String(HEARTBEAT_SECONDS)]];
  const domain = $("#live-domain").value.trim();
  if (domain) pairs.push(["domain", domain]);
  for (const type of $("#live-types").value.split(",")) {
    if (type.trim()) pairs.push(["typeIds", type.trim()]);
  }
  for (const box of document.querySelectorAll("#live-severities input:checked")) {
    pairs.push(["severities", box.value]);
  }
  return queryString(pairs);
}

function startLive(event) {
  if (event) event.preventDefault();
  if (state.live) state.live.stop();
  showError(null);
  const tbody = $("#live-table tbody");
  tbody.replaceChildren();
  const status = $("#live-status");
  state.live = new LiveFeed(
    liveQuery(),
    (received) => {
      const row = eventRow(tbody, received, true);
      cell(row, received.status, "live-status");
      row.classList.add("fresh");
      while (tbody.rows.length > LIVE_ROWS) tbody.deleteRow(-1);
    },
    (name) => {
      status.dataset.state = name;
      status.textContent = name;
    },
    // An alarm acknowledged or cleared: its row (if still shown) says so.
    (transition) => {
      for (const row of tbody.rows) {
        if (row.dataset.id !== transition.event.id) continue;
        row.querySelector(".live-status").textContent = transition.toStatus;
        row.classList.remove("fresh");
        void row.offsetWidth; // restarts the highlight
        row.classList.add("fresh");
      }
    },
  ).start();
}

// --- the list with the JSON filter and paging ---------------------------------------------

function searchList(event) {
  if (event) event.preventDefault();
  const pairs = [["page", "0"], ["size", $("#list-size").value], ["sort", "timestamp,desc"]];
  const filter = $("#list-filter").value.trim();
  if (filter) pairs.push(["filter", filter]);
  if ($("#list-history").checked) pairs.push(["history", "true"]);
  loadPage(`/events?${queryString(pairs)}`);
}

let pageRequests = 0; // only the latest request's answer is shown

async function loadPage(path) {
  const request = ++pageRequests;
  try {
    const page = await api(path);
    if (request !== pageRequests) return;
    showError(null);
    state.list = {
      path,
      next: page._links.next ? relative(page._links.next.href) : null,
      prev: page._links.prev ? relative(page._links.prev.href) : null,
    };
    const tbody = $("#list-table tbody");
    tbody.replaceChildren();
    for (const event of page._embedded.events) {
      statusCell(eventRow(tbody, event, false), event);
    }
    const info = page.page;
    $("#list-page").textContent = info.totalElements
      ? `page ${info.number + 1} of ${info.totalPages} · ${info.totalElements} events`
      : "no events";
    $("#list-next").disabled = !state.list.next;
    $("#list-prev").disabled = !state.list.prev;
  } catch (error) {
    if (request === pageRequests) showError(error);
  }
}

// --- one event ----------------------------------------------------------------------------

async function showDetail(id) {
  try {
    const event = await api(`/events/${encodeURIComponent(id)}`);
    showError(null);
    renderDetail(event);
    show("detail");
  } catch (error) {
    showError(error);
  }
}

function renderDetail(event) {
  state.detailId = event.id;
  $("#detail-title").textContent = event.description || event.id;
  const tbody = $("#detail-fields tbody");
  tbody.replaceChildren();
  for (const [name, value] of Object.entries(event)) {
    if (name === "_links") continue;
    const row = tbody.insertRow();
    const th = document.createElement("th");
    th.textContent = name;
    row.appendChild(th);
    cell(row, typeof value === "object" && value !== null ? JSON.stringify(value) : value);
    row.dataset.field = name;
  }
  $("#detail-json").textContent = JSON.stringify(event, null, 2);
  $("#detail-ack").hidden = Boolean(event.acknowledged);
  $("#detail-clear").hidden = event.classification !== "ALARM" || event.status === "CLEARED";
}

async function changeDetail(call) {
  try {
    await call(state.detailId);
    renderDetail(await api(`/events/${encodeURIComponent(state.detailId)}`));
  } catch (error) {
    showError(error);
  }
}

// --- wiring -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-in-user-form").addEventListener("submit", signInUser);
  $("#sign-out").addEventListener("click", signOut);
  $("#live-filters").addEventListener("submit", startLive);
  $("#list-form").addEventListener("submit", searchList);
  $("#list-next").addEventListener("click", () => state.list.next && loadPage(state.list.next));
  $("#list-prev").addEventListener("click", () => state.list.prev && loadPage(state.list.prev));
  $("#detail-back").addEventListener("click", () => {
    show(state.back);
    if (state.back === "list" && state.list.path) loadPage(state.list.path);
  });
  $("#detail-ack").addEventListener("click", () => changeDetail(acknowledge));
  $("#detail-clear").addEventListener("click", () => changeDetail(clear));
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => show(tab.dataset.view));
  }
  if (state.key || state.token) signedIn();
});
