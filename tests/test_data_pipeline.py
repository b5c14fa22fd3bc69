"""Unit and property tests of the data pipeline: folds, labels, column derivation, augmentation,
batching and metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ser_augment
from conftest import speech_like
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from ser_batching import EmotionDataCollator, TrainTransform
from ser_data import (
    AudioSettings,
    DataConfigError,
    _derive,
    build_vocab,
    check_waveform,
    normalize_transcript,
    resolve_labels,
)
from ser_folds import make_fold, num_folds, speaker_groups
from ser_inference import plan_batches
from ser_metrics import classification_metrics, transcription_metrics, write_json_atomic

from modeling import EmotionFeatureExtractor

speaker_lists = st.lists(st.sampled_from([f"s{i:02d}" for i in range(14)]), min_size=4, max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    speakers=speaker_lists,
    validation=st.integers(0, 2),
    seed=st.integers(0, 5),
    groups=st.sampled_from([None, 2, 3]),
)
def test_loso_folds_never_share_speakers(speakers, validation, seed, groups):
    unique = sorted(set(speakers))
    if len(unique) < 2 + validation + (groups is not None):
        return
    genders = {s: "female" if int(s[1:]) % 2 else "male" for s in unique}
    total = num_folds("loso", speakers, speaker_folds=groups)
    tested = set()
    for fold in range(total):
        group = speaker_groups(unique, groups, genders)[fold]
        kwargs = {"num_validation_speakers": validation, "seed": seed, "speaker_folds": groups}
        tested |= group
        if validation >= len(unique) - len(group):
            with pytest.raises(ValueError, match="leaves no training speaker"):
                make_fold("loso", fold, speakers, genders, **kwargs)
            continue
        f = make_fold("loso", fold, speakers, genders, **kwargs)
        assert f.test == group
        assert not f.train & f.test
        assert not f.validation & (f.train | f.test)
        assert f.train | f.validation | f.test == set(unique)
        assert f.train
        assert len(f.validation) == validation
    assert tested == set(unique)  # every speaker is tested exactly once over the folds


@settings(max_examples=40, deadline=None)
@given(num_sessions=st.integers(2, 6), per_session=st.integers(2, 3), validation=st.integers(0, 2))
def test_loso_session_folds_never_share_speakers(num_sessions, per_session, validation):
    sessions = {
        f"Ses{i}{g}": str(i) for i in range(num_sessions) for g in "MF"[:per_session] + "X"[: per_session - 2]
    }
    speakers = list(sessions)
    for fold in range(num_folds("loso_session", speakers, sessions)):
        if validation >= len(speakers) - per_session:
            with pytest.raises(ValueError, match="leaves no training speaker"):
                make_fold(
                    "loso_session", fold, speakers, sessions=sessions, num_validation_speakers=validation
                )
            continue
        f = make_fold("loso_session", fold, speakers, sessions=sessions, num_validation_speakers=validation)
        assert {sessions[s] for s in f.test} == {str(sorted(set(sessions.values()))[fold])}
        assert not f.validation & (f.train | f.test)
        assert not {sessions[s] for s in f.train} & {sessions[s] for s in f.test}


def test_speaker_groups_mix_genders():
    genders = {f"s{i}": "male" if i % 2 else "female" for i in range(8)}
    groups = speaker_groups(list(genders), 4, genders)
    assert all(sorted(genders[s] for s in group) == ["female", "male"] for group in groups)
    assert set().union(*groups) == set(genders)


def test_validation_speakers_alternate_genders():
    speakers = ["a", "b", "c", "d", "e", "f"]
    genders = {"a": "male", "b": "male", "c": "male", "d": "female", "e": "female", "f": "female"}
    fold = make_fold("loso", 0, speakers, genders, num_validation_speakers=2)
    assert sorted(genders[s] for s in fold.validation) == ["female", "male"]


def test_speaker_dependent_protocol_is_marked():
    dialogues = [f"Ses01F_impro0{i % 5}" for i in range(50)]
    fold = make_fold("speaker_dependent_dialogue_10fold", 3, ["x"] * 50, dialogues=dialogues)
    assert fold.unit == "dialogue"
    assert not fold.speaker_independent
    assert fold.describe()["speaker_independent"] is False


def test_label_mapping_merges_and_reports_real_values():
    ds = Dataset.from_dict({"emotion": ["neutral", "excited", "happy", "sad", "frustrated", None]})
    labels, mapping = resolve_labels(ds, {"excited": "happy"}, ["neutral", "happy", "sad"])
    assert labels == ["neutral", "happy", "sad"]
    assert mapping["excited"] == "happy"
    with pytest.raises(DataConfigError, match=r"'excited': 1, 'frustrated': 1, 'happy': 1"):
        resolve_labels(ds, None, ["angry"])
    with pytest.raises(DataConfigError, match="label_map names values"):
        resolve_labels(ds, {"joy": "happy"}, None)


def test_regex_derivation_of_iemocap_speaker_and_session():
    derive = json.loads((__import__("conftest").ROOT / "configs" / "iemocap_ctc.json").read_text())[
        "derive_columns"
    ]
    values = _derive({"file": "Ses03M_script01_2_F014.wav"}, derive)
    assert values["speaker"] == "Ses3F"
    assert values["session"] == "3"
    assert values["dialogue"] == "Ses3M_script01_2"
    assert _derive({"file": "unrelated.wav"}, derive) == {}
    audio_path = _derive(
        {"audio": {"path": "/x/wangzhe/angry/201.wav"}},
        {"source": "audio", "pattern": r"(?P<speaker>[^/]+)/(?P<emotion>\w+)/[^/]+$"},
    )
    assert audio_path == {"speaker": "wangzhe", "emotion": "angry"}


def test_transcripts_normalise_and_vocab_has_blank_first():
    assert normalize_transcript("  Hello, WORLD!  It's   fine. ") == "hello world it's fine"
    assert normalize_transcript("Grüße – 你好!") == "grüße 你好"
    vocab = build_vocab(["abc", "Cab!", "你好"])
    assert vocab["<pad>"] == 0
    assert vocab["|"] == 4
    assert {"a", "b", "c", "你", "好"} <= set(vocab)


def test_waveform_checks_give_reasons():
    settings_ = AudioSettings(min_samples=1600)
    assert check_waveform(np.zeros(0, np.float32), settings_).startswith("empty")
    assert "NaN" in check_waveform(np.array([0.1, np.nan] * 1000, np.float32), settings_)
    assert check_waveform(np.zeros(4000, np.float32), settings_).startswith("silent")
    assert check_waveform(np.full(100, 0.5, np.float32), settings_).startswith("too short")
    assert check_waveform(np.clip(speech_like(0.5) * 10, -1, 1), settings_) is None  # clipped speech is kept


def test_augmentation_keeps_f0_aligned():
    augmenter = ser_augment.Augmenter(
        ser_augment.build_augmentations(
            [{"name": "pitch_shift", "p": 1.0, "min_semitones": 12, "max_semitones": 12}]
        )
    )
    waveform = speech_like(1.0)
    f0 = np.full(1 + 16000 // 256, 150.0, np.float32)
    shifted, new_f0 = augmenter(waveform, f0)
    assert np.allclose(new_f0, 300.0)
    extractor = EmotionFeatureExtractor(hop_length=256)
    measured = extractor.extract_f0(shifted)
    original = extractor.extract_f0(waveform)
    voiced = (measured > 0) & (original > 0)
    assert np.median(measured[voiced] / original[voiced]) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="Unknown augmentation 'reverb'"):
        ser_augment.build_augmentations([{"name": "reverb"}])


def test_train_transform_is_deterministic_per_epoch_and_crops_aligned():
    transform = TrainTransform(max_samples=8000, hop_length=256, seed=1)
    batch = {
        "utt_id": ["a", "b"],
        "input_values": [speech_like(2.0), speech_like(0.3)],
        "f0": [np.arange(126.0), np.arange(19.0)],
    }
    first = transform(dict(batch))
    again = transform(dict(batch))
    assert np.array_equal(first["input_values"][0], again["input_values"][0])
    assert len(first["input_values"][0]) == 8000
    assert len(first["input_values"][1]) == 4800  # short clips are not padded or cropped
    start_frame = first["f0"][0][0]
    start_sample = np.flatnonzero(np.isclose(speech_like(2.0), first["input_values"][0][0]))
    assert start_frame * 256 in start_sample
    transform.epoch = 1
    assert not np.array_equal(transform(dict(batch))["input_values"][0], first["input_values"][0])


def test_collator_pads_ctc_labels_and_maps_speakers():
    from transformers import Wav2Vec2CTCTokenizer

    collator = EmotionDataCollator(
        feature_extractor=EmotionFeatureExtractor(),
        tokenizer=None,
        speaker_to_id={"s1": 0},
        return_speaker_labels=True,
    )
    rows = [
        {"input_values": speech_like(0.5), "label": 1, "speaker": "s1", "gender": "male"},
        {"input_values": speech_like(0.3), "label": 0, "speaker": "unseen", "gender": "female"},
    ]
    batch = collator(rows)
    assert batch["input_values"].shape == (2, 8000)
    assert batch["attention_mask"].sum(-1).tolist() == [8000, 4800]
    assert batch["speaker_labels"].tolist() == [0, -100]
    assert batch["labels"].tolist() == [1, 0]
    _ = Wav2Vec2CTCTokenizer  # CTC label padding is covered by test_train's CTC run


def test_metrics_and_atomic_json(tmp_path):
    metrics = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1], ["a", "b"])
    assert metrics["wa"] == 0.75
    assert metrics["ua"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["confusion_matrix"] == [[2, 1], [0, 1]]
    assert transcription_metrics(["a b", ""], ["a c", "x"]) == {"wer": 0.5, "cer": pytest.approx(1 / 3)}
    write_json_atomic(tmp_path / "r.json", {"x": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_batches_are_length_bucketed_and_capped():
    lengths = [100, 5000, 300, 4800, 200, 60000]
    batches = plan_batches(lengths, max_batch_size=2, max_batch_samples=10000)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [5]  # the long clip is alone
    for batch in batches:
        assert len(batch) <= 2
        assert max(lengths[i] for i in batch) * len(batch) <= 10000 or len(batch) == 1
