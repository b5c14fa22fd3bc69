"""Benchmark 2: inference throughput of the project's predictor (`scripts/predict.py`) against
the transformers pipeline called one file at a time, from audio files to labels.

The model: an `emotion_ssl` model with a small, padding-invariant wav2vec2-style backbone
(LayerNorm feature encoder, as wav2vec2-large/-lv60, hubert-large and wavlm-large have; 0.6 M
parameters), random initialisation, its classifier centred on speech so that labels differ
between clips. Preparing it (not timed in the passes, reported): `save_pretrained` with its
feature extractor into a temporary directory, then `scripts/export_onnx.py MODEL_DIR`, which
writes `MODEL_DIR/model.onnx` after its own onnxruntime-vs-PyTorch parity check.

The data: 200 clips of 1–12 s (uniform), synthetic speech-like audio, written as 16 kHz 16-bit
WAV files. Each side is loaded once, outside the timed region (load times reported):
`predict.load_predictor` (default `--backend auto`, which finds `model.onnx` and runs onnxruntime
with torch's intra-op thread count, 1 in `make bench`; and `--backend torch` for the ablation) and
`pipeline("audio-classification", model=MODEL_DIR, trust_remote_code=True, device="cpu")`.

Timed passes over all files (median over alternating rounds, the order rotating):

- headline, `inference_speedup`: `pipeline(path, top_k=1)` for one file path at a time (the
  pipeline reads the file and decodes it with an `ffmpeg` subprocess, transformers' `ffmpeg_read`)
  vs `predict.predict_files` — what `predict.py MODEL FILES --output out.csv` runs after loading
  the model: decoding in process (torchcodec) in a background thread, batching by length,
  onnxruntime, CSV rows. The project's labels are read back from its CSV and compared with the
  pipeline's file by file.
- ablations of the project's side: no decoding thread (`--prefetch 0`); PyTorch backend.
- in memory (the decoded samples of the same WAV files, no decoding in the timed region):
  `pipeline({"raw": x, "sampling_rate": 16000})` one clip at a time vs `Predictor.predict(clips)`
  with onnxruntime and with PyTorch.

Every pass records wall time and CPU time (this process plus finished children, i.e. the
pipeline's ffmpeg processes): the decoding thread makes the project use more than one core at
times, which the CPU times show. Labels must be identical file for file.
"""

from __future__ import annotations

import csv
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
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


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (ffmpeg)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def csv_labels(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["path"]: row["label"] for row in csv.DictReader(handle)}


