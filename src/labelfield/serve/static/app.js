// labelfield serve: the page. Plain JS, no build step. Talks to the JSON API in serve/app.py.
// Strokes are drawn in image pixel coordinates (pixel centres at integers), sent when the pointer is
// released, and kept in localStorage until the server has acknowledged (logged) them, so a lost
// connection or a server restart loses nothing; the stroke layer is then reloaded from the server.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  frames: [], classes: null, cur: 0, classId: null, tool: "brush", size: 6,
  zoom: 1, panX: 0, panY: 0, predStep: -1, predFrame: -1, view: "labels",
  thumbSteps: {}, confidence: {}, strokes: {}, drawing: null, panning: null, space: false,
  pendingKey: "labelfield-pending", sending: false,
};
window.labelfield = S; // for tests and the curious

async function api(path, body) {
  const opt = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opt);
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = reject;
    im.src = url;
  });
}

// ---- palette ------------------------------------------------------------------------------------
function trainClasses() {
  const c = S.classes;
  return c.ids.map((id, k) => ({ id, name: c.classes[k], color: c.colors[k] })).filter((r) => r.id !== c.ignore_index);
}
const hex = (c) => "#" + c.map((x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));

function renderPalette() {
  const ul = $("palette");
  ul.innerHTML = "";
  trainClasses().forEach((r, k) => {
    const li = document.createElement("li");
    li.dataset.classId = r.id;
    if (r.id === S.classId) li.classList.add("active");
    li.innerHTML = `<span class="key">${k < 9 ? k + 1 : ""}</span><input type="color" value="${hex(r.color)}">` +
      `<span class="name"></span>`;
    li.querySelector(".name").textContent = r.name;
    li.onclick = (e) => { if (e.target.type !== "color") selectClass(r.id); };
    li.ondblclick = () => {
      const name = prompt("Rename class", r.name);
      if (name && name.trim()) saveClasses((rows) => { rows.find((x) => x.id === r.id).name = name.trim(); });
    };
    li.querySelector("input").onchange = (e) =>
      saveClasses((rows) => { rows.find((x) => x.id === r.id).color = unhex(e.target.value); });
    ul.appendChild(li);
  });
}

function selectClass(id) {
  S.classId = id;
  if (S.tool === "eraser") setTool("brush");
  renderPalette();
}

async function saveClasses(edit) {
  const c = S.classes;
  const rows = c.ids.map((id, k) => ({ id, name: c.classes[k], color: c.colors[k].slice() }));
  edit(rows);
  try {
    const r = await api("/api/classes", { classes: rows });
    S.classes = (await r.json()).classes;
  } catch (e) { alert(e.message); }
  renderPalette();
  refreshStrokes(S.cur);
}

$("add-class").onclick = () => {
  const name = prompt("New class name");
  if (!name || !name.trim()) return;
  const id = Math.max(...S.classes.ids) + 1;
  const color = [0, 0, 0].map(() => 60 + Math.floor(Math.random() * 190));
  saveClasses((rows) => rows.push({ id, name: name.trim(), color }));
};

// ---- tools --------------------------------------------------------------------------------------
function setTool(t) {
  S.tool = t;
  document.querySelectorAll("#tools button").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
}
document.querySelectorAll("#tools button").forEach((b) => { b.onclick = () => setTool(b.dataset.tool); });
function setSize(n) {
  S.size = Math.max(1, Math.min(60, n));
  $("size").value = S.size;
  $("size-value").textContent = S.size;
}
$("size").oninput = (e) => setSize(+e.target.value);

// ---- frames -------------------------------------------------------------------------------------
function buildStrip() {
  const strip = $("strip");
  strip.innerHTML = "";
  for (const f of S.frames) {
    const d = document.createElement("div");
    d.className = "thumb";
    d.dataset.frameIndex = f.index;
    d.title = f.name;
    d.innerHTML = `<img loading="lazy" src="/api/frame/${f.index}/image?size=thumb"><canvas></canvas>` +
      `<span class="name">${f.index}</span><span class="conf" style="width:0"></span>`;
    d.onclick = () => gotoFrame(f.index);
    strip.appendChild(d);
  }
  $("scrub").max = S.frames.length - 1;
  $("scrub").oninput = (e) => gotoFrame(+e.target.value);
}

