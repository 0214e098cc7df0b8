// pinroute dashboard: polls /dashboard.json once a second and updates the
// page in place. Everything that comes from outside (pod names, Ingress
// names, rejection reasons) is written with textContent, never as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const STATES = ["ready", "draining", "down", "gone"];
  const KIND_WORDS = {
    added: "added",
    draining: "draining",
    ready: "ready again",
    gone: "gone",
    ejected: "ejected",
    readmitted: "re-admitted",
    operator_drain: "drained",
    operator_undrain: "undrained",
    repinned: "clients re-pinned",
    replayed: "requests replayed",
    ingress_rejected: "Ingress rejected",
    reload_applied: "config reloaded",
    reload_refused: "reload refused",
  };
  const SVG = "http://www.w3.org/2000/svg";

  // route prefix -> { section, tbody, rows: Map(id -> row parts) }
  const routes = new Map();
  let readOnly = true;
  let lastEventSeq = -1;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }

  function notice(text) {
    const n = document.getElementById("notice");
    n.textContent = text;
    n.hidden = !text;
  }

  async function post(action, id, prefix) {
    const url = "/admin/" + action + "?backend=" + encodeURIComponent(id) + "&route=" + encodeURIComponent(prefix);
    try {
      // The custom header marks the dashboard's own requests: a page of
      // another site cannot send it without a CORS preflight, never granted.
      const r = await fetch(url, { method: "POST", headers: { "X-Pinroute-Admin": "1" }, credentials: "same-origin" });
      const body = await r.json().catch(() => ({}));
      notice(r.ok ? "" : action + " " + id + ": " + (body.detail || r.status));
    } catch (e) {
      notice(action + " " + id + ": " + e);
    }
    poll();
  }

  function sparkline(svg, values, errors) {
    const n = values.length;
    const max = Math.max(1, ...values);
    const points = (series) =>
      series.map((v, i) => (n > 1 ? (i * 120) / (n - 1) : 0).toFixed(1) + "," + (23 - (v / max) * 22).toFixed(1)).join(" ");
    svg.querySelector(".req").setAttribute("points", points(values));
    svg.querySelector(".err").setAttribute("points", points(errors));
  }

  function newRow(route, backend) {
    const tr = el("tr");
    tr.dataset.backend = backend.id;
    const cells = {};
    const add = (name, className) => {
      const td = el("td", className);
      td.dataset.col = name;
      tr.appendChild(td);
      cells[name] = td;
      return td;
    };
    add("id", "id").textContent = backend.id;
    add("address", "id").textContent = backend.address;
    cells.stateBadge = el("span", "state");
    add("state").appendChild(cells.stateBadge);
    add("in_flight", "num");
    add("streams", "num");
    add("pinned", "num");
    add("request_ids", "num");
    const spark = document.createElementNS(SVG, "svg");
    spark.setAttribute("class", "spark");
    spark.setAttribute("viewBox", "0 0 120 24");
    for (const cls of ["req", "err"]) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", cls);
      spark.appendChild(line);
    }
    const rateCell = add("rate", "num");
    cells.rateText = el("span");
    rateCell.appendChild(spark);
    rateCell.appendChild(document.createTextNode(" "));
    rateCell.appendChild(cells.rateText);
    cells.spark = spark;
    add("errors", "num");
    add("draining_for", "num");
    cells.progressText = el("span", "progress");
    add("progress").appendChild(cells.progressText);
    const actions = add("actions");
    cells.button = el("button");
    cells.button.type = "button";
    cells.button.addEventListener("click", () => post(cells.button.dataset.action, backend.id, route.prefix));
    actions.appendChild(cells.button);
    return { tr, cells };
  }

  function updateRow(row, backend) {
    const c = row.cells;
    const state = STATES.includes(backend.state) ? backend.state : "down";
    c.stateBadge.className = "state state-" + state;
    c.stateBadge.textContent = backend.operator_drained && state === "draining" ? "draining (operator)" : state;
    c.in_flight.textContent = backend.drain.in_flight;
    c.streams.textContent = backend.drain.streams;
    c.pinned.textContent = backend.drain.pinned_clients;
    c.request_ids.textContent = backend.request_ids;
    c.rateText.textContent = backend.requests_per_s.toFixed(1) + "/s";
    sparkline(c.spark, backend.requests, backend.errors);
    c.errors.textContent = (backend.error_rate * 100).toFixed(1) + "%";
    c.draining_for.textContent = duration(backend.draining_for_s);
    if (state === "draining" || (state === "gone" && backend.draining_for_s !== null)) {
      if (backend.drain.empty) {
        c.progressText.className = "progress empty";
        c.progressText.textContent = "empty, safe to delete";
      } else {
        c.progressText.className = "progress busy";
        c.progressText.textContent =
          "holds " + backend.drain.in_flight + " request(s), " + backend.drain.streams + " stream(s), " +
          backend.drain.pinned_clients + " pinned client(s)";
      }
    } else {
      c.progressText.className = "progress";
      c.progressText.textContent = "—";
    }
    const canWrite = !readOnly && backend.drainable && state !== "gone";
    c.button.hidden = !canWrite;
    c.button.dataset.action = backend.operator_drained ? "undrain" : "drain";
    c.button.textContent = backend.operator_drained ? "Undrain" : "Drain";
  }

  function routeSection(route) {
    let r = routes.get(route.prefix + "\u0000" + (route.host || ""));
    if (r) return r;
    const section = el("section", "route");
    section.dataset.route = route.prefix;
    const h2 = el("h2");
    h2.appendChild(document.createTextNode((route.host ? route.host : "") + route.prefix));
    h2.appendChild(el("span", "source", route.source + (route.loaded ? "" : " (not listed yet)")));
    section.appendChild(h2);
    const table = el("table");
    const head = el("tr");
    for (const title of ["Backend", "Address", "State", "In flight", "Streams", "Pinned clients", "Request ids",
      "Requests/s (3 min)", "Errors", "Draining for", "Drain progress", ""]) {
      head.appendChild(el("th", null, title));
    }
    const thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    const tbody = el("tbody");
    table.appendChild(tbody);
    section.appendChild(table);
    document.getElementById("routes").appendChild(section);
    r = { section, tbody, rows: new Map(), seen: true };
    routes.set(route.prefix + "\u0000" + (route.host || ""), r);
    return r;
  }

  function renderRoutes(data) {
    for (const r of routes.values()) r.seen = false;
    for (const route of data.routes) {
      const r = routeSection(route);
      r.seen = true;
      const live = new Set();
      for (const backend of route.backends) {
        live.add(backend.id);
        let row = r.rows.get(backend.id);
        if (!row) {
          row = newRow(route, backend);
          r.rows.set(backend.id, row);
        }
        r.tbody.appendChild(row.tr); // keeps arrival order; moving a node keeps its listeners
        updateRow(row, backend);
      }
      for (const [id, row] of r.rows) {
        if (!live.has(id)) {
          row.tr.remove();
          r.rows.delete(id);
        }
      }
      if (route.backends.length === 0 && !r.tbody.querySelector(".empty-list")) {
        const tr = el("tr");
        const td = el("td", "empty-list", "no backends");
        td.colSpan = 12;
        tr.appendChild(td);
        r.tbody.appendChild(tr);
      } else if (route.backends.length > 0) {
        const placeholder = r.tbody.querySelector(".empty-list");
        if (placeholder) placeholder.parentNode.remove();
      }
    }
    for (const [key, r] of routes) {
      if (!r.seen) {
        r.section.remove();
        routes.delete(key);
      }
    }
  }

  function renderEvents(events) {
    const newest = events.length ? events[0].seq : 0;
    if (newest === lastEventSeq) return;
    lastEventSeq = newest;
    const list = document.getElementById("events");
    list.replaceChildren();
    if (events.length === 0) list.appendChild(el("li", "empty-list", "nothing yet"));
    for (const e of events) {
      const li = el("li");
      li.dataset.kind = e.kind;
      const t = el("time", null, new Date(e.at_ms).toLocaleTimeString());
      t.dateTime = new Date(e.at_ms).toISOString();
      li.appendChild(t);
      li.appendChild(el("span", "kind", KIND_WORDS[e.kind] || e.kind));
      const who = [e.route, e.backend].filter((x) => x).join(" ");
      if (who) li.appendChild(el("span", "who", who));
      li.appendChild(el("span", "detail", e.detail));
      if (e.repeats > 1) li.appendChild(el("span", "repeats", "×" + e.repeats));
      list.appendChild(li);
    }
  }

  async function poll() {
    const live = document.getElementById("live");
    try {
      const r = await fetch("/dashboard.json", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const data = await r.json();
      readOnly = data.read_only;
      document.getElementById("mode").textContent = data.read_only ? "read-only" : "drain/undrain enabled";
      document.getElementById("uptime").textContent = "up " + duration(data.uptime_s);
      renderRoutes(data);
      renderEvents(data.events);
      live.className = "live ok";
      live.textContent = "live";
    } catch (e) {
      live.className = "live lost";
      live.textContent = "connection lost (" + e.message + "), retrying";
    }
  }

  poll();
  setInterval(poll, POLL_MS);
})();
