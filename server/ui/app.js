// baldurd console: a page per concern, fed by the REST API and its watch
// streams. No build step, no third-party code; served by every node at /ui/.
"use strict";

const state = { token: sessionStorage.getItem("baldur-token") || "", role: "", name: "", streams: [], gen: 0 };
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
// box is the page's element: a page the user has left while it loaded
// (detached) starts no stream.
function watch(path, onMsg, box) {
  let stopped = !document.body.contains(box), ctrl = null, delay = 250;
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
  watch("/v1/emergency:watch", soon, main);
  watch("/v1/circuits:watch", soon, main);
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
  const policies = new Map();
  const policyBox = el("div", { id: "policy" });
  main.append(el("h2", {}, "Policy"), policyBox);
  const showPolicy = (name) => {
    const text = el("textarea", { name: "policy", id: "policy-json", rows: "12", cols: "60", "aria-label": "Policy of " + name },
      JSON.stringify(policies.get(name) || {}, null, 2));
    policyBox.replaceChildren(el("p", {}, "Breaker ", el("strong", { id: "policy-name" }, name)),
      act ? actionForm("Save policy", [text, field("Reason", "reason", { id: "policy-reason" })], (f) => {
        let p;
        try { p = JSON.parse(f.get("policy")); } catch (e) { return Promise.resolve({ ok: false, body: { message: "not JSON: " + e.message } }); }
        const q = f.get("reason") ? "?reason=" + encodeURIComponent(f.get("reason")) : "";
        return api("PUT", "/v1/circuits/" + encodeURIComponent(name) + "/policy" + q, p);
      }) : el("pre", { tabindex: "0" }, text.value));
  };
  const origRender = render;
  watch("/v1/circuits:watch", (m) => {
    if (m.snapshot) { rows.clear(); body.replaceChildren(); }
    (m.circuits || []).forEach((c) => {
      policies.set(c.name, c.policy);
      origRender(c);
      const last = rows.get(c.name).lastElementChild;
      last.append(" ", el("button", { type: "button", "aria-label": "Policy of " + c.name, onclick: () => showPolicy(c.name) }, "Policy"));
    });
  }, main);
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
  watch("/v1/emergency:watch", () => refresh(), main);
};


