"""Building blocks shared by the emotion model families.

Remote code: this file imports only torch, transformers, numpy and the standard library, so that
`trust_remote_code=True` loading works in a bare environment.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.audio_utils import mel_filter_bank


def is_exporting() -> bool:
    """True while a graph is being recorded for export (`torch.export`, the ONNX exporters or
    TorchScript tracing): shortcuts that read tensor values must then be skipped."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def add_auto_model_entries(config, model: nn.Module) -> None:
    """Point both `AutoModel` and `AutoModelForAudioClassification` of the saved config's
    `auto_map` at this model class (`register_for_auto_class` records only one Auto class)."""
    name = f"{type(model).__module__.split('.')[-1]}.{type(model).__name__}"
    auto_map = dict(getattr(config, "auto_map", None) or {})
    auto_map.setdefault("AutoModel", name)
    auto_map.setdefault("AutoModelForAudioClassification", name)
    config.auto_map = auto_map


# ----------------------------------------------------------------------------------------------
# Masks and lengths
# ----------------------------------------------------------------------------------------------


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """Boolean mask `(batch, max_length)` that is True on the first `lengths[i]` positions."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def sample_lengths(input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Number of valid samples per clip: from the attention mask, else the full padded length."""
    if attention_mask is None:
        return torch.full(
            (input_values.shape[0],), input_values.shape[-1], dtype=torch.long, device=input_values.device
        )
    return attention_mask.long().sum(-1)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of `hidden (batch, time, dim)` counting only positions where `mask` is True."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def zero_padded_frames(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set padded frames of `hidden (batch, time, ...)` to zero.

    Convolutions over time read their neighbours; zeroing the padding after every layer makes a
    clip's valid frames see the same zeros whether it is alone or inside a padded batch.
    """
    shape = mask.shape + (1,) * (hidden.dim() - mask.dim())
    return hidden * mask.view(shape).to(hidden.dtype)


# ----------------------------------------------------------------------------------------------
# Log-mel front-end
# ----------------------------------------------------------------------------------------------


def checked_pitch_ids(
    pitch_ids: torch.Tensor | None, frame_mask: torch.Tensor, pitch_bins: int, hop_length: int
) -> torch.Tensor:
    """The feature extractor's `pitch_ids (batch, frames)`, checked against the log-mel's frames."""
    if pitch_ids is None:
        raise ValueError(
            "pitch_ids are required by this model (it reads F0). Prepare the audio with the model's "
            "feature extractor created with compute_pitch=True (e.g. "
            "EmotionFeatureExtractor(**model.config.feature_extractor_kwargs()) or "
            "AutoFeatureExtractor.from_pretrained(<saved model>))."
        )
    if pitch_ids.shape[:2] != frame_mask.shape:
        raise ValueError(
            f"pitch_ids have {tuple(pitch_ids.shape)} frames but the log-mel has {tuple(frame_mask.shape)}: "
            f"the feature extractor's hop_length must equal the model's hop_length ({hop_length})."
        )
    if not _tracing() and (pitch_ids.min() < 0 or pitch_ids.max() > pitch_bins):
        # A value check cannot be part of an exported graph (it depends on the data).
        raise ValueError(f"pitch_ids must lie in [0, {pitch_bins}] (0 = unvoiced).")
    return pitch_ids


def _tracing() -> bool:
    """True while torch.export, dynamo or the TorchScript tracer records the model."""
    compiler = getattr(torch, "compiler", None)
    exporting = getattr(compiler, "is_exporting", None)
    compiling = getattr(compiler, "is_compiling", None)
    return bool(
        torch.jit.is_tracing()
        or (exporting is not None and exporting())
        or (compiling is not None and compiling())
    )


def warp_frequency_axis(magnitude: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton, 2013) of a linear-frequency spectrogram
    `(batch, bins, frames)`: bin `k` of clip `b` takes the (linearly interpolated) value at bin
    `k / factors[b]`, so a factor above 1 moves formants and harmonics up. Bins read from beyond the
    top edge take the top bin's value (the band above Nyquist is not known)."""
    bins = magnitude.shape[1]
    source = torch.arange(bins, device=magnitude.device, dtype=magnitude.dtype)[None, :] / factors[:, None]
    source = source.clamp(max=bins - 1)
    low = source.floor().long().clamp(max=bins - 2)
    fraction = (source - low.to(source.dtype)).unsqueeze(-1)
    frames = magnitude.shape[2]
    below = magnitude.gather(1, low.unsqueeze(-1).expand(-1, -1, frames))
    above = magnitude.gather(1, (low + 1).unsqueeze(-1).expand(-1, -1, frames))
    return below + fraction * (above - below)


