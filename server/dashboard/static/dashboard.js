// Keeps the live part of the page current: asks /api/status every few seconds and, when the
// snapshot's version changed, swaps in the server-rendered live part (/live). Nothing else runs.
(function () {
  "use strict";
  var every = Number(document.body.dataset.refreshMs) || 2000;
  var live = document.getElementById("live");
  var connection = document.getElementById("connection");

  function say(text, lost) {
    connection.textContent = text;
    connection.classList.toggle("lost", !!lost);
  }

  function tick() {
    fetch("api/status", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (!r.ok && r.status !== 503) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (snap) {
        if (snap.version === live.dataset.version) { return null; }
        return fetch("live", {credentials: "same-origin", cache: "no-store"}).then(function (r) { return r.text(); })
          .then(function (html) {
            live.innerHTML = html;
            var root = live.firstElementChild;
            live.dataset.version = root && root.dataset.version ? root.dataset.version : snap.version || "";
          });
      })
      .then(function () { say("live, updated " + new Date().toLocaleTimeString(), false); })
      .catch(function (err) { say("connection lost (" + err.message + "); retrying", true); })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
