// The demo: pick a served model, draw / upload / type an input, show the service's answer.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let current = null;

function showError(message) { $("error").textContent = message; $("error").hidden = !message; }

const needsToken = setupToken($("token-box"), $("token-form"), $("token"), () => loadModels());

function fail(err) {
  showError(needsToken(err) ? "401: this server needs an API token: enter it above" : err.message);
}

async function loadModels() {
  showError("");
  const select = $("model");
  select.innerHTML = "<option value=''>loading…</option>";
  try {
    models = await servedModels();
  } catch (err) {
    select.innerHTML = "<option value=''>(no models)</option>";
    fail(err);
    return;
  }
  select.innerHTML = "";
  if (!models.length) {
    select.innerHTML = "<option value=''>(no model is ready)</option>";
    showError("No model is served and ready. Load one with POST /v2/repository/models/{name}/load.");
  }
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} (${m.family}, ${m.version})`;
    select.appendChild(option);
  }
  selectModel(select.value);
}

function selectModel(name) {
  current = models.find((m) => m.name === name) || null;
  const family = current ? current.family : "";
  $("model-info").textContent = current ? `family ${family} · version ${current.version}` : "";
  const panel = current ? current.panel : "";  // the family's demo panel, from /v2/models/{name} (zoo/families.py)
  $("draw-panel").hidden = panel !== "digit";
  $("image-panel").hidden = !(panel === "digit" || panel === "photo");
  $("forecast-panel").hidden = panel !== "forecast";
  $("result").hidden = true;
  showError("");
  if (current && current.spec.sequence) $("steps").max = current.spec.sequence.max_steps;
  $("live").hidden = true;
  watchLive();
}

// --- answers -----------------------------------------------------------------------------------

// runs one inference call; latency measured here, version as /v2/models reports it at answer time, and
// the service's own breakdown from the answer's Server-Timing header
async function timed(call) {
  const name = current.name;
  const meta = api(`/v2/models/${encodeURIComponent(name)}`);
  meta.catch(() => {});  // awaited below; a failed inference call must not leave it unhandled
  let serverTiming = null;
  const started = performance.now();
  const answer = await call(name, (value) => { serverTiming = value; });
  const ms = performance.now() - started;  // the inference call alone, request to parsed answer
  return { answer, ms, version: ((await meta).versions || ["?"])[0], name, timing: parseServerTiming(serverTiming) };
}

// 'decode;dur=0.352, ..., batch;desc="8"' -> {decode: 0.352, ..., batch: 8}; null without the header
function parseServerTiming(value) {
  if (!value) return null;
  const out = {};
  for (const part of value.split(",")) {
    const [name, ...params] = part.trim().split(";");
    for (const p of params) {
      const [key, raw] = p.trim().split("=");
      if (key === "dur") out[name] = Number(raw);
      if (key === "desc") out[name] = Number(raw.replace(/"/g, ""));
    }
  }
  return out;
}

const PHASES = ["decode", "queue", "infer", "encode"];

function showMeta(run) {
  $("result-meta").textContent = `${run.name} ${run.version} · ${run.ms.toFixed(1)} ms`;
  const t = run.timing;
  $("timing").hidden = !t;
  if (t) {
    $("timing-text").textContent = "server: " + PHASES.map((p) => `${p} ${t[p].toFixed(2)}`).join(" · ") +
      ` · total ${t.total.toFixed(2)} ms · batch ${t.batch}`;
    const bar = $("timing-bar");
    bar.innerHTML = "";
    for (const p of PHASES) {  // each phase's share of the server's total
      const span = document.createElement("span");
      span.className = `phase-${p}`;
      span.title = `${p} ${t[p].toFixed(3)} ms`;
      span.style.width = `${(100 * t[p] / Math.max(t.total, 1e-9)).toFixed(2)}%`;
      bar.appendChild(span);
    }
  }
  $("result").hidden = false;
  refreshLive();
}

// --- live panel: what the batcher did for the chosen model (Triton's statistics, every worker) ---

let liveTimer = null;

async function refreshLive() {
  if (!current) { $("live").hidden = true; return; }
  const name = current.name;
  let entry;
  try {
    entry = (await api(`/v2/models/${encodeURIComponent(name)}/stats`)).model_stats[0];
  } catch (_) {
    return;  // the next refresh tries again; an inference error is what the page reports
  }
  if (!current || current.name !== name) return;
  const s = entry.inference_stats;
  const mean = (d) => (d.count ? d.ns / d.count / 1e6 : 0);  // ms per request
  const calls = entry.execution_count;
  $("live-model").textContent = name;
  $("live-summary").textContent = `${s.success.count} requests · ${calls} model calls · ` +
    `mean batch ${calls ? (entry.inference_count / calls).toFixed(2) : "-"} · ${s.fail.count} failed`;
  const queue = mean(s.queue), infer = mean(s.compute_infer);
  $("live-wait").textContent = `per request: queue ${queue.toFixed(2)} ms vs infer ${infer.toFixed(2)} ms`;
  const waitBar = $("live-wait-bar");
  waitBar.innerHTML = "";
  for (const [p, v] of [["queue", queue], ["infer", infer]]) {
    const span = document.createElement("span");
    span.className = `phase-${p}`;
    span.style.width = `${(100 * v / Math.max(queue + infer, 1e-9)).toFixed(2)}%`;
    waitBar.appendChild(span);
  }
  const list = $("live-batches");
  list.innerHTML = "";
  const most = Math.max(1, ...entry.batch_stats.map((b) => b.compute_infer.count));
  for (const b of entry.batch_stats) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = `batch ${b.batch_size}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * b.compute_infer.count / most).toFixed(1)}%`;
    bar.appendChild(fill);
    const count = document.createElement("span");
    count.textContent = String(b.compute_infer.count);
    li.append(label, bar, count);
    list.appendChild(li);
  }
  $("live").hidden = false;
}

function watchLive() {
  if (liveTimer) clearInterval(liveTimer);
  refreshLive();
  liveTimer = setInterval(() => { if (!document.hidden) refreshLive(); }, 2000);
}

function showClassification(run) {
  const top = run.answer[0];
  $("result-label").textContent = top.label;
  $("warning").hidden = true;
  const list = $("topk");
  list.innerHTML = "";
  for (const k of top.top_k) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "topk-label";
    label.textContent = k.label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * k.score).toFixed(1)}%`;
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.textContent = `${(100 * k.score).toFixed(1)}%`;
    li.append(label, bar, pct);
    list.appendChild(li);
  }
  showMeta(run);
}

