// In-browser mode of the demo page: the decoded ONNX model (export.py --format onnx_decoded) run by
// onnxruntime-web (WASM) inside this page. Nothing is sent anywhere: the page fetches the model, its spec and the
// runtime once from where the page itself came from, then every frame stays in the browser.
//
// The steps match the Python Detector's one-pass path: letterbox (pad bottom / right with grey 127 to the input's
// aspect ratio, bilinear resize with half-pixel centres as cv2.resize, (x - 127.5) / 127.5, NCHW RGB), the model
// (outputs boxes [1, P, 4] corner form normalised to the input, scores [1, P, K] foreground probabilities),
// scores >= threshold, class-wise NMS, at most max_number_keep, boxes back to pixels of the image, clipped, empty
// ones dropped (runtime/preprocessing.py, runtime/postprocessing.py).

const PAD_VALUE = 127;

// (h, w) in pixels of a height x width image padded at the bottom / right to the aspect ratio of inputSize
// [h, w], each side rounded up (runtime.preprocessing.letterbox_shape).
export function letterboxShape(height, width, inputSize) {
  const aspect = inputSize[1] / inputSize[0];
  const newWidth = Math.max(width, Math.ceil(height * aspect));
  return [Math.max(height, Math.ceil(newWidth / aspect)), newWidth];
}

// Source index and weight of the next pixel for each output coordinate of a bilinear resize from srcSize to
// dstSize with half-pixel centres, clamped at the edges as cv2.resize(INTER_LINEAR) does.
function resizeTaps(srcSize, dstSize) {
  const index = new Int32Array(dstSize), weight = new Float32Array(dstSize);
  const scale = srcSize / dstSize;
  for (let d = 0; d < dstSize; d++) {
    let f = (d + 0.5) * scale - 0.5;
    let s = Math.floor(f);
    f -= s;
    if (s < 0) { s = 0; f = 0; }
    if (s >= srcSize - 1) { s = srcSize - 1; f = 0; }
    index[d] = s;
    weight[d] = f;
  }
  return [index, weight];
}

// RGBA pixels (Uint8ClampedArray, width x height, as ImageData.data) -> network input Float32Array [1, 3, h, w]
// (NCHW, RGB) of inputSize [h, w]: letterboxed, resized, (x - 127.5) / 127.5. Returns {data, frame: [fh, fw]}
// where frame is the letterboxed image's size in pixels (to map boxes back).
export function letterboxInput(rgba, width, height, inputSize) {
  const [frameH, frameW] = letterboxShape(height, width, inputSize);
  const [outH, outW] = inputSize;
  const [xs, wx] = resizeTaps(frameW, outW);
  const [ys, wy] = resizeTaps(frameH, outH);
  const data = new Float32Array(3 * outH * outW);
  const plane = outH * outW;
  const pixel = (x, y, c) => (x < width && y < height ? rgba[(y * width + x) * 4 + c] : PAD_VALUE);
  for (let oy = 0; oy < outH; oy++) {
    const y0 = ys[oy], y1 = Math.min(y0 + 1, frameH - 1), fy = wy[oy];
    for (let ox = 0; ox < outW; ox++) {
      const x0 = xs[ox], x1 = Math.min(x0 + 1, frameW - 1), fx = wx[ox];
      for (let c = 0; c < 3; c++) {
        const top = pixel(x0, y0, c) * (1 - fx) + pixel(x1, y0, c) * fx;
        const bottom = pixel(x0, y1, c) * (1 - fx) + pixel(x1, y1, c) * fx;
        data[c * plane + oy * outW + ox] = (top * (1 - fy) + bottom * fy) / 127.5 - 1;
      }
    }
  }
  return { data, frame: [frameH, frameW] };
}

// A copy of JPEG file bytes (Uint8Array) whose Exif orientation tag says 1 (as stored), or the bytes themselves
// when there is none to change. Browsers rotate a JPEG by its Exif orientation when they decode it (for <img>,
// canvas and createImageBitmap alike); the server (OpenCV) takes the pixels as stored, so the page undoes it.
export function withStoredOrientation(bytes) {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return bytes;   // not a JPEG
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 2;
  while (offset + 4 <= bytes.length && bytes[offset] === 0xff) {
    const marker = bytes[offset + 1], length = view.getUint16(offset + 2);
    if (marker === 0xda || marker === 0xd9) break;   // start of scan / end of image: no more metadata
    const exif = offset + 4;
    if (marker === 0xe1 && length >= 16 && view.getUint32(exif) === 0x45786966 && view.getUint16(exif + 4) === 0) {
      const tiff = exif + 6, little = view.getUint16(tiff) === 0x4949;
      const ifd = tiff + view.getUint32(tiff + 4, little);
      if (ifd + 2 > offset + 2 + length) return bytes;
      const entries = view.getUint16(ifd, little);
      for (let entry = ifd + 2; entry < ifd + 2 + entries * 12 && entry + 12 <= offset + 2 + length; entry += 12) {
        if (view.getUint16(entry, little) === 0x0112) {   // Orientation, one SHORT in the value field
          if (view.getUint16(entry + 8, little) === 1) return bytes;
          const copy = bytes.slice();
          new DataView(copy.buffer).setUint16(entry + 8, 1, little);
          return copy;
        }
      }
      return bytes;
    }
    offset += 2 + length;
  }
  return bytes;
}

