// memfs web page (issue #21). No library, nothing from the internet; everything through the JSON API.
// Memory content is only ever put into the page as text (textContent / text nodes), never as HTML,
// so a memory holding <script>, <img onerror> or a javascript: link runs nothing. The CSP (no inline
// script, no eval) is the second wall.
"use strict";

const main = document.getElementById("main");
const toastBox = document.getElementById("toast");
let view = null;          // {name, refresh()} of the screen on display
let revision = null;      // the store's revision last seen on /events

// -- small helpers ---------------------------------------------------------------------------------

// h("a", {href: "/x", class: "c"}, "text", child): an element; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(message, kind) {
  toastBox.textContent = message;
  toastBox.className = kind || "";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { toastBox.textContent = ""; toastBox.className = ""; }, 6000);
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const init = {method, credentials: "same-origin",
                headers: {"Accept": "application/json", "X-Memfs-CSRF": "1"}};
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  if (r.status === 401) { location.href = "/ui/login"; throw new ApiError(401, "unauthorized", "sign in first"); }
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    const e = (data && data.error) || {code: "http_" + r.status, message: r.statusText};
    throw new ApiError(r.status, e.code, e.message);
  }
  return data;
}

function age(iso) {
  if (!iso) return "";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 60) return "just now";
  for (const [n, unit] of [[86400 * 365, "y"], [86400 * 30, "mo"], [86400 * 7, "w"], [86400, "d"], [3600, "h"], [60, "min"]]) {
    if (s >= n) return Math.floor(s / n) + " " + unit + " ago";
  }
  return "";
}

function bytes(n) {
  for (const [f, u] of [[1 << 30, "GiB"], [1 << 20, "MiB"], [1 << 10, "KiB"]]) if (n >= f) return (n / f).toFixed(1) + " " + u;
  return n + " B";
}

// The snippet as text nodes, the query's matched words wrapped in <mark> (still text inside).
function highlighted(text, terms) {
  const words = (terms || []).filter(t => t && t.length > 0).map(t => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!words.length) return [text];
  const re = new RegExp("(" + words.join("|") + ")", "gi");
  return text.split(re).map((part, i) => (i % 2 ? h("mark", {}, part) : part));
}

function memoryLink(id, label) {
  return h("a", {href: "/?view=memory&id=" + encodeURIComponent(id), "data-view": "memory"}, label);
}

function tagList(tags) {
  return h("span", {class: "tags"}, (tags || []).map(t => h("span", {class: "tag"}, t)));
}

function params() { return new URLSearchParams(location.search); }

function go(url, replace) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  route();
}

function field(label, input) { return h("label", {class: "field"}, h("span", {}, label), input); }

function splitTags(text) { return text.split(",").map(t => t.trim()).filter(Boolean); }

function showError(e) { toast(e.message || String(e), "error"); }

// -- search (the first screen) --------------------------------------------------------------------

