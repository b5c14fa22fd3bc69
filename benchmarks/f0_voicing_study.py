"""Study (not part of `make bench`): how close can a fast tracker's voicing get to Harvest's?

Benchmark 3 asks for >= 100x real time per core at Harvest-level agreement (>= 0.95 voicing
agreement). The numpy `yin` tracker runs at about 300x but agrees 0.81. This study measures what is
left once the voicing decision is *learned from Harvest itself*, and where the disagreement sits:

1. Harvest references (16 ms frames, the gender's F0 range) for EmoDB clips, and Harvest on the
   same clips delayed by 0.5 ms (the benchmark's reference row: Harvest against itself).
2. Per-frame features a fast tracker has anyway: the `yin` decision and F0, the depths of the two
   deepest dips of YIN's difference function, frame energy and the shares of six frequency bands,
   zero-crossing rate; stacked over +-12 frames (+-190 ms) of context and the distance to the clip
   edges (146 features).
3. Classifiers trained to predict Harvest's voicing on 5 speakers (03, 09, 11, 13, 15) and scored
   on the other 5 (speaker-disjoint): logistic regression, an MLP, gradient-boosted trees.
4. Where the errors are: by distance to the nearest voicing change of the Harvest reference, for
   every row (yin, each classifier, delayed Harvest).

The features recompute YIN's difference function next to `track_f0_yin` (which does not return
it), so the "yin + features" speed is a lower bound for a tracker that shares the work.

Run: `python benchmarks/f0_voicing_study.py [--clips_per_speaker 25]` (EmoDB needed:
../shared/data/emodb; Harvest, run twice per clip, dominates: about 2 CPU minutes for the default 250
clips).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_f0 import REFERENCE_DELAY_SAMPLES  # noqa: E402
from benchmarks.common import corpus_dir  # noqa: E402
from modeling import feature_extraction_emotion as fe  # noqa: E402

HOP = 256  # 16 ms at 16 kHz, as the benchmark
TRAIN_SPEAKERS = {"03", "09", "11", "13", "15"}
CONTEXT = (-12, -8, -5, -3, -2, -1, 0, 1, 2, 3, 5, 8, 12)
BAND_EDGES = (0, 300, 600, 1000, 2000, 4000, 8001)


def harvest(signal: np.ndarray, floor: float, ceil: float) -> np.ndarray:
    import pyworld

    f0, _ = pyworld.harvest(signal.astype(np.float64), 16000, floor, ceil, frame_period=1000.0 * HOP / 16000)
    frames = 1 + len(signal) // HOP
    return np.pad(f0[:frames], (0, max(0, frames - len(f0))))


def frame_features(signal: np.ndarray, floor: float, ceil: float) -> tuple[np.ndarray, np.ndarray]:
    """(features per frame, the `yin` tracker's voicing per frame)."""
    settings = fe.YIN_TRACKER
    signal = np.asarray(signal, np.float64)
    frames = 1 + len(signal) // HOP
    track = fe.track_f0_yin(signal, 16000, HOP, floor, ceil)
    low, rate = fe._band_limited(signal, 16000, settings["analysis_rate"], settings["band_limit"])
    min_lag = max(2, math.floor(rate / ceil))
    max_lag = max(min_lag + 2, math.ceil(rate / floor) + 1)
    centres = np.round(np.arange(frames) * HOP * rate / 16000).astype(np.int64)
    cmnd = fe._cmnd_frames(low, centres, max(2, round(rate / floor)), max_lag, -200.0)
    candidates, depth = fe._dip_candidates(cmnd, min_lag, max_lag, rate, 4)
    depth = np.where(np.isfinite(depth), depth, 1.5).clip(0, 1.5)
    padded = np.pad(signal, (256, 256 + HOP))
    segments = padded[np.arange(frames)[:, None] * HOP + np.arange(512)[None, :]] * np.hanning(512)
    power = np.abs(np.fft.rfft(segments, axis=1)) ** 2
    freqs = np.fft.rfftfreq(512, 1 / 16000)
    bands = np.stack(
        [power[:, (freqs >= a) & (freqs < b)].sum(1) for a, b in itertools.pairwise(BAND_EDGES)], 1
    )
    total = bands.sum(1) + 1e-12
    level = 10 * np.log10(total)
    shares = 10 * np.log10(bands + 1e-12) - level[:, None]
    crossings = (np.diff(np.sign(segments[:, 128:384]), axis=1) != 0).mean(1)

    def octave(f0):
        return np.where(f0 > 0, np.log2(np.maximum(f0, 1) / floor) / np.log2(ceil / floor), -1)

    base = np.column_stack(
        [track > 0, depth[:, 0], depth[:, 1], (level - level.max()) / 60, shares / 30, crossings]
    )
    base = np.column_stack([base, octave(track), octave(candidates[:, 0])])
    stacked = [base[np.clip(np.arange(frames) + o, 0, frames - 1)] for o in CONTEXT]
    position = np.arange(frames)
    edges = np.column_stack([np.minimum(position, 50) / 50, np.minimum(frames - 1 - position, 50) / 50])
    return np.hstack([*stacked, edges]).astype(np.float32), track > 0


def distance_to_change(voiced: np.ndarray) -> np.ndarray:
    """Frames to the nearest voicing change of `voiced` (0.5 = next to one); 99 if none."""
    changes = np.flatnonzero(np.diff(voiced.astype(np.int8)) != 0) + 0.5
    if not len(changes):
        return np.full(len(voiced), 99.0)
    return np.abs(np.arange(len(voiced))[:, None] - changes[None, :]).min(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips_per_speaker", type=int, default=25)
    args = parser.parse_args()
    path, description = corpus_dir()
    if path is None or "EmoDB" not in description:
        raise SystemExit(f"EmoDB is needed for this study: {description}")
    import soundfile as sf

    with open(path / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_speaker: dict[str, list[dict]] = {}
    for row in rows:
        by_speaker.setdefault(row["speaker"].zfill(2), []).append(row)
    ranges = fe.DEFAULT_F0_RANGES
    data = {"train": [], "test": []}
    cpu = {"harvest": 0.0, "features": 0.0}
    seconds = 0.0
    for speaker, speaker_rows in sorted(by_speaker.items()):
        step = max(1, len(speaker_rows) // args.clips_per_speaker)
        for row in speaker_rows[::step][: args.clips_per_speaker]:
            audio, _ = sf.read(path / row["file_name"], dtype="float32")
            floor, ceil = ranges[fe.normalize_gender(row["gender"])]
            start = time.process_time()
            reference = harvest(audio, floor, ceil)
            cpu["harvest"] += time.process_time() - start
            delayed = np.concatenate([np.zeros(REFERENCE_DELAY_SAMPLES, np.float32), audio])[: len(audio)]
            delayed = harvest(delayed, floor, ceil)
            start = time.process_time()
            features, yin_voiced = frame_features(audio, floor, ceil)
            cpu["features"] += time.process_time() - start
            seconds += len(audio) / 16000
            split = "train" if speaker in TRAIN_SPEAKERS else "test"
            data[split].append((features, reference > 0, delayed > 0, yin_voiced))
    x_train = np.vstack([d[0] for d in data["train"]])
    y_train = np.concatenate([d[1] for d in data["train"]])
    x_test = np.vstack([d[0] for d in data["test"]])
    y_test = np.concatenate([d[1] for d in data["test"]])
    delayed_test = np.concatenate([d[2] for d in data["test"]])
    distance = np.concatenate([distance_to_change(d[1]) for d in data["test"]])
    print(
        f"{description}: {len(data['train'])} training clips (speakers {sorted(TRAIN_SPEAKERS)}), "
        f"{len(data['test'])} test clips of the other speakers; {len(y_test)} test frames, "
        f"Harvest voiced {y_test.mean():.3f}"
    )
    print(
        f"real time per core: Harvest {seconds / cpu['harvest']:.1f}x, "
        f"yin + features {seconds / cpu['features']:.0f}x"
    )
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "MLP (64, 32)": make_pipeline(
            StandardScaler(), MLPClassifier((64, 32), max_iter=300, early_stopping=True, random_state=0)
        ),
        "gradient-boosted trees": HistGradientBoostingClassifier(max_iter=300, random_state=0),
    }
    predictions = {"yin (the tracker's own decision)": np.concatenate([d[3] for d in data["test"]])}
    for name, model in models.items():
        predictions[f"learned from Harvest: {name}"] = (
            model.fit(x_train, y_train).predict(x_test).astype(bool)
        )
    predictions["Harvest, input delayed 0.5 ms"] = delayed_test
    bins = ((0, 1), (1, 2), (2, 4), (4, 100))
    header = "| voicing vs Harvest (held-out speakers) | agreement | " + " | ".join(
        f"error {lo}-{hi if hi < 100 else '…'} frames from a change" for lo, hi in bins
    )
    print(header + " |")
    print("|---" * (2 + len(bins)) + "|")
    shares = [float(((distance >= lo) & (distance < hi)).mean()) for lo, hi in bins]
    for name, voiced in predictions.items():
        wrong = voiced != y_test
        cells = [f"{wrong[(distance >= lo) & (distance < hi)].mean():.3f}" for lo, hi in bins]
        print(f"| {name} | {1 - wrong.mean():.3f} | " + " | ".join(cells) + " |")
    print("| (share of frames) | | " + " | ".join(f"{s:.3f}" for s in shares) + " |")


if __name__ == "__main__":
    main()