function updateStripBadges() {
  document.querySelectorAll(".thumb").forEach((d) => {
    const i = d.dataset.frameIndex;
    d.classList.toggle("current", +i === S.cur);
    let badge = d.querySelector(".badge");
    const n = S.strokes[i] || 0;
    if (n && !badge) { badge = document.createElement("span"); badge.className = "badge"; d.appendChild(badge); }
    if (badge) { if (n) badge.textContent = n; else badge.remove(); }
    const c = S.confidence[i];
    const bar = d.querySelector(".conf");
    bar.style.width = c === undefined ? "0" : `${Math.round((1 - c) * 100)}%`;
  });
}

async function gotoFrame(i) {
  i = Math.max(0, Math.min(S.frames.length - 1, i));
  const first = !S.fitted;
  S.fitted = true;
  S.cur = i;
  document.body.dataset.frame = i;
  $("scrub").value = i;
  const f = S.frames[i];
  $("frame-label").textContent = `frame ${i} · ${f.name}`;
  for (const id of ["img", "pred", "strokes", "cursor"]) {
    const c = $(id);
    if (c.width !== f.width || c.height !== f.height) { c.width = f.width; c.height = f.height; }
  }
  $("stage").style.width = f.width + "px";
  $("stage").style.height = f.height + "px";
  if (first) fit();
  clearCanvas("pred");
  S.predStep = -1;
  document.body.dataset.predStep = -1;
  updateStripBadges();
  const im = await loadImage(`/api/frame/${i}/image`);
  if (S.cur !== i) return;
  $("img").getContext("2d").drawImage(im, 0, 0);
  await refreshStrokes(i);
  pollPred();
  const el = document.querySelector(`.thumb[data-frame-index="${i}"]`);
  if (el) { // keep the current thumbnail in view, scrolling only the strip
    const strip = $("strip");
    const l = el.offsetLeft - strip.offsetLeft, r = l + el.offsetWidth;
    if (l < strip.scrollLeft) strip.scrollLeft = l;
    else if (r > strip.scrollLeft + strip.clientWidth) strip.scrollLeft = r - strip.clientWidth;
  }
}

function clearCanvas(id) { const c = $(id); c.getContext("2d").clearRect(0, 0, c.width, c.height); }

async function refreshStrokes(i) {
  const im = await loadImage(`/api/frame/${i}/strokes?t=${Date.now()}`);
  if (S.cur !== i) return;
  const ctx = $("strokes").getContext("2d");
  ctx.clearRect(0, 0, im.width, im.height);
  ctx.drawImage(im, 0, 0);
  drawPendingStrokes();
  document.body.dataset.strokesLoaded = `${i}:${Date.now()}`;
}

// ---- zoom / pan ---------------------------------------------------------------------------------
function applyTransform() {
  $("stage").style.transform = `translate(${S.panX}px, ${S.panY}px) scale(${S.zoom})`;
}
function fit() {
  const vp = $("viewport").getBoundingClientRect();
  const f = S.frames[S.cur];
  S.zoom = Math.min(vp.width / f.width, vp.height / f.height) * 0.96;
  S.panX = (vp.width - f.width * S.zoom) / 2;
  S.panY = (vp.height - f.height * S.zoom) / 2;
  applyTransform();
}
$("viewport").addEventListener("wheel", (e) => {
  e.preventDefault();
  const vp = $("viewport").getBoundingClientRect();
  const mx = e.clientX - vp.left, my = e.clientY - vp.top;
  const k = Math.exp(-e.deltaY * 0.0015);
  S.panX = mx - (mx - S.panX) * k;
  S.panY = my - (my - S.panY) * k;
  S.zoom *= k;
  applyTransform();
}, { passive: false });

