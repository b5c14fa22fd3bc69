"""Spectrogram emotion models trained from scratch (family 5): a CNN + Transformer encoder over the
log-mel, and a segment-level deep CNN + BiLSTM + attention over log-mel, Δ and ΔΔ.

Both take the raw waveform and compute the log-mel on the model's device. Every length-dependent
step uses each clip's own length, so padding a batch does not change a clip's prediction in eval
mode; in training mode the CNN+Transformer's BatchNorm statistics also skip padded frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_spectrogram_emotion import (
    CNNTransformerEmotionConfig,
    SegmentCRNNEmotionConfig,
    SpectrogramEmotionConfig,
    pool_pairs,
)
from .emotion_layers import (
    AttentionPooling,
    LogMelSpectrogram,
    add_auto_model_entries,
    build_pooling,
    checked_pitch_ids,
    classification_loss,
    is_exporting,
    lengths_to_mask,
    normalize_per_clip,
    sample_lengths,
    zero_padded_frames,
)

try:  # transformers >= 5 initialisers skip weights already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init


@dataclass
class SpectrogramClassifierOutput(ModelOutput):
    """Output of [`CNNTransformerForAudioClassification`] and [`SegmentCRNNForAudioClassification`].

    Args:
        loss: Emotion loss, when `labels` are given.
        logits: Emotion logits `(batch, num_labels)`.
        embeddings: Pooled utterance embedding fed to the classifier `(batch, dim)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def delta_features(features: torch.Tensor, lengths: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Regression deltas of `features (batch, frames, bins)` along time:
    `d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2)`, `N = width // 2`.

    Frames before the start and after each clip's own last valid frame are replicated edge frames
    (as `librosa.feature.delta(..., mode="nearest")`), so the padding of a batch never leaks in.
    Padded frames of the result are zero.
    """
    half = width // 2
    frames = features.shape[1]
    positions = torch.arange(-half, frames + half, device=features.device).unsqueeze(0)
    last = (lengths - 1).clamp(min=0).unsqueeze(1)
    index = torch.minimum(positions.clamp(min=0), last)
    extended = features.gather(1, index.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
    delta = torch.zeros_like(features)
    for n in range(1, half + 1):  # a loop over the few filter taps, not over frames
        delta = delta + n * (
            extended[:, half + n : half + n + frames] - extended[:, half - n : half - n + frames]
        )
    delta = delta / (2 * sum(n * n for n in range(1, half + 1)))
    return zero_padded_frames(delta, lengths_to_mask(lengths, frames))


def stack_deltas(features: torch.Tensor, lengths: torch.Tensor, order: int, width: int) -> torch.Tensor:
    """`(batch, 1 + order, frames, bins)`: the features, then their Δ (and the Δ of that, ΔΔ)."""
    channels = [features]
    for _ in range(order):
        channels.append(delta_features(channels[-1], lengths, width))
    return torch.stack(channels, dim=1)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """The Transformer's sinusoidal position encoding `(length, dim)`; computed on the fly, not stored."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    encoding = torch.zeros(length, dim, device=device)
    encoding[:, 0::2] = torch.sin(position * frequencies)
    encoding[:, 1::2] = torch.cos(position * frequencies)
    return encoding