function iou(boxes, a, b) {
  const width = Math.min(boxes[a + 2], boxes[b + 2]) - Math.max(boxes[a], boxes[b]);
  const height = Math.min(boxes[a + 3], boxes[b + 3]) - Math.max(boxes[a + 1], boxes[b + 1]);
  if (width <= 0 || height <= 0) return 0;
  const inter = width * height;
  const areaA = (boxes[a + 2] - boxes[a]) * (boxes[a + 3] - boxes[a + 1]);
  const areaB = (boxes[b + 2] - boxes[b]) * (boxes[b + 3] - boxes[b + 1]);
  return inter / (areaA + areaB - inter);
}

// Class-wise NMS. boxes: Float32Array [P * 4] corner form; scores: Float32Array [P * K]. Returns the kept
// detections [{prior, cls, score}] (cls in 0..K-1), best score first, at most maxDetections.
export function classwiseNms(boxes, scores, numClasses, scoreThreshold, iouThreshold, maxDetections) {
  const kept = [];
  const priors = scores.length / numClasses;
  for (let cls = 0; cls < numClasses; cls++) {
    const candidates = [];
    for (let p = 0; p < priors; p++) {
      const score = scores[p * numClasses + cls];
      if (score >= scoreThreshold) candidates.push({ prior: p, cls, score });
    }
    candidates.sort((a, b) => b.score - a.score);
    const chosen = [];
    for (const candidate of candidates) {
      if (chosen.length >= maxDetections) break;
      if (chosen.every((other) => iou(boxes, candidate.prior * 4, other.prior * 4) <= iouThreshold)) {
        chosen.push(candidate);
      }
    }
    kept.push(...chosen);
  }
  kept.sort((a, b) => b.score - a.score);
  return kept.slice(0, maxDetections);
}

// The spec (model.json) and an onnxruntime-web session of the page's model; baseUrl: where index.html is.
export async function loadBrowserModel(baseUrl, spec) {
  const ort = await import(new URL("ort/ort.wasm.min.mjs", baseUrl).href);
  ort.env.wasm.wasmPaths = new URL("ort/", baseUrl).href;
  ort.env.logLevel = "error";
  const response = await fetch(new URL(spec.model, baseUrl));
  if (!response.ok) throw new Error(`${spec.model}: HTTP ${response.status}`);
  const session = await ort.InferenceSession.create(new Uint8Array(await response.arrayBuffer()), {
    executionProviders: ["wasm"], graphOptimizationLevel: "all",
  });
  return { ort, session, spec };
}

// Faces in RGBA pixels of a width x height image, as the server's POST /detect answers them ({image, faces,
// counts}), plus modelMs: the time of session.run in ms.
export async function detectPixels(model, rgba, width, height, scoreThreshold) {
  const { ort, session, spec } = model;
  const { data, frame } = letterboxInput(rgba, width, height, spec.input_size);
  const input = new ort.Tensor("float32", data, [1, 3, ...spec.input_size]);
  const runStarted = performance.now();
  const outputs = await session.run({ [spec.input_name]: input });
  const modelMs = performance.now() - runStarted;
  const boxes = outputs[spec.output_names.boxes].data, scores = outputs[spec.output_names.scores].data;
  const labels = spec.labels;
  const threshold = scoreThreshold ?? spec.score_threshold;
  const kept = classwiseNms(boxes, scores, labels.length, threshold, spec.nms_threshold, spec.max_number_keep);
  const [frameH, frameW] = frame;
  const faces = [];
  for (const { prior, cls, score } of kept) {
    const box = boxes.subarray(prior * 4, prior * 4 + 4);
    const left = Math.min(Math.max(box[0] * frameW, 0), width), right = Math.min(Math.max(box[2] * frameW, 0), width);
    const top = Math.min(Math.max(box[1] * frameH, 0), height), bottom = Math.min(Math.max(box[3] * frameH, 0), height);
    if (!(right > left && bottom > top)) continue;   // wholly in the letterbox padding
    const round1 = (value) => Math.round(value * 10) / 10;
    faces.push({ label: labels[cls], score: Math.round(score * 1e4) / 1e4,
                 box: { left: round1(left), top: round1(top), right: round1(right), bottom: round1(bottom) } });
  }
  const counts = Object.fromEntries(labels.map((label) => [label, 0]));
  for (const face of faces) counts[face.label] += 1;
  for (const tensor of Object.values(outputs)) tensor.dispose?.();
  return { image: { width, height }, faces, counts, modelMs };
}
