"""Families 3 and 4: decomposed-speech multi-task SER and SpeechSplit decomposition pre-training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_DECOMPOSITION, label_kwargs, run_remote_check, speech_like, tiny_backbone_config
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, Wav2Vec2ForPreTraining, WavLMModel

from modeling import (
    DecomposedEmotionConfig,
    DecomposedEmotionForAudioClassification,
    EmotionFeatureExtractor,
    SpeechDecompositionConfig,
    SpeechDecompositionModel,
)
from modeling.decomposition_layers import (
    MaskedGroupNorm,
    RandomResampling,
    downsample_codes,
    interpolate_frames,
    upsample_codes,
)

TINY = {
    **TINY_DECOMPOSITION,
    "timbre_encoder_layers": 2,
    "decoder_lstm_size": 16,
    "content_downsample": 4,
    "pitch_downsample": 4,
    "rhythm_downsample": 4,
}
SPEAKERS = {0: "spk_a", 1: "spk_b", 2: "spk_c"}
ALL_LABELS = {
    "labels": torch.tensor([0, 1, 2]),
    "speaker_labels": torch.tensor([0, 1, -100]),
    "ctc_labels": torch.tensor([[5, 6, 7, 4, 8], [9, 10, -100, -100, -100], [-100] * 5]),
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small LSTMs run step by step; on a shared 2-core machine one intra-op thread is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_stage1(**overrides) -> SpeechDecompositionModel:
    torch.manual_seed(0)
    return SpeechDecompositionModel(
        SpeechDecompositionConfig(**{**TINY, **label_kwargs(SPEAKERS), **overrides})
    )


def make_stage2(backbone: str = "wav2vec2", **overrides) -> DecomposedEmotionForAudioClassification:
    torch.manual_seed(0)
    kwargs = {
        **TINY,
        "backbone_config": tiny_backbone_config(backbone),
        "classifier_dropout": 0.0,
        "ctc_dropout": 0.0,
        "num_speakers": len(SPEAKERS),
        **label_kwargs(),
        **overrides,
    }
    return DecomposedEmotionForAudioClassification(DecomposedEmotionConfig(**kwargs))


def make_model(family: str, **overrides):
    return make_stage1(**overrides) if family == "stage1" else make_stage2(**overrides)


def extractor_for(model) -> EmotionFeatureExtractor:
    return EmotionFeatureExtractor(**model.config.feature_extractor_kwargs())


def batch(model, seconds=(0.6, 0.35, 0.5)):
    extractor = extractor_for(model)
    clips = [speech_like(s, seed=i) for i, s in enumerate(seconds)]
    return clips, extractor(clips, sampling_rate=16000, return_tensors="pt")


def labels_for(family: str) -> dict:
    if family == "stage1":
        return {"speaker_labels": ALL_LABELS["speaker_labels"]}
    return dict(ALL_LABELS)


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


def test_masked_group_norm_matches_group_norm_and_ignores_padding():
    torch.manual_seed(0)
    norm = MaskedGroupNorm(2, 8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    reference = nn.GroupNorm(2, 8)
    reference.load_state_dict(norm.state_dict())
    hidden = torch.randn(1, 10, 8)
    full = torch.ones(1, 10, dtype=torch.bool)
    expected = reference(hidden.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(norm(hidden, full), expected, atol=1e-5)
    padded = torch.cat([hidden, 100 * torch.randn(1, 5, 8)], dim=1)
    mask = torch.arange(15).unsqueeze(0) < 10
    out = norm(padded, mask)
    assert torch.allclose(out[:, :10], expected, atol=1e-5)
    assert (out[:, 10:] == 0).all()


def test_code_down_and_upsampling_follow_speechsplit():
    outputs = torch.arange(2 * 10 * 4, dtype=torch.float32).view(2, 10, 4)
    lengths = torch.tensor([10, 6])
    codes = downsample_codes(outputs, lengths, factor=4)
    assert codes.shape == (2, 3, 4)
    # forward half (first 2 units) at frames 3, 7 and the clip's last frame; backward half at 0, 4, 8.
    assert torch.equal(codes[0, :, :2], outputs[0, [3, 7, 9], :2])
    assert torch.equal(codes[0, :, 2:], outputs[0, [0, 4, 8], 2:])
    assert torch.equal(codes[1, :2, :2], outputs[1, [3, 5], :2])
    assert torch.equal(codes[1, :2, 2:], outputs[1, [0, 4], 2:])
    assert (codes[1, 2] == 0).all()
    frames = upsample_codes(codes, 4, lengths, 10)
    assert torch.equal(frames[0, 4:8], codes[0, 1].expand(4, -1))
    assert (frames[1, 6:] == 0).all()
    assert torch.equal(frames[1, 4:6], codes[1, 1].expand(2, -1))


def test_interpolate_frames_matches_per_clip_interpolation():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 3)
    lengths, targets = torch.tensor([9, 5]), torch.tensor([12, 7])
    out = interpolate_frames(hidden, lengths, targets, 12)
    for i in range(2):
        clip = hidden[i, : lengths[i]].T.unsqueeze(0)
        expected = F.interpolate(clip, size=int(targets[i]), mode="linear", align_corners=False)[0].T
        assert torch.allclose(out[i, : targets[i]], expected, atol=1e-6)
    assert (out[1, 7:] == 0).all()


def test_random_resampling_reads_only_valid_frames_and_keeps_lengths():
    resampling = RandomResampling(min_segment=3, max_segment=6).train()
    hidden = torch.randn(2, 40, 4)
    lengths = torch.tensor([40, 25])
    hidden[1, 25:] = float("nan")
    torch.manual_seed(0)
    out = resampling(hidden, lengths)
    assert out.shape == hidden.shape
    assert not torch.isnan(out).any()
    assert (out[1, 25:] == 0).all()
    assert not torch.allclose(out[0], hidden[0])
    identity = RandomResampling(min_segment=3, max_segment=6, min_scale=1.0, max_scale=1.0).train()
    assert torch.equal(identity(hidden, lengths)[0], hidden[0])
    assert torch.equal(identity(hidden, lengths)[1, :25], hidden[1, :25])
    assert resampling.eval()(hidden, lengths) is hidden


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["stage1", "stage2"])
def test_forward_backward_and_loss_decreases(family):
    model = make_model(family)
    _, features = batch(model)
    labels = labels_for(family)
    model.train()
    out = model(**features, **labels)
    out.loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2 if family == "stage1" else 5e-3)
    losses = []
    for _ in range(15):
        out = model(**features, **labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    frames = features["pitch_ids"].shape[1]
    assert out.reconstruction.shape == (3, frames, TINY["n_mels"])
    if family == "stage1":
        assert out.logits.shape == (3, len(SPEAKERS))
        assert out.content_codes.shape == (3, -(-frames // 4), 2 * TINY["content_lstm_size"])
    else:
        assert out.logits.shape == (3, 3)
        assert out.speaker_logits.shape == (3, len(SPEAKERS))
        assert out.ctc_logits.shape[-1] == model.config.vocab_size


def test_stage2_component_losses_and_weight_switches():
    weights = {"ctc_weight": 0.3, "reconstruction_weight": 2.0, "speaker_weight": 0.5}
    model = make_stage2(**weights).eval()
    _, features = batch(model)
    out = model(**features, **ALL_LABELS)
    terms = [out.emotion_loss, out.ctc_loss, out.reconstruction_loss, out.speaker_loss]
    assert all(term is not None and term.item() > 0 for term in terms)
    expected = out.emotion_loss + 0.3 * out.ctc_loss + 2.0 * out.reconstruction_loss + 0.5 * out.speaker_loss
    assert torch.allclose(out.loss, expected)

    switched = {
        "ctc_weight": ("ctc_loss", "ctc_head"),
        "reconstruction_weight": ("reconstruction_loss", "decoder"),
        "speaker_weight": ("speaker_loss", "speaker_head"),
    }
    for weight, (term, module) in switched.items():
        off = make_stage2(**{**weights, weight: 0.0}).eval()
        owner = off.decomposition if module == "decoder" else off
        assert not hasattr(owner, module), weight
        result = off(**features, **ALL_LABELS)
        assert getattr(result, term) is None, weight
        kept = [(1.0, result.emotion_loss)] + [
            (weights[w], getattr(result, t)) for w, (t, _) in switched.items() if w != weight
        ]
        assert torch.allclose(result.loss, sum(w * t for w, t in kept)), weight

    # Without the decoder only the encoders the emotion head reads are built; no pitch encoder,
    # so pitch_ids are not needed.
    rhythm_only = make_stage2(reconstruction_weight=0.0, speaker_weight=0.0, emotion_code_inputs=["rhythm"])
    assert not rhythm_only.decomposition.has("content")
    assert not rhythm_only.decomposition.has("pitch")
    assert not rhythm_only.decomposition.has("timbre")
    reduced = {k: v for k, v in features.items() if k != "pitch_ids"}
    assert rhythm_only(**reduced, labels=ALL_LABELS["labels"]).loss is not None

    # Only the emotion loss when only emotion labels are given and reconstruction is off.
    emotion_only = make_stage2(reconstruction_weight=0.0).eval()
    result = emotion_only(**features, labels=ALL_LABELS["labels"])
    assert torch.allclose(result.loss, result.emotion_loss)


def test_stage1_component_losses_and_weight_switches():
    model = make_stage1(reconstruction_weight=2.0, speaker_weight=0.5).eval()
    _, features = batch(model)
    speakers = ALL_LABELS["speaker_labels"]
    out = model(**features, speaker_labels=speakers)
    assert out.reconstruction_loss.item() > 0
    assert out.speaker_loss.item() > 0
    assert torch.allclose(out.loss, 2.0 * out.reconstruction_loss + 0.5 * out.speaker_loss)
    mask = torch.arange(out.log_mel.shape[1]) < (
        features["attention_mask"].sum(-1, keepdim=True) // TINY["hop_length"] + 1
    )
    manual = ((out.reconstruction - out.log_mel) ** 2)[mask].mean()
    assert torch.allclose(out.reconstruction_loss, manual, atol=1e-6)
    no_speaker = make_stage1(speaker_weight=0.0).eval()(**features, speaker_labels=speakers)
    assert torch.allclose(no_speaker.loss, no_speaker.reconstruction_loss)
    no_recon = make_stage1(reconstruction_weight=0.0).eval()(**features, speaker_labels=speakers)
    assert torch.allclose(no_recon.loss, no_recon.speaker_loss)
    unknown = model(**features, speaker_labels=torch.full((3,), -100))
    assert unknown.speaker_loss.item() == 0.0
    assert torch.allclose(unknown.loss, 2.0 * unknown.reconstruction_loss)


@pytest.mark.parametrize("family", ["stage1", "stage2"])
def test_trainer_evaluation_keeps_only_logits(family):
    model = make_model(family).eval()
    _, features = batch(model)
    with torch.no_grad():
        out = model(
            **features, **labels_for(family), **({} if family == "stage1" else {"output_hidden_states": True})
        )
    kept = {key for key in out if key not in model.config.keys_to_ignore_at_inference}
    assert kept == ({"logits"} if family == "stage1" else {"logits", "ctc_logits"})


@pytest.mark.parametrize("family", ["stage1", "stage2"])
def test_random_resampling_only_in_training(family):
    model = make_model(family, classifier_dropout=0.0) if family == "stage2" else make_model(family)
    _, features = batch(model)
    model.train()
    first, second = model(**features).reconstruction, model(**features).reconstruction
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        a, b = model(**features), model(**features)
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(a.logits, b.logits)
    frozen = make_model(family, random_resampling=False).train()
    assert torch.equal(frozen(**features).reconstruction, frozen(**features).reconstruction)


@pytest.mark.parametrize(
    ("family", "backbone"), [("stage1", None), ("stage2", "wav2vec2"), ("stage2", "wavlm")]
)
def test_padding_does_not_change_predictions(family, backbone):
    if family == "stage1":
        model = make_stage1().eval()
    else:
        model = make_stage2(
            backbone,
            pooling="attentive_statistics",
            use_weighted_layer_sum=True,
            emotion_code_inputs=["content", "rhythm", "pitch", "timbre"],
        ).eval()
        assert model.is_padding_invariant
    extractor = extractor_for(model)
    clips = [speech_like(s, seed=i) for i, s in enumerate((0.8, 0.35, 0.55))]
    with torch.no_grad():
        batched = model(**extractor(clips, sampling_rate=16000, return_tensors="pt"))
        for i, clip in enumerate(clips):
            alone = model(**extractor(clip, sampling_rate=16000, return_tensors="pt"))
            frames = alone.reconstruction.shape[1]
            assert torch.allclose(alone.logits[0], batched.logits[i], atol=1e-4), i
            assert torch.allclose(alone.reconstruction[0], batched.reconstruction[i, :frames], atol=1e-4), i
            if family == "stage2":
                assert torch.allclose(alone.speaker_logits[0], batched.speaker_logits[i], atol=1e-4)


@pytest.mark.parametrize("family", ["stage1", "stage2"])
def test_missing_or_misaligned_pitch_ids_raise(family):
    model = make_model(family).eval()
    _, features = batch(model)
    without = {k: v for k, v in features.items() if k != "pitch_ids"}
    with pytest.raises(ValueError, match="compute_pitch=True"):
        model(**without)
    wrong_hop = EmotionFeatureExtractor(compute_pitch=True, hop_length=64, pitch_bins=TINY["pitch_bins"])
    misaligned = wrong_hop([speech_like(0.5)], sampling_rate=16000, return_tensors="pt")
    with pytest.raises(ValueError, match="hop_length"):
        model(**misaligned)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["stage1", "stage2"])
def test_save_and_load_with_remote_code_outside_repo(family, tmp_path):
    model = make_model(family).eval()
    extractor = extractor_for(model)
    out_dir = tmp_path / "model"
    model.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    saved_extractor = json.loads((out_dir / "preprocessor_config.json").read_text())
    assert saved_extractor["compute_pitch"] is True
    assert saved_extractor["hop_length"] == TINY["hop_length"]
    config = json.loads((out_dir / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForAudioClassification"}

    clips = [speech_like(0.45, seed=3), speech_like(0.7, seed=4)]
    report = run_remote_check(out_dir, clips, tmp_path / "remote")
    assert report["module"].startswith("transformers_modules.")
    assert report["model_class"] == type(model).__name__
    with torch.no_grad():
        for clip, remote in zip(clips, report["logits"]):
            local = model(**extractor(clip, sampling_rate=16000, return_tensors="pt")).logits[0]
            assert np.allclose(local.numpy(), remote, atol=1e-5)
    id2label = model.config.id2label
    assert set(id2label.values()) == set(
        (SPEAKERS if family == "stage1" else label_kwargs()["id2label"]).values()
    )
    for prediction, logits in zip(report["pipeline"], report["logits"]):
        assert {p["label"] for p in prediction} == set(id2label.values())
        assert prediction[0]["label"] == id2label[int(np.argmax(logits))]


def test_stage1_weights_initialise_stage2(tmp_path):
    stage1 = make_stage1()
    stage1.save_pretrained(tmp_path / "stage1")
    stage2 = make_stage2()
    report = stage2.load_decomposition_weights(str(tmp_path / "stage1"))
    first_conv = "decomposition.content_encoder.convolutions.0.conv.weight"
    assert first_conv in report["skipped"]
    assert "decomposition.content_encoder.convolutions.0.conv.bias" in report["loaded"]
    assert "speaker_head.weight" in report["loaded"]
    source, target = stage1.state_dict(), stage2.state_dict()
    for prefix in ("rhythm_encoder", "pitch_encoder", "timbre_encoder", "decoder", "content_encoder"):
        names = [n for n in source if n.startswith(f"decomposition.{prefix}.") and n != first_conv]
        assert names, prefix
        assert set(names) <= set(report["loaded"]), prefix
    for name in report["loaded"]:
        assert torch.equal(target[name], source[name]), name
    assert not torch.equal(target[first_conv][:, :1].flatten(), source[first_conv][:, :1].flatten())
    assert set(report["loaded"]) | set(report["skipped"]) == {
        n for n in source if n.startswith(("decomposition.", "speaker_head."))
    }

    other_speakers = make_stage2(num_speakers=5)
    report = other_speakers.load_decomposition_weights(str(tmp_path / "stage1"))
    assert "speaker_head.weight" in report["skipped"]
    no_decoder = make_stage2(reconstruction_weight=0.0)
    report = no_decoder.load_decomposition_weights(str(tmp_path / "stage1"))
    assert any(n.startswith("decomposition.decoder.") for n in report["skipped"])

    with pytest.raises(ValueError, match="content_lstm_size"):
        make_stage2(content_lstm_size=6).load_decomposition_weights(str(tmp_path / "stage1"))
    with pytest.raises(ValueError, match="n_mels"):
        make_stage2(n_mels=20).load_decomposition_weights(str(tmp_path / "stage1"))
    stage2.save_pretrained(tmp_path / "stage2")
    with pytest.raises(ValueError, match="speech_decomposition"):
        make_stage2().load_decomposition_weights(str(tmp_path / "stage2"))


@pytest.mark.parametrize("backbone", ["wav2vec2", "wavlm"])
def test_pretrained_backbone_loads_without_missing_or_unexpected_keys(backbone, tmp_path):
    torch.manual_seed(1)
    backbone_config = AutoConfig.for_model(**tiny_backbone_config(backbone, feat_extract_norm="group"))
    if backbone == "wav2vec2":  # facebook/wav2vec2-base is a pre-training checkpoint with quantizer
        backbone_config.codevector_dim = backbone_config.proj_codevector_dim = 16
        backbone_config.num_codevectors_per_group = 8
        checkpoint = Wav2Vec2ForPreTraining(backbone_config)
    else:
        checkpoint = WavLMModel(backbone_config)
    checkpoint.save_pretrained(tmp_path / "pretrained")
    model = DecomposedEmotionForAudioClassification.from_pretrained_backbone(
        str(tmp_path / "pretrained"), **TINY, **label_kwargs()
    )
    assert not model.is_padding_invariant  # group-norm feature encoder, as in the base checkpoints
    reference = AutoModel.from_pretrained(tmp_path / "pretrained")
    assert set(model.backbone.state_dict()) == set(reference.state_dict())
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name


def test_gradient_checkpointing_matches_plain_gradients():
    grads = []
    for checkpointing in (False, True):
        model = make_stage2().train()
        _, features = batch(model)
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.backbone.encoder.gradient_checkpointing
        torch.manual_seed(3)  # same random resampling in both runs
        model(**features, **ALL_LABELS).loss.backward()
        grads.append(model.backbone.encoder.layers[0].attention.q_proj.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_freeze_feature_encoder():
    model = make_stage2()
    model.freeze_feature_encoder()
    _, features = batch(model)
    model(**features, **ALL_LABELS).loss.backward()
    conv = model.backbone.feature_extractor.conv_layers[0].conv.weight
    assert not conv.requires_grad
    assert conv.grad is None
    assert model.classifier.dense.weight.grad is not None
    assert model.backbone.encoder.layers[0].attention.q_proj.weight.grad is not None
    assert model.decomposition.content_encoder.convolutions[0].conv.weight.grad is not None


def test_clip_of_unknown_gender_takes_the_nearer_gender_pitch_statistics():
    male, female = [float(np.log(110.0)), 0.2], [float(np.log(220.0)), 0.2]
    extractor = EmotionFeatureExtractor(
        compute_pitch=True, pitch_stats={"male": male, "female": female, "all": [float(np.log(160.0)), 0.4]}
    )
    low, high = np.full(50, 105.0), np.full(50, 230.0)
    assert extractor.resolve_pitch_stats(None, f0=low) == male
    assert extractor.resolve_pitch_stats("unknown", f0=high) == female
    assert extractor.resolve_pitch_stats("female", f0=low) == female  # a given gender wins
    assert extractor.resolve_pitch_stats(None, f0=np.zeros(50))[0] == pytest.approx(np.log(160.0))
    assert extractor.resolve_pitch_stats(None, speaker_stats=[1.0, 2.0], f0=low) == [1.0, 2.0]
    # Through __call__: a low voice without gender is quantised like a male voice.
    ids = {
        gender: extractor([np.zeros(16000, dtype=np.float32)], f0=[low], gender=gender)["pitch_ids"]
        for gender in (None, "male", "female")
    }
    np.testing.assert_array_equal(ids[None], ids["male"])
    assert not np.array_equal(ids[None], ids["female"])