class LogMelSpectrogram(nn.Module):
    """Log-mel spectrogram of a padded waveform batch, computed on the model's device.

    Uses `torch.stft` (centred frames, zero padding at the edges) and the Slaney mel filter bank
    of `transformers.audio_utils`. Samples beyond each clip's length are zeroed first, so a clip's
    frames are identical alone and inside a padded batch. A clip of `n` samples has
    `1 + n // hop_length` frames. The filter bank and window are derived from the constructor
    arguments and are not part of the state dict.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 90.0,
        f_max: float | None = 7600.0,
        power: float = 1.0,
        log_floor: float = 1e-5,
    ):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max or sampling_rate / 2
        self.power = power
        self.log_floor = log_floor
        self._filters: torch.Tensor | None = None

    def _filter_bank(self, device: torch.device) -> torch.Tensor:
        if self._filters is None or self._filters.device != device:
            filters = mel_filter_bank(
                num_frequency_bins=self.n_fft // 2 + 1,
                num_mel_filters=self.n_mels,
                min_frequency=self.f_min,
                max_frequency=self.f_max,
                sampling_rate=self.sampling_rate,
                norm="slaney",
                mel_scale="slaney",
            )
            self._filters = torch.from_numpy(np.asarray(filters, dtype=np.float32)).to(device)
        return self._filters

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.hop_length, rounding_mode="floor") + 1

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor, warp_factors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(log_mel (batch, frames, n_mels), frame_lengths (batch,))`.

        `warp_factors (batch,)`, when given, scales each clip's frequency axis before the mel filter
        bank (`warp_frequency_axis`).
        """
        waveform = waveform.float() * lengths_to_mask(lengths, waveform.shape[-1]).float()
        window = torch.hann_window(self.win_length, device=waveform.device)
        spec = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=not torch.jit.is_tracing(),
        )
        # The TorchScript ONNX exporter has no complex tensors: it gets (real, imaginary) pairs.
        magnitude = spec.abs() if spec.is_complex() else spec.pow(2).sum(-1).sqrt()
        if self.power != 1.0:
            magnitude = magnitude.pow(self.power)
        if warp_factors is not None:
            magnitude = warp_frequency_axis(magnitude, warp_factors)
        mel = torch.matmul(magnitude.transpose(1, 2), self._filter_bank(waveform.device))
        frame_lengths = self.num_frames(lengths)
        log_mel = torch.log(mel.clamp(min=self.log_floor))
        log_mel = zero_padded_frames(log_mel, lengths_to_mask(frame_lengths, log_mel.shape[1]))
        return log_mel, frame_lengths


def normalize_per_clip(
    features: torch.Tensor, frame_lengths: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Mean/variance normalisation of `features (batch, frames, bins)` per clip and bin, over valid frames."""
    mask = lengths_to_mask(frame_lengths, features.shape[1])
    mean = masked_mean(features, mask).unsqueeze(1)
    var = masked_mean((features - mean) ** 2, mask).unsqueeze(1)
    return zero_padded_frames((features - mean) / torch.sqrt(var + eps), mask)


# ----------------------------------------------------------------------------------------------
# Pooling and heads
# ----------------------------------------------------------------------------------------------


class MeanPooling(nn.Module):
    """Mean over valid frames."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.output_size = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(hidden, mask)


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over valid frames, concatenated (x-vector statistics pooling)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.output_size = 2 * hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(hidden, mask)
        var = masked_mean((hidden - mean.unsqueeze(1)) ** 2, mask)
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=-1)


class AttentiveStatisticsPooling(nn.Module):
    """Attentive statistics pooling (Okabe et al., Interspeech 2018): attention-weighted mean and
    standard deviation over valid frames, concatenated."""

    def __init__(self, hidden_size: int, attention_size: int = 128):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(hidden_size, attention_size), nn.Tanh(), nn.Linear(attention_size, 1)
        )
        self.output_size = 2 * hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.attention(hidden).squeeze(-1).float()
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1).to(hidden.dtype).unsqueeze(-1)
        mean = (hidden * weights).sum(1)
        var = (weights * (hidden - mean.unsqueeze(1)) ** 2).sum(1)
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=-1)


