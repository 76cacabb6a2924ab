"""Every classification metric, derived from one confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as j."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def from_confusion(cm: np.ndarray) -> dict:
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    w = support / support.sum()
    return {
        "accuracy": float(tp.sum() / cm.sum()),
        "per_class_accuracy": recall.tolist(),  # accuracy within each true class = recall
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.astype(int).tolist(),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted": {"precision": float(precision @ w), "recall": float(recall @ w), "f1": float(f1 @ w)},
    }


def topk_accuracy(logits: np.ndarray, y: np.ndarray, k: int) -> float:
    top = np.argpartition(-logits, kth=min(k, logits.shape[1]) - 1, axis=1)[:, :k]
    return float((top == y[:, None]).any(1).mean())
