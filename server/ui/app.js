// baldurd console: a page per concern, fed by the REST API and its watch
// streams. No build step, no third-party code; served by every node at /ui/.
"use strict";

const state = { token: sessionStorage.getItem("baldur-token") || "", role: "", name: "", streams: [] };
const ACT_ROLES = ["OPERATOR", "ADMIN"];
const canAct = () => ACT_ROLES.includes(state.role);

// ---- API ----------------------------------------------------------------

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

// api calls the REST API. It resolves to {ok, status, body}; a 401 asks for
// a token and tries again.
async function api(method, path, body) {
  for (;;) {
    const res = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (res.status === 401) { await askToken(data && data.message); continue; }
    return { ok: res.ok, status: res.status, body: data || {} };
  }
}

function askToken(message) {
  const dlg = document.getElementById("login");
  document.getElementById("login-error").textContent = message && state.token ? message : "";
  return new Promise((resolve) => {
    const form = document.getElementById("login-form");
    form.onsubmit = (ev) => {
      ev.preventDefault();
      state.token = document.getElementById("token").value.trim();
      sessionStorage.setItem("baldur-token", state.token);
      dlg.close();
      resolve();
    };
    if (!dlg.open) dlg.showModal();
  });
}

// watch follows a REST watch stream (newline-delimited JSON), calling onMsg
// for each result, and reconnects when it ends. It returns a stop function.
function watch(path, onMsg) {
  let stopped = false, ctrl = null, delay = 250;
  const live = document.getElementById("live");
  const run = async () => {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const res = await fetch(path, { headers: headers(false), signal: ctrl.signal });
        if (res.status === 401) { await askToken(); continue; }
        if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
        live.textContent = "live"; live.classList.remove("down");
        delay = 250;
        const reader = res.body.getReader(), dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i).trim();
            buf = buf.slice(i + 1);
            if (!line) continue;
            const msg = JSON.parse(line);
            if (msg.result) onMsg(msg.result);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      if (stopped) return;
      live.textContent = "disconnected, reconnecting…"; live.classList.add("down");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  };
  run();
  const stop = () => { stopped = true; if (ctrl) ctrl.abort(); };
  state.streams.push(stop);
  return stop;
}

// ---- rendering helpers ----------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : String(k));
  return e;
}

function ago(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const t = new Date(iso), s = Math.round((t - Date.now()) / 1000), a = Math.abs(s);
  if (a < 5) return el("time", { datetime: iso, title: t.toString() }, "just now (" + t.toLocaleTimeString() + ")");
  const n = a < 60 ? a + "s" : a < 3600 ? Math.round(a / 60) + "m" : a < 86400 ? Math.round(a / 3600) + "h" : Math.round(a / 86400) + "d";
  return el("time", { datetime: iso, title: t.toString() }, (s < 0 ? n + " ago" : "in " + n) + " (" + t.toLocaleTimeString() + ")");
}

function table(cols, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col", class: c.cls || "" }, c.title)))),
    el("tbody", {}, rows)));
}

function card(k, v, extra) {
  return el("div", { class: "card" }, el("div", { class: "k" }, k), el("div", { class: "v" }, v), extra || null);
}

// actionForm builds a form whose submission calls the API and shows the
// API's message when refused.
function actionForm(label, fields, submit) {
  const msg = el("p", { class: "error", role: "alert" });
  const form = el("form", { class: "inline", "aria-label": label }, fields, el("button", { type: "submit" }, label), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    msg.className = "error"; msg.textContent = "";
    const r = await submit(new FormData(form));
    if (!r.ok) { msg.textContent = (r.body && r.body.message) || ("HTTP " + r.status); return; }
    msg.className = "ok"; msg.textContent = "done";
  });
  return form;
}

function field(label, name, attrs) {
  return el("label", {}, label, el("input", Object.assign({ name }, attrs || {})));
}

// ---- pages ----------------------------------------------------------------

const pages = {};

