// The live dashboard: one EventSource on the hub's stream, toasts by severity, a tray
// of recent events labelled from the catalog, and the connection state.
//
// Connection states: signed-out, connecting, connected, server-shutdown (the hub said
// goodbye), reconnecting, refused (the token was turned away; sign in again).
// The browser's EventSource retries on its own after a network error or the end of
// the stream; when it gives up (an answer other than 200, as a closing replica
// gives), the page decides: the hub not ready means retry with backoff, a refusal
// of the token means stop and say why.
"use strict";

(() => {
  const STREAM = "/v1/realtime/stream";
  const MAX_TRAY = 100;
  const MAX_HISTORY = 50;
  const MAX_TOASTS = 4;
  const TOAST_MS = { info: 6000, success: 6000, warning: 10000, error: 15000 };
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

  const app = {
    token: null,
    source: null,
    catalog: {},
    listening: new Set(),
    retryTimer: null,
    attempt: 0,
    everConnected: false,
    events: 0,
  };

  const $ = (id) => document.getElementById(id);

  // -- connection state ----------------------------------------------------------

  const STATE_TEXT = {
    "signed-out": "signed out",
    connecting: "connecting…",
    connected: "connected",
    "server-shutdown": "server shutdown",
    reconnecting: "reconnecting…",
    refused: "token refused",
  };

  function setState(name, detail) {
    const badge = $("connection");
    if (badge.dataset.state === name && !detail) return;
    badge.dataset.state = name;
    document.body.dataset.connection = name;
    $("connection-text").textContent = detail
      ? `${STATE_TEXT[name]} · ${detail}`
      : STATE_TEXT[name];
    const item = document.createElement("li");
    item.dataset.state = name;
    item.textContent = `${clock(new Date())}  ${STATE_TEXT[name]}${detail ? ` (${detail})` : ""}`;
    const list = $("history-list");
    list.prepend(item);
    while (list.children.length > MAX_HISTORY) list.lastElementChild.remove();
  }

  // -- catalog -------------------------------------------------------------------

  async function loadCatalog() {
    try {
      const response = await fetch("/dashboard/catalog.json", { cache: "no-store" });
      if (!response.ok) return;
      const body = await response.json();
      if (body && typeof body.types === "object") app.catalog = body.types;
    } catch (error) {
      // The labels come back with the next connection; events still show by type.
    }
  }

  function listenForCatalogTypes(source) {
    for (const type of Object.keys(app.catalog)) {
      if (app.listening.has(type)) continue;
      app.listening.add(type);
      source.addEventListener(type, onEvent);
    }
  }

  // -- the stream ----------------------------------------------------------------

  async function connect() {
    clearTimeout(app.retryTimer);
    closeSource();
    setState(app.everConnected ? "reconnecting" : "connecting");
    await loadCatalog();
    if (!app.token) return;
    const source = new EventSource(`${STREAM}?access_token=${encodeURIComponent(app.token)}`);
    app.source = source;
    app.listening = new Set();
    listenForCatalogTypes(source);
    source.addEventListener("message", onEvent);
    source.addEventListener("ready", (message) => {
      if (source !== app.source) return;
      const ready = parse(message.data) || {};
      app.everConnected = true;
      app.attempt = 0;
      $("who").textContent = `tenant ${ready.tenantId || "?"} · replica ${ready.replicaId || "?"}`;
      setState("connected");
      // A deploy may have added types: pick up their labels and listen for them.
      loadCatalog().then(() => source === app.source && listenForCatalogTypes(source));
    });
    source.addEventListener("server_shutdown", (message) => {
      if (source !== app.source) return;
      const reason = (parse(message.data) || {}).reason || "shutdown";
      // A plain shutdown needs no detail; an admin ejection says so.
      setState("server-shutdown", reason === "shutdown" ? "" : reason.replace("_", " "));
    });
    source.addEventListener("error", () => {
      if (source !== app.source) return;
      if (source.readyState === EventSource.CONNECTING) {
        setState("reconnecting");
      } else {
        closeSource();
        findOutWhy();
      }
    });
  }

  function closeSource() {
    if (app.source) {
      app.source.close();
      app.source = null;
    }
  }

  // EventSource gave up: either the hub is not (yet) ready, or it refused the token.
  async function findOutWhy() {
    setState(app.everConnected ? "reconnecting" : "connecting");
    let ready = false;
    try {
      ready = (await fetch("/readyz", { cache: "no-store" })).ok;
    } catch (error) {
      ready = false;
    }
    if (ready) {
      const refusal = await refusalOf(app.token);
      if (refusal) {
        refuse(refusal);
        return;
      }
    }
    const delay = BACKOFF_MS[Math.min(app.attempt, BACKOFF_MS.length - 1)];
    app.attempt += 1;
    app.retryTimer = setTimeout(connect, delay + Math.random() * 250);
  }

  // Ask the stream once with the token in a header, to read the refusal's sentence.
  async function refusalOf(token) {
    const abort = new AbortController();
    try {
      const response = await fetch(STREAM, {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
        signal: abort.signal,
      });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => null);
        return (body && body.message) || `the hub answered ${response.status}`;
      }
      return null;
    } catch (error) {
      return null;
    } finally {
      abort.abort();
    }
  }

  function refuse(message) {
    setState("refused");
    signOut(false);
    $("sign-in-error").textContent = `The hub refused this token: ${message}`;
  }

  // -- events --------------------------------------------------------------------

  function onEvent(message) {
    const envelope = parse(message.data);
    if (!envelope || typeof envelope !== "object") return;
    const type = envelope.type || message.type;
    const row = app.catalog[type] || {};
    const severity = envelope.severity || row.severity || "info";
    const label = row.label || type;
    app.events += 1;
    document.body.dataset.events = String(app.events);
    addToTray(envelope, type, label, severity);
    if (severity !== "silent") toast(envelope, type, label, severity);
  }

  function addToTray(envelope, type, label, severity) {
    const item = document.createElement("li");
    item.className = `event sev-${severity}`;
    item.dataset.type = type;
    item.dataset.severity = severity;
    item.dataset.id = envelope.id || "";
    item.append(
      span("dot", ""),
      span("time", clock(when(envelope))),
      span("label", label),
      span("type", type),
      span("details", summary(envelope)),
    );
    const tray = $("tray");
    tray.prepend(item);
    while (tray.children.length > MAX_TRAY) tray.lastElementChild.remove();
    $("empty").hidden = true;
    $("count").textContent = `${app.events} event${app.events === 1 ? "" : "s"}`;
  }

  function toast(envelope, type, label, severity) {
    const box = document.createElement("div");
    box.className = `toast sev-${severity}`;
    box.dataset.type = type;
    box.dataset.severity = severity;
    box.setAttribute("role", severity === "error" ? "alert" : "status");
    const close = document.createElement("button");
    close.type = "button";
    close.className = "close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => box.remove());
    const head = document.createElement("div");
    head.className = "toast-head";
    head.append(span("label", label), close);
    box.append(head, span("type", `${type} · ${clock(when(envelope))}`));
    const details = summary(envelope);
    if (details) box.append(span("details", details));
    const stack = $("toasts");
    stack.prepend(box);
    while (stack.children.length > MAX_TOASTS) stack.lastElementChild.remove();
    setTimeout(() => box.remove(), TOAST_MS[severity] || TOAST_MS.info);
  }

  // A short line from the payload and batch: the first few plain fields.
  function summary(envelope) {
    const parts = [];
    const payload = envelope.payload && typeof envelope.payload === "object" ? envelope.payload : {};
    for (const [key, value] of Object.entries(payload)) {
      if (["string", "number", "boolean"].includes(typeof value)) {
        const text = String(value);
        parts.push(`${key} ${text.length > 40 ? `${text.slice(0, 39)}…` : text}`);
      }
      if (parts.length === 3) break;
    }
    if (envelope.batch && envelope.batch.isa13) {
      parts.push(`batch ${envelope.batch.tradingPartnerId || ""} ${envelope.batch.isa13}`.trim());
    }
    return parts.join(" · ");
  }

  // -- sign in and out -----------------------------------------------------------

  function signIn(token) {
    app.token = token.trim();
    app.everConnected = false;
    app.attempt = 0;
    sessionStorage.setItem("rcm-realtime-token", app.token);
    $("sign-in-error").textContent = "";
    $("sign-in").hidden = true;
    $("feed").hidden = false;
    $("sign-out").hidden = false;
    connect();
  }

  function signOut(showState = true) {
    clearTimeout(app.retryTimer);
    closeSource();
    app.token = null;
    sessionStorage.removeItem("rcm-realtime-token");
    $("sign-in").hidden = false;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    if (showState) setState("signed-out");
  }

  // -- helpers -------------------------------------------------------------------

  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (error) {
      return null;
    }
  }

  function when(envelope) {
    const date = new Date(envelope.occurredAt || Date.now());
    return Number.isNaN(date.getTime()) ? new Date() : date;
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // -- start ---------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (submit) => {
      submit.preventDefault();
      const token = $("token").value;
      if (token.trim()) signIn(token);
      $("token").value = "";
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("clear").addEventListener("click", () => {
      $("tray").replaceChildren();
      $("empty").hidden = false;
    });

    // A token in the address bar signs in at once, then leaves the address bar.
    const params = new URLSearchParams(window.location.search);
    const fromQuery = params.get("access_token");
    if (fromQuery) {
      params.delete("access_token");
      const rest = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (rest ? `?${rest}` : ""));
      signIn(fromQuery);
      return;
    }
    const remembered = sessionStorage.getItem("rcm-realtime-token");
    if (remembered) signIn(remembered);
  });
})();