function searchView() {
  const p = params();
  const q = h("input", {type: "search", id: "q", placeholder: "Search memories…", value: p.get("q") || "",
                        "aria-label": "Search", autocomplete: "off"});
  const mode = h("select", {id: "mode", "aria-label": "Mode"},
    [["hybrid", "default"], ["semantic", "semantic"], ["keyword", "keyword"]].map(([v, l]) =>
      h("option", {value: v, selected: (p.get("mode") || "hybrid") === v}, l)));
  const tags = h("input", {id: "tags", placeholder: "tags, comma separated", value: p.get("tags") || ""});
  const match = h("select", {id: "match", "aria-label": "Tag match"},
    ["any", "all"].map(v => h("option", {value: v, selected: (p.get("match") || "any") === v}, v)));
  const type = h("input", {id: "type", placeholder: "type", value: p.get("type") || "", size: 8});
  const since = h("input", {id: "since", placeholder: "since (last week, 2026-01-01)", value: p.get("since") || ""});
  const until = h("input", {id: "until", placeholder: "until", value: p.get("until") || ""});
  const results = h("ol", {class: "hits", id: "hits"});
  const summary = h("p", {class: "muted", id: "summary"});
  let timer = null, seq = 0;

  async function run(pushUrl) {
    const query = q.value.trim();
    const u = new URLSearchParams({view: "search"});
    for (const [k, el] of Object.entries({q, mode, tags, match, type, since, until})) if (el.value) u.set(k, el.value);
    if (pushUrl) history.replaceState(null, "", "/?" + u.toString());
    if (!query) { results.replaceChildren(); summary.textContent = "Type to search: by meaning, or exact words like E4417."; return; }
    const mine = ++seq;
    const body = {query, k: 20, mode: mode.value, tags: splitTags(tags.value), match: match.value};
    if (type.value.trim()) body.type = type.value.trim();
    if (since.value.trim()) body.since = since.value.trim();
    if (until.value.trim()) body.until = until.value.trim();
    try {
      const r = await api("POST", "/search", body);
      if (mine !== seq) return;  // a newer query's answer wins
      summary.textContent = r.hits.length ? r.hits.length + " hits" : (r.note || "No good match.");
      results.replaceChildren(...r.hits.map(hit => h("li", {class: "hit"},
        h("div", {class: "hit-head"}, memoryLink(hit.id, firstLine(hit.content)),
          h("span", {class: "score", title: "score (what the list is ordered by)"}, "score " + hit.score.toFixed(2)),
          hit.similarity === null ? null : h("span", {class: "score", title: "cosine similarity"}, "sim " + hit.similarity.toFixed(2))),
        h("p", {class: "snippet"}, highlighted(hit.snippet || hit.content.slice(0, 200), hit.matched_terms)),
        h("div", {class: "meta"}, tagList(hit.tags), h("span", {class: "type"}, hit.type), h("span", {}, age(hit.created_at))))));
    } catch (e) { if (mine === seq) { results.replaceChildren(); summary.textContent = ""; showError(e); } }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(() => run(true), 250); };
  for (const el of [q, tags, type, since, until]) el.addEventListener("input", later);
  for (const el of [mode, match]) el.addEventListener("change", later);
  main.replaceChildren(h("section", {class: "search"},
    h("form", {class: "searchbar", onsubmit: ev => { ev.preventDefault(); run(true); }}, q, mode),
    h("details", {class: "filters", open: !!(p.get("tags") || p.get("type") || p.get("since") || p.get("until"))},
      h("summary", {}, "Filters"), h("div", {class: "row"}, tags, match, type, since, until)),
    summary, results));
  run(false);
  q.focus();
  return {name: "search", refresh: () => run(false)};
}

function firstLine(text) {
  const line = (text || "").split("\n").find(l => l.trim()) || "(empty)";
  return line.length > 120 ? line.slice(0, 117) + "…" : line;
}

// -- browse ---------------------------------------------------------------------------------------

function browseView() {
  const p = params();
  const tag = h("input", {placeholder: "tag", value: p.get("tag") || "", id: "browse-tag"});
  const type = h("input", {placeholder: "type", value: p.get("type") || "", size: 8, id: "browse-type"});
  const since = h("input", {placeholder: "since", value: p.get("since") || "", id: "browse-since"});
  const list = h("table", {class: "list", id: "browse-list"});
  const more = h("button", {type: "button", id: "more"}, "Next page");
  let cursor = p.get("cursor") || null;

  async function load(append) {
    const u = new URLSearchParams({limit: "50"});
    if (tag.value.trim()) u.append("tag", tag.value.trim());
    if (type.value.trim()) u.set("type", type.value.trim());
    if (since.value.trim()) u.set("since", since.value.trim());
    if (append && cursor) u.set("cursor", cursor);
    try {
      const page = await api("GET", "/memories?" + u.toString());
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const rows = page.memories.map(m => h("tr", {},
        h("td", {}, memoryLink(m.id, firstLine(m.content))), h("td", {}, tagList(m.tags)),
        h("td", {class: "type"}, m.type), h("td", {class: "muted"}, age(m.created_at))));
      if (append) list.append(...rows); else list.replaceChildren(...rows);
    } catch (e) { showError(e); }
  }
  more.addEventListener("click", () => load(true));
  const filters = h("form", {class: "row", onsubmit: ev => {
    ev.preventDefault();
    const u = new URLSearchParams({view: "browse"});
    if (tag.value) u.set("tag", tag.value); if (type.value) u.set("type", type.value); if (since.value) u.set("since", since.value);
    history.replaceState(null, "", "/?" + u.toString());
    load(false);
  }}, tag, type, since, h("button", {type: "submit"}, "Filter"));
  main.replaceChildren(h("section", {}, h("h1", {}, "Newest first"), filters, list, more));
  load(false);
  return {name: "browse", refresh: () => load(false)};
}