pages.overview = async (main) => {
  main.append(el("h1", {}, "Overview"));
  const box = el("div", { class: "cards", id: "overview-cards" });
  const members = el("div", { id: "overview-members" });
  main.append(box, el("h2", {}, "Members"), members);
  let pending = false;
  const refresh = async () => {
    if (pending) return;
    pending = true;
    const [cl, em, cs, dq, ro, ap] = await Promise.all([api("GET", "/v1/cluster"), api("GET", "/v1/emergency"), api("GET", "/v1/circuits"),
      api("GET", "/v1/dlq/stats"), api("GET", "/v1/canary/rollouts"), api("GET", "/v1/approvals")]);
    pending = false;
    const c = cl.body, e = (em.body && em.body.state) || {};
    const open = (cs.body.circuits || []).filter((x) => x.state === "OPEN").length;
    const active = (ro.body.rollouts || []).filter((r) => r.state === "CANARY" || r.state === "PAUSED").length;
    const waiting = (ap.body.approvals || []).filter((a) => a.state === "PENDING").length;
    box.replaceChildren(
      card("Leader", el("span", { id: "leader" }, c.leader_id || "none")),
      card("Raft term / applied index", (c.term || "0") + " / " + (c.applied_index || "0")),
      card("Emergency level", el("span", { id: "level", class: e.level || "" }, e.level || "NORMAL"),
        e.active ? el("div", { class: "muted" }, e.reason, " — ", e.expires_at ? el("span", {}, "expires ", ago(e.expires_at)) : "until released") : null),
      card("Breakers OPEN", el("span", { id: "open-count" }, String(open))),
      card("DLQ entries", String(dq.body.total || 0)),
      card("Active rollouts", String(active)),
      card("Pending approvals", String(waiting)));
    members.replaceChildren(table([{ title: "Member" }, { title: "Role" }, { title: "Suffrage" }, { title: "gRPC", cls: "hide-narrow" }, { title: "HTTP", cls: "hide-narrow" }],
      (c.members || []).map((m) => el("tr", {}, el("td", {}, m.id), el("td", {}, m.state === "LEADER" ? "leader" : "follower"),
        el("td", {}, m.suffrage), el("td", { class: "hide-narrow" }, m.grpc_addr || ""), el("td", { class: "hide-narrow" }, m.http_addr || "")))));
  };
  await refresh();
  let timer = null;
  const soon = () => { clearTimeout(timer); timer = setTimeout(refresh, 100); };
  watch("/v1/emergency:watch", soon);
  watch("/v1/circuits:watch", soon);
};

pages.circuits = async (main) => {
  main.append(el("h1", {}, "Circuits"));
  const rows = new Map();
  const body = el("tbody", { id: "circuit-rows" });
  const act = canAct();
  const form = act ? actionForm("Apply", [
    el("label", {}, "Action", el("select", { name: "action" }, el("option", { value: "forceOpen" }, "Force open"),
      el("option", { value: "forceClose" }, "Force close"), el("option", { value: "reset" }, "Reset"))),
    field("Breaker", "name", { required: true, id: "act-name" }),
    field("Reason", "reason", { id: "act-reason" }),
    field("TTL (minutes)", "ttl", { type: "number", min: "1", max: "1440", value: "90" }),
  ], (f) => {
    const action = f.get("action"), body = { reason: f.get("reason") };
    if (action !== "reset") body.ttl = (Number(f.get("ttl")) * 60) + "s";
    return api("POST", "/v1/circuits/" + encodeURIComponent(f.get("name")) + ":" + action, body);
  }) : null;
  if (form) form.id = "circuit-action";
  main.append(form || el("p", { class: "muted" }, "Read only: your role (" + state.role + ") cannot change breakers."),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {},
      ["Breaker", "State", "Failure rate", "Reporters", "Pinned", "Policy", ""].map((t) => el("th", { scope: "col" }, t)))), body)));
  const render = (c) => {
    const ev = c.window || c.evidence || {};
    const calls = Number(ev.window_calls || 0), fails = Number(ev.window_failures || 0);
    const tr = el("tr", { "data-name": c.name },
      el("td", {}, c.name),
      el("td", { class: "state " + c.state }, c.state),
      el("td", {}, calls ? (100 * fails / calls).toFixed(1) + "% of " + calls : "—"),
      el("td", {}, String(ev.reporters || 0)),
      el("td", {}, c.pinned ? el("span", {}, (c.pin_reason || "") + " by " + (c.pinned_by || "?") + ", until ", ago(c.pin_expires_at)) : "no"),
      el("td", { class: "muted" }, c.policy ? "≥" + c.policy.failure_threshold + " failures or " + c.policy.failure_rate_threshold + "% of " + c.policy.minimum_calls + "+, recover " + c.policy.recovery_timeout : ""),
      el("td", {}, act ? el("button", { type: "button", "aria-label": "Act on " + c.name, onclick: () => {
        document.getElementById("act-name").value = c.name; document.getElementById("act-reason").focus();
      } }, "Act…") : ""));
    const old = rows.get(c.name);
    if (old) old.replaceWith(tr); else body.append(tr);
    rows.set(c.name, tr);
  };
  watch("/v1/circuits:watch", (m) => {
    if (m.snapshot) { rows.clear(); body.replaceChildren(); }
    (m.circuits || []).forEach(render);
  });
};

