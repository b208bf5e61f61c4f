/**
 * @module
 * The demo page at `/`, one page for the service's uses, in two views (`#classify`, `#tagged`):
 * - Classify: choose or drop an image, see its labels, the timing and the model that answered.
 * - Tagged images: the images the tagging Worker has recorded (`GET /v1/images`), each with its
 *   thumbnail, status and labels, a search by label (`GET /v1/images?label=`), and a button that
 *   tags the whole IMAGES bucket (`POST /v1/images/backfill`, what `npm run tag` does) when nothing
 *   is recorded yet. The model line says when the model is synthetic.
 * It links to the OpenAPI document and names the docs. Plain HTML and a short script, no
 * dependencies.
 *
 * Accessibility and robustness (tested in a real browser by test/demo-page.browser.test.ts):
 * a real button opens the file chooser (Tab reaches it, Enter and Space press it); results,
 * progress and errors go to a polite live region; the same file can be chosen twice in a row;
 * a file that is not a supported image gets a message saying so; an unreachable server or a
 * non-JSON answer gets a clear error, never an endless "Classifying…" or an uncaught error.
 * The icon is served at /favicon.ico ({@link FAVICON_SVG}), so a page load makes no 404.
 * The views are switched by ordinary links (the URL's hash), so they work from the keyboard, with
 * the back button and as bookmarks; the search is a form (Enter submits).
 */

/** The page icon (SVG, served at /favicon.ico with type image/svg+xml). */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#2a6"/><path d="M8 22l5-7 4 5 3-3 4 5z" fill="#fff"/><circle cx="21" cy="11" r="3" fill="#fff"/></svg>`;

/** Options of {@link homePage}. */
export interface HomePageOptions {
  /** Show a field for the API key (`API_KEY` is set). */
  needsKey: boolean;
  /** The IMAGES bucket the tagging view can backfill (`IMAGES_BUCKET`); none hides the button. */
  imagesBucket?: string;
}

