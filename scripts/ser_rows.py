"""The output side of `predict.py`: decoded files become rows of a CSV or JSONL file.

A short file waits in `ShortFiles` to be classified with its neighbours (length-bucketed batches)
and its row is written when the batch is flushed; anything that writes a row in between flushes
first, so rows keep the input order. A long recording is windowed as it streams in
(`predict_long_file`): one row per window, then a summary row. `RowWriter` fixes the schema and
flushes per file; `RunStats` counts what the last log line reports.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ser_audio import AudioReadError, sliding_windows
from ser_data import check_waveform
from ser_inputs import LoadedFile, load_file

if TYPE_CHECKING:
    import argparse

    from predict import Predictor


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _seconds(samples: int | None, sampling_rate: int) -> float | None:
    return None if samples is None else round(samples / sampling_rate, 3)


class RowWriter:
    """Writes rows to CSV or JSONL as they come (flushed per file), with a fixed schema."""

    def __init__(self, path: str | Path, labels: list[str], transcripts: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.transcripts = transcripts
        self.format = self.path.suffix.lower().lstrip(".")
        self.handle = self.path.open("w", encoding="utf-8", newline="")
        self.columns = [
            "path",
            "segment",
            "start_s",
            "end_s",
            "label",
            "score",
            *[f"prob_{label}" for label in labels],
            *(["transcript"] if transcripts else []),
            "num_windows",
            "skipped_windows",
            *[f"fraction_{label}" for label in labels],
            "error",
        ]
        self.csv = None
        if self.format == "csv":
            self.csv = csv.DictWriter(self.handle, fieldnames=self.columns)
            self.csv.writeheader()

    def row(
        self,
        path: Path,
        segment: str,
        start_s: float | None = None,
        end_s: float | None = None,
        probabilities: np.ndarray | None = None,
        transcript: str | None = None,
        num_windows: int | None = None,
        skipped_windows: int | None = None,
        fractions: np.ndarray | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """One row as a JSONL-shaped dict (None where a field does not apply)."""
        label = score = None
        if probabilities is not None:
            best = int(np.argmax(probabilities))
            label, score = self.labels[best], round(float(probabilities[best]), 6)
        row: dict[str, Any] = {
            "path": str(path),
            "segment": segment,
            "start_s": start_s,
            "end_s": end_s,
            "label": label,
            "score": score,
            "probabilities": None
            if probabilities is None
            else {name: round(float(p), 6) for name, p in zip(self.labels, probabilities)},
        }
        if self.transcripts:
            row["transcript"] = transcript
        row.update(
            {
                "num_windows": num_windows,
                "skipped_windows": skipped_windows,
                "label_fractions": None
                if fractions is None
                else {name: round(float(f), 6) for name, f in zip(self.labels, fractions)},
                "error": error,
            }
        )
        return row

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self.csv is None:
                self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                continue
            flat = {k: v for k, v in row.items() if k not in ("probabilities", "label_fractions")}
            for name in self.labels:
                flat[f"prob_{name}"] = (row["probabilities"] or {}).get(name)
                flat[f"fraction_{name}"] = (row["label_fractions"] or {}).get(name)
            self.csv.writerow({k: "" if v is None else v for k, v in flat.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


@dataclass
class RunStats:
    files: int = 0
    failed: int = 0
    long_files: int = 0
    windows: int = 0
    skipped_windows: int = 0
    audio_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    def fail(self, path: Path, reason: str) -> None:
        self.failed += 1
        self.failures.append({"path": str(path), "error": reason})


class ShortFiles:
    """Short files waiting to be classified together (length-bucketed), flushed in input order."""

    def __init__(self, predictor: Predictor, writer: RowWriter, stats: RunStats):
        self.predictor, self.writer, self.stats = predictor, writer, stats
        self.paths: list[Path] = []
        self.waveforms: list[np.ndarray] = []
        self.samples = 0

    def add(self, path: Path, waveform: np.ndarray) -> None:
        self.paths.append(path)
        self.waveforms.append(waveform)
        self.samples += len(waveform)
        limit = 4 * self.predictor.batch_seconds * self.predictor.sampling_rate
        if len(self.paths) >= 4 * self.predictor.batch_size or self.samples >= limit:
            self.flush()

    def flush(self) -> None:
        if not self.paths:
            return
        sr = self.predictor.sampling_rate
        rows = []
        for path, waveform, result in zip(self.paths, self.waveforms, self.predictor.predict(self.waveforms)):
            end = _seconds(len(waveform), sr)
            if isinstance(result, Exception):
                reason = f"prediction failed: {result}"
                self.stats.fail(path, reason)
                rows.append(self.writer.row(path, "file", error=reason))
            else:
                probs = softmax(result.logits)
                rows.append(self.writer.row(path, "file", 0.0, end, probs, result.transcript))
        self.writer.write(rows)
        self.paths, self.waveforms, self.samples = [], [], 0


def progress_bar(
    total: float | None, desc: str, disable: bool, iterable: Iterable | None = None, **kwargs: Any
):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=disable, **kwargs)


def predict_long_file(
    path: Path,
    blocks: Iterable[np.ndarray],
    predictor: Predictor,
    writer: RowWriter,
    stats: RunStats,
    args: argparse.Namespace,
    duration_hint: float | None,
) -> None:
    """Windows, then the summary row, of a long recording streamed from `blocks`."""
    sr = predictor.sampling_rate
    window = max(1, round(args.window_seconds * sr))
    hop = max(1, round(args.hop_seconds * sr))
    settings = predictor.audio_settings
    labels = predictor.labels
    probability_sum = np.zeros(len(labels))
    label_counts = np.zeros(len(labels))
    predicted = skipped = 0
    end_sample = 0
    pending: list[tuple[Any, str | None]] = []  # (window, skip reason)
    bar = progress_bar(duration_hint, path.name, args.no_progress, unit="s", leave=False)

    def flush() -> None:
        nonlocal predicted, skipped
        usable = [w for w, reason in pending if reason is None]
        results = iter(predictor.predict([w.samples for w in usable], same_length=True)) if usable else None
        rows = []
        for win, reason in pending:
            start_s, end_s = _seconds(win.start, sr), _seconds(win.end, sr)
            result = next(results) if reason is None else None
            if isinstance(result, Exception):
                reason = f"prediction failed: {result}"
            if reason is not None:
                skipped += 1
                rows.append(writer.row(path, "window", start_s, end_s, error=reason))
                continue
            probs = softmax(result.logits)
            probability_sum[:] += probs
            label_counts[int(np.argmax(probs))] += 1
            predicted += 1
            rows.append(writer.row(path, "window", start_s, end_s, probs, result.transcript))
        writer.write(rows)
        pending.clear()

    error = None
    try:
        for win in sliding_windows(blocks, window, hop):
            pending.append((win, check_waveform(win.samples, settings)))
            if win.end > end_sample:
                bar.update((win.end - end_sample) / sr)
                end_sample = win.end
            if len(pending) >= predictor.batch_size:
                flush()
    except AudioReadError as failure:
        error = failure.reason
    flush()
    bar.close()
    stats.windows += predicted
    stats.skipped_windows += skipped
    stats.audio_seconds += end_sample / sr
    if error is None and predicted == 0:
        error = f"no window could be classified ({skipped} skipped: silent or invalid audio)"
    if error is not None:
        stats.fail(path, error)
    summary = writer.row(
        path,
        "summary",
        0.0,
        _seconds(end_sample, sr),
        probability_sum / predicted if predicted else None,
        num_windows=predicted,
        skipped_windows=skipped,
        fractions=label_counts / predicted if predicted else None,
        error=error,
    )
    writer.write([summary])


def predict_loaded(
    item: LoadedFile,
    predictor: Predictor,
    writer: RowWriter,
    short_files: ShortFiles,
    stats: RunStats,
    args: argparse.Namespace,
) -> None:
    """Rows of one decoded file: an error row, the pending batch (short file), or windows now."""
    if item.error is not None:
        stats.fail(item.path, item.error)
        short_files.flush()  # rows stay in input order
        writer.write([writer.row(item.path, "file", error=item.error)])
    elif item.waveform is not None:
        stats.audio_seconds += len(item.waveform) / predictor.sampling_rate
        short_files.add(item.path, item.waveform)
    else:
        short_files.flush()
        stats.long_files += 1
        blocks = chain(item.head, item.rest if item.rest is not None else ())
        item.head = []  # the stream owns the blocks now
        predict_long_file(item.path, blocks, predictor, writer, stats, args, item.duration_hint)


def predict_file(
    path: Path,
    predictor: Predictor,
    writer: RowWriter,
    short_files: ShortFiles,
    stats: RunStats,
    args: argparse.Namespace,
) -> None:
    """Classify one file: short ones join the pending batch, long ones are windowed now."""
    predict_loaded(load_file(path, predictor, args), predictor, writer, short_files, stats, args)