// -- one memory ------------------------------------------------------------------------------------

function memoryView() {
  const id = params().get("id");
  const box = h("section", {class: "memory"});
  main.replaceChildren(box);
  let loaded = null;

  async function load() {
    try {
      const m = await api("GET", "/memories/" + encodeURIComponent(id));
      if (loaded && JSON.stringify(loaded) !== JSON.stringify(m)) toast("This memory changed (another client or a hand edit): showing the new version.");
      loaded = m;
      const near = h("ol", {class: "neighbours", id: "neighbours"});
      box.replaceChildren(...[
        h("h1", {}, firstLine(m.content)),
        m.warning ? h("p", {class: "warning"}, m.warning) : null,
        h("pre", {class: "content", id: "content"}, m.content),
        h("dl", {class: "facts"},
          h("dt", {}, "id"), h("dd", {}, h("code", {}, m.id)),
          h("dt", {}, "tags"), h("dd", {}, tagList(m.tags)),
          h("dt", {}, "type"), h("dd", {}, m.type),
          h("dt", {}, "metadata"), h("dd", {}, h("pre", {}, JSON.stringify(m.metadata || {}, null, 2))),
          h("dt", {}, "created"), h("dd", {}, m.created_at + " (" + age(m.created_at) + ")"),
          h("dt", {}, "updated"), h("dd", {}, m.updated_at),
          h("dt", {}, "origin"), h("dd", {}, m.source || "this store"),
          h("dt", {}, "file"), h("dd", {}, h("code", {}, "data/memories/" + m.path),
            h("p", {class: "muted"}, "Edit it by hand with any editor; memfs picks the change up: ",
              h("code", {}, "$EDITOR data/memories/" + m.path)))),
        h("div", {class: "actions"},
          h("a", {href: "/?view=edit&id=" + encodeURIComponent(m.id), "data-view": "edit", class: "button"}, "Edit"),
          h("button", {type: "button", class: "danger", id: "delete", onclick: () => remove(m)}, "Delete")),
        h("h2", {}, "Nearest memories"), near].filter(Boolean));
      const r = await api("POST", "/search", {query: m.content.slice(0, 1000), mode: "semantic", k: 6, min_score: 0});
      near.replaceChildren(...r.hits.filter(x => x.id !== m.id).slice(0, 5).map(x =>
        h("li", {}, memoryLink(x.id, firstLine(x.content)), " ", h("span", {class: "score"}, "sim " + (x.similarity ?? 0).toFixed(2)))));
    } catch (e) {
      if (e.status === 404) box.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No memory with id " + id + " (deleted?)."));
      else showError(e);
    }
  }
  async function remove(m) {
    if (!confirm("Delete this memory? Its file is removed (backups keep it).")) return;
    try { await api("DELETE", "/memories/" + encodeURIComponent(m.id)); toast("Deleted."); go("/?view=browse"); }
    catch (e) { showError(e); }
  }
  load();
  return {name: "memory", refresh: load};
}

// -- create and edit --------------------------------------------------------------------------------

