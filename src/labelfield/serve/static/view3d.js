// labelfield serve: the 3D view. Plain JS, no build step, nothing fetched but /api/cloud (format: serve/cloud.py).
// A small software renderer on a 2D canvas: points are projected and splatted as squares into a z-buffer
// (size from the voxel size and depth), so it needs no WebGL and draws the same in any browser; camera
// frusta are drawn on top with the canvas's lines. Orbit = left-drag, pan = shift-drag or right-drag,
// zoom = wheel, click a camera = go to its frame. Uses app.js's globals (S, gotoFrame, $).
"use strict";

const V = {
  visible: false, data: null, loading: false, colorBy: "labels", inited: false,
  target: [0, 0, 0], dist: 3, yaw: 0, pitch: 0.5, fov: 55 * Math.PI / 180,
  basis: null, drag: null, camScreen: [], queued: false, lastLoad: 0,
};
window.labelfield3d = V; // for tests and the curious
const BG = [17, 17, 17];
const REFRESH_MS = 10000;

// ---- small vector helpers -------------------------------------------------------------------------
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
const mul = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const norm = (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return mul(a, 1 / n); };

// ---- data -----------------------------------------------------------------------------------------
function parseCloud(buf) {
  const magic = new TextDecoder().decode(new Uint8Array(buf, 0, 4));
  if (magic !== "LFPC") throw new Error("not a labelfield point cloud");
  const size = new DataView(buf).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, size)));
  const types = { "<f4": Float32Array, "|u1": Uint8Array, "<u2": Uint16Array };
  const arrays = {};
  for (const a of header.arrays) {
    const n = a.shape.reduce((x, y) => x * y, 1);
    arrays[a.name] = new types[a.dtype](buf, a.offset, n);
  }
  return { header, ...arrays };
}

async function loadCloud() {
  if (V.loading) return;
  V.loading = true;
  V.lastLoad = Date.now(); // also after a failure: the periodic refresh retries in REFRESH_MS, not at once
  $("cloud-info").textContent = "loading…";
  try {
    const r = await fetch("/api/cloud?frames=32&max_points=50000");
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    V.data = parseCloud(await r.arrayBuffer());
    if (!V.inited) initView();
    const h = V.data.header;
    const lf = h.labels_from;
    $("cloud-info").textContent = `${h.count} points from ${h.frames.length} frames (${h.depth} depth) · ` +
      `labels: step ${h.step}` + (lf.none ? `, ${lf.none} frames not predicted yet` : "");
    draw();
  } catch (e) {
    $("cloud-info").textContent = "cloud: " + e.message;
  } finally { V.loading = false; }
}