// image pixel coordinates of a pointer event (pixel centres at integers)
function imageXY(e) {
  const r = $("img").getBoundingClientRect();
  const f = S.frames[S.cur];
  return [(e.clientX - r.left) / r.width * f.width - 0.5, (e.clientY - r.top) / r.height * f.height - 0.5];
}

// ---- drawing ------------------------------------------------------------------------------------
function strokeColor(s) {
  if (s.tool === "eraser") return null;
  const k = S.classes.ids.indexOf(s.class_id);
  return k < 0 ? [255, 255, 255] : S.classes.colors[k];
}
function paintLocal(s) {
  // A preview of the stroke until the server's exact raster replaces it.
  const ctx = $("strokes").getContext("2d");
  const col = strokeColor(s);
  ctx.save();
  ctx.globalCompositeOperation = col ? "source-over" : "destination-out";
  ctx.fillStyle = ctx.strokeStyle = col ? `rgb(${col.join(",")})` : "#000";
  ctx.lineWidth = Math.max(1, 2 * s.radius);
  ctx.lineCap = ctx.lineJoin = "round";
  const p = s.points.map(([x, y]) => [x + 0.5, y + 0.5]);
  if (p.length === 1 || s.radius < 0.5) {
    for (const [x, y] of p) ctx.fillRect(Math.floor(x), Math.floor(y), 1, 1);
  }
  if (s.radius >= 0.5) {
    ctx.beginPath();
    ctx.moveTo(p[0][0], p[0][1]);
    for (const [x, y] of p.slice(1)) ctx.lineTo(x, y);
    if (p.length === 1) ctx.lineTo(p[0][0] + 0.01, p[0][1]);
    ctx.stroke();
  }
  ctx.restore();
}

function pending() { try { return JSON.parse(localStorage.getItem(S.pendingKey) || "[]"); } catch { return []; } }
function setPending(list) { localStorage.setItem(S.pendingKey, JSON.stringify(list)); }
function drawPendingStrokes() { for (const s of pending()) if (s.frame === S.cur) paintLocal(s); }

async function flushPending() {
  if (S.sending) return;
  S.sending = true;
  try {
    let list = pending();
    while (list.length) {
      const s = list[0];
      try {
        await api("/api/strokes", s);
      } catch (e) {
        if (/: 4\d\d /.test(e.message)) console.warn("stroke refused:", e.message); // bad stroke: drop it
        else { document.body.dataset.sendError = e.message; break; } // server away: retry later
      }
      list = pending().slice(1);
      setPending(list);
      S.strokes[s.frame] = (S.strokes[s.frame] || 0) + 1;
      if (s.frame === S.cur && !list.some((x) => x.frame === S.cur)) await refreshStrokes(S.cur);
    }
    document.body.dataset.pending = list.length;
  } finally { S.sending = false; }
  updateStripBadges();
}
setInterval(flushPending, 2000);

function submitStroke(s) {
  setPending([...pending(), s]);
  document.body.dataset.pending = pending().length;
  flushPending();
}

