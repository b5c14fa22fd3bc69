"""Tiny saved models and fake `train.py` output directories for the publishing and Space tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import VOCAB, label_kwargs, tiny_backbone_config
from transformers import Wav2Vec2CTCTokenizer

from modeling import (
    EmotionCTCConfig,
    EmotionCTCForAudioClassification,
    EmotionFeatureExtractor,
    EmotionProcessor,
)


def save_tiny_ctc_model(out_dir: Path, seed: int = 0) -> EmotionCTCForAudioClassification:
    """A 2-layer SER + CTC model with its feature extractor and processor, as train.py saves them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = EmotionCTCConfig(
        backbone_config=tiny_backbone_config(),
        vocab_size=len(VOCAB),
        classifier_dropout=0.0,
        **label_kwargs(),
    )
    model = EmotionCTCForAudioClassification(config).eval()
    model.save_pretrained(out_dir)
    vocab_file = out_dir / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    extractor = EmotionFeatureExtractor()
    extractor.save_pretrained(out_dir)
    EmotionProcessor(extractor, tokenizer).save_pretrained(out_dir)
    return model


def fake_results(labels: list[str], fold: int, wa: float, ua: float, validation_ua: float) -> dict:
    """results.json as train.py writes it (loso_session, speaker-independent, CTC metrics)."""
    sessions = ["Ses01", "Ses02", "Ses03"]
    test = [f"{sessions[fold]}F", f"{sessions[fold]}M"]
    validation = [f"{sessions[(fold + 1) % 3]}F"]
    train = sorted({f"{s}{g}" for s in sessions for g in "FM"} - set(test) - set(validation))
    confusion = [[5, 1, 0], [2, 3, 1], [0, 1, 4]]
    return {
        "wa": wa,
        "ua": ua,
        "macro_f1": ua - 0.01,
        "num_examples": 17,
        "per_class": {},
        "confusion_matrix": confusion,
        "labels": labels,
        "wer": 0.75,
        "cer": 0.5,
        "validation": {
            "wa": validation_ua,
            "ua": validation_ua,
            "macro_f1": validation_ua,
            "num_examples": 9,
        },
        "protocol": {
            "protocol": "loso_session",
            "speaker_independent": True,
            "fold": fold,
            "num_folds": 3,
            "unit": "speaker",
            "train": train,
            "validation": validation,
            "test": test,
        },
        "speaker_independent": True,
        "transductive": False,
        "model_type": "emotion_ssl_ctc",
        "skipped": {"count": 0, "by_reason": {}, "file": "skipped.jsonl"},
        "train": {"train_loss": 1.0},
    }