// ---- view -----------------------------------------------------------------------------------------
function initView() {
  // orbit about the scene's up; start looking the way the cameras look on average, from above
  const h = V.data.header;
  const up = norm(h.up);
  const seed = Math.abs(up[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
  const a = norm(sub(seed, mul(up, dot(seed, up))));
  V.basis = { up, a, b: cross(up, a) };
  let f = [0, 0, 0];
  for (const c of h.cameras) f = add(f, c.forward);
  f = sub(f, mul(up, dot(f, up)));
  V.yaw = Math.hypot(...f) > 1e-6 ? Math.atan2(-dot(f, V.basis.b), -dot(f, V.basis.a)) : 0;
  V.pitch = 0.6;
  V.target = h.focus.center.slice();
  V.dist = h.focus.radius * 2.2;
  V.inited = true;
}

function eyeFrame() {
  const { up, a, b } = V.basis;
  const cp = Math.cos(V.pitch);
  const off = add(add(mul(a, cp * Math.cos(V.yaw)), mul(b, cp * Math.sin(V.yaw))), mul(up, Math.sin(V.pitch)));
  const eye = add(V.target, mul(off, V.dist));
  const fwd = mul(off, -1);
  const right = norm(cross(fwd, up));
  return { eye, fwd, right, camUp: cross(right, fwd) };
}

function resizeCanvas() {
  const c = $("cloud"), box = $("view3d").getBoundingClientRect();
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  const w = Math.max(1, Math.round(box.width * dpr)), h = Math.max(1, Math.round(box.height * dpr));
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  c.style.width = box.width + "px";
  c.style.height = box.height + "px";
  return dpr;
}

function draw() {
  if (V.queued) return;
  V.queued = true;
  requestAnimationFrame(() => { V.queued = false; render(); });
}

function render() {
  if (!V.visible) return;
  const dpr = resizeCanvas();
  const c = $("cloud"), ctx = c.getContext("2d");
  const W = c.width, H = c.height;
  const img = ctx.createImageData(W, H);
  const px = new Uint32Array(img.data.buffer);
  px.fill((255 << 24) | (BG[2] << 16) | (BG[1] << 8) | BG[0]);
  V.camScreen = [];
  if (!V.data || !V.inited) { ctx.putImageData(img, 0, 0); return; }
  const { eye, fwd, right, camUp } = eyeFrame();
  const F = H / 2 / Math.tan(V.fov / 2), cx = W / 2, cy = H / 2, near = V.dist * 1e-3;
  const d = V.data, n = d.header.count, xyz = d.xyz;
  const col = V.colorBy === "rgb" ? d.rgb : d.label_rgb;
  const zbuf = new Float32Array(W * H).fill(Infinity);
  const world = Math.max(d.header.voxel, 1e-6) * 1.6; // a splat covers about one voxel
  const [ex, ey, ez] = eye;
  for (let i = 0; i < n; i++) {
    const x = xyz[3 * i] - ex, y = xyz[3 * i + 1] - ey, z = xyz[3 * i + 2] - ez;
    const zc = x * fwd[0] + y * fwd[1] + z * fwd[2];
    if (zc <= near) continue;
    const sx = cx + F * (x * right[0] + y * right[1] + z * right[2]) / zc;
    const sy = cy - F * (x * camUp[0] + y * camUp[1] + z * camUp[2]) / zc;
    const s = Math.max(1, Math.min(8, Math.round(world * F / zc)));
    const x0 = Math.round(sx - s / 2), y0 = Math.round(sy - s / 2);
    if (x0 >= W || y0 >= H || x0 + s <= 0 || y0 + s <= 0) continue;
    const rgba = (255 << 24) | (col[3 * i + 2] << 16) | (col[3 * i + 1] << 8) | col[3 * i];
    for (let v = Math.max(0, y0); v < Math.min(H, y0 + s); v++) {
      let k = v * W + Math.max(0, x0);
      for (let u = Math.max(0, x0); u < Math.min(W, x0 + s); u++, k++) {
        if (zc < zbuf[k]) { zbuf[k] = zc; px[k] = rgba; }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  // cameras: frusta with their apex at the centre, labelled ones green, the current frame highlighted
  const proj = (p) => {
    const q = sub(p, eye), zc = dot(q, fwd);
    return zc <= near ? null : [cx + F * dot(q, right) / zc, cy - F * dot(q, camUp) / zc];
  };
  const size = d.header.focus.radius * 0.08;
  const cams = d.header.cameras.slice().sort((p, q) => (p.frame === S.cur) - (q.frame === S.cur));
  for (const cam of cams) {
    const pts = [cam.center, ...cam.corners.map((r) => add(cam.center, mul(r, size)))].map(proj);
    if (pts.some((p) => p === null)) continue;
    const current = cam.frame === S.cur;
    ctx.strokeStyle = current ? "#ffb000" : cam.labelled ? "#3ecf4a" : "#8ea3c4";
    ctx.lineWidth = (current ? 2.5 : 1) * dpr;
    ctx.beginPath();
    for (let k = 1; k <= 4; k++) { ctx.moveTo(...pts[0]); ctx.lineTo(...pts[k]); }
    ctx.moveTo(...pts[1]);
    for (const k of [2, 3, 4, 1]) ctx.lineTo(...pts[k]);
    ctx.stroke();
    if (current) { ctx.fillStyle = "#ffb00055"; ctx.beginPath(); ctx.moveTo(...pts[1]);
      for (const k of [2, 3, 4]) ctx.lineTo(...pts[k]); ctx.fill(); }
    V.camScreen.push({ frame: cam.frame, pts: pts.map(([x, y]) => [x / dpr, y / dpr]) });
  }
  document.body.dataset.cloudDrawn = `${n}:${Date.now()}`;
}

// ---- interaction ----------------------------------------------------------------------------------
function pickCamera(x, y) {
  // the camera with a frustum point (apex or corner) nearest the click, within 12 px
  let best = null, bestD = 12;
  for (const c of V.camScreen) {
    for (const [px, py] of c.pts) {
      const dd = Math.hypot(px - x, py - y);
      if (dd < bestD) { bestD = dd; best = c.frame; }
    }
  }
  return best;
}

const canvas3d = $("cloud");
canvas3d.addEventListener("contextmenu", (e) => e.preventDefault());
canvas3d.addEventListener("pointerdown", (e) => {
  canvas3d.setPointerCapture(e.pointerId);
  const pan = e.button === 2 || e.button === 1 || e.shiftKey;
  V.drag = { x: e.clientX, y: e.clientY, x0: e.clientX, y0: e.clientY, pan, moved: false };
});
canvas3d.addEventListener("pointermove", (e) => {
  if (!V.drag || !V.inited) return;
  const dx = e.clientX - V.drag.x, dy = e.clientY - V.drag.y;
  V.drag.x = e.clientX; V.drag.y = e.clientY;
  if (Math.hypot(e.clientX - V.drag.x0, e.clientY - V.drag.y0) > 4) V.drag.moved = true;
  if (V.drag.pan) {
    const { right, camUp } = eyeFrame();
    const k = 2 * V.dist * Math.tan(V.fov / 2) / canvas3d.clientHeight;
    V.target = add(V.target, add(mul(right, -dx * k), mul(camUp, dy * k)));
  } else {
    V.yaw -= dx * 0.008;
    V.pitch = Math.max(-1.55, Math.min(1.55, V.pitch + dy * 0.008));
  }
  draw();
});
canvas3d.addEventListener("pointerup", (e) => {
  const d = V.drag;
  V.drag = null;
  if (!d || d.moved || e.button !== 0) return;
  const r = canvas3d.getBoundingClientRect();
  const frame = pickCamera(e.clientX - r.left, e.clientY - r.top);
  if (frame !== null) { gotoFrame(frame); draw(); }
});
canvas3d.addEventListener("pointercancel", () => { V.drag = null; });
canvas3d.addEventListener("wheel", (e) => {
  e.preventDefault();
  V.dist *= Math.exp(e.deltaY * 0.0015);
  draw();
}, { passive: false });

function show3d(on) {
  V.visible = on;
  $("view3d").hidden = !on;
  $("toggle3d").classList.toggle("active", on);
  document.body.dataset.view = on ? "3d" : "2d";
  if (on) { draw(); if (!V.data || Date.now() - V.lastLoad > REFRESH_MS) loadCloud(); }
}
$("toggle3d").onclick = () => show3d(!V.visible);
$("cloud-refresh").onclick = () => loadCloud();
$("cloud-color").onchange = (e) => { V.colorBy = e.target.value; draw(); };
setInterval(() => { if (V.visible && !document.hidden && Date.now() - V.lastLoad >= REFRESH_MS) loadCloud(); }, 1000);
new ResizeObserver(() => draw()).observe($("view3d"));
// the current frame changes in app.js (strip, arrows, scrub): redraw its highlight
new MutationObserver(() => { if (V.visible) draw(); }).observe(document.body, { attributeFilter: ["data-frame"] });
