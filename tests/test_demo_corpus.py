"""The synthetic espeak-ng corpus: audiofolder layout, determinism, idempotence and prosody per emotion."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from make_demo_corpus import (
    EMOTIONS,
    MANIFEST_NAME,
    SMALL_SETTINGS,
    EspeakNotFoundError,
    find_espeak_ng,
    main,
    make_corpus,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (Debian: apt-get install espeak-ng)",
)


def read_metadata(corpus: Path) -> list[dict]:
    import csv

    with open(corpus / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def audio_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "audio").glob("*.flac"))


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    return make_corpus(tmp_path_factory.mktemp("corpus") / "tiny", **SMALL_SETTINGS, seed=0)


@needs_espeak
def test_tiny_corpus_loads_as_audiofolder(tiny_corpus: Path, tmp_path: Path):
    import datasets

    dataset = datasets.load_dataset(
        "audiofolder", data_dir=str(tiny_corpus), split="train", cache_dir=str(tmp_path)
    )
    assert set(dataset.column_names) == {"audio", "emotion", "text", "speaker", "gender"}
    assert len(dataset) == 4 * 4 * 3
    assert Counter(dataset["emotion"]) == dict.fromkeys(EMOTIONS, 12)
    assert Counter(dataset["speaker"]) == {f"spk0{i}": 12 for i in range(1, 5)}
    assert Counter(dataset["gender"]) == {"male": 24, "female": 24}
    for text in dataset["text"]:
        assert re.fullmatch(r"[a-z']+( [a-z']+)+", text), text

    dataset = dataset.cast_column("audio", datasets.Audio(sampling_rate=16000))
    durations = []
    for example in dataset:
        audio = example["audio"]
        assert audio["sampling_rate"] == 16000
        assert audio["array"].ndim == 1
        assert 0.1 < np.abs(audio["array"]).max() <= 1.0
        durations.append(len(audio["array"]) / 16000)
    assert min(durations) > 0.8, min(durations)
    assert max(durations) < 5.0, max(durations)
    assert 1.5 < np.mean(durations) < 3.0

    info = sf.info(str(audio_files(tiny_corpus)[0]))
    assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
    manifest = json.loads((tiny_corpus / MANIFEST_NAME).read_text())
    assert manifest["num_files"] == 48
    assert manifest["espeak_ng_version"]


@needs_espeak
def test_generation_is_deterministic_and_sizes_nest(tiny_corpus: Path, tmp_path: Path):
    again = make_corpus(tmp_path / "again", **SMALL_SETTINGS, seed=0, num_workers=1)
    assert read_metadata(again) == read_metadata(tiny_corpus)
    for path in audio_files(tiny_corpus):
        assert (again / "audio" / path.name).read_bytes() == path.read_bytes(), path.name

    # Every clip draws its own random numbers, so a smaller corpus is a subset of a larger one.
    subset = make_corpus(tmp_path / "subset", num_speakers=2, sentences_per_speaker=2, seed=0)
    rows = read_metadata(subset)
    assert len(rows) == 2 * 4 * 2
    assert all(row in read_metadata(tiny_corpus) for row in rows)
    for row in rows:
        assert (subset / row["file_name"]).read_bytes() == (tiny_corpus / row["file_name"]).read_bytes()

    other_seed = make_corpus(tmp_path / "seed1", num_speakers=2, sentences_per_speaker=2, seed=1)
    shared = {p.name for p in audio_files(other_seed)} & {p.name for p in audio_files(subset)}
    assert all((other_seed / "audio" / n).read_bytes() != (subset / "audio" / n).read_bytes() for n in shared)


@needs_espeak
def test_second_call_is_a_no_op_and_changed_settings_regenerate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="make_demo_corpus")
    corpus = make_corpus(tmp_path / "corpus", num_speakers=2, sentences_per_speaker=1, seed=0)
    mtimes = {p: p.stat().st_mtime_ns for p in corpus.rglob("*")}
    caplog.clear()
    assert main(["--output_dir", str(corpus), "--num_speakers", "2", "--sentences_per_speaker", "1"]) == 0
    assert "already complete" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*")} == mtimes

    # A missing clip makes the corpus incomplete: it is rebuilt in full.
    audio_files(corpus)[0].unlink()
    make_corpus(corpus, num_speakers=2, sentences_per_speaker=1, seed=0)
    assert len(audio_files(corpus)) == 8

    make_corpus(corpus, num_speakers=2, sentences_per_speaker=2, seed=0)
    assert len(audio_files(corpus)) == 16
    assert json.loads((corpus / MANIFEST_NAME).read_text())["settings"]["sentences_per_speaker"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"], "staging directories left behind"


@needs_espeak
def test_refuses_to_replace_a_foreign_directory(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        make_corpus(tmp_path, num_speakers=1, sentences_per_speaker=1)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_missing_espeak_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        find_espeak_ng()
    assert main(["--output_dir", str(tmp_path / "corpus"), "--small"]) == 1
    assert "apt-get install espeak-ng" in capsys.readouterr().err
    assert not (tmp_path / "corpus").exists()


def test_rejects_bad_settings(tmp_path: Path):
    with pytest.raises(ValueError, match="num_speakers"):
        make_corpus(tmp_path / "c", num_speakers=0)
    with pytest.raises(ValueError, match="emotions"):
        make_corpus(tmp_path / "c", emotions=("neutral", "bored"))


def clip_features(path: Path) -> dict[str, float]:
    import pyworld

    waveform, rate = sf.read(str(path), dtype="float64")
    f0, times = pyworld.dio(waveform, rate, f0_floor=50.0, f0_ceil=500.0, frame_period=10.0)
    f0 = pyworld.stonemask(waveform, f0, times, rate)
    # Median and interquartile range: robust to the tracker's occasional octave errors.
    p25, p50, p75 = np.percentile(12 * np.log2(f0[f0 > 0]), [25, 50, 75])
    spectrum = np.abs(np.fft.rfft(waveform))
    return {
        "duration": len(waveform) / rate,
        "rms_db": 20 * np.log10(np.sqrt(np.mean(waveform**2))),
        "f0_median": float(p50),
        "f0_spread": float(p75 - p25),
        "centroid": float((spectrum * np.fft.rfftfreq(len(waveform), 1 / rate)).sum() / spectrum.sum()),
    }


@needs_espeak
def test_emotions_differ_acoustically_in_the_intended_direction(tmp_path: Path):
    # Without jitter every (speaker, sentence) pair must follow the intended ordering exactly.
    corpus = make_corpus(tmp_path / "mean_style", num_speakers=2, sentences_per_speaker=2, variation=0.0)
    features: dict[tuple[str, str], dict[str, dict]] = {}
    for row in read_metadata(corpus):
        key = (row["speaker"], row["file_name"].rsplit("_", 1)[1])
        features.setdefault(key, {})[row["emotion"]] = clip_features(corpus / row["file_name"])
    assert len(features) == 4
    for key, f in features.items():
        assert f["sad"]["duration"] > f["neutral"]["duration"] > f["happy"]["duration"], key
        assert f["neutral"]["duration"] > f["angry"]["duration"], key
        assert f["angry"]["rms_db"] > f["neutral"]["rms_db"] + 2 > f["sad"]["rms_db"] + 4, key
        assert f["angry"]["f0_median"] > f["neutral"]["f0_median"] > f["sad"]["f0_median"], key
        assert f["happy"]["f0_median"] > f["neutral"]["f0_median"], key
        assert f["happy"]["f0_spread"] > f["neutral"]["f0_spread"] > f["sad"]["f0_spread"], key
        assert f["angry"]["centroid"] > f["neutral"]["centroid"] > f["sad"]["centroid"], key


@needs_espeak
def test_jittered_classes_differ_on_average_but_overlap(tiny_corpus: Path):
    by_emotion: dict[str, list[dict]] = {e: [] for e in EMOTIONS}
    for row in read_metadata(tiny_corpus):
        by_emotion[row["emotion"]].append(clip_features(tiny_corpus / row["file_name"]))

    def values(emotion: str, name: str) -> np.ndarray:
        return np.array([f[name] for f in by_emotion[emotion]])

    assert values("angry", "rms_db").mean() > values("sad", "rms_db").mean() + 4
    assert values("sad", "duration").mean() > 1.2 * values("angry", "duration").mean()
    assert values("happy", "f0_spread").mean() > values("sad", "f0_spread").mean()
    # Not trivially separable: neighbouring classes overlap on loudness and on duration.
    assert values("neutral", "rms_db").max() > values("happy", "rms_db").min()
    assert values("happy", "rms_db").max() > values("angry", "rms_db").min()
    assert values("neutral", "duration").max() > values("sad", "duration").min()
