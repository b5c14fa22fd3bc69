"""Batched inference with length bucketing, shared by evaluation, `predict.py` and the benchmarks.

Clips are sorted by length and packed into batches capped both in count and in padded samples,
so that padding stays small and memory stays bounded; results come back in input order.

The logits come from the PyTorch model, or from its ONNX export (`scripts/export_onnx.py`) run
by onnxruntime (`OnnxRunner`, CPU): same feature extractor, same batches, logits within 1e-4 of
PyTorch's; 1.35x faster than PyTorch on one CPU thread for the benchmark's wav2vec2-style model
(`benchmarks/bench_inference.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling.feature_extraction_emotion import as_mono_float32


@dataclass
class Prediction:
    logits: np.ndarray
    transcript: str | None = None


def plan_batches(lengths: Sequence[int], max_batch_size: int, max_batch_samples: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first). A batch holds at most
    `max_batch_size` clips and `max_batch_samples` padded samples (a single longer clip is alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = int(lengths[current[0]]) if current else int(lengths[index])
        if current and (len(current) >= max_batch_size or longest * (len(current) + 1) > max_batch_samples):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


# Padded audio per batch when the caller does not say. On CPU, large padded batches of long clips
# make the convolutional feature encoder memory-bound: 16 clips of up to 12 s in one batch ran
# slower than the same clips one at a time (benchmarks/bench_inference.py, one thread: 160 s cap
# 0.66x the one-clip pipeline; 24 s cap about 1.1-1.3x on a 60-clip probe). Accelerators gain from
# large batches.
CPU_MAX_BATCH_SECONDS = 24.0
ACCELERATOR_MAX_BATCH_SECONDS = 160.0


def default_max_batch_seconds(device: torch.device | str) -> float:
    """The padded-audio cap per batch for a model on `device` (see `CPU_MAX_BATCH_SECONDS`)."""
    return CPU_MAX_BATCH_SECONDS if torch.device(device).type == "cpu" else ACCELERATOR_MAX_BATCH_SECONDS


def model_accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


class OnnxRunner:
    """An onnxruntime CPU session of a graph written by `scripts/export_onnx.py`, with the
    intra-op thread count given (`predict.py` passes torch's), called with the feature
    extractor's numpy outputs.

    Raises (on construction):
        ImportError: onnxruntime is not installed.
        Exception: onnxruntime cannot load the file (its own message).
    """

    # The dtypes the exporter's inputs have (feature extractors may return other integer widths).
    INPUT_DTYPES = {"input_values": np.float32, "attention_mask": np.int32, "pitch_ids": np.int64}

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.threads = options.intra_op_num_threads
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "logits" not in self.output_names:
            raise ValueError(f"{self.path} has no 'logits' output (outputs: {self.output_names})")

    def __call__(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in features]
        if missing:
            raise ValueError(f"the feature extractor does not return the graph's inputs {missing}")
        feeds = {
            name: np.ascontiguousarray(np.asarray(features[name]), dtype=self.INPUT_DTYPES.get(name))
            for name in self.input_names
        }
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


@torch.inference_mode()
def predict_waveforms(
    model: torch.nn.Module,
    feature_extractor: Any,
    waveforms: Sequence[np.ndarray],
    *,
    processor: Any = None,
    genders: Sequence[Any] | None = None,
    f0: Sequence[np.ndarray] | None = None,
    f0_stats: Sequence[Any] | None = None,
    max_batch_size: int = 16,
    max_batch_seconds: float | None = None,
    progress: bool = False,
    onnx: OnnxRunner | None = None,
) -> list[Prediction]:
    """Emotion logits (and CTC transcripts when `processor` has a tokenizer and the model a CTC
    head) for each waveform, in input order.

    `max_batch_seconds` caps the padded audio of a batch (default: `default_max_batch_seconds` of
    the model's device: 24 s on CPU, 160 s on accelerators). With `onnx`, that session computes
    the outputs (on CPU) and `model` only lends its configuration (CTC frame lengths).

    Every waveform is checked before any is predicted: bad audio raises `AudioInputError` naming
    the clip by its position in `waveforms` (`clip 3: ...`). Callers that must not stop on one
    bad clip (a folder of files) check each with `as_mono_float32` first.
    """
    waveforms = [as_mono_float32(w, name=f"clip {i}") for i, w in enumerate(waveforms)]
    device = torch.device("cpu") if onnx is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    sampling_rate = feature_extractor.sampling_rate
    lengths = [max(len(w), getattr(feature_extractor, "min_samples", 0)) for w in waveforms]
    if max_batch_seconds is None:
        max_batch_seconds = default_max_batch_seconds(device)
    batches = plan_batches(lengths, max_batch_size, int(max_batch_seconds * sampling_rate))
    results: list[Prediction | None] = [None] * len(waveforms)
    wants_ctc = (
        processor is not None and hasattr(processor, "decode_ctc") and hasattr(model, "ctc_frame_lengths")
    )
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="predict", unit="batch")
    for batch in iterator:
        kwargs: dict[str, Any] = {}
        if genders is not None:
            kwargs["gender"] = [genders[i] for i in batch]
        if f0 is not None:
            kwargs["f0"] = [f0[i] for i in batch]
        if f0_stats is not None:
            kwargs["f0_stats"] = [f0_stats[i] for i in batch]
        clips = [waveforms[i] for i in batch]
        if onnx is not None:
            features = feature_extractor(clips, sampling_rate=sampling_rate, return_tensors="np", **kwargs)
            outputs = onnx(features)
            logits = outputs["logits"].astype(np.float32, copy=False)
            ctc_logits = outputs.get("ctc_logits")
            inputs = {
                k: torch.from_numpy(np.asarray(features[k])) for k in ("input_values", "attention_mask")
            }
            ctc_logits = None if ctc_logits is None else torch.from_numpy(ctc_logits).float()
        else:
            features = feature_extractor(clips, sampling_rate=sampling_rate, return_tensors="pt", **kwargs)
            inputs = {
                k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                for k, v in features.items()
                if model_accepts(model, k)
            }
            torch_outputs = model(**inputs)
            logits = torch_outputs.logits.float().cpu().numpy()
            ctc_logits = getattr(torch_outputs, "ctc_logits", None)
            ctc_logits = None if ctc_logits is None else ctc_logits.float()
        transcripts: list[str | None] = [None] * len(batch)
        if wants_ctc and ctc_logits is not None:
            frame_lengths = model.ctc_frame_lengths(inputs["input_values"], inputs.get("attention_mask"))
            transcripts = processor.decode_ctc(ctc_logits, frame_lengths)
        for row, index in enumerate(batch):
            results[index] = Prediction(logits=logits[row], transcript=transcripts[row])
    return results  # type: ignore[return-value]
