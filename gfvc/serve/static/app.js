// gfvc serve: the page only displays; the server encodes, "sends" and decodes (docs/serve.md).
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
let hello = null;
let uploads = [];          // [{upload, name}]
let call = null;           // per-call counters
let camera = null;         // {stream, timer} while the webcam feeds a call
let edit = { next: 0, shown: -1, defaults: {} };

// ------------------------------------------------------------------ connection

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws`);
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    $("status").textContent = "disconnected" + (ev.reason ? `: ${ev.reason}` : "");
    stopCamera();
    setRunning(false);
  };
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function onMessage(m) {
  switch (m.type) {
    case "hello": return onHello(m);
    case "started": return onStarted(m);
    case "frame": return onFrame(m);
    case "stats": return onStats(m);
    case "ended": onStats(m); setRunning(false); stopCamera();
      $("status").textContent = `call ended (${m.reason})`; return;
    case "error": return showMessage(m.message);
    case "status": $("status").textContent = m.message; return;
    case "edit_ready": return onEditReady(m);
    case "edit_frame": return onEditFrame(m);
  }
}

function onHello(m) {
  hello = m;
  $("status").textContent = `connected · model ${m.model}`;
  $("upload").title = `a video of at most ${m.limits.upload_mb} MB and ${m.limits.seconds} s`;
  const { min, max } = m.kbps;   // the slider starts at the server's suggested rate
  $("rate").value = Math.round((1000 * Math.log(m.kbps.default / min)) / Math.log(max / min));
  fillSources();
  showRate();
}

function fillSources() {
  const opts = hello.samples.map((s) => [`sample:${s}`, `built-in: ${s}`])
    .concat(uploads.map((u) => [`upload:${u.upload}`, `uploaded: ${u.name}`]));
  const camOpt = navigator.mediaDevices && navigator.mediaDevices.getUserMedia
    ? [["camera:", "webcam"]] : [];
  for (const [sel, extra] of [[$("source"), camOpt], [$("edit-source"), []]]) {
    const keep = sel.value;
    sel.replaceChildren(...opts.concat(extra).map(([v, t]) => new Option(t, v)));
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }
}

function sourceOf(value) {
  const [kind, id] = value.split(":");
  if (kind === "sample") return { source: "sample", name: id };
  if (kind === "upload") return { source: "upload", upload: id };
  return { source: "camera" };
}

// ------------------------------------------------------------------ rate slider

function sliderKbps() {
  const { min, max } = hello.kbps;
  return min * Math.pow(max / min, $("rate").value / 1000);
}

function showRate() {
  $("rate").disabled = !$("rate-on").checked;
  $("rate-value").textContent = $("rate-on").checked ? `${sliderKbps().toFixed(1)} kbps target` : "fixed QP";
}

$("rate").addEventListener("input", () => {
  showRate();
  if (call && call.running) send({ type: "rate", kbps: sliderKbps() });
});
$("rate-on").addEventListener("change", showRate);

// ------------------------------------------------------------------ live call

function setRunning(on) {
  if (call) call.running = on;
  $("start").disabled = on;
  $("stop").disabled = !on;
  $("rate-on").disabled = on;
}

$("start").addEventListener("click", async () => {
  showMessage("");
  const msg = { type: "start", ...sourceOf($("source").value) };
  if ($("rate-on").checked) msg.kbps = sliderKbps();
  if (msg.source === "camera") {
    msg.fps = 15;
    try { await startCamera(msg.fps); } catch (e) { showMessage(`no camera: ${e.message}`); return; }
  }
  call = { running: true, bytes: 0, frames: 0, keys: 0, t: 0, fps: 25, latSum: 0,
           arrivals: [], history: [] };
  for (const id of ["frames", "keys", "dropped", "bytes"]) $(id).textContent = "0";
  $("server-bytes").textContent = "–";
  setRunning(true);
  $("status").textContent = "starting…";
  send(msg);
});

$("stop").addEventListener("click", () => send({ type: "stop" }));

function onStarted(m) {
  call.fps = m.fps;
  $("status").textContent = `in a call · ${m.fps.toFixed(2)} fps clip · ${m.model}`;
}

function onFrame(m) {
  const now = performance.now();
  const unitBytes = atob(m.unit).length;   // the packet as it travelled: what is counted
  call.bytes += unitBytes;
  call.frames += 1;
  call.keys += m.kind === "k" ? 1 : 0;
  call.t = m.t + 1 / call.fps;             // media seconds covered so far
  call.latSum += m.latency_ms;
  call.arrivals.push(now);
  call.history.push({ now, t: m.t, bytes: unitBytes, latency: m.latency_ms });
  while (call.arrivals.length && now - call.arrivals[0] > 2000) call.arrivals.shift();
  while (call.history.length && now - call.history[0].now > 10000) call.history.shift();

  $("original").src = `data:image/jpeg;base64,${m.original}`;
  $("decoded").src = `data:image/jpeg;base64,${m.decoded}`;
  const recent = call.history.filter((h) => h.t > m.t - 1);
  const kbpsNow = (8 * recent.reduce((s, h) => s + h.bytes, 0)) / 1000;   // over 1 s
  const span = (call.arrivals[call.arrivals.length - 1] - call.arrivals[0]) / 1000;
  $("kbps").textContent = ((8 * call.bytes) / 1000 / call.t).toFixed(2);
  $("kbps-now").textContent = kbpsNow.toFixed(2);
  $("fps").textContent = span > 0 ? ((call.arrivals.length - 1) / span).toFixed(1) : "0.0";
  $("latency").textContent = m.latency_ms.toFixed(0);
  $("latency-mean").textContent = (call.latSum / call.frames).toFixed(0);
  $("frames").textContent = call.frames;
  $("keys").textContent = call.keys;
  $("bytes").textContent = call.bytes;
  $("seconds").textContent = call.t.toFixed(3);
  $("codec-ms").textContent = `${m.encode_ms.toFixed(0)} / ${m.decode_ms.toFixed(0)}`;
  if (m.problem) showMessage(`receiver: ${m.problem}`);
  call.history[call.history.length - 1].kbps = kbpsNow;
  plot();
}

function onStats(m) {
  $("dropped").textContent = m.dropped;
  $("server-bytes").textContent = m.bytes;
}

function plot() {
  const c = $("plot"), g = c.getContext("2d"), h = call.history;
  g.clearRect(0, 0, c.width, c.height);
  if (h.length < 2) return;
  const t0 = h[h.length - 1].now - 10000;
  const x = (p) => ((p.now - t0) / 10000) * c.width;
  for (const [key, color] of [["kbps", "#2b6cb0"], ["latency", "#dd6b20"]]) {
    const top = Math.max(1, ...h.map((p) => p[key] || 0)) * 1.15;
    g.strokeStyle = color;
    g.beginPath();
    h.forEach((p, i) => {
      const y = c.height - ((p[key] || 0) / top) * (c.height - 14);
      i ? g.lineTo(x(p), y) : g.moveTo(x(p), y);
    });
    g.stroke();
    g.fillStyle = color;
    g.fillText(`${key} max ${top.toFixed(0)}`, key === "kbps" ? 4 : c.width - 110, 11);
  }
}

// ------------------------------------------------------------------ uploads

$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file || !hello) return;
  showMessage("");
  if (file.size > hello.limits.upload_mb * 1e6) {
    showMessage(`${file.name}: uploads may be at most ${hello.limits.upload_mb} MB`);
    return;
  }
  $("status").textContent = `uploading ${file.name}…`;
  const res = await fetch(`/upload?session=${encodeURIComponent(hello.session)}`, {
    method: "POST", body: file,
    headers: { "X-Filename": encodeURIComponent(file.name), "Content-Type": "application/octet-stream" },
  });
  const body = await res.json().catch(() => ({ error: `upload failed (${res.status})` }));
  $("upload").value = "";
  if (!res.ok) {
    showMessage(body.error || `upload failed (${res.status})`);
    $("status").textContent = "upload refused";
    return;
  }
  uploads.push(body);
  fillSources();
  $("source").value = $("edit-source").value = `upload:${body.upload}`;
  $("status").textContent = `${body.name}: ${body.seconds.toFixed(1)} s at ${body.fps.toFixed(2)} fps`;
});

// ------------------------------------------------------------------ webcam

async function startCamera(fps) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  const video = document.createElement("video");
  video.srcObject = stream;
  video.muted = true;
  await video.play();
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth || 640;
  canvas.height = video.videoHeight || 480;
  const timer = setInterval(() => {
    if (!ws || ws.bufferedAmount > 500000) return;   // the link is busy: skip this frame
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    canvas.toBlob((b) => b && ws.readyState === WebSocket.OPEN && ws.send(b), "image/jpeg", 0.85);
  }, 1000 / fps);
  camera = { stream, timer };
}

function stopCamera() {
  if (!camera) return;
  clearInterval(camera.timer);
  camera.stream.getTracks().forEach((t) => t.stop());
  camera = null;
}

// ------------------------------------------------------------------ edit

$("edit-open").addEventListener("click", () => {
  showMessage("");
  $("sliders").replaceChildren();
  $("edit-ms").textContent = "analysing…";
  send({ type: "edit_open", ...sourceOf($("edit-source").value) });
});

function onEditReady(m) {
  edit = { next: 0, shown: -1, defaults: m.values };
  $("edit-image").src = `data:image/jpeg;base64,${m.image}`;
  $("edit-ms").textContent = "move a slider";
  $("edit-reset").disabled = false;
  const rows = [];
  for (const [name, [lo, hi]] of Object.entries(m.components)) {
    const input = Object.assign(document.createElement("input"), {
      type: "range", min: lo, max: hi,
      step: (hi - lo) / 200, value: m.values[name], id: `edit-${name}`,
    });
    const out = Object.assign(document.createElement("output"), { textContent: (+input.value).toFixed(1) });
    input.addEventListener("input", () => { out.textContent = (+input.value).toFixed(1); sendEdit(); });
    const label = Object.assign(document.createElement("label"), { textContent: name, htmlFor: input.id });
    rows.push(label, input, out);
  }
  $("sliders").replaceChildren(...rows);
}

function sendEdit() {
  const values = {};
  for (const input of $("sliders").querySelectorAll("input")) values[input.id.slice(5)] = +input.value;
  send({ type: "edit", id: ++edit.next, values });
}

function onEditFrame(m) {
  if (m.id < edit.shown) return;   // an older answer overtaken by a newer one
  edit.shown = m.id;
  $("edit-image").src = `data:image/jpeg;base64,${m.image}`;
  $("edit-ms").textContent = `${m.ms.toFixed(0)} ms to re-synthesise`;
}

$("edit-reset").addEventListener("click", () => {
  for (const input of $("sliders").querySelectorAll("input")) {
    input.value = edit.defaults[input.id.slice(5)];
    input.dispatchEvent(new Event("input"));
  }
});

// ------------------------------------------------------------------ tabs

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== tab.dataset.tab;
  });
}

connect();
