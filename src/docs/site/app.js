// pipe docs: the list, the lineage graph and the model pages, from window.PIPE_DOCS (written by `pipe docs
// generate`). User text is only ever put in with textContent or attribute setters, never parsed as markup.
(function () {
  "use strict";
  const data = window.PIPE_DOCS || { nodes: [] };
  const nodes = data.nodes;
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const children = new Map(nodes.map((n) => [n.id, []]));
  for (const n of nodes) for (const up of n.depends_on || []) if (children.has(up)) children.get(up).push(n.id);
  // Column lineage downstream: "node\u0000column" -> [[node, column, kind]].
  const readers = new Map();
  for (const n of nodes)
    for (const c of n.columns || [])
      for (const [up, upColumn, kind] of c.sources || []) {
        const key = up + "\u0000" + upColumn;
        if (!readers.has(key)) readers.set(key, []);
        readers.get(key).push([n.id, c.name, kind]);
      }
  const MAX_GRAPH = 400; // nodes drawn at most
  const NEIGHBOURHOOD = 150; // nodes drawn around a focused node whose whole lineage is larger

  // ---- small DOM helper: el("td", {class: "x"}, "text", child) ----
  function el(tag, attrs, ...content) {
    const isSvg = ["svg", "g", "rect", "text", "path", "title", "line"].includes(tag);
    const e = isSvg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "onclick") e.addEventListener("click", v);
      else e.setAttribute(k, String(v));
    }
    for (const c of content) {
      if (c === undefined || c === null) continue;
      e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  const $ = (id) => document.getElementById(id);
  const kindOf = (n) => (n.type === "source" ? "source" : n.type === "seed" ? "seed" : n.layer || "other");
  // One style lookup per kind, not per node drawn or listed.
  const colours = new Map();
  const colour = (n) => {
    const kind = kindOf(n);
    if (!colours.has(kind)) colours.set(kind, getComputedStyle(document.documentElement).getPropertyValue("--" + kind).trim() || "#4a74a8");
    return colours.get(kind);
  };

  // ---- graph walks ----
  function walk(start, next, depth) {
    const seen = new Map([[start, 0]]);
    const queue = [start];
    while (queue.length) {
      const id = queue.shift();
      const d = seen.get(id);
      if (depth !== undefined && d >= depth) continue;
      for (const other of next(id)) if (!seen.has(other)) { seen.set(other, d + 1); queue.push(other); }
    }
    seen.delete(start);
    return [...seen.keys()];
  }
  const parentsOf = (id) => (byId.get(id) ? byId.get(id).depends_on || [] : []).filter((p) => byId.has(p));
  const childrenOf = (id) => children.get(id) || [];
  const ancestors = (id, depth) => walk(id, parentsOf, depth);
  const descendants = (id, depth) => walk(id, childrenOf, depth);

  // ---- the --select grammar (as `pipe ls --select`) ----
  function globRe(pattern) {
    let re = "";
    for (const ch of pattern) re += ch === "*" ? ".*" : ch === "?" ? "." : ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    return new RegExp("^" + re + "$");
  }
  const glob = (pattern, text) => text !== undefined && text !== null && globRe(pattern).test(String(text));
  function matchesMethod(method, value, n) {
    switch (method) {
      case null: return n.type !== "source" && glob(value, n.name);
      case "fqn": return n.type !== "source" && glob(value.split(".").pop(), n.name);
      case "tag": return (n.tags || []).some((t) => glob(value, t));
      case "layer": return n.layer === value;
      case "path": return !!n.path && (glob(value, n.path) || n.path.startsWith(value + "/"));
      case "resource_type": return n.type === value;
      case "source": {
        if (n.type !== "source") return false;
        const [source, table] = n.name.split(".");
        const dot = value.indexOf(".");
        return dot < 0 ? glob(value, source) : glob(value.slice(0, dot), source) && glob(value.slice(dot + 1), table);
      }
      default:
        if (method.startsWith("config.")) {
          const v = (n.config || {})[method.slice(7)];
          if (v === undefined && method === "config.materialized") return glob(value, n.materialized);
          return Array.isArray(v) ? v.some((x) => glob(value, x)) : glob(value, v);
        }
        throw new Error("unknown selector method `" + method + "`");
    }
  }
  function selectAtom(text) {
    let rest = text;
    const at = rest.startsWith("@");
    if (at) rest = rest.slice(1);
    let parents = null, kids = null;
    const pre = rest.match(/^(\d*)\+/);
    if (pre) { parents = pre[1] === "" ? Infinity : Number(pre[1]); rest = rest.slice(pre[0].length); }
    const post = rest.match(/\+(\d*)$/);
    if (post) { kids = post[1] === "" ? Infinity : Number(post[1]); rest = rest.slice(0, rest.length - post[0].length); }
    const colon = rest.indexOf(":");
    const method = colon > 0 ? rest.slice(0, colon) : null;
    const value = colon > 0 ? rest.slice(colon + 1) : rest;
    const base = nodes.filter((n) => matchesMethod(method, value, n)).map((n) => n.id);
    const out = new Set(base);
    const depth = (d) => (d === Infinity ? undefined : d);
    for (const id of base) {
      if (parents !== null) ancestors(id, depth(parents)).forEach((x) => out.add(x));
      if (kids !== null || at) descendants(id, depth(kids === null ? Infinity : kids)).forEach((x) => out.add(x));
    }
    if (at) for (const id of [...out]) ancestors(id).forEach((x) => out.add(x));
    return out;
  }
  function select(expression) {
    const result = new Set();
    for (const term of expression.trim().split(/\s+/).filter(Boolean)) {
      let acc = null;
      for (const atom of term.split(",").filter(Boolean)) {
        const ids = selectAtom(atom);
        acc = acc === null ? ids : new Set([...acc].filter((x) => ids.has(x)));
      }
      for (const id of acc || []) result.add(id);
    }
    return result;
  }

  // ---- layout: layers left to right by longest path, order inside a layer by the parents' mean position ----
  function layout(ids) {
    const set = new Set(ids);
    const rank = new Map();
    const rankOf = (id, stack) => {
      if (rank.has(id)) return rank.get(id);
      if (stack.has(id)) return 0;
      stack.add(id);
      let r = 0;
      for (const p of parentsOf(id)) if (set.has(p)) r = Math.max(r, rankOf(p, stack) + 1);
      stack.delete(id);
      rank.set(id, r);
      return r;
    };
    ids.forEach((id) => rankOf(id, new Set()));
    const columns = [];
    for (const id of ids) (columns[rank.get(id)] = columns[rank.get(id)] || []).push(id);
    columns.forEach((c) => c.sort((a, b) => byId.get(a).name.localeCompare(byId.get(b).name)));
    const pos = new Map();
    const place = () => columns.forEach((c) => c.forEach((id, i) => pos.set(id, i)));
    place();
    for (let sweep = 0; sweep < 4; sweep++) {
      for (const c of columns) {
        if (!c) continue;
        const score = (id) => {
          const near = (sweep % 2 === 0 ? parentsOf(id) : childrenOf(id)).filter((x) => set.has(x));
          return near.length ? near.reduce((s, x) => s + pos.get(x), 0) / near.length : pos.get(id);
        };
        const scores = new Map(c.map((id) => [id, score(id)]));
        c.sort((a, b) => scores.get(a) - scores.get(b));
        c.forEach((id, i) => pos.set(id, i));
      }
    }
    const W = 190, H = 30, GX = 70, GY = 14;
    const tallest = Math.max(...columns.map((c) => (c ? c.length : 0)));
    const xy = new Map();
    columns.forEach((c, r) => {
      if (!c) return;
      const offset = ((tallest - c.length) * (H + GY)) / 2;
      c.forEach((id, i) => xy.set(id, { x: r * (W + GX), y: offset + i * (H + GY), w: W, h: H }));
    });
    return xy;
  }

  // ---- the graph: shows a set of nodes; zoom with the wheel, pan by dragging ----
  const view = { x: 20, y: 40, k: 1 };
  let shown = [];
  function applyView() { $("viewport").setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`); }
  function drawGraph(ids, info) {
    const all = ids.length;
    if (ids.length > MAX_GRAPH) ids = ids.slice(0, MAX_GRAPH);
    shown = ids;
    const vp = $("viewport");
    vp.replaceChildren();
    const xy = layout(ids);
    const set = new Set(ids);
    for (const id of ids)
      for (const p of parentsOf(id)) {
        if (!set.has(p)) continue;
        const a = xy.get(p), b = xy.get(id);
        const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2, mx = (x1 + x2) / 2;
        vp.append(el("path", { class: "edge", "data-from": p, "data-to": id, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
      }
    for (const id of ids) {
      const n = byId.get(id), p = xy.get(id);
      const label = n.name.length > 26 ? n.name.slice(0, 25) + "…" : n.name;
      const g = el("g", { class: "node", "data-id": id, transform: `translate(${p.x},${p.y})` },
        el("title", {}, n.type + " " + n.name),
        el("rect", { width: p.w, height: p.h, fill: colour(n) }),
        el("text", { x: 9, y: 19 }, label));
      g.addEventListener("click", (e) => { e.stopPropagation(); focus(id); });
      vp.append(g);
    }
    $("graph-info").textContent = (info || "") + (all > ids.length ? ` (showing ${ids.length} of ${all})` : "");
    fit(xy);
  }
  function fit(xy) {
    const svg = $("graph").getBoundingClientRect();
    let maxX = 0, maxY = 0;
    for (const p of xy.values()) { maxX = Math.max(maxX, p.x + p.w); maxY = Math.max(maxY, p.y + p.h); }
    const k = Math.min(1.2, (svg.width - 40) / Math.max(maxX, 1), (svg.height - 60) / Math.max(maxY, 1));
    view.k = Math.max(0.1, k);
    view.x = (svg.width - maxX * view.k) / 2;
    view.y = 34 + (svg.height - 40 - maxY * view.k) / 2;
    applyView();
  }
  (function interact() {
    const svg = $("graph");
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      const mx = e.clientX - r.left, my = e.clientY - r.top;
      const k = Math.min(4, Math.max(0.05, view.k * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
      view.x = mx - ((mx - view.x) * k) / view.k;
      view.y = my - ((my - view.y) * k) / view.k;
      view.k = k;
      applyView();
    }, { passive: false });
    let drag = null;
    svg.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y }; });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) svg.classList.add("dragging");
      view.x = drag.vx + e.clientX - drag.x;
      view.y = drag.vy + e.clientY - drag.y;
      applyView();
    });
    window.addEventListener("mouseup", () => { drag = null; svg.classList.remove("dragging"); });
  })();

  // ---- focus: a node with its upstream and downstream ----
  let current = null;
  function focus(id, fromHash) {
    const n = byId.get(id);
    if (!n) return;
    current = id;
    const up = ancestors(id), down = descendants(id);
    if (1 + up.length + down.length <= NEIGHBOURHOOD) {
      drawGraph([id, ...up, ...down], `${n.name}: ${up.length} upstream, ${down.length} downstream`);
    } else {
      // Too many to draw: the neighbourhood, as many steps out as fit.
      let depth = 1, near = [...ancestors(id, 1), ...descendants(id, 1)];
      for (let d = 2; d < 1000; d++) {
        const wider = [...ancestors(id, d), ...descendants(id, d)];
        if (wider.length + 1 > NEIGHBOURHOOD || wider.length === near.length) break;
        depth = d;
        near = wider;
      }
      drawGraph([id, ...near], `${n.name}: ${up.length} upstream, ${down.length} downstream; showing ${depth} step(s) around it`);
    }
    markFocus();
    renderPage(n);
    document.querySelectorAll("#list button").forEach((b) => b.classList.toggle("current", b.dataset.id === id));
    if (!fromHash) history.replaceState(null, "", "#node=" + encodeURIComponent(id));
  }
  function markFocus() {
    document.querySelectorAll("#viewport .node").forEach((g) => g.classList.toggle("focus", g.dataset.id === current));
  }

  // ---- the list, grouped by layer, filtered by the search box ----
  function renderList() {
    const groups = [["Sources", (n) => n.type === "source"], ["Seeds", (n) => n.type === "seed"],
      ["Bronze", (n) => n.type === "model" && n.layer === "bronze"], ["Silver", (n) => n.type === "model" && n.layer === "silver"],
      ["Gold", (n) => n.type === "model" && n.layer === "gold"], ["Other models", (n) => n.type === "model" && !n.layer]];
    const q = $("search").value.trim().toLowerCase();
    const hit = (n) => !q || [n.name, n.relation, n.description].some((t) => t && t.toLowerCase().includes(q));
    const list = $("list");
    list.replaceChildren();
    let count = 0;
    for (const [title, inGroup] of groups) {
      const members = nodes.filter((n) => inGroup(n) && hit(n)).sort((a, b) => a.name.localeCompare(b.name));
      if (!members.length) continue;
      list.append(el("h3", {}, `${title} (${members.length})`));
      for (const n of members.slice(0, 500)) {
        const b = el("button", { "data-id": n.id, title: n.relation }, el("span", { class: "dot", style: "background:" + colour(n) }), n.name);
        b.addEventListener("click", () => focus(n.id));
        if (n.id === current) b.classList.add("current");
        list.append(b);
        count++;
      }
      if (members.length > 500) list.append(el("div", { class: "muted", style: "padding:2px 20px" }, `… ${members.length - 500} more: refine the search`));
    }
    if (!count) list.append(el("div", { class: "muted", style: "padding:8px 12px" }, "Nothing matches."));
  }

  // ---- the model page ----
  function nodeLink(id, column) {
    const n = byId.get(id);
    const text = (n ? n.name : id) + (column ? "." + column : "");
    return el("a", { class: "node-link", "data-id": id, onclick: () => focus(id) }, text);
  }
  function columnChain(start, next) {
    // [[depth, node, column, kind]] breadth first, each column once.
    const out = [], seen = new Set([start.join("\u0000")]), queue = [[start, 0]];
    while (queue.length) {
      const [[id, column], d] = queue.shift();
      for (const [nid, ncol, kind] of next(id, column)) {
        const key = nid + "\u0000" + ncol;
        if (seen.has(key)) continue;
        seen.add(key);
        out.push([d + 1, nid, ncol, kind]);
        queue.push([[nid, ncol], d + 1]);
      }
    }
    return out;
  }
  const columnSources = (id, column) => {
    const n = byId.get(id);
    const c = n && (n.columns || []).find((x) => x.name === column);
    return c ? c.sources || [] : [];
  };
  const columnReaders = (id, column) => readers.get(id + "\u0000" + column) || [];
  function showColumn(n, column) {
    document.querySelectorAll("#columns tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.column === column));
    const from = columnChain([n.id, column], columnSources);
    const to = columnChain([n.id, column], columnReaders);
    const list = (items, arrow) => items.length
      ? el("ul", { class: "lineage-list" }, ...items.map(([d, id, col, kind]) => el("li", { style: `margin-left:${(d - 1) * 14}px` }, arrow + " ", nodeLink(id, col), " ", el("span", { class: "muted" }, "(" + kind + ")"))))
      : el("p", { class: "muted" }, "nothing");
    $("column-lineage").replaceChildren(
      el("h3", {}, "Column ", el("code", {}, column)),
      el("h4", {}, "Comes from"), list(from, "←"),
      el("h4", {}, "Goes to"), list(to, "→"));
    const hit = new Set([n.id, ...from.map((x) => x[1]), ...to.map((x) => x[1])]);
    // Ephemeral models are inlined into their readers, so column lineage passes through them unnamed: one between
    // two marked models is marked too.
    for (const id of shown) {
      const m = byId.get(id);
      if (m.materialized === "ephemeral" && parentsOf(id).some((p) => hit.has(p)) && childrenOf(id).some((c) => hit.has(c))) hit.add(id);
    }
    document.querySelectorAll("#viewport .node").forEach((g) => {
      g.classList.toggle("column-hit", hit.has(g.dataset.id));
      g.classList.toggle("dim", !hit.has(g.dataset.id));
    });
    document.querySelectorAll("#viewport .edge").forEach((p) => p.classList.toggle("hot", hit.has(p.dataset.from) && hit.has(p.dataset.to)));
  }
  function sparkline(runs) {
    const values = runs.slice().reverse().map((r) => r.rows || 0);
    const max = Math.max(1, ...values), w = 6, h = 40;
    const svg = el("svg", { width: values.length * w + 2, height: h + 2, class: "sparkline", role: "img", "aria-label": "rows written per run" });
    values.forEach((v, i) => svg.append(el("rect", { x: 1 + i * w, y: 1 + h - (v / max) * h, width: w - 1, height: Math.max(1, (v / max) * h), fill: "#3d7bd9" }, el("title", {}, String(v)))));
    return svg;
  }
  function renderPage(n) {
    const page = $("page");
    const badges = el("div", { class: "badges" }, el("span", {}, n.type), n.layer ? el("span", { class: "layer-" + n.layer }, n.layer) : null,
      n.materialized ? el("span", {}, n.materialized) : null, el("span", {}, n.relation));
    const parts = [el("h2", { id: "page-title" }, n.name), badges,
      el("p", { id: "description" }, n.description || ""), n.path ? el("p", { class: "muted" }, n.path) : null];
    if (data.warehouse) {
      const runs = n.runs || [];
      const last = runs[0];
      const facts = el("table", { id: "run-facts" },
        el("tr", {}, el("th", {}, "Last run"), el("td", {}, last ? el("span", { class: "status-" + last.status }, last.status) : "never", last ? " at " + last.at : "")),
        el("tr", {}, el("th", {}, "Rows written"), el("td", { id: "rows-written" }, last && last.rows !== null ? String(last.rows) : "-")),
        el("tr", {}, el("th", {}, "Rows read"), el("td", { id: "rows-accounting" }, last && last.rows_read !== null && last.rows_read !== undefined
          ? `${last.rows_read} read, ${last.rows_filtered} filtered, ${last.rows_deduplicated} deduplicated` : "-")),
        el("tr", {}, el("th", {}, "Duration"), el("td", {}, last ? last.seconds.toFixed(2) + " s" : "-")),
        el("tr", {}, el("th", {}, "Delta version"), el("td", {}, n.delta ? `v${n.delta.version} (committed ${n.delta.committed_at})` : "-")),
        el("tr", {}, el("th", {}, "Freshness"), el("td", {}, n.freshness ? el("span", { class: "status-" + n.freshness.status }, n.freshness.status + " — " + n.freshness.detail) : "-")));
      parts.push(el("h3", {}, "Runs"), facts);
      if (runs.length > 1) parts.push(el("div", {}, el("span", { class: "muted" }, `Rows written, last ${runs.length} runs: `), sparkline(runs)));
    }
    const testsBy = new Map();
    for (const t of n.tests || []) { const k = t.column || ""; if (!testsBy.has(k)) testsBy.set(k, []); testsBy.get(k).push(t); }
    const chip = (t) => el("span", { class: "chip" + (t.status ? " status-" + t.status : ""), title: t.name + (t.status ? ": " + t.status : "") }, t.test + (t.status ? " " + t.status : ""));
    const columns = el("table", { id: "columns" }, el("tr", {}, el("th", {}, "Column"), el("th", {}, "Type"), el("th", {}, "Description"), el("th", {}, "Tests"), el("th", {}, "From")));
    for (const c of n.columns || []) {
      const name = el("td", { class: "col-name" }, c.name);
      name.addEventListener("click", () => showColumn(n, c.name));
      columns.append(el("tr", { "data-column": c.name }, name, el("td", {}, c.type || ""), el("td", {}, c.description || ""),
        el("td", {}, ...(testsBy.get(c.name) || []).map(chip)),
        el("td", {}, ...(c.sources || []).map(([id, col, kind]) => el("div", {}, nodeLink(id, col), el("span", { class: "muted" }, " " + kind))))));
    }
    parts.push(el("h3", {}, "Columns"), columns, el("div", { id: "column-lineage" }, el("p", { class: "muted" }, "Click a column to see where it comes from and where it goes.")));
    const modelTests = testsBy.get("") || [];
    if (modelTests.length) parts.push(el("h3", {}, "Model tests"), el("div", {}, ...modelTests.map(chip)));
    if ((n.row_deciders || []).length) parts.push(el("h3", {}, "Rows kept by (filters and joins on)"), el("div", {}, ...n.row_deciders.map(([id, col]) => el("span", { class: "chip" }, nodeLink(id, col)))));
    const ups = parentsOf(n.id), downs = childrenOf(n.id);
    parts.push(el("h3", {}, "Depends on"), ups.length ? el("div", {}, ...ups.map((id) => el("span", { class: "chip" }, nodeLink(id)))) : el("p", { class: "muted" }, "nothing"));
    parts.push(el("h3", {}, "Referenced by"), downs.length ? el("div", {}, ...downs.map((id) => el("span", { class: "chip" }, nodeLink(id)))) : el("p", { class: "muted" }, "nothing"));
    if (n.config && Object.keys(n.config).length) parts.push(el("h3", {}, "Config"), el("pre", { id: "config" }, JSON.stringify(n.config, null, 2)));
    if (n.raw_sql) parts.push(el("h3", {}, "SQL"), el("pre", { id: "raw-sql" }, n.raw_sql));
    if (n.compiled_sql) parts.push(el("h3", {}, "Compiled SQL"), el("pre", { id: "compiled-sql" }, n.compiled_sql));
    page.replaceChildren(...parts.filter(Boolean));
    page.scrollTop = 0;
  }

  // ---- wiring ----
  $("title").textContent = "pipe docs · " + (data.project || "");
  $("generated").textContent = "generated " + (data.generated_at || "") + " · " + nodes.length + " nodes";
  $("search").addEventListener("input", renderList);
  $("select-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const expression = $("select").value;
    try {
      const ids = [...select(expression)];
      drawGraph(ids, `--select ${expression}: ${ids.length} nodes`);
      markFocus();
    } catch (err) {
      $("graph-info").textContent = String(err.message || err);
    }
  });
  renderList();
  const fromHash = () => {
    const m = location.hash.match(/^#node=(.+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  };
  window.addEventListener("hashchange", () => { const id = fromHash(); if (id) focus(id, true); });
  const start = fromHash();
  if (start && byId.has(start)) focus(start, true);
  else if (nodes.length <= MAX_GRAPH) drawGraph(nodes.map((n) => n.id), `${nodes.length} nodes`);
  else {
    // Too many to draw at once: the gold layer, or, without one, the models nothing reads (the project's outputs).
    const gold = nodes.filter((n) => n.layer === "gold").map((n) => n.id);
    const outputs = nodes.filter((n) => n.type === "model" && !childrenOf(n.id).length).map((n) => n.id);
    const [first, what] = gold.length ? [gold, "the gold layer"] : [outputs, "the models nothing reads"];
    drawGraph(first, `${nodes.length} nodes: showing ${what}; click a node or type a selection`);
  }
  if (!start) $("page").replaceChildren(el("h2", {}, data.project || "pipe"), el("p", {}, `${nodes.length} models, seeds and sources. Pick one in the list or the graph.`));
  window.PIPE_SELECT = select; // for the browser test: the same grammar as `pipe ls --select`
})();
