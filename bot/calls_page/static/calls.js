// The calls page: live calls (polled every second) and past calls with their transcripts.
// Every value from the server (transcripts are the caller's words) reaches the page through
// textContent only: nothing is ever parsed as HTML.
"use strict";

const LIVE_EVERY_MS = 1000;
const PAST_EVERY_MS = 3000;
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function secs(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(2)} s`;
}

function duration(total) {
  const s = Math.max(0, Math.floor(total));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "–";
}

function status(text, isError) {
  const node = $("status");
  node.textContent = text;
  node.className = isError ? "status error" : "status";
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    throw new Error("not authorised: open this page once as /?token=<VOICEBOT_OPS_TOKEN>");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status} from ${path}`);
  return body;
}

function line(turn) {
  const item = el("li", { class: turn.open ? "open" : "" },
    el("span", { class: `who who-${turn.speaker}`, text: turn.speaker }),
    el("span", { class: "at", text: `${Number(turn.at_secs).toFixed(1)} s` }),
    el("span", { class: "text", text: turn.text || "(no words)" }));
  if (turn.interrupted) item.append(el("span", { class: "cut", text: "[cut by the caller]" }));
  return item;
}

// live calls ----------------------------------------------------------------------------------

async function refreshLive() {
  const data = await getJSON("/api/calls/live");
  const rows = $("live-rows");
  rows.replaceChildren(...data.calls.map((call) => el("tr", { "data-sid": call.call_sid },
    el("td", { class: "sid", text: call.call_sid }),
    el("td", { class: "persona", text: call.persona }),
    el("td", { class: "duration", text: duration(call.duration_secs) }),
    el("td", {}, el("span", {
      class: `state state-${call.state.replace(/ /g, "-")}`, text: call.state })),
    el("td", {}, el("ul", { class: "lines" }, ...call.lines.map(line))))));
  $("live-count").textContent = `(${data.calls.length})`;
  $("live-table").hidden = data.calls.length === 0;
  $("live-empty").hidden = data.calls.length !== 0;
}

// past calls ----------------------------------------------------------------------------------

function pastQuery() {
  const params = new URLSearchParams();
  const persona = $("f-persona").value.trim();
  if (persona) params.set("persona", persona);
  if ($("f-since").value) params.set("since", $("f-since").value);
  if ($("f-failed").checked) params.set("failed", "1");
  return params.toString();
}

async function refreshPast() {
  const data = await getJSON(`/api/calls?${pastQuery()}`);
  const note = $("past-note");
  note.hidden = !(data.note || data.calls.length === 0);
  note.textContent = data.note || "No past calls match.";
  $("past-table").hidden = data.calls.length === 0;
  $("past-rows").replaceChildren(...data.calls.map((call) => {
    const row = el("tr", { class: call.failed ? "pick failed" : "pick", "data-sid": call.call_sid },
      el("td", { text: when(call.started_at) }),
      el("td", { class: "sid", text: call.call_sid }),
      el("td", { class: "persona", text: call.persona }),
      el("td", { class: "caller", text: call.caller }),
      el("td", { text: duration(call.duration_secs) }),
      el("td", { class: "end", text: (call.failed ? "FAILED: " : "") + call.end_reason }),
      el("td", { text: secs(call.setup_secs) }),
      el("td", { text: secs(call.first_audio_secs) }),
      el("td", { text: `${secs(call.response_p50_secs)} / ${secs(call.response_max_secs)}` }),
      el("td", { text: String(call.barge_ins) }),
      el("td", { text: String(call.handovers) }));
    row.addEventListener("click", () => { location.hash = `#call=${call.call_sid}`; });
    return row;
  }));
}

// one call ------------------------------------------------------------------------------------

const FIELDS = [
  ["persona", (c) => c.persona],
  ["caller → called", (c) => `${c.caller} → ${c.called}`],
  ["started (UTC)", (c) => when(c.started_at)],
  ["duration", (c) => secs(c.duration_secs)],
  ["end", (c) => (c.failed ? "FAILED: " : "") + c.end_reason],
  ["setup", (c) => secs(c.setup_secs)],
  ["first audio", (c) => secs(c.first_audio_secs)],
  ["response p50 / max", (c) => `${secs(c.response_p50_secs)} / ${secs(c.response_max_secs)}`
    + ` (${c.responses} responses)`],
  ["barge-ins", (c) => String(c.barge_ins)],
  ["handovers / reconnects", (c) => `${c.handovers} / ${c.reconnects}`],
  ["tokens", (c) => (c.tokens ? Object.entries(c.tokens).map(([k, v]) => `${k} ${v}`).join(", ")
    : "–")],
  ["estimated cost", (c) => (c.cost_usd === null ? "–" : `$${Number(c.cost_usd).toFixed(4)}`)],
  ["Live API close", (c) => c.live_api_close || "–"],
];

function turnItem(turn) {
  const item = line({ ...turn, open: false });
  const heard = turn.heard_text;
  if (turn.interrupted && heard !== null && heard !== undefined) {
    item.append(el("span", { class: "heard",
      text: `heard ${secs(turn.heard_secs)}: ${heard || "(nothing of its words)"}` }));
  }
  return item;
}

async function showCall(sid) {
  $("detail").hidden = false;
  $("detail-sid").textContent = sid;
  $("detail-fields").replaceChildren();
  $("detail-turns").replaceChildren();
  const note = $("detail-note");
  try {
    const { call, turns } = await getJSON(`/api/calls/${encodeURIComponent(sid)}`);
    $("detail-fields").replaceChildren(...FIELDS.flatMap(([name, show]) => [
      el("dt", { text: name }), el("dd", { text: show(call) })]));
    $("detail-turns").replaceChildren(...turns.map(turnItem));
    note.hidden = call.transcript_kept && turns.length > 0;
    note.textContent = call.transcript_kept ? "No turns." : "The persona keeps no transcript.";
  } catch (error) {
    note.hidden = false;
    note.textContent = error.message;
  }
}

function route() {
  const match = /^#call=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (match) showCall(match[1]);
  else $("detail").hidden = true;
}

// polling -------------------------------------------------------------------------------------

function every(ms, refresh) {
  const tick = async () => {
    try {
      await refresh();
      status(`updated ${new Date().toLocaleTimeString()}`, false);
    } catch (error) {
      status(error.message, true);
    }
    setTimeout(tick, ms);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  for (const id of ["f-persona", "f-since", "f-failed"]) {
    $(id).addEventListener("change", () => refreshPast().catch((e) => status(e.message, true)));
  }
  $("detail-close").addEventListener("click", (event) => {
    event.preventDefault();
    history.replaceState(null, "", location.pathname);
    route();
  });
  window.addEventListener("hashchange", route);
  every(LIVE_EVERY_MS, refreshLive);
  every(PAST_EVERY_MS, refreshPast);
  route();
});
