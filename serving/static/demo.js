// Face-mask detector demo: webcam frames or a dropped / chosen image, detected either on the server (POST /detect:
// the faces come back in pixels of the image sent) or here in the browser (browser_model.js: onnxruntime-web, no
// request carries an image), drawn on a canvas laid over the video or picture.
//
// model/model.json (the browser model's spec) says whether a server is there ("server": false in a static export
// of the page, serve.py --static); without it, only the server mode is offered. ?mode=browser picks the mode.
import { detectPixels, loadBrowserModel, withStoredOrientation } from "./browser_model.js";

const COLORS = { mask: "#00c853", unmask: "#ff1744" };
const OTHER_COLOR = "#ffab00";
const JPEG_QUALITY = 0.9;
const FPS_WINDOW_MS = 2000;      // FPS = results per second over this window
const RETRY_DELAY_MS = 1000;     // wait after a failed frame before the next one
const BASE_URL = new URL(".", document.baseURI).href;   // the folder of index.html: the server's root or the export
const FOOTER = {
  server: "Frames and images are sent to this server's <code>POST /detect</code>; nothing leaves this machine.",
  browser: "The model runs in this page (onnxruntime-web, WebAssembly): frames and images never leave this browser.",
};

const $ = (id) => document.getElementById(id);
const video = $("video"), picture = $("picture"), overlay = $("overlay"), stage = $("stage");
const grabCanvas = document.createElement("canvas");

let stream = null;               // the camera's MediaStream while it runs
let cameraRun = 0;               // increases at each start / stop, so a stale loop ends
let resultTimes = [];
let mode = "server";             // "server" or "browser"
let spec = null;                 // model/model.json, null where there is none
let serverHealth = null;         // GET /health, null without a server
let browserModel = null;         // Promise of loadBrowserModel's result, once asked for
let currentFile = null;          // the image shown, to detect it again when the mode changes

function showMessage(text) { $("message").textContent = text || ""; }

