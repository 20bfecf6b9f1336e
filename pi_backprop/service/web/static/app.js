// The page of pi-backprop's service: watch, teach, curate, train. Plain DOM, no library.
// Every string from the service goes in as text (textContent), never as markup.
"use strict";

const page = Array.from(crypto.getRandomValues(new Uint8Array(8)), b => b.toString(16).padStart(2, "0")).join("");
const SVG = "http://www.w3.org/2000/svg";
const view = {classes: [], kind: "image", fps: 4, labelMode: "hold", holdSeconds: 2, counts: [],
              history: [], shownClass: 0, frames: true};

function $(id) { return document.getElementById(id); }

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svgElement(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function say(text, done) {
  // A problem (red), or with done: what a button did (plain). Both in words.
  const message = $("message");
  message.textContent = text || "";
  message.hidden = !text;
  message.classList.toggle("done", Boolean(done));
}

async function getJSON(path) {
  const response = await fetch(path, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) throw new Error((await response.text()).trim() || response.statusText);
  return response.json();
}

async function post(path, body) {
  const response = await fetch(path, {method: "POST", credentials: "same-origin", cache: "no-store",
                                      headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body || {})});
  if (!response.ok) throw new Error((await response.text()).trim() || response.statusText);
  return response.json();
}

function percent(value) { return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + "%"; }

// -- the header: state and numbers ----------------------------------------------------------

function showState(state) {
  const node = $("state");
  node.textContent = "state: " + state;
  node.dataset.state = state;
}

function showMetrics(m) {
  $("step").textContent = m.step;
  $("loss").textContent = m.train_loss === null || m.train_loss === undefined ? "–" : m.train_loss.toFixed(3);
  $("accuracy").textContent = percent(m.eval_accuracy);
  if (m.confusion) drawConfusion(m.confusion);
}

// -- watching: the live picture and the prediction ------------------------------------------

function startFrames() {
  if (view.kind === "image") {
    $("camera-figure").hidden = false;
    $("input-figure").hidden = false;
    pictureLoop();
  } else {
    $("window-figure").hidden = false;
    windowLoop();
  }
}

async function picture(path) {
  // A picture as an object URL, and the number of the capture it shows.
  const response = await fetch(path, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) throw new Error((await response.text()).trim() || response.statusText);
  return {url: URL.createObjectURL(await response.blob()), capture: response.headers.get("X-Capture")};
}

