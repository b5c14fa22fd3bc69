"""SpeechSplit-style decomposition blocks (Qian et al., ICML 2020, "Unsupervised Speech
Decomposition via Triple Information Bottleneck"), made length-aware.

Every block works on `(batch, frames, features)` tensors with per-clip frame lengths, and a clip's
valid outputs do not depend on the padding of its batch: convolutions see zeroed padding,
GroupNorm statistics use valid frames only, LSTMs run on packed sequences, and code down- and
upsampling use each clip's own length. SpeechSplit itself trains on fixed-length padded crops and
has none of this.

Remote code: imports only torch and the standard library besides the sibling `emotion_layers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .emotion_layers import lengths_to_mask, masked_mean, zero_padded_frames

# ----------------------------------------------------------------------------------------------
# Length-aware helpers
# ----------------------------------------------------------------------------------------------


def reverse_within_lengths(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first `lengths[i]` frames of each clip of `hidden (batch, frames, dim)`; padded
    frames stay where they are. Applying it twice is the identity."""
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    reversed_positions = lengths.to(hidden.device).unsqueeze(1) - 1 - positions
    index = torch.where(reversed_positions >= 0, reversed_positions, positions)
    return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def run_lstm(lstm: nn.LSTM, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a batch-first LSTM on the first `lengths[i]` frames of each clip; padded outputs are 0.

    Gives the outputs of `pack_padded_sequence` → LSTM → `pad_packed_sequence` without packing:
    the forward direction runs on the padded batch (its valid outputs never see the padding) and
    the reverse direction on each clip reversed within its own length, one layer at a time. On
    CPU, autograd through a packed LSTM slices the packed input once per time step and every
    slice's backward zero-fills a gradient the size of the whole input, which is quadratic in
    the frames: SpeechSplit's 3 x BiLSTM-512 decoder on 4 clips of 4 s took 112 s per
    forward + backward packed and 9 s like this (benchmarks/bench_step.py). cuDNN runs packed
    sequences natively, so CUDA keeps packing.
    """
    if lstm.proj_size or not lstm.batch_first:
        raise ValueError("run_lstm expects a batch-first LSTM without projections.")
    if hidden.device.type == "cuda":
        packed = pack_padded_sequence(hidden, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = lstm(packed)
        return pad_packed_sequence(outputs, batch_first=True, total_length=hidden.shape[1])[0]
    mask = lengths_to_mask(lengths.to(hidden.device), hidden.shape[1]).unsqueeze(-1)
    directions = ("", "_reverse") if lstm.bidirectional else ("",)
    batch = hidden.shape[0]
    zeros = hidden.new_zeros(1, batch, lstm.hidden_size)
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if lstm.bias else ("weight_ih", "weight_hh")
    for layer in range(lstm.num_layers):
        if layer > 0 and lstm.dropout > 0:
            hidden = F.dropout(hidden, lstm.dropout, lstm.training)
        outputs = []
        for suffix in directions:
            weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in names]
            source = reverse_within_lengths(hidden, lengths) if suffix else hidden
            output = torch.lstm(
                source, (zeros, zeros), weights, lstm.bias, 1, 0.0, lstm.training, False, True
            )[0]
            outputs.append(reverse_within_lengths(output, lengths) if suffix else output)
        hidden = (torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]) * mask
    return hidden


def downsample_codes(outputs: torch.Tensor, lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """SpeechSplit's code downsampling of BiLSTM `outputs (batch, frames, 2 * units)`.

    Code `k` is the forward output at frame `k * factor + factor - 1` and the backward output at
    frame `k * factor`, so that each code summarises its block of `factor` frames from both ends.
    A clip of `L` frames has `ceil(L / factor)` codes; when `L` is not a multiple of `factor`, the
    last code's forward half is read at the clip's last frame (SpeechSplit's crops always are
    multiples). Codes past a clip's end are zero. Returns `(batch, ceil(frames / factor), 2 * units)`.
    """
    batch, frames, width = outputs.shape
    units = width // 2
    num_codes = (frames + factor - 1) // factor  # not math.ceil: keeps the traced length symbolic
    starts = torch.arange(num_codes, device=outputs.device) * factor
    last = (lengths - 1).clamp(min=0).unsqueeze(1)
    forward_at = torch.minimum((starts + factor - 1).unsqueeze(0), last)
    backward_at = torch.minimum(starts.unsqueeze(0).expand(batch, -1), last)
    forward = outputs[..., :units].gather(1, forward_at.unsqueeze(-1).expand(-1, -1, units))
    backward = outputs[..., units:].gather(1, backward_at.unsqueeze(-1).expand(-1, -1, width - units))
    codes = torch.cat([forward, backward], dim=-1)
    code_lengths = torch.div(lengths + factor - 1, factor, rounding_mode="floor")
    return zero_padded_frames(codes, lengths_to_mask(code_lengths, num_codes))


def upsample_codes(codes: torch.Tensor, factor: int, lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat each code `factor` times (SpeechSplit) and cut to `frames`; padded frames are 0."""
    upsampled = codes.repeat_interleave(factor, dim=1)[:, :frames]
    if upsampled.shape[1] < frames:
        upsampled = F.pad(upsampled, (0, 0, 0, frames - upsampled.shape[1]))
    return zero_padded_frames(upsampled, lengths_to_mask(lengths, frames))


def interpolate_frames(
    hidden: torch.Tensor, lengths: torch.Tensor, target_lengths: torch.Tensor, target_frames: int
) -> torch.Tensor:
    """Linearly resample each clip of `hidden (batch, frames, dim)` from `lengths[i]` to
    `target_lengths[i]` frames (as `F.interpolate(mode="linear", align_corners=False)` on the clip
    alone), padded with zeros to `target_frames`. Used to bring 50 Hz SSL features to the mel rate."""
    positions = torch.arange(target_frames, device=hidden.device, dtype=torch.float32)
    scale = lengths.float() / target_lengths.clamp(min=1).float()
    source = ((positions.unsqueeze(0) + 0.5) * scale.unsqueeze(1) - 0.5).clamp(min=0.0)
    last = (lengths - 1).clamp(min=0).unsqueeze(1)
    lower = torch.minimum(source.floor().long(), last)
    upper = torch.minimum(lower + 1, last)
    weight = (source - lower.float()).clamp(0.0, 1.0).unsqueeze(-1).to(hidden.dtype)
    dim = hidden.shape[-1]
    low = hidden.gather(1, lower.unsqueeze(-1).expand(-1, -1, dim))
    high = hidden.gather(1, upper.unsqueeze(-1).expand(-1, -1, dim))
    out = low + weight * (high - low)
    return zero_padded_frames(out, lengths_to_mask(target_lengths, target_frames))


# ----------------------------------------------------------------------------------------------
# Blocks, small to large
# ----------------------------------------------------------------------------------------------


class MaskedGroupNorm(nn.Module):
    """GroupNorm over channels and valid frames only, with a per-channel affine.

    `nn.GroupNorm` on a padded `(batch, channels, frames)` batch pools its statistics over the
    padding too, so a clip's output would depend on its batch. This computes the same statistics
    (biased variance, per clip and group) over the first `lengths[i]` frames.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"{num_channels} channels cannot form {num_groups} equal groups.")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, frames, channels = hidden.shape
        grouped = hidden.float().view(batch, frames, self.num_groups, channels // self.num_groups)
        weights = mask.float().view(batch, frames, 1, 1)
        count = (weights.sum(1, keepdim=True) * grouped.shape[-1]).clamp(min=1.0)
        mean = (grouped * weights).sum(dim=(1, 3), keepdim=True) / count
        var = (((grouped - mean) ** 2) * weights).sum(dim=(1, 3), keepdim=True) / count
        normed = ((grouped - mean) * torch.rsqrt(var + self.eps)).view(batch, frames, channels)
        normed = normed.to(hidden.dtype) * self.weight + self.bias
        return zero_padded_frames(normed, mask)


class ConvNormBlock(nn.Module):
    """SpeechSplit's encoder layer: Conv1d (same padding) → GroupNorm → ReLU, masked."""

    def __init__(self, input_size: int, channels: int, kernel_size: int, group_size: int):
        super().__init__()
        self.conv = nn.Conv1d(input_size, channels, kernel_size, padding=kernel_size // 2)
        self.norm = MaskedGroupNorm(channels // group_size, channels)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.conv(zero_padded_frames(hidden, mask).transpose(1, 2)).transpose(1, 2)
        return zero_padded_frames(F.relu(self.norm(hidden, mask)), mask)


class RandomResampling(nn.Module):
    """SpeechSplit's random time-resampling (`InterpLnr`), per clip and only in training mode.

    Each clip's valid frames are cut into consecutive segments of random length in
    `[min_segment, max_segment]` frames; each segment is linearly resampled by a random length
    factor in `[min_scale, max_scale)`; the pieces are concatenated, then cut or zero-padded back
    to the clip's own length. The content and pitch paths are resampled jointly (concatenated along
    features) so they stay aligned with each other but not with the rhythm code. Unlike SpeechSplit,
    (a) only valid frames are read and the result keeps each clip's length (SpeechSplit resamples
    the whole padded crop to a fixed 192 frames), (b) a segment of `n` frames yields
    `≈ n * scale` frames, so a factor of 1 is the identity (SpeechSplit's mask drops the last frame
    of every segment), and (c) `max_segment` is inclusive (SpeechSplit's `randint` high is not).
    """

    def __init__(
        self,
        min_segment: int = 19,
        max_segment: int = 32,
        min_scale: float = 0.5,
        max_scale: float = 1.5,
        enabled: bool = True,
    ):
        super().__init__()
        self.min_segment = min_segment
        self.max_segment = max_segment
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.enabled = enabled

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.enabled):
            return hidden
        batch, frames, dim = hidden.shape
        device = hidden.device
        num_segments = frames // self.min_segment + 2
        steps_per_segment = math.ceil(self.max_segment * self.max_scale) + 1
        scales = torch.rand(batch, num_segments, 1, device=device) * (self.max_scale - self.min_scale)
        scales = scales + self.min_scale
        segment_lengths = torch.randint(
            self.min_segment, self.max_segment + 1, (batch, num_segments, 1), device=device
        )
        offsets = segment_lengths.cumsum(1) - segment_lengths
        # Output step j of a segment reads source position j / scale inside it.
        position = torch.arange(steps_per_segment, device=device).view(1, 1, -1) / scales
        floor = position.floor()
        fraction = position - floor
        source = (floor.long() + offsets).view(batch, -1)
        keep = (floor < segment_lengths).view(batch, -1) & (source < lengths.unsqueeze(1))
        rank = keep.long().cumsum(1) - 1
        keep &= rank < lengths.unsqueeze(1)
        rows, cols = keep.nonzero(as_tuple=True)
        lower = source[rows, cols]
        upper = torch.minimum(lower + 1, lengths[rows] - 1)
        weight = fraction.view(batch, -1)[rows, cols].unsqueeze(-1).to(hidden.dtype)
        values = hidden[rows, lower] * (1 - weight) + hidden[rows, upper] * weight
        out = hidden.new_zeros(batch, frames, dim)
        out[rows, rank[rows, cols]] = values
        return out


class CodeEncoder(nn.Module):
    """SpeechSplit encoder path: `ConvNormBlock`s, a BiLSTM and code downsampling.

    The convolutions and the recurrent summary are separate calls so that the content and pitch
    paths can be resampled jointly between their layers.
    """

    def __init__(
        self,
        input_size: int,
        channels: int,
        num_layers: int,
        kernel_size: int,
        group_size: int,
        lstm_size: int,
        lstm_layers: int,
        downsample: int,
    ):
        super().__init__()
        self.convolutions = nn.ModuleList(
            ConvNormBlock(input_size if i == 0 else channels, channels, kernel_size, group_size)
            for i in range(num_layers)
        )
        self.lstm = nn.LSTM(
            channels if num_layers else input_size,
            lstm_size,
            lstm_layers,
            batch_first=True,
            bidirectional=True,
        )
        self.downsample = downsample
        self.code_size = 2 * lstm_size

    def summarize(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """BiLSTM over the convolved frames, then downsampled codes `(batch, codes, code_size)`."""
        return downsample_codes(run_lstm(self.lstm, hidden, lengths), lengths, self.downsample)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(lengths, hidden.shape[1])
        for layer in self.convolutions:
            hidden = layer(hidden, mask)
        return self.summarize(hidden, lengths)


class TimbreEncoder(nn.Module):
    """Utterance timbre embedding: `ConvNormBlock`s on the log-mel, masked mean, linear projection.

    Replaces SpeechSplit's one-hot speaker id so that unseen speakers can be encoded; it is trained
    by a speaker classifier on its output and by the reconstruction.
    """

    def __init__(
        self, input_size: int, channels: int, num_layers: int, kernel_size: int, group_size: int, size: int
    ):
        super().__init__()
        self.convolutions = nn.ModuleList(
            ConvNormBlock(input_size if i == 0 else channels, channels, kernel_size, group_size)
            for i in range(num_layers)
        )
        self.projection = nn.Linear(channels if num_layers else input_size, size)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(lengths, mel.shape[1])
        hidden = mel
        for layer in self.convolutions:
            hidden = layer(hidden, mask)
        return self.projection(masked_mean(hidden, mask))


class MelDecoder(nn.Module):
    """SpeechSplit's decoder: a BiLSTM over the frame-rate codes and timbre, linear to mel bins."""

    def __init__(self, input_size: int, lstm_size: int, lstm_layers: int, n_mels: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, lstm_size, lstm_layers, batch_first=True, bidirectional=True)
        self.projection = nn.Linear(2 * lstm_size, n_mels)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mel = self.projection(run_lstm(self.lstm, hidden, lengths))
        return zero_padded_frames(mel, lengths_to_mask(lengths, hidden.shape[1]))


@dataclass
class DecomposedSpeech:
    """Codes of a batch. `*_codes` are downsampled `(batch, codes, size)`; `*_frames` are the same
    codes repeated to the mel frame rate `(batch, frames, size)`; `timbre` is `(batch, timbre_size)`.
    Fields of encoders that are not built are None."""

    content_codes: torch.Tensor | None = None
    rhythm_codes: torch.Tensor | None = None
    pitch_codes: torch.Tensor | None = None
    content_frames: torch.Tensor | None = None
    rhythm_frames: torch.Tensor | None = None
    pitch_frames: torch.Tensor | None = None
    timbre: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None

    def frames(self, name: str) -> torch.Tensor | None:
        return self.timbre if name == "timbre" else getattr(self, f"{name}_frames")


class SpeechDecomposition(nn.Module):
    """SpeechSplit's content, rhythm and pitch encoders, a timbre encoder and the mel decoder.

    Inputs are at the mel frame rate: `content_input (batch, frames, content_input_size)` (the
    log-mel in stage 1, interpolated SSL features in stage 2), the `mel` itself for rhythm and
    timbre, and the one-hot F0 `pitch (batch, frames, pitch_bins + 1)`. The content and pitch paths
    are randomly resampled together in training mode. Encoders listed in `skip` are not built.
    """

    def __init__(self, config, content_input_size: int, skip: tuple[str, ...] = ()):
        super().__init__()
        kernel, group = config.encoder_kernel_size, config.norm_group_size

        def code_encoder(name: str, input_size: int) -> CodeEncoder:
            return CodeEncoder(
                input_size,
                getattr(config, f"{name}_encoder_channels"),
                getattr(config, f"{name}_encoder_layers"),
                kernel,
                group,
                getattr(config, f"{name}_lstm_size"),
                getattr(config, f"{name}_lstm_layers"),
                getattr(config, f"{name}_downsample"),
            )

        if "content" not in skip:
            self.content_encoder = code_encoder("content", content_input_size)
        if "rhythm" not in skip:
            self.rhythm_encoder = code_encoder("rhythm", config.n_mels)
        if "pitch" not in skip:
            self.pitch_encoder = code_encoder("pitch", config.pitch_bins + 1)
        if "timbre" not in skip:
            self.timbre_encoder = TimbreEncoder(
                config.n_mels,
                config.timbre_encoder_channels,
                config.timbre_encoder_layers,
                kernel,
                group,
                config.timbre_size,
            )
        if "decoder" not in skip:
            decoder_input = sum(config.code_size(name) for name in ("content", "rhythm", "pitch", "timbre"))
            self.decoder = MelDecoder(
                decoder_input, config.decoder_lstm_size, config.decoder_lstm_layers, config.n_mels
            )
        self.resampling = RandomResampling(
            config.resample_min_segment,
            config.resample_max_segment,
            config.resample_min_scale,
            config.resample_max_scale,
            enabled=config.random_resampling,
        )
        self.resample_each_conv_layer = config.resample_each_conv_layer

    def has(self, name: str) -> bool:
        return hasattr(self, f"{name}_encoder")

    def _content_and_pitch(self, content, pitch, lengths, mask):
        """Convolve the content and pitch paths, resampling them jointly (SpeechSplit's sync encoder)."""
        paths = {
            name: (encoder, features)
            for name, encoder, features in (
                ("content", getattr(self, "content_encoder", None), content),
                ("pitch", getattr(self, "pitch_encoder", None), pitch),
            )
            if encoder is not None
        }
        hidden = {name: features for name, (_, features) in paths.items()}
        depth = max((len(encoder.convolutions) for encoder, _ in paths.values()), default=0)
        for index in range(depth):
            for name, (encoder, _) in paths.items():
                if index < len(encoder.convolutions):
                    hidden[name] = encoder.convolutions[index](hidden[name], mask)
            if self.resample_each_conv_layer or index == depth - 1:
                hidden = self._resample_jointly(hidden, lengths)
        if depth == 0:
            hidden = self._resample_jointly(hidden, lengths)
        return {name: encoder.summarize(hidden[name], lengths) for name, (encoder, _) in paths.items()}

    def _resample_jointly(self, hidden: dict[str, torch.Tensor], lengths: torch.Tensor):
        if not hidden or not (self.resampling.training and self.resampling.enabled):
            return hidden
        names = list(hidden)
        sizes = [hidden[name].shape[-1] for name in names]
        resampled = self.resampling(torch.cat([hidden[name] for name in names], dim=-1), lengths)
        return dict(zip(names, resampled.split(sizes, dim=-1)))

    def forward(
        self,
        content_input: torch.Tensor | None,
        mel: torch.Tensor,
        pitch: torch.Tensor | None,
        lengths: torch.Tensor,
    ) -> DecomposedSpeech:
        frames = mel.shape[1]
        mask = lengths_to_mask(lengths, frames)
        out = DecomposedSpeech()
        codes = self._content_and_pitch(content_input, pitch, lengths, mask)
        if self.has("rhythm"):
            codes["rhythm"] = self.rhythm_encoder(mel, lengths)
        for name, code in codes.items():
            factor = getattr(self, f"{name}_encoder").downsample
            setattr(out, f"{name}_codes", code)
            setattr(out, f"{name}_frames", upsample_codes(code, factor, lengths, frames))
        if self.has("timbre"):
            out.timbre = self.timbre_encoder(mel, lengths)
        if hasattr(self, "decoder"):
            timbre = out.timbre.unsqueeze(1).expand(-1, frames, -1)
            decoder_input = torch.cat([out.content_frames, out.rhythm_frames, out.pitch_frames, timbre], -1)
            out.reconstruction = self.decoder(zero_padded_frames(decoder_input, mask), lengths)
        return out
