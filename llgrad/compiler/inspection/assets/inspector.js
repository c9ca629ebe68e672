// The llgrad inspector page's links (compiler/inspection/page.py writes the page).
// Every linked element carries data-s (the user's source line it came from); graph
// lines and drawn nodes also data-n (their value's name in that stage) and, for a
// backward node, data-adj (the forward values whose adjoint it is).
(function () {
  "use strict";
  const panels = Array.from(document.querySelectorAll(".panel"));
  const buttons = Array.from(document.querySelectorAll("nav button"));

  function show(id) {
    panels.forEach(p => p.classList.toggle("active", p.id === id));
    buttons.forEach(b => b.classList.toggle("active", b.dataset.panel === id));
  }
  buttons.forEach(b => b.addEventListener("click", () => show(b.dataset.panel)));

  function clear(cls) {
    document.querySelectorAll("." + cls).forEach(e => e.classList.remove(cls));
  }

  // Highlight, in every stage, what came from source line `line`; returns the
  // count per panel (also shown on the tabs).
  function selectLine(line) {
    clear("hl"); clear("sel"); clear("adj");
    const counts = {};
    document.querySelectorAll('[data-s="' + line + '"]').forEach(e => {
      e.classList.add("hl");
      const panel = e.closest(".panel");
      if (panel) counts[panel.id] = (counts[panel.id] || 0) + 1;
    });
    buttons.forEach(b => {
      b.querySelector(".count").textContent = counts[b.dataset.panel] || "";
    });
    panels.forEach(p => {   // the active stage scrolls to the first of them
      const first = p.querySelector(".hl");
      if (first && p.classList.contains("active")) {
        p.scrollTop += first.getBoundingClientRect().top - p.getBoundingClientRect().top - 60;
      }
    });
    return counts;
  }

  // A value of one stage: it, its source line, and the forward values it is the
  // adjoint of (in that stage's text and drawing).
  function selectNode(scope, element) {
    clear("hl"); clear("sel"); clear("adj");
    const same = '[data-graph="' + scope + '"] [data-n="' + element.dataset.n + '"]';
    document.querySelectorAll(same).forEach(e => e.classList.add("sel"));
    if (element.dataset.s) {
      document.querySelectorAll('#source [data-s="' + element.dataset.s + '"]')
        .forEach(e => e.classList.add("hl"));
    }
    (element.dataset.adj || "").split(" ").filter(Boolean).forEach(name => {
      document.querySelectorAll('[data-graph="' + scope + '"] [data-n="' + name + '"]')
        .forEach(e => e.classList.add("adj"));
    });
  }

  document.querySelectorAll("#source [data-s]").forEach(e => {
    e.addEventListener("click", () => selectLine(e.dataset.s));
    e.addEventListener("mouseenter", () => {
      document.querySelectorAll('.panel [data-s="' + e.dataset.s + '"]')
        .forEach(x => x.classList.add("hv"));
    });
    e.addEventListener("mouseleave", () => clear("hv"));
  });
  panels.forEach(panel => {
    panel.addEventListener("click", ev => {
      const element = ev.target.closest("[data-n]");
      const graph = ev.target.closest("[data-graph]");
      if (element && graph) { selectNode(graph.dataset.graph, element); return; }
      const linked = ev.target.closest("[data-s]");
      if (linked) selectLine(linked.dataset.s);
    });
  });

  const query = new URLSearchParams(location.search);
  if (query.get("tab")) show(query.get("tab"));
  else if (panels.length) show(panels[0].id);
  if (query.get("line")) selectLine(query.get("line"));
  if (query.get("selftest")) {
    // what a test reads from the DOM: a click on the source line with the most links,
    // then the count of highlighted elements per stage
    const lines = Array.from(document.querySelectorAll("#source [data-s]"));
    const linked = l => document.querySelectorAll('.panel [data-s="' + l.dataset.s + '"]').length;
    const best = lines.sort((a, b) => linked(b) - linked(a))[0];
    const report = {line: null, counts: {}, panels: panels.map(p => p.id)};
    if (best) {
      best.dispatchEvent(new MouseEvent("click", {bubbles: true}));
      report.line = Number(best.dataset.s);
      panels.forEach(p => { report.counts[p.id] = p.querySelectorAll(".hl").length; });
      report.source_highlighted = document.querySelectorAll("#source .hl").length;
      const backward = document.querySelector('[data-graph] .code [data-adj]');
      if (backward) {
        backward.dispatchEvent(new MouseEvent("click", {bubbles: true}));
        report.adjoint_highlighted = document.querySelectorAll(".adj").length;
        report.node_source_highlighted = document.querySelectorAll("#source .hl").length;
        best.dispatchEvent(new MouseEvent("click", {bubbles: true}));
      }
    }
    report.ready_ms = Math.round(performance.now());
    const out = document.createElement("pre");
    out.id = "selftest";
    out.hidden = true;
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  }
})();