function show(id, url) {
  const img = $(id), old = img.src;
  img.src = url;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

async function pictureLoop() {
  // The newest frame, then the model input made of that same capture; at most fps a second,
  // none while the page is hidden.
  const started = performance.now();
  let wait = 1000;
  if (!document.hidden) {
    try {
      const frame = await picture("/api/frame?view=camera");
      const input = await picture(`/api/frame?view=input&capture=${frame.capture}`);
      show("camera", frame.url);
      show("input", input.url);
      $("camera").dataset.capture = $("input").dataset.capture = frame.capture;
      wait = Math.max(0, 1000 / view.fps - (performance.now() - started));
    } catch (error) { /* no frame yet, or that capture is gone: try again */ }
  }
  setTimeout(pictureLoop, wait);
}

async function windowLoop() {
  let started = performance.now();
  try {
    if (!document.hidden) drawWindow((await getJSON("/api/window")).values);
  } catch (error) { /* no window yet */ }
  const wait = Math.max(0, 1000 / view.fps - (performance.now() - started));
  setTimeout(windowLoop, document.hidden ? 1000 : wait);
}

function polyline(values, width, height) {
  const low = Math.min(...values), high = Math.max(...values), span = high - low || 1;
  return values.map((v, i) => `${(i * width / Math.max(values.length - 1, 1)).toFixed(2)},` +
                              `${(height - (v - low) / span * height).toFixed(2)}`).join(" ");
}

function drawWindow(values) {
  const svg = $("window");
  svg.replaceChildren(svgElement("polyline", {points: polyline(values, 100, 40), fill: "none",
                                              stroke: "currentColor", "stroke-width": 0.6}));
}

function showPrediction(p) {
  const best = view.classes[p.index];
  $("prediction").textContent = p.unsure ? `unsure (best guess: ${best}, ${percent(p.confidence)})`
                                         : `${best}: ${percent(p.confidence)}`;
  $("prediction").dataset.unsure = p.unsure ? "yes" : "no";
  const bars = $("bars");
  if (bars.children.length !== view.classes.length) {
    bars.replaceChildren(...view.classes.map(name => {
      const item = element("li");
      item.append(element("span", name, "bar-name"), element("span", "", "bar"), element("span", "", "bar-value"));
      return item;
    }));
  }
  p.scores.forEach((score, i) => {
    const item = bars.children[i];
    item.querySelector(".bar").style.width = (100 * score).toFixed(1) + "%";
    item.querySelector(".bar-value").textContent = percent(score);
    item.classList.toggle("best", i === p.index);
  });
}

// -- teaching: one tile per class -----------------------------------------------------------

function buildTiles() {
  const tiles = $("tiles");
  tiles.replaceChildren(...view.classes.map((name, index) => {
    const tile = element("button", null, "tile");
    tile.type = "button";
    tile.dataset.index = index;
    tile.append(element("span", name, "tile-name"), element("span", "0 samples", "tile-count"));
    holdable(tile, index);
    return tile;
  }));
  $("teach-hint").textContent = view.labelMode === "press"
    ? "Tap a tile while the thing is in view: the next sample gets that label."
    : "Hold a tile while the thing is in view: every sample taken meanwhile gets that label.";
}

let holding = null;   // {index, tile, timer}

function holdable(tile, index) {
  const press = event => {
    event.preventDefault();
    if (view.labelMode === "press") {
      post("/api/label", {action: "next", class: index, page}).catch(error => say(error.message));
      return;
    }
    startHold(index, tile);
  };
  tile.addEventListener("pointerdown", press);
  tile.addEventListener("keydown", event => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) press(event);
  });
  for (const name of ["pointerup", "pointerleave", "pointercancel", "lostpointercapture"]) {
    tile.addEventListener(name, stopHold);
  }
  tile.addEventListener("keyup", event => { if (event.key === " " || event.key === "Enter") stopHold(); });
  tile.addEventListener("blur", stopHold);
  tile.addEventListener("contextmenu", event => event.preventDefault());   // a long touch is a hold, not a menu
}

function startHold(index, tile) {
  stopHold();
  const renew = () => post("/api/label", {action: "start", class: index, page}).catch(error => {
    say(error.message);
    stopHold();
  });
  renew();
  // The service forgets a hold after hold_seconds: renewed well within that while held.
  holding = {index, tile, timer: setInterval(renew, view.holdSeconds * 250)};
  tile.classList.add("held");
  tile.setAttribute("aria-pressed", "true");
}

function stopHold() {
  if (!holding) return;
  clearInterval(holding.timer);
  holding.tile.classList.remove("held");
  holding.tile.setAttribute("aria-pressed", "false");
  holding = null;
  post("/api/label", {action: "stop", page}).catch(() => {});
}

document.addEventListener("visibilitychange", () => { if (document.hidden) stopHold(); });
window.addEventListener("pagehide", () => {
  if (!holding) return;
  clearInterval(holding.timer);
  holding = null;
  fetch("/api/label", {method: "POST", keepalive: true, credentials: "same-origin",
                       headers: {"Content-Type": "application/json"},
                       body: JSON.stringify({action: "stop", page})});
});

function showCounts(classes) {
  view.counts = classes.map(c => c.samples);
  const total = view.counts.reduce((a, b) => a + b, 0);
  $("samples").textContent = total;
  for (const tile of $("tiles").children) {
    const count = view.counts[Number(tile.dataset.index)];
    tile.querySelector(".tile-count").textContent = `${count} sample${count === 1 ? "" : "s"}`;
  }
}

// -- curating: the newest samples of a class ------------------------------------------------