class AttentionPooling(nn.Module):
    """Single-head additive attention pooling over valid frames (weighted mean only)."""

    def __init__(self, hidden_size: int, attention_size: int = 128):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(hidden_size, attention_size), nn.Tanh(), nn.Linear(attention_size, 1)
        )
        self.output_size = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.attention(hidden).squeeze(-1).float()
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1).to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1)


POOLING_CLASSES = {
    "mean": MeanPooling,
    "statistics": StatisticsPooling,
    "attentive_statistics": AttentiveStatisticsPooling,
    "attention": AttentionPooling,
}


def build_pooling(kind: str, hidden_size: int, attention_size: int = 128) -> nn.Module:
    if kind not in POOLING_CLASSES:
        raise ValueError(f"Unknown pooling {kind!r}; choose one of {sorted(POOLING_CLASSES)}.")
    if kind in ("mean", "statistics"):
        return POOLING_CLASSES[kind](hidden_size)
    return POOLING_CLASSES[kind](hidden_size, attention_size)


class ClassificationHead(nn.Module):
    """dense → tanh → dropout → out projection."""

    def __init__(self, input_size: int, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(pooled))))


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: list[float] | None = None,
    focal_gamma: float = 0.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy (optionally class-weighted and label-smoothed) or focal loss.

    Labels equal to -100 are ignored. With `focal_gamma > 0` the loss is the focal loss of Lin et
    al. (2017), `-(1 - p_t)^gamma * log p_t`, weighted by `class_weights` when given.
    """
    logits = logits.float()
    weight = None
    if class_weights is not None:
        weight = torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if focal_gamma <= 0:
        return F.cross_entropy(
            logits, labels, weight=weight, label_smoothing=label_smoothing, ignore_index=-100
        )
    valid = labels != -100
    if not valid.any():
        return logits.sum() * 0.0
    logits, labels = logits[valid], labels[valid]
    log_probs = F.log_softmax(logits, dim=-1)
    log_pt = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_pt.exp()) ** focal_gamma) * log_pt
    if weight is not None:
        sample_weight = weight[labels]
        return (loss * sample_weight).sum() / sample_weight.sum()
    return loss.mean()


def ctc_loss(
    logits: torch.Tensor,
    frame_lengths: torch.Tensor,
    labels: torch.Tensor,
    blank_id: int,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC loss over the clips that have a transcript.

    `labels` are padded with -100. Clips whose label row is empty (no transcript) are left out
    instead of being trained towards an all-blank output.
    """
    label_mask = labels >= 0
    target_lengths = label_mask.sum(-1)
    has_target = target_lengths > 0
    if not has_target.any():
        return logits.sum() * 0.0
    logits, frame_lengths = logits[has_target], frame_lengths[has_target]
    labels, label_mask, target_lengths = (
        labels[has_target],
        label_mask[has_target],
        target_lengths[has_target],
    )
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    targets = labels.masked_select(label_mask)
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(
            log_probs,
            targets,
            frame_lengths,
            target_lengths,
            blank=blank_id,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )


def emotion_loss(logits: torch.Tensor, labels: torch.Tensor | None, config) -> torch.Tensor | None:
    """`classification_loss` with the config's `class_weights`, `focal_gamma` and
    `label_smoothing`; None without labels."""
    if labels is None:
        return None
    return classification_loss(
        logits, labels, config.class_weights, config.focal_gamma, config.label_smoothing
    )


def ctc_loss_from_config(
    ctc_logits: torch.Tensor, frame_lengths: torch.Tensor, ctc_labels: torch.Tensor | None, config
) -> torch.Tensor | None:
    """`ctc_loss` with the config's blank (`pad_token_id`), reduction and `ctc_zero_infinity`,
    after checking the label ids against `vocab_size`; None without labels."""
    if ctc_labels is None:
        return None
    if ctc_labels.max() >= config.vocab_size:
        raise ValueError(f"ctc_labels contain ids >= vocab_size ({config.vocab_size}).")
    return ctc_loss(
        ctc_logits,
        frame_lengths,
        ctc_labels,
        blank_id=config.pad_token_id,
        reduction=config.ctc_loss_reduction,
        zero_infinity=config.ctc_zero_infinity,
    )


def weighted_sum(terms: list[tuple[float, torch.Tensor | None]]) -> torch.Tensor | None:
    """Sum of `weight * term` over terms that exist and have a positive weight; None if none."""
    total = None
    for weight, term in terms:
        if term is None or weight <= 0:
            continue
        total = weight * term if total is None else total + weight * term
    return total