const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The page. */
export function homePage(opts: HomePageOptions): string {
  const { needsKey } = opts;
  const bucket = opts.imagesBucket ?? "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>beit-edge</title>
<link rel="icon" type="image/svg+xml" href="/favicon.ico">
<style>
body{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#111}
#drop{border:2px dashed #777;border-radius:8px;padding:1.5rem 1rem;text-align:center}
#drop.over{background:#eef;border-color:#336}
button{font:inherit;padding:.5rem 1rem;border-radius:6px;border:1px solid #335;background:#335;color:#fff;cursor:pointer}
button:focus-visible,input:focus-visible{outline:3px solid #f90;outline-offset:2px}
img{max-width:100%;max-height:16rem;margin-top:1rem}
table{border-collapse:collapse;width:100%;margin-top:1rem}td{padding:.25rem .5rem;border-bottom:1px solid #ddd;overflow-wrap:anywhere}td:last-child{white-space:nowrap;text-align:right}
.bar{background:#2a6;height:.6rem;border-radius:3px}#model,#timing{color:#444;font-size:.9rem}.err{color:#a00}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
nav a{margin-right:1rem}nav a[aria-current=page]{font-weight:bold;text-decoration:none;color:#111}
a:focus-visible{outline:3px solid #f90;outline-offset:2px}
#gallery{list-style:none;padding:0}#gallery>li{display:flex;gap:1rem;border-bottom:1px solid #ddd;padding:.75rem 0}
#gallery img,#gallery .noimg{width:6rem;height:6rem;object-fit:cover;margin:0;flex:none}#gallery ol{margin:.25rem 0;padding-left:1.25rem}
.status{color:#444;font-size:.9rem}footer{margin-top:2rem;color:#444;font-size:.9rem}
</style></head><body>
<header>
<h1>beit-edge</h1>
<nav aria-label="Views"><a id="nav-classify" href="#classify">Classify an image</a><a id="nav-tagged" href="#tagged">Tagged images</a></nav>
<p id="model">Loading model info…</p>
${needsKey ? '<p><label for="key">API key</label> <input id="key" type="password" autocomplete="off"></p>' : ""}
</header>
<main>
<section id="classify" aria-labelledby="nav-classify">
<h2 class="sr">Classify an image</h2>
<div id="drop">
<button id="choose" type="button">Choose an image…</button>
<p>or drop one here (JPEG, PNG, WebP, AVIF or GIF)</p>
<input id="file" type="file" accept="image/*" class="sr" tabindex="-1" aria-hidden="true">
</div>
<img id="preview" alt="" hidden>
<div id="out" role="status" aria-live="polite" aria-atomic="true"></div>
<p id="timing"></p>
</section>
<section id="tagged" aria-labelledby="tagged-title" hidden>
<h2 id="tagged-title">Tagged images</h2>
<p>The images the tagging Worker serves under <code>/images/</code>, with the labels it stored for each.</p>
<form id="search" role="search"><label for="label">Label</label> <input id="label" name="label" type="search" autocomplete="off" placeholder="an exact label">
<button type="submit">Search</button> <button id="show-all" type="button">Show all</button></form>
${bucket ? `<p><button id="tag-all" type="button" data-bucket="${escapeHtml(bucket)}">Tag every image of ${escapeHtml(bucket)}</button></p>` : ""}
<div id="tagged-status" role="status" aria-live="polite"></div>
<ul id="gallery" aria-label="Images"></ul>
</section>
</main>
<footer>API: <a href="/openapi.json">OpenAPI document</a> · Docs: <code>README.md</code> and <code>docs/</code> in the repository (<code>docs/api.md</code>, <code>docs/tagging.md</code>, <code>docs/jobs.md</code>)</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const auth = () => { const k = $("key"); return k && k.value ? { authorization: "Bearer " + k.value } : {}; };
let modelInfo = "";
/** Fetches JSON; never throws: { ok, status, body, headers } or { error } when unreachable. */
async function call(url, init) {
  let r;
  try { r = await fetch(url, init); } catch (e) { return { error: "The service could not be reached (" + (e && e.message || e) + "). Is it running?" }; }
  let body = null;
  try { body = await r.json(); } catch { body = null; }
  return { ok: r.ok, status: r.status, body, headers: r.headers };
}
async function loadModel() {
  const r = await call("/v1/model", { headers: auth() });
  if (r.error) { $("model").textContent = r.error; return; }
  const m = r.body || {};
  if (!r.ok) { $("model").textContent = r.status === 401 ? "Enter the API key to use this service." : (m.detail || "Model info unavailable (HTTP " + r.status + ")."); return; }
  modelInfo = m.id + " · version " + String(m.version).slice(0, 12) + " · " + m.precision + " · " + m.stages.length + " stages";
  $("model").textContent = "Model: " + modelInfo + (m.synthetic ? " · SYNTHETIC random weights: labels are meaningless" : "");
}
function say(text, isError) {
  const out = $("out"); out.replaceChildren();
  const p = document.createElement("p"); p.textContent = text; if (isError) p.className = "err"; out.append(p);
}
/** "decode;dur=12.0, stage-0;dur=40, total;dur=60" -> "decode 12 ms · model 40 ms · total 60 ms". */
function timingText(header) {
  const t = {}; let model = 0, stages = 0;
  for (const part of (header || "").split(",")) {
    const m = /^\\s*([\\w-]+)(?:;[^,]*?dur=([\\d.]+))?/.exec(part);
    if (!m || m[2] === undefined) continue;
    const ms = Number(m[2]);
    if (m[1].startsWith("stage-")) { model += ms; stages++; } else t[m[1]] = ms;
  }
  const bits = [];
  if (t.decode !== undefined) bits.push("decode " + Math.round(t.decode) + " ms");
  if (stages) bits.push("model " + Math.round(model) + " ms (" + stages + " stages)");
  if (t.total !== undefined) bits.push("total " + Math.round(t.total) + " ms");
  if (t.warm !== undefined) bits.push("cold start: warm-up " + Math.round(t.warm) + " ms");
  return bits.join(" · ");
}
const NOT_IMAGE = ["unsupported-format", "undecodable-image", "unsupported-media-type", "empty-body", "image-too-small"];
let busy = false;
async function classify(file) {
  if (busy) return;
  busy = true; $("out").setAttribute("aria-busy", "true"); $("timing").textContent = "";
  try {
    const isImage = file.type.startsWith("image/");
    $("preview").hidden = true;
    if (isImage) { $("preview").src = URL.createObjectURL(file); $("preview").alt = "The chosen image, " + file.name; $("preview").hidden = false; }
    say("Classifying " + file.name + "…");
    const r = await call("/v1/classify?top_k=5", { method: "POST", body: file, headers: { "content-type": isImage ? file.type : "application/octet-stream", ...auth() } });
    if (r.error) { say(r.error, true); return; }
    const b = r.body || {};
    if (!r.ok) {
      if (NOT_IMAGE.includes(b.code)) say(file.name + " is not a supported image (JPEG, PNG, WebP, AVIF or GIF). " + (b.detail || ""), true);
      else if (r.status === 401) say("The API key is missing or wrong.", true);
      else say((b.detail || "The service answered HTTP " + r.status + ".") + (r.status === 503 || r.status === 504 ? " Try again in a few seconds." : ""), true);
      return;
    }
    if (!Array.isArray(b)) { say("The service answered something unexpected.", true); return; }
    const t = document.createElement("table");
    const cap = t.createCaption(); cap.className = "sr"; cap.textContent = "Top labels for " + file.name;
    for (const { label, score } of b) {
      const tr = t.insertRow(); tr.insertCell().textContent = label;
      const c = tr.insertCell(); c.style.width = "35%"; c.setAttribute("aria-hidden", "true");
      const bar = document.createElement("div"); bar.className = "bar"; bar.style.width = (score * 100).toFixed(1) + "%"; c.append(bar);
      tr.insertCell().textContent = (score * 100).toFixed(1) + "%";
    }
    $("out").replaceChildren(t);
    const id = r.headers.get("x-model-id"), v = r.headers.get("x-model-version");
    const who = id ? id + " (version " + String(v).slice(0, 12) + (r.headers.get("x-model-synthetic") === "true" ? ", synthetic" : "") + ")" : modelInfo;
    $("timing").textContent = [timingText(r.headers.get("server-timing")), who && "answered by " + who].filter(Boolean).join(" · ");
  } catch (e) {
    say("Something went wrong in the page: " + (e && e.message || e), true);
  } finally {
    busy = false; $("out").removeAttribute("aria-busy");
  }
}
$("choose").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (e) => {
  const f = e.target.files && e.target.files[0];
  e.target.value = ""; // so choosing the same file again fires change again
  if (f) classify(f);
});
const d = $("drop");
d.addEventListener("dragover", (e) => { e.preventDefault(); d.classList.add("over"); });
d.addEventListener("dragleave", () => d.classList.remove("over"));
d.addEventListener("drop", (e) => { e.preventDefault(); d.classList.remove("over"); const f = e.dataTransfer && e.dataTransfer.files[0]; if (f) classify(f); });
/* The tagged-images view. */
function tagStatus(text, isError) { const p = $("tagged-status"); p.textContent = text; p.className = isError ? "err" : ""; }
function imageItem(it) {
  const li = document.createElement("li");
  const src = it.public_url ? new URL(it.public_url, location.href) : null;
  let img;
  if (it.format) {
    img = document.createElement("img");
    img.src = src && src.origin === location.origin ? src.pathname + src.search : "/images/" + encodeURI(it.key || "");
    img.alt = it.key || it.url || "image";
  } else { img = document.createElement("div"); img.className = "noimg"; }
  const div = document.createElement("div");
  const name = document.createElement("strong"); name.textContent = it.key || it.url; div.append(name);
  const st = document.createElement("div"); st.className = "status";
  st.textContent = it.status + (it.reason ? " (" + it.reason + ")" : "") + (it.model ? " · " + it.model.id + " " + String(it.model.version).slice(0, 12) : "") + (it.score !== undefined ? " · match " + (it.score * 100).toFixed(1) + "%" : "");
  div.append(st);
  if (it.labels && it.labels.length) {
    const ol = document.createElement("ol"); ol.setAttribute("aria-label", "Labels of " + (it.key || it.url));
    for (const l of it.labels) { const x = document.createElement("li"); x.textContent = l.label + " " + (l.score * 100).toFixed(1) + "%"; ol.append(x); }
    div.append(ol);
  }
  li.append(img, div);
  return li;
}
async function loadImages(label) {
  const q = label ? "?limit=100&label=" + encodeURIComponent(label) : "?limit=100";
  tagStatus(label ? "Searching for " + label + "…" : "Loading the tagged images…");
  const r = await call("/v1/images" + q, { headers: auth() });
  if (r.error) { tagStatus(r.error, true); return; }
  const b = r.body || {};
  if (!r.ok) { tagStatus(r.status === 401 ? "Enter the API key to see the tagged images." : (b.detail || "The service answered HTTP " + r.status + "."), true); return; }
  const items = Array.isArray(b.items) ? b.items : [];
  $("gallery").replaceChildren(...items.map(imageItem));
  if (label) tagStatus(items.length ? items.length + " image(s) labelled " + label + "." : "No image is labelled " + label + " (labels match whole, case-insensitively).");
  else tagStatus(items.length ? items.length + " image(s) recorded; " + items.filter((i) => i.status === "tagged").length + " tagged." : "No image is recorded yet: request one under /images/, or tag the whole bucket.");
  return items;
}
$("search").addEventListener("submit", (e) => { e.preventDefault(); const v = $("label").value.trim(); if (v) loadImages(v); else loadImages(); });
$("show-all").addEventListener("click", () => { $("label").value = ""; loadImages(); });
if ($("tag-all")) $("tag-all").addEventListener("click", async () => {
  const bucket = $("tag-all").dataset.bucket;
  tagStatus("Enqueueing every image of " + bucket + "…");
  const r = await call("/v1/images/backfill", { method: "POST", headers: { "content-type": "application/json", ...auth() }, body: JSON.stringify({ bucket }) });
  if (r.error) { tagStatus(r.error, true); return; }
  if (!r.ok) { tagStatus((r.body && r.body.detail) || "The service answered HTTP " + r.status + ".", true); return; }
  tagStatus(r.body.enqueued + " image(s) enqueued; their labels appear as the queue runs.");
  for (let i = 0; i < 30; i++) {
    await new Promise((ok) => setTimeout(ok, 2000));
    if ($("tagged").hidden) return;
    const items = await loadImages();
    if (items && items.length >= r.body.enqueued && items.every((it) => it.status !== "pending")) return;
  }
});
/* Views: the URL's hash picks one; plain links switch them. */
function showView() {
  const view = location.hash === "#tagged" ? "tagged" : "classify";
  $("classify").hidden = view !== "classify"; $("tagged").hidden = view !== "tagged";
  $("nav-classify").toggleAttribute("aria-current", view === "classify"); $("nav-tagged").toggleAttribute("aria-current", view === "tagged");
  if (view === "classify") $("nav-classify").setAttribute("aria-current", "page"); else $("nav-tagged").setAttribute("aria-current", "page");
  document.title = view === "tagged" ? "Tagged images · beit-edge" : "beit-edge";
  if (view === "tagged") loadImages();
}
addEventListener("hashchange", showView);
showView();
if ($("key")) $("key").addEventListener("change", () => { loadModel(); if (!$("tagged").hidden) loadImages(); });
loadModel();
</script></body></html>`;
}
