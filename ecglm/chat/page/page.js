// The ECG-LM chat page. Every text from the server goes in with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function add(parent, tag, text, cls) {
  const el = document.createElement(tag);
  if (text !== undefined && text !== null) el.textContent = text;
  if (cls) el.className = cls;
  parent.appendChild(el);
  return el;
}

function plot(samples, fs) {
  const svg = document.createElementNS(SVG, "svg");
  const width = samples.length, lo = -1.5, hi = 1.5;  // mV
  svg.setAttribute("viewBox", `0 0 ${width} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS(SVG, "polyline");
  const points = samples.map((v, i) => {
    const y = 100 - ((Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo)) * 100;
    return `${i},${y.toFixed(2)}`;
  });
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  svg.dataset.fs = String(fs);
  return svg;
}

function showEcg(view) {
  $("ecg-title").textContent = `${view.source}: ${view.seconds} s at ${view.fs} Hz`;
  $("measurements").textContent = view.failure
    ? `Could not measure this recording: ${view.failure}`
    : view.measurements.map((m) => `${m.label} ${m.value}${m.unit === "°" ? "" : " "}${m.unit}`).join(", ");
  $("general").textContent = view.failure ? "" : `Findings in general: ${view.general || "none"}`;
  const leads = $("leads");
  leads.replaceChildren();
  for (const lead of view.leads) {
    const row = add(leads, "div", null, lead.recorded ? "lead" : "lead absent");
    row.dataset.lead = lead.name;
    add(row, "span", lead.name, "name");
    if (lead.recorded) row.appendChild(plot(lead.samples, view.plot_fs));
    else add(row, "span", "not recorded");
    add(row, "span", lead.recorded ? (lead.finding || "no finding") : "", "finding");
  }
  $("messages").replaceChildren();
}

async function loadRecords() {
  const response = await fetch("/api/records");
  const body = await response.json();
  if (!body.records.length) { $("pick-label").hidden = true; return; }
  for (const r of body.records) {
    const who = [r.age, r.sex].filter((x) => x !== null && x !== undefined).join(", ");
    add($("pick"), "option", who ? `${r.ecg_id} (${who})` : String(r.ecg_id)).value = String(r.ecg_id);
  }
}

async function sendEcg(event) {
  event.preventDefault();
  $("ecg-error").textContent = "";
  $("load").disabled = true;
  try {
    const response = await fetch("/api/ecg", { method: "POST", body: new FormData($("ecg-form")) });
    const body = await response.json();
    if (!response.ok) { $("ecg-error").textContent = body.error || `error ${response.status}`; return; }
    showEcg(body);
  } catch (err) {
    $("ecg-error").textContent = String(err);
  } finally {
    $("load").disabled = false;
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("question").value = "";
  add($("messages"), "div", question, "msg user");
  const answer = add($("messages"), "div", "", "msg model");
  $("ask").disabled = true;
  try {
    const response = await fetch("/api/ask", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }),
    });
    if (!response.ok) { answer.textContent = (await response.json()).error; return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const item = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        if (item.text) answer.textContent += item.text;
        if (item.error) add($("messages"), "div", item.error, "msg note");
        if (item.dropped_turns) {
          add($("messages"), "div", `The context is full: the oldest ${item.dropped_turns} turn(s) were left out of this answer.`, "msg note");
        }
        if (item.done) answer.dataset.done = "true";
      }
    }
  } finally {
    $("ask").disabled = false;
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("ecg-form").addEventListener("submit", sendEcg);
  $("ask-form").addEventListener("submit", ask);
  loadRecords();
});
