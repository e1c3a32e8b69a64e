// idepool dashboard: live updates over SSE, actions over fetch. No
// dependencies; everything is built with DOM APIs (never innerHTML), so
// nothing from the server is ever parsed as markup.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var SVG = "http://www.w3.org/2000/svg";
  var MAX_LOG = 200;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function flash(msg, bad) {
    var f = document.getElementById("flash");
    f.textContent = msg;
    f.className = bad ? "bad" : "";
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(function () { f.hidden = true; }, 6000);
  }

  // keyed updates rows of tbody in place (so a half-typed target or a
  // focused button survives a refresh), creating and removing as needed.
  function keyed(tbody, items, key, create, update) {
    var rows = {};
    Array.prototype.forEach.call(tbody.rows, function (r) { rows[r.dataset.key] = r; });
    var prev = null;
    items.forEach(function (it) {
      var k = key(it);
      var r = rows[k];
      if (!r) { r = create(it); r.dataset.key = k; }
      delete rows[k];
      update(r, it);
      var want = prev ? prev.nextSibling : tbody.firstChild;
      if (r !== want) tbody.insertBefore(r, want);
      prev = r;
    });
    Object.keys(rows).forEach(function (k) { rows[k].remove(); });
  }

  function actionForm(action, cls, fields) {
    var f = el("form", "action " + cls);
    f.method = "post";
    f.action = action;
    var h = el("input");
    h.type = "hidden"; h.name = "csrf"; h.value = csrf;
    f.appendChild(h);
    fields.forEach(function (x) { f.appendChild(x); });
    return f;
  }

  function cells(r, names) {
    names.forEach(function (n) { r.appendChild(el("td", n)); });
  }

  function setText(r, cls, v) {
    var c = r.querySelector("td." + cls);
    var s = String(v);
    if (c.textContent !== s) c.textContent = s;
  }

  function renderPools(pools) {
    keyed(document.querySelector("#pools tbody"), pools, function (p) { return p.profile; }, function (p) {
      var r = el("tr");
      cells(r, ["profile", "target", "warm", "starting", "claimed", "failed", "chart"]);
      var svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 360 48");
      svg.setAttribute("preserveAspectRatio", "none");
      ["target", "warm", "starting", "claimed"].forEach(function (s) {
        var pl = document.createElementNS(SVG, "polyline");
        pl.setAttribute("class", "s-" + s);
        svg.appendChild(pl);
      });
      r.querySelector("td.chart").appendChild(svg);
      var n = el("input");
      n.type = "number"; n.name = "target"; n.min = "0"; n.max = "1000"; n.value = p.target;
      var td = el("td");
      td.appendChild(actionForm("/dashboard/pools/" + encodeURIComponent(p.profile) + "/target", "target-form", [n, el("button", "", "Set")]));
      r.appendChild(td);
      return r;
    }, function (r, p) {
      ["profile", "target", "warm", "starting", "claimed", "failed"].forEach(function (k) { setText(r, k, p[k]); });
      var lines = r.querySelectorAll("td.chart polyline");
      ["target", "warm", "starting", "claimed"].forEach(function (s, i) { lines[i].setAttribute("points", p.chart[s] || ""); });
      var input = r.querySelector("input[name=target]");
      if (document.activeElement !== input && !input.dataset.dirty) input.value = p.target;
    });
  }

  var stateGroups = {
    claimed: ["syncing", "running"], warm: ["warm"], starting: ["creating", "starting"],
    stopping: ["stopping", "stopped"], failed: ["failed"]
  };

  function applyFilter() {
    var st = document.getElementById("filter-state").value;
    var q = document.getElementById("search").value.trim().toLowerCase();
    Array.prototype.forEach.call(document.querySelector("#containers tbody").rows, function (r) {
      var ok = !st || (stateGroups[st] || []).indexOf(r.dataset.state) >= 0;
      if (ok && q) ok = r.textContent.toLowerCase().indexOf(q) >= 0;
      r.hidden = !ok;
    });
  }

  function renderContainers(cs, total) {
    keyed(document.querySelector("#containers tbody"), cs, function (c) { return c.id; }, function (c) {
      var r = el("tr");
      cells(r, ["id", "profile", "state", "workspace", "user", "age", "activity", "health"]);
      r.querySelector("td.state").appendChild(el("span", "badge"));
      var td = el("td");
      td.appendChild(actionForm("/dashboard/containers/" + encodeURIComponent(c.id) + "/stop", "stop-form", [el("button", "stop", "Stop")]));
      r.appendChild(td);
      return r;
    }, function (r, c) {
      setText(r, "id", c.id); setText(r, "profile", c.profile); setText(r, "workspace", c.workspace);
      setText(r, "user", c.user); setText(r, "age", c.age); setText(r, "activity", c.lastActivity); setText(r, "health", c.health);
      var b = r.querySelector("td.state .badge");
      b.textContent = c.state; b.className = "badge st-" + c.state;
      r.dataset.state = c.state;
      r.title = c.message || "";
    });
    document.getElementById("count").textContent = cs.length + " of " + total;
    applyFilter();
  }

  function bytes(n) {
    if (!n) return "-";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }

  function renderResources(rs) {
    keyed(document.querySelector("#resources tbody"), rs, function (x) { return x.name; }, function () {
      var r = el("tr");
      cells(r, ["name", "role", "rstate", "cpu", "mem", "disk", "count"]);
      return r;
    }, function (r, x) {
      setText(r, "name", x.name); setText(r, "role", x.role || ""); setText(r, "rstate", x.state || "");
      setText(r, "cpu", x.cpuCores ? (x.cpuPercent || 0).toFixed(0) + "% of " + x.cpuCores + " cores" : "-");
      setText(r, "mem", bytes(x.memoryUsed) + " / " + bytes(x.memoryTotal));
      setText(r, "disk", bytes(x.diskUsed) + " / " + bytes(x.diskTotal));
      setText(r, "count", x.containers || "-");
    });
    document.getElementById("no-resources").hidden = rs.length > 0;
  }

  function render(s) {
    renderPools(s.pools);
    renderContainers(s.containers, s.total);
    renderResources(s.resources);
    var le = document.getElementById("list-error");
    le.textContent = s.error || "";
    le.hidden = !s.error;
    document.getElementById("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString();
  }

  var warnTypes = { "container.create-failed": 1, "sync.error": 1, "sync.conflict": 1, "claim.refused": 1 };

  function logEvent(e) {
    var log = document.getElementById("log");
    var li = el("li", warnTypes[e.type] ? "warn" : "");
    li.appendChild(el("span", "t", new Date(e.time).toLocaleTimeString()));
    li.appendChild(el("span", "ty", e.type));
    var rest = [e.containerId, e.profile, e.state, e.reason, e.message].filter(Boolean).join("  ");
    li.appendChild(document.createTextNode(rest));
    li.dataset.id = e.id;
    log.insertBefore(li, log.firstChild);
    while (log.children.length > MAX_LOG) log.lastChild.remove();
    document.getElementById("no-events").hidden = true;
  }

  function connect() {
    var conn = document.getElementById("conn");
    var after = document.body.dataset.after;
    var es = new EventSource("/dashboard/stream" + (after && after !== "0" ? "?after=" + encodeURIComponent(after) : ""));
    es.addEventListener("open", function () { conn.textContent = "live"; conn.className = "conn live"; });
    es.addEventListener("snapshot", function (m) { render(JSON.parse(m.data)); });
    es.addEventListener("log", function (m) { logEvent(JSON.parse(m.data)); });
    es.addEventListener("signout", function () { es.close(); location.assign("/dashboard/login"); });
    es.addEventListener("error", function () {
      conn.textContent = "reconnecting…"; conn.className = "conn down";
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream: most likely the session ended.
        fetch("/dashboard/state", { headers: { Accept: "application/json" } }).then(function (r) {
          if (r.status === 401) location.assign("/dashboard/login");
          else setTimeout(connect, 3000);
        }, function () { setTimeout(connect, 3000); });
      }
    });
  }

  // Actions: posted with fetch so the page stays; a plain form post (no
  // script) works too and comes back to the page.
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (!f.classList.contains("action")) return;
    ev.preventDefault();
    var btn = f.querySelector("button");
    var label = btn.textContent;
    btn.disabled = true;
    if (f.classList.contains("stop-form")) btn.textContent = "Stopping…";
    fetch(f.action, {
      method: "POST", body: new URLSearchParams(new FormData(f)), credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
    }).then(function (r) {
      return r.json().then(function (b) { return { ok: r.ok, status: r.status, body: b }; });
    }).then(function (res) {
      if (res.status === 401) { location.assign("/dashboard/login"); return; }
      flash(res.ok ? res.body.message : res.body.error, !res.ok);
      var n = f.querySelector("input[name=target]");
      if (n) delete n.dataset.dirty;
    }, function (err) {
      flash("request failed: " + err, true);
    }).then(function () { btn.disabled = false; btn.textContent = label; });
  });
  document.addEventListener("input", function (ev) {
    if (ev.target.name === "target") ev.target.dataset.dirty = "1";
  });
  document.getElementById("filter-state").addEventListener("change", applyFilter);
  document.getElementById("search").addEventListener("input", applyFilter);
  connect();
})();
