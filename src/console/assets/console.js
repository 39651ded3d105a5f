// The callbridge console. Vanilla JS, no framework. Every value from the bridge is put into the
// page with textContent (or an attribute set through setAttribute): never as HTML.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var csrf = null;
  var pollTimer = null;

  function $(id) { return document.getElementById(id); }

  // An element with attributes and children (strings become text nodes).
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (attrs[k] !== null && attrs[k] !== undefined) { e.setAttribute(k, String(attrs[k])); }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) { continue; }
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function say(id, text) { $(id).textContent = text; }

  function time(ms) {
    if (!ms) { return "—"; }
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function num(v, digits) {
    if (v === null || v === undefined) { return "—"; }
    return typeof v === "number" && digits !== undefined ? v.toFixed(digits) : String(v);
  }

  function api(path, options) {
    var opts = { credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (options && options.method) {
      opts.method = options.method;
      if (csrf) { opts.headers["X-CSRF-Token"] = csrf; }
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.status === 401) { document.body.className = "signed-out"; }
        if (!r.ok) {
          var err = new Error(body && body.error ? body.error : ("HTTP " + r.status));
          err.status = r.status;
          throw err;
        }
        return body;
      });
    });
  }

  // ---- pages ----
  var pages = ["overview", "find", "dead"];
  function show() {
    var name = (location.hash || "#overview").slice(1);
    if (pages.indexOf(name) < 0) { name = "overview"; }
    pages.forEach(function (p) {
      $("page-" + p).hidden = p !== name;
      var link = $("nav-" + p);
      if (p === name) { link.setAttribute("aria-current", "page"); } else { link.removeAttribute("aria-current"); }
    });
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    if (name === "overview") { overview(); pollTimer = setInterval(overview, 2000); }
    if (name === "dead") { listDead(); }
  }

  // ---- overview ----
  function chart(points, sink, key, cls, label) {
    var w = 300, h = 50;
    var values = points.map(function (p) { var s = p.sinks[sink]; return s && s[key] ? s[key] : 0; });
    var max = Math.max.apply(null, values.concat([1e-9]));
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label + ", last 15 minutes, peak " + max.toFixed(2));
    var line = document.createElementNS(SVG, "polyline");
    var n = Math.max(values.length - 1, 1);
    line.setAttribute("points", values.map(function (v, i) {
      return (i * w / n).toFixed(1) + "," + (h - 2 - v / max * (h - 4)).toFixed(1);
    }).join(" "));
    if (cls) { line.setAttribute("class", cls); }
    svg.appendChild(line);
    return svg;
  }

  function figure(dl, name, label, value) {
    dl.appendChild(el("dt", null, label));
    dl.appendChild(el("dd", { "data-field": name }, value));
  }

  function card(s, history) {
    var ready = s.ready === false ? "not ready" : "ready";
    var badge = el("span", { "class": "badge" + (s.ready === false ? " bad" : (s.connected === false ? " warn" : "")), "data-field": "ready" }, ready);
    var dl = el("dl", { "class": "figures" });
    figure(dl, "reason", "why", s.reason + (s.detail ? " (" + s.detail + ")" : ""));
    figure(dl, "kind", "kind", s.kind + (s.required ? ", required" : ", optional"));
    figure(dl, "events_per_sec", "events/s", num(s.events_per_sec, 2));
    figure(dl, "latency", "p50 / p99", num(s.p50_ms, 1) + " / " + num(s.p99_ms, 1) + " ms");
    figure(dl, "acked", "acked", num(s.acked));
    figure(dl, "spooled", "spooled", num(s.spooled));
    figure(dl, "failed", "failed", num(s.failed));
    figure(dl, "duplicate", "duplicate", num(s.duplicate));
    figure(dl, "spool_depth", "spool depth", num(s.spool_depth) + (s.spool_oldest_age_secs ? ", oldest " + num(s.spool_oldest_age_secs, 0) + " s" : ""));
    figure(dl, "dead_letters", "dead letters", num(s.dead_letters));
    var a = s.audit;
    figure(dl, "audit", "audit (15 min)", a ? (a.verified + " verified, " + a.missing + " missing, " + a.unverifiable + " unverifiable, " + a.unaudited + " unaudited") : "—");
    return el("article", { "class": "card", "data-sink": s.name },
      el("h3", null, el("span", null, s.name), badge),
      dl,
      el("p", { "class": "chart-label" }, "events/s (blue), failed/s (red)"),
      chart(history, s.name, "events_per_sec", null, "events per second"),
      el("p", { "class": "chart-label" }, "spool depth"),
      chart(history, s.name, "spool_depth", "failed", "spool depth"));
  }

  function overview() {
    return api("/console/api/overview").then(function (o) {
      var box = $("sinks");
      clear(box);
      o.sinks.forEach(function (s) { box.appendChild(card(s, o.history.points)); });
      say("overview-status", (o.ready ? "Ready" : "Not ready") + " · updated " + time(o.at_ms));
    }).catch(function (e) { say("overview-status", "Could not load: " + e.message); });
  }

  // ---- find ----
  function receiptList(receipt) {
    if (!receipt) { return "—"; }
    var dl = el("dl", { "class": "figures receipt" });
    Object.keys(receipt).forEach(function (k) { figure(dl, k, k, String(receipt[k])); });
    return dl;
  }

  function record(r) {
    var attempts = el("tbody");
    r.attempts.forEach(function (a) {
      attempts.appendChild(el("tr", null, el("td", null, time(a.at_ms)), el("td", null, String(a.http_status)), el("td", null, a.answer)));
    });
    var sinks = el("tbody");
    r.sinks.forEach(function (s) {
      sinks.appendChild(el("tr", { "data-sink": s.sink },
        el("td", null, s.sink),
        el("td", { "data-field": "outcome" }, s.outcome),
        el("td", null, receiptList(s.receipt)),
        el("td", { "data-field": "audit" }, s.audit ? s.audit.verdict + (s.audit.detail ? ": " + s.audit.detail : "") : "not audited"),
        el("td", { "data-field": "error" }, s.error || "")));
    });
    var attrs = el("dl", { "class": "figures" });
    figure(attrs, "id", "id", r.event_id);
    figure(attrs, "subject", "subject (call id)", r.call_id);
    figure(attrs, "kind", "kind", r.kind);
    figure(attrs, "status", "status", r.status || "—");
    figure(attrs, "origin", "origin", r.origin || "webhook");
    figure(attrs, "received", "received", time(r.received_at_ms));
    return el("article", { "class": "record", "data-event": r.event_id },
      el("h3", null, r.kind + " · " + (r.status || "") + " · " + r.event_id),
      attrs,
      el("table", null, el("caption", null, "Webhooks received"),
        el("thead", null, el("tr", null, el("th", { scope: "col" }, "At"), el("th", { scope: "col" }, "Status"), el("th", { scope: "col" }, "Answer"))),
        attempts),
      el("table", null, el("caption", null, "Per sink"),
        el("thead", null, el("tr", null, el("th", { scope: "col" }, "Sink"), el("th", { scope: "col" }, "Outcome"), el("th", { scope: "col" }, "Receipt"), el("th", { scope: "col" }, "Audit"), el("th", { scope: "col" }, "Error"))),
        sinks));
  }

  function find(ev) {
    ev.preventDefault();
    var q = $("find-q").value.trim();
    var out = $("find-result");
    clear(out);
    say("find-status", "Searching…");
    api("/console/api/find?q=" + encodeURIComponent(q)).then(function (f) {
      if (!f.records.length) { say("find-status", "Nothing found for " + q + " in the delivery index."); return; }
      say("find-status", f.records.length + " event(s) found by " + f.matched + (f.more ? " (more not shown)" : ""));
      f.records.forEach(function (r) { out.appendChild(record(r)); });
    }).catch(function (e) { say("find-status", "Could not search: " + e.message); });
  }

  // ---- dead letters ----
  function filterQuery() {
    var p = new URLSearchParams();
    ["sink", "reason", "since", "until"].forEach(function (k) {
      var v = $("dead-" + k).value.trim();
      if (v) { p.set(k, v); }
    });
    return p;
  }

  function describe(p) {
    var parts = [];
    p.forEach(function (v, k) { parts.push(k + " = " + v); });
    return parts.length ? parts.join(", ") : "no filter: every dead letter";
  }

  function detail(d) {
    var box = $("dead-detail");
    clear(box);
    api("/console/api/dead/entry?sink=" + encodeURIComponent(d.sink) + "&seq=" + d.seq).then(function (e) {
      box.appendChild(el("h3", null, "Dead letter " + d.sink + ":" + d.seq));
      box.appendChild(el("p", null, "Reason: ", el("span", { "data-field": "reason" }, e.dead_letter.reason)));
      box.appendChild(el("p", { "class": "hint" }, e.redacted ? "Personal data is redacted (log.redact_pii)." : "Shown verbatim (log.redact_pii is off)."));
      box.appendChild(el("pre", { "data-field": "event" }, JSON.stringify(e.event, null, 2)));
    }).catch(function (e) { box.appendChild(el("p", { "class": "error" }, e.message)); });
  }

  function listDead(ev) {
    if (ev) { ev.preventDefault(); }
    var rows = $("dead-rows");
    $("confirm").hidden = true;
    return api("/console/api/dead?" + filterQuery().toString()).then(function (page) {
      clear(rows);
      page.dead_letters.forEach(function (d) {
        var view = el("button", { type: "button", "class": "secondary" }, "View");
        view.addEventListener("click", function () { detail(d); });
        rows.appendChild(el("tr", { "data-event": d.event_id },
          el("td", null, d.sink), el("td", null, String(d.seq)), el("td", null, time(d.dead_at_ms)),
          el("td", null, d.reason), el("td", null, d.call_id), el("td", null, d.event_id), el("td", null, view)));
      });
      say("dead-status", page.dead_letters.length + " dead letter(s) listed" + (page.next ? " (more: narrow the filter)" : ""));
    }).catch(function (e) { say("dead-status", "Could not list: " + e.message); });
  }

  // The confirmation states how many the filter selects now; the action sends that count, and
  // the bridge refuses (409) if it changed in between.
  function confirmAction(action) {
    var p = filterQuery();
    api("/console/api/dead/count?" + p.toString()).then(function (c) {
      var verb = action === "redrive" ? "Redrive" : "Purge for good";
      say("confirm-text", verb + " " + c.count + " dead letter(s)? Filter: " + describe(p) + ".");
      var box = $("confirm");
      box.hidden = false;
      box.dataset.action = action;
      box.dataset.count = String(c.count);
      $("confirm-yes").textContent = verb + " " + c.count;
      $("confirm-yes").focus();
    }).catch(function (e) { say("dead-status", "Could not count: " + e.message); });
  }

  function confirmed() {
    var box = $("confirm");
    var action = box.dataset.action;
    var p = filterQuery();
    p.set("expected", box.dataset.count);
    box.hidden = true;
    api("/console/api/dead/" + action + "?" + p.toString(), { method: "POST" }).then(function (r) {
      var n = action === "redrive" ? r.redriven : r.purged;
      return listDead().then(function () {
        say("dead-status", (action === "redrive" ? "Redriven: " : "Purged: ") + n + ".");
      });
    }).catch(function (e) { say("dead-status", "Not done: " + e.message); });
  }

  function signOut() {
    api("/console/api/signout", { method: "POST" }).then(function () {
      csrf = null;
      location.replace("/console/");
    }).catch(function (e) { say("overview-status", "Could not sign out: " + e.message); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.body.className !== "signed-in") { $("token").focus(); return; }
    $("find-form").addEventListener("submit", find);
    $("dead-form").addEventListener("submit", listDead);
    $("dead-redrive").addEventListener("click", function () { confirmAction("redrive"); });
    $("dead-purge").addEventListener("click", function () { confirmAction("purge"); });
    $("confirm-yes").addEventListener("click", confirmed);
    $("confirm-no").addEventListener("click", function () { $("confirm").hidden = true; });
    $("signout").addEventListener("click", signOut);
    window.addEventListener("hashchange", show);
    api("/console/api/session").then(function (s) {
      csrf = s.csrf_token;
      document.body.dataset.csrf = "ready";
      show();
    }).catch(function () { document.body.className = "signed-out"; });
  });
})();
