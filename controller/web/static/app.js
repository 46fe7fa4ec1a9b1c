/*
 * Illuminate — public status page: live updates over a page the server rendered.
 *
 * The page is complete without this script. The script polls the public status JSON
 * (If-None-Match / 304, paused while the tab is hidden) and updates each monument's
 * state, the counts and the night's count in place. Its strings, the language, the
 * zone and the campaign's times come from the page itself
 * (<script type="application/json" id="page-data">): there is no translation table
 * here. When something the server words changes (a phase begins or ends, monuments
 * come or go), it fetches the page again and swaps its content.
 *
 * Every field from the server is written with textContent (never as HTML); the
 * swapped content is the server's own rendering of this page.
 *
 * Stable hooks: #summary (role=status, the only live region), #count-<state>,
 * #count-lit, #count-total, #night-lit, #countdown[data-to], #last-updated,
 * #last-checked, #stale-warning[data-stale="old"|"failed"|"last-known"], #as-of,
 * #cities > section.city[data-city][data-zone] > ul > li#site-<id>[data-state].
 * After each update of the list, and after the content is rendered again, it sends
 * "illuminate:updated" on document (the map follows it).
 */
(function () {
  "use strict";

  var POLL_MS = 10000;
  var STALE_MS = 60000;
  var TIMEOUT_MS = 8000;
  var TICK_MS = 1000;
  var AS_OF_HEADER = "Illuminate-As-Of";
  var STATES = ["scheduled", "pending", "lit", "unconfirmed", "offline", "off"];
  var COLOR_RE = /^#[0-9a-fA-F]{6}$/;
  var OPEN_STATES = ["pending", "lit", "unconfirmed", "offline"]; // a window is open

  var page = null; // the page data of the content shown
  var etag = null;
  var lastSuccess = Date.now(); // the page itself is as fresh as the moment it loaded
  var lastFailed = false;
  var asOf = null;
  var timer = null;
  var inflight = null;
  var seq = 0;
  var refreshing = false;
  var announced = null;

  /* ---- Small helpers ---- */

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // Fill `node` from a pattern such as "confirmed at {time}": text stays text, and each
  // {key} is replaced by parts[key] (a Node, or a string written as text).
  function fillTemplate(node, pattern, parts) {
    clear(node);
    var re = /\{(\w+)\}/g;
    var last = 0;
    var m;
    while ((m = re.exec(pattern)) !== null) {
      if (m.index > last) node.appendChild(document.createTextNode(pattern.slice(last, m.index)));
      var part = parts[m[1]];
      node.appendChild(typeof part === "object" && part !== null ? part : document.createTextNode(String(part)));
      last = re.lastIndex;
    }
    if (last < pattern.length) node.appendChild(document.createTextNode(pattern.slice(last)));
  }

  function plain(pattern, parts) {
    return pattern.replace(/\{(\w+)\}/g, function (_, key) {
      return String(parts[key]);
    });
  }

  function parseTime(value) {
    if (typeof value !== "string") return null;
    var d = new Date(value);
    return isNaN(d.getTime()) ? null : d;
  }

  var formats = {};
  function timeText(d, zone, seconds) {
    var key = zone + (seconds ? ":s" : "");
    if (!formats[key]) {
      var options = { hour: "numeric", minute: "2-digit", timeZone: zone };
      if (seconds) options.second = "2-digit";
      try {
        formats[key] = new Intl.DateTimeFormat(page.locale || page.lang, options);
      } catch (e) {
        formats[key] = new Intl.DateTimeFormat(page.lang, { hour: "numeric", minute: "2-digit" });
      }
    }
    return formats[key].format(d);
  }

  function timeEl(d, zone, seconds) {
    var t = el("time", null, timeText(d, zone, seconds));
    t.setAttribute("datetime", d.toISOString());
    return t;
  }

  function icon(code) {
    var holder = $("icons");
    var source = holder && holder.content ? holder.content.querySelector('[data-icon="' + code + '"]') : null;
    if (!source && holder && holder.content) source = holder.content.querySelector('[data-icon="unknown"]');
    if (!source) return document.createTextNode("");
    var copy = source.cloneNode(true);
    copy.removeAttribute("data-icon");
    return copy;
  }

  var SVG_NS = "http://www.w3.org/2000/svg";

  // The same swatch as the server draws: SVG paint, never colour alone (it has a label).
  function swatchEl(color) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "swatch");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", plain(page.strings.colour, { color: color }));
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "24");
    svg.setAttribute("height", "24");
    svg.setAttribute("focusable", "false");
    var title = document.createElementNS(SVG_NS, "title");
    title.textContent = color;
    svg.appendChild(title);
    var rect = document.createElementNS(SVG_NS, "rect");
    var attrs = { x: 1, y: 1, width: 22, height: 22, rx: 4, fill: color, stroke: "currentColor", "stroke-width": 1.5 };
    for (var name in attrs) rect.setAttribute(name, String(attrs[name]));
    svg.appendChild(rect);
    return svg;
  }

  // The page's policy allows no inline style: colours travel as data-color and are set
  // here, through the CSSOM (the swatches carry them without the script).
  function applyColours(root) {
    var nodes = root.querySelectorAll("[data-color]");
    for (var i = 0; i < nodes.length; i++) {
      var color = nodes[i].getAttribute("data-color");
      if (COLOR_RE.test(color)) nodes[i].style.setProperty("--campaign", color);
    }
  }

  function countText(n) {
    return typeof n === "number" && isFinite(n) ? String(n) : "–";
  }

  /* ---- The page's data ---- */

  function readPage() {
    var node = $("page-data");
    if (!node) return null;
    try {
      return JSON.parse(node.textContent);
    } catch (e) {
      return null;
    }
  }

  function siteIdsShown() {
    var ids = [];
    var nodes = document.querySelectorAll("#cities li.site[data-state]");
    for (var i = 0; i < nodes.length; i++) ids.push(nodes[i].id.slice(5));
    return ids.sort();
  }

  /* ---- Updating in place ---- */

  function updateSite(li, site, zone) {
    var code = typeof site.state === "string" ? site.state : "";
    var seen = String(site.confirmed_at || "") + " " + String(site.confirmed_by || "");
    if (li.getAttribute("data-state") === code && li.getAttribute("data-confirmed") === seen) return;
    var known = STATES.indexOf(code) !== -1;
    li.setAttribute("data-state", code);
    li.setAttribute("data-confirmed", seen);
    var badge = li.querySelector(".badge");
    if (badge) {
      badge.className = "badge state-" + (known ? code : "unknown");
      clear(badge);
      badge.appendChild(icon(known ? code : "unknown"));
      badge.appendChild(el("span", "state-label", known ? page.strings.states[code] : code));
    }
    var details = li.querySelector(".site-details");
    if (!details) {
      details = el("span", "site-details");
      li.appendChild(details);
    }
    var old = details.querySelectorAll(".confirmed, .confirmed-by, .swatch");
    for (var i = 0; i < old.length; i++) details.removeChild(old[i]);
    li.classList.remove("has-colour");
    li.removeAttribute("data-color");
    li.style.removeProperty("--campaign");
    if (code !== "lit") return;
    var confirmed = parseTime(site.confirmed_at);
    if (confirmed) {
      var c = el("span", "confirmed");
      fillTemplate(c, page.strings.confirmed, { time: timeEl(confirmed, zone) });

      details.appendChild(document.createTextNode(" "));
      details.appendChild(c);
      // How its devices confirmed it, in words; an unknown code is left out, never invented.
      var words = page.strings.confirmed_by || {};
      var by = site.confirmed_by;
      if (typeof by === "string" && Object.prototype.hasOwnProperty.call(words, by)) {
        var how = el("span", "confirmed-by", words[by]);
        how.setAttribute("data-confirmed-by", by);
        details.appendChild(document.createTextNode(" "));
        details.appendChild(how);
      }
    }
    // Only lit monuments are drawn in the campaign colour.
    if (typeof site.color === "string" && COLOR_RE.test(site.color)) {
      var swatch = swatchEl(site.color);
      li.setAttribute("data-color", site.color);
      li.style.setProperty("--campaign", site.color);
      li.classList.add("has-colour");
      details.appendChild(document.createTextNode(" "));
      details.appendChild(swatch);
    }
  }

  function updateSummary(summary) {
    var lit = countText(summary.lit);
    var total = countText(summary.total);
    var text = plain(page.strings.summary, { lit: lit, total: total });
    var region = $("summary");
    if (region && text !== announced && text !== region.textContent) {
      var litEl = el("span", "count-value", lit);
      litEl.id = "count-lit";
      var totalEl = el("span", "count-value", total);
      totalEl.id = "count-total";
      fillTemplate(region, page.strings.summary, { lit: litEl, total: totalEl });
    }
    announced = text;
    for (var i = 0; i < STATES.length; i++) {
      var node = $("count-" + STATES[i]);
      if (node && STATES[i] !== "lit") node.textContent = countText(summary[STATES[i]]);
    }
  }

  function apply(body) {
    var ids = body.sites.map(function (s) { return String(s.id); }).sort();
    var shown = siteIdsShown();
    if (ids.join("\n") !== shown.join("\n")) {
      refreshPage(); // monuments came or went: the server words the list again
      return;
    }
    var byId = {};
    body.sites.forEach(function (s) { byId[String(s.id)] = s; });
    var sections = document.querySelectorAll("#cities section.city");
    for (var i = 0; i < sections.length; i++) {
      var zone = sections[i].getAttribute("data-zone") || page.zone;
      var items = sections[i].querySelectorAll("li.site[data-state]");
      for (var j = 0; j < items.length; j++) {
        var site = byId[items[j].id.slice(5)];
        if (site) updateSite(items[j], site, zone);
      }
    }
    updateSummary(body.summary || {});
    var nightLit = $("night-lit");
    if (nightLit) {
      var n = 0;
      (page.night_sites || []).forEach(function (id) {
        if (byId[id] && byId[id].state === "lit") n++;
      });
      nightLit.textContent = String(n);
    }
    if (phaseMoved(byId)) refreshPage(); // the campaign changed: the server words it
    var at = parseTime(body.generated_at);
    var updated = $("updated");
    if (at && updated) {
      var t = timeEl(at, page.zone, true);
      t.id = "last-updated";
      fillTemplate(updated, page.strings.data_from, { time: t });
      updated.hidden = false;
    }
    changed();
  }

  // Tell what follows the list (the map) that it may have changed.
  function changed() {
    if (typeof CustomEvent === "function") document.dispatchEvent(new CustomEvent("illuminate:updated"));
  }

  // Has the night in front begun earlier than the page says (its campaign was edited)?
  // Before its first window no monument of it can be in an open window.
  function phaseMoved(byId) {
    if (page.phase !== "before") return false;
    var ids = page.night_sites || [];
    for (var i = 0; i < ids.length; i++) {
      var site = byId[ids[i]];
      if (site && OPEN_STATES.indexOf(site.state) !== -1) return true;
    }
    return false;
  }

  /* ---- Stale data ---- */

  function renderStale() {
    var node = $("stale-warning");
    if (!node) return;
    var kind = "";
    if (lastFailed) kind = "failed";
    else if (asOf) kind = "last-known";
    else if (Date.now() - lastSuccess > STALE_MS) kind = "old";
    if (!kind) {
      node.hidden = true;
      node.removeAttribute("data-stale");
      clear(node);
      return;
    }
    if (node.getAttribute("data-stale") === kind && !node.hidden) return;
    clear(node);
    node.appendChild(icon("unconfirmed"));
    var span = el("span");
    if (kind === "last-known") {
      var stamp = timeEl(asOf, page.zone);
      stamp.id = "as-of";
      fillTemplate(span, page.strings.last_known, { time: stamp });
    } else {
      span.textContent = kind === "failed" ? page.strings.stale_failed : page.strings.stale_old;
    }
    node.appendChild(span);
    node.setAttribute("data-stale", kind);
    node.hidden = false;
  }

  function renderChecked() {
    var updated = $("updated");
    if (!updated) return;
    var checked = $("last-checked");
    if (!checked) {
      checked = el("time");
      checked.id = "last-checked";
      checked.className = "sr-only";
      updated.appendChild(checked);
    }
    var d = new Date(lastSuccess);
    checked.setAttribute("datetime", d.toISOString());
    checked.textContent = timeText(d, page.zone, true);
  }

  /* ---- Countdown and phases ---- */

  function duration(ms) {
    var units = page.strings.units;
    var left = Math.max(0, Math.ceil(ms / 1000));
    if (left < 60) return plain(units.s, { n: left });
    var minutesUp = Math.ceil(left / 60);
    var days = Math.floor(minutesUp / 1440);
    var hours = Math.floor((minutesUp % 1440) / 60);
    var minutes = minutesUp % 60;
    var parts = [];
    if (days) parts.push(plain(units.d, { n: days }));
    if (hours) parts.push(plain(units.h, { n: hours }));
    if (minutes && !days) parts.push(plain(units.m, { n: minutes }));
    return parts.join(" ");
  }

  function tick() {
    var now = Date.now();
    var start = parseTime(page.start);
    var end = parseTime(page.end);
    if (page.phase === "before" && start && now >= start.getTime()) refreshPage();
    else if (page.phase === "during" && end && now >= end.getTime()) refreshPage();
    var countdown = $("countdown");
    if (countdown) {
      var to = parseTime(countdown.getAttribute("data-to"));
      if (to) {
        var text = duration(to.getTime() - now);
        if (countdown.textContent !== text) countdown.textContent = text;
      }
    }
    renderStale();
  }

  // Fetch this page again and show its content: the server words what changed.
  function refreshPage() {
    if (refreshing) return;
    refreshing = true;
    fetch(window.location.pathname, { cache: "no-store", credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (res) {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var data = doc.getElementById("page-data");
        var main = $("main");
        if (!fresh || !data || !main) throw new Error("unexpected page");
        var next = JSON.parse(data.textContent);
        announced = null;
        clear(main);
        var kids = Array.prototype.slice.call(fresh.childNodes);
        for (var i = 0; i < kids.length; i++) main.appendChild(document.importNode(kids[i], true));
        $("page-data").textContent = data.textContent;
        page = next;
        etag = page.etag || null;
        applyColours(main);
        changed();
        lastSuccess = Date.now();
        lastFailed = false;
        renderChecked();
      })
      .catch(function () {
        lastFailed = true;
      })
      .then(function () {
        refreshing = false;
        renderStale();
      });
  }

  /* ---- Polling ---- */

  function servedAsOf(res) {
    var header = parseTime(res.headers.get(AS_OF_HEADER));
    if (header) return header;
    var age = Number(res.headers.get("Age"));
    if (isFinite(age) && age * 1000 > STALE_MS) return new Date(Date.now() - age * 1000);
    return null;
  }

  function valid(body) {
    return !!body && typeof body === "object" && Array.isArray(body.sites) && !!body.summary && typeof body.summary === "object";
  }

  function schedule(ms) {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    if (!document.hidden) timer = setTimeout(poll, ms || page.poll_ms || POLL_MS);
  }

  function poll() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    if (inflight) inflight.abort();
    var mine = ++seq;
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    inflight = controller;
    var timeout = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    var headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    // "no-store" keeps the browser's HTTP cache out of the way, so our own
    // If-None-Match is sent as is and a 304 reaches this code unchanged.
    var options = { cache: "no-store", credentials: "same-origin", headers: headers };
    if (controller) options.signal = controller.signal;

    fetch(page.api, options)
      .then(function (res) {
        if (mine !== seq) return null;
        if (res.status === 304) {
          asOf = servedAsOf(res);
          return null;
        }
        if (!res.ok) throw new Error("HTTP " + res.status);
        var tag = res.headers.get("ETag");
        return res.json().then(function (body) {
          if (mine !== seq) return;
          if (!valid(body)) throw new Error("unexpected body");
          etag = tag;
          asOf = servedAsOf(res);
          apply(body);
        });
      })
      .then(function () {
        if (mine !== seq) return;
        lastSuccess = Date.now();
        lastFailed = false;
        renderChecked();
      })
      .catch(function () {
        if (mine !== seq) return;
        lastFailed = true;
      })
      .then(function () {
        if (timeout !== null) clearTimeout(timeout);
        if (mine !== seq) return;
        inflight = null;
        renderStale();
        schedule(page.poll_ms || POLL_MS);
      });
  }

  function onVisibility() {
    if (document.hidden) {
      // Paused: no new poll while nobody looks; a request in flight may finish.
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else {
      renderStale();
      poll();
    }
  }

  /* ---- Start ---- */

  function start() {
    page = readPage();
    if (!page || !page.api || !page.strings) return; // the page stays as the server made it
    etag = page.etag || null;
    var asOfNode = $("as-of"); // the server showed its last-known copy
    if (asOfNode) asOf = parseTime(asOfNode.getAttribute("datetime"));
    applyColours(document);
    document.addEventListener("visibilitychange", onVisibility);
    setInterval(tick, TICK_MS);
    tick();
    if (!document.hidden) poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