pages.emergency = async (main) => {
  main.append(el("h1", {}, "Emergency"));
  const now = el("div", { class: "cards", id: "emergency-now" });
  const hist = el("div", { id: "emergency-history" });
  const adm = el("div", { id: "emergency-admission" });
  main.append(now);
  if (canAct()) {
    main.append(el("h2", {}, "Trigger"), actionForm("Trigger", [
      el("label", {}, "Level", el("select", { name: "level", id: "trigger-level" }, ["LEVEL_1", "LEVEL_2", "LEVEL_3"].map((l) => el("option", { value: l }, l)))),
      field("Scope", "scope", { placeholder: "global" }),
      field("Reason", "reason", { id: "trigger-reason" }),
      field("Duration", "duration", { placeholder: "e.g. 30m (optional)" }),
    ], (f) => {
      const b = { level: f.get("level"), reason: f.get("reason"), scope: f.get("scope") || undefined };
      const d = String(f.get("duration") || "").trim();
      if (d) b.duration = d.match(/^\d+$/) ? d + "s" : toSeconds(d);
      return api("POST", "/v1/emergency:trigger", b);
    }), el("h2", {}, "Release"), actionForm("Release", [
      field("Scope", "scope", { placeholder: "global" }),
      field("Reason", "reason", { id: "release-reason" }),
      el("label", {}, "Force", el("input", { type: "checkbox", name: "force" })),
    ], (f) => api("POST", "/v1/emergency:release", { reason: f.get("reason"), scope: f.get("scope") || undefined, force: f.get("force") === "on" })));
  } else {
    main.append(el("p", { class: "muted" }, "Read only: your role (" + state.role + ") cannot trigger or release."));
  }
  main.append(el("h2", {}, "Admission by level"), adm, el("h2", {}, "History"), hist);
  const refresh = async () => {
    const [em, h] = await Promise.all([api("GET", "/v1/emergency"), api("GET", "/v1/emergency/history?limit=50")]);
    const scopes = [em.body.state || {}].concat((em.body.scopes || []).filter((s) => s.scope !== "global"));
    now.replaceChildren(...scopes.map((s) => card("Scope " + (s.scope || "global"), el("span", { class: s.level || "" }, s.level || "NORMAL"),
      s.active ? el("div", { class: "muted" }, s.reason, " — by ", s.activated_by, " ", ago(s.activated_at), ", ",
        s.expires_at ? el("span", {}, "expires ", ago(s.expires_at)) : "until released") : null)));
    const cfg = em.body.config || {};
    adm.replaceChildren(table([{ title: "Level" }, { title: "critical" }, { title: "standard" }, { title: "non_essential" }],
      (cfg.levels || []).map((l) => el("tr", {}, el("td", {}, l.level), el("td", {}, String(l.admission.critical)),
        el("td", {}, String(l.admission.standard)), el("td", {}, String(l.admission.non_essential))))));
    hist.replaceChildren(table([{ title: "When" }, { title: "Scope" }, { title: "Change" }, { title: "By" }, { title: "Reason" }],
      (h.body.changes || []).map((c) => el("tr", {}, el("td", {}, ago(c.time)), el("td", {}, c.scope), el("td", {}, c.action + ": " + c.from_level + " → " + c.to_level),
        el("td", {}, c.actor), el("td", {}, c.reason)))));
  };
  await refresh();
  watch("/v1/emergency:watch", () => refresh());
};

function toSeconds(d) {
  const m = d.match(/^(\d+)\s*([smhd])$/);
  if (!m) return d;
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2]] + "s";
}

// ---- router -----------------------------------------------------------------

async function route() {
  state.streams.forEach((stop) => stop());
  state.streams = [];
  const name = (location.hash.replace(/^#\//, "") || "overview").split("?")[0];
  const page = pages[name] || pages.overview;
  document.querySelectorAll("nav a").forEach((a) => a.setAttribute("aria-current", a.getAttribute("href") === "#/" + name ? "page" : "false"));
  const main = document.getElementById("main");
  main.replaceChildren();
  main.setAttribute("data-page", name);
  await page(main);
  main.setAttribute("data-ready", "true");
}

async function start() {
  const who = await api("GET", "/v1/whoami");
  state.role = who.body.role || "";
  state.name = who.body.name || "";
  document.getElementById("who").textContent = state.name + " (" + state.role.toLowerCase() + ")";
  window.addEventListener("hashchange", route);
  await route();
}

start();
