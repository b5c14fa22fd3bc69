"""Benchmark 5: a one-hour recording through `scripts/predict.py`.

A 16 kHz mono 16-bit WAV of synthetic speech-like audio (one-minute stretches of varying pitch,
syllable rhythm and pauses, repeated) is written to a temporary directory in blocks, and
`scripts/predict.py MODEL FILE --output out.jsonl` runs on it in a child process with a small saved
`emotion_ssl` model (the inference benchmark's tiny backbone: the figure is about the streaming
pipeline, not the model). Reported: the child's peak resident memory (`ru_maxrss` of a wrapper
process whose only child is predict.py), its wall time and real-time factor, and the number of
windows it wrote (4 s windows every 2 s, predict.py's defaults).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, BenchResult, load_average, markdown_table, synthetic_speech

NAME = "long_audio"
KEYS = ("long_audio_peak_rss_gib",)
GOAL_GIB = 2.0
SR = 16000

_WRAPPER = """
import resource, subprocess, sys, json, time
started = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc.returncode, "wall_s": wall, "maxrss_kib": usage.ru_maxrss,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "stderr_tail": rc.stderr[-2000:]}))
"""


def write_recording(path: Path, seconds: float) -> None:
    import soundfile as sf

    minute = [synthetic_speech(60.0, seed=seed) for seed in range(4)]
    for piece in minute:  # a 1.5 s pause now and then, as in a conversation
        piece[SR * 20 : SR * 20 + SR * 3 // 2] *= 0.02
    remaining = int(seconds * SR)
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as handle:
        index = 0
        while remaining > 0:
            block = minute[index % len(minute)][:remaining]
            handle.write(block)
            remaining -= len(block)
            index += 1


def run(quick: bool = False, log=print, **_: Any) -> BenchResult:
    from benchmarks.bench_inference import TINY_BACKBONE, save_model

    seconds = 40.0 if quick else 3600.0  # predict.py windows files > 30 s
    with tempfile.TemporaryDirectory(prefix="bench_long_") as tmp:
        tmp_path = Path(tmp)
        model_info = save_model(tmp_path / "model", TINY_BACKBONE)
        audio = tmp_path / "recording.wav"
        write_recording(audio, seconds)
        size_mib = audio.stat().st_size / 2**20
        output = tmp_path / "out.jsonl"
        command = [
            sys.executable,
            str(ROOT / "scripts" / "predict.py"),
            str(tmp_path / "model"),
            str(audio),
            "--output",
            str(output),
            "--no_progress",
            "--device",
            "cpu",
        ]
        log(f"[long_audio] {seconds / 60:.0f} min recording ({size_mib:.0f} MiB WAV), load {load_average()}")
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        if completed.returncode != 0 or not completed.stdout.strip():
            raise RuntimeError(f"wrapper failed: {completed.stderr[-2000:]}")
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        if measured["rc"] != 0:
            raise RuntimeError(f"predict.py exited {measured['rc']}: {measured['stderr_tail']}")
        rows = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    windows = sum(1 for r in rows if r.get("segment") == "window")
    summary = next(r for r in rows if r.get("segment") == "summary")
    peak_gib = measured["maxrss_kib"] / 2**20
    rtf = seconds / measured["wall_s"]
    table = markdown_table(
        ["recording", "peak RSS (GiB)", "goal", "wall (s)", "× real time", "CPU (s)", "windows"],
        [
            [
                f"{seconds / 60:.0f} min, {size_mib:.0f} MiB WAV",
                peak_gib,
                f"< {GOAL_GIB:g}",
                measured["wall_s"],
                rtf,
                measured["cpu_s"],
                windows,
            ]
        ],
    )
    details = {
        "audio_seconds": seconds,
        "wav_mib": size_mib,
        "model": model_info,
        "peak_rss_gib": peak_gib,
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "realtime_factor": rtf,
        "windows": windows,
        "summary_row": {k: summary.get(k) for k in ("label", "num_windows", "skipped_windows", "end_s")},
        "command": "python scripts/predict.py MODEL recording.wav --output out.jsonl --no_progress --device cpu",
        "harness_wall_s": elapsed,
    }
    return BenchResult(NAME, {"long_audio_peak_rss_gib": round(peak_gib, 3)}, details, table)
