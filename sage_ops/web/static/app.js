// sage-ops dashboard: live updates over server-sent events, no framework, no inline script.
// The jobs table reloads its rows at most once a second after changes (a burst is one reload),
// and never while the reader points at it or has rows selected: it says how many changes wait.
"use strict";

// what the page did, for anyone measuring it (benchmarks/web.py)
window.sageOps = {events: 0, reloads: 0};

function liveJobs() {
  const table = document.getElementById("jobs");
  if (!table) return;
  const rows = document.getElementById("rows");
  const waiting = document.getElementById("pending-updates");
  const live = document.getElementById("live");
  let dirty = 0, hovering = false, timer = null;
  const busy = () => hovering || rows.querySelector("input[type=checkbox]:checked") !== null;
  const apply = async () => {
    timer = null;
    if (!dirty) return;
    if (busy()) { waiting.textContent = dirty + " change(s) waiting: move the pointer away or clear the selection"; return; }
    dirty = 0;
    waiting.textContent = "";
    const answer = await fetch(table.dataset.rows, {credentials: "same-origin"});
    if (answer.ok) { rows.innerHTML = await answer.text(); window.sageOps.reloads += 1; }
  };
  const later = () => { if (timer === null) timer = setTimeout(apply, 1000); };
  table.addEventListener("mouseenter", () => { hovering = true; });
  table.addEventListener("mouseleave", () => { hovering = false; later(); });
  rows.addEventListener("change", later);
  const source = new EventSource("/web/events");
  source.addEventListener("job", (e) => {
    const change = JSON.parse(e.data);
    if (change.kind === "heartbeat") { live.textContent = "live"; return; }
    window.sageOps.events += 1;
    dirty += 1;
    later();
  });
  source.onerror = () => { live.textContent = "reconnecting…"; };
}

function liveLog() {
  const log = document.getElementById("log");
  if (!log) return;
  const filter = document.getElementById("log-filter");
  const lines = [];
  const show = () => {
    const needle = filter.value;
    const shown = needle ? lines.filter((l) => l.includes(needle)) : lines;
    log.textContent = shown.join("\n");
  };
  filter.addEventListener("input", show);
  const source = new EventSource(log.dataset.src);
  source.addEventListener("line", (e) => {
    const entry = JSON.parse(e.data);
    if (entry.message === undefined) return;
    const stuck = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    lines.push(entry.message.replace(/\n$/, ""));
    if (!filter.value || entry.message.includes(filter.value)) {
      log.textContent += (log.textContent ? "\n" : "") + lines[lines.length - 1];
    }
    if (stuck) log.scrollTop = log.scrollHeight;
  });
}

document.addEventListener("DOMContentLoaded", () => { liveJobs(); liveLog(); });
