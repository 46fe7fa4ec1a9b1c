/*
 * Illuminate — the public page's map: the monuments of the list, on a map beside it.
 *
 * Progressive enhancement: without this script, or without Leaflet, the map stays
 * hidden and the list is the whole page. The map repeats the list for the eye: each
 * marker shows the monument's state with the same icon and words as the list (never
 * colour alone; only a lit monument in the campaign colour), and clusters show how
 * many monuments they hold and how many are lit. The markers are hidden from
 * assistive technology and take no keyboard stops: the list is the accessible view.
 *
 * Everything is read from the list the server rendered (li.site[data-state][data-lat]
 * [data-lon], its .site-name link and .state-label), and read again whenever the
 * page's script updates the list ("illuminate:updated" on document). Its settings and
 * strings come from the page data ("map": tiles, attribution, cluster pattern, zoom
 * labels). Every text is written with textContent.
 */
(function () {
  "use strict";

  var COLOR_RE = /^#[0-9a-fA-F]{6}$/;
  var map = null;
  var container = null;
  var cluster = null;
  var markers = {}; // site id -> {marker, key}
  var settings = null;

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function plain(pattern, parts) {
    return String(pattern).replace(/\{(\w+)\}/g, function (_, key) {
      return String(parts[key]);
    });
  }

  function escapeText(text) {
    return String(text).replace(/[&<>"']/g, function (ch) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch];
    });
  }

  function readSettings() {
    var node = $("page-data");
    if (!node) return null;
    try {
      var data = JSON.parse(node.textContent);
      return data && data.map ? data.map : null;
    } catch (e) {
      return null;
    }
  }

  function icon(code) {
    var holder = $("icons");
    var content = holder && holder.content;
    var source = content ? content.querySelector('[data-icon="' + code + '"]') : null;
    if (!source && content) source = content.querySelector('[data-icon="unknown"]');
    if (!source) return document.createTextNode("");
    var copy = source.cloneNode(true);
    copy.removeAttribute("data-icon");
    return copy;
  }

  // The monuments as the list shows them now.
  function readSites() {
    var out = [];
    var items = document.querySelectorAll("#cities li.site[data-lat][data-lon]");
    for (var i = 0; i < items.length; i++) {
      var li = items[i];
      var lat = Number(li.getAttribute("data-lat"));
      var lon = Number(li.getAttribute("data-lon"));
      if (!isFinite(lat) || !isFinite(lon)) continue;
      var name = li.querySelector(".site-name");
      var label = li.querySelector(".state-label");
      var state = li.getAttribute("data-state") || "";
      var color = li.getAttribute("data-color");
      out.push({
        id: li.id.slice(5),
        lat: lat,
        lon: lon,
        name: name ? name.textContent : "",
        href: name && name.getAttribute("href"),
        state: state,
        label: label ? label.textContent : state,
        color: state === "lit" && COLOR_RE.test(color || "") ? color : null,
      });
    }
    return out;
  }

  function keyOf(site) {
    return [site.state, site.label, site.color, site.name].join("\n");
  }

  function markerIcon(site) {
    var pin = el("div", "map-marker state-" + site.state);
    pin.setAttribute("data-state", site.state);
    pin.setAttribute("data-site", site.id);
    if (site.color) {
      pin.setAttribute("data-color", site.color);
      pin.style.setProperty("--campaign", site.color);
    }
    pin.appendChild(icon(site.state));
    pin.appendChild(document.createTextNode(" "));
    pin.appendChild(el("span", "marker-label", site.label));
    return L.divIcon({ html: pin, className: "map-pin", iconSize: null });
  }

  function popupContent(site) {
    var box = el("div", "map-popup");
    var name = el("a", "map-popup-name", site.name);
    if (site.href) name.setAttribute("href", site.href);
    box.appendChild(name);
    var state = el("p", "map-popup-state state-" + site.state);
    state.appendChild(icon(site.state));
    state.appendChild(el("span", null, site.label));
    box.appendChild(state);
    return box;
  }

  function clusterIcon(group) {
    var children = group.getAllChildMarkers();
    var lit = 0;
    for (var i = 0; i < children.length; i++) if (children[i].options.siteState === "lit") lit++;
    var box = el("div", "map-cluster" + (lit ? " has-lit" : ""));
    box.setAttribute("data-count", String(children.length));
    box.setAttribute("data-lit", String(lit));
    box.appendChild(el("span", "cluster-count", children.length));
    box.appendChild(document.createTextNode(" "));
    box.appendChild(el("span", "cluster-lit", plain(settings.cluster, { lit: lit, total: children.length })));
    return L.divIcon({ html: box, className: "map-pin", iconSize: null });
  }

  function teardown() {
    if (map) map.remove();
    map = null;
    cluster = null;
    markers = {};
    container = null;
  }

  function init() {
    var node = $("map");
    settings = readSettings();
    if (!node || !settings || typeof L === "undefined" || !L.markerClusterGroup) return;
    var sites = readSites();
    if (!sites.length) return;
    container = node;
    // No marker takes a keyboard stop (clusters included): the list is the way in.
    L.Marker.prototype.options.keyboard = false;
    node.hidden = false;
    var section = $("monuments");
    if (section) section.classList.add("has-map");
    map = L.map(node, { zoomControl: false, attributionControl: false, maxZoom: 19, worldCopyJump: true });
    L.control
      .zoom({ zoomInTitle: settings.zoom_in || "+", zoomOutTitle: settings.zoom_out || "-" })
      .addTo(map);
    var credit = L.control.attribution({ prefix: '<a href="https://leafletjs.com">Leaflet</a>' });
    credit.addTo(map);
    if (settings.tiles) {
      L.tileLayer(settings.tiles, {
        maxZoom: 19,
        attribution: escapeText(settings.attribution || ""),
        // the page sends no referrer; tile servers ask for the page's origin
        referrerPolicy: "strict-origin",
        crossOrigin: false,
      }).addTo(map);
    }
    map.getPane("markerPane").setAttribute("aria-hidden", "true");
    map.getPane("shadowPane").setAttribute("aria-hidden", "true");
    cluster = L.markerClusterGroup({
      iconCreateFunction: clusterIcon,
      showCoverageOnHover: false,
      maxClusterRadius: 48,
      spiderfyOnMaxZoom: true,
      chunkedLoading: true,
    });
    map.addLayer(cluster);
    sync(sites);
    var bounds = L.latLngBounds(sites.map(function (s) { return [s.lat, s.lon]; }));
    map.fitBounds(bounds.pad(0.1), { maxZoom: 14, animate: false });
  }

  function sync(sites) {
    var seen = {};
    var changed = [];
    var added = [];
    for (var i = 0; i < sites.length; i++) {
      var site = sites[i];
      seen[site.id] = true;
      var key = keyOf(site);
      var known = markers[site.id];
      if (known && known.key === key) continue;
      if (!known) {
        var marker = L.marker([site.lat, site.lon], { icon: markerIcon(site), keyboard: false, siteState: site.state });
        marker.bindPopup(popupContent(site));
        markers[site.id] = { marker: marker, key: key };
        added.push(marker);
      } else {
        known.marker.options.siteState = site.state;
        known.marker.setIcon(markerIcon(site));
        known.marker.setPopupContent(popupContent(site));
        known.key = key;
        changed.push(known.marker);
      }
    }
    for (var id in markers) {
      if (Object.prototype.hasOwnProperty.call(markers, id) && !seen[id]) {
        cluster.removeLayer(markers[id].marker);
        delete markers[id];
      }
    }
    if (added.length) cluster.addLayers(added); // in one go: fast for thousands
    if (changed.length) cluster.refreshClusters(changed);
  }

  function updated() {
    if (!map || $("map") !== container) {
      // the page's content was rendered again: a new list, a new map
      teardown();
      init();
      return;
    }
    sync(readSites());
  }

  function start() {
    init();
    document.addEventListener("illuminate:updated", updated);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
