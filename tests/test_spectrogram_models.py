"""Family 5: spectrogram models trained from scratch (CNN + Transformer, segment CNN + BiLSTM)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SPECTROGRAM, label_kwargs, run_remote_check, speech_like
from torch import nn

from modeling import (
    CNNTransformerEmotionConfig,
    CNNTransformerForAudioClassification,
    EmotionFeatureExtractor,
    SegmentCRNNEmotionConfig,
    SegmentCRNNForAudioClassification,
)
from modeling.emotion_layers import warp_frequency_axis
from modeling.modeling_spectrogram_emotion import (
    FeatureMixing,
    MaskedBatchNorm2d,
    SpecAugment,
    delta_features,
)

NO_AUGMENT = {"num_time_masks": 0, "num_freq_masks": 0}
_NO_DROPOUT = {"classifier_dropout": 0.0, "freq_mask_width": 4}
TINY = {
    "cnn_transformer": {
        **TINY_SPECTROGRAM["emotion_cnn_transformer"],
        **_NO_DROPOUT,
        "hidden_dropout": 0.0,
        "transformer_dropout": 0.0,
    },
    "segment_crnn": {**TINY_SPECTROGRAM["emotion_segment_crnn"], **_NO_DROPOUT, "segment_dropout": 0.0},
}
FAMILIES = list(TINY)
# The CNN+Transformer family as a TDNN: no 2-D CNN, 1-D convolutions over the log-mel frames,
# corpus-level mel normalisation, statistics pooling and a hidden classifier layer, no Transformer.
TDNN = {
    "conv_channels": [],
    "conv_kernel_sizes": [],
    "pool_sizes": [],
    "time_conv_kernel_sizes": [5, 3],
    "time_conv_dilations": [1, 2],
    "num_hidden_layers": 0,
    "mel_normalization": "corpus",
    "pooling": "attentive_statistics",
    "pooling_attention_size": 8,
    "classifier_hidden_size": 8,
}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models run much faster on one intra-op thread than on two contended ones (the test
    machine's two cores are shared); also for the remote-check subprocess."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def make_model(family: str, **overrides):
    torch.manual_seed(0)
    kwargs = {**TINY[family], **NO_AUGMENT, **label_kwargs(), **overrides}
    if family == "cnn_transformer":
        return CNNTransformerForAudioClassification(CNNTransformerEmotionConfig(**kwargs))
    return SegmentCRNNForAudioClassification(SegmentCRNNEmotionConfig(**kwargs))


def extractor_for(model) -> EmotionFeatureExtractor:
    return EmotionFeatureExtractor(**model.config.feature_extractor_kwargs())


def featurize(model, clips, **kwargs):
    return extractor_for(model)(clips, sampling_rate=16000, return_tensors="pt", **kwargs)


def train_steps(model, features, labels, steps: int, lr: float = 3e-3) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(**features, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return losses


# (seconds) 0.25 s is shorter than one 64-frame segment (0.64 s at a 10 ms hop).
CLIP_SECONDS = (1.3, 0.25, 0.9)
LABELS = torch.tensor([0, 1, 2])


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_backward_and_loss_decreases(family):
    model = make_model(family)
    clips = [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    features = featurize(model, clips)
    out = model(**features, labels=LABELS)
    assert out.logits.shape == (3, 3)
    assert out.embeddings.shape[0] == 3
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not missing, missing
    losses = train_steps(model, features, LABELS, steps=15)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("family", FAMILIES)
def test_focal_loss_and_class_weights(family):
    weights = [1.0, 2.0, 0.5]
    model = make_model(family, focal_gamma=2.0, class_weights=weights).eval()
    features = featurize(model, [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)])
    labels = torch.tensor([0, 1, -100])
    out = model(**features, labels=labels)
    probs = torch.softmax(out.logits[:2].double(), dim=-1)
    p_true = probs[torch.arange(2), labels[:2]]
    w = torch.tensor(weights, dtype=torch.double)[labels[:2]]
    expected = (w * -((1 - p_true) ** 2) * torch.log(p_true)).sum() / w.sum()
    assert torch.allclose(out.loss.double(), expected, atol=1e-6)
    plain = torch.nn.functional.cross_entropy(out.logits, labels, weight=torch.tensor(weights))
    assert not torch.allclose(out.loss, plain)


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("cnn_transformer", {}),
        ("cnn_transformer", {"frequency_reduction": "mean", "mel_normalization": "none"}),
        ("cnn_transformer", TDNN),
        ("cnn_transformer", {"mel_normalization": "corpus", "pooling": "statistics", "num_hidden_layers": 0}),
        ("cnn_transformer", {"mel_normalization": "corpus", "delta_order": 2, "num_hidden_layers": 0}),
        ("segment_crnn", {}),
        ("segment_crnn", {"mel_normalization": "none", "segment_length": 24, "segment_hop": 10}),
    ],
)
def test_padding_does_not_change_predictions(family, overrides):
    model = make_model(family, **overrides)
    clips = [speech_like(s, seed=i) for i, s in enumerate((1.3, 0.2, 0.9, 0.31))]
    # A few training steps with SpecAugment give BatchNorm running statistics away from (0, 1).
    model.encoder.spec_augment.num_time_masks = 2
    train_steps(model, featurize(model, clips), torch.tensor([0, 1, 2, 0]), steps=3)
    model.eval()
    with torch.no_grad():
        batched = model(**featurize(model, clips)).logits
        extra_padding = model(**featurize(model, clips, pad_to_multiple_of=8000)).logits
        alone = torch.stack([model(**featurize(model, [clip])).logits[0] for clip in clips])
        unmasked = model(featurize(model, clips)["input_values"]).logits
    assert torch.allclose(alone, batched, atol=1e-4), (alone - batched).abs().max()
    assert torch.allclose(alone, extra_padding, atol=1e-4), (alone - extra_padding).abs().max()
    # Not vacuous: clips get different logits, and ignoring the mask does change the short clip's.
    assert (alone[0] - alone[1]).abs().max() > 1e-3
    assert (unmasked[1] - alone[1]).abs().max() > 1e-3


def test_batchnorm_training_statistics_ignore_padding():
    model = make_model("cnn_transformer").train()
    other = copy.deepcopy(model)
    clips = [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    logits = model(**featurize(model, clips)).logits
    padded_logits = other(**featurize(model, clips, pad_to_multiple_of=16000)).logits
    assert torch.allclose(logits, padded_logits, atol=1e-4)
    for (name, stat), other_stat in zip(model.named_buffers(), other.buffers()):
        assert torch.allclose(stat.float(), other_stat.float(), atol=1e-5), name


def test_masked_batchnorm_without_padding_is_batchnorm():
    torch.manual_seed(0)
    hidden = torch.randn(3, 4, 10, 6) * 3 + 1
    masked, plain = MaskedBatchNorm2d(4), nn.BatchNorm2d(4)
    for _ in range(2):
        out = masked(hidden, torch.ones(3, 10, dtype=torch.bool))
        assert torch.allclose(out, plain(hidden), atol=1e-5)
    assert torch.allclose(masked.running_mean, plain.running_mean, atol=1e-6)
    assert torch.allclose(masked.running_var, plain.running_var, atol=1e-5)
    assert masked.num_batches_tracked == plain.num_batches_tracked
    # With padding, the batch statistics are those of the valid steps only.
    partial = [10, 4, 7]
    hidden[1, :, 4:] = hidden[2, :, 7:] = 0.0
    out = masked(hidden, torch.tensor(partial).unsqueeze(1) > torch.arange(10))
    valid_out = torch.cat([out[i, :, :n] for i, n in enumerate(partial)], dim=1)
    assert torch.allclose(valid_out.mean((1, 2)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(valid_out.var((1, 2), unbiased=False), torch.ones(4), atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_augment_only_in_training(family):
    augmented = make_model(family, num_time_masks=2, time_mask_width=10, num_freq_masks=2)
    plain = make_model(family)
    plain.load_state_dict(augmented.state_dict())
    features = featurize(augmented, [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)])
    augmented.eval()
    plain.eval()
    with torch.no_grad():
        first, second = augmented(**features).logits, augmented(**features).logits
        assert torch.equal(first, second)
        assert torch.equal(first, plain(**features).logits)
        augmented.train()
        plain.train()
        torch.manual_seed(1)
        a = augmented(**features).logits
        torch.manual_seed(2)
        b = augmented(**features).logits
        reference = plain(**features).logits
    assert (a - b).abs().max() > 1e-4
    assert (a - reference).abs().max() > 1e-4


def test_spec_augment_masks_stay_inside_valid_frames():
    torch.manual_seed(0)
    augment = SpecAugment(num_time_masks=2, time_mask_width=5, num_freq_masks=1, freq_mask_width=3).train()
    lengths = torch.tensor([30, 12, 3])
    valid = (torch.arange(30) < lengths.unsqueeze(1)).float()
    features = (torch.randn(3, 2, 30, 8) + 5.0) * valid[:, None, :, None]
    changed_any = False
    for _ in range(20):
        out = augment(features, lengths)
        changed = out != features
        changed_any |= bool(changed.any())
        assert not (changed & (valid[:, None, :, None] == 0)).any(), "padding was modified"
        time_masked = changed.all(-1).any(1)  # frames masked across every band
        assert (time_masked.sum(-1) <= 2 * 5).all()
        assert torch.equal(changed[:, 0], changed[:, 1]), "channels share the mask"
        fill = (features.sum((2, 3)) / (lengths.unsqueeze(1) * 8)).view(3, 2, 1, 1).expand_as(out)
        assert torch.allclose(out[changed], fill[changed])
    assert changed_any
    assert torch.equal(augment.eval()(features, lengths), features)


def _reference_delta(x: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)])
    out = np.zeros_like(x)
    for t in range(len(x)):
        for n in range(1, half + 1):
            out[t] += n * (padded[t + half + n] - padded[t + half - n])
    return out / (2 * sum(n * n for n in range(1, half + 1)))


@pytest.mark.parametrize("width", [3, 5, 9])
def test_delta_features_match_per_clip_reference(width):
    import librosa

    rng = np.random.default_rng(0)
    lengths = [20, 7, 2, 1]
    features = torch.from_numpy(rng.standard_normal((4, 20, 6)).astype(np.float32))
    mask = torch.arange(20) < torch.tensor(lengths).unsqueeze(1)
    features = features * mask.unsqueeze(-1)  # the padding a batch would have
    delta = delta_features(features, torch.tensor(lengths), width).numpy()
    for row, n in enumerate(lengths):
        clip = features[row, :n].numpy()
        np.testing.assert_allclose(delta[row, :n], _reference_delta(clip, width), atol=1e-5)
        if n > 1:
            expected = librosa.feature.delta(clip, width=width, order=1, axis=0, mode="nearest")
            np.testing.assert_allclose(delta[row, :n], expected, atol=1e-5)
        assert not delta[row, n:].any()
    ramp = torch.arange(10, dtype=torch.float32).view(1, 10, 1)
    interior = delta_features(ramp, torch.tensor([10]), width)[0, width // 2 : 10 - width // 2]
    assert torch.allclose(interior, torch.ones_like(interior))


def test_segments_follow_each_clips_length():
    model = make_model("segment_crnn").eval()
    encoder = model.encoder
    counts = encoder.num_segments(torch.tensor([1, 64, 65, 96, 97, 200]))
    assert counts.tolist() == [1, 1, 2, 2, 3, 6]
    clips = [speech_like(s, seed=i) for i, s in enumerate((2.0, 0.25))]
    features = featurize(model, clips)
    with torch.no_grad():
        hidden, mask = encoder(**features)
    frames = encoder.front_end.mel.num_frames(features["attention_mask"].sum(-1))
    assert mask.sum(-1).tolist() == encoder.num_segments(frames).tolist()
    assert mask.sum(-1)[1] == 1
    assert not hidden[~mask].any()


@pytest.mark.parametrize("family", FAMILIES)
def test_minimum_length_clip(family):
    model = make_model(family).eval()
    minimum = model.config.feature_extractor_kwargs()["min_samples"]
    assert minimum == model.config.min_input_samples >= model.config.n_fft
    clips = [speech_like((minimum + 1) / 16000, seed=1)[:minimum], speech_like(0.01, seed=2)]
    assert len(clips[0]) == minimum
    features = featurize(model, clips)
    assert features["input_values"].shape[-1] == minimum
    with torch.no_grad():
        out = model(**features)
        # Below the minimum without the feature extractor: padded inside the model, no error.
        tiny = model(torch.from_numpy(speech_like(0.02, seed=3)).unsqueeze(0))
    assert out.logits.isfinite().all()
    assert tiny.logits.isfinite().all()
    if family == "cnn_transformer":
        frames = 1 + minimum // model.config.hop_length
        assert frames == model.config.min_input_frames == 8
        _, mask = model.encoder(**features)
        assert mask.sum(-1).tolist() == [1, 1]


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="mel_normalization"):
        CNNTransformerEmotionConfig(mel_normalization="global")
    with pytest.raises(ValueError, match="pooled away"):
        CNNTransformerEmotionConfig(n_mels=16)
    with pytest.raises(ValueError, match="delta_width"):
        SegmentCRNNEmotionConfig(delta_width=4)
    config = CNNTransformerEmotionConfig(**TINY["cnn_transformer"])
    config.save_pretrained(tmp_path)
    loaded = CNNTransformerEmotionConfig.from_pretrained(tmp_path)
    assert loaded.pool_sizes == [2, 2, [2, 1]]
    assert loaded.min_input_frames == 8
    assert CNNTransformerEmotionConfig().min_input_samples == 31 * 160
    assert SegmentCRNNEmotionConfig().feature_extractor_kwargs() == {
        "sampling_rate": 16000,
        "min_samples": 512,
        "hop_length": 160,
        "compute_pitch": False,
    }


def train_and_save(model, out_dir: Path) -> tuple[list[np.ndarray], Path]:
    """Two training steps on two clips, then the model (in eval mode) and its feature extractor
    saved to `out_dir`; returns the clips and `out_dir`."""
    clips = [speech_like(1.1, seed=4), speech_like(0.3, seed=3)]
    train_steps(model, featurize(model, clips), torch.tensor([1, 2]), steps=2)
    model.eval()
    model.save_pretrained(out_dir)
    extractor_for(model).save_pretrained(out_dir)
    return clips, out_dir


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_with_remote_code_outside_repo(family, tmp_path):
    model = make_model(family, num_time_masks=2, num_freq_masks=1)
    clips, out_dir = train_and_save(model, tmp_path / "model")
    saved = sorted(p.name for p in out_dir.iterdir())
    assert "model.safetensors" in saved
    assert "modeling_spectrogram_emotion.py" in saved
    config = json.loads((out_dir / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForAudioClassification"}
    assert config["id2label"] == {"0": "neutral", "1": "angry", "2": "sad"}

    report = run_remote_check(out_dir, clips, tmp_path / "remote")
    assert report["module"].startswith("transformers_modules.")
    assert report["model_class"] == type(model).__name__
    with torch.no_grad():
        for clip, remote in zip(clips, report["logits"]):
            local = model(**featurize(model, [clip])).logits[0]
            assert np.allclose(local.numpy(), remote, atol=1e-5)
    for logits, prediction in zip(report["logits"], report["pipeline"]):
        assert {p["label"] for p in prediction} == set(model.config.id2label.values())
        assert prediction[0]["label"] == model.config.id2label[int(np.argmax(logits))]


@pytest.mark.parametrize("overrides", [TDNN, {"pooling": "statistics", "classifier_hidden_size": 8}])
def test_recipe_options_train_and_shapes(overrides):
    model = make_model("cnn_transformer", **overrides)
    clips = [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    features = featurize(model, clips)
    out = model(**features, labels=LABELS)
    pooled_size = 2 * model.config.hidden_size
    assert out.embeddings.shape == (3, pooled_size)
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    losses = train_steps(model, features, LABELS, steps=15)
    assert losses[-1] < 0.7 * losses[0], losses
    if not overrides.get("conv_channels", True):
        assert len(model.encoder.conv_blocks) == 0
        assert model.encoder.transformer is None
        assert model.encoder.projection.in_features == model.config.n_mels


def test_corpus_normalization_tracks_training_statistics():
    model = make_model("cnn_transformer", **TDNN)
    norm = model.encoder.front_end.corpus_norm
    norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    clips = [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    features = featurize(model, clips)
    model.train()
    with torch.no_grad():
        model(**features)
        log_mel, lengths = model.encoder.front_end.mel(
            features["input_values"], features["attention_mask"].sum(-1)
        )
    valid = torch.cat([log_mel[i, :n] for i, n in enumerate(lengths.tolist())])
    assert torch.allclose(norm.running_mean, valid.mean(0), atol=1e-4)
    assert torch.allclose(norm.running_var, valid.var(0), rtol=1e-3, atol=1e-4)
    # In eval mode the stored statistics normalise every clip the same way: a clip's normalised
    # log-mel keeps its own offset from the corpus mean (utterance normalisation would remove it).
    model.eval()
    with torch.no_grad():
        normalised, lengths = model.encoder.front_end(features["input_values"], features["attention_mask"])
    expected = (log_mel - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    mask = torch.arange(log_mel.shape[1]) < lengths.unsqueeze(1)
    assert torch.allclose(normalised[mask], expected[mask], atol=1e-4)
    assert not normalised[~mask].any()
    assert CNNTransformerEmotionConfig(**TINY["cnn_transformer"]).mel_normalization == "utterance"


def twin_models(family: str, **training_options):
    """A model with training-only options, the same weights without them (both in eval mode), and
    features of the test clips."""
    model = make_model(family, **training_options)
    reference = make_model(family)
    reference.load_state_dict(model.state_dict())
    clips = [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)]
    return model.eval(), reference.eval(), featurize(model, clips)


@pytest.mark.parametrize("family", FAMILIES)
def test_mixup_mixes_inputs_and_losses_in_training_only(family):
    model, reference, features = twin_models(family, mixup_alpha=0.4)
    # Eval mode, or no labels: no mixing, identical to the same weights without mixup.
    with torch.no_grad():
        assert torch.equal(
            model(**features, labels=LABELS).logits, reference(**features, labels=LABELS).logits
        )
    # Training: the loss is weight * loss(labels) + (1 - weight) * loss(permuted labels) of the
    # logits computed from the mixed batch.
    model.train()
    torch.manual_seed(3)
    out = model(**features, labels=LABELS)
    torch.manual_seed(3)
    mixing = FeatureMixing.draw(3, 0.4, torch.device("cpu"))
    assert 0.0 < mixing.weight < 1.0
    ce = torch.nn.functional.cross_entropy
    expected = mixing.weight * ce(out.logits, LABELS) + (1 - mixing.weight) * ce(
        out.logits, LABELS[mixing.permutation]
    )
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_frequency_warp_moves_a_tone_by_the_factor():
    # A 1 kHz tone: after warping by 1.1 its peak lies at 1.1 kHz (bin width 31.25 Hz at n_fft 512).
    seconds = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 1000.0 * seconds)
    magnitude = torch.stft(tone, 512, 160, 400, torch.hann_window(400), return_complex=True).abs()
    warped = warp_frequency_axis(magnitude.unsqueeze(0).repeat(2, 1, 1), torch.tensor([1.0, 1.1]))
    hz_per_bin = 16000 / 512
    peaks = warped.mean(-1).argmax(-1).float() * hz_per_bin
    assert torch.equal(warped[0], magnitude)
    assert abs(float(peaks[0]) - 1000.0) <= hz_per_bin / 2
    assert abs(float(peaks[1]) - 1100.0) <= hz_per_bin / 2


@pytest.mark.parametrize("family", FAMILIES)
def test_frequency_warp_only_in_training(family):
    model, reference, features = twin_models(family, frequency_warp=0.1)
    with torch.no_grad():
        assert torch.equal(model(**features).logits, reference(**features).logits)
        # Training-mode front ends (the same running statistics): only the warp differs.
        model.encoder.front_end.train()
        reference.encoder.front_end.train()
        warped, _ = model.encoder.front_end(features["input_values"], features["attention_mask"])
        plain, _ = reference.encoder.front_end(features["input_values"], features["attention_mask"])
    assert warped.shape == plain.shape
    assert not torch.allclose(warped, plain, atol=1e-3)
    with pytest.raises(ValueError, match="frequency_warp"):
        CNNTransformerEmotionConfig(frequency_warp=1.5)


def test_feature_mixing_keeps_the_longer_length():
    features = torch.zeros(2, 5, 3)
    features[0, :5] = 1.0
    features[1, :2] = 3.0
    mixing = FeatureMixing(torch.tensor([1, 0]), 0.25)
    mixed, lengths = mixing.apply(features, torch.tensor([5, 2]))
    assert lengths.tolist() == [5, 5]
    assert torch.allclose(mixed[0, :2], torch.full((2, 3), 0.25 + 0.75 * 3.0))
    assert torch.allclose(mixed[0, 2:], torch.full((3, 3), 0.25))
    assert torch.allclose(mixed[1, 2:], torch.full((3, 3), 0.75))


def test_recipe_option_validation():
    with pytest.raises(ValueError, match="pooling"):
        CNNTransformerEmotionConfig(pooling="max")
    with pytest.raises(ValueError, match="time_conv"):
        CNNTransformerEmotionConfig(time_conv_kernel_sizes=[4])
    with pytest.raises(ValueError, match="time_conv_dilations"):
        CNNTransformerEmotionConfig(time_conv_kernel_sizes=[3, 3], time_conv_dilations=[1])
    with pytest.raises(ValueError, match="mixup_alpha"):
        SegmentCRNNEmotionConfig(mixup_alpha=-1.0)
    config = CNNTransformerEmotionConfig(conv_channels=[8, 16])
    assert config.conv_kernel_sizes == [3, 3]
    assert config.pool_sizes == [2, 2]
    assert CNNTransformerEmotionConfig(conv_channels=[]).min_input_frames == 1
    with pytest.raises(ValueError, match="delta_order"):
        CNNTransformerEmotionConfig(delta_order=3)
    with pytest.raises(ValueError, match="delta_width"):
        CNNTransformerEmotionConfig(delta_order=1, delta_width=4)
    with pytest.raises(ValueError, match="conv_channels"):
        CNNTransformerEmotionConfig(**TDNN, delta_order=1)


@pytest.mark.parametrize("delta_order", [0, 1, 2])
def test_delta_channels_reach_the_cnn(delta_order):
    """`delta_order` stacks the log-mel's Δ (and ΔΔ of Δ) as CNN input channels, each computed
    within the clip's own length; 0 leaves the single log-mel channel."""
    model = make_model("cnn_transformer", delta_order=delta_order, delta_width=3).eval()
    assert model.encoder.conv_blocks[0].conv.in_channels == 1 + delta_order
    seen = {}
    model.encoder.conv_blocks[0].register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    features = featurize(model, [speech_like(s, seed=i) for i, s in enumerate(CLIP_SECONDS)])
    with torch.no_grad():
        model(**features)
        log_mel, lengths = model.encoder.front_end(features["input_values"], features["attention_mask"])
    stacked = seen["x"]
    assert stacked.shape[:3] == (3, 1 + delta_order, log_mel.shape[1])
    expected = [log_mel]
    for _ in range(delta_order):
        expected.append(delta_features(expected[-1], lengths, 3))
    for channel, reference in enumerate(expected):
        assert torch.allclose(stacked[:, channel], reference, atol=1e-6), channel
    if delta_order:  # not vacuous: the Δ channel is a non-zero slope, not a copy of the log-mel
        assert stacked[:, 1].abs().max() > 1e-2
        assert not torch.allclose(stacked[:, 1], stacked[:, 0])