async function fetchJson(path) {
  const response = await fetch(new URL(path, BASE_URL));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function postImage(blob, type) {
  const started = performance.now();
  const response = await fetch(new URL("detect", BASE_URL), {
    method: "POST", body: blob, headers: { "Content-Type": type || "application/octet-stream" },
  });
  let body;
  try { body = await response.json(); } catch (error) { body = { error: `HTTP ${response.status}` }; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return { ...body, frameMs: performance.now() - started, modelMs: body.inference_ms };
}

function ensureBrowserModel() {
  if (!browserModel) {
    browserModel = loadBrowserModel(BASE_URL, spec);
    browserModel.catch(() => { browserModel = null; });   // a later switch tries again
  }
  return browserModel;
}

// The RGBA pixels of the video's current frame or of the picture, at their own size.
function grabPixels(element, width, height) {
  grabCanvas.width = width;
  grabCanvas.height = height;
  const context = grabCanvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(element, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

async function detectHere(element, width, height) {
  const model = await ensureBrowserModel();
  const started = performance.now();
  const result = await detectPixels(model, grabPixels(element, width, height), width, height);
  return { ...result, frameMs: performance.now() - started };
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

function updatePanel(result, source, resultMode) {
  const counts = $("counts");
  const mask = result.counts.mask || 0, unmask = result.counts.unmask || 0;
  $("count-mask").textContent = mask;
  $("count-unmask").textContent = unmask;
  $("frame-time").textContent = `${result.frameMs.toFixed(0)} ms`;
  $("inference").textContent = `${result.modelMs.toFixed(0)} ms`;
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
    source, mode: resultMode, faces: result.faces.length, mask, unmask,
    width: result.image.width, height: result.image.height,
    frameMs: result.frameMs.toFixed(1), modelMs: result.modelMs.toFixed(1),
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
    const width = video.videoWidth, height = video.videoHeight, frameMode = mode;
    try {
      const result = frameMode === "browser" ? await detectHere(video, width, height)
        : await postImage(await grabFrame(), "image/jpeg");
      if (run !== cameraRun) return;
      drawDetections(result, width, height);
      updatePanel(result, "camera", frameMode);
      updateFps();
      showMessage("");
      if (frameMode === "browser") await sleep(0);   // let the page paint between frames
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
  currentFile = null;
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
  currentFile = file;
  // shown (and read in in-browser mode) as stored, as the server reads it: no Exif rotation
  const stored = withStoredOrientation(new Uint8Array(await file.arrayBuffer()));
  if (file !== currentFile) return;
  if (picture.src.startsWith("blob:")) URL.revokeObjectURL(picture.src);
  picture.src = URL.createObjectURL(new Blob([stored], { type: file.type }));
  let shown = true;
  try {
    await picture.decode();
  } catch (error) {
    shown = false;   // not an image the browser shows: in server mode the server still says why it refuses it
  }
  video.hidden = true;
  picture.hidden = false;
  $("placeholder").hidden = true;
  const fileMode = mode;
  try {
    let result;
    if (fileMode === "browser") {
      if (!shown) throw new Error("not an image this browser can decode");
      result = await detectHere(picture, picture.naturalWidth, picture.naturalHeight);
    } else {
      result = await postImage(file, file.type);
    }
    if (file !== currentFile) return;
    drawDetections(result, result.image.width, result.image.height);
    updatePanel(result, "image", fileMode);
    showMessage("");
  } catch (error) {
    overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
    showMessage(`${file.name}: ${error.message}`);
  }
}

function showModel() {
  if (mode === "browser" && spec) {
    $("model").textContent = `${spec.model_name} (ONNX, run in this browser), input ${spec.input_size.join("×")}`;
  } else if (serverHealth) {
    const name = (serverHealth.model || "model").split("/").pop();
    $("model").textContent = `${name} (${serverHealth.format}) on the server, input ${serverHealth.input_size.join("×")}`;
  } else {
    $("model").textContent = "server not reachable";
  }
}

async function setMode(newMode) {
  mode = newMode;
  document.querySelector(`input[name="mode"][value="${newMode}"]`).checked = true;
  $("privacy").innerHTML = FOOTER[newMode];
  showModel();
  resultTimes = [];
  if (newMode === "browser") {
    showMessage("loading the model into this page…");
    try {
      await ensureBrowserModel();
      showMessage("");
    } catch (error) {
      showMessage(`in-browser mode: ${error.message}`);
      if (serverHealth) await setMode("server");
      return;
    }
  }
  if (currentFile && !stream) detectFile(currentFile);
}

async function init() {
  try {
    spec = await fetchJson("model/model.json");
  } catch (error) {
    spec = null;   // a server without a browser model
  }
  const browserRadio = document.querySelector('input[name="mode"][value="browser"]');
  const serverRadio = document.querySelector('input[name="mode"][value="server"]');
  if (!spec) {
    browserRadio.disabled = true;
    browserRadio.parentElement.title = "this server offers no browser model (serve.py --browser_model)";
  }
  if (!spec || spec.server) {
    try { serverHealth = await fetchJson("health"); } catch (error) { serverHealth = null; }
  }
  if (!serverHealth) {
    serverRadio.disabled = true;
    serverRadio.parentElement.title = "no server: this page was opened as static files";
  }
  if (!spec && !serverHealth) {
    showModel();
    showMessage("no server and no model/model.json next to this page: serve it with serve.py, or export it with serve.py --static DIR");
    return;
  }
  const asked = new URLSearchParams(window.location.search).get("mode");
  const wanted = asked === "browser" || asked === "server" ? asked : (serverHealth ? "server" : "browser");
  const allowed = wanted === "browser" ? spec : serverHealth;
  await setMode(allowed ? wanted : (serverHealth ? "server" : "browser"));
}

$("start-camera").addEventListener("click", startCamera);
$("stop-camera").addEventListener("click", stopCamera);
$("file-input").addEventListener("change", (event) => detectFile(event.target.files[0]));
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => { if (radio.checked) setMode(radio.value); });
}
stage.addEventListener("dragover", (event) => { event.preventDefault(); stage.classList.add("dragging"); });
stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
stage.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("dragging");
  detectFile(event.dataTransfer.files[0]);
});
init();