def zero_padded_steps(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`zero_padded_frames` for feature maps `(batch, channels, time, freq)`."""
    return hidden * mask[:, None, :, None].to(hidden.dtype)


@dataclass
class FeatureMixing:
    """Mixup of one training batch: clip `i` becomes `weight * x_i + (1 - weight) * x_permutation[i]`
    and keeps the longer of the two lengths; the loss mixes the two clips' losses the same way."""

    permutation: torch.Tensor
    weight: float

    @classmethod
    def draw(cls, batch_size: int, alpha: float, device: torch.device) -> FeatureMixing:
        weight = float(torch.distributions.Beta(alpha, alpha).sample())
        return cls(torch.randperm(batch_size, device=device), weight)

    def apply(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`features (batch, ...)` with padded frames zero, and their lengths."""
        mixed = self.weight * features + (1.0 - self.weight) * features[self.permutation]
        return mixed, torch.maximum(lengths, lengths[self.permutation])


def random_spans(extent: torch.Tensor, num_spans: int, max_width: int, size: int) -> torch.Tensor:
    """Boolean `(batch, size)` mask of `num_spans` random spans per row, each of width uniform in
    `[0, min(max_width, extent)]`, lying inside the row's first `extent` positions."""
    batch = extent.shape[0]
    device = extent.device
    extent = extent.unsqueeze(1)
    widths = torch.floor(torch.rand(batch, num_spans, device=device) * (max_width + 1)).long()
    widths = torch.minimum(widths, extent)
    starts = torch.floor(torch.rand(batch, num_spans, device=device) * (extent - widths + 1)).long()
    positions = torch.arange(size, device=device).view(1, 1, size)
    inside = (positions >= starts.unsqueeze(-1)) & (positions < (starts + widths).unsqueeze(-1))
    return inside.any(1)


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


class SpecAugment(nn.Module):
    """SpecAugment time and frequency masking (Park et al., 2019), in training mode only.

    Masks lie inside each clip's valid frames; masked values are replaced by the clip's mean per
    channel (0 after utterance normalisation), so they carry no energy cue. Padding stays zero.
    """

    def __init__(self, num_time_masks: int, time_mask_width: int, num_freq_masks: int, freq_mask_width: int):
        super().__init__()
        self.num_time_masks = num_time_masks
        self.time_mask_width = time_mask_width
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width

    @property
    def enabled(self) -> bool:
        return (self.num_time_masks > 0 and self.time_mask_width > 0) or (
            self.num_freq_masks > 0 and self.freq_mask_width > 0
        )

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """`features (batch, frames, bins)` or `(batch, channels, frames, bins)`, same shape out."""
        if not self.training or not self.enabled:
            return features
        spectrogram = features if features.dim() == 4 else features.unsqueeze(1)
        batch, _, frames, bins = spectrogram.shape
        valid = lengths_to_mask(frame_lengths, frames)
        drop = torch.zeros(batch, frames, bins, dtype=torch.bool, device=features.device)
        if self.num_time_masks > 0 and self.time_mask_width > 0:
            spans = random_spans(frame_lengths, self.num_time_masks, self.time_mask_width, frames)
            drop = drop | spans.unsqueeze(-1)
        if self.num_freq_masks > 0 and self.freq_mask_width > 0:
            all_bins = torch.full_like(frame_lengths, bins)
            spans = random_spans(all_bins, self.num_freq_masks, self.freq_mask_width, bins)
            drop = drop | spans.unsqueeze(1)
        drop = (drop & valid.unsqueeze(-1)).unsqueeze(1)
        weights = valid[:, None, :, None].to(spectrogram.dtype)
        fill = (spectrogram * weights).sum((2, 3), keepdim=True) / (weights.sum((2, 3), keepdim=True) * bins)
        spectrogram = torch.where(drop, fill, spectrogram)
        return spectrogram if features.dim() == 4 else spectrogram.squeeze(1)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over `(batch, channels, time, freq)` whose training statistics count only valid
    time steps, so batch padding does not bias them. Without a mask, or in eval mode, it is
    `nn.BatchNorm2d` (same parameters and buffers)."""

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # A batch without padding takes the fused kernel (several times fewer passes on CPU).
        if mask is None or not self.training or (not is_exporting() and bool(mask.all())):
            return super().forward(hidden)
        # Sums over frequency first, then masked sums over the small (batch, channels, time)
        # tensors: few passes over the large feature map (this layer dominates a CPU step).
        weights = mask[:, None, :].to(hidden.dtype)
        count = weights.sum() * hidden.shape[-1]
        mean = (hidden.sum(-1) * weights).sum((0, 2)) / count
        mean_square = (hidden.square().sum(-1) * weights).sum((0, 2)) / count
        var = (mean_square - mean.square()).clamp(min=0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(unbiased.detach(), factor)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias
        return torch.addcmul(shift.view(1, -1, 1, 1), hidden, scale.view(1, -1, 1, 1))


class ConvBlock(nn.Module):
    """conv (same padding) → BatchNorm → ReLU → max-pool (floor mode).

    With a time mask, BatchNorm statistics skip padded steps and the output's padded steps are
    zeroed, so the next block sees the same zeros around a clip alone or in a batch.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pool: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = MaskedBatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(pool, stride=pool) if pool != (1, 1) else nn.Identity()
        self.time_pool = pool[0]

    def forward(
        self, hidden: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = None if lengths is None else lengths_to_mask(lengths, hidden.shape[2])
        hidden = self.pool(F.relu(self.norm(self.conv(hidden), mask)))
        if lengths is None:
            return hidden, None
        # A pooled step is valid when its whole window is: floor division, as the pooling itself.
        lengths = torch.div(lengths, self.time_pool, rounding_mode="floor")
        # A batch without padding skips the zeroing; the check reads a tensor value, so it is left
        # out while exporting (ONNX export traces one graph for every batch).
        if not is_exporting() and bool((lengths >= hidden.shape[2]).all()):
            return hidden, lengths
        return zero_padded_steps(hidden, lengths_to_mask(lengths, hidden.shape[2])), lengths


class TimeConvBlock(nn.Module):
    """Residual 1-D conv ("same" padding, optional dilation) → BatchNorm → ReLU over a step
    sequence `(batch, steps, channels)`, a TDNN layer. BatchNorm statistics skip padded steps and
    padded steps are zeroed, so a clip's output does not depend on the batch's padding."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.norm = MaskedBatchNorm2d(channels)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        update = self.conv(hidden.transpose(1, 2)).unsqueeze(-1)
        update = F.relu(self.norm(update, mask)).squeeze(-1).transpose(1, 2)
        return zero_padded_frames(hidden + update, mask)


class LearnableScalePositionalEncoding(nn.Module):
    """Adds `alpha * PE` to the input, with PE the sinusoidal encoding and `alpha` a learned scalar
    (initialised to 1), so the model can tune how strongly position competes with content."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        encoding = sinusoidal_positions(hidden.shape[1], self.hidden_size, hidden.device).to(hidden.dtype)
        return hidden + self.alpha * encoding.unsqueeze(0)


class LogMelFrontEnd(nn.Module):
    """Waveform → log-mel `(batch, frames, n_mels)` with per-clip normalisation and frame lengths.
    In training, `frequency_warp` perturbs each clip's vocal tract length before the filter bank."""

    def __init__(self, config: SpectrogramEmotionConfig):
        super().__init__()
        self.mel = LogMelSpectrogram(
            sampling_rate=config.sampling_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
        )
        self.normalization = config.mel_normalization
        self.frequency_warp = config.frequency_warp
        # Per-band statistics of the training data (running statistics, no affine parameters).
        self.corpus_norm = (
            MaskedBatchNorm2d(config.n_mels, affine=False) if self.normalization == "corpus" else None
        )

    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        warp_factors = None
        if self.training and self.frequency_warp > 0:
            uniform = torch.rand(input_values.shape[0], device=input_values.device)
            warp_factors = 1.0 + self.frequency_warp * (2.0 * uniform - 1.0)
        lengths = sample_lengths(input_values, attention_mask)
        log_mel, frame_lengths = self.mel(input_values, lengths, warp_factors)
        if self.normalization == "utterance":
            log_mel = normalize_per_clip(log_mel, frame_lengths)
        elif self.corpus_norm is not None:
            mask = lengths_to_mask(frame_lengths, log_mel.shape[1])
            bands = log_mel.transpose(1, 2).unsqueeze(-1)  # (batch, n_mels, frames, 1): bands as channels
            log_mel = self.corpus_norm(bands, mask).squeeze(-1).transpose(1, 2)
            log_mel = zero_padded_frames(log_mel, mask)
        return log_mel, frame_lengths


class PitchFeatures(nn.Module):
    """`pitch_ids` → one vector per pooled CNN step: each mel frame's voicing and normalised log-F0
    through dense → ReLU, averaged over the frames of the step (time is pooled in floor mode, like
    the CNN, so a valid step only covers valid frames)."""

    def __init__(self, config: CNNTransformerEmotionConfig):
        super().__init__()
        self.pitch_bins = config.pitch_bins
        self.hop_length = config.hop_length
        self.frames_per_step = config.min_input_frames
        self.dense = nn.Linear(2, config.pitch_embedding_size)

    def frame_features(self, pitch_ids: torch.Tensor | None, frame_mask: torch.Tensor) -> torch.Tensor:
        """`(batch, frames, 2)`: voicing, and log-F0 in standard deviations / 4 (0 where unvoiced)."""
        ids = checked_pitch_ids(pitch_ids, frame_mask, self.pitch_bins, self.hop_length)
        voiced = (ids > 0).float()
        # ids 1..pitch_bins span -4..+4 standard deviations (EmotionFeatureExtractor.quantize_f0).
        level = (2.0 * (ids.float() - 1.0) / (self.pitch_bins - 1) - 1.0) * voiced
        return zero_padded_frames(torch.stack([voiced, level], dim=-1), frame_mask)

    def forward(self, frames: torch.Tensor, steps: int) -> torch.Tensor:
        hidden = F.relu(self.dense(frames))
        usable = steps * self.frames_per_step
        hidden = hidden[:, :usable]
        return hidden.reshape(hidden.shape[0], steps, self.frames_per_step, -1).mean(2)


class CNNTransformerEncoder(nn.Module):
    """Log-mel (and its Δ, ΔΔ as channels, `delta_order`) → SpecAugment (→ mixup) → CNN blocks →
    frequency folding → linear → 1-D convs → `alpha * PE` → Transformer (the convolutions, the CNN
    and the Transformer are each optional).

    Returns the output `(batch, steps, hidden_size)` and its valid-step mask.
    """

    def __init__(self, config: CNNTransformerEmotionConfig):
        super().__init__()
        self.front_end = LogMelFrontEnd(config)
        self.spec_augment = SpecAugment(
            config.num_time_masks, config.time_mask_width, config.num_freq_masks, config.freq_mask_width
        )
        pools = pool_pairs(config.pool_sizes)
        self.delta_order = config.delta_order
        self.delta_width = config.delta_width
        in_channels = [1 + config.delta_order, *config.conv_channels[:-1]]
        self.conv_blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, kernel, pool)
            for c_in, c_out, kernel, pool in zip(
                in_channels, config.conv_channels, config.conv_kernel_sizes, pools
            )
        )
        self.min_frames = config.min_input_frames
        self.frequency_reduction = config.frequency_reduction
        if not config.conv_channels:
            folded = config.n_mels
        elif config.frequency_reduction == "flatten":
            folded = config.conv_channels[-1] * config.pooled_mel_bands
        else:
            folded = config.conv_channels[-1]
        self.pitch = PitchFeatures(config) if config.pitch_embedding_size else None
        self.projection = nn.Linear(folded + config.pitch_embedding_size, config.hidden_size)
        self.time_convs = nn.ModuleList(
            TimeConvBlock(config.hidden_size, kernel, dilation)
            for kernel, dilation in zip(config.time_conv_kernel_sizes, config.time_conv_dilations)
        )
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.position_encoding = self.transformer = None
        if config.num_hidden_layers == 0:
            return
        self.position_encoding = LearnableScalePositionalEncoding(config.hidden_size)
        layer = nn.TransformerEncoderLayer(
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
            dropout=config.transformer_dropout,
            activation=config.transformer_activation,
            batch_first=True,
            norm_first=config.transformer_norm_first,
        )
        self.transformer = nn.TransformerEncoder(layer, config.num_hidden_layers, enable_nested_tensor=False)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        mixing: FeatureMixing | None = None,
        pitch_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_mel, lengths = self.front_end(input_values, attention_mask)
        pitch = None
        if self.pitch is not None:
            pitch = self.pitch.frame_features(pitch_ids, lengths_to_mask(lengths, log_mel.shape[1]))
        spectrogram = stack_deltas(log_mel, lengths, self.delta_order, self.delta_width)
        spectrogram = self.spec_augment(spectrogram, lengths)
        if mixing is not None:
            if pitch is not None:
                pitch, _ = mixing.apply(pitch, lengths)
            spectrogram, lengths = mixing.apply(spectrogram, lengths)
        # Clips too short to survive the time poolings get zero frames appended (inside the clip).
        if spectrogram.shape[2] < self.min_frames:
            spectrogram = F.pad(spectrogram, (0, 0, 0, self.min_frames - spectrogram.shape[2]))
            if pitch is not None:
                pitch = F.pad(pitch, (0, 0, 0, self.min_frames - pitch.shape[1]))
        lengths = lengths.clamp(min=self.min_frames)
        hidden = spectrogram
        for block in self.conv_blocks:
            hidden, lengths = block(hidden, lengths)
        batch, channels, steps, bands = hidden.shape
        if self.frequency_reduction == "flatten" or not self.conv_blocks:
            hidden = hidden.permute(0, 2, 1, 3).reshape(batch, steps, channels * bands)
        else:
            hidden = hidden.mean(-1).transpose(1, 2)
        if pitch is not None:
            hidden = torch.cat([hidden, self.pitch(pitch, steps)], dim=-1)
        mask = lengths_to_mask(lengths, steps)
        hidden = zero_padded_frames(self.projection(hidden), mask)
        for layer in self.time_convs:
            hidden = layer(hidden, mask)
        if self.transformer is None:
            return zero_padded_frames(self.dropout(hidden), mask), mask
        hidden = self.dropout(self.position_encoding(hidden))
        hidden = self.transformer(hidden, src_key_padding_mask=~mask)
        return hidden, mask


class SegmentCRNNEncoder(nn.Module):
    """Log-mel, Δ, ΔΔ → SpecAugment → overlapping segments → per-segment CNN → BiLSTM.

    Segments are cut from each clip's own length; only valid segments go through the CNN.
    Returns the BiLSTM output `(batch, segments, 2 * lstm_hidden_size)` and the valid-segment mask.
    """

    def __init__(self, config: SegmentCRNNEmotionConfig):
        super().__init__()
        self.front_end = LogMelFrontEnd(config)
        self.spec_augment = SpecAugment(
            config.num_time_masks, config.time_mask_width, config.num_freq_masks, config.freq_mask_width
        )
        self.delta_width = config.delta_width
        self.segment_length = config.segment_length
        self.segment_hop = config.segment_hop
        in_channels = [3, *config.conv_channels[:-1]]
        self.conv_blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, kernel, pool)
            for c_in, c_out, kernel, pool in zip(
                in_channels, config.conv_channels, config.conv_kernel_sizes, pool_pairs(config.pool_sizes)
            )
        )
        self.segment_dropout = nn.Dropout(config.segment_dropout)
        self.lstm = nn.LSTM(
            config.conv_channels[-1],
            config.lstm_hidden_size,
            num_layers=config.lstm_num_layers,
            dropout=config.lstm_dropout if config.lstm_num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )
        self.output_size = 2 * config.lstm_hidden_size

    def num_segments(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        """`1 + ceil(max(n - segment_length, 0) / segment_hop)` segments for a clip of `n` frames."""
        overhang = (frame_lengths - self.segment_length).clamp(min=0)
        return 1 + torch.div(overhang + self.segment_hop - 1, self.segment_hop, rounding_mode="floor")

    def features(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None):
        """Stacked `(batch, 3, frames, n_mels)` log-mel, Δ, ΔΔ (after SpecAugment) and frame lengths."""
        log_mel, lengths = self.front_end(input_values, attention_mask)
        return self.spec_augment(stack_deltas(log_mel, lengths, 2, self.delta_width), lengths), lengths

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        mixing: FeatureMixing | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, lengths = self.features(input_values, attention_mask)
        if mixing is not None:
            features, lengths = mixing.apply(features, lengths)
        counts = self.num_segments(lengths)
        num_segments = int(counts.max())
        needed = (num_segments - 1) * self.segment_hop + self.segment_length
        if features.shape[2] < needed:
            features = F.pad(features, (0, 0, 0, needed - features.shape[2]))
        # (batch, 3, segments, n_mels, segment_length) → (batch, segments, 3, segment_length, n_mels)
        segments = features.unfold(2, self.segment_length, self.segment_hop)[:, :, :num_segments]
        segments = segments.permute(0, 2, 1, 4, 3)
        mask = lengths_to_mask(counts, num_segments)
        hidden = segments[mask]
        for block in self.conv_blocks:
            hidden, _ = block(hidden)
        vectors = hidden.mean((2, 3))
        sequence = vectors.new_zeros(mask.shape[0], num_segments, vectors.shape[-1])
        sequence = sequence.masked_scatter(mask.unsqueeze(-1), vectors)
        packed = pack_padded_sequence(
            self.segment_dropout(sequence), counts.cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.lstm(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=num_segments)
        return output, mask


class MLPClassifier(nn.Module):
    """dense → ReLU or tanh → dropout → out projection."""

    def __init__(self, input_size: int, hidden_size: int, num_labels: int, dropout: float, activation: str):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.activation = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.activation(self.dense(pooled))))


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class SpectrogramEmotionPreTrainedModel(PreTrainedModel):
    config_class = SpectrogramEmotionConfig
    base_model_prefix = "encoder"
    main_input_name = "input_values"

    def _init_weights(self, module: nn.Module) -> None:
        # Trained from scratch: variance-preserving initialisation rather than the N(0, 0.02) of
        # fine-tuned models, which shrinks the signal through the CNN and the small MLP head.
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LearnableScalePositionalEncoding):
            init.constant_(module.alpha, 1.0)
        else:  # BatchNorm, LayerNorm, LSTM (Xavier), MultiheadAttention (its own reset)
            super()._init_weights(module)

    def _mixing(self, input_values: torch.Tensor, labels: torch.Tensor | None) -> FeatureMixing | None:
        """Mixup for this batch: in training, with labels, when `mixup_alpha > 0`."""
        if not self.training or labels is None or self.config.mixup_alpha <= 0 or input_values.shape[0] < 2:
            return None
        return FeatureMixing.draw(input_values.shape[0], self.config.mixup_alpha, input_values.device)

    def _loss(
        self, logits: torch.Tensor, labels: torch.Tensor | None, mixing: FeatureMixing | None = None
    ) -> torch.Tensor | None:
        if labels is None:
            return None
        config = self.config
        loss = classification_loss(
            logits, labels, config.class_weights, config.focal_gamma, config.label_smoothing
        )
        if mixing is None:
            return loss
        other = classification_loss(
            logits,
            labels[mixing.permutation],
            config.class_weights,
            config.focal_gamma,
            config.label_smoothing,
        )
        return mixing.weight * loss + (1.0 - mixing.weight) * other