function buildCurate() {
  const select = $("curate-class");
  select.replaceChildren(...view.classes.map((name, index) => {
    const option = element("option", name);
    option.value = index;
    return option;
  }));
  select.addEventListener("change", () => { view.shownClass = Number(select.value); refreshSamples(); });
  $("clear-class").addEventListener("click", async () => {
    const name = view.classes[view.shownClass];
    if (!confirm(`Delete every sample of "${name}"? This cannot be undone.`)) return;
    try {
      await post("/api/classes/clear", {class: view.shownClass});
      refreshSamples();
      refreshOverview();
    } catch (error) { say(error.message); }
  });
}

async function refreshSamples() {
  let listed;
  try {
    listed = await getJSON(`/api/samples?class=${view.shownClass}&limit=12`);
  } catch (error) { say(error.message); return; }
  $("thumbnails").replaceChildren(...listed.map(sample => {
    const item = element("li");
    let picture;
    if (sample.image) {
      picture = element("img", null, "pixels");
      picture.src = sample.image;
      picture.alt = `sample ${sample.id}`;
    } else {
      picture = svgElement("svg", {viewBox: "0 0 100 40", preserveAspectRatio: "none", role: "img",
                                   "aria-label": `sample ${sample.id}`});
      picture.append(svgElement("polyline", {points: polyline(sample.values, 100, 40), fill: "none",
                                             stroke: "currentColor", "stroke-width": 1}));
    }
    const remove = element("button", "Delete", "danger");
    remove.type = "button";
    remove.dataset.sample = sample.id;
    remove.setAttribute("aria-label", `delete sample ${sample.id}`);
    remove.addEventListener("click", async () => {
      try {
        await post("/api/samples/delete", {id: sample.id});
        item.remove();
      } catch (error) { say(error.message); }
    });
    item.append(picture, remove);
    return item;
  }));
}

// -- training: switches, curves, confusion, checkpoints -------------------------------------

function drawCurves() {
  const svg = $("curves");
  const rows = view.history.filter(r => r.step !== null);
  svg.replaceChildren(svgElement("rect", {x: 0, y: 0, width: 300, height: 140, fill: "none",
                                          stroke: "currentColor", "stroke-opacity": 0.3}));
  if (rows.length < 2) {
    const text = svgElement("text", {x: 150, y: 75, "text-anchor": "middle", "font-size": 10, fill: "currentColor"});
    text.textContent = "no training yet";
    svg.append(text);
    return;
  }
  const first = rows[0].step, last = rows[rows.length - 1].step, span = last - first || 1;
  const x = step => 5 + (step - first) / span * 290;
  const losses = rows.filter(r => r.loss !== null);
  const top = Math.max(...losses.map(r => r.loss), 1e-9);
  const line = (points, dashed) => svgElement("polyline", {points: points.join(" "), fill: "none",
    stroke: "currentColor", "stroke-width": 1.2, "stroke-dasharray": dashed ? "4 3" : "none"});
  svg.append(line(losses.map(r => `${x(r.step).toFixed(1)},${(135 - r.loss / top * 130).toFixed(1)}`), false));
  const accuracies = rows.filter(r => r.val_accuracy !== null);
  svg.append(line(accuracies.map(r => `${x(r.step).toFixed(1)},${(135 - r.val_accuracy * 130).toFixed(1)}`), true));
  const label = svgElement("text", {x: 295, y: 12, "text-anchor": "end", "font-size": 9, fill: "currentColor"});
  label.textContent = `steps ${first}–${last}; loss up to ${top.toFixed(2)}`;
  svg.append(label);
}