const vpEl = $("viewport");
vpEl.addEventListener("contextmenu", (e) => e.preventDefault());
vpEl.addEventListener("pointerdown", (e) => {
  vpEl.setPointerCapture(e.pointerId);
  if (e.button === 2 || e.button === 1 || S.space) {
    S.panning = [e.clientX, e.clientY, S.panX, S.panY];
    return;
  }
  if (e.button !== 0 || S.classId === null) return;
  const tool = S.tool;
  const s = { frame: S.cur, class_id: tool === "eraser" ? 0 : S.classId, tool,
    radius: tool === "click" ? 0 : S.size / 2, points: [imageXY(e)] };
  if (tool === "click") { paintLocal(s); submitStroke(s); return; }
  S.drawing = s;
  paintLocal(s);
});
vpEl.addEventListener("pointermove", (e) => {
  if (S.panning) {
    const [x0, y0, px, py] = S.panning;
    S.panX = px + e.clientX - x0;
    S.panY = py + e.clientY - y0;
    applyTransform();
    return;
  }
  drawCursor(e);
  if (!S.drawing) return;
  const p = imageXY(e);
  const last = S.drawing.points[S.drawing.points.length - 1];
  if (Math.hypot(p[0] - last[0], p[1] - last[1]) < 0.5) return;
  S.drawing.points.push(p);
  paintLocal({ ...S.drawing, points: [last, p] });
});
function endStroke() {
  S.panning = null;
  if (!S.drawing) return;
  const s = S.drawing;
  S.drawing = null;
  s.points = s.points.map(([x, y]) => [Math.round(x * 100) / 100, Math.round(y * 100) / 100]);
  submitStroke(s);
}
vpEl.addEventListener("pointerup", endStroke);
vpEl.addEventListener("pointercancel", endStroke);

function drawCursor(e) {
  const c = $("cursor");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (S.tool === "click") return;
  const [x, y] = imageXY(e);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 1 / S.zoom;
  ctx.beginPath();
  ctx.arc(x + 0.5, y + 0.5, S.size / 2, 0, 2 * Math.PI);
  ctx.stroke();
}

async function undo() {
  const list = pending();
  const mine = list.filter((s) => s.frame === S.cur);
  if (mine.length) { setPending(list.filter((s) => s !== mine[mine.length - 1])); }
  else {
    const r = await (await api("/api/undo", { frame: S.cur })).json();
    if (r.id !== null) S.strokes[S.cur] = Math.max(0, (S.strokes[S.cur] || 1) - 1);
  }
  await refreshStrokes(S.cur);
  updateStripBadges();
}

// ---- prediction ---------------------------------------------------------------------------------
async function pollPred() {
  const i = S.cur, view = S.view;
  try {
    const r = await fetch(`/api/frame/${i}/pred?view=${view}`);
    if (r.status !== 200 || S.cur !== i || S.view !== view) return;
    const step = +r.headers.get("x-step");
    if (step === S.predStep && S.predFrame === i && S.predView === view) return;
    const bmp = await createImageBitmap(await r.blob());
    if (S.cur !== i) return;
    const c = $("pred"), ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bmp, 0, 0, c.width, c.height);
    S.predStep = step; S.predFrame = i; S.predView = view;
    document.body.dataset.predStep = step;
    document.body.dataset.predFrame = i;
    document.body.dataset.predAt = Date.now();
  } catch (e) { /* server restarting: next poll */ }
}
setInterval(pollPred, 1000);

$("opacity").oninput = (e) => { $("pred").style.opacity = e.target.value / 100; };
$("pred").style.opacity = 0.55;
function setView(conf) {
  S.view = conf ? "confidence" : "labels";
  $("confview").checked = conf;
  S.predStep = -1;
  pollPred();
}
$("confview").onchange = (e) => setView(e.target.checked);

