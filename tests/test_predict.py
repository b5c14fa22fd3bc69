"""scripts/predict.py (with ser_inputs.py, ser_rows.py, ser_backend.py) and scripts/ser_audio.py:
files, folders and globs, output schemas, equality with `pipeline("audio-classification")`, CTC
transcripts, long recordings in bounded memory, resampling and down-mixing, and bad files."""

from __future__ import annotations

import csv
import ctypes
import gc
import json
import logging
import shutil
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import predict
import psutil
import pytest
import ser_inputs
import ser_rows
import soundfile as sf
import torch
from conftest import TINY_DECOMPOSITION, VOCAB, label_kwargs, speech_like, tiny_backbone_config
from ser_audio import AudioReadError, read_audio, read_clip, sliding_windows, stream_audio
from ser_inference import predict_waveforms
from torchcodec.decoders import AudioDecoder
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoProcessor,
    Wav2Vec2CTCTokenizer,
    pipeline,
)

from modeling import (
    DecomposedEmotionConfig,
    DecomposedEmotionForAudioClassification,
    EmotionCTCConfig,
    EmotionCTCForAudioClassification,
    EmotionFeatureExtractor,
    EmotionProcessor,
    EmotionSSLConfig,
    EmotionSSLForAudioClassification,
)

SR = 16000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one intra-op thread on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _decisive(model: torch.nn.Module, extractor: EmotionFeatureExtractor) -> torch.nn.Module:
    """A random head gives every clip nearly the same probabilities. Centre the head's dense layer
    on the embeddings of a few clips and widen it, so that labels differ between clips and label
    equality and window fractions test something."""
    model.eval()
    clips = [speech_like(s, seed=100 + i) for i, s in enumerate((0.6, 1.0, 1.5, 2.0, 4.0, 4.0))]
    with torch.no_grad():
        features = [extractor(clip, sampling_rate=SR, return_tensors="pt") for clip in clips]
        embeddings = torch.cat([model(**f).embeddings for f in features])
        dense = model.classifier.dense
        torch.manual_seed(1)
        dense.weight.normal_(0.0, 1.0 / float(embeddings.std(0).norm()))
        dense.bias.copy_(-dense.weight @ embeddings.mean(0))
        model.classifier.out_proj.weight.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny randomly initialised models saved with their feature extractor (and CTC processor)."""
    root = tmp_path_factory.mktemp("models")
    vocab_file = root / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file))
    common = {"backbone_config": tiny_backbone_config(), "classifier_dropout": 0.0, **label_kwargs()}
    torch.manual_seed(0)
    built = {
        "ssl": EmotionSSLForAudioClassification(EmotionSSLConfig(**common)),
        "ctc": EmotionCTCForAudioClassification(EmotionCTCConfig(vocab_size=len(VOCAB), **common)),
        # GroupNorm feature encoder (wav2vec2-base style): padding changes its outputs.
        "ssl_group": EmotionSSLForAudioClassification(
            EmotionSSLConfig(**{**common, "backbone_config": tiny_backbone_config(feat_extract_norm="group")})
        ),
        "decomposed": DecomposedEmotionForAudioClassification(
            DecomposedEmotionConfig(**common, **TINY_DECOMPOSITION, reconstruction_weight=0.0)
        ),
    }
    out = {}
    for name, model in built.items():
        directory = root / name
        extractor = EmotionFeatureExtractor(**model.config.feature_extractor_kwargs())
        _decisive(model, extractor).save_pretrained(directory)
        extractor.save_pretrained(directory)
        if name == "ctc":
            EmotionProcessor(extractor, tokenizer).save_pretrained(directory)
        out[name] = directory
    return out


def write(path: Path, waveform: np.ndarray, sampling_rate: int = SR, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, waveform, sampling_rate, subtype=subtype)
    return path


def stereo_44k(seconds: float, seed: int) -> np.ndarray:
    """Two different channels at 44.1 kHz: exercises down-mixing and resampling."""
    left = speech_like(seconds, seed=seed, sampling_rate=44100)
    right = 0.5 * speech_like(seconds, seed=seed + 7, sampling_rate=44100)
    return np.stack([left, right], axis=1)


def run(model_dir: Path, paths: list, output: Path, *extra: str) -> dict:
    return predict.main([str(model_dir), *map(str, paths), "--output", str(output), "--no_progress", *extra])


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------------
# Audio reading
# ----------------------------------------------------------------------------------------------


def test_stream_audio_blocks_equal_the_whole_file_decode(tmp_path):
    """Resampling 44.1 kHz stereo to 16 kHz mono block by block leaves no trace at block boundaries."""
    path = write(tmp_path / "stereo.flac", stereo_44k(3.3, seed=1), 44100)
    whole = AudioDecoder(str(path), sample_rate=SR, num_channels=1).get_all_samples().data.numpy()[0]
    blocks = list(stream_audio(path, SR, block_seconds=0.25))
    assert len(blocks) > 10
    assert all(len(b) == 4000 for b in blocks[:-1])
    assert np.array_equal(np.concatenate(blocks), whole)
    assert abs(len(whole) - 3.3 * SR) <= 1


@pytest.mark.parametrize(
    ("window", "hop", "block"), [(100, 50, 7), (100, 30, 33), (100, 100, 250), (500, 200, 64)]
)
def test_sliding_windows_are_slices_and_cover_the_stream(window, hop, block):
    signal = np.arange(1003, dtype=np.float32)
    windows = list(sliding_windows((signal[i : i + block] for i in range(0, 1003, block)), window, hop))
    for win in windows:
        assert np.array_equal(win.samples, signal[win.start : win.end])
    starts = [w.start for w in windows]
    regular = [s for s in starts if s % hop == 0]
    assert regular == list(range(0, 1003 - window + 1, hop))
    assert windows[-1].end == 1003
    assert all(len(w.samples) == min(window, 1003) for w in windows)


def test_read_audio_errors_name_the_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    for name, reason in [
        ("missing.wav", "no such file"),
        ("empty.wav", "empty file"),
        ("corrupt.wav", "cannot open"),
    ]:
        with pytest.raises(AudioReadError, match=reason) as caught:
            read_audio(tmp_path / name, SR)
        assert caught.value.path.endswith(name)


# ----------------------------------------------------------------------------------------------
# predict.py
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_files_folders_globs_and_output_schema(models, tmp_path, suffix):
    folder = tmp_path / "audio"
    write(folder / "a.wav", speech_like(1.2, seed=0))
    write(folder / "nested" / "b.flac", speech_like(0.7, seed=1))
    (folder / "notes.txt").write_text("not audio")
    other = write(tmp_path / "other" / "c.wav", speech_like(0.9, seed=2))
    write(tmp_path / "globbed" / "d.wav", speech_like(1.0, seed=3))
    write(tmp_path / "globbed" / "e.ogg", speech_like(0.6, seed=4))
    output = tmp_path / f"out{suffix}"
    result = run(models["ssl"], [folder, other, tmp_path / "globbed" / "*.wav", folder / "a.wav"], output)
    assert result["files"] == result["predicted"] == 4
    rows = read_rows(output)
    names = [Path(r["path"]).name for r in rows]
    assert names == ["a.wav", "b.flac", "c.wav", "d.wav"]  # input order, a.wav once
    labels = ["neutral", "angry", "sad"]
    if suffix == ".csv":
        with output.open() as handle:
            header = next(csv.reader(handle))
        assert header == [
            "path",
            "segment",
            "start_s",
            "end_s",
            "label",
            "score",
            *[f"prob_{x}" for x in labels],
            "num_windows",
            "skipped_windows",
            *[f"fraction_{x}" for x in labels],
            "error",
        ]
        probabilities = [[float(r[f"prob_{x}"]) for x in labels] for r in rows]
    else:
        assert all(
            list(r)
            == [
                "path",
                "segment",
                "start_s",
                "end_s",
                "label",
                "score",
                "probabilities",
                "num_windows",
                "skipped_windows",
                "label_fractions",
                "error",
            ]
            for r in rows
        )
        assert all(list(r["probabilities"]) == labels for r in rows)
        probabilities = [list(r["probabilities"].values()) for r in rows]
    for row, probs in zip(rows, probabilities):
        assert row["segment"] == "file"
        assert row["error"] in ("", None)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == labels[int(np.argmax(probs))]
        assert float(row["score"]) == pytest.approx(max(probs), abs=1e-6)
    assert float(rows[0]["end_s"]) == pytest.approx(1.2)


@pytest.mark.parametrize("family", ["ssl", "ctc", "decomposed", "ssl_group"])
def test_same_labels_and_probabilities_as_the_pipeline(models, tmp_path, family):
    """Short clips of different lengths (batched and padded by predict.py, except for the backbone
    that is not padding-invariant) and a 44.1 kHz stereo file: predict.py's rows equal
    `pipeline(...)` on the same files."""
    files = [
        write(tmp_path / f"clip{i}.wav", speech_like(s, seed=10 + i)) for i, s in enumerate((1.4, 0.5, 0.9))
    ]
    files.append(write(tmp_path / "stereo44k.flac", stereo_44k(1.1, seed=3), 44100))
    output = tmp_path / "out.jsonl"
    run(models[family], files, output)
    rows = {Path(r["path"]).name: r for r in read_rows(output)}
    classifier = pipeline("audio-classification", model=str(models[family]), trust_remote_code=True)
    predicted_labels = set()
    for path in files:
        expected = {p["label"]: p["score"] for p in classifier(str(path), top_k=None)}
        row = rows[path.name]
        assert row["label"] == max(expected, key=expected.get)
        for label, score in expected.items():
            assert row["probabilities"][label] == pytest.approx(score, abs=1e-4)
        predicted_labels.add(row["label"])
    assert rows["stereo44k.flac"]["end_s"] == pytest.approx(1.1, abs=1e-3)
    assert len(predicted_labels) > 1  # the test model is not a constant


def test_ctc_model_has_a_transcript_column(models, tmp_path):
    clips = [speech_like(1.3, seed=5), speech_like(0.6, seed=6)]
    files = [write(tmp_path / f"c{i}.wav", clip) for i, clip in enumerate(clips)]
    output = tmp_path / "out.csv"
    run(models["ctc"], files, output, "--batch_size", "2")
    rows = read_rows(output)
    model = AutoModelForAudioClassification.from_pretrained(models["ctc"], trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(models["ctc"], trust_remote_code=True)
    for row, clip in zip(rows, clips):
        features = processor(clip, sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            out = model(**features)
        lengths = model.ctc_frame_lengths(features["input_values"], features["attention_mask"])
        assert row["transcript"] == processor.decode_ctc(out.ctc_logits, lengths)[0]
        assert row["transcript"]
    assert "transcript" not in read_rows(run_and_path(models["ssl"], files[:1], tmp_path / "plain.csv"))[0]


def run_and_path(model_dir: Path, files: list, output: Path) -> Path:
    run(model_dir, files, output)
    return output


def test_f0_model_uses_the_given_gender(models, tmp_path):
    clip = speech_like(0.8, seed=8)
    path = write(tmp_path / "f.wav", clip)
    output = tmp_path / "out.jsonl"
    run(models["decomposed"], [path], output, "--gender", "female")
    row = read_rows(output)[0]
    model = AutoModelForAudioClassification.from_pretrained(
        models["decomposed"], trust_remote_code=True
    ).eval()
    extractor = AutoFeatureExtractor.from_pretrained(models["decomposed"], trust_remote_code=True)
    with torch.no_grad():
        logits = model(**extractor(clip, sampling_rate=SR, gender="female", return_tensors="pt")).logits[0]
    expected = torch.softmax(logits, -1).numpy()
    assert list(row["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-4)


def test_long_recording_windows_and_summary(models, tmp_path):
    """A 71 s 44.1 kHz stereo FLAC: windows every 2 s plus one aligned with the end, each equal to
    predicting that slice of the whole-file decode; the summary averages them."""
    audio = np.concatenate([stereo_44k(7.1, seed=s) for s in range(10)])
    path = write(tmp_path / "long.flac", audio, 44100)
    output = tmp_path / "out.jsonl"
    result = run(models["ssl"], [path], output, "--long_threshold_seconds", "30", "--batch_size", "8")
    rows = read_rows(output)
    windows, summary = rows[:-1], rows[-1]
    assert result["long_files"] == 1
    assert result["windows"] == len(windows) == 35
    assert [w["start_s"] for w in windows] == [*range(0, 67, 2), 67.0]
    assert all(w["segment"] == "window" and w["end_s"] - w["start_s"] == 4.0 for w in windows)
    assert summary["segment"] == "summary"
    assert summary["end_s"] == pytest.approx(71.0)
    assert summary["num_windows"] == 35

    whole = read_audio(path, SR)
    model = AutoModelForAudioClassification.from_pretrained(models["ssl"], trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(models["ssl"], trust_remote_code=True)
    # Windows 4 and 5 straddle the 10 s decode block boundary.
    for index in (0, 4, 5, 20, 34):
        start = round(windows[index]["start_s"] * SR) if index < 34 else len(whole) - 4 * SR
        (expected,) = predict_waveforms(model, extractor, [whole[start : start + 4 * SR]])
        probs = torch.softmax(torch.from_numpy(expected.logits), -1).numpy()
        assert list(windows[index]["probabilities"].values()) == pytest.approx(probs.tolist(), abs=1e-5)

    labels = list(summary["probabilities"])
    window_probs = np.array([list(w["probabilities"].values()) for w in windows])
    assert list(summary["probabilities"].values()) == pytest.approx(window_probs.mean(0).tolist(), abs=1e-5)
    assert summary["label"] == labels[int(window_probs.mean(0).argmax())]
    counts = np.bincount(window_probs.argmax(1), minlength=len(labels)) / len(windows)
    assert list(summary["label_fractions"].values()) == pytest.approx(counts.tolist(), abs=1e-6)


def test_silent_windows_are_skipped_from_the_summary(models, tmp_path):
    audio = np.concatenate(
        [speech_like(12.0, seed=1), np.zeros(8 * SR, np.float32), speech_like(12.0, seed=2)]
    )
    path = write(tmp_path / "pause.flac", audio)
    output = tmp_path / "out.csv"
    run(models["ssl"], [path], output, "--long_threshold_seconds", "20")
    rows = read_rows(output)
    skipped = [r for r in rows if r["segment"] == "window" and r["error"]]
    assert [(float(r["start_s"]), float(r["end_s"])) for r in skipped] == [
        (12.0, 16.0),
        (14.0, 18.0),
        (16.0, 20.0),
    ]
    assert all("silent" in r["error"] and r["label"] == "" for r in skipped)
    summary = rows[-1]
    assert (summary["num_windows"], summary["skipped_windows"], summary["error"]) == ("12", "3", "")


def _peak_memory_growth(function, libc) -> dict[str, float]:
    """Peak growth while `function` runs, in MiB: of the resident set (sampled every 2 ms; free
    heap memory is handed back first with `malloc_trim`, so reusing it counts as growth too) and
    of Python/numpy allocations (tracemalloc, exact but blind to torch's own buffers)."""
    gc.collect()
    libc.malloc_trim(0)
    process = psutil.Process()
    start = process.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    traced_start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        function()
    finally:
        stop.set()
        sampler.join()
    traced_peak = tracemalloc.get_traced_memory()[1]
    return {"rss": (peak[0] - start) / 2**20, "traced": (traced_peak - traced_start) / 2**20}


def test_memory_does_not_grow_with_recording_length(models, tmp_path):
    """Peak memory while predicting a 10-minute recording is that of a 2-minute one, while reading
    the 10-minute file whole (the control) costs its full size: the measurement tells them apart."""
    try:  # glibc: serve allocations >= 128 KiB by mmap, so freed memory leaves the RSS at once
        libc = ctypes.CDLL("libc.so.6")
        assert libc.mallopt(-3, 128 * 1024) == 1  # M_MMAP_THRESHOLD
    except (OSError, AttributeError, AssertionError):
        pytest.skip("needs glibc (mallopt, malloc_trim) to make RSS track live allocations")
    clip = np.concatenate([speech_like(3.0, seed=s) for s in range(4)])
    files = {m: write(tmp_path / f"{m}min.flac", np.tile(clip, m * 5)) for m in (2, 10)}
    output = str(tmp_path / "o.jsonl")
    # Windows without overlap halve the compute (memory does not depend on the hop); both files
    # fill many batches, so their peaks compare like with like.
    options = ["--window_seconds", "4", "--hop_seconds", "4", "--batch_size", "4", "--no_progress"]
    args = predict.parse_arguments([str(models["ssl"]), "x", "--output", output, *options])
    predictor = predict.load_predictor(args)

    def predict_one(path: Path) -> None:
        writer = ser_rows.RowWriter(args.output, predictor.labels, transcripts=False)
        stats = ser_rows.RunStats()
        short_files = ser_rows.ShortFiles(predictor, writer, stats)
        ser_rows.predict_file(path, predictor, writer, short_files, stats, args)
        writer.close()
        assert (stats.failed, stats.long_files) == (0, 1)

    predict_one(files[2])  # warm-up: thread pools, oneDNN kernels, imports
    tracemalloc.start()
    try:
        growth = {m: _peak_memory_growth(lambda m=m: predict_one(files[m]), libc) for m in (2, 10)}
        whole_file = _peak_memory_growth(lambda: read_audio(files[10], SR), libc)
    finally:
        tracemalloc.stop()
    extra_mib = 8 * 60 * SR * 4 / 2**20  # 29 MiB of float32 samples
    print("memory growth (MiB):", growth, "whole file:", whole_file)
    for kind in ("rss", "traced"):
        assert whole_file[kind] > 0.9 * extra_mib, (kind, whole_file)
    assert growth[10]["traced"] - growth[2]["traced"] < 0.05 * extra_mib, growth
    # The resident set also holds torch's buffers; allocator reuse makes it a little noisy.
    assert growth[10]["rss"] - growth[2]["rss"] < 0.35 * extra_mib, growth


def test_bad_files_get_error_rows_and_the_rest_is_predicted(models, tmp_path):
    folder = tmp_path / "mixed"
    write(folder / "good.wav", speech_like(1.0, seed=1))
    (folder / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    (folder / "empty.wav").write_bytes(b"")
    write(folder / "silent.wav", np.zeros(SR, np.float32))
    write(folder / "short.wav", speech_like(0.05, seed=2))
    nan = speech_like(1.0, seed=4)
    nan[100:200] = np.nan
    write(folder / "nan.wav", nan, subtype="FLOAT")
    write(folder / "long.wav", speech_like(5.0, seed=3))
    output = tmp_path / "out.csv"
    result = run(models["ssl"], [folder, tmp_path / "missing.wav"], output, "--max_file_seconds", "3")
    rows = {Path(r["path"]).name: r for r in read_rows(output)}
    assert rows["good.wav"]["label"]
    assert not rows["good.wav"]["error"]
    expected = {
        "corrupt.wav": "cannot open as audio",
        "empty.wav": "empty file",
        "silent.wav": "silent",
        "short.wav": "too short",
        "nan.wav": "NaN",
        "long.wav": "longer than --max_file_seconds",
        "missing.wav": "no such file",
    }
    for name, reason in expected.items():
        assert reason in rows[name]["error"], rows[name]
        assert rows[name]["label"] == ""
    assert (result["files"], result["predicted"], result["failed"]) == (8, 1, 7)
    assert {Path(f["path"]).name for f in result["failures"]} == set(expected)
    assert predict.exit_status(result) == 0
    assert predict.exit_status({**result, "strict": True}) == 1


def test_exit_status(models, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.flac").write_bytes(b"fLaC" + bytes(300))
    assert (
        predict.cli([str(models["ssl"]), str(bad), "--output", str(tmp_path / "o.csv"), "--no_progress"]) == 1
    )
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert predict.cli([str(models["ssl"]), str(empty), "--output", str(tmp_path / "o.csv")]) == 2
    with pytest.raises(SystemExit):
        predict.parse_arguments([str(models["ssl"]), str(bad), "--output", str(tmp_path / "o.txt")])


# ----------------------------------------------------------------------------------------------
# Faster paths: one-call decoding, the onnxruntime backend, the decoding thread
# ----------------------------------------------------------------------------------------------


def test_read_clip_equals_the_stream_decode_and_leaves_long_files_to_it(tmp_path):
    stereo = write(tmp_path / "stereo.flac", stereo_44k(2.3, seed=1), 44100)
    mono = write(tmp_path / "mono.ogg", speech_like(0.7, seed=2))
    for path in (stereo, mono):
        _, waveform = read_clip(path, SR, 3 * SR)
        assert np.array_equal(waveform, read_audio(path, SR))
        assert waveform.dtype == np.float32
    assert read_clip(stereo, SR, 3 * SR)[0].num_channels == 2
    assert read_clip(stereo, SR, 2 * SR)[1] is None  # 2.3 s > 2 s: the caller streams it
    empty_audio = write(tmp_path / "header_only.wav", np.zeros(0, np.float32))
    assert read_clip(empty_audio, SR, 3 * SR)[1] is None  # no frames: the stream path says why
    with pytest.raises(AudioReadError, match="no such file"):
        read_clip(tmp_path / "missing.wav", SR, SR)


def exported_copy(models: dict[str, Path], family: str, directory: Path) -> Path:
    """A copy of a test model with `model.onnx` written by export_onnx.py's default output (the
    shared fixture directories stay without one)."""
    import export_onnx

    shutil.copytree(models[family], directory)
    report = export_onnx.main([str(directory)])
    assert Path(report["output"]) == directory / "model.onnx"
    return directory


@pytest.mark.parametrize("family", ["ssl", "ctc"])
def test_onnxruntime_backend_gives_the_labels_of_torch_and_the_pipeline(models, tmp_path, family):
    """Files of different lengths (padded into one batch), one at 44.1 kHz stereo: the default
    backend finds model.onnx and runs onnxruntime; labels equal PyTorch's and the pipeline's,
    probabilities within 1e-4, CTC transcripts equal."""
    model_dir = exported_copy(models, family, tmp_path / "model")
    files = [
        write(tmp_path / "audio" / f"clip{i}.wav", speech_like(s, seed=10 + i))
        for i, s in enumerate((0.3, 2.7, 0.9, 1.45, 0.55))
    ]
    files.append(write(tmp_path / "audio" / "stereo44k.flac", stereo_44k(1.2, seed=5), 44100))
    outputs = {}
    for backend in ("auto", "torch"):
        output = tmp_path / f"{backend}.jsonl"
        result = run(model_dir, files, output, "--backend", backend, "--batch_size", "8")
        assert result["backend"] == ("onnxruntime" if backend == "auto" else "torch")
        assert result["predicted"] == len(files)
        outputs[backend] = read_rows(output)
    classifier = pipeline("audio-classification", model=str(model_dir), trust_remote_code=True)
    for onnx_row, torch_row, path in zip(outputs["auto"], outputs["torch"], files):
        assert onnx_row["path"] == torch_row["path"] == str(path)
        assert onnx_row["label"] == torch_row["label"]
        assert onnx_row["probabilities"] == pytest.approx(torch_row["probabilities"], abs=1e-4)
        expected = {p["label"]: p["score"] for p in classifier(str(path), top_k=None)}
        assert onnx_row["label"] == max(expected, key=expected.get)
        assert onnx_row["probabilities"] == pytest.approx(expected, abs=1e-4)
        if family == "ctc":
            assert onnx_row["transcript"] == torch_row["transcript"]
            assert onnx_row["transcript"]
    assert len({row["label"] for row in outputs["auto"]}) > 1  # the test model is not a constant


def test_onnxruntime_backend_falls_back_to_torch_with_the_reason(models, tmp_path, caplog, monkeypatch):
    files = [write(tmp_path / f"c{i}.wav", speech_like(s, seed=40 + i)) for i, s in enumerate((0.8, 1.6))]
    expected = read_rows(run_and_path(models["ssl"], files, tmp_path / "reference.jsonl"))

    def check(model_dir: Path, *extra: str) -> None:
        output = tmp_path / "out.jsonl"
        caplog.clear()
        result = run(model_dir, files, output, *extra)
        assert result["backend"] == "torch"
        rows = read_rows(output)
        assert [r["label"] for r in rows] == [r["label"] for r in expected]
        assert [r["probabilities"] for r in rows] == [r["probabilities"] for r in expected]

    with caplog.at_level(logging.INFO, logger="predict"):
        check(models["ssl"])  # auto, no model.onnx: an info line
        assert "backend: PyTorch, not onnxruntime: no model.onnx in" in caplog.text
        check(models["ssl"], "--backend", "onnxruntime")  # asked for: a warning
        assert any(r.levelno == logging.WARNING and "no model.onnx" in r.getMessage() for r in caplog.records)
        check(models["ssl"], "--onnx", str(tmp_path / "nowhere.onnx"))
        assert "--onnx" in caplog.text
        assert "no such file" in caplog.text

        exported = exported_copy(models, "ssl", tmp_path / "exported")
        check(exported, "--backend", "torch")
        assert "backend: PyTorch (--backend torch)" in caplog.text
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
            check(exported)
        assert "onnxruntime is not installed" in caplog.text
        # Not on a GPU device, not in another dtype (the export is float32): said before any file is read.
        args = predict.parse_arguments([str(exported), "x", "--output", str(tmp_path / "o.csv")])
        model = AutoModelForAudioClassification.from_pretrained(exported, trust_remote_code=True)
        extractor = AutoFeatureExtractor.from_pretrained(exported, trust_remote_code=True)
        onnx, reason = predict.load_onnx(args, model, extractor, torch.device("cuda", 0))
        assert onnx is None
        assert "the device is cuda:0" in reason
        args.dtype = "bfloat16"
        onnx, reason = predict.load_onnx(args, model, extractor, torch.device("cpu"))
        assert onnx is None
        assert "--dtype bfloat16" in reason

        # A stale export (of other weights) is caught by the load-time probe.
        stale = tmp_path / "stale"
        shutil.copytree(models["ssl"], stale)
        other = exported_copy(models, "ssl_group", tmp_path / "other")
        shutil.copyfile(other / "model.onnx", stale / "model.onnx")
        check(stale)
        assert "does not match the model" in caplog.text


def test_decoding_thread_keeps_input_order_and_every_error_row(models, tmp_path, monkeypatch):
    """Good files of different lengths between bad ones and a long recording, a queue of 2 files:
    the rows (order, labels, probabilities, errors, windows) are those of decoding in the main
    thread; a file whose decoding raises unexpectedly still gets its error row."""
    folder = tmp_path / "mixed"
    write(folder / "a_good.wav", speech_like(1.3, seed=1))
    (folder / "b_corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    write(folder / "c_good.flac", speech_like(0.4, seed=2))
    (folder / "d_empty.wav").write_bytes(b"")
    write(folder / "e_long.wav", speech_like(7.0, seed=3))  # > --long_threshold_seconds 5: windows
    write(folder / "f_silent.wav", np.zeros(SR, np.float32))
    write(folder / "g_raises.wav", speech_like(0.9, seed=4))
    write(folder / "h_good.ogg", speech_like(2.2, seed=5))
    write(folder / "i_short.wav", speech_like(0.05, seed=6))
    write(folder / "j_good.wav", speech_like(0.75, seed=7))
    real_read_clip = ser_inputs.read_clip

    def read_clip_failing_once(path, *args, **kwargs):
        if Path(path).name == "g_raises.wav":
            time.sleep(0.05)  # the consumer catches up and waits on the queue
            raise MemoryError("simulated")
        return real_read_clip(path, *args, **kwargs)

    monkeypatch.setattr(ser_inputs, "read_clip", read_clip_failing_once)
    rows = {}
    for prefetch in ("0", "2"):
        output = tmp_path / f"prefetch{prefetch}.jsonl"
        options = ["--prefetch", prefetch, "--long_threshold_seconds", "5", "--batch_size", "2"]
        result = run(models["ssl"], [folder], output, *options)
        assert (result["files"], result["failed"], result["long_files"]) == (10, 5, 1)
        rows[prefetch] = read_rows(output)
    assert rows["2"] == rows["0"]
    files = [(Path(r["path"]).name, r["segment"]) for r in rows["2"] if r["segment"] != "window"]
    assert [name for name, _ in files] == sorted(p.name for p in folder.iterdir())
    errors = {Path(r["path"]).name: r["error"] for r in rows["2"] if r["segment"] == "file" and r["error"]}
    assert set(errors) == {"b_corrupt.wav", "d_empty.wav", "f_silent.wav", "g_raises.wav", "i_short.wav"}
    assert errors["g_raises.wav"] == "unexpected error: MemoryError: simulated"
    assert len([r for r in rows["2"] if r["segment"] == "window"]) == 3  # 0-4, 2-6, 3-7 s


def test_prefetched_bounds_the_queue_keeps_order_and_raises_in_the_consumer():
    produced, consumed, ahead = [], [], []

    def load(index: int) -> ser_inputs.LoadedFile:
        time.sleep(0.002 * (index % 3))  # uneven decoding times
        produced.append(index)
        ahead.append(len(produced) - len(consumed))
        return ser_inputs.LoadedFile(
            Path(f"{index}.wav"), waveform=np.zeros(100 * (1 + index % 4), np.float32)
        )

    for item in ser_inputs.prefetched(list(range(30)), load, max_items=3):
        time.sleep(0.003)  # a slower consumer: the thread fills the queue and waits
        consumed.append(int(item.path.stem))
    assert consumed == list(range(30))
    assert max(ahead) <= 3 + 2  # the queue, the file the consumer holds and the one just decoded
    # A sample bound below two files' worth: one file at a time is still allowed.
    produced.clear(), consumed.clear(), ahead.clear()
    for item in ser_inputs.prefetched(list(range(10)), load, max_items=5, max_samples=150):
        time.sleep(0.003)
        consumed.append(int(item.path.stem))
    assert consumed == list(range(10))
    assert max(ahead) <= 1 + 2  # one file queued (not 5)

    def broken(index: int) -> ser_inputs.LoadedFile:
        if index == 4:
            raise KeyError("escaped")
        return ser_inputs.LoadedFile(Path(f"{index}.wav"), error="x")

    got = []

    def consume() -> None:
        for item in ser_inputs.prefetched(list(range(8)), broken, max_items=2):
            got.append(item.path.stem)

    with pytest.raises(KeyError, match="escaped"):
        consume()
    assert got == ["0", "1", "2", "3"]
    # Closing the generator early stops the thread.
    before = threading.active_count()
    stream = ser_inputs.prefetched(list(range(100)), load, max_items=2)
    next(stream)
    stream.close()
    assert threading.active_count() == before
    assert not any(t.name == "predict-prefetch" for t in threading.enumerate())
