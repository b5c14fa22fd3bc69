"""Benchmark 2: inference throughput of the project's batched predictor against the transformers
pipeline called one clip at a time.

The same saved model (an `emotion_ssl` model with a small, padding-invariant wav2vec2-style
backbone — LayerNorm feature encoder, as wav2vec2-large/-lv60, hubert-large and wavlm-large have —
random initialisation, its classifier centred on speech so that labels differ between clips) is
loaded twice from a temporary directory: by `scripts/predict.py`'s `load_predictor` (whose
`Predictor.predict` batches clips of similar length through `ser_inference.predict_waveforms`)
and by `pipeline("audio-classification", model=<dir>, trust_remote_code=True)`. Both get the same
in-memory waveforms (decoding is not timed): 200 clips of 1–12 s (uniform), synthetic speech-like
audio. Each side runs the whole set; the sides alternate over the rounds and the speedup is the
ratio of the median wall times. Labels must be identical clip for clip.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import BenchResult, load_average, markdown_table, median, synthetic_speech

NAME = "inference"
KEYS = ("inference_speedup",)
GOAL = 3.0
EMOTIONS = ["neutral", "angry", "happy", "sad"]

# Small enough for 200 clips x 2 predictors x 2 rounds in a few minutes on 2 cores (0.6 M
# parameters; 20 ms frames like the real backbones).
BACKBONE = {
    "model_type": "wav2vec2",
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "conv_dim": [64] * 7,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 64,
    "num_conv_pos_embedding_groups": 16,
}
TINY_BACKBONE = {
    **BACKBONE,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32, 32, 32],
    "conv_stride": [5, 8, 8],
    "conv_kernel": [10, 8, 8],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def save_model(directory: Path, backbone: dict[str, Any]) -> dict[str, Any]:
    """Build, centre and save the model with its feature extractor; return a description."""
    from modeling import EmotionFeatureExtractor, EmotionSSLConfig, EmotionSSLForAudioClassification

    labels = {"id2label": dict(enumerate(EMOTIONS)), "label2id": {e: i for i, e in enumerate(EMOTIONS)}}
    torch.manual_seed(0)
    model = EmotionSSLForAudioClassification(
        EmotionSSLConfig(backbone_config=backbone, classifier_dropout=0.0, **labels)
    ).eval()
    extractor = EmotionFeatureExtractor(**model.config.feature_extractor_kwargs())
    # A random head gives every clip nearly the same probabilities: centre its dense layer on the
    # embeddings of a few clips so that labels vary and label equality means something.
    with torch.no_grad():
        clips = [synthetic_speech(s, seed=1000 + i) for i, s in enumerate((1.0, 2.5, 4.0, 7.0, 11.0, 3.0))]
        embeddings = torch.cat(
            [model(**extractor(c, sampling_rate=16000, return_tensors="pt")).embeddings for c in clips]
        )
        dense = model.classifier.dense
        torch.manual_seed(1)
        dense.weight.normal_(0.0, 1.0 / float(embeddings.std(0).norm()))
        dense.bias.copy_(-dense.weight @ embeddings.mean(0))
        model.classifier.out_proj.weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)
    extractor.save_pretrained(directory)
    size = sum(p.numel() for p in model.parameters())
    return {
        "family": "emotion_ssl",
        "parameters": size,
        "backbone": {
            k: v for k, v in backbone.items() if k in ("hidden_size", "num_hidden_layers", "conv_dim")
        },
        "padding_invariant": bool(model.is_padding_invariant),
    }


def run(quick: bool = False, log=print, **_: Any) -> BenchResult:
    from predict import load_predictor
    from transformers import pipeline

    n_clips, rounds, longest = (8, 1, 4.0) if quick else (200, 2, 12.0)
    rng = np.random.default_rng(0)
    seconds = rng.uniform(1.0, longest, n_clips)
    clips = [synthetic_speech(s, seed=i) for i, s in enumerate(seconds)]
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        model_dir = Path(tmp) / "model"
        model_info = save_model(model_dir, TINY_BACKBONE if quick else BACKBONE)
        args = argparse.Namespace(
            model=str(model_dir),
            device="cpu",
            dtype="float32",
            batch_size=16,
            max_batch_seconds=None,  # predict.py's default: 24 s on CPU, 160 s on GPU
            gender=None,
            min_seconds=0.1,
        )
        predictor = load_predictor(args)
        classifier = pipeline(
            "audio-classification", model=str(model_dir), trust_remote_code=True, device="cpu"
        )
    log(
        f"[inference] {n_clips} clips, {seconds.sum():.0f} s of audio, model {model_info['parameters'] / 1e6:.1f} M "
        f"parameters, {rounds} rounds (load {load_average()}, torch threads {torch.get_num_threads()})"
    )
    labels = predictor.labels

    def project() -> list[str]:
        predictions = predictor.predict(clips)
        return [labels[int(np.argmax(p.logits))] for p in predictions]

    def hf_pipeline() -> list[str]:
        return [classifier({"raw": c, "sampling_rate": 16000}, top_k=1)[0]["label"] for c in clips]

    # Warm-up on a few clips, then alternate whole passes.
    predictor.predict(clips[:2])
    classifier({"raw": clips[0], "sampling_rate": 16000}, top_k=1)
    times: dict[str, list[float]] = {"project": [], "pipeline": []}
    outputs: dict[str, list[str]] = {}
    for index in range(rounds):
        for name, function in (("project", project), ("pipeline", hf_pipeline))[
            :: 1 if index % 2 == 0 else -1
        ]:
            started = time.perf_counter()
            outputs[name] = function()
            times[name].append(time.perf_counter() - started)
        log(
            f"  round {index + 1}/{rounds}: project {times['project'][-1]:.1f}s, pipeline {times['pipeline'][-1]:.1f}s "
            f"(load {load_average()[:1]})"
        )
    mismatches = [i for i, (a, b) in enumerate(zip(outputs["project"], outputs["pipeline"])) if a != b]
    speedup = median(times["pipeline"]) / median(times["project"])
    audio = float(seconds.sum())
    rows = [
        [
            "pipeline, one clip per call",
            median(times["pipeline"]),
            audio / median(times["pipeline"]),
            1.0,
            "–",
        ],
        [
            "project predictor (batched)",
            median(times["project"]),
            audio / median(times["project"]),
            speedup,
            f"{len(mismatches)} of {n_clips}",
        ],
    ]
    table = markdown_table(["predictor", "wall (s)", "× real time", "speedup", "label mismatches"], rows)
    details = {
        "model": model_info,
        "clips": n_clips,
        "audio_seconds": audio,
        "rounds": rounds,
        "times_s": times,
        "label_mismatches": len(mismatches),
        "mismatched_clips": mismatches[:20],
        "label_counts": {label: outputs["project"].count(label) for label in labels},
        "torch_threads": torch.get_num_threads(),
        "batch_size": 16,
        "max_batch_seconds": predictor.batch_seconds,
    }
    return BenchResult(NAME, {"inference_speedup": round(speedup, 2)}, details, table)
