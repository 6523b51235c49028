// Face-mask detector demo: webcam frames or a dropped / chosen image go to POST /detect; the faces come back
// in pixels of the image sent and are drawn on a canvas laid over the video or picture.
"use strict";

const COLORS = { mask: "#00c853", unmask: "#ff1744" };
const OTHER_COLOR = "#ffab00";
const JPEG_QUALITY = 0.9;
const FPS_WINDOW_MS = 2000;      // FPS = results per second over this window
const RETRY_DELAY_MS = 1000;     // wait after a failed request before the next frame

const $ = (id) => document.getElementById(id);
const video = $("video"), picture = $("picture"), overlay = $("overlay"), stage = $("stage");
const grabCanvas = document.createElement("canvas");

let stream = null;               // the camera's MediaStream while it runs
let cameraRun = 0;               // increases at each start / stop, so a stale loop ends
let resultTimes = [];

function showMessage(text) { $("message").textContent = text || ""; }

async function postImage(blob, type) {
  const started = performance.now();
  const response = await fetch("/detect", {
    method: "POST", body: blob, headers: { "Content-Type": type || "application/octet-stream" },
  });
  let body;
  try { body = await response.json(); } catch (error) { body = { error: `HTTP ${response.status}` }; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  body.roundTripMs = performance.now() - started;
  return body;
}

function drawDetections(result, width, height) {
  overlay.width = width;
  overlay.height = height;
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, width, height);
  const line = Math.max(2, Math.round(Math.min(width, height) / 250));
  const fontSize = Math.max(12, Math.round(Math.min(width, height) / 40));
  context.font = `600 ${fontSize}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  for (const face of result.faces) {
    const { left, top, right, bottom } = face.box;
    const color = COLORS[face.label] || OTHER_COLOR;
    context.strokeStyle = color;
    context.lineWidth = line;
    context.strokeRect(left, top, right - left, bottom - top);
    const text = `${face.label} ${face.score.toFixed(2)}`;
    const textWidth = context.measureText(text).width + 6;
    const labelTop = top - fontSize - 4 < 0 ? bottom + fontSize + 4 : top;
    context.fillStyle = color;
    context.fillRect(left - line / 2, labelTop - fontSize - 4, textWidth, fontSize + 4);
    context.fillStyle = "white";
    context.fillText(text, left + 3, labelTop - 2);
  }
}

function updatePanel(result, source) {
  const counts = $("counts");
  const mask = result.counts.mask || 0, unmask = result.counts.unmask || 0;
  $("count-mask").textContent = mask;
  $("count-unmask").textContent = unmask;
  $("latency").textContent = `${result.roundTripMs.toFixed(0)} ms`;
  $("inference").textContent = `${result.inference_ms.toFixed(0)} ms`;
  $("image-size").textContent = `${result.image.width} × ${result.image.height}`;
  const list = $("faces");
  list.replaceChildren(...result.faces.map((face) => {
    const item = document.createElement("li");
    const { left, top, right, bottom } = face.box;
    item.className = face.label;
    item.dataset.label = face.label;
    item.dataset.score = face.score;
    item.dataset.box = JSON.stringify([left, top, right, bottom]);
    item.textContent = `${face.label} ${face.score.toFixed(2)} at ${Math.round(left)},${Math.round(top)}`;
    return item;
  }));
  Object.assign(counts.dataset, {
    source, faces: result.faces.length, mask, unmask,
    width: result.image.width, height: result.image.height,
    updates: Number(counts.dataset.updates) + 1,
  });
}

function updateFps() {
  const now = performance.now();
  resultTimes.push(now);
  resultTimes = resultTimes.filter((time) => now - time <= FPS_WINDOW_MS);
  const span = resultTimes[resultTimes.length - 1] - resultTimes[0];
  if (resultTimes.length > 1 && span > 0) $("fps").textContent = ((resultTimes.length - 1) * 1000 / span).toFixed(1);
}

function grabFrame() {
  grabCanvas.width = video.videoWidth;
  grabCanvas.height = video.videoHeight;
  grabCanvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => grabCanvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function cameraLoop(run) {
  while (run === cameraRun) {
    if (video.readyState < 2 || !video.videoWidth) { await sleep(50); continue; }
    const width = video.videoWidth, height = video.videoHeight;
    try {
      const result = await postImage(await grabFrame(), "image/jpeg");
      if (run !== cameraRun) return;
      drawDetections(result, width, height);
      updatePanel(result, "camera");
      updateFps();
      showMessage("");
    } catch (error) {
      showMessage(`camera frame: ${error.message}`);
      await sleep(RETRY_DELAY_MS);
    }
  }
}

function setCameraButtons(running) {
  $("start-camera").disabled = running;
  $("stop-camera").disabled = !running;
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("this browser gives no camera access here (open the page from 127.0.0.1 or localhost: browsers allow the camera only there or over HTTPS)");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    showMessage(`camera: ${error.message}`);
    return;
  }
  const run = ++cameraRun;
  resultTimes = [];
  video.srcObject = stream;
  video.hidden = false;
  picture.hidden = true;
  $("placeholder").hidden = true;
  setCameraButtons(true);
  await video.play().catch(() => {});
  cameraLoop(run);
}

function stopCamera() {
  cameraRun++;
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  video.srcObject = null;
  setCameraButtons(false);
  $("fps").textContent = "–";
}

async function detectFile(file) {
  if (!file) return;
  stopCamera();
  const url = URL.createObjectURL(file);
  picture.src = url;
  try {
    await picture.decode();
  } catch (error) {
    // not an image the browser shows: the server still says why it refuses it
  }
  video.hidden = true;
  picture.hidden = false;
  $("placeholder").hidden = true;
  try {
    const result = await postImage(file, file.type);
    drawDetections(result, result.image.width, result.image.height);
    updatePanel(result, "image");
    showMessage("");
  } catch (error) {
    overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
    showMessage(`${file.name}: ${error.message}`);
  }
}

async function showHealth() {
  try {
    const health = await (await fetch("/health")).json();
    const name = (health.model || "model").split("/").pop();
    $("model").textContent = `${name} (${health.format}), input ${health.input_size.join("×")}`;
  } catch (error) {
    $("model").textContent = "server not reachable";
  }
}

$("start-camera").addEventListener("click", startCamera);
$("stop-camera").addEventListener("click", stopCamera);
$("file-input").addEventListener("change", (event) => detectFile(event.target.files[0]));
stage.addEventListener("dragover", (event) => { event.preventDefault(); stage.classList.add("dragging"); });
stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
stage.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("dragging");
  detectFile(event.dataTransfer.files[0]);
});
showHealth();
