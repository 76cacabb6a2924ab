// Classify PNG files with an exported zoo ONNX model in Node.js (onnxruntime-node), following the contract in the
// sidecar <model>.json (docs/deploy.md): RGB (or L), scaled by pixel_scale, (x - mean) / std, NCHW float32; logits
// out. Node has no image decoder: PNGs (8-bit gray/RGB/RGBA, not interlaced) are decoded here with node:zlib; for
// JPEGs or resizing use an image library (e.g. sharp: .removeAlpha().resize(w, h).raw()).
//
//   npm install onnxruntime-node
//   node infer.mjs model.onnx a.png b.png     # prints: file <TAB> class index <TAB> class name <TAB> probability
import { readFileSync } from "node:fs";
import { inflateSync } from "node:zlib";
import ort from "onnxruntime-node";

// PNG -> { width, height, channels, pixels (HWC bytes) }.
function decodePng(path) {
  const buf = readFileSync(path);
  if (buf.readUInt32BE(0) !== 0x89504e47) throw new Error(`${path}: not a PNG file`);
  let pos = 8, width = 0, height = 0, channels = 0;
  const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos), type = buf.toString("latin1", pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === "IHDR") {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4);
      const depth = data[8], color = data[9], interlace = data[12];
      channels = { 0: 1, 2: 3, 6: 4 }[color];
      if (depth !== 8 || !channels || interlace) throw new Error(`${path}: only 8-bit gray/RGB/RGBA, non-interlaced`);
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      break;
    }
    pos += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat)), stride = width * channels;
  const px = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {  // undo each row's filter (PNG spec, section 9)
    const filter = raw[y * (stride + 1)], row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? px[y * stride + i - channels] : 0, b = y > 0 ? px[(y - 1) * stride + i] : 0;
      const c = i >= channels && y > 0 ? px[(y - 1) * stride + i - channels] : 0;
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      px[y * stride + i] = (row[i] + pred) & 255;
    }
  }
  return { width, height, channels, pixels: px };
}

// The contract: pixels -> one normalised CHW float32 image.
function preprocess(img, contract, path) {
  const [c, h, w] = contract.input_size;
  if (img.width !== w || img.height !== h) throw new Error(`${path}: ${img.width}x${img.height}, expected ${w}x${h}`);
  const x = new Float32Array(c * h * w);
  for (let i = 0; i < h * w; i++) {
    const p = img.pixels.subarray(i * img.channels, (i + 1) * img.channels);
    const rgb = img.channels === 1 ? [p[0], p[0], p[0]] : [p[0], p[1], p[2]];  // alpha dropped
    const v = c === 1 ? [img.channels === 1 ? p[0] : 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]] : rgb;
    for (let k = 0; k < c; k++) x[k * h * w + i] = (v[k] * contract.pixel_scale - contract.mean[k]) / contract.std[k];
  }
  return x;
}

const [modelPath, ...images] = process.argv.slice(2);
if (!modelPath || images.length === 0) {
  console.error("usage: node infer.mjs MODEL.onnx IMAGE.png...");
  process.exit(2);
}
const contract = JSON.parse(readFileSync(modelPath + ".json", "utf8"));  // the sidecar: ORT-node cannot read metadata
const [c, h, w] = contract.input_size;
const batch = new Float32Array(images.length * c * h * w);
images.forEach((f, b) => batch.set(preprocess(decodePng(f), contract, f), b * c * h * w));
const session = await ort.InferenceSession.create(modelPath);
const out = await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", batch, [images.length, c, h, w]) });
const logits = out[session.outputNames[0]].data, n = contract.classes.length;
images.forEach((f, b) => {
  const row = Array.from(logits.subarray(b * n, (b + 1) * n));
  const m = Math.max(...row), e = row.map((v) => Math.exp(v - m)), s = e.reduce((a, v) => a + v, 0);
  const k = row.indexOf(m);
  console.log(`${f}\t${k}\t${contract.classes[k]}\t${(e[k] / s).toFixed(4)}`);
});