function editView(isNew) {
  const id = params().get("id");
  const content = h("textarea", {id: "edit-content", rows: 10, required: true});
  const tags = h("input", {id: "edit-tags", placeholder: "comma separated"});
  const type = h("input", {id: "edit-type", value: "note"});
  const metadata = h("textarea", {id: "edit-metadata", rows: 4}, "{}");
  const save = h("button", {type: "submit", id: "save"}, isNew ? "Create" : "Save");
  let loaded = null;

  const form = h("form", {class: "edit", onsubmit: async ev => {
    ev.preventDefault();
    let meta;
    try { meta = JSON.parse(metadata.value || "{}"); } catch (e) { toast("metadata is not JSON: " + e.message, "error"); return; }
    const body = {content: content.value, tags: splitTags(tags.value), type: type.value.trim() || "note", metadata: meta};
    try {
      if (isNew) {
        const r = await api("POST", "/memories", body);
        toast(r.duplicate ? "Already stored: showing the existing memory." : "Created.");
        go("/?view=memory&id=" + encodeURIComponent(r.id));
        return;
      }
      // No silent overwrite: the memory must still be the version this form was opened on.
      const now = await api("GET", "/memories/" + encodeURIComponent(id));
      if (JSON.stringify(now) !== JSON.stringify(loaded)) {
        toast("Not saved: this memory changed since you opened it (another client or a hand edit). " +
              "Reload to see the new version, then make your change again.", "error");
        return;
      }
      await api("PATCH", "/memories/" + encodeURIComponent(id), body);
      toast("Saved.");
      go("/?view=memory&id=" + encodeURIComponent(id));
    } catch (e) { showError(e); }
  }}, field("Content", content), field("Tags", tags), field("Type", type), field("Metadata (JSON)", metadata), save);
  main.replaceChildren(h("section", {}, h("h1", {}, isNew ? "New memory" : "Edit memory"), form));
  if (!isNew) {
    api("GET", "/memories/" + encodeURIComponent(id)).then(m => {
      loaded = m;
      content.value = m.content; tags.value = (m.tags || []).join(", "); type.value = m.type;
      metadata.value = JSON.stringify(m.metadata || {}, null, 2);
    }).catch(showError);
  }
  content.focus();
  return {name: isNew ? "new" : "edit", refresh: () => {}};
}

// -- health -----------------------------------------------------------------------------------------

function chart(perDay) {
  if (!Object.keys(perDay).length) return h("p", {class: "muted"}, "Nothing added in the last 30 days.");
  const days = [];  // every one of the last 30 days (UTC), empty ones too
  for (let i = 29; i >= 0; i--) days.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
  perDay = Object.fromEntries(days.map(d => [d, perDay[d] || 0]));
  const max = Math.max(...days.map(d => perDay[d]));
  const ns = "http://www.w3.org/2000/svg", w = 12, height = 80;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${days.length * w} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "memories added per day");
  days.forEach((d, i) => {
    const bar = document.createElementNS(ns, "rect"), barH = Math.max(1, perDay[d] / max * (height - 4));
    bar.setAttribute("x", i * w + 1); bar.setAttribute("width", w - 2);
    bar.setAttribute("y", height - barH); bar.setAttribute("height", barH);
    const title = document.createElementNS(ns, "title"); title.textContent = d + ": " + perDay[d];
    bar.append(title); svg.append(bar);
  });
  return svg;
}

function table(rows, head) {
  return h("table", {class: "list"}, head ? h("tr", {}, head.map(x => h("th", {}, x))) : null,
           rows.map(r => h("tr", {}, r.map(x => h("td", {}, x)))));
}

