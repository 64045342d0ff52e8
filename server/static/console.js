// Picket console: progressive enhancement only. Every page works without
// this file; with it, deployment statuses update live (Server-Sent Events),
// destructive buttons ask for confirmation, and secrets get copy buttons.
(function () {
  "use strict";

  // Live deployment status: pages that show statuses carry data-live-since
  // (when they were rendered), so no change in between is missed.
  var live = document.querySelector("[data-live-since]");
  if (live && window.EventSource) {
    var since = live.getAttribute("data-live-since");
    var es = new EventSource("/deployments/live?since=" + encodeURIComponent(since));
    var state = document.querySelector("[data-live-state]");
    es.addEventListener("open", function () {
      if (state) { state.textContent = "Live updates on."; }
    });
    es.addEventListener("error", function () {
      if (state) { state.textContent = "Live updates paused; retrying."; }
    });
    es.addEventListener("status", function (ev) {
      var d;
      try { d = JSON.parse(ev.data); } catch (e) { return; }
      var nodes = document.querySelectorAll('[data-deployment-status="' + d.id + '"]');
      for (var i = 0; i < nodes.length; i++) {
        nodes[i].textContent = d.label;
        nodes[i].className = "badge " + d["class"];
        nodes[i].setAttribute("data-status", d.status);
      }
    });
  }

  // Confirm dialogs for buttons that carry data-confirm.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("[data-confirm]") : null;
    if (b && !window.confirm(b.getAttribute("data-confirm"))) {
      ev.preventDefault();
    }
  });

  // Copy buttons (hidden without JS: there is nothing they could do).
  var copies = document.querySelectorAll("button.copy[data-copy]");
  for (var i = 0; i < copies.length; i++) {
    copies[i].classList.remove("hidden");
    copies[i].addEventListener("click", function (ev) {
      var b = ev.currentTarget;
      if (navigator.clipboard) {
        navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
          b.textContent = "Copied";
        });
      }
    });
  }
})();
