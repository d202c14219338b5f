// Entry point. Two modes:
// - live: the page served by `spanprof view`, talking to its JSON API (api.js);
// - embedded: window.SPANPROF_EMBEDDED = {title, flame, value} is defined before
//   this bundle runs (a self-contained HTML file from `spanprof flamegraph`):
//   render that one flame graph and make no request at all.

import { App } from "./app.js";
import { h } from "./dom.js";
import { FlamePanel } from "./flame.js";
import { fmtNs } from "./format.js";
import "./style.css"; // after d3-flame-graph's own CSS, so ours wins

function renderEmbedded(root, data) {
  const title = data.title || "spanprof flame graph";
  document.title = title;
  root.classList.add("embedded");
  const main = h("main");
  root.append(
    h(
      "header",
      { class: "topbar" },
      h("div", { class: "brand" }, "spanprof"),
      h("div", { class: "muted tagline" }, "flame graph"),
    ),
    main,
  );
  const panel = new FlamePanel(main, { embedded: true });
  panel.setValue(data.value, false);
  const total = data.flame && data.flame.value;
  panel.setTitle(title, total ? `${fmtNs(total)} ${panel.value === "wall" ? "wall" : "CPU"} in total` : "");
  panel.setLoading("embedded", "");
  panel.render(data.flame || { name: "all", value: 0, children: [] });
}

function main() {
  const root = document.getElementById("app") || document.body.appendChild(h("div", { id: "app" }));
  const embedded = window.SPANPROF_EMBEDDED;
  if (embedded) renderEmbedded(root, embedded);
  else new App(root).start();
}

// Guard: an embedded page may also carry the <script src="bundle.js"> tag.
if (!window.__spanprofViewer) {
  window.__spanprofViewer = true;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
}