def run(quick: bool = False, log=print, **_: Any) -> BenchResult:
    import export_onnx
    import predict
    from transformers import pipeline

    n_clips, rounds, longest = (8, 1, 4.0) if quick else (200, 3, 12.0)
    rng = np.random.default_rng(0)
    seconds = rng.uniform(1.0, longest, n_clips)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp_path = Path(tmp)
        model_dir = tmp_path / "model"
        started = time.perf_counter()
        model_info = save_model(model_dir, TINY_BACKBONE if quick else BACKBONE)
        save_s = time.perf_counter() - started
        started = time.perf_counter()
        export = export_onnx.main([str(model_dir)])  # -> model_dir/model.onnx, parity-checked
        export_s = time.perf_counter() - started
        paths = []
        for index, length in enumerate(seconds):
            path = tmp_path / "wav" / f"clip{index:03d}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, synthetic_speech(length, seed=index), 16000, subtype="PCM_16")
            paths.append(path)
        # The in-memory passes get the files' samples (16-bit), so that all passes see the same audio.
        clips = [sf.read(path, dtype="float32")[0] for path in paths]

        def arguments(backend: str, prefetch: int, name: str) -> Any:
            output = str(tmp_path / f"{name}.csv")
            options = ["--device", "cpu", "--backend", backend, "--prefetch", str(prefetch), "--no_progress"]
            return predict.parse_arguments(
                [str(model_dir), str(tmp_path / "wav"), "--output", output, *options]
            )

        args = {
            "onnx": arguments("auto", 64, "onnx"),
            "onnx_noprefetch": arguments("auto", 0, "onnx_noprefetch"),
            "torch": arguments("torch", 64, "torch"),
        }
        load_s = {}
        started = time.perf_counter()
        onnx_predictor = predict.load_predictor(args["onnx"])
        load_s["project (onnxruntime)"] = time.perf_counter() - started
        if onnx_predictor.backend != "onnxruntime":
            raise RuntimeError("predict.py did not pick up model.onnx (see its log)")
        started = time.perf_counter()
        torch_predictor = predict.load_predictor(args["torch"])
        load_s["project (PyTorch)"] = time.perf_counter() - started
        started = time.perf_counter()
        classifier = pipeline(
            "audio-classification", model=str(model_dir), trust_remote_code=True, device="cpu"
        )
        load_s["pipeline"] = time.perf_counter() - started
        labels = onnx_predictor.labels
        audio = float(sum(len(c) for c in clips) / 16000)
        log(
            f"[inference] {n_clips} WAV files, {audio:.0f} s of audio, model {model_info['parameters'] / 1e6:.1f} M "
            f"parameters, {rounds} rounds (load {load_average()}, torch threads {threads}, onnxruntime "
            f"threads {onnx_predictor.onnx.threads}); ONNX export {export_s:.1f} s"
        )

        def project_files(key: str, predictor: Any, files: list[Path]) -> list[str]:
            predict.predict_files(predictor, files, args[key])
            rows = csv_labels(Path(args[key].output))
            return [rows[str(path)] for path in files]

        def project_memory(predictor: Any, chosen: list[np.ndarray]) -> list[str]:
            return [labels[int(np.argmax(p.logits))] for p in predictor.predict(chosen)]

        passes: dict[str, Callable[[list[int]], list[str]]] = {
            "pipeline, one file path per call": lambda idx: [
                classifier(str(paths[i]), top_k=1)[0]["label"] for i in idx
            ],
            "project, files (onnxruntime, decoding thread)": lambda idx: project_files(
                "onnx", onnx_predictor, [paths[i] for i in idx]
            ),
            "project, files (onnxruntime, no decoding thread)": lambda idx: project_files(
                "onnx_noprefetch", onnx_predictor, [paths[i] for i in idx]
            ),
            "project, files (PyTorch, decoding thread)": lambda idx: project_files(
                "torch", torch_predictor, [paths[i] for i in idx]
            ),
            "pipeline, one in-memory clip per call": lambda idx: [
                classifier({"raw": clips[i], "sampling_rate": 16000}, top_k=1)[0]["label"] for i in idx
            ],
            "project, in memory (onnxruntime)": lambda idx: project_memory(
                onnx_predictor, [clips[i] for i in idx]
            ),
            "project, in memory (PyTorch)": lambda idx: project_memory(
                torch_predictor, [clips[i] for i in idx]
            ),
        }
        names = list(passes)
        for name in names:  # warm-up: kernels, thread pools, the first ffmpeg call
            passes[name](list(range(min(3, n_clips))))
        every = list(range(n_clips))
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        outputs: dict[str, list[str]] = {}
        round_load = []
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                cpu_started, started = cpu_seconds(), time.perf_counter()
                outputs[name] = passes[name](every)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(cpu_seconds() - cpu_started)
            round_load.append(load_average())
            log(
                f"  round {index + 1}/{rounds}: "
                + ", ".join(f"{name} {wall[name][-1]:.1f}s" for name in names)
                + f" (load {load_average()[:1]})"
            )
        # onnxruntime vs PyTorch on the same batches: the largest logit difference.
        onnx_logits = [p.logits for p in onnx_predictor.predict(clips)]
        torch_logits = [p.logits for p in torch_predictor.predict(clips)]
        logit_difference = float(max(np.abs(a - b).max() for a, b in zip(onnx_logits, torch_logits)))

    baseline_file = "pipeline, one file path per call"
    baseline_memory = "pipeline, one in-memory clip per call"
    headline = "project, files (onnxruntime, decoding thread)"
    reference = outputs[baseline_file]
    mismatches = {
        name: [i for i, (a, b) in enumerate(zip(outputs[name], reference)) if a != b] for name in names
    }
    speedup = median(wall[baseline_file]) / median(wall[headline])
    rows = []
    for name in names:
        baseline = baseline_memory if "memory" in name else baseline_file
        rows.append(
            [
                name,
                median(wall[name]),
                median(cpu[name]),
                audio / median(wall[name]),
                median(wall[baseline]) / median(wall[name]),
                f"{len(mismatches[name])} of {n_clips}",
            ]
        )
    table = markdown_table(
        [
            "pass",
            "wall (s)",
            "CPU (s)",
            "× real time",
            "speedup vs the pipeline (same input)",
            "label mismatches",
        ],
        rows,
    )
    in_memory_speedup = median(wall[baseline_memory]) / median(wall["project, in memory (onnxruntime)"])
    details = {
        "model": model_info,
        "clips": n_clips,
        "audio_seconds": audio,
        "file_format": "WAV, 16 kHz, 16-bit PCM",
        "rounds": rounds,
        "times_s": wall,
        "cpu_s": cpu,
        "round_load_average": round_load,
        "speedups": {
            name: median(wall[baseline_memory if "memory" in name else baseline_file]) / median(wall[name])
            for name in names
        },
        "in_memory_speedup": round(in_memory_speedup, 2),
        "label_mismatches": len(mismatches[headline]),
        "mismatched_clips": mismatches[headline][:20],
        "label_mismatches_by_pass": {name: len(m) for name, m in mismatches.items()},
        "label_counts": {label: outputs[headline].count(label) for label in labels},
        "max_abs_logit_difference_onnxruntime_vs_torch": logit_difference,
        "preparation_s": {"save_pretrained": round(save_s, 2), "onnx_export": round(export_s, 2)},
        "onnx_export": {k: export[k] for k in ("max_abs_diff", "exporter", "opset", "size_mb")},
        "load_s": {k: round(v, 2) for k, v in load_s.items()},
        "torch_threads": threads,
        "onnxruntime_threads": onnx_predictor.onnx.threads,
        "batch_size": 16,
        "max_batch_seconds": onnx_predictor.batch_seconds,
        "prefetch_files": args["onnx"].prefetch,
    }
    return BenchResult(NAME, {"inference_speedup": round(speedup, 2)}, details, table)
