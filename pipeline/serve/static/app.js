// hubcat's search page: plain JavaScript, no library, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("hubcat-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("hubcat-api-key", keyInput.value.trim()));

function headers() {
  const key = keyInput.value.trim();
  return key ? { "X-API-Key": key } : {};
}

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function api(path, options) {
  const response = await fetch(path, { ...(options || {}), headers: headers() });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    if (response.headers.get("Retry-After")) message += " (retry after " + response.headers.get("Retry-After") + " s)";
    throw new Error(message);
  }
  return response;
}

function filterParams() {
  const params = new URLSearchParams();
  params.set("k", $("k").value || "12");
  for (const name of ["instrument", "filter", "zoom"]) {
    const value = $("f-" + name).value;
    if (value) params.set(name, value);
  }
  return params;
}

function fill(select, values) {
  for (const v of values) {
    const option = document.createElement("option");
    option.value = option.textContent = String(v);
    select.appendChild(option);
  }
}

const cutouts = new Map();  // tile id -> object URL of its PNG
async function cutout(img, tileId) {
  if (!cutouts.has(tileId)) {
    const response = await api("/api/tiles/" + encodeURIComponent(tileId) + "/cutout.png");
    cutouts.set(tileId, URL.createObjectURL(await response.blob()));
  }
  img.src = cutouts.get(tileId);
}

function card(row, isQuery) {
  const div = document.createElement("div");
  div.className = "neighbour" + (isQuery ? " query" : "");
  div.dataset.tileId = row.tile_id;
  div.title = "search from this tile";
  const img = document.createElement("img");
  img.alt = row.tile_id;
  div.appendChild(img);
  let score = "";
  if (row.similarity !== undefined) score = "similarity " + Number(row.similarity).toFixed(4);
  else if (row.separation !== undefined) score = "separation " + Number(row.separation).toFixed(1) + "″";
  const lines = [
    ["sim", score],
    ["pos", "RA " + Number(row.ra).toFixed(5) + "  Dec " + Number(row.dec).toFixed(5)],
    ["band", [row.instrument, row.filter, "zoom " + row.zoom].filter(Boolean).join(" · ")],
    ["id", row.tile_id],
  ];
  for (const [cls, text] of lines) {
    const p = document.createElement("div");
    p.className = cls;
    p.textContent = text;
    div.appendChild(p);
  }
  const prov = document.createElement("button");
  prov.className = "provenance";
  prov.type = "button";
  prov.textContent = "provenance";
  prov.addEventListener("click", (event) => { event.stopPropagation(); showProvenance(row.tile_id); });
  div.appendChild(prov);
  div.addEventListener("click", () => searchTile(row.tile_id));
  cutout(img, row.tile_id).catch((e) => { img.alt = "no cutout: " + e.message; });
  return div;
}

function show(body, title) {
  $("query").textContent = title;
  const results = $("results");
  results.replaceChildren();
  const rows = body.rows || [];
  rows.forEach((row, i) => results.appendChild(card(row, i === 0 && title.startsWith("tile"))));
  status(body.meta && body.meta.message ? body.meta.message : rows.length + " result(s)", false);
}

async function run(title, request) {
  status("searching…", false);
  try {
    const response = await request();
    show(await response.json(), title);
  } catch (e) {
    status(e.message, true);
  }
}

function searchTile(tileId) {
  $("tile-id").value = tileId;
  const params = filterParams();
  return run("tile " + tileId, () => api("/api/similar/tile/" + encodeURIComponent(tileId) + "?" + params));
}

async function showProvenance(tileId) {
  const dialog = $("provenance-dialog");
  $("provenance-title").textContent = "Provenance of " + tileId;
  $("provenance-summary").textContent = "checking…";
  $("provenance").textContent = "";
  dialog.showModal();
  try {
    const proof = await (await api("/api/tiles/" + encodeURIComponent(tileId) + "/provenance")).json();
    $("provenance-summary").textContent =
      "leaf " + proof.leaf_index + " of " + proof.tree_size + ", inclusion path of " +
      proof.inclusion_path.length + " hashes to root " + proof.root.slice(0, 16) + "…" +
      (proof.verified_by_server ? " (verified by the service; check it yourself with the operator's public key)" : "");
    $("provenance").textContent = JSON.stringify(proof, null, 1);
  } catch (e) {
    $("provenance-summary").textContent = e.message;
  }
}

$("by-tile").addEventListener("submit", (event) => {
  event.preventDefault();
  searchTile($("tile-id").value.trim());
});

$("by-position").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = filterParams();
  params.set("ra", $("ra").value.trim());
  params.set("dec", $("dec").value.trim());
  if ($("radius").value.trim()) params.set("radius", $("radius").value.trim());
  run("position RA " + $("ra").value + " Dec " + $("dec").value, () => api("/api/similar/position?" + params));
});

$("by-image").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("image-file").files[0];
  if (!file) { status("choose a FITS or PNG file first", true); return; }
  const form = new FormData();
  form.append("file", file, file.name);
  run("image " + file.name, () => api("/api/similar/image?" + filterParams(), { method: "POST", body: form }));
});

async function start() {
  try {
    const info = await (await api("/api/info")).json();
    $("about").textContent = info.tiles + " tiles of " + info.catalogue + " (version " + info.version +
      ", model " + info.model + ")";
    fill($("f-instrument"), info.instruments);
    fill($("f-filter"), info.filters);
    fill($("f-zoom"), info.zooms);
    const first = await (await api("/api/tiles?limit=" + ($("k").value || 12))).json();
    if (first.rows.length) {
      $("tile-id").value = first.rows[0].tile_id;
      show(first, "some tiles of the catalogue (click one to search from it)");
    }
  } catch (e) {
    $("about").textContent = "";
    status(e.message + (e.message.includes("API key") ? " Enter a key above and reload." : ""), true);
  }
}
start();
