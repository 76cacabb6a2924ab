"""Classify image files with OpenCV DNN and an exported zoo ONNX model, following the contract in the sidecar
<model>.json (docs/deploy.md). Needs only numpy and OpenCV (`pip install opencv-python-headless`), not zoo or torch.

    python infer_opencv.py model.onnx a.jpg b.png   # prints: file <TAB> class index <TAB> class name <TAB> probability
"""

import json
import sys

import cv2
import numpy as np


def preprocess(path: str, contract: dict) -> np.ndarray:
    c, h, w = contract["input_size"]
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"error: {path}: not a readable image")
    if c == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # OpenCV decodes to BGR; the model was trained on RGB
    if img.shape[:2] != (h, w):  # shrinking: INTER_AREA averages like the contract's antialiased bilinear
        shrink = img.shape[0] > h or img.shape[1] > w
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = img.reshape(h, w, c).astype(np.float32) * contract["pixel_scale"]
    x = (x - np.float32(contract["mean"])) / np.float32(contract["std"])
    return x.transpose(2, 0, 1)  # HWC -> CHW: the contract's layout is NCHW


def main(model: str, images: list[str]) -> None:
    with open(model + ".json") as f:  # the sidecar: OpenCV has no API for ONNX metadata
        contract = json.load(f)
    net = cv2.dnn.readNetFromONNX(model)
    net.setInput(np.stack([preprocess(p, contract) for p in images]))
    logits = net.forward()  # the output is logits: softmax for probabilities
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for path, p in zip(images, probs):
        k = int(p.argmax())
        print(f"{path}\t{k}\t{contract['classes'][k]}\t{p[k]:.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python infer_opencv.py MODEL.onnx IMAGE...")
    main(sys.argv[1], sys.argv[2:])
