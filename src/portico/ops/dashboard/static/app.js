// Portico's dashboard: one page, three views (#/ overview, #/vip/KIND/NS/NAME, #/nodes). Each view's document
// arrives as Server-Sent Events from /events and is drawn again whenever it changes. Text goes in with
// textContent only: nothing from the cluster is ever parsed as HTML.
"use strict";

const page = document.getElementById("page");
const live = document.getElementById("live");
let source = null;
let chart = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "width") node.style.width = value;  // through the CSSOM: the CSP allows no inline style
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, testid) {
  return el("table", {"data-testid": testid},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function list(values) { return values && values.length ? values.join(", ") : "—"; }

function vipLink(v) {
  return el("a", {href: `#/vip/${v.kind.toLowerCase()}/${v.namespace}/${v.name}`}, `${v.namespace}/${v.name}`);
}

function backends(v) { return `${v.healthy === null ? "–" : v.healthy}/${v.ready}/${v.total}`; }

function overview(doc) {
  const alerts = doc.alerts === null
    ? el("p", {class: "muted"}, "No Prometheus given (portico dashboard --prometheus URL): no alerts.")
    : doc.alerts.length
      ? el("ul", {"data-testid": "alerts"}, doc.alerts.map((a) =>
          el("li", {class: a.state}, `${a.state}: ${a.name} (${a.severity}) ${a.summary}`)))
      : el("p", {class: "ok", "data-testid": "alerts"}, "No alert pending or firing.");
  return [
    el("h1", {}, "Overview"),
    el("section", {}, el("h2", {}, "VIPs by state"),
      el("div", {class: "chips", "data-testid": "states"}, doc.states.map((s) =>
        el("span", {class: `chip ${s.state}`}, `${s.state}: ${s.count}`)))),
    el("section", {}, el("h2", {}, "Alerts"), alerts,
      doc.problems.length ? el("ul", {}, doc.problems.map((p) => el("li", {class: "warn"}, p))) : null),
    el("section", {}, el("h2", {}, "Pools"), table(["Pool", "Addresses", "Use", ""], doc.pools.map((p) =>
      el("tr", {"data-pool": p.name}, el("td", {}, p.name), el("td", {}, list(p.addresses)),
        el("td", {}, p.usage.map((u) => el("div", {},
          el("span", {class: `bar${u.percent >= 90 ? " full" : ""}`}, el("span", {width: `${u.percent}%`})),
          ` ${u.family} ${u.used}/${u.total}`))),
        el("td", {class: p.ready === "Ready" ? "ok" : "warn"}, p.ready))), "pools")),
    el("section", {}, el("h2", {}, "VIPs"), table(
      ["VIP", "Kind", "Address", "Pool", "Mode", "Announced by", "Backends (healthy/ready/total)", "State", "Why"],
      doc.vips.map((v) => el("tr", {"data-vip": `${v.namespace}/${v.name}`},
        el("td", {}, vipLink(v)), el("td", {}, v.kind), el("td", {}, list(v.addresses)), el("td", {}, v.pool || "—"),
        el("td", {}, v.mode), el("td", {}, list(v.announcers)), el("td", {}, backends(v)),
        el("td", {class: `state ${v.state}`}, v.state), el("td", {class: "muted"}, v.problem))), "vips")),
  ];
}

function vip(doc) {
  const v = doc.row;
  const marks = {ok: "✔", warn: "!", broken: "✘"};
  return [
    el("h1", {}, `${v.kind} ${v.namespace}/${v.name} `, el("span", {class: `state ${v.state}`, "data-testid": "state"},
      v.state)),
    el("section", {}, el("p", {}, `Address ${list(v.addresses)} from pool ${v.pool || "—"}, ${v.mode}, announced by `,
      el("b", {"data-testid": "announcers"}, list(v.announcers)), `. Backends ${backends(v)}.`),
      v.problem ? el("p", {class: "warn"}, v.problem) : null),
    el("section", {}, el("h2", {}, "Backends"), table(["Endpoint", "Pod", "Node", "Readiness", "Health"],
      doc.endpoints.map((e) => el("tr", {"data-endpoint": e.address},
        el("td", {}, e.address), el("td", {}, e.pod || "—"), el("td", {}, e.node || "—"),
        el("td", {class: e.state.replace(" ", "-")}, e.state),
        el("td", {class: e.health || "muted", "data-testid": "health"}, e.health || "not monitored"))), "endpoints")),
    el("section", {}, el("h2", {}, "Traffic (packets/s)"),
      doc.traffic === null ? el("p", {class: "muted"}, "No Prometheus given: no traffic history.")
        : el("div", {id: "traffic", "data-testid": "traffic"})),
    el("section", {}, el("h2", {}, "Path"), el("ul", {class: "steps", "data-testid": "steps"}, doc.steps.map((s) =>
      el("li", {class: s.verdict}, `${marks[s.verdict]} ${s.name}: ${s.says}`,
        s.details.map((d) => el("div", {class: "detail"}, d)),
        s.fix && s.verdict !== "ok" ? el("div", {class: "detail"}, `→ ${s.fix}`) : null)))),
    el("section", {}, el("h2", {}, "Recent events"), table(["Time", "Type", "Reason", "Message"],
      doc.events.map((e) => el("tr", {}, el("td", {}, e.time), el("td", {class: e.type === "Warning" ? "warn" : ""},
        e.type), el("td", {}, e.reason), el("td", {}, e.message))), "events")),
  ];
}

function nodes(doc) {
  return [el("h1", {}, "Nodes"), el("section", {}, table(
    ["Node", "Agent", "Heartbeat", "Unreachable peers", "Unheard by", "L2 VIPs", "BGP VIPs", "BGP sessions",
      "Sync p99", "Problems"],
    doc.nodes.map((n) => el("tr", {"data-node": n.name}, el("td", {}, n.name),
      el("td", {class: n.agent === "Ready" ? "ok" : "broken"}, n.agent), el("td", {}, n.heartbeat || "—"),
      el("td", {}, list(n.unreachable)), el("td", {}, list(n.unheard_by)), el("td", {}, n.layer2), el("td", {}, n.bgp),
      el("td", {}, list(n.sessions)),
      el("td", {}, n.syncP99Seconds === null ? "—" : `${(n.syncP99Seconds * 1000).toFixed(1)} ms`),
      el("td", {class: n.problems.length ? "warn" : ""}, list(n.problems)))), "nodes"))];
}

function drawTraffic(series) {
  const target = document.getElementById("traffic");
  if (!target || !window.uPlot) return;
  const data = [series.map((p) => p[0]), series.map((p) => p[1])];
  if (chart) chart.destroy();
  const now = Date.now() / 1000;
  chart = new uPlot({width: Math.min(target.clientWidth || 900, 1200), height: 180,
    scales: {x: {time: true, range: () => [now - 900, now]}},  // the last 15 minutes, however few points
    series: [{}, {label: "packets/s", stroke: "#3d6fd6", width: 2}], axes: [{}, {size: 60}]}, data, target);
}

function render(view, doc) {
  if (doc.error) {
    live.textContent = doc.error;
    live.className = "live error";
    return;
  }
  live.textContent = `live · ${new Date().toLocaleTimeString()}`;
  live.className = "live";
  const parts = view === "nodes" ? nodes(doc) : view.startsWith("vip/") ? vip(doc) : overview(doc);
  page.replaceChildren(...parts);
  if (view.startsWith("vip/") && doc.traffic) drawTraffic(doc.traffic);
}

function show() {
  const view = (location.hash.replace(/^#\/?/, "") || "overview");
  if (source) source.close();
  source = new EventSource(`/events?view=${encodeURIComponent(view)}`);
  source.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    if (doc === null) page.replaceChildren(el("h1", {}, "No such VIP"), el("p", {}, el("a", {href: "#/"}, "Overview")));
    else render(view, doc);
  };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live error"; };
}

window.addEventListener("hashchange", show);
show();
