"""Metrics and result files: WA, UA, macro-F1, per-class report, confusion matrix, WER/CER."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.metrics import classification_report as sklearn_report


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], label_names: list[str]) -> dict:
    """WA (accuracy), UA (mean per-class recall over classes present), macro-F1, per-class report
    and the confusion matrix (rows = true class), all as fractions in [0, 1]."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.size == 0:
        return {"wa": None, "ua": None, "macro_f1": None, "num_examples": 0}
    ids = list(range(len(label_names)))
    present = sorted(set(labels.tolist()))
    report = sklearn_report(
        labels, predictions, labels=ids, target_names=label_names, output_dict=True, zero_division=0
    )
    return {
        "wa": float(accuracy_score(labels, predictions)),
        "ua": float(balanced_accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0)),
        "num_examples": int(labels.size),
        "per_class": {
            name: {k: float(v) for k, v in report[name].items()} for name in label_names if name in report
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
        "labels": list(label_names),
    }


def transcription_metrics(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus WER and CER over clips that have a reference transcript."""
    import jiwer

    pairs = [(r, h) for r, h in zip(references, hypotheses) if r and r.strip()]
    if not pairs:
        return {}
    refs, hyps = zip(*pairs)
    return {"wer": float(jiwer.wer(list(refs), list(hyps))), "cer": float(jiwer.cer(list(refs), list(hyps)))}


def save_confusion_png(
    confusion: Sequence[Sequence[int]], label_names: list[str], path: str | Path, title: str
):
    """Confusion matrix with counts and row-normalised colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, dtype=float)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.7 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=colour, fontsize=9)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file so that a reader (or a resumed run) never sees it half-written: a temporary
    file in the same directory, fsynced, then renamed over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))


def write_jsonl_atomic(path: str | Path, rows: Sequence[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table; floats in [0, 1] are shown as percentages with one decimal."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{100 * value:.1f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
