// refseg serve: the page. Plain JS over the HTTP API (/docs); no build step.
"use strict";

const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]];  // refseg.io.masks.PALETTE
const $ = (id) => document.getElementById(id);
const state = { job: null, frame: 0, selected: null, follow: true, events: null, shown: -1, version: 0 };
const canvas = $("view");
const ctx = canvas.getContext("2d");

function colour(id) {
  const [r, g, b] = PALETTE[(id - 1) % PALETTE.length];
  return `rgb(${r},${g},${b})`;
}

function say(text) { $("status").textContent = text; }
function fail(text) { $("error").textContent = text || ""; }

async function api(method, url, body) {
  const options = { method, headers: {} };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  const response = await fetch(url, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail
      : Array.isArray(data.detail) ? data.detail.map((d) => `${d.loc.slice(-1)[0]}: ${d.msg}`).join("; ")
      : `${response.status} ${response.statusText}`;
    throw new Error(detail);
  }
  return data;
}

async function guarded(action) {
  fail("");
  try { await action(); } catch (err) { fail(err.message); }
}

async function loadConfig() {
  const config = await api("GET", "/api/config");
  for (const [select, kind] of [[$("text-method"), "text"], [$("click-method"), "click"]]) {
    select.innerHTML = "";
    for (const m of config.methods.filter((m) => m.kind === kind)) {
      select.add(new Option(m.name, m.name));
    }
    if (!select.options.length) { select.add(new Option("(none loaded)", "")); select.disabled = true; }
  }
  $("path-row").hidden = !config.allow_paths;
}

function setJob(job) {
  state.job = job;
  $("slider").max = job.frames - 1;
  $("downloads").hidden = !job.downloads;
  if (job.downloads) {
    for (const [id, name] of [["dl-zip", "masks.zip"], ["dl-json", "masks.json"], ["dl-mp4", "overlay.mp4"]]) {
      $(id).href = `/api/jobs/${job.id}/download/${name}`;
    }
  }
  renderObjects();
  show(state.frame);
}

async function refresh() { setJob(await api("GET", `/api/jobs/${state.job.id}`)); }

async function opened(job) {
  state.frame = 0; state.selected = null; state.version += 1;
  $("slider").value = 0;
  setJob(job);
  say(`${job.name}: ${job.frames} frame${job.frames > 1 ? "s" : ""}, ${job.width} x ${job.height}`);
}

function renderObjects() {
  const list = $("objects");
  list.innerHTML = "";
  for (const o of state.job ? state.job.objects : []) {
    const item = document.createElement("li");
    item.dataset.id = o.id;
    item.className = o.id === state.selected ? "selected" : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = colour(o.id);
    const label = document.createElement("span");
    label.className = "label";
    const clicks = Object.keys(o.prompts).length;
    label.textContent = `${o.id} ${o.text ? `"${o.text}"` : ""}${clicks ? ` (clicks on ${clicks} frame${clicks > 1 ? "s" : ""})` : ""}`;
    const remove = document.createElement("button");
    remove.textContent = "×"; remove.title = "remove this object";
    remove.onclick = (e) => { e.stopPropagation(); guarded(async () => {
      setJob(await api("DELETE", `/api/jobs/${state.job.id}/objects/${o.id}`));
      if (state.selected === o.id) state.selected = null;
      renderObjects();
    }); };
    item.onclick = () => { state.selected = state.selected === o.id ? null : o.id; renderObjects(); };
    item.append(swatch, label, remove);
    list.append(item);
  }
}

function show(index) {
  if (!state.job) return;
  state.frame = index;
  $("frame-label").textContent = `frame ${index} / ${state.job.frames - 1}`;
  const masked = state.job.overlays.includes(index);
  const url = masked ? `/api/jobs/${state.job.id}/overlays/${index}?v=${state.version}`
    : `/api/jobs/${state.job.id}/frames/${index}`;
  const image = new Image();
  image.onload = () => {
    if (state.frame !== index) return;
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    fit();
    ctx.drawImage(image, 0, 0);
    drawPrompts(index);
    canvas.dataset.shown = `${masked ? "overlay" : "frame"}-${index}`;
  };
  image.src = url;
}

function fit() {  // the frame as large as the window allows, whole
  const room = $("stage").clientWidth, tall = window.innerHeight - canvas.getBoundingClientRect().top - 60;
  const scale = Math.max(0.1, Math.min(room / canvas.width, tall / canvas.height));
  canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
  canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
}
window.addEventListener("resize", () => { if (state.job) fit(); });

