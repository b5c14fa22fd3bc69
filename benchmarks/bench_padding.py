"""Benchmark 4: padding waste of the training batches.

One epoch of the sampler `train.py` uses (`group_by_length`: transformers' length-grouped
shuffling as `ser_batching.EpochSeededLengthGroupedSampler`, seeded by seed and epoch) against
plain random batching (a random permutation cut into batches), on the same lengths: every clip
randomly cropped to `max_duration` (train.py's default, 6 s) as `TrainTransform` does, so the
lengths the sampler sorts on are the ones the collator pads. The padded fraction is
padded samples / all samples in the padded batches (the same, to rounding, in model frames).

Length distributions: EmoDB (../shared/data/emodb) and the demo corpus when present, and a wider
synthetic one (2,000 clips, uniform 1–12 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DEMO_CORPUS, SHARED_EMODB, BenchResult, corpus_rows, markdown_table

NAME = "padding"
KEYS = ("padding_fraction",)
GOAL = 0.10
SR = 16000


def corpus_lengths(path: Path) -> list[int] | None:
    import soundfile as sf

    if not (path / "metadata.csv").exists():
        return None
    lengths = []
    for row in corpus_rows(path):
        info = sf.info(row["path"])
        lengths.append(round(info.frames * SR / info.samplerate))
    return lengths


def padded_fraction(lengths: list[int], order: list[int], batch_size: int) -> float:
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded


def project_order(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[int]:
    from ser_batching import EpochSeededLengthGroupedSampler, TrainTransform

    clock = TrainTransform(max_samples=None, seed=seed, epoch=epoch)
    return list(EpochSeededLengthGroupedSampler(batch_size, lengths, seed, clock))


def random_order(n: int, seed: int) -> list[int]:
    return list(np.random.default_rng(seed).permutation(n))


def run(
    quick: bool = False, log=print, batch_size: int = 16, max_duration: float = 6.0, **_: Any
) -> BenchResult:
    rng = np.random.default_rng(0)
    distributions: dict[str, list[int]] = {}
    for name, path in (("EmoDB", SHARED_EMODB), ("demo corpus", DEMO_CORPUS)):
        lengths = corpus_lengths(path)
        if lengths is None:
            log(f"[padding] {name} not found at {path}: left out")
        else:
            distributions[name] = lengths
    n_synthetic = 300 if quick else 2000
    distributions["synthetic 1–12 s"] = [int(s * SR) for s in rng.uniform(1, 12, n_synthetic)]
    max_samples = int(max_duration * SR)
    epochs = 1 if quick else 3
    rows, details = [], {}
    for name, raw in distributions.items():
        lengths = [min(n, max_samples) for n in raw]
        grouped = [
            padded_fraction(lengths, project_order(lengths, batch_size, 42, e), batch_size)
            for e in range(epochs)
        ]
        shuffled = [
            padded_fraction(lengths, random_order(len(lengths), e), batch_size) for e in range(epochs)
        ]
        uncropped = padded_fraction(raw, project_order(raw, batch_size, 42, 0), batch_size)
        seconds = np.asarray(raw) / SR
        rows.append(
            [
                name,
                len(raw),
                f"{seconds.min():.1f}–{seconds.max():.1f}",
                float(np.mean(shuffled)),
                float(np.mean(grouped)),
                "yes" if np.mean(grouped) < GOAL else "no",
            ]
        )
        details[name] = {
            "clips": len(raw),
            "seconds_min_median_max": [float(seconds.min()), float(np.median(seconds)), float(seconds.max())],
            "random_batching": float(np.mean(shuffled)),
            "project_sampler": float(np.mean(grouped)),
            "project_sampler_per_epoch": grouped,
            "project_sampler_without_crop": uncropped,
        }
    details["setup"] = {"batch_size": batch_size, "max_duration_s": max_duration, "epochs_averaged": epochs}
    table = markdown_table(
        ["lengths", "clips", "seconds", "padded, random batches", "padded, project sampler", "< 10 %"], rows
    )
    headline = max(d["project_sampler"] for k, d in details.items() if k != "setup")
    return BenchResult(NAME, {"padding_fraction": round(headline, 4)}, details, table)