pages.dlq = async (main) => {
  main.append(el("h1", {}, "Dead-letter queue"));
  const stats = el("div", { class: "cards", id: "dlq-stats" });
  const list = el("div", { id: "dlq-list" });
  const detail = el("div", { id: "dlq-detail" });
  const more = el("button", { type: "button", id: "dlq-next", hidden: true }, "Next page");
  const filter = el("form", { class: "inline", "aria-label": "Filter" },
    field("Domain", "domain", { id: "dlq-domain" }),
    el("label", {}, "Status", el("select", { name: "status", id: "dlq-status" }, ["", "PENDING", "REPLAYING", "REQUIRES_REVIEW", "RESOLVED", "EXPIRED"].map((v) => el("option", { value: v }, v || "any")))),
    el("button", { type: "submit" }, "Show"));
  main.append(stats, el("h2", {}, "Entries"), filter, list, more, detail);
  let token = "";
  const load = async (reset) => {
    if (reset) { token = ""; list.replaceChildren(); }
    const f = new FormData(filter), q = new URLSearchParams({ page_size: "50" });
    if (f.get("domain")) q.set("domain", f.get("domain"));
    if (f.get("status")) q.set("status", f.get("status"));
    if (token) q.set("page_token", token);
    const [st, r] = await Promise.all([api("GET", "/v1/dlq/stats"), api("GET", "/v1/dlq/entries?" + q)]);
    const by = (m) => Object.entries(m || {}).map(([k, v]) => k + ": " + v).join(", ") || "—";
    stats.replaceChildren(card("Entries", String(st.body.total || 0)), card("By status", by(st.body.by_status)), card("By domain", by(st.body.by_domain)));
    list.append(table([{ title: "Entry" }, { title: "Domain" }, { title: "Status" }, { title: "Failure" }, { title: "Retries", cls: "hide-narrow" }, { title: "Stored" }, { title: "" }],
      (r.body.entries || []).map((e) => el("tr", { "data-id": e.id }, el("td", {}, e.id), el("td", {}, e.domain), el("td", { class: "state" }, e.status),
        el("td", {}, e.failure_type), el("td", { class: "hide-narrow" }, String(e.retry_count || 0) + "/" + String(e.max_retries || 0)), el("td", {}, ago(e.created_at)),
        el("td", {}, el("button", { type: "button", "aria-label": "Inspect " + e.id, onclick: () => inspect(e.id) }, "Inspect"))))));
    token = r.body.next_page_token || "";
    more.hidden = !token;
  };
  const inspect = async (id) => {
    const r = await api("GET", "/v1/dlq/entries/" + encodeURIComponent(id));
    const e = r.body;
    const acts = canAct() ? ["replay", "resolve", "redrive"].map((a) => actionForm(a[0].toUpperCase() + a.slice(1),
      [field("Reason", "reason", { id: "dlq-" + a + "-reason" })], (f) => api("POST", "/v1/dlq/entries/" + encodeURIComponent(id) + ":" + a, { reason: f.get("reason") }))) : [];
    detail.replaceChildren(el("h2", {}, "Entry " + id), el("p", {}, el("span", { class: "state", id: "dlq-entry-status" }, e.status), " — ", e.error_message || ""),
      el("pre", { id: "dlq-entry-json", tabindex: "0" }, JSON.stringify(e, null, 2)), ...acts);
    detail.querySelector("h2").scrollIntoView();
  };
  filter.addEventListener("submit", (ev) => { ev.preventDefault(); load(true); });
  more.addEventListener("click", () => load(false));
  // No DLQ watch stream: the first page and the stats are read again every
  // second while the tab is visible.
  every(1000, () => { if (!token || list.childElementCount <= 1) load(true); }, main);
  if (canAct()) {
    const progress = el("pre", { id: "dlq-batch-progress", "aria-live": "polite" });
    const batch = el("form", { class: "inline", "aria-label": "Batch replay", id: "dlq-batch" }, field("Domain", "domain", { required: true }),
      el("label", {}, "Status", el("select", { name: "status" }, ["REQUIRES_REVIEW", "PENDING"].map((v) => el("option", { value: v }, v)))),
      field("Reason", "reason"), el("button", { type: "submit" }, "Replay batch"));
    batch.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(batch);
      progress.textContent = "";
      const res = await fetch("/v1/dlq:replay", { method: "POST", headers: headers(true), body: JSON.stringify({ domain: f.get("domain"), status: f.get("status"), reason: f.get("reason") }) });
      const reader = res.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1);
          if (!line) continue;
          const m = JSON.parse(line);
          if (m.error) { progress.textContent += "refused: " + m.error.message + "\n"; continue; }
          const p = m.result || {};
          progress.textContent += "batch " + (p.batch || 0) + ": requeued " + (p.requeued || 0) + ", resolved " + (p.resolved || 0) + ", failed " + (p.failed || 0) + ", pending " + (p.pending || 0) + (p.done ? " — done" : "") + (p.blocked_reason ? " — blocked: " + p.blocked_reason : "") + "\n";
        }
      }
      load(true);
    });
    main.append(el("h2", {}, "Batch replay"), batch, progress);
  }
  await load(true);
};

pages.coordination = async (main) => {
  main.append(el("h1", {}, "Coordination"));
  const leases = el("div", { id: "leases" }), jobs = el("div", { id: "jobs" });
  main.append(el("h2", {}, "Leases and elections"), leases, el("h2", {}, "Jobs"), jobs);
  await loadCoordination(leases, jobs);
  every(1000, () => loadCoordination(leases, jobs), main);
};

async function loadCoordination(leases, jobs) {
  const [l, j] = await Promise.all([api("GET", "/v1/leases"), api("GET", "/v1/jobs")]);
  leases.replaceChildren(table([{ title: "Name" }, { title: "Holder" }, { title: "Fencing token" }, { title: "Priority", cls: "hide-narrow" }, { title: "Expires" }],
    (l.body.leases || []).map((x) => el("tr", {}, el("td", {}, x.name), el("td", {}, x.holder), el("td", {}, String(x.fencing_token)),
      el("td", { class: "hide-narrow" }, String(x.priority || 0)), el("td", {}, ago(x.expires_at))))));
  jobs.replaceChildren(table([{ title: "Job" }, { title: "Schedule" }, { title: "Enabled" }, { title: "Last run" }, { title: "Next run" }, { title: "Runs / errors", cls: "hide-narrow" }],
    (j.body.jobs || []).map((x) => el("tr", {}, el("td", {}, x.resource + "/" + x.name), el("td", {}, x.cron || ("every " + x.interval)), el("td", {}, x.enabled ? "yes" : "no"),
      el("td", {}, ago(x.last_run_at)), el("td", {}, ago(x.next_run_at)), el("td", { class: "hide-narrow" }, (x.run_count || 0) + " / " + (x.error_count || 0))))));
}

// every runs fn each interval while the page is shown and the tab visible.
function every(ms, fn, box) {
  if (!document.body.contains(box)) return; // a page the user has left
  const id = setInterval(() => { if (document.visibilityState === "visible") fn(); }, ms);
  state.streams.push(() => clearInterval(id));
}

