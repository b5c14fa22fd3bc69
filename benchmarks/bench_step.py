"""Benchmark 1: training-step overhead of each model family against a bare transformers
`Wav2Vec2ForSequenceClassification` with the same backbone config.

What is timed: the model's forward and backward pass only (`zero_grad`, `loss = model(**inputs).loss`,
`loss.backward()`), on inputs prepared once (feature extraction, F0 and collation are not timed;
no optimizer step). Models are in training mode with the feature encoder frozen, as `train.py`
does by default. The families and the baseline alternate step by step in one process (the order
rotates each round); the ratio is the median over rounds of (family step time / baseline step time
in the same round), which is robust to background load on a shared machine.

Sizes: a wav2vec2-base sized backbone (12 layers, hidden 768, random initialisation), 4 clips x 4 s;
the CTC family with a 32-symbol vocabulary; the decomposed family at SpeechSplit's sizes (config
defaults: 80 mel, hop 256, 3 x BiLSTM-512 decoder) on top of the same backbone. The spectrogram
families (trained from scratch, no backbone) are timed for information, in absolute terms.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    BenchResult,
    alternate,
    load_average,
    markdown_table,
    median,
    paired_ratio,
    synthetic_speech,
)

NAME = "step"
KEYS = ("ctc_step_ratio", "decomposed_step_ratio")
GOALS = {"emotion_ssl_ctc": 1.05, "emotion_decomposed": 1.30}

LABELS = {"id2label": {i: name for i, name in enumerate(["neutral", "angry", "happy", "sad"])}}
LABELS["label2id"] = {name: i for i, name in LABELS["id2label"].items()}

# The tiny sizes used by --quick and the smoke test (milliseconds per step).
TINY_BACKBONE = {
    "model_type": "wav2vec2",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "conv_dim": [16, 16, 16],
    "conv_stride": [5, 8, 8],
    "conv_kernel": [10, 8, 8],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
TINY_DECOMPOSITION = {
    "n_mels": 16,
    "n_fft": 256,
    "hop_length": 128,
    "pitch_bins": 32,
    "norm_group_size": 4,
    "content_encoder_channels": 16,
    "content_lstm_size": 4,
    "rhythm_encoder_channels": 8,
    "pitch_encoder_channels": 8,
    "pitch_lstm_size": 4,
    "timbre_encoder_channels": 8,
    "timbre_encoder_layers": 2,
    "timbre_size": 8,
    "decoder_lstm_size": 16,
    "decoder_lstm_layers": 1,
}
TINY_SPECTROGRAM = {
    "cnn_transformer": {
        "conv_channels": [4, 8],
        "pool_sizes": [2, 2],
        "hidden_size": 16,
        "intermediate_size": 32,
    },
    "segment_crnn": {"conv_channels": [4, 8], "pool_sizes": [2, 2], "lstm_hidden_size": 8},
}


def backbone_config(size: str) -> dict[str, Any]:
    """`base`: transformers' Wav2Vec2Config defaults (wav2vec2-base sizes); `tiny`: for smoke tests."""
    return {"model_type": "wav2vec2"} if size == "base" else dict(TINY_BACKBONE)


def build_models(size: str, vocab_size: int = 32, num_speakers: int = 10) -> dict[str, torch.nn.Module]:
    """The baseline and every family, built from the same backbone config and seed."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    from modeling import (
        CNNTransformerEmotionConfig,
        CNNTransformerForAudioClassification,
        DecomposedEmotionConfig,
        DecomposedEmotionForAudioClassification,
        EmotionCTCConfig,
        EmotionCTCForAudioClassification,
        EmotionSSLConfig,
        EmotionSSLForAudioClassification,
        SegmentCRNNEmotionConfig,
        SegmentCRNNForAudioClassification,
    )

    backbone = backbone_config(size)
    hf_kwargs = {k: v for k, v in backbone.items() if k != "model_type"}
    decomposition = {} if size == "base" else TINY_DECOMPOSITION
    spectrogram = {} if size == "base" else TINY_SPECTROGRAM
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "hf_wav2vec2_baseline": lambda: Wav2Vec2ForSequenceClassification(
            Wav2Vec2Config(**hf_kwargs, **LABELS)
        ),
        "emotion_ssl": lambda: EmotionSSLForAudioClassification(
            EmotionSSLConfig(backbone_config=backbone, **LABELS)
        ),
        "emotion_ssl_ctc": lambda: EmotionCTCForAudioClassification(
            EmotionCTCConfig(backbone_config=backbone, vocab_size=vocab_size, **LABELS)
        ),
        "emotion_decomposed": lambda: DecomposedEmotionForAudioClassification(
            DecomposedEmotionConfig(
                backbone_config=backbone,
                vocab_size=vocab_size,
                num_speakers=num_speakers,
                **decomposition,
                **LABELS,
            )
        ),
        "emotion_cnn_transformer": lambda: CNNTransformerForAudioClassification(
            CNNTransformerEmotionConfig(**spectrogram.get("cnn_transformer", {}), **LABELS)
        ),
        "emotion_segment_crnn": lambda: SegmentCRNNForAudioClassification(
            SegmentCRNNEmotionConfig(**spectrogram.get("segment_crnn", {}), **LABELS)
        ),
    }
    models = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        model = build()
        if hasattr(model, "freeze_feature_encoder"):
            model.freeze_feature_encoder()
        models[name] = model.train()
    return models


def make_inputs(
    models: dict[str, torch.nn.Module],
    batch_size: int,
    seconds: float,
    vocab_size: int = 32,
    num_speakers: int = 10,
) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs of each model for the same batch of clips, prepared once."""
    from modeling import EmotionFeatureExtractor

    waveforms = [synthetic_speech(seconds, seed=i) for i in range(batch_size)]
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(batch_size) % len(LABELS["id2label"])
    characters = int(seconds * 12)  # about 12 characters per second of read speech
    ctc_labels = torch.randint(1, vocab_size, (batch_size, max(1, characters)), generator=generator)
    inputs = {}
    for name, model in models.items():
        kwargs = (
            model.config.feature_extractor_kwargs()
            if hasattr(model.config, "feature_extractor_kwargs")
            else {}
        )
        extractor = EmotionFeatureExtractor(**kwargs)
        features = dict(extractor(waveforms, sampling_rate=16000, return_tensors="pt"))
        features["labels"] = labels
        if name in ("emotion_ssl_ctc", "emotion_decomposed"):
            features["ctc_labels"] = ctc_labels
        if name == "emotion_decomposed":
            features["speaker_labels"] = torch.arange(batch_size) % num_speakers
        inputs[name] = features
    return inputs