function drawConfusion(matrix) {
  const table = $("confusion");
  const head = element("tr");
  head.append(element("th", "true \\ predicted"), ...view.classes.map(name => element("th", name)));
  const rows = matrix.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    const tr = element("tr");
    tr.append(element("th", view.classes[i]), ...row.map((count, j) => {
      const cell = element("td", count, i === j ? "right" : (count ? "wrong" : ""));
      cell.style.setProperty("--share", (count / total).toFixed(3));
      return cell;
    }));
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

function showCheckpoints(checkpoints) {
  // Drawn again only when the list changed, so that a button does not vanish under a finger.
  const key = checkpoints.map(c => `${c.step}@${c.time}`).join(",");
  if (key === view.checkpointsKey) return;
  view.checkpointsKey = key;
  $("checkpoints").replaceChildren(...checkpoints.map(c => {
    const item = element("li");
    const when = new Date(c.time * 1000).toLocaleString();
    const back = element("button", "Go back to this one");
    back.type = "button";
    back.dataset.step = c.step;
    back.addEventListener("click", async () => {
      if (!confirm(`Go back to step ${c.step}? Newer checkpoints are set aside.`)) return;
      try {
        const answer = await post("/api/rollback", {step: c.step});
        say(`back at step ${answer.step}`, true);
        refreshOverview();
        refreshHistory();
      } catch (error) { say(error.message); }
    });
    item.append(element("span", `step ${c.step}, ${when}`), back);
    return item;
  }));
}

async function refreshOverview() {
  try {
    const overview = await getJSON("/api/overview");
    $("model").textContent = overview.model;
    showCounts(overview.classes);
    showCheckpoints(overview.checkpoints);
    $("step").textContent = overview.step;
    if (overview.store_problem) say("sample store: " + overview.store_problem);
  } catch (error) { say(error.message); }
}

async function refreshHistory() {
  try {
    view.history = await getJSON("/api/history");
    drawCurves();
  } catch (error) { say(error.message); }
}

// -- the event stream -----------------------------------------------------------------------

function listen() {
  const events = new EventSource("/api/events");
  const on = (kind, handler) => events.addEventListener(kind, message => handler(JSON.parse(message.data)));
  on("state", e => showState(e.state));
  on("status", e => { $("samples").textContent = e.samples; });
  on("prediction", showPrediction);
  on("metrics", e => {
    showMetrics(e);
    view.history.push({step: e.step, loss: e.train_loss, val_accuracy: e.eval_accuracy});
    if (view.history.length > 2000) view.history.splice(0, view.history.length - 2000);
    drawCurves();
  });
  on("sample", e => {
    if (e.deleted || e.cleared !== undefined) { refreshOverview(); return; }
    if (e.label !== null && e.label !== undefined) {
      view.counts[e.label] = (view.counts[e.label] || 0) + 1;
      showCounts(view.counts.map(samples => ({samples})));
      if (e.label === view.shownClass) scheduleSamples();
    }
  });
  on("checkpoint", refreshOverview);
  on("rollback", () => { refreshOverview(); refreshHistory(); });
  on("failure", e => say(`${e.part}: ${e.message}`));
  events.addEventListener("open", () => say(""));
  events.addEventListener("error", () => say("connection to the Pi lost; trying again…"));
}

let samplesTimer = null;
function scheduleSamples() {   // at most one refresh of the thumbnails a second while labelling
  if (samplesTimer === null) samplesTimer = setTimeout(() => { samplesTimer = null; refreshSamples(); }, 1000);
}

async function start() {
  const status = await getJSON("/api/status");
  Object.assign(view, {classes: status.classes, kind: status.kind, fps: status.fps, labelMode: status.label_mode,
                       holdSeconds: status.hold_seconds});
  const now = status.now;
  if (now.state) showState(now.state.state);
  if (now.metrics) showMetrics(now.metrics);
  if (now.prediction) showPrediction(now.prediction);
  buildTiles();
  buildCurate();
  $("pause").addEventListener("click", () => post("/api/pause").then(a => showState(a.result)).catch(e => say(e.message)));
  $("resume").addEventListener("click", () => post("/api/resume").then(a => showState(a.result)).catch(e => say(e.message)));
  $("save").addEventListener("click", () => post("/api/checkpoint")
    .then(a => { say(a.result ? "checkpoint saved" : "nothing new since the last checkpoint", true); refreshOverview(); })
    .catch(e => say(e.message)));
  await refreshOverview();
  refreshHistory();
  refreshSamples();
  startFrames();
  listen();
}

start().catch(error => say(error.message));