// ---- status, thumbnails, "label here next" -------------------------------------------------------
async function pollStatus() {
  let st;
  try { st = await (await fetch("/api/status")).json(); } catch { $("status").textContent = "server away…"; return; }
  const loss = st.loss === null ? "–" : st.loss.toFixed(4);
  $("status").textContent = `step ${st.step} · ${st.steps_per_s} steps/s · loss ${loss}` +
    (st.labelled_pixels ? ` · ${st.labelled_pixels} labelled px` : " · paint a stroke to start");
  $("pause").textContent = st.paused ? "resume" : "pause";
  S.paused = st.paused;
  S.strokes = st.strokes;
  for (const s of pending()) S.strokes[s.frame] = (S.strokes[s.frame] || 0) + 1;
  S.confidence = st.confidence;
  let fetched = 0;
  for (const [i, step] of Object.entries(st.thumb_steps)) {
    if (S.thumbSteps[i] === step || fetched >= 6) continue;
    S.thumbSteps[i] = step;
    fetched++;
    loadImage(`/api/frame/${i}/thumbpred?t=${step}`).then((im) => {
      const c = document.querySelector(`.thumb[data-frame-index="${i}"] canvas`);
      if (!c) return;
      const img = c.previousElementSibling;
      c.width = im.width; c.height = im.height;
      c.style.width = img.clientWidth + "px"; c.style.height = img.clientHeight + "px";
      c.getContext("2d").drawImage(im, 0, 0);
    }).catch(() => {});
  }
  const order = Object.entries(st.confidence).filter(([i]) => !st.strokes[i]).sort((a, b) => a[1] - b[1]).slice(0, 5);
  $("next").innerHTML = "";
  for (const [i, c] of order) {
    const li = document.createElement("li");
    li.textContent = `frame ${i} (${Math.round(c * 100)}% sure)`;
    li.onclick = () => { gotoFrame(+i); setView(true); };
    $("next").appendChild(li);
  }
  const ex = st.export;
  $("export-status").title = ex.outputs.join("\n") || ex.error || "";
  if (ex.running) $("export-status").textContent = `exporting ${ex.done}/${ex.total}…`;
  else if (ex.error) $("export-status").textContent = `export failed: ${ex.error}`;
  else if (ex.outputs.length) $("export-status").textContent = `exported: ${ex.outputs.join(", ")}`;
  document.body.dataset.exportState = ex.running ? "running" : ex.error ? "error" : ex.outputs.length ? "done" : "idle";
  updateStripBadges();
}
setInterval(pollStatus, 1000);

$("pause").onclick = () => api("/api/pause", { paused: !S.paused }).then(pollStatus);
$("export").onclick = async () => {
  const fmt = $("export-format").value;
  try {
    await api("/api/export", { formats: fmt === "labels" ? ["labels"] : ["labels", fmt] });
    document.body.dataset.exportState = "running";
  } catch (e) { $("export-status").textContent = e.message; }
};

// ---- keyboard -----------------------------------------------------------------------------------
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type !== "range" && e.target.type !== "checkbox") return;
  if (e.key === " ") { S.space = true; e.preventDefault(); return; }
  if (/^[1-9]$/.test(e.key)) { const r = trainClasses()[+e.key - 1]; if (r) selectClass(r.id); return; }
  switch (e.key) {
    case "[": setSize(S.size - (S.size > 10 ? 2 : 1)); break;
    case "]": setSize(S.size + (S.size >= 10 ? 2 : 1)); break;
    case "ArrowLeft": gotoFrame(S.cur - 1); e.preventDefault(); break;
    case "ArrowRight": gotoFrame(S.cur + 1); e.preventDefault(); break;
    case "z": case "Z": undo(); break;
    case "b": setTool("brush"); break;
    case "e": setTool("eraser"); break;
    case "c": setTool("click"); break;
    case "v": setView(S.view !== "confidence"); break;
    case "0": fit(); break;
    default: return;
  }
});
document.addEventListener("keyup", (e) => { if (e.key === " ") S.space = false; });
new ResizeObserver(() => { if (S.frames.length) fit(); }).observe($("viewport")); // strip thumbnails, window

// ---- start --------------------------------------------------------------------------------------
(async function main() {
  const st = await (await api("/api/state")).json();
  S.frames = st.frames;
  S.classes = st.classes;
  S.pendingKey = "labelfield-pending:" + st.run;
  $("scene-name").textContent = st.scene.split("/").pop();
  const first = trainClasses()[0];
  S.classId = first ? first.id : null;
  renderPalette();
  setTool("brush");
  setSize(6);
  buildStrip();
  await gotoFrame(0);
  await pollStatus();
  flushPending();
  document.body.dataset.ready = "1";
})();
