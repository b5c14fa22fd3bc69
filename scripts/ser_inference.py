"""Batched inference with length bucketing, shared by evaluation, `predict.py` and the benchmarks.

Clips are sorted by length and packed into batches capped both in count and in padded samples,
so that padding stays small and memory stays bounded; results come back in input order.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
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


def model_accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


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
    max_batch_seconds: float = 160.0,
    progress: bool = False,
) -> list[Prediction]:
    """Emotion logits (and CTC transcripts when `processor` has a tokenizer and the model a CTC
    head) for each waveform, in input order.

    Every waveform is checked before any is predicted: bad audio raises `AudioInputError` naming
    the clip by its position in `waveforms` (`clip 3: ...`). Callers that must not stop on one
    bad clip (a folder of files) check each with `as_mono_float32` first.
    """
    waveforms = [as_mono_float32(w, name=f"clip {i}") for i, w in enumerate(waveforms)]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    sampling_rate = feature_extractor.sampling_rate
    lengths = [max(len(w), getattr(feature_extractor, "min_samples", 0)) for w in waveforms]
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
        features = feature_extractor(
            [waveforms[i] for i in batch], sampling_rate=sampling_rate, return_tensors="pt", **kwargs
        )
        inputs = {
            k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
            for k, v in features.items()
            if model_accepts(model, k)
        }
        outputs = model(**inputs)
        logits = outputs.logits.float().cpu().numpy()
        transcripts: list[str | None] = [None] * len(batch)
        if wants_ctc and getattr(outputs, "ctc_logits", None) is not None:
            frame_lengths = model.ctc_frame_lengths(inputs["input_values"], inputs.get("attention_mask"))
            transcripts = processor.decode_ctc(outputs.ctc_logits.float(), frame_lengths)
        for row, index in enumerate(batch):
            results[index] = Prediction(logits=logits[row], transcript=transcripts[row])
    return results  # type: ignore[return-value]
