// ELK Auto Resolver console: live refresh of the lists, without reloading the page.
// Every element with data-live and an id is a list this page keeps current: every few seconds
// the page asks /api/changes (a fingerprint of what the lists show); when it moved, the page is
// fetched again and those elements are replaced by their new versions. A list someone is using
// (focus inside it, a box ticked) is left alone until they are done. Without JavaScript the
// pages work as before, reloaded by hand. No framework, nothing from elsewhere.
(function () {
  "use strict";
  var EVERY_MS = 4000;
  var live = document.querySelectorAll("[data-live][id]");
  var badge = document.getElementById("live");
  if (!live.length || !window.fetch || !window.DOMParser) return;
  var version = null;
  var busy = false;

  function inUse(el) {
    var active = document.activeElement;
    if (active && active !== document.body && el.contains(active)) return true;
    return !!el.querySelector("input[type=checkbox]:checked, details[open]");
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-live][id]").forEach(function (el) {
      var fresh = doc.getElementById(el.id);
      if (fresh && !inUse(el) && fresh.innerHTML !== el.innerHTML) el.innerHTML = fresh.innerHTML;
    });
  }

  function stamp(text) {
    if (!badge) return;
    badge.hidden = false;
    badge.textContent = text;
  }

  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    fetch("/api/changes", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return null;
        var moved = version !== null && body.version !== version;
        version = body.version;
        if (!moved) return null;
        return fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Live": "1" } })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html) swap(html); });
      })
      .then(function () { stamp("live · " + new Date().toLocaleTimeString()); })
      .catch(function () { stamp("live refresh paused (no answer)"); })
      .then(function () { busy = false; });
  }

  stamp("live");
  tick();
  setInterval(tick, EVERY_MS);
  document.addEventListener("visibilitychange", tick);
})();
