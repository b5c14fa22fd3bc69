"""Families 1 and 2: SSL-backbone classifier and multi-task SER + CTC."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import VOCAB, label_kwargs, run_remote_check, speech_like, tiny_backbone_config
from transformers import (
    AutoConfig,
    AutoModel,
    HubertModel,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2ForPreTraining,
    WavLMModel,
)

from modeling import (
    EmotionCTCConfig,
    EmotionCTCForAudioClassification,
    EmotionFeatureExtractor,
    EmotionProcessor,
    EmotionSSLConfig,
    EmotionSSLForAudioClassification,
)


def make_model(family: str, backbone: str = "wav2vec2", **overrides):
    torch.manual_seed(0)
    common = {"backbone_config": tiny_backbone_config(backbone), "classifier_dropout": 0.0, **label_kwargs()}
    common.update(overrides)
    if family == "ssl":
        return EmotionSSLForAudioClassification(EmotionSSLConfig(**common))
    return EmotionCTCForAudioClassification(EmotionCTCConfig(vocab_size=len(VOCAB), **common))


def make_tokenizer(tmp_path) -> Wav2Vec2CTCTokenizer:
    vocab_file = tmp_path / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    return Wav2Vec2CTCTokenizer(str(vocab_file))


def batch(extractor, seconds=(1.0, 0.6, 0.8)):
    clips = [speech_like(s, seed=i) for i, s in enumerate(seconds)]
    return clips, extractor(clips, sampling_rate=16000, return_tensors="pt")


@pytest.mark.parametrize("family", ["ssl", "ssl_ctc"])
@pytest.mark.parametrize("pooling", ["mean", "attentive_statistics"])
def test_forward_backward_and_loss_decreases(family, pooling):
    model = make_model(family, pooling=pooling, use_weighted_layer_sum=pooling == "mean")
    extractor = EmotionFeatureExtractor()
    _, features = batch(extractor)
    labels = torch.tensor([0, 1, 2])
    extra = {}
    if family == "ssl_ctc":
        extra["ctc_labels"] = torch.tensor([[5, 6, 7, 4, 8], [9, 10, -100, -100, -100], [-100] * 5])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(15):
        out = model(**features, labels=labels, **extra)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    assert out.logits.shape == (3, 3)
    if family == "ssl_ctc":
        assert out.ctc_logits.shape[-1] == len(VOCAB)
        weighted = out.emotion_loss + model.config.ctc_weight * out.ctc_loss
        assert torch.allclose(out.loss, weighted)


def test_ctc_ignores_clips_without_transcript():
    model = make_model("ssl_ctc").eval()
    _, features = batch(EmotionFeatureExtractor())
    only_first = torch.tensor([[5, 6, 7], [-100] * 3, [-100] * 3])
    first_alone = model(
        input_values=features["input_values"][:1],
        attention_mask=features["attention_mask"][:1],
        ctc_labels=only_first[:1],
    ).ctc_loss
    with_empty = model(**features, ctc_labels=only_first).ctc_loss
    assert torch.allclose(first_alone, with_empty, atol=1e-5)
    nothing = model(**features, ctc_labels=torch.full((3, 3), -100)).ctc_loss
    assert nothing.item() == 0.0


@pytest.mark.parametrize("family", ["ssl", "ssl_ctc"])
@pytest.mark.parametrize("backbone", ["wav2vec2", "hubert", "wavlm"])
def test_padding_does_not_change_predictions(family, backbone):
    model = make_model(family, backbone=backbone, pooling="attentive_statistics").eval()
    assert model.is_padding_invariant
    extractor = EmotionFeatureExtractor()
    clips, features = batch(extractor, seconds=(1.3, 0.5, 0.9))
    with torch.no_grad():
        batched = model(**features).logits
        for i, clip in enumerate(clips):
            alone = model(**extractor(clip, sampling_rate=16000, return_tensors="pt")).logits[0]
            assert torch.allclose(alone, batched[i], atol=1e-4), (i, alone, batched[i])


def test_group_norm_backbone_is_flagged_not_padding_invariant():
    config = EmotionSSLConfig(
        backbone_config=tiny_backbone_config(feat_extract_norm="group"), **label_kwargs()
    )
    assert not EmotionSSLForAudioClassification(config).is_padding_invariant


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ssl", "ssl_ctc"])
def test_save_and_load_with_remote_code_outside_repo(family, tmp_path):
    model = make_model(family, pooling="attentive_statistics").eval()
    extractor = EmotionFeatureExtractor()
    out_dir = tmp_path / "model"
    model.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    if family == "ssl_ctc":
        EmotionProcessor(extractor, make_tokenizer(tmp_path)).save_pretrained(out_dir)
    saved = sorted(p.name for p in out_dir.iterdir())
    assert "model.safetensors" in saved
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in saved)
    config = json.loads((out_dir / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForAudioClassification"}
    assert config["id2label"] == {"0": "neutral", "1": "angry", "2": "sad"}

    clips = [speech_like(0.7, seed=3), speech_like(1.1, seed=4)]
    audio_file = tmp_path / "clip.wav"
    sf.write(audio_file, clips[0], 16000)
    report = run_remote_check(
        out_dir, clips, tmp_path / "remote", {"audio_file": str(audio_file), "processor": family == "ssl_ctc"}
    )
    assert report["module"].startswith("transformers_modules.")
    with torch.no_grad():
        for clip, remote in zip(clips, report["logits"]):
            local = model(**extractor(clip, sampling_rate=16000, return_tensors="pt")).logits[0]
            assert np.allclose(local.numpy(), remote, atol=1e-5)
    for prediction in report["pipeline"]:
        assert {p["label"] for p in prediction} == set(model.config.id2label.values())
        assert abs(sum(p["score"] for p in prediction) - 1.0) < 1e-4
    top_from_logits = model.config.id2label[int(np.argmax(report["logits"][0]))]
    assert report["pipeline"][0][0]["label"] == top_from_logits
    assert report["pipeline_file"][0]["label"] == top_from_logits
    if family == "ssl_ctc":
        assert isinstance(report["transcripts"][0], str)


@pytest.mark.parametrize("backbone", ["wav2vec2", "hubert", "wavlm"])
@pytest.mark.parametrize("family", ["ssl", "ssl_ctc"])
def test_pretrained_backbone_loads_without_missing_or_unexpected_keys(backbone, family, tmp_path):
    torch.manual_seed(1)
    backbone_config = AutoConfig.for_model(**tiny_backbone_config(backbone, feat_extract_norm="group"))
    checkpoint_classes = {"wav2vec2": Wav2Vec2ForPreTraining, "hubert": HubertModel, "wavlm": WavLMModel}
    if backbone == "wav2vec2":  # facebook/wav2vec2-base is a pre-training checkpoint with quantizer
        backbone_config.codevector_dim = backbone_config.proj_codevector_dim = 16
        backbone_config.num_codevectors_per_group = 8
    checkpoint = checkpoint_classes[backbone](backbone_config)
    checkpoint.save_pretrained(tmp_path / "pretrained")

    model_class = EmotionSSLForAudioClassification if family == "ssl" else EmotionCTCForAudioClassification
    extra = {} if family == "ssl" else {"vocab_size": len(VOCAB)}
    model = model_class.from_pretrained_backbone(str(tmp_path / "pretrained"), **label_kwargs(), **extra)
    reference = AutoModel.from_pretrained(tmp_path / "pretrained")
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert set(model.backbone.state_dict()) == set(reference.state_dict())

    other = make_model(family, backbone="hubert" if backbone != "hubert" else "wav2vec2")
    with pytest.raises(ValueError, match="checkpoint but this model's backbone"):
        other.load_pretrained_backbone(str(tmp_path / "pretrained"))


def test_gradient_checkpointing_matches_plain_gradients():
    extractor = EmotionFeatureExtractor()
    _, features = batch(extractor)
    grads = []
    for checkpointing in (False, True):
        model = make_model("ssl_ctc")
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.backbone.encoder.gradient_checkpointing
        out = model(**features, labels=torch.tensor([0, 1, 2]))
        out.loss.backward()
        grads.append(model.backbone.encoder.layers[0].attention.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_freeze_feature_encoder():
    model = make_model("ssl")
    model.freeze_feature_encoder()
    _, features = batch(EmotionFeatureExtractor())
    model(**features, labels=torch.tensor([0, 1, 2])).loss.backward()
    conv = model.backbone.feature_extractor.conv_layers[0].conv.weight
    assert not conv.requires_grad
    assert conv.grad is None
    assert model.classifier.dense.weight.grad is not None
    assert model.backbone.encoder.layers[0].attention.q_proj.weight.grad is not None
