/*
 * Illuminate — public status page.
 *
 * Plain script, no framework, no build step. Polls the public status JSON and renders
 * it. Every field from the server is written with textContent (never as HTML), and
 * nothing is shown that is not in the JSON (apart from the page's own UI strings and
 * times converted to the visitor's local time).
 *
 * Stable hooks for tests:
 *   #summary (role=status, the only live region), #count-lit, #count-total,
 *   #count-pending, #count-unconfirmed, #count-offline, #count-scheduled, #count-off,
 *   #last-checked (<time>: the client clock at the last successful poll, 200 or 304),
 *   #last-updated (<time>: generated_at of the data shown),
 *   #stale-warning (data-stale="old"|"failed"|"last-known" when shown; "last-known":
 *     the server restarted and serves its last-known copy, or a cache serves an old
 *     one, and #as-of (<time>) says as of when),
 *   #cities > section.city[data-city] > ul > li#site-<id>[data-state=<code>].
 *   Only site elements carry a data-state attribute.
 */
(function () {
  "use strict";

  var API = "/api/v1/public/status";
  var POLL_MS = 10000;
  var STALE_MS = 60000;
  var AS_OF_HEADER = "Illuminate-As-Of"; // set on the last-known copy after a restart
  var TIMEOUT_MS = 8000;
  var LANGS = ["en", "fr", "nl", "de"];
  var STATES = ["scheduled", "pending", "lit", "unconfirmed", "offline", "off"];
  var COLOR_RE = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;
  var SVG_NS = "http://www.w3.org/2000/svg";

  /* ---- UI strings. Machine codes (data-state etc.) are never translated. ---- */

  var CATALOGUE = {
    en: {
      title: "Illuminate — monuments lit tonight",
      heading: "Monuments lit tonight",
      intro: "Each monument's own lighting device confirms when it is lit in the campaign colour.",
      skip: "Skip to the monuments",
      language: "Language",
      overview: "Overview",
      countsLabel: "Count per state",
      headline: function (total) {
        return total === 1 ? "{lit} of {total} monument lit" : "{lit} of {total} monuments lit";
      },
      checked: "Checked {time}",
      dataFrom: "data from {time}",
      staleOld: "This information may be out of date: the last successful update was more than a minute ago.",
      staleFailed: "Could not reach the server. Showing the last information received; it may be out of date.",
      lastKnown: "The service is restarting. Showing the status as of {time}; live updates resume shortly.",
      loading: "Loading the status…",
      noData: "Could not load the status. Trying again…",
      empty: "No monuments to show.",
      monuments: "Monuments by city",
      legend: "What the states mean",
      timesNote: "Times are shown in your device's local time.",
      window: "Lighting window: ",
      confirmed: "confirmed {time}",
      // How the device confirmed it (confirmed_by), read after the time.
      confirmedBy: {
        echo: "by the device's own report",
        readback: "by the device reading back its output",
        sensor: "by a light sensor"
      },
      colour: "Campaign colour {color}",
      state: {
        scheduled: "Scheduled",
        pending: "Pending",
        lit: "Lit",
        unconfirmed: "Unconfirmed",
        offline: "Offline",
        off: "Off"
      },
      help: {
        scheduled: "A lighting window is coming.",
        pending: "The window is open; waiting for the device's confirmation.",
        lit: "Confirmed by the device. The swatch shows the campaign colour.",
        unconfirmed: "The device did not confirm in time.",
        offline: "The device is offline.",
        off: "No lighting window now."
      }
    },
    fr: {
      title: "Illuminate — monuments illuminés ce soir",
      heading: "Monuments illuminés ce soir",
      intro: "Le dispositif d'éclairage de chaque monument confirme lui-même qu'il est illuminé aux couleurs de la campagne.",
      skip: "Aller aux monuments",
      language: "Langue",
      overview: "Vue d'ensemble",
      countsLabel: "Nombre par état",
      headline: function (total) {
        return total === 1 ? "{lit} sur {total} monument illuminé" : "{lit} sur {total} monuments illuminés";
      },
      checked: "Vérifié à {time}",
      dataFrom: "données de {time}",
      staleOld: "Ces informations sont peut-être périmées\u00a0: la dernière mise à jour réussie date de plus d'une minute.",
      staleFailed: "Impossible de joindre le serveur. Les dernières informations reçues sont affichées\u00a0; elles sont peut-être périmées.",
      lastKnown: "Le service redémarre. État affiché tel qu'il était à {time}\u00a0; les mises à jour en direct reprennent sous peu.",
      loading: "Chargement de l'état…",
      noData: "Impossible de charger l'état. Nouvel essai…",
      empty: "Aucun monument à afficher.",
      monuments: "Monuments par ville",
      legend: "Signification des états",
      timesNote: "Les heures sont indiquées dans l'heure locale de votre appareil.",
      window: "Plage d'éclairage\u00a0: ",
      confirmed: "confirmé à {time}",
      confirmedBy: {
        echo: "par le rapport du dispositif",
        readback: "par une relecture de la sortie du dispositif",
        sensor: "par un capteur de lumière"
      },
      colour: "Couleur de la campagne {color}",
      state: {
        scheduled: "Programmé",
        pending: "En attente",
        lit: "Illuminé",
        unconfirmed: "Non confirmé",
        offline: "Hors ligne",
        off: "Éteint"
      },
      help: {
        scheduled: "Une plage d'éclairage est prévue.",
        pending: "La plage est ouverte\u00a0; en attente de la confirmation du dispositif.",
        lit: "Confirmé par le dispositif. La pastille montre la couleur de la campagne.",
        unconfirmed: "Le dispositif n'a pas confirmé à temps.",
        offline: "Le dispositif est hors ligne.",
        off: "Aucune plage d'éclairage en ce moment."
      }
    },
    nl: {
      title: "Illuminate — monumenten vanavond verlicht",
      heading: "Monumenten vanavond verlicht",
      intro: "Het verlichtingstoestel van elk monument bevestigt zelf wanneer het in de campagnekleur verlicht is.",
      skip: "Naar de monumenten",
      language: "Taal",
      overview: "Overzicht",
      countsLabel: "Aantal per status",
      headline: function (total) {
        return total === 1 ? "{lit} van {total} monument verlicht" : "{lit} van {total} monumenten verlicht";
      },
      checked: "Gecontroleerd om {time}",
      dataFrom: "gegevens van {time}",
      staleOld: "Deze informatie is mogelijk verouderd: de laatste geslaagde update is meer dan een minuut geleden.",
      staleFailed: "De server is niet bereikbaar. De laatst ontvangen informatie wordt getoond; die is mogelijk verouderd.",
      lastKnown: "De dienst herstart. De toestand van {time} wordt getoond; live updates volgen zo.",
      loading: "Status laden…",
      noData: "De status kon niet worden geladen. Opnieuw proberen…",
      empty: "Geen monumenten om te tonen.",
      monuments: "Monumenten per stad",
      legend: "Wat de statussen betekenen",
      timesNote: "Tijden staan in de lokale tijd van uw toestel.",
      window: "Verlichtingsperiode: ",
      confirmed: "bevestigd om {time}",
      confirmedBy: {
        echo: "door de melding van het toestel",
        readback: "doordat het toestel zijn uitgang terugleest",
        sensor: "door een lichtsensor"
      },
      colour: "Campagnekleur {color}",
      state: {
        scheduled: "Gepland",
        pending: "In afwachting",
        lit: "Verlicht",
        unconfirmed: "Niet bevestigd",
        offline: "Offline",
        off: "Uit"
      },
      help: {
        scheduled: "Er komt een verlichtingsperiode aan.",
        pending: "De periode is begonnen; wacht op de bevestiging van het toestel.",
        lit: "Bevestigd door het toestel. Het staaltje toont de campagnekleur.",
        unconfirmed: "Het toestel heeft niet op tijd bevestigd.",
        offline: "Het toestel is offline.",
        off: "Nu geen verlichtingsperiode."
      }
    },
    de: {
      title: "Illuminate — heute Abend beleuchtete Denkmäler",
      heading: "Heute Abend beleuchtete Denkmäler",
      intro: "Das Beleuchtungsgerät jedes Denkmals bestätigt selbst, wann es in der Kampagnenfarbe leuchtet.",
      skip: "Zu den Denkmälern springen",
      language: "Sprache",
      overview: "Überblick",
      countsLabel: "Anzahl je Zustand",
      headline: function (total) {
        return total === 1 ? "{lit} von {total} Denkmal beleuchtet" : "{lit} von {total} Denkmälern beleuchtet";
      },
      checked: "Geprüft um {time}",
      dataFrom: "Datenstand {time}",
      staleOld: "Diese Angaben sind möglicherweise veraltet: Die letzte erfolgreiche Aktualisierung liegt über eine Minute zurück.",
      staleFailed: "Der Server ist nicht erreichbar. Angezeigt werden die zuletzt empfangenen Angaben; sie sind möglicherweise veraltet.",
      lastKnown: "Der Dienst startet neu. Angezeigt wird der Stand von {time}; Live-Aktualisierungen folgen in Kürze.",
      loading: "Status wird geladen…",
      noData: "Der Status konnte nicht geladen werden. Neuer Versuch…",
      empty: "Keine Denkmäler vorhanden.",
      monuments: "Denkmäler nach Stadt",
      legend: "Bedeutung der Zustände",
      timesNote: "Zeiten werden in der Ortszeit Ihres Geräts angezeigt.",
      window: "Beleuchtungszeitraum: ",
      confirmed: "bestätigt um {time}",
      confirmedBy: {
        echo: "durch die Meldung des Geräts",
        readback: "durch Rücklesen des Geräteausgangs",
        sensor: "durch einen Lichtsensor"
      },
      colour: "Kampagnenfarbe {color}",
      state: {
        scheduled: "Geplant",
        pending: "Ausstehend",
        lit: "Beleuchtet",
        unconfirmed: "Unbestätigt",
        offline: "Offline",
        off: "Aus"
      },
      help: {
        scheduled: "Ein Beleuchtungszeitraum steht bevor.",
        pending: "Der Zeitraum läuft; die Bestätigung des Geräts steht aus.",
        lit: "Vom Gerät bestätigt. Das Farbfeld zeigt die Kampagnenfarbe.",
        unconfirmed: "Das Gerät hat nicht rechtzeitig bestätigt.",
        offline: "Das Gerät ist offline.",
        off: "Derzeit kein Beleuchtungszeitraum."
      }
    }
  };

  /* ---- Icons: simple shapes, distinct per state, drawn in currentColor. ---- */

  var ICONS = {
    // A sun: filled disc with rays.
    lit: [
      ["circle", { cx: 12, cy: 12, r: 4.5, fill: "currentColor" }],
      ["path", { d: "M12 2v3M12 19v3M2 12h3M19 12h3M4.9 4.9l2.1 2.1M17 17l2.1 2.1M4.9 19.1 7 17M17 7l2.1-2.1" }]
    ],
    // An hourglass.
    pending: [["path", { d: "M6 3h12M6 21h12M7 3c0 5 10 6 10 9s-10 4-10 9M17 3c0 5-10 6-10 9s10 4 10 9" }]],
    // A clock.
    scheduled: [
      ["circle", { cx: 12, cy: 12, r: 9 }],
      ["path", { d: "M12 7v5l3.5 2" }]
    ],
    // A warning triangle with an exclamation mark.
    unconfirmed: [
      ["path", { d: "M12 3 2 20.5h20z" }],
      ["path", { d: "M12 9.5v5" }],
      ["circle", { cx: 12, cy: 17.5, r: 0.6, fill: "currentColor" }]
    ],
    // A crossed-out circle.
    offline: [
      ["circle", { cx: 12, cy: 12, r: 9 }],
      ["path", { d: "M5.6 5.6l12.8 12.8" }]
    ],
    // An empty circle.
    off: [["circle", { cx: 12, cy: 12, r: 7 }]],
    unknown: [
      ["circle", { cx: 12, cy: 12, r: 9 }],
      ["path", { d: "M9.5 9.5a2.5 2.5 0 1 1 3.5 2.3c-.6.3-1 .9-1 1.6v.6" }],
      ["circle", { cx: 12, cy: 17, r: 0.6, fill: "currentColor" }]
    ]
  };

  function icon(code) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("fill", "none");
    svg.setAttribute("stroke", "currentColor");
    svg.setAttribute("stroke-width", "2");
    svg.setAttribute("stroke-linecap", "round");
    svg.setAttribute("stroke-linejoin", "round");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "state-icon");
    var parts = ICONS[code] || ICONS.unknown;
    for (var i = 0; i < parts.length; i++) {
      var node = document.createElementNS(SVG_NS, parts[i][0]);
      var attrs = parts[i][1];
      for (var name in attrs) {
        if (Object.prototype.hasOwnProperty.call(attrs, name)) node.setAttribute(name, String(attrs[name]));
      }
      svg.appendChild(node);
    }
    return svg;
  }

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

  function isKnownState(code) {
    return STATES.indexOf(code) !== -1;
  }

  // Fill `node` from a template such as "confirmed {time}": text stays text, and each
  // {key} is replaced by parts[key] (a Node, or a string written as text).
  function fillTemplate(node, template, parts) {
    clear(node);
    var re = /\{(\w+)\}/g;
    var last = 0;
    var m;
    while ((m = re.exec(template)) !== null) {
      if (m.index > last) node.appendChild(document.createTextNode(template.slice(last, m.index)));
      var part = parts[m[1]];
      node.appendChild(typeof part === "object" && part !== null ? part : document.createTextNode(String(part)));
      last = re.lastIndex;
    }
    if (last < template.length) node.appendChild(document.createTextNode(template.slice(last)));
  }

  function plainTemplate(template, parts) {
    return template.replace(/\{(\w+)\}/g, function (_, key) {
      return String(parts[key]);
    });
  }

  function parseTime(value) {
    if (typeof value !== "string") return null;
    var d = new Date(value);
    return isNaN(d.getTime()) ? null : d;
  }

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  // 24-hour local time, the same in every language: "21:30" or "21:30:05".
  function hhmm(d) {
    return pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function hhmmss(d) {
    return hhmm(d) + ":" + pad(d.getSeconds());
  }

  function sameLocalDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  function weekday(d, lang) {
    try {
      return new Intl.DateTimeFormat(lang, { weekday: "short" }).format(d);
    } catch (e) {
      return "";
    }
  }

  function timeEl(d, text) {
    var t = el("time", null, text);
    t.setAttribute("datetime", d.toISOString());
    return t;
  }

  function countText(n) {
    return typeof n === "number" && isFinite(n) ? String(n) : "–";
  }

  var collators = {};
  function collator(lang) {
    if (!collators[lang]) {
      try {
        collators[lang] = new Intl.Collator(lang, { sensitivity: "base", numeric: true });
      } catch (e) {
        collators[lang] = { compare: function (a, b) { return a < b ? -1 : a > b ? 1 : 0; } };
      }
    }
    return collators[lang];
  }

  /* ---- State ---- */

  var lang = "en";
  var data = null; // last good JSON body
  var etag = null; // ETag of `data`
  var lastSuccess = 0; // Date.now() of the last successful poll (200 or 304)
  var lastFailed = false; // did the most recent poll fail?
  var asOf = null; // Date: the data is a last-known or cached copy, current as of then
  var timer = null;
  var inflight = null; // AbortController of the request in flight
  var seq = 0; // guards against out-of-order responses
  var announced = null; // text last written to the live region

  function t() {
    return CATALOGUE[lang] || CATALOGUE.en;
  }

  function langFromUrl() {
    var value = null;
    try {
      value = new URLSearchParams(window.location.search).get("lang");
    } catch (e) {
      value = null;
    }
    value = value ? value.toLowerCase() : "";
    return LANGS.indexOf(value) !== -1 ? value : "en";
  }

  /* ---- Static UI strings ---- */

  function lookup(cat, key) {
    var path = key.split(".");
    var value = cat;
    for (var i = 0; i < path.length && value !== undefined && value !== null; i++) value = value[path[i]];
    return typeof value === "string" ? value : null;
  }

  function applyStrings() {
    var cat = t();
    document.documentElement.setAttribute("lang", lang);
    document.title = cat.title;
    var nodes = document.querySelectorAll("[data-i18n]");
    for (var i = 0; i < nodes.length; i++) {
      var text = lookup(cat, nodes[i].getAttribute("data-i18n"));
      if (text !== null) nodes[i].textContent = text;
    }
    var labelled = document.querySelectorAll("[data-i18n-label]");
    for (var j = 0; j < labelled.length; j++) {
      var label = lookup(cat, labelled[j].getAttribute("data-i18n-label"));
      if (label !== null) labelled[j].setAttribute("aria-label", label);
    }
    var links = document.querySelectorAll("[data-lang]");
    for (var k = 0; k < links.length; k++) {
      if (links[k].getAttribute("data-lang") === lang) links[k].setAttribute("aria-current", "true");
      else links[k].removeAttribute("aria-current");
    }
  }

  function fillIcons() {
    var slots = document.querySelectorAll("[data-icon]");
    for (var i = 0; i < slots.length; i++) {
      if (!slots[i].firstChild) slots[i].appendChild(icon(slots[i].getAttribute("data-icon")));
    }
  }

  /* ---- Rendering ---- */

  function renderSummary() {
    var summary = data.summary || {};
    var cat = t();
    var lit = countText(summary.lit);
    var total = countText(summary.total);
    var template = cat.headline(summary.total);
    var text = plainTemplate(template, { lit: lit, total: total });
    // Write the live region only when its text changes, so nothing is re-announced.
    if (text !== announced) {
      var litEl = el("span", "count-value", lit);
      litEl.id = "count-lit";
      var totalEl = el("span", "count-value", total);
      totalEl.id = "count-total";
      fillTemplate($("summary"), template, { lit: litEl, total: totalEl });
      announced = text;
    }
    for (var i = 0; i < STATES.length; i++) {
      var code = STATES[i];
      if (code === "lit") continue;
      var node = $("count-" + code);
      if (node) node.textContent = countText(summary[code]);
    }
    $("counts").hidden = false;
  }

  // "Checked 21:31:05 · data from 21:30:01". The ETag ignores generated_at, so while
  // nothing changes every poll is a 304 and the data time stands still; the check time
  // (client clock at the last 200 or 304) shows that polling is still healthy.
  function renderUpdated() {
    var node = $("updated");
    var cat = t();
    var parts = [];
    if (lastSuccess) {
      var checked = new Date(lastSuccess);
      var checkedEl = timeEl(checked, hhmmss(checked));
      checkedEl.id = "last-checked";
      var c = el("span", "checked");
      fillTemplate(c, cat.checked, { time: checkedEl });
      parts.push(c);
    }
    var at = data ? parseTime(data.generated_at) : null;
    if (at) {
      var atEl = timeEl(at, hhmmss(at));
      atEl.id = "last-updated";
      var d = el("span", "data-time");
      fillTemplate(d, cat.dataFrom, { time: atEl });
      parts.push(d);
    }
    clear(node);
    for (var i = 0; i < parts.length; i++) {
      if (i) node.appendChild(document.createTextNode(" \u00b7 "));
      node.appendChild(parts[i]);
    }
    node.hidden = parts.length === 0;
  }

  function renderStale() {
    var node = $("stale-warning");
    var kind = "";
    if (lastFailed) kind = "failed";
    else if (asOf) kind = "last-known";
    else if (lastSuccess && Date.now() - lastSuccess > STALE_MS) kind = "old";
    if (!kind) {
      node.hidden = true;
      node.removeAttribute("data-stale");
      clear(node);
      return;
    }
    if (kind === "last-known") {
      var stamp = sameLocalDay(asOf, new Date()) ? hhmm(asOf) : asOf.toLocaleString(lang);
      var line = plainTemplate(t().lastKnown, { time: stamp });
      if (node.getAttribute("data-stale") !== kind || node.textContent !== line) {
        clear(node);
        node.appendChild(icon("unconfirmed"));
        var timeNode = timeEl(asOf, stamp);
        timeNode.id = "as-of";
        var span = el("span");
        fillTemplate(span, t().lastKnown, { time: timeNode });
        node.appendChild(span);
        node.setAttribute("data-stale", kind);
      }
      node.hidden = false;
      return;
    }
    var text = kind === "failed" ? t().staleFailed : t().staleOld;
    if (node.getAttribute("data-stale") !== kind || node.textContent !== text) {
      clear(node);
      node.appendChild(icon("unconfirmed"));
      node.appendChild(el("span", null, text));
      node.setAttribute("data-stale", kind);
    }
    node.hidden = false;
  }

  function renderMessage(text) {
    var node = $("list-message");
    if (text) {
      node.textContent = text;
      node.hidden = false;
    } else {
      node.textContent = "";
      node.hidden = true;
    }
  }

  function windowText(site, ref) {
    var w = site.window;
    if (!w || typeof w !== "object") return null;
    var start = parseTime(w.start);
    var end = parseTime(w.end);
    if (!start || !end) return null;
    var span = el("span", "window");
    span.appendChild(el("span", "sr-only", t().window));
    if (ref && !sameLocalDay(start, ref)) {
      var day = weekday(start, lang);
      if (day) span.appendChild(document.createTextNode(day + " "));
    }
    span.appendChild(timeEl(start, hhmm(start)));
    span.appendChild(document.createTextNode("\u2013"));
    span.appendChild(timeEl(end, hhmm(end)));
    return span;
  }

  function renderSite(site, ref) {
    var cat = t();
    var code = typeof site.state === "string" ? site.state : "";
    var li = el("li", "site");
    li.id = "site-" + String(site.id);
    li.setAttribute("data-state", code);

    // Text spaces between the parts, so assistive technology reads them as words.
    li.appendChild(el("span", "site-name", site.name));
    li.appendChild(document.createTextNode(" "));

    var badge = el("span", "badge state-" + (isKnownState(code) ? code : "unknown"));
    badge.appendChild(icon(isKnownState(code) ? code : "unknown"));
    // Unknown codes are shown as they came, never invented.
    badge.appendChild(el("span", "state-label", isKnownState(code) ? cat.state[code] : code));
    li.appendChild(badge);

    var details = el("span", "site-details");
    var win = windowText(site, ref);
    if (win) details.appendChild(win);

    if (code === "lit") {
      var confirmed = parseTime(site.confirmed_at);
      if (confirmed) {
        var c = el("span", "confirmed");
        fillTemplate(c, cat.confirmed, { time: timeEl(confirmed, hhmm(confirmed)) });
        if (details.firstChild) details.appendChild(document.createTextNode(" "));
        details.appendChild(c);
        // Only the known words are shown: an unknown code is left out, never invented.
        var by = site.confirmed_by;
        if (typeof by === "string" && Object.prototype.hasOwnProperty.call(cat.confirmedBy, by)) {
          var how = el("span", "confirmed-by", cat.confirmedBy[by]);
          how.setAttribute("data-confirmed-by", by);
          details.appendChild(document.createTextNode(" "));
          details.appendChild(how);
        }
      }
      // Only lit sites are drawn in the campaign colour.
      if (typeof site.color === "string" && COLOR_RE.test(site.color)) {
        var swatch = el("span", "swatch");
        swatch.setAttribute("role", "img");
        swatch.setAttribute("aria-label", plainTemplate(cat.colour, { color: site.color }));
        swatch.setAttribute("title", site.color);
        swatch.style.backgroundColor = site.color;
        li.style.setProperty("--campaign", site.color);
        li.classList.add("has-colour");
        if (details.firstChild) details.appendChild(document.createTextNode(" "));
        details.appendChild(swatch);
      }
    }
    if (details.firstChild) {
      li.appendChild(document.createTextNode(" "));
      li.appendChild(details);
    }
    return li;
  }

  function renderSites() {
    var container = $("cities");
    clear(container);
    var sites = Array.isArray(data.sites) ? data.sites.filter(function (s) {
      return s && typeof s === "object";
    }) : [];
    if (!sites.length) {
      renderMessage(t().empty);
      return;
    }
    renderMessage("");
    var coll = collator(lang);
    var byCity = {};
    var cities = [];
    sites.forEach(function (s) {
      var city = s.city === undefined || s.city === null ? "" : String(s.city);
      if (!Object.prototype.hasOwnProperty.call(byCity, city)) {
        byCity[city] = [];
        cities.push(city);
      }
      byCity[city].push(s);
    });
    cities.sort(function (a, b) {
      return coll.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);
    });
    var ref = parseTime(data.generated_at) || new Date();
    cities.forEach(function (city, index) {
      var section = el("section", "city");
      section.setAttribute("data-city", city);
      var headingId = "city-" + index;
      var h = el("h3", "city-name", city || "—");
      h.id = headingId;
      section.setAttribute("aria-labelledby", headingId);
      section.appendChild(h);
      var list = el("ul", "sites");
      byCity[city]
        .slice()
        .sort(function (a, b) {
          var an = String(a.name === undefined || a.name === null ? "" : a.name);
          var bn = String(b.name === undefined || b.name === null ? "" : b.name);
          return coll.compare(an, bn) || (String(a.id) < String(b.id) ? -1 : String(a.id) > String(b.id) ? 1 : 0);
        })
        .forEach(function (s) {
          list.appendChild(renderSite(s, ref));
        });
      section.appendChild(list);
      container.appendChild(section);
    });
  }

  function renderAll() {
    applyStrings();
    if (data) {
      renderSummary();
      renderUpdated();
      renderSites();
    } else {
      clear($("cities"));
      renderMessage(lastFailed ? t().noData : t().loading);
    }
    renderStale();
  }

  /* ---- Polling ---- */

  // When the server (after a restart) or a cache in front of it serves an old copy,
  // as of when it was current: Illuminate-As-Of, or the cache's Age once over a minute.
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
    if (!document.hidden) timer = setTimeout(poll, ms);
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
    if (etag && data) headers["If-None-Match"] = etag;
    // "no-store" keeps the browser's HTTP cache out of the way (the response carries
    // max-age=5), so every poll reaches the server, our own If-None-Match is sent as
    // is, and a 304 reaches this code unchanged: no-cache semantics, done by hand.
    var options = { cache: "no-store", credentials: "same-origin", headers: headers };
    if (controller) options.signal = controller.signal;

    fetch(API + "?lang=" + encodeURIComponent(lang), options)
      .then(function (res) {
        if (mine !== seq) return null;
        if (res.status === 304) {
          if (!data) throw new Error("304 without data");
          asOf = servedAsOf(res);
          return null; // unchanged: keep what we have
        }
        if (!res.ok) throw new Error("HTTP " + res.status);
        var tag = res.headers.get("ETag");
        return res.json().then(function (body) {
          if (mine !== seq) return null;
          if (!valid(body)) throw new Error("unexpected body");
          data = body;
          etag = tag;
          asOf = servedAsOf(res);
          lastSuccess = Date.now();
          lastFailed = false;
          renderAll();
          return null;
        });
      })
      .then(function () {
        if (mine !== seq) return;
        lastSuccess = Date.now();
        lastFailed = false;
      })
      .catch(function () {
        if (mine !== seq) return;
        lastFailed = true;
        if (!data) etag = null;
      })
      .then(function () {
        if (timeout !== null) clearTimeout(timeout);
        if (mine !== seq) return;
        inflight = null;
        if (data) {
          renderUpdated(); // the check time moves on every 200 or 304
          renderStale();
        } else {
          renderAll();
        }
        schedule(POLL_MS);
      });
  }

  function onVisibility() {
    if (document.hidden) {
      // Pause: no new timer; a request already in flight may finish.
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else {
      renderStale();
      poll();
    }
  }

  /* ---- Language switch ---- */

  function setLang(next) {
    if (LANGS.indexOf(next) === -1 || next === lang) return;
    lang = next;
    try {
      var url = new URL(window.location.href);
      url.searchParams.set("lang", lang);
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    } catch (e) {
      /* the URL is a convenience; keep going */
    }
    // Names come in the chosen language: fetch afresh, without the old ETag.
    etag = null;
    announced = null;
    renderAll();
    poll();
  }

  function onLangClick(event) {
    var link = event.target && event.target.closest ? event.target.closest("a[data-lang]") : null;
    if (!link) return;
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    setLang(link.getAttribute("data-lang"));
  }

  /* ---- Start ---- */

  function start() {
    lang = langFromUrl();
    fillIcons();
    renderAll();
    var nav = document.querySelector(".lang-switch");
    if (nav) nav.addEventListener("click", onLangClick);
    document.addEventListener("visibilitychange", onVisibility);
    window.addEventListener("popstate", function () {
      var next = langFromUrl();
      if (next !== lang) {
        lang = next;
        etag = null;
        announced = null;
        renderAll();
        poll();
      }
    });
    setInterval(function () {
      if (data) renderStale();
    }, 5000);
    if (!document.hidden) poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