pages.audit = async (main) => {
  main.append(el("h1", {}, "Audit trail"));
  const out = el("div", { id: "audit-list" }), verdict = el("p", { id: "audit-verify", role: "status" });
  const filter = el("form", { class: "inline", "aria-label": "Filter audit" }, field("Action", "action", { placeholder: "e.g. circuit.force_open" }),
    field("Actor", "actor"), field("Target", "target"), el("button", { type: "submit" }, "Show"));
  const verify = el("button", { type: "button", id: "audit-verify-button" }, "Verify the chain");
  main.append(filter, el("p", {}, verify, " ", verdict), out);
  const load = async () => {
    const f = new FormData(filter), q = new URLSearchParams({ page_size: "100" });
    for (const k of ["action", "actor", "target"]) if (f.get(k)) q.set(k, f.get(k));
    const r = await api("GET", "/v1/audit?" + q);
    out.replaceChildren(table([{ title: "#" }, { title: "When" }, { title: "Actor" }, { title: "Action" }, { title: "Target" }, { title: "Reason" }],
      (r.body.records || []).map((x) => el("tr", {}, el("td", {}, String(x.seq)), el("td", {}, ago(x.time)), el("td", {}, x.actor), el("td", {}, x.action),
        el("td", {}, x.target), el("td", {}, x.reason)))));
  };
  filter.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  verify.addEventListener("click", async () => {
    verdict.textContent = "verifying…";
    const r = await api("GET", "/v1/audit:verify");
    verdict.className = r.body.ok ? "ok" : "error";
    verdict.textContent = r.ok ? (r.body.ok ? "intact: " + r.body.records + " records, every member agrees" : "BROKEN: " + r.body.problem) : (r.body.message || "HTTP " + r.status);
  });
  await load();
};

pages.rollouts = async (main) => {
  main.append(el("h1", {}, "Canary rollouts, approvals, notifications"));
  const [ro, ap, ch, nt] = await Promise.all([api("GET", "/v1/canary/rollouts"), api("GET", "/v1/approvals"), api("GET", "/v1/notify/channels"), api("GET", "/v1/notifications")]);
  main.append(el("h2", {}, "Rollouts"), table([{ title: "Rollout" }, { title: "Section" }, { title: "State" }, { title: "Stage" }, { title: "Created" }],
    (ro.body.rollouts || []).map((r) => el("tr", {}, el("td", {}, r.id), el("td", {}, r.section), el("td", { class: "state" }, r.state),
      el("td", {}, String((r.current_stage_index || 0) + 1) + " of " + (r.stages || []).length), el("td", {}, ago(r.created_at))))));
  main.append(el("h2", {}, "Approvals"), table([{ title: "Request" }, { title: "Operation" }, { title: "Requested by" }, { title: "Reason" }, { title: "State" }, { title: "Expires" }],
    (ap.body.approvals || []).map((a) => el("tr", {}, el("td", {}, a.id), el("td", {}, a.operation), el("td", {}, a.requested_by), el("td", {}, a.reason),
      el("td", { class: "state" }, a.state), el("td", {}, ago(a.expires_at))))));
  main.append(el("h2", {}, "Notification channels"), table([{ title: "Channel" }, { title: "Type" }, { title: "Host" }, { title: "Categories" }, { title: "Minimum priority" }],
    (ch.body.channels || []).map((c) => el("tr", {}, el("td", {}, c.name), el("td", {}, c.type), el("td", {}, c.host || ""), el("td", {}, (c.categories || []).join(", ") || "all"), el("td", {}, c.min_priority || "")))));
  main.append(el("h2", {}, "Recent notifications"), table([{ title: "When" }, { title: "Channel" }, { title: "Priority" }, { title: "Title" }, { title: "Result" }],
    (nt.body.notifications || []).slice(0, 50).map((d) => el("tr", {}, el("td", {}, ago(d.time)), el("td", {}, d.channel), el("td", {}, d.priority), el("td", {}, d.title),
      el("td", {}, d.result + (d.error ? ": " + d.error : ""))))));
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
  const gen = ++state.gen;
  const name = (location.hash.replace(/^#\//, "") || "overview").split("?")[0];
  const page = pages[name] || pages.overview;
  document.querySelectorAll("nav a").forEach((a) => a.setAttribute("aria-current", a.getAttribute("href") === "#/" + name ? "page" : "false"));
  const main = document.getElementById("main");
  const box = el("div", {});
  main.replaceChildren(box);
  main.setAttribute("data-page", name);
  main.removeAttribute("data-ready");
  await page(box);
  if (gen === state.gen) main.setAttribute("data-ready", "true");
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