function healthView() {
  const box = h("section", {class: "health"});
  main.replaceChildren(box);
  async function load() {
    try {
      const [health, stats, owner] = await Promise.all([api("GET", "/health"), api("GET", "/stats"), api("GET", "/owner")]);
      const idx = health.index || {};
      box.replaceChildren(
        h("h1", {}, "Health"),
        h("dl", {class: "facts", id: "health-facts"},
          h("dt", {}, "status"), h("dd", {class: health.status === "ok" ? "ok" : "warning"}, health.status),
          h("dt", {}, "owner"), h("dd", {}, "pid " + owner.pid + ", started by " + owner.started_by + (owner.url ? ", " + owner.url : "")),
          h("dt", {}, "model"), h("dd", {}, stats.model + (health.model_loaded ? " (loaded)" : " (not loaded yet)")),
          h("dt", {}, "memories"), h("dd", {id: "memory-count"}, String(stats.memories)),
          h("dt", {}, "vectors"), h("dd", {}, String(stats.vectors)),
          h("dt", {}, "indexing queue"), h("dd", {}, String(idx.queue_depth ?? 0)),
          h("dt", {}, "last reconcile"), h("dd", {}, stats.last_reconcile || "never"),
          h("dt", {}, "invalid files"), h("dd", {class: stats.invalid_files ? "warning" : ""}, String(stats.invalid_files))),
        h("h2", {}, "Added per day"), chart(stats.added_per_day || {}),
        h("h2", {}, "By type"), table(Object.entries(stats.types).map(([t, n]) => [t, String(n)]), ["type", "memories"]),
        h("h2", {}, "Top tags"), table(Object.entries(stats.tags || {}).map(([t, n]) => [t, String(n)]), ["tag", "memories"]),
        h("h2", {}, "Disk"), table(Object.entries(stats.disk_bytes).map(([k, n]) => [k, bytes(n)]), ["part", "size"]),
        h("h2", {}, "Invalid files"), h("div", {id: "invalid"}, h("p", {class: "muted"}, "checking…")));
      const v = await api("POST", "/validate", {});
      const problems = v.problems || [];
      document.getElementById("invalid").replaceChildren(problems.length
        ? table(problems.map(x => [x.path || "", x.reason || x.message || JSON.stringify(x),
                                   x.last_good ? memoryLink(x.last_good, "last good version") : "—"]), ["file", "what is wrong", "still served"])
        : h("p", {class: "ok"}, "None: every file is valid and the indexes agree with the files."),
        h("p", {class: "muted"}, "An invalid file's last good version stays searchable; `memfs get ID` shows it with a warning."));
    } catch (e) { showError(e); }
  }
  load();
  return {name: "health", refresh: load};
}

// -- backups ---------------------------------------------------------------------------------------

function backupsView() {
  const box = h("section", {class: "backups"});
  main.replaceChildren(box);
  async function load(verify) {
    try {
      const list = await api("GET", "/backups" + (verify ? "?verify=deep" : ""));
      box.replaceChildren(
        h("h1", {}, "Backups"),
        h("div", {class: "actions"},
          h("button", {type: "button", id: "backup-now", onclick: backupNow}, "Back up now"),
          h("button", {type: "button", id: "verify", onclick: () => load(true)}, "Verify (restore-test each archive)")),
        h("p", {class: "muted"}, list.policy),
        table(list.backups.map(b => [b.name, b.created, bytes(b.size), b.status + (b.reason ? ": " + b.reason : ""),
                                     (b.retention || []).join(", "), b.encrypted ? "yes" : "no",
                                     b.encrypted ? "with its key, in the CLI"
                                                 : h("button", {type: "button", class: "verify-one", onclick: () => verifyOne(b.name)}, "verify")]),
              ["name", "created", "size", "status", "kept as", "encrypted", "restore-test"]),
        h("h2", {}, "Restore"),
        h("p", {}, "Restore stays on the command line (it replaces the data; a pre-restore snapshot is kept):"),
        h("pre", {}, "python manage_data.py restore " + (list.backups[0] ? list.backups[0].name : "NAME") + "   # add --yes to skip the question"));
    } catch (e) { showError(e); }
  }
  async function verifyOne(name) {
    // A dry-run restore: the whole archive read and checked as a restore would, nothing written.
    try {
      const r = await api("POST", "/backups/restore", {archive: name, dry_run: true, verify: true});
      toast(name + ": restorable, " + r.memory_count + " memories.");
    } catch (e) { showError(e); }
  }
  async function backupNow() {
    try { const r = await api("POST", "/backups", {}); toast("Backup written: " + (r.name || r.path || "done")); load(false); }
    catch (e) { showError(e); }
  }
  load(false);
  return {name: "backups", refresh: () => {}};
}

// -- sync ------------------------------------------------------------------------------------------