async function classify(blob, filename) {
  showError("");
  const form = new FormData();
  form.append("images", blob, filename);
  try {
    const run = await timed((name, onTiming) => api(`/models/${encodeURIComponent(name)}/classify`,
                                                    { method: "POST", body: form, onTiming }));
    showClassification(run);
  } catch (err) {
    $("result").hidden = true;
    fail(err);
  }
}

// --- drawing: MNIST-style preprocessing ---------------------------------------------------------

const pad = $("pad");
const ink = pad.getContext("2d", { willReadFrequently: true });
let drawing = null;

function clearPad() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  $("seen").getContext("2d").clearRect(0, 0, 28, 28);
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [(event.clientX - rect.left) * pad.width / rect.width, (event.clientY - rect.top) * pad.height / rect.height];
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  drawing = padPoint(event);
  ink.beginPath();
  ink.arc(drawing[0], drawing[1], ink.lineWidth / 2, 0, 2 * Math.PI);
  ink.fillStyle = "#fff";
  ink.fill();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const p = padPoint(event);
  ink.beginPath();
  ink.moveTo(drawing[0], drawing[1]);
  ink.lineTo(p[0], p[1]);
  ink.stroke();
  drawing = p;
});
for (const type of ["pointerup", "pointercancel"]) pad.addEventListener(type, () => { drawing = null; });

// white ink on black -> crop to the ink -> area-average into 20x20 keeping aspect -> 28x28 centred
// by centre of mass, as MNIST's digits were made; null when nothing is drawn
function mnistDigit() {
  const { width: w, height: h } = pad;
  const rgba = ink.getImageData(0, 0, w, h).data;
  const gray = new Float32Array(w * h);
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let i = 0; i < w * h; i++) {
    const v = rgba[4 * i] / 255;
    gray[i] = v;
    if (v > 0.1) {
      const x = i % w, y = (i / w) | 0;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
  }
  if (x1 < 0) return null;
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
  const scale = 20 / Math.max(bw, bh);
  const tw = Math.max(1, Math.round(bw * scale)), th = Math.max(1, Math.round(bh * scale));
  const small = new Float32Array(tw * th);  // each target pixel: mean of the source box it covers
  for (let ty = 0; ty < th; ty++) {
    for (let tx = 0; tx < tw; tx++) {
      const sx0 = x0 + Math.floor(tx * bw / tw), sx1 = x0 + Math.max(Math.floor((tx + 1) * bw / tw), Math.floor(tx * bw / tw) + 1);
      const sy0 = y0 + Math.floor(ty * bh / th), sy1 = y0 + Math.max(Math.floor((ty + 1) * bh / th), Math.floor(ty * bh / th) + 1);
      let sum = 0;
      for (let y = sy0; y < sy1; y++) for (let x = sx0; x < sx1; x++) sum += gray[y * w + x];
      small[ty * tw + tx] = sum / ((sx1 - sx0) * (sy1 - sy0));
    }
  }
  let mass = 0, cx = 0, cy = 0;
  for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) { const v = small[y * tw + x]; mass += v; cx += v * x; cy += v * y; }
  const ox = Math.round(14 - cx / mass - 0.5), oy = Math.round(14 - cy / mass - 0.5);  // pixel centres at +0.5
  const out = new ImageData(28, 28);
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      const X = x + ox, Y = y + oy;
      if (X < 0 || Y < 0 || X >= 28 || Y >= 28) continue;
      const v = Math.round(255 * Math.min(1, small[y * tw + x])), j = 4 * (Y * 28 + X);
      out.data[j] = out.data[j + 1] = out.data[j + 2] = v;
    }
  }
  for (let j = 3; j < out.data.length; j += 4) out.data[j] = 255;
  return out;
}

