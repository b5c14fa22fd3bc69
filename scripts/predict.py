#!/usr/bin/env python
"""Predict emotions for audio files, folders and globs with a saved model (local or Hub).

    python scripts/predict.py MODEL PATH [PATH ...] --output predictions.csv   (or .jsonl)

MODEL is a model directory written by `train.py` or a Hub id; it is loaded with
`trust_remote_code=True` (AutoModelForAudioClassification, AutoFeatureExtractor and, for models
with a CTC head, AutoProcessor). PATH is a file, a folder (searched recursively for audio
extensions) or a glob (`"data/**/*.wav"`, quoted).

Every file is decoded by FFmpeg (through torchcodec), down-mixed to mono and resampled to the
model's rate, exactly as training decodes audio: a short file in one call, a longer one in blocks.
Decoding runs in a background thread, up to `--prefetch` files (and 240 s of audio) ahead of the
model, so that it overlaps prediction; rows keep the input order (`--prefetch 0` decodes in the
main thread). Then:

- A file of at most `--long_threshold_seconds` is classified whole: one row, `segment` = "file".
  Files are batched by similar length (`ser_inference.predict_waveforms`), which gives the same
  labels and probabilities as `pipeline("audio-classification", model=MODEL,
  trust_remote_code=True)` on the same file (probabilities within 1e-4 with the onnxruntime
  backend, see "Backend" below). Models whose backbone is not padding-invariant
  (GroupNorm feature encoders such as wav2vec2-base) are run one file at a time for that reason.
- A longer file (minutes to hours) is never loaded whole: overlapping windows of
  `--window_seconds` every `--hop_seconds` (plus one window aligned with the end) are classified
  as the audio streams in, one row each (`segment` = "window", with `start_s`/`end_s`), followed by
  a `segment` = "summary" row: mean probabilities over the windows, the dominant label (argmax of
  the mean), the fraction of windows per predicted label and the number of windows. Memory is
  bounded by one decode block, one window batch and the model, whatever the length; rows are
  written as they are produced.

Columns (CSV) / keys (JSONL): `path`, `segment`, `start_s`, `end_s`, `label`, `score` (probability
of `label`), `prob_<label>` per class (JSONL: `probabilities` {label: p}), `transcript` (models
with a CTC head only: greedy CTC decoding through the processor's `decode_ctc`; window rows have
their own, summary rows none), `num_windows`, `skipped_windows`, `fraction_<label>` (JSONL:
`label_fractions`), `error`.

Bad input never stops the run. A missing, empty, undecodable, NaN, silent or too-short file (the
checks of training, `ser_data.check_waveform`), or one longer than `--max_file_seconds`, gets a row
with `error` set and no label. Silent windows inside a long recording get a window row with
`error` set and are left out of its summary; a long file none of whose windows can be classified
is a failure. The last log line counts files, windows and failures.

Exit status: 0 when at least one file was predicted (failures are in the rows and the log, so a
batch job over a folder with a few broken files still succeeds; `--strict` makes any failure exit
1), 1 when every file failed, 2 when no input file was found or the model cannot be loaded.

Backend (`--backend`): `auto` (default) runs the model's ONNX export with onnxruntime when
`model.onnx` is in the model directory (or Hub repo; `--onnx` names another file), the device is
the CPU and the dtype float32; otherwise PyTorch. `scripts/export_onnx.py MODEL` writes
`MODEL/model.onnx`. onnxruntime gets the same intra-op thread count as torch
(`torch.get_num_threads()`), the same feature extractor and the same batches. Its logits differ
from PyTorch's by less than 1e-4 (the same labels in the tests and on the benchmark's 200 clips;
only a clip whose two best logits are that close could change label), and it ran 1.35x faster than
PyTorch on one CPU thread (`benchmarks/bench_inference.py`: 17.2 s vs 23.3 s for 200 clips, 1,387 s
of audio; 1.3-2x in per-clip probes). At load, both run a probe batch of two synthetic clips; a
graph whose logits differ by 1e-3 or more (an export of other weights, e.g. a stale file after
retraining) is not used. Whenever onnxruntime is not used the log says why (no file, onnxruntime
not installed, GPU device, non-float32 dtype, probe mismatch) and PyTorch runs; `--backend
onnxruntime` logs that as a warning, `--backend torch` never looks for the file. The PyTorch model
is loaded in every case (configuration, CTC frame lengths, the probe).

Models that need F0 (`emotion_decomposed`, `speech_decomposition`) get it from their feature
extractor (pyworld, `compute_pitch=True`); `--gender` selects the F0 search range and the training
speakers' F0 statistics of that gender (default: unknown, which uses statistics of all speakers).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ser_audio import AUDIO_EXTENSIONS, AudioReadError, read_clip, sliding_windows, stream_audio  # noqa: E402
from ser_data import AudioSettings, check_waveform  # noqa: E402
from ser_inference import OnnxRunner, Prediction, default_max_batch_seconds, predict_waveforms  # noqa: E402

logger = logging.getLogger("predict")

BLOCK_SECONDS = 10.0  # decode block; together with one window batch it bounds memory
PREFETCH_SECONDS = 240.0  # decoded audio waiting for the model, at most (plus one file)
ONNX_FILE = "model.onnx"  # what export_onnx.py writes into a model directory by default
ONNX_TOLERANCE = 1e-3  # largest |logit difference| from PyTorch on the load-time probe


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout in --help and shows each option's default."""


