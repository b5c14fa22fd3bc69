"""Benchmark 3: F0 extraction speed and agreement with Harvest.

Each method runs through the project's feature extractor (`EmotionFeatureExtractor.extract_f0`,
16 ms frames, the gender's F0 search range) on real speech: EmoDB (../shared/data/emodb) when
present, else the demo corpus. Speed is the real-time factor per core: seconds of audio per CPU
second of this process (pyworld is single-threaded, and CPU time is not inflated by other jobs on a
shared machine). CPU time still grows under load (shared caches, a busy sibling hyperthread), so the
methods take turns clip by clip, in rotating order, and the load falls on all of them alike.
Agreement is against Harvest on the same clips: voicing agreement (fraction of frames where both
call voiced or both unvoiced) and gross pitch error (fraction of the frames both call voiced whose
F0 differs from Harvest's by more than 20 %).

`f0_realtime_per_core` in results.json is the real-time factor of the method the training pipeline
uses by default (`ser_data.AudioSettings.f0_method`).

A reference row, not a method: Harvest on the same clips delayed by half a millisecond (8 samples
of zeros in front, the last 8 dropped), against Harvest on the originals. It measures how far
Harvest's own voicing moves under a perturbation that changes nothing audible, i.e. the scale on
which "Harvest-level agreement" can be judged (a tracker cannot be expected to agree with Harvest
better than Harvest agrees with itself).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from benchmarks.common import BenchResult, corpus_dir, corpus_rows, load_average, markdown_table

NAME = "f0"
KEYS = ("f0_realtime_per_core",)
GOAL_RTF = 100.0
# "Harvest-level agreement": what Harvest computed at a quarter of the sampling rate keeps with
# full-rate Harvest is about 0.98 / 0.01 on EmoDB; we ask for 0.95 voicing agreement and 5 % GPE.
AGREEMENT_GOAL = {"voicing_agreement": 0.95, "gross_pitch_error": 0.05}
METHODS = ("harvest", "dio", "dio_fast", "yin")
REFERENCE = "harvest_delayed"
REFERENCE_DELAY_SAMPLES = 8  # 0.5 ms at 16 kHz


def default_method() -> str:
    try:
        from ser_data import AudioSettings

        return str(AudioSettings.__dataclass_fields__["f0_method"].default)
    except Exception:  # ser_data needs the training dependencies
        return "dio"


def load_clips(max_clips: int | None) -> tuple[list[tuple[np.ndarray, str]], str]:
    import soundfile as sf

    path, description = corpus_dir()
    if path is None:
        raise RuntimeError(description)
    rows = corpus_rows(path)
    if max_clips and len(rows) > max_clips:
        step = len(rows) / max_clips
        rows = [rows[int(i * step)] for i in range(max_clips)]
    clips = []
    for row in rows:
        audio, sr = sf.read(row["path"], dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != 16000:
            import soxr

            audio = soxr.resample(audio, sr, 16000).astype(np.float32)
        clips.append((audio, row.get("gender", "unknown")))
    return clips, description


def agreement(tracks: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    agree = frames = both = gross = 0
    for track, ref in zip(tracks, reference):
        n = min(len(track), len(ref))
        a, b = track[:n], ref[:n]
        agree += int(((a > 0) == (b > 0)).sum())
        frames += n
        voiced = (a > 0) & (b > 0)
        both += int(voiced.sum())
        gross += int((np.abs(a[voiced] - b[voiced]) > 0.2 * b[voiced]).sum())
    return {
        "voicing_agreement": agree / max(1, frames),
        "gross_pitch_error": gross / max(1, both),
        "voiced_fraction": float(np.mean(np.concatenate([t > 0 for t in tracks]))),
    }


def run(quick: bool = False, log=print, **_: Any) -> BenchResult:
    from modeling import EmotionFeatureExtractor

    clips, corpus = load_clips(6 if quick else 180)
    if "EmoDB" not in corpus:
        log("[f0] EmoDB not found in ../shared/data/emodb: using the demo corpus")
    seconds = sum(len(c) for c, _ in clips) / 16000
    project = default_method()
    log(f"[f0] {len(clips)} clips, {seconds:.0f} s of {corpus}; load {load_average()}")
    warnings.filterwarnings("ignore", module="pyworld")
    extractors = {method: EmotionFeatureExtractor(compute_pitch=True, f0_method=method) for method in METHODS}
    for extractor in extractors.values():
        extractor.extract_f0(clips[0][0], clips[0][1])  # import and warm up
    delay = REFERENCE_DELAY_SAMPLES
    runners = {method: extractor.extract_f0 for method, extractor in extractors.items()}
    runners[REFERENCE] = lambda audio, gender: extractors["harvest"].extract_f0(
        np.concatenate([np.zeros(delay, audio.dtype), audio[:-delay]]), gender
    )
    # Clip by clip, every method in turn (the order rotates), so that background load on a shared
    # machine falls on all methods alike.
    names = list(runners)
    tracks = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    for index, (audio, gender) in enumerate(clips):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.process_time()
            tracks[name].append(runners[name](audio, gender))
            cpu[name] += time.process_time() - started
    rows, details = [], {"corpus": corpus, "clips": len(clips), "audio_seconds": seconds, "methods": {}}
    for method in METHODS:
        rtf = seconds / cpu[method]
        stats = agreement(tracks[method], tracks["harvest"])
        harvest_level = all(
            stats[k] >= v if k == "voicing_agreement" else stats[k] <= v for k, v in AGREEMENT_GOAL.items()
        )
        label = method + (" (training default)" if method == project else "")
        rows.append(
            [
                label,
                rtf,
                stats["voicing_agreement"],
                stats["gross_pitch_error"],
                stats["voiced_fraction"],
                "yes" if rtf >= GOAL_RTF and harvest_level else "no",
            ]
        )
        details["methods"][method] = {
            "realtime_per_core": rtf,
            "cpu_seconds": cpu[method],
            **stats,
            "harvest_level_agreement": harvest_level,
        }
    stats = agreement(tracks[REFERENCE], tracks["harvest"])
    rows.append(
        [
            f"reference: harvest, input delayed {1000 * delay / 16000:g} ms",
            seconds / cpu[REFERENCE],
            stats["voicing_agreement"],
            stats["gross_pitch_error"],
            stats["voiced_fraction"],
            "–",
        ]
    )
    details["harvest_delayed_reference"] = {"delay_samples": delay, "cpu_seconds": cpu[REFERENCE], **stats}
    details["project_method"] = project
    details["goal"] = f">= {GOAL_RTF:g}x real time per core with voicing agreement >= "
    details["goal"] += (
        f"{AGREEMENT_GOAL['voicing_agreement']} and GPE <= {AGREEMENT_GOAL['gross_pitch_error']}"
    )
    table = markdown_table(
        ["method", "× real time / core", "voicing agreement", "GPE (>20 %)", "voiced", "goal met"], rows
    )
    figures = {"f0_realtime_per_core": round(details["methods"][project]["realtime_per_core"], 1)}
    return BenchResult(NAME, figures, details, table)