class CNNTransformerForAudioClassification(SpectrogramEmotionPreTrainedModel):
    """Emotion classifier trained from scratch on the log-mel: 2-D CNN blocks, the frequency axis
    folded into one vector per pooled frame, optional 1-D convolutions over time, a Transformer
    encoder with a learnable-scale sinusoidal position encoding, masked pooling over valid steps
    (mean, statistics or attentive statistics) and a linear or one-hidden-layer classifier."""

    config_class = CNNTransformerEmotionConfig

    def __init__(self, config: CNNTransformerEmotionConfig):
        super().__init__(config)
        self.encoder = CNNTransformerEncoder(config)
        self.pooler = build_pooling(config.pooling, config.hidden_size, config.pooling_attention_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        if config.classifier_hidden_size:
            self.classifier = MLPClassifier(
                self.pooler.output_size,
                config.classifier_hidden_size,
                config.num_labels,
                config.classifier_dropout,
                "relu",
            )
        else:
            self.classifier = nn.Linear(self.pooler.output_size, config.num_labels)
        add_auto_model_entries(config, self)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pitch_ids: torch.Tensor | None = None,
    ) -> SpectrogramClassifierOutput:
        r"""
        pitch_ids (`torch.LongTensor` of shape `(batch, frames)`, *optional*): Quantised F0 per mel
            frame from the feature extractor; required when `config.pitch_embedding_size > 0`.
        """
        mixing = self._mixing(input_values, labels)
        hidden, mask = self.encoder(input_values, attention_mask, mixing, pitch_ids)
        pooled = self.pooler(hidden, mask)
        logits = self.classifier(self.dropout(pooled))
        loss = self._loss(logits, labels, mixing)
        return SpectrogramClassifierOutput(loss=loss, logits=logits, embeddings=pooled)


class SegmentCRNNForAudioClassification(SpectrogramEmotionPreTrainedModel):
    """Emotion classifier trained from scratch on fixed-length log-mel segments: log-mel, Δ and ΔΔ
    as three channels, a deep CNN per segment, a BiLSTM over the segment sequence, masked
    attention pooling over segments and an MLP classifier."""

    config_class = SegmentCRNNEmotionConfig

    def __init__(self, config: SegmentCRNNEmotionConfig):
        super().__init__(config)
        self.encoder = SegmentCRNNEncoder(config)
        self.pooler = AttentionPooling(self.encoder.output_size, config.pooling_attention_size)
        self.classifier = MLPClassifier(
            self.encoder.output_size,
            config.classifier_hidden_size,
            config.num_labels,
            config.classifier_dropout,
            config.classifier_activation,
        )
        add_auto_model_entries(config, self)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SpectrogramClassifierOutput:
        mixing = self._mixing(input_values, labels)
        hidden, mask = self.encoder(input_values, attention_mask, mixing)
        pooled = self.pooler(hidden, mask)
        logits = self.classifier(pooled)
        loss = self._loss(logits, labels, mixing)
        return SpectrogramClassifierOutput(loss=loss, logits=logits, embeddings=pooled)
