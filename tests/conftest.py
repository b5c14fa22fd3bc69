"""Shared test fixtures: tiny CPU configurations and a loader that runs outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

REMOTE_CHECK = Path(__file__).with_name("remote_check.py")


def tiny_backbone_config(model_type: str = "wav2vec2", feat_extract_norm: str = "layer") -> dict:
    """A 2-layer, 32-wide backbone (stride 320 like the real ones) that runs in milliseconds."""
    config = {
        "model_type": model_type,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "conv_dim": [16, 16, 16],
        "conv_stride": [5, 8, 8],
        "conv_kernel": [10, 8, 8],
        "feat_extract_norm": feat_extract_norm,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
        "mask_time_prob": 0.0,
    }
    if model_type == "wavlm":
        config.update({"num_buckets": 16, "max_bucket_distance": 40})
    return config


# Tiny model configs shared by the test files (each adds what it needs on top).
# Decomposition: 16 mel bins, 256-point FFT, hop 128 (the feature extractor gets the same hop
# through `feature_extractor_kwargs`), groups of 4 channels, small LSTMs; LSTM time grows with
# the number of frames, so tests use short clips.
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
    "timbre_encoder_layers": 1,
    "timbre_size": 8,
    "decoder_lstm_size": 8,
    "decoder_lstm_layers": 1,
}
TINY_SPECTROGRAM = {
    "emotion_cnn_transformer": {
        "n_mels": 32,
        "conv_channels": [4, 8, 8],
        "conv_kernel_sizes": [5, 3, 3],
        "pool_sizes": [2, 2, [2, 1]],
        "hidden_size": 16,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
    },
    "emotion_segment_crnn": {
        "n_mels": 32,
        "conv_channels": [8, 16],
        "pool_sizes": [2, 2],
        "lstm_hidden_size": 16,
        "pooling_attention_size": 16,
        "classifier_hidden_size": 16,
    },
}


# Character vocabulary of the tiny CTC tokenizers in the tests.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]

EMOTIONS = {0: "neutral", 1: "angry", 2: "sad"}


def label_kwargs(id2label: dict[int, str] = EMOTIONS) -> dict:
    return {"id2label": dict(id2label), "label2id": {v: k for k, v in id2label.items()}}


def speech_like(seconds: float, seed: int = 0, sampling_rate: int = 16000) -> np.ndarray:
    """A voiced, pitch-varying harmonic signal with noise: enough structure for F0 and mel tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * signal * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def run_remote_check(
    model_dir: Path, waveforms: list[np.ndarray], workdir: Path, extra: dict | None = None
) -> dict:
    """Load `model_dir` with trust_remote_code in a fresh interpreter started outside the repo (so
    the local `modeling` package cannot be imported) and return its JSON report."""
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = workdir / "inputs.npz"
    np.savez(inputs, *waveforms)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(workdir / "hf_modules")
    args = [sys.executable, str(REMOTE_CHECK), str(model_dir), str(inputs), json.dumps(extra or {})]
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"remote check failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