function syncView() {
  const box = h("section", {class: "sync"});
  main.replaceChildren(box);
  async function load() {
    try {
      const [status, inbox] = await Promise.all([api("GET", "/sync/status"), api("GET", "/conflicts")]);
      const when = t => (t ? new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z") : "never");
      const remotes = (status.remotes || []).map(r => [r.remote || "", when(r.last_push), when(r.last_pull), r.last_error || ""]);
      const peers = [];
      for (const r of status.remotes || []) for (const p of r.peers || []) {
        peers.push([(p.replica || "").slice(0, 12), r.remote || "", when(p.last_seen),
                    p.lag_seconds === null || p.lag_seconds === undefined ? "" : Math.round(p.lag_seconds) + " s"]);
      }
      box.replaceChildren(...[h("h1", {}, "Sync"),
        h("dl", {class: "facts"}, h("dt", {}, "this replica"), h("dd", {}, h("code", {}, status.replica || "")),
          h("dt", {}, "pending changes"), h("dd", {}, String(status.pending_changes ?? "")),
          h("dt", {}, "open conflicts"), h("dd", {id: "conflict-count", class: status.conflicts ? "warning" : "ok"}, String(status.conflicts))),
        remotes.length ? table(remotes, ["remote", "last push", "last pull", "last error"])
          : h("p", {class: "muted"}, "This store has not synced yet. `memfs sync DEST` sets it up (docs/sync.md)."),
        peers.length ? h("h2", {}, "Peers seen") : null, peers.length ? table(peers, ["replica", "through", "last seen", "lag"]) : null,
        h("h2", {}, "Conflict inbox"),
        (inbox.conflicts || []).length ? h("div", {}, inbox.conflicts.map(conflictCard))
          : h("p", {class: "ok"}, "No open conflicts.")].filter(Boolean));
    } catch (e) { showError(e); }
  }
  function version(label, v) {
    const doc = (v && v.doc) || {};
    return h("div", {class: "side"}, h("h3", {}, label + (v && v.replica ? " (replica " + v.replica.slice(0, 8) + ")" : "")),
      v && v.deleted ? h("p", {class: "warning"}, "deleted") : h("pre", {}, doc.content || ""), tagList(doc.tags));
  }
  function conflictCard(c) {
    const merged = h("textarea", {rows: 4, class: "merge", "aria-label": "merged content"}, ((c.winner || {}).doc || {}).content || "");
    const resolve = async (keep) => {
      try {
        await api("POST", "/conflicts/" + encodeURIComponent(c.conflict) + "/resolve",
                  keep === "merge" ? {keep, content: merged.value} : {keep});
        toast("Resolved; other replicas follow at their next sync."); load();
      } catch (e) { showError(e); }
    };
    return h("div", {class: "conflict"}, h("p", {}, "memory ", memoryLink(c.memory, c.memory), " · found " + (c.found_at || "")),
      h("div", {class: "sides"}, version("kept (winner)", c.winner), version("other version", c.loser)),
      h("div", {class: "actions"},
        h("button", {type: "button", onclick: () => resolve("winner")}, "Keep the winner"),
        h("button", {type: "button", onclick: () => resolve("loser")}, "Keep the other version")),
      h("details", {}, h("summary", {}, "Write a merge"), merged,
        h("button", {type: "button", onclick: () => resolve("merge")}, "Save the merge")));
  }
  load();
  return {name: "sync", refresh: load};
}

// -- routing and live updates -----------------------------------------------------------------------

const VIEWS = {search: searchView, browse: browseView, memory: memoryView, new: () => editView(true),
               edit: () => editView(false), health: healthView, backups: backupsView, sync: syncView};

function route() {
  const name = params().get("view") || "search";
  for (const a of document.querySelectorAll("nav a")) a.setAttribute("aria-current", a.dataset.view === name ? "page" : "false");
  view = (VIEWS[name] || searchView)();
}

document.addEventListener("click", ev => {
  const a = ev.target.closest("a[data-view]");
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
document.addEventListener("keydown", ev => {
  if (ev.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
    ev.preventDefault();
    if (!document.getElementById("q")) go("/?view=search");
    document.getElementById("q").focus();
  }
});

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource("/events");
  source.addEventListener("revision", ev => {
    live.className = "live on";
    if (revision !== null && ev.data !== revision && view && view.refresh) view.refresh();
    revision = ev.data;
  });
  source.onerror = () => { live.className = "live"; };
}

route();
listen();
