"""Robustness: bad audio gets a clear answer, nothing is lost silently, interrupted work resumes.

- Property tests: random arrays (any length up to minutes, dtypes, layouts, rates, NaN/inf) into
  `EmotionFeatureExtractor` and `predict_waveforms`; the only failure allowed is `AudioInputError`
  with a readable message, and it happens exactly for the inputs that are bad.
- A "nasty" corpus (undecodable, empty, silent, NaN, clipped, too short, very long, multi-channel,
  8-48 kHz, unknown or missing labels, empty and non-ASCII transcripts) through `train.main`: every
  row is used or listed in `skipped.jsonl` with its reason, and the counts add up.
- A training run killed with SIGKILL mid-epoch and resumed ends where an uninterrupted run ends.
- `cross_validate.py` skips finished folds on a rerun; result files are written atomically.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, label_kwargs, speech_like, tiny_backbone_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from ser_inference import predict_waveforms

from modeling import (
    AudioInputError,
    EmotionFeatureExtractor,
    EmotionSSLConfig,
    EmotionSSLForAudioClassification,
)

SR = 16000

# ----------------------------------------------------------------------------------------------
# Property tests: feature extractor and predictor
# ----------------------------------------------------------------------------------------------

DTYPES = ["float16", "float32", "float64", "int16", "int32", "uint8", "bool", "complex64"]


@st.composite
def clips(draw, max_seconds: float, layouts=("1d", "channels_first", "channels_last")) -> np.ndarray:
    """A random clip: any dtype, length 0 to `max_seconds`, mono or (channels, samples) or
    (samples, channels), speech, silence, noise, huge values or a constant, maybe with NaN/inf."""
    dtype = draw(st.sampled_from(DTYPES))
    length = draw(
        st.one_of(
            st.integers(0, 1000),  # empty and shorter than any receptive field
            st.integers(1000, 3 * SR),
            st.integers(3 * SR, int(max_seconds * SR)),
        )
    )
    layout = draw(st.sampled_from(layouts))
    content = draw(st.sampled_from(["speech", "zeros", "noise", "loud", "constant"]))
    corrupt = draw(st.sampled_from([None, None, np.nan, np.inf, -np.inf]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if content == "speech":
        signal = np.resize(speech_like(min(length, 2 * SR) / SR + 1e-3, seed=1), length).astype(np.float64)
    elif content == "noise":
        signal = rng.uniform(-1, 1, length)
    elif content == "loud":
        signal = rng.uniform(-1, 1, length) * 1e30  # finite in float32, but its variance is not
    elif content == "constant":
        signal = np.full(length, 0.7)
    else:
        signal = np.zeros(length)
    if corrupt is not None and length:
        signal[rng.integers(0, length)] = corrupt
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        scaled = np.nan_to_num(np.clip(signal, -1, 1)) * (info.max // 2)
        array = (scaled + (info.max // 2 + 1 if info.min == 0 else 0)).astype(dtype)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            array = signal.astype(dtype)
    if layout == "1d":
        return array
    channels = draw(st.integers(2, 3))
    return np.stack([array] * channels, axis=0 if layout == "channels_first" else 1)


def clip_error(array: np.ndarray) -> str | None:
    """What is wrong with one clip (a substring of the expected message), or None."""
    if array.dtype.kind not in "iuf":
        return "unsupported sample type"
    if array.ndim != 1:
        return "mono waveform"
    if array.size == 0:
        return "empty"
    if not np.isfinite(array).all():
        return "NaN or infinite"
    return None


def extractor_error(array: np.ndarray) -> tuple[int | None, str | None]:
    """(index of the failing clip or None, message substring) for one extractor call."""
    if array.ndim == 2:
        if array.shape[1] <= 8:
            return None, "(samples, channels)"
        for index, row in enumerate(array):
            if clip_error(row):
                return index, clip_error(row)
        return None, None
    return (0, clip_error(array)) if clip_error(array) else (None, None)


def check_readable(error: Exception, expected: str) -> None:
    assert type(error) is AudioInputError
    message = str(error)
    assert 10 < len(message) < 400, message
    assert "\n" not in message
    assert "Traceback" not in message
    assert expected in message, (expected, message)


def check_features(features, lengths: list[int], extractor: EmotionFeatureExtractor) -> None:
    values = features["input_values"]
    assert values.dtype == np.float32
    assert np.isfinite(values).all()
    assert values.shape == (len(lengths), max(max(lengths), extractor.min_samples))
    mask_lengths = features["attention_mask"].sum(-1).tolist()
    assert mask_lengths == [max(n, extractor.min_samples) for n in lengths]
    if extractor.compute_pitch:
        pitch = features["pitch_ids"]
        assert pitch.shape == (len(lengths), extractor.num_frames(values.shape[1]))
        assert pitch.min() >= 0
        assert pitch.max() <= extractor.pitch_bins


RATES = st.sampled_from([None, 8000, 16000, 16000.0, 22050, 44100, 48000, "16000", "abc", float("nan")])


def rate_is_wrong(rate) -> bool:
    try:
        return float(rate) != SR
    except (TypeError, ValueError):
        return rate is not None


def run_extractor(extractor: EmotionFeatureExtractor, clip: np.ndarray, rate) -> None:
    index, expected = extractor_error(clip)
    if rate_is_wrong(rate):
        with pytest.raises(AudioInputError) as caught:
            extractor(clip, sampling_rate=rate)
        check_readable(caught.value, "sampl")
    elif expected:
        with pytest.raises(AudioInputError) as caught:
            extractor(clip, sampling_rate=rate)
        check_readable(caught.value, expected)
        if index is not None:
            assert str(caught.value).startswith(f"clip {index}:")
    else:
        features = extractor(clip, sampling_rate=rate)
        check_features(features, [clip.shape[-1]] * (clip.shape[0] if clip.ndim == 2 else 1), extractor)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clip=clips(max_seconds=240), rate=RATES)
@example(clip=np.resize(speech_like(2.0), 240 * SR), rate=SR)  # always at least one 4-minute clip
@example(clip=(np.resize(speech_like(2.0), 60 * SR) * 32767).astype(np.int16), rate=SR)
def test_feature_extractor_accepts_good_audio_and_refuses_bad_with_audio_input_error(clip, rate):
    run_extractor(EmotionFeatureExtractor(), clip, rate)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clip=clips(max_seconds=4, layouts=("1d", "1d", "channels_last")), hop=st.sampled_from([128, 256]))
def test_feature_extractor_with_pitch_fails_only_with_audio_input_error(clip, hop):
    run_extractor(EmotionFeatureExtractor(compute_pitch=True, hop_length=hop), clip, SR)


def test_feature_extractor_refuses_odd_containers_with_audio_input_error():
    extractor = EmotionFeatureExtractor()
    cases = {
        "a string": ("hello", "unsupported sample type"),
        "None": (None, "unsupported sample type"),
        "a list of strings": (["a", "b"], "unsupported sample type"),
        "a number": (0.5, "single number"),
        "a ragged clip": ([0.1, [0.2, 0.3]], "not an array of samples"),
        "a 3-D array": (np.zeros((1, 2, 800)), "mono waveform"),
        "an empty batch": ([], "empty"),
        "a float64 beyond float32": (np.full(1000, 1e300), "float32 range"),
    }
    for value, expected in cases.values():
        with pytest.raises(AudioInputError) as caught:
            extractor(value, sampling_rate=SR)
        check_readable(caught.value, expected)
    bfloat16 = torch.full((2, 1000), 0.1, dtype=torch.bfloat16)
    assert extractor(bfloat16, sampling_rate=SR)["input_values"].shape == (2, 1000)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = EmotionSSLConfig(
        backbone_config=tiny_backbone_config(), classifier_dropout=0.0, **label_kwargs()
    )
    return EmotionSSLForAudioClassification(config).eval()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(waveforms=st.lists(clips(max_seconds=20, layouts=("1d", "1d", "1d", "channels_first")), max_size=4))
@example(waveforms=[speech_like(20.0), np.zeros(0, np.float32), speech_like(0.01)])
@example(waveforms=[speech_like(20.0), speech_like(0.01), np.zeros(SR, np.int16)])
def test_predictor_refuses_bad_clips_by_index_and_predicts_good_ones(tiny_model, waveforms):
    extractor = EmotionFeatureExtractor(min_samples=400)
    # A list item is one clip: a 2-D item is multi-channel audio, not a batch.
    errors = [clip_error(w) for w in waveforms]
    first_bad = next((i for i, error in enumerate(errors) if error), None)
    if first_bad is not None:
        with pytest.raises(AudioInputError) as caught:
            predict_waveforms(tiny_model, extractor, waveforms, max_batch_size=3)
        check_readable(caught.value, errors[first_bad])
        assert str(caught.value).startswith(f"clip {first_bad}:")
        return
    predictions = predict_waveforms(tiny_model, extractor, waveforms, max_batch_size=3)
    assert len(predictions) == len(waveforms)
    for prediction in predictions:
        assert prediction.logits.shape == (3,)
        assert np.isfinite(prediction.logits).all()


# ----------------------------------------------------------------------------------------------
# A nasty training corpus through train.main
# ----------------------------------------------------------------------------------------------

TINY_BACKBONE = json.dumps(tiny_backbone_config())
SPEAKERS = {"s1": "male", "s2": "female", "s3": "male", "s4": "female"}
EMOTIONS = ("neutral", "angry", "sad")
NON_ASCII = "Ça va très bien, 東京へ行きます"


def write_nasty_corpus(root: Path) -> dict[str, str | None]:
    """An audiofolder corpus: 24 clean clips (4 speakers x 3 emotions x 2) plus one row per kind
    of bad input. Returns file name -> expected skip reason prefix (None: the row must be used)."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, expected = [], {}

    def add(name: str, outcome: str | None, emotion: str = "angry", text: str = "fine", speaker: str = "s2"):
        rows.append({"file_name": f"audio/{name}", "emotion": emotion, "text": text, "speaker": speaker})
        expected[name] = outcome

    for i, (speaker, emotion, take) in enumerate(
        (s, e, t) for s in SPEAKERS for e in EMOTIONS for t in range(2)
    ):
        name = f"{speaker}_{emotion}_{take}.flac"
        sf.write(audio / name, speech_like(0.5, seed=i), SR)
        add(name, None, emotion, "a clean sentence", speaker)

    speech = speech_like(1.0, seed=7)
    (audio / "garbage.flac").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    add("garbage.flac", "undecodable audio")
    sf.write(audio / "whole.flac", speech, SR)
    whole = (audio / "whole.flac").read_bytes()
    (audio / "whole.flac").unlink()
    (audio / "truncated.flac").write_bytes(whole[: len(whole) // 2])
    add("truncated.flac", "undecodable audio", speaker="s3")
    (audio / "zero_bytes.wav").write_bytes(b"")
    add("zero_bytes.wav", "undecodable audio", speaker="s4")
    sf.write(audio / "no_samples.wav", np.zeros(0, np.float32), SR)
    add("no_samples.wav", "empty audio")
    sf.write(audio / "silent.wav", np.zeros(SR, np.float32), SR)
    add("silent.wav", "silent", speaker="s3")
    for value, name in ((np.nan, "nan.wav"), (np.inf, "inf.wav")):
        corrupted = speech.copy()
        corrupted[100:110] = value
        sf.write(audio / name, corrupted, SR, subtype="FLOAT")
        add(name, "NaN/inf samples", speaker="s4")
    sf.write(audio / "too_short.wav", speech[: int(0.05 * SR)], SR)  # < min_duration 0.1 s
    add("too_short.wav", "too short")
    add("unknown_label.flac", "unknown label", emotion="surprised", speaker="s3")
    add("missing_label.flac", "missing label", emotion="", speaker="s4")
    for name in ("unknown_label.flac", "missing_label.flac"):
        sf.write(audio / name, speech, SR)

    sf.write(audio / "clipped.wav", np.clip(speech * 8, -1, 1), SR, subtype="PCM_16")
    add("clipped.wav", None)
    sf.write(audio / "long.flac", np.tile(speech, 20), SR)  # 20 s, max_duration is 1 s
    add("long.flac", None, speaker="s3")
    left, right = (speech_like(1.0, seed=seed, sampling_rate=48000) for seed in (7, 8))
    sf.write(audio / "stereo_48k.flac", np.stack([left, right], axis=1), 48000)
    add("stereo_48k.flac", None, speaker="s4")
    three = np.stack([speech_like(1.0, seed=seed, sampling_rate=22050) for seed in (7, 8, 9)], axis=1)
    sf.write(audio / "three_channel_22k.wav", three, 22050, subtype="PCM_24")
    add("three_channel_22k.wav", None)
    sf.write(audio / "pcm_8k.wav", speech_like(1.0, seed=7, sampling_rate=8000), 8000, subtype="PCM_16")
    add("pcm_8k.wav", None, speaker="s3")
    sf.write(audio / "pcm_u8_44k.wav", speech_like(1.0, seed=7, sampling_rate=44100), 44100, subtype="PCM_U8")
    add("pcm_u8_44k.wav", None, speaker="s4")
    for speaker in SPEAKERS:  # every speaker, so that a training speaker has them
        sf.write(audio / f"{speaker}_empty_text.flac", speech, SR)
        add(f"{speaker}_empty_text.flac", None, text="", speaker=speaker)
        sf.write(audio / f"{speaker}_non_ascii.flac", speech, SR)
        add(f"{speaker}_non_ascii.flac", None, text=NON_ASCII, speaker=speaker)

    with (root / "metadata.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["file_name", "emotion", "text", "speaker", "gender"])
        writer.writeheader()
        writer.writerows({**row, "gender": SPEAKERS[row["speaker"]]} for row in rows)
    return expected


def nasty_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--data_dir", str(corpus),
        "--model_type", "emotion_ssl_ctc",
        "--backbone_config", TINY_BACKBONE,
        "--transcript_column", "text",
        "--speaker_column", "speaker",
        "--gender_column", "gender",
        "--labels", *EMOTIONS,
        "--max_duration", "1.0",
        "--output_dir", str(output_dir),
        "--cache_dir", str(output_dir.parent / "cache"),
        "--max_steps", "2",
        "--per_device_train_batch_size", "8",
        "--report_to", "none",
        *extra,
    ]  # fmt: skip


def file_of(utt_id: str) -> str:
    return utt_id.rsplit("/", 1)[-1]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_nasty_corpus_rows_are_used_or_skipped_with_a_reason(tmp_path, caplog):
    import train
    from ser_batching import TrainTransform

    expected = write_nasty_corpus(tmp_path / "corpus")
    args = nasty_args(tmp_path / "corpus", tmp_path / "out")

    # What prepare_data keeps: resampled, downmixed, full-length (cropping happens per epoch).
    model_args, data_args, training_args = train.parse_arguments(args)
    data = train.prepare_data(data_args, train.build_config(model_args), training_args, uses_ctc=True)
    kept = {}
    for split in ("train", "validation", "test"):
        dataset = getattr(data, split).with_format("numpy")
        for utt, values in zip(dataset["utt_id"], dataset["input_values"]):
            kept[file_of(utt)] = (split, values)
    assert set(kept) == {name for name, outcome in expected.items() if outcome is None}
    for name in ("stereo_48k.flac", "three_channel_22k.wav", "pcm_8k.wav", "pcm_u8_44k.wav"):
        assert len(kept[name][1]) == SR, name  # 1 s at 16 kHz whatever the source rate
    channels = [speech_like(1.0, seed=seed) for seed in (7, 8, 9)]  # different pitch contours
    # FFmpeg downmixes by channel layout, as pipeline() on a file does: both stereo channels are
    # in the mix; an unlabelled 3-channel WAV is read as 2.1 and its LFE channel left out.
    for name in ("stereo_48k.flac", "three_channel_22k.wav"):
        assert correlation(kept[name][1], channels[0]) > 0.5, name
        assert correlation(kept[name][1], channels[1]) > 0.5, name
    assert correlation(kept["pcm_8k.wav"][1], channels[0]) > 0.9
    assert np.abs(kept["clipped.wav"][1]).max() == pytest.approx(1.0, abs=1e-3)
    split, long = kept["long.flac"]
    assert len(long) == 20 * SR
    cropped = TrainTransform(max_samples=SR)({"utt_id": ["x"], "input_values": [long]})["input_values"][0]
    assert len(cropped) == SR

    with caplog.at_level(logging.WARNING, logger="train"):
        results = train.main(args)
    out = tmp_path / "out"
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    reasons = {file_of(row["utt_id"]): row["reason"] for row in skipped}
    assert len(reasons) == len(skipped)  # each row listed once
    assert set(reasons) == {name for name, outcome in expected.items() if outcome is not None}
    for name, reason in reasons.items():
        assert reason.startswith(expected[name]), (name, reason)
    assert "Could not" in reasons["truncated.flac"] or "Invalid data" in reasons["truncated.flac"]
    assert ".cpp" not in reasons["truncated.flac"]  # the decoder's source location is stripped
    assert all(row["split"] in ("train", "validation", "test") for row in skipped)

    summary = results["skipped"]
    assert summary["count"] == len(skipped)
    assert summary["file"] == "skipped.jsonl"
    assert sum(summary["by_reason"].values()) == len(skipped)
    assert set(summary["by_reason"]) == {
        "undecodable audio",
        "empty audio (0 samples)",
        "silent (peak amplitude below 1e-4)",
        "NaN/inf samples",
        "too short",
        "unknown label",
        "missing label",
    }
    used = results["num_train_examples"] + results["num_validation_examples"] + results["num_test_examples"]
    assert used == len(kept)
    assert used + len(skipped) == len(expected)  # nothing else disappeared
    assert f"Skipped {len(skipped)} rows" in caplog.text
    assert json.loads((out / "results.json").read_text())["skipped"] == summary

    vocab = json.loads((out / "vocab.json").read_text())
    assert {"ç", "è", "東", "京"} <= set(vocab)
    assert all(np.isfinite(v) for v in (results["wa"], results["train"]["train_loss"]))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--transcript_column", "sentence", r"transcript_column 'sentence'.*columns are \[.*'text'"),
        ("--gender_column", "sex", r"gender_column 'sex'.*'gender'"),
        ("--labels", "fear", r"labels \['fear'\] do not occur.*'angry'"),
        ("--splits", "dev", r"split\(s\) \['dev'\] not in the dataset.*\['train'\]"),
    ],
)
def test_config_naming_missing_things_fails_before_training(tmp_path, option, value, message):
    import train
    from ser_data import DataConfigError

    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    for i in range(4):
        sf.write(corpus / "audio" / f"{i}.wav", speech_like(0.3, seed=i), SR)
    (corpus / "metadata.csv").write_text(
        "file_name,emotion,text,speaker,gender\n"
        + "".join(f"audio/{i}.wav,{EMOTIONS[i % 3]},hi,s{i},male\n" for i in range(4))
    )
    args = [a for a in nasty_args(corpus, tmp_path / "out") if a not in EMOTIONS and a != "--labels"]
    with pytest.raises(DataConfigError, match=message):
        train.main([*args, option, value])
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Interrupted work resumes
# ----------------------------------------------------------------------------------------------


def write_clean_corpus(root: Path, takes: int = 2, seconds: float = 0.5) -> Path:
    (root / "audio").mkdir(parents=True)
    lines = ["file_name,emotion,text,speaker,gender"]
    for i, (speaker, emotion, take) in enumerate(
        (s, e, t) for s in SPEAKERS for e in EMOTIONS for t in range(takes)
    ):
        name = f"audio/{speaker}_{emotion}_{take}.flac"
        sf.write(root / name, speech_like(seconds, seed=i) * (1.5 if emotion == "angry" else 1.0), SR)
        lines.append(f"{name},{emotion},a clean sentence,{speaker},{SPEAKERS[speaker]}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


# Runs train.main and SIGKILLs its own process right after optimizer step SER_KILL_AT_STEP.
KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, "scripts")
import train
from transformers import TrainerCallback

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["SER_KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

build_trainer = train.build_trainer
def build_and_kill(*args, **kwargs):
    trainer = build_trainer(*args, **kwargs)
    trainer.add_callback(Kill())
    return trainer
train.build_trainer = build_and_kill
train.main(sys.argv[1:])
"""


def resume_args(corpus: Path, output_dir: Path) -> list[str]:
    # 2 training speakers x 6 clips, batch 3: 4 steps per epoch, 12 steps; checkpoints every 2
    # steps, so checkpoint-6 is in the middle of epoch 2. Dropout, augmentation, random crops and
    # the shuffled sampler all draw random numbers that a resumed run must reproduce.
    return [
        "--data_dir", str(corpus),
        "--model_type", "emotion_ssl",
        "--backbone_config", TINY_BACKBONE,
        "--model_config", json.dumps({"classifier_dropout": 0.3}),
        "--speaker_column", "speaker",
        "--gender_column", "gender",
        "--output_dir", str(output_dir),
        "--cache_dir", str(output_dir) + "_cache",
        "--seed", "7",
        "--num_train_epochs", "3",
        "--per_device_train_batch_size", "3",
        "--learning_rate", "3e-3",
        "--max_duration", "0.3",
        "--augmentations", json.dumps([{"name": "gain", "p": 0.5}, {"name": "colored_noise", "p": 0.5}]),
        "--eval_strategy", "steps",
        "--eval_steps", "2",
        "--save_strategy", "steps",
        "--save_steps", "2",
        "--save_total_limit", "2",
        "--logging_steps", "1",
        "--report_to", "none",
    ]  # fmt: skip


def start(command: list[str], **env: str) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    environment.pop("HF_TOKEN", None)
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def step_losses(output_dir: Path) -> dict[int, float]:
    state = json.loads((output_dir / "checkpoint-12" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    corpus = write_clean_corpus(tmp_path / "corpus")
    train_py = str(ROOT / "scripts" / "train.py")
    full, killed = tmp_path / "full", tmp_path / "killed"
    uninterrupted = start([sys.executable, train_py, *resume_args(corpus, full)])
    victim = start([sys.executable, "-c", KILLED_RUN, *resume_args(corpus, killed)], SER_KILL_AT_STEP="7")
    code, output = finish(victim)
    assert code == -signal.SIGKILL, output[-3000:]
    checkpoints = {p.name for p in killed.glob("checkpoint-*")}
    assert "checkpoint-6" in checkpoints  # the last one; save_total_limit may keep the best as well
    assert not {"checkpoint-8", "checkpoint-10", "checkpoint-12"} & checkpoints
    assert not (killed / "results.json").exists()

    resumed = start(
        [
            sys.executable,
            train_py,
            *resume_args(corpus, killed),
            "--resume_from_checkpoint",
            "last",
            "--log_level",
            "info",
        ]
    )
    code, resumed_output = finish(resumed)
    assert code == 0, resumed_output[-3000:]
    assert f"Resuming from {killed / 'checkpoint-6'}" in resumed_output
    code, output = finish(uninterrupted)
    assert code == 0, output[-3000:]

    a, b = (json.loads((d / "results.json").read_text()) for d in (full, killed))
    for key in ("wa", "ua", "macro_f1", "confusion_matrix"):
        assert a[key] == b[key], key
        assert a["validation"][key] == b["validation"][key], key
    assert step_losses(full) == step_losses(killed)  # every step, before and after the kill
    assert len(step_losses(full)) == 12
    probabilities = [(d / "predictions_test.jsonl").read_text() for d in (full, killed)]
    assert probabilities[0] == probabilities[1]
    weights = [load_file(d / "model.safetensors") for d in (full, killed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cross_validate_rerun_skips_finished_folds_and_resumes_unfinished(tmp_path, monkeypatch):
    import cross_validate
    import train

    corpus = write_clean_corpus(tmp_path / "corpus")
    out = tmp_path / "cv"
    argv = nasty_args(corpus, out, "--folds", "0,1")
    argv = [a for a in argv if a not in EMOTIONS and a not in ("--labels", "--model_type", "emotion_ssl_ctc")]
    argv += ["--model_type", "emotion_ssl"]  # 12 training clips, batch 8: checkpoint-2 ends epoch 1
    calls = []
    real_main = train.main
    monkeypatch.setattr(train, "main", lambda args: calls.append(args) or real_main(args))
    first = cross_validate.main(argv)
    assert len(calls) == 2
    assert [fold["fold"] for fold in first["folds"]] == [0, 1]

    # Rerun with everything finished: no training at all, the same pooled results.
    calls.clear()
    again = cross_validate.main(argv)
    assert calls == []
    assert again["pooled"] == first["pooled"]
    assert again["folds"] == first["folds"]

    # Fold 1 lost its results (killed before writing them; or a damaged copy): it alone reruns,
    # resuming from its last checkpoint instead of starting over.
    (out / "fold_1" / "results.json").write_text('{"wa": 0.5, "ua"')
    checkpoint = out / "fold_1" / "checkpoint-2" / "model.safetensors"
    saved_at = checkpoint.stat().st_mtime_ns
    calls.clear()
    resumed = cross_validate.main(argv)
    assert len(calls) == 1
    assert "fold_1" in calls[0][calls[0].index("--output_dir") + 1]
    assert resumed["folds"] == first["folds"]
    assert checkpoint.stat().st_mtime_ns == saved_at  # resumed at max_steps: no step retrained
    assert sorted(p.name for p in (out / "fold_1").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not list(out.rglob("*.tmp"))
    assert (out / "cv_results.md").read_text().startswith("# Cross-validation: emotion_ssl")


def test_atomic_writes_leave_the_old_file_or_the_new_one_never_a_part(tmp_path, monkeypatch):
    import ser_metrics

    target = tmp_path / "results.json"
    ser_metrics.write_json_atomic(target, {"ua": 0.5})
    with pytest.raises(TypeError):
        ser_metrics.write_json_atomic(target, {"ua": 0.7, "bad": object()})  # fails mid-serialisation
    assert json.loads(target.read_text()) == {"ua": 0.5}

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ser_metrics.os, "fsync", crash)  # fails after part of the file is written
    with pytest.raises(OSError, match="disk full"):
        ser_metrics.write_json_atomic(target, {"ua": 0.9, "rows": list(range(100000))})
    with pytest.raises(OSError, match="disk full"):
        ser_metrics.write_jsonl_atomic(tmp_path / "rows.jsonl", [{"a": 1}] * 1000)
    assert json.loads(target.read_text()) == {"ua": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary files left
