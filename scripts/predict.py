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
import glob
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ser_backend import ONNX_FILE, load_onnx  # noqa: E402
from ser_data import AudioSettings  # noqa: E402
from ser_inference import OnnxRunner, Prediction, default_max_batch_seconds, predict_waveforms  # noqa: E402
from ser_inputs import PREFETCH_SECONDS, find_audio_files, load_file_safely, prefetched  # noqa: E402
from ser_rows import RowWriter, RunStats, ShortFiles, predict_loaded, progress_bar  # noqa: E402

logger = logging.getLogger("predict")


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
        for item in progress_bar(len(files), "files", args.no_progress, loaded, unit="file"):
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