def training_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    return step


def profile_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor], rows: int = 15) -> str:
    """torch.profiler table (self CPU time) of one training step."""
    from torch.profiler import ProfilerActivity, profile

    step = training_step(model, inputs)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run(quick: bool = False, workdir: Path | None = None, profile: bool = False, log=print) -> BenchResult:
    size = "tiny" if quick else "base"
    batch_size, seconds = (2, 1.0) if quick else (4, 4.0)
    repeats, warmup = (2, 1) if quick else (5, 1)
    # emotion_ssl (no extra head) is left out of the full run to keep it within the time budget.
    compared = ["hf_wav2vec2_baseline", "emotion_ssl_ctc", "emotion_decomposed"]
    if quick:
        compared.insert(1, "emotion_ssl")
    informational = ["emotion_cnn_transformer", "emotion_segment_crnn"]
    models = {name: model for name, model in build_models(size).items() if name in compared + informational}
    inputs = make_inputs(models, batch_size, seconds)
    log(
        f"[step] {size} backbone, {batch_size} clips x {seconds:g} s, {repeats} rounds "
        f"(load {load_average()}, torch threads {torch.get_num_threads()})"
    )
    load_before = load_average()
    times = alternate(
        {name: training_step(models[name], inputs[name]) for name in compared}, repeats, warmup, log
    )
    times.update(
        alternate(
            {name: training_step(models[name], inputs[name]) for name in informational},
            min(repeats, 3),
            warmup,
            log,
        )
    )
    baseline = median(times["hf_wav2vec2_baseline"])
    rows, details = [], {}
    for name in compared + informational:
        step_time = median(times[name])
        # Median of the round-by-round ratios: each pair ran back to back under similar load.
        ratio = paired_ratio(times[name], times["hf_wav2vec2_baseline"]) if name in compared else float("nan")
        spread = statistics.pstdev(times[name]) / step_time if len(times[name]) > 1 else 0.0
        goal = GOALS.get(name)
        met = "–" if goal is None else ("yes" if ratio <= goal else "no")
        rows.append([name, step_time, ratio, f"≤ {goal}" if goal else "–", met, f"{spread:.0%}"])
        details[name] = {
            "median_s": step_time,
            "times_s": [round(t, 4) for t in times[name]],
            "ratio_vs_baseline": None if np.isnan(ratio) else ratio,
            "ratio_of_medians": None if np.isnan(ratio) else step_time / baseline,
            "parameters": sum(p.numel() for p in models[name].parameters()),
            "trainable_parameters": sum(p.numel() for p in models[name].parameters() if p.requires_grad),
        }
    table = markdown_table(["model", "median step (s)", "× HF baseline", "goal", "met", "spread"], rows)
    details["setup"] = {
        "backbone": size,
        "batch": f"{batch_size} clips x {seconds:g} s",
        "rounds": repeats,
        "timed": "forward + backward only (zero_grad, loss.backward); inputs prepared once; train mode; "
        "feature encoder frozen",
        "load_average_before": load_before,
        "torch_threads": torch.get_num_threads(),
    }
    if profile and workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("hf_wav2vec2_baseline", "emotion_decomposed"):
            text = profile_step(models[name], inputs[name])
            (workdir / f"profile_step_{name}.txt").write_text(text)
            details.setdefault("profiles", []).append(str(workdir / f"profile_step_{name}.txt"))
    figures = {
        "ctc_step_ratio": round(details["emotion_ssl_ctc"]["ratio_vs_baseline"], 3),
        "decomposed_step_ratio": round(details["emotion_decomposed"]["ratio_vs_baseline"], 3),
    }
    return BenchResult(NAME, figures, details, table)
