/**
 * @module
 * The small page at `/`: drop an image, see its labels. Plain HTML and a few lines of script.
 */

/** The page; with `needsKey` it shows a field for the API key. */
export function homePage(needsKey: boolean): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>beit-edge</title>
<style>
body{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
#drop{border:2px dashed #888;border-radius:8px;padding:2rem;text-align:center;cursor:pointer}
#drop.over{background:#eef}img{max-width:100%;max-height:16rem;margin-top:1rem}
table{border-collapse:collapse;width:100%;margin-top:1rem}td{padding:.25rem .5rem;border-bottom:1px solid #ddd}
.bar{background:#4a7;height:.6rem;border-radius:3px}#model{color:#555;font-size:.9rem}.err{color:#b00}
</style></head><body>
<h1>beit-edge</h1>
<p id="model">Loading model info…</p>
${needsKey ? '<p><label>API key <input id="key" type="password" autocomplete="off"></label></p>' : ""}
<div id="drop">Drop an image here, or click to choose one<input id="file" type="file" accept="image/*" hidden></div>
<img id="preview" alt="" hidden>
<div id="out"></div>
<script>
const $ = (id) => document.getElementById(id);
const auth = () => { const k = $("key"); return k && k.value ? { authorization: "Bearer " + k.value } : {}; };
fetch("/v1/model", { headers: auth() }).then((r) => r.json()).then((m) => {
  $("model").textContent = m.id ? m.id + " · " + m.precision + " · " + m.stages.length + " stages" + (m.synthetic ? " · SYNTHETIC random weights: labels are meaningless" : "") : (m.detail || "");
}).catch(() => {});
async function classify(file) {
  $("preview").src = URL.createObjectURL(file); $("preview").hidden = false;
  $("out").textContent = "Classifying…";
  const r = await fetch("/v1/classify?top_k=5", { method: "POST", body: file, headers: { "content-type": file.type || "application/octet-stream", ...auth() } });
  const body = await r.json();
  if (!r.ok) { $("out").innerHTML = ""; const p = document.createElement("p"); p.className = "err"; p.textContent = body.detail || r.statusText; $("out").append(p); return; }
  const t = document.createElement("table");
  for (const { label, score } of body) {
    const tr = t.insertRow(); tr.insertCell().textContent = label;
    const c = tr.insertCell(); c.style.width = "40%"; const b = document.createElement("div"); b.className = "bar"; b.style.width = (score * 100).toFixed(1) + "%"; c.append(b);
    tr.insertCell().textContent = (score * 100).toFixed(1) + "%";
  }
  $("out").innerHTML = ""; $("out").append(t);
}
const d = $("drop");
d.onclick = () => $("file").click();
$("file").onchange = (e) => e.target.files[0] && classify(e.target.files[0]);
d.ondragover = (e) => { e.preventDefault(); d.classList.add("over"); };
d.ondragleave = () => d.classList.remove("over");
d.ondrop = (e) => { e.preventDefault(); d.classList.remove("over"); e.dataTransfer.files[0] && classify(e.dataTransfer.files[0]); };
</script></body></html>`;
}