PITCH = {
    "pitch_embedding_size": 4,
    "mel_normalization": "corpus",
    "pooling": "statistics",
    "num_hidden_layers": 0,
}


def test_pitch_features_train_and_keep_padding_invariance():
    model = make_model("cnn_transformer", **PITCH)
    assert model.config.feature_extractor_kwargs()["compute_pitch"] is True
    assert "compute_pitch" not in {
        k for k, v in make_model("cnn_transformer").config.feature_extractor_kwargs().items() if v
    }
    clips = [speech_like(s, seed=i) for i, s in enumerate((1.3, 0.2, 0.9, 0.31))]
    features = featurize(model, clips)
    assert features["pitch_ids"].shape[:2] == (4, 1 + features["input_values"].shape[-1] // 160)
    assert (features["pitch_ids"] > 0).any()  # speech_like clips are voiced
    out = model(**features, labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert model.encoder.pitch.dense.weight.grad.abs().sum() > 0
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # Mixup mixes the pitch features with the same permutation and still trains.
    model.config.mixup_alpha = 0.4
    train_steps(model, features, torch.tensor([0, 1, 2, 0]), steps=3)
    model.config.mixup_alpha = 0.0
    model.eval()
    with torch.no_grad():
        batched = model(**features).logits
        extra_padding = model(**featurize(model, clips, pad_to_multiple_of=8000)).logits
        alone = torch.stack([model(**featurize(model, [clip])).logits[0] for clip in clips])
        unvoiced = model(**{**features, "pitch_ids": torch.zeros_like(features["pitch_ids"])}).logits
    assert torch.allclose(alone, batched, atol=1e-4), (alone - batched).abs().max()
    assert torch.allclose(alone, extra_padding, atol=1e-4), (alone - extra_padding).abs().max()
    assert (unvoiced - batched).abs().max() > 1e-3  # the pitch input is used
    with pytest.raises(ValueError, match="pitch_ids are required"):
        model(features["input_values"], features["attention_mask"])
    with pytest.raises(ValueError, match="hop_length"):
        model(**{**features, "pitch_ids": features["pitch_ids"][:, :-1]})
    with pytest.raises(ValueError, match=r"pitch_ids must lie in \[0, 256\]"):
        model(**{**features, "pitch_ids": features["pitch_ids"] + 300})


def test_pitch_features_average_each_pooled_step():
    model = make_model("cnn_transformer", **PITCH)
    pitch = model.encoder.pitch
    bins = model.config.pitch_bins
    ids = torch.tensor([[0, 1, bins, (bins + 1) // 2 + 1, 0, 0, 0, 0, 7, 7]])
    frames = pitch.frame_features(ids, torch.ones_like(ids, dtype=torch.bool))
    assert frames[0, :, 0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    assert frames[0, 1, 1] == -1.0
    assert frames[0, 2, 1] == 1.0
    assert abs(float(frames[0, 3, 1])) < 0.01
    steps = pitch(frames, 1)  # 8 frames per step (the tiny CNN pools time by 8); frames 8, 9 are cut
    expected = torch.relu(pitch.dense(frames[:, :8])).mean(1, keepdim=True)
    assert torch.allclose(steps, expected)


@pytest.mark.slow
def test_pitch_model_loads_with_remote_code_and_runs_in_the_pipeline(tmp_path):
    model = make_model("cnn_transformer", **PITCH)
    clips, out_dir = train_and_save(model, tmp_path / "model")
    report = run_remote_check(out_dir, clips, tmp_path / "remote")
    with torch.no_grad():
        for clip, remote in zip(clips, report["logits"]):
            local = model(**featurize(model, [clip])).logits[0]
            assert np.allclose(local.numpy(), remote, atol=1e-5)
    for logits, prediction in zip(report["logits"], report["pipeline"]):
        assert prediction[0]["label"] == model.config.id2label[int(np.argmax(logits))]