class PredictError(RuntimeError):
    """Nothing to predict (no input files) or the model cannot be loaded: exit status 2."""


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Every file is decoded") :],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", help="Model directory (train.py output) or Hub id.")
    parser.add_argument("paths", nargs="+", help="Audio files, folders (recursive) or globs.")
    parser.add_argument("--output", required=True, help="Output file: .csv or .jsonl.")
    parser.add_argument("--batch_size", type=int, default=16, help="Clips or windows per batch.")
    parser.add_argument(
        "--max_batch_seconds",
        type=float,
        default=None,
        help="Padded audio per batch (bounds memory); default 24 s on CPU (larger padded batches run "
        "slower there), 160 s on GPU.",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda:0', ...")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime"],
        help="'auto': onnxruntime when the model's ONNX export is found (CPU, float32), else PyTorch; "
        "'onnxruntime': the same, warning when it falls back to PyTorch; 'torch': PyTorch only.",
    )
    parser.add_argument(
        "--onnx",
        default=None,
        help=f"ONNX file for the onnxruntime backend (default: {ONNX_FILE} in the model directory or Hub repo).",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=64,
        help="Files decoded ahead in a background thread (at most 240 s of audio); 0 = no thread.",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--window_seconds", type=float, default=4.0, help="Window length for long files.")
    parser.add_argument("--hop_seconds", type=float, default=2.0, help="Hop between windows of long files.")
    parser.add_argument(
        "--long_threshold_seconds",
        type=float,
        default=30.0,
        help="Files longer than this are classified in windows (plus a summary row).",
    )
    parser.add_argument(
        "--max_file_seconds", type=float, default=None, help="Refuse files longer than this (error row)."
    )
    parser.add_argument(
        "--min_seconds", type=float, default=0.1, help="Refuse clips shorter than this, as training does."
    )
    parser.add_argument(
        "--gender",
        default=None,
        help="Speaker gender of every file (male/female), for F0 models; unset = unknown.",
    )
    parser.add_argument("--strict", action="store_true", help="Exit with status 1 if any file fails.")
    parser.add_argument("--no_progress", action="store_true", help="No progress bar.")
    args = parser.parse_args(argv)
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        parser.error(f"--output must end in .csv or .jsonl, got {args.output!r}.")
    if args.window_seconds <= 0 or args.hop_seconds <= 0:
        parser.error("--window_seconds and --hop_seconds must be positive.")
    if args.hop_seconds > args.window_seconds:
        parser.error("--hop_seconds larger than --window_seconds would leave gaps between windows.")
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1.")
    if args.prefetch < 0:
        parser.error("--prefetch must be 0 or more.")
    return args


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def _audio_files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def find_audio_files(patterns: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files named by `patterns` (files as given, folders searched recursively for audio
    extensions, globs expanded), de-duplicated in order; and the patterns that matched nothing."""
    files: list[Path] = []
    unmatched: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = _audio_files_under(path)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(pattern):
            found = []
            for match in sorted(glob.glob(pattern, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    found += _audio_files_under(match_path)
                elif match_path.suffix.lower() in AUDIO_EXTENSIONS:
                    found.append(match_path)
        else:
            found = []
        if not found:
            unmatched.append(pattern)
        files += found
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, unmatched


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Predictor:
    """A loaded model with its feature extractor (and CTC processor), predicting lists of clips;
    with `onnx`, onnxruntime computes the outputs (see the module docstring, "Backend")."""

    model: torch.nn.Module
    extractor: Any
    processor: Any = None
    batch_size: int = 16
    max_batch_seconds: float | None = None  # None: ser_inference.default_max_batch_seconds(device)
    gender: str | None = None
    min_seconds: float = 0.1
    onnx: OnnxRunner | None = None

    @property
    def backend(self) -> str:
        return "torch" if self.onnx is None else "onnxruntime"

    @property
    def sampling_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in sorted(id2label)]

    @property
    def has_ctc(self) -> bool:
        return self.processor is not None and getattr(self.model, "ctc_head", None) is not None

    @property
    def batch_seconds(self) -> float:
        """Padded audio per batch: the given cap, else the default for the model's device."""
        if self.max_batch_seconds is not None:
            return float(self.max_batch_seconds)
        if self.onnx is not None:
            return default_max_batch_seconds("cpu")
        return default_max_batch_seconds(next(self.model.parameters()).device)

    @property
    def padding_invariant(self) -> bool:
        return bool(getattr(self.model, "is_padding_invariant", True))

    @property
    def audio_settings(self) -> AudioSettings:
        """The training checks (`ser_data.check_waveform`) with this model's rate and minimum."""
        sr = self.sampling_rate
        min_samples = max(int(self.min_seconds * sr), int(getattr(self.extractor, "min_samples", 0)))
        return AudioSettings(sampling_rate=sr, min_samples=min_samples)

    def predict(self, waveforms: list[np.ndarray], same_length: bool = False) -> list[Prediction | Exception]:
        """Predictions in input order; a clip that fails gets its exception instead of a Prediction.

        Clips of different lengths are padded into batches only when the model is padding-invariant
        (so that a file's prediction never depends on its neighbours); `same_length` clips can be
        batched in any case.
        """
        batch_size = self.batch_size if (same_length or self.padding_invariant) else 1
        genders = [self.gender] * len(waveforms) if self.gender else None
        try:
            return list(
                predict_waveforms(
                    self.model,
                    self.extractor,
                    waveforms,
                    processor=self.processor if self.has_ctc else None,
                    genders=genders,
                    max_batch_size=batch_size,
                    max_batch_seconds=self.batch_seconds,
                    onnx=self.onnx,
                )
            )
        except Exception as error:
            if len(waveforms) == 1:
                return [error]
            logger.warning("a batch failed (%s); retrying its clips one by one", error)
            return [self.predict([waveform], same_length=True)[0] for waveform in waveforms]


def load_predictor(args: argparse.Namespace) -> Predictor:
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, AutoProcessor

    device = resolve_device(args.device)
    try:
        model = AutoModelForAudioClassification.from_pretrained(args.model, trust_remote_code=True)
        extractor = AutoFeatureExtractor.from_pretrained(args.model, trust_remote_code=True)
    except Exception as error:
        raise PredictError(f"cannot load model {args.model!r}: {error}") from error
    model = model.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    processor = None
    if getattr(model, "ctc_head", None) is not None:
        try:
            processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
        except Exception as error:  # a CTC model saved without its tokenizer: no transcripts
            logger.warning("no CTC processor in %s (%s): transcripts are left out", args.model, error)
        if processor is not None and not hasattr(processor, "decode_ctc"):
            processor = None
    predictor = Predictor(
        model=model,
        extractor=extractor,
        processor=processor,
        batch_size=args.batch_size,
        max_batch_seconds=args.max_batch_seconds,
        gender=args.gender,
        min_seconds=args.min_seconds,
    )
    if not predictor.padding_invariant:
        logger.info("the backbone is not padding-invariant: files of different lengths are not batched")
    backend = getattr(args, "backend", "torch")
    if backend != "torch":
        predictor.onnx, reason = load_onnx(args, model, extractor, device)
        if predictor.onnx is None:
            log = logger.warning if backend == "onnxruntime" else logger.info
            log("backend: PyTorch, not onnxruntime: %s", reason)
        else:
            logger.info("backend: onnxruntime (%s, %d intra-op threads)", reason, predictor.onnx.threads)
    else:
        logger.info("backend: PyTorch (--backend torch)")
    return predictor


def find_onnx_file(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The ONNX file to use (`--onnx`, else `model.onnx` in the model directory or Hub repo), or
    None and why not."""
    if getattr(args, "onnx", None):
        path = Path(args.onnx)
        return (path, "") if path.is_file() else (None, f"--onnx {args.onnx}: no such file")
    if Path(args.model).is_dir():
        path = Path(args.model) / ONNX_FILE
        if path.is_file():
            return path, ""
        return None, (
            f"no {ONNX_FILE} in {args.model} (write it with: python scripts/export_onnx.py {args.model})"
        )
    try:  # a Hub id: the repo may hold the export too
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(args.model, ONNX_FILE)), ""
    except Exception as error:
        return None, f"no {ONNX_FILE} in the Hub repo {args.model} ({type(error).__name__})"


def onnx_probe_difference(onnx: OnnxRunner, model: torch.nn.Module, extractor: Any) -> float:
    """Largest |logit difference| between onnxruntime and PyTorch on a padded batch of two
    synthetic clips (lengths the exporter's example does not have)."""
    from export_onnx import synthetic_clip

    sr = extractor.sampling_rate
    clips = [synthetic_clip(1.17, 3, sr), synthetic_clip(0.61, 4, sr)]
    features = extractor(clips, sampling_rate=sr, return_tensors="np")
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in features.items()}).logits
    got = onnx(features)["logits"]
    if got.shape != tuple(expected.shape):
        return float("inf")
    return float(np.abs(got - expected.float().numpy()).max())


def load_onnx(
    args: argparse.Namespace, model: torch.nn.Module, extractor: Any, device: torch.device
) -> tuple[OnnxRunner | None, str]:
    """The onnxruntime session for `--backend auto/onnxruntime`, with what was loaded; or None and
    the reason PyTorch is used instead."""
    if device.type != "cpu":
        return None, f"the device is {device} (this backend runs on the CPU; --device cpu selects it)"
    if args.dtype != "float32":
        return None, f"--dtype {args.dtype} (the ONNX export is float32)"
    path, reason = find_onnx_file(args)
    if path is None:
        return None, reason
    try:
        onnx = OnnxRunner(path, threads=torch.get_num_threads())
    except ImportError:
        return None, "onnxruntime is not installed (pip install onnxruntime)"
    except Exception as error:
        return None, f"onnxruntime cannot load {path}: {type(error).__name__}: {str(error)[:300]}"
    try:
        difference = onnx_probe_difference(onnx, model, extractor)
    except Exception as error:
        return None, f"{path} failed on the probe batch: {type(error).__name__}: {str(error)[:300]}"
    if not difference < ONNX_TOLERANCE:
        return None, (
            f"{path} does not match the model: max |logit difference| {difference:.2e} >= "
            f"{ONNX_TOLERANCE:g} on a probe batch (exported from other weights? re-export it)"
        )
    return onnx, f"{path}, probe max |logit difference| {difference:.1e}"


# ----------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


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


def _limited(blocks: Iterable[np.ndarray], max_samples: int | None) -> Iterator[np.ndarray]:
    total = 0
    for block in blocks:
        total += len(block)
        if max_samples is not None and total > max_samples:
            raise AudioReadError(
                "", f"longer than --max_file_seconds; stopped after {total - len(block)} samples"
            )
        yield block


def _progress(total: float | None, desc: str, disable: bool, iterable: Iterable | None = None, **kwargs: Any):
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
    bar = _progress(duration_hint, path.name, args.no_progress, unit="s", leave=False)

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


@dataclass
class LoadedFile:
    """One input file after decoding: a short file's whole `waveform` (checked), or a long file's
    decoded `head` blocks and the `rest` of its stream, or the `error` that made it fail."""

    path: Path
    waveform: np.ndarray | None = None
    error: str | None = None
    head: list[np.ndarray] = field(default_factory=list)
    rest: Iterator[np.ndarray] | None = None
    duration_hint: float | None = None

    @property
    def samples(self) -> int:
        """Decoded samples held (what the prefetch queue counts)."""
        if self.waveform is not None:
            return len(self.waveform)
        return sum(len(block) for block in self.head)


def load_file(path: Path, predictor: Predictor, args: argparse.Namespace) -> LoadedFile:
    """Decode one file up to the point where it is known to be short (whole waveform, checked as
    training checks it) or long (head blocks + the open stream). Never raises for bad input."""
    sr = predictor.sampling_rate
    max_samples = None if args.max_file_seconds is None else int(args.max_file_seconds * sr)
    threshold = int(args.long_threshold_seconds * sr)

    def failed(reason: str) -> LoadedFile:
        return LoadedFile(path, error=reason)

    def short(waveform: np.ndarray) -> LoadedFile:
        if max_samples is not None and len(waveform) > max_samples:
            return failed(f"longer than --max_file_seconds ({args.max_file_seconds:g} s)")
        reason = check_waveform(waveform, predictor.audio_settings)
        return failed(reason) if reason is not None else LoadedFile(path, waveform=waveform)

    try:
        header, waveform = read_clip(path, sr, threshold)  # one decoder call for a short file
    except AudioReadError as error:
        return failed(error.reason)
    if (
        args.max_file_seconds is not None
        and header.duration_seconds is not None
        and header.duration_seconds > args.max_file_seconds
    ):
        return failed(
            f"longer than --max_file_seconds ({header.duration_seconds:.1f} s > {args.max_file_seconds:g} s)"
        )
    if waveform is not None:
        return short(waveform)
    # Long (or not decodable in one call): stream it, deciding on the decoded length.
    blocks = stream_audio(path, sr, BLOCK_SECONDS)
    head: list[np.ndarray] = []
    head_samples = 0
    try:
        for block in blocks:
            head.append(block)
            head_samples += len(block)
            if max_samples is not None and head_samples > max_samples:
                return failed(f"longer than --max_file_seconds ({args.max_file_seconds:g} s)")
            if head_samples > threshold:
                break
    except AudioReadError as error:
        return failed(error.reason)
    if head_samples <= threshold:
        return short(np.concatenate(head) if head else np.zeros(0, dtype=np.float32))
    rest = _limited(blocks, None if max_samples is None else max_samples - head_samples)
    return LoadedFile(path, head=head, rest=rest, duration_hint=header.duration_seconds)


def load_file_safely(path: Path, predictor: Predictor, args: argparse.Namespace) -> LoadedFile:
    """`load_file`, with any unexpected exception turned into the file's error."""
    try:
        return load_file(path, predictor, args)
    except Exception as error:  # one file never stops the others
        logger.debug("unexpected failure decoding %s", path, exc_info=True)
        return LoadedFile(path, error=f"unexpected error: {type(error).__name__}: {error}")


class _WorkerFailed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(
    paths: list[Path], load: Any, max_items: int, max_samples: int | None = None
) -> Iterator[LoadedFile]:
    """`load(path)` of every path, in order, computed by a background thread that runs at most
    `max_items` files and `max_samples` decoded samples ahead of the consumer (one file is always
    allowed). `max_items` 0: no thread, each file is loaded when the consumer asks for it.

    Every path yields exactly one result, in input order (`load` turns bad input into a result);
    an exception that escapes `load` in the thread is raised here, in the consumer.
    """
    if max_items <= 0:
        for path in paths:
            yield load(path)
        return
    ready: deque = deque()
    queued_samples = 0
    condition = threading.Condition()
    stop = False

    def work() -> None:
        nonlocal queued_samples
        for path in paths:
            try:
                item = load(path)
            except BaseException as error:  # handed to the consumer, which raises it
                item = _WorkerFailed(error)
            size = item.samples if isinstance(item, LoadedFile) else 0
            with condition:
                while (
                    not stop
                    and ready
                    and (
                        len(ready) >= max_items
                        or (max_samples is not None and queued_samples + size > max_samples)
                    )
                ):
                    condition.wait()
                if stop:
                    return
                ready.append((item, size))
                queued_samples += size
                condition.notify_all()
            if isinstance(item, _WorkerFailed):
                return

    worker = threading.Thread(target=work, name="predict-prefetch", daemon=True)
    worker.start()
    try:
        for _ in paths:
            with condition:
                while not ready:
                    if not worker.is_alive() and not ready:
                        raise RuntimeError("the decoding thread stopped early")
                    condition.wait(timeout=0.5)
                item, size = ready.popleft()
                queued_samples -= size
                condition.notify_all()
            if isinstance(item, _WorkerFailed):
                raise item.error
            yield item
    finally:
        with condition:
            stop = True
            condition.notify_all()
        worker.join()


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


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def find_inputs(patterns: list[str]) -> tuple[list[Path], list[Path]]:
    """The audio files named by `patterns`, and the explicitly named files that do not exist
    (they get error rows; an empty folder or glob only a warning).

    Raises:
        PredictError: no audio file at all.
    """
    files, unmatched = find_audio_files(patterns)
    missing = [Path(p) for p in unmatched if not glob.has_magic(p) and not Path(p).is_dir()]
    for pattern in unmatched:
        logger.warning("no audio file matches %r", pattern)
    if not files:
        raise PredictError(f"no audio files found in {patterns}")
    return files, missing


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the predictions; returns the run's counts (also logged as the last line).

    Raises:
        PredictError: no input file found, or the model cannot be loaded.
    """
    args = parse_arguments(argv)
    started = time.time()
    files, missing = find_inputs(args.paths)
    predictor = load_predictor(args)
    return predict_files(predictor, files, args, missing, started)


def predict_files(
    predictor: Predictor,
    files: list[Path],
    args: argparse.Namespace,
    missing: Iterable[Path] = (),
    started: float | None = None,
) -> dict[str, Any]:
    """Rows of `files` (and error rows of the `missing` ones) into `args.output` with a loaded
    predictor (reusable across calls); returns the run's counts, as `main`. `args` is what
    `parse_arguments` returns (a namespace without `prefetch` decodes in the main thread)."""
    started = time.time() if started is None else started
    missing = list(missing)
    writer = RowWriter(args.output, predictor.labels, predictor.has_ctc)
    stats = RunStats(files=len(files) + len(missing))
    short_files = ShortFiles(predictor, writer, stats)
    max_samples = int(PREFETCH_SECONDS * predictor.sampling_rate)
    loaded = prefetched(
        files, lambda path: load_file_safely(path, predictor, args), getattr(args, "prefetch", 0), max_samples
    )
    try:
        for path in missing:
            stats.fail(path, "no such file")
            writer.write([writer.row(path, "file", error="no such file")])
        for item in _progress(len(files), "files", args.no_progress, loaded, unit="file"):
            try:
                predict_loaded(item, predictor, writer, short_files, stats, args)
            except Exception as error:  # one file never stops the others
                logger.debug("unexpected failure on %s", item.path, exc_info=True)
                reason = f"unexpected error: {type(error).__name__}: {error}"
                stats.fail(item.path, reason)
                short_files.flush()
                writer.write([writer.row(item.path, "file", error=reason)])
        short_files.flush()
    finally:
        loaded.close()  # stops the decoding thread if a failure ended the loop early
        writer.close()
    result = {
        "output": str(args.output),
        "backend": predictor.backend,
        "files": stats.files,
        "predicted": stats.files - stats.failed,
        "failed": stats.failed,
        "long_files": stats.long_files,
        "windows": stats.windows,
        "skipped_windows": stats.skipped_windows,
        "audio_seconds": round(stats.audio_seconds, 3),
        "wall_time_s": round(time.time() - started, 3),
        "failures": stats.failures,
        "strict": args.strict,
    }
    logger.info(
        "predicted %d of %d files (%d long, %d windows, %d skipped windows; %.1f s of audio) in %.1f s; "
        "%d failed%s -> %s",
        result["predicted"],
        result["files"],
        result["long_files"],
        result["windows"],
        result["skipped_windows"],
        result["audio_seconds"],
        result["wall_time_s"],
        result["failed"],
        ""
        if not stats.failures
        else " (" + "; ".join(f"{f['path']}: {f['error']}" for f in stats.failures[:5]) + ")",
        args.output,
    )
    return result


def exit_status(result: dict[str, Any]) -> int:
    """0 if some file was predicted (and, with --strict, none failed); 1 if all failed."""
    if result["predicted"] == 0 or (result["strict"] and result["failed"]):
        return 1
    return 0


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        result = main(argv)
    except PredictError as error:
        logger.error("%s", error)
        return 2
    return exit_status(result)


if __name__ == "__main__":
    sys.exit(cli())
