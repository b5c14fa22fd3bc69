"""Benchmark 6: bf16 training-step throughput on a GPU, each family against the transformers
baseline (`Wav2Vec2ForSequenceClassification`, wav2vec2-base sized, random initialisation).

The same models and batch as the training-step benchmark (`bench_step`), moved to CUDA, with
forward and backward under `torch.autocast("cuda", dtype=torch.bfloat16)` (weights in float32, as
`Trainer` does with `--bf16`); steps alternate between the models and each is synchronised before
its time is taken. Throughput is clips per second (median step). When no CUDA device is visible
the benchmark records why and measures nothing.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import BenchResult, markdown_table, median

NAME = "gpu"
KEYS = ("gpu",)


def unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        build = (
            "a CPU-only torch build"
            if torch.version.cuda is None
            else f"torch built for CUDA {torch.version.cuda}"
        )
        return f"torch.cuda.is_available() is False on this machine ({build}); nothing was measured"
    return None


def run(quick: bool = False, log=print, **_: Any) -> BenchResult:
    reason = unavailable_reason()
    if reason is not None:
        log(f"[gpu] skipped: {reason}")
        figures = {"gpu": {"available": False, "reason": reason}}
        return BenchResult(NAME, figures, {"skipped": reason}, f"GPU benchmark not run: {reason}")

    from benchmarks.bench_step import build_models, make_inputs

    device = torch.device("cuda")
    size = "tiny" if quick else "base"
    batch_size, seconds, repeats = (2, 1.0, 3) if quick else (8, 4.0, 20)
    models = build_models(size)
    compared = ["hf_wav2vec2_baseline", "emotion_ssl", "emotion_ssl_ctc", "emotion_decomposed"]
    inputs = make_inputs({name: models[name] for name in compared}, batch_size, seconds)
    steps = {}
    for name in compared:
        model = models[name].to(device)
        batch = {k: v.to(device) for k, v in inputs[name].items()}

        def step(model=model, batch=batch) -> None:
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            torch.cuda.synchronize()

        steps[name] = step
    times: dict[str, list[float]] = {name: [] for name in compared}
    for round_index in range(repeats + 2):
        for name in compared[round_index % len(compared) :] + compared[: round_index % len(compared)]:
            started = time.perf_counter()
            steps[name]()
            if round_index >= 2:
                times[name].append(time.perf_counter() - started)
    baseline = median(times["hf_wav2vec2_baseline"])
    rows, figures = [], {}
    for name in compared:
        step_time = median(times[name])
        rows.append([name, step_time, batch_size / step_time, step_time / baseline])
        figures[name] = {
            "median_step_s": step_time,
            "clips_per_s": batch_size / step_time,
            "ratio_vs_baseline": step_time / baseline,
        }
    table = markdown_table(["model", "median step (s)", "clips / s", "× HF baseline"], rows)
    gpu = {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "dtype": "bfloat16 autocast",
        "batch": f"{batch_size} clips x {seconds:g} s",
        "rounds": repeats,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "families": figures,
    }
    return BenchResult(NAME, {"gpu": gpu}, {"times_s": times}, table)