function drawPrompts(index) {
  const r = Math.max(3, canvas.width / 120);
  for (const o of state.job.objects) {
    for (const p of o.prompts[index] || []) {
      ctx.lineWidth = Math.max(1, r / 2);
      if (p.box) {
        ctx.strokeStyle = colour(o.id);
        const [x0, y0, x1, y1] = p.box;
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      }
      for (const [x, y, label] of p.points || []) {
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fillStyle = label ? "#2ecc40" : "#ff4136"; ctx.fill();
        ctx.strokeStyle = "#fff"; ctx.stroke();
      }
    }
  }
}

function framePoint(event) {
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width);
  const y = (event.clientY - box.top) * (canvas.height / box.height);
  return [Math.min(Math.max(x, 0), canvas.width), Math.min(Math.max(y, 0), canvas.height)];
}

let pressed = null;
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => { pressed = { at: framePoint(e), button: e.button, shift: e.shiftKey }; });
canvas.addEventListener("mouseup", (e) => {
  if (!pressed || !state.job) return;
  const [x0, y0] = pressed.at, [x1, y1] = framePoint(e);
  const negative = pressed.button === 2 || pressed.shift;
  pressed = null;
  const moved = Math.hypot(x1 - x0, y1 - y0) > Math.max(5, canvas.width / 100);
  const prompt = moved
    ? { frame: state.frame, box: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)] }
    : { frame: state.frame, points: [[x1, y1, negative ? 0 : 1]] };
  guarded(async () => {
    let object;
    if (state.selected !== null) {
      object = await api("POST", `/api/jobs/${state.job.id}/objects/${state.selected}/prompts`, prompt);
    } else {
      object = await api("POST", `/api/jobs/${state.job.id}/objects`, prompt);
    }
    state.selected = object.id;
    await refresh();
  });
});

$("file").addEventListener("change", () => guarded(async () => {
  const file = $("file").files[0];
  if (!file) return;
  say(`uploading ${file.name} ...`);
  const form = new FormData();
  form.append("file", file);
  try { await opened(await api("POST", "/api/jobs", form)); }
  catch (err) { say("open a video or an image"); throw err; }
}));

$("open-path").addEventListener("click", () => guarded(async () => {
  await opened(await api("POST", "/api/jobs/from-path", { path: $("path").value }));
}));

function addText() {
  guarded(async () => {
    if (!state.job) throw new Error("open a video or an image first");
    const object = await api("POST", `/api/jobs/${state.job.id}/objects`, { text: $("text").value, frame: state.frame });
    $("text").value = "";
    state.selected = object.id;
    await refresh();
  });
}
$("add-text").addEventListener("click", addText);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter") addText(); });
$("new-object").addEventListener("click", () => { state.selected = null; renderObjects(); });

$("slider").addEventListener("input", () => { state.follow = false; show(Number($("slider").value)); });

$("run").addEventListener("click", () => guarded(async () => {
  if (!state.job) throw new Error("open a video or an image first");
  const body = { text_method: $("text-method").value || null, click_method: $("click-method").value || null };
  const started = await api("POST", `/api/jobs/${state.job.id}/run`, body);
  state.follow = true; state.version += 1;
  $("downloads").hidden = true;
  $("progress").max = state.job.frames; $("progress").value = started.from;
  say(`running from frame ${started.from} ...`);
  listen();
}));

$("stop").addEventListener("click", () => guarded(async () => {
  if (state.job) await api("POST", `/api/jobs/${state.job.id}/stop`);
}));

function listen() {
  if (state.events) state.events.close();
  const events = new EventSource(`/api/jobs/${state.job.id}/events`);
  state.events = events;
  events.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "frame") {
      if (!state.job.overlays.includes(event.index)) state.job.overlays.push(event.index);
      $("progress").value = event.done;
      $("fps").textContent = `${event.fps.toFixed(1)} frames/s`;
      say(`frame ${event.index + 1} of ${event.total}`);
      if (state.follow || event.index === state.frame) {
        $("slider").value = event.index;
        show(event.index);
      }
    } else if (event.type === "end") {
      events.close();
      state.events = null;
      say(`${event.state}: ${event.message}`);
      document.body.dataset.run = event.state;
      if (event.state === "failed") fail(event.message);
      refresh();
    }
  };
  events.onerror = () => { if (state.events === events) say("connection lost; reload the page"); };
  document.body.dataset.run = "running";
}

guarded(loadConfig);