$("classify-drawing").addEventListener("click", () => {
  const digit = mnistDigit();
  if (!digit) {
    $("result").hidden = true;
    showError("The canvas is empty: draw a digit first (nothing was sent).");
    return;
  }
  const seen = $("seen");
  seen.getContext("2d").putImageData(digit, 0, 0);
  seen.toBlob((blob) => classify(blob, "drawing.png"), "image/png");
});
$("clear").addEventListener("click", () => { clearPad(); $("result").hidden = true; showError(""); });

// --- image upload -------------------------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = false;
  $("preview-note").hidden = true;
  preview.onerror = () => {
    preview.hidden = true;
    $("preview-note").textContent = `${file.name}: the browser cannot show it; sent to the service as it is`;
    $("preview-note").hidden = false;
  };
  preview.src = URL.createObjectURL(file);
  classify(file, file.name);
}

$("file").addEventListener("change", (event) => { useFile(event.target.files[0]); event.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  useFile(event.dataTransfer.files[0]);
});

// --- forecast -----------------------------------------------------------------------------------

// numbers stay numbers; anything else is sent as typed so the service names the bad value
function parseHistory(text) {
  return text.split(/[\s,;]+/).filter((t) => t !== "").map((t) => (t.trim() !== "" && Number.isFinite(Number(t)) ? Number(t) : t));
}

function plot(history, forecast) {
  const canvas = $("plot");
  const g = canvas.getContext("2d");
  const { width: W, height: H } = canvas;
  const pad = 30;
  g.fillStyle = "#fff";
  g.fillRect(0, 0, W, H);
  const all = history.concat(forecast);
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const n = all.length;
  const X = (i) => pad + (W - 2 * pad) * (n > 1 ? i / (n - 1) : 0.5);
  const Y = (v) => H - pad - (H - 2 * pad) * (v - lo) / (hi - lo);
  g.strokeStyle = "#bbb";
  g.lineWidth = 1;
  g.beginPath(); g.moveTo(pad, Y(lo)); g.lineTo(W - pad, Y(lo)); g.moveTo(pad, Y(lo)); g.lineTo(pad, Y(hi)); g.stroke();
  g.fillStyle = "#556";
  g.font = "11px sans-serif";
  g.fillText(hi.toFixed(2), 2, Y(hi) + 4);
  g.fillText(lo.toFixed(2), 2, Y(lo));
  const line = (values, start, color) => {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    values.forEach((v, i) => (i ? g.lineTo(X(start + i), Y(v)) : g.moveTo(X(start + i), Y(v))));
    g.stroke();
  };
  line(history, 0, "#3b7ddd");
  line([history[history.length - 1], ...forecast], history.length - 1, "#e07b00");
  g.fillStyle = "#3b7ddd"; g.fillText("history", W - 130, 14);
  g.fillStyle = "#e07b00"; g.fillText("forecast", W - 70, 14);
}

$("sine").addEventListener("click", () => {
  const seq = (current && current.spec.sequence) || {};
  const [f0, f1] = seq.freq_range || [2, 2];
  const dt = seq.dt || 0.1;
  const w = (f0 + f1) / 2;  // the middle of the trained band, so no warning
  const values = Array.from({ length: 40 }, (_, i) => Math.sin(w * dt * i).toFixed(4));
  $("history").value = values.join(", ");
});

$("run-forecast").addEventListener("click", async () => {
  showError("");
  const history = parseHistory($("history").value);
  const steps = Number($("steps").value);
  try {
    const run = await timed((name, onTiming) => api(`/models/${encodeURIComponent(name)}/forecast`, {
      method: "POST", headers: { "Content-Type": "application/json" }, onTiming,
      body: JSON.stringify({ history, steps: Number.isInteger(steps) ? steps : $("steps").value }),
    }));
    const values = run.answer.forecast;
    plot(history, values);
    $("forecast-values").textContent = "forecast: " + values.map((v) => v.toFixed(4)).join(", ");
    $("result-label").textContent = `${values.length} values`;
    $("topk").innerHTML = "";
    $("warning").textContent = run.answer.warning || "";
    $("warning").hidden = !run.answer.warning;
    showMeta(run);
  } catch (err) {
    $("result").hidden = true;
    fail(err);
  }
});

// --- start --------------------------------------------------------------------------------------

ink.lineWidth = 22;  // ~2 px after the 10x reduction to 20x20: MNIST's stroke width
ink.lineCap = ink.lineJoin = "round";
ink.strokeStyle = "#fff";
clearPad();
$("model").addEventListener("change", (event) => selectModel(event.target.value));
$("reload").addEventListener("click", loadModels);
loadModels();
