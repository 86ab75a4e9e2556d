// The dashboard pages: plain DOM over the JSON API (no build step). Text is always set with textContent.
"use strict";
const page = (location.pathname.replace(/^\//, "") || "cameras").split("/")[0];
document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === page));
const show = document.getElementById(page);
if (show) show.hidden = false;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}
const fmtTime = iso => iso ? iso.replace("T", " ").replace("Z", "") : "";
const fmtNum = (x, d) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);

// -- cameras -------------------------------------------------------------------------------------------
async function refreshCameras() {
  try {
    const data = await getJSON("/api/cameras");
    document.getElementById("mode").textContent = data.live ? "live (served by the running pipeline)" : "read-only view of a store";
    const grid = document.getElementById("camera-grid");
    document.getElementById("cameras-summary").textContent = data.cameras.length + " camera(s)";
    for (const c of data.cameras) {
      let card = grid.querySelector(`[data-camera="${CSS.escape(c.camera_id)}"]`);
      if (!card) {
        card = el("div", {class: "camera", "data-camera": c.camera_id},
          el("h3", {}, c.camera_id), el("img", {alt: "latest frame of " + c.camera_id}), el("div", {class: "meta"}));
        grid.append(card);
      }
      const img = card.querySelector("img");
      if (c.frame_url && c.has_frame !== false) {
        const next = new Image();
        next.onload = () => { img.src = next.src; img.dataset.loaded = "1"; };
        next.src = c.frame_url + "?t=" + Date.now();
      }
      const meta = card.querySelector(".meta");
      meta.replaceChildren(
        el("span", {class: "state state-" + (c.state || "unknown")}, c.state || "unknown"),
        el("span", {}, "fps " + fmtNum(c.fps, 1)),
        el("span", {}, "frames " + (c.frames ?? "–")),
        el("span", {}, "reconnects " + (c.reconnects ?? "–")),
        ...(c.detail ? [el("span", {class: "muted"}, c.detail)] : []));
    }
  } catch (e) { document.getElementById("cameras-summary").textContent = "dashboard unreachable: " + e.message; }
}

// -- identities ----------------------------------------------------------------------------------------
async function refreshIdentities() {
  try {
    const data = await getJSON("/api/identities");
    document.getElementById("identities-summary").textContent =
      data.count + " identities" + (data.merged ? ` (+${data.merged} merged into others)` : "");
    const list = document.getElementById("identity-list");
    const cards = data.identities.map(idn => {
      const title = el("h3", {}, "#" + idn.identity_id,
        idn.status === "merged" ? el("span", {class: "badge merged"}, "merged into #" + idn.merged_into) : null,
        idn.merged_from.length ? el("span", {class: "badge"}, "merged from " + idn.merged_from.map(i => "#" + i).join(", ")) : null,
        idn.outfits.length > 1 ? el("span", {class: "badge changed"}, idn.outfits.length + " outfits (outfit_changed)") : null);
      const hms = iso => fmtTime(iso).slice(11, 19);
      const info = el("div", {class: "muted", title: `first ${idn.first_seen}, last ${idn.last_seen}`},
        `${idn.cameras.join(", ")} · ${hms(idn.first_seen)}–${hms(idn.last_seen)}` +
        (idn.last_camera ? ` (last on ${idn.last_camera})` : "") + ` · ${idn.sightings} sighting(s)`);
      const outfits = el("div", {class: "outfits"}, ...idn.outfits.map(o => el("div", {class: "outfit"},
        el("img", {class: "snapshot", src: o.snapshot_url, alt: `identity ${idn.identity_id} outfit ${o.outfit_id}`}),
        el("div", {}, `outfit ${o.outfit_id}`),
        el("div", {class: "muted"}, o.cameras.join(", ")),
        el("div", {class: "muted"}, fmtTime(o.first_seen).slice(11, 19) + "–" + fmtTime(o.last_seen).slice(11, 19)))));
      if (!idn.outfits.length) outfits.append(el("span", {class: "muted"}, "no snapshot yet"));
      return el("div", {class: "identity " + idn.status, "data-identity": idn.identity_id}, title, info, outfits);
    });
    list.replaceChildren(...cards);
  } catch (e) { document.getElementById("identities-summary").textContent = "dashboard unreachable: " + e.message; }
}

// -- events --------------------------------------------------------------------------------------------
let source = null, liveCount = 0;
function eventRow(ev, live) {
  const vt = ev.video_time_s === null || ev.video_time_s === undefined ? "" : Number(ev.video_time_s).toFixed(2) + " s";
  const idText = ev.identity_id ?? "";
  return el("tr", {class: live ? "live" : "", "data-type": ev.type, "data-id": ev.stream_id},
    el("td", {}, fmtTime(ev.ts)), el("td", {}, vt), el("td", {}, ev.camera_id ?? ""), el("td", {}, ev.type),
    el("td", {}, ev.merged_from ? `${idText} ← ${ev.merged_from}` : idText), el("td", {}, ev.outfit_id ?? ""),
    el("td", {}, ev.track_id ?? ""), el("td", {}, ev.similarity ?? ""), el("td", {}, ev.state || ev.detail || ""));
}
function filterQuery() {
  const f = new FormData(document.getElementById("event-filters"));
  const q = new URLSearchParams();
  for (const [k, v] of f.entries()) if (v) q.set(k, v);
  return q;
}
async function loadEvents() {
  if (source) source.close();
  const q = filterQuery();
  const rows = document.getElementById("event-rows");
  const state = document.getElementById("stream-state");
  try {
    const recent = await getJSON("/api/events?limit=200&" + q);
    rows.replaceChildren(...recent.events.map(ev => eventRow(ev, false)));
    q.set("after", recent.last_id);
  } catch (e) { state.textContent = "cannot load events: " + e.message; }
  source = new EventSource("/api/events/stream?" + q);
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = msg => {
    const ev = JSON.parse(msg.data);
    rows.prepend(eventRow(ev, true));
    while (rows.children.length > 500) rows.lastChild.remove();
    liveCount += 1;
    document.getElementById("live-count").textContent = liveCount;
  };
}
async function initEvents() {
  try {
    const cams = await getJSON("/api/cameras");
    const sel = document.querySelector("#event-filters select[name=camera]");
    for (const c of cams.cameras) sel.append(el("option", {value: c.camera_id}, c.camera_id));
  } catch (e) { /* the feed works without the camera list */ }
  const params = new URLSearchParams(location.search);
  const form = document.getElementById("event-filters");
  for (const k of ["camera", "identity", "type"]) if (params.get(k)) form.elements[k].value = params.get(k);
  form.addEventListener("change", loadEvents);
  form.addEventListener("submit", e => { e.preventDefault(); loadEvents(); });
  loadEvents();
}

if (page === "cameras") { refreshCameras(); setInterval(refreshCameras, 1000); }
if (page === "identities") { refreshIdentities(); setInterval(refreshIdentities, 3000); }
if (page === "events") { initEvents(); }
