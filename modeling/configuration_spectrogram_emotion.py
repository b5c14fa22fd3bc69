"""Configurations of the spectrogram emotion models trained from scratch (CNN + Transformer and
segment-level CNN + BiLSTM)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

MEL_NORMALIZATIONS = ("utterance", "corpus", "none")
FREQUENCY_REDUCTIONS = ("flatten", "mean")
CLASSIFIER_ACTIVATIONS = ("relu", "tanh")
POOLINGS = ("mean", "statistics", "attentive_statistics")


def pool_pairs(pool_sizes: list[int | list[int]]) -> list[tuple[int, int]]:
    """Per-block `(time, frequency)` max-pooling sizes from ints (square) or `[time, freq]` pairs."""
    pairs = []
    for size in pool_sizes:
        time, freq = (size, size) if isinstance(size, int) else size
        if int(time) < 1 or int(freq) < 1:
            raise ValueError(f"pool sizes must be >= 1, got {size!r}.")
        pairs.append((int(time), int(freq)))
    return pairs


def pooled_size(size: int, factors: list[int]) -> int:
    """Length left after successive floor-mode poolings by `factors`."""
    for factor in factors:
        size //= factor
    return size


class SpectrogramEmotionConfig(PretrainedConfig):
    r"""
    Settings shared by the spectrogram models: the log-mel front-end computed inside the model,
    SpecAugment and the classification loss. Not a model of its own (see
    [`CNNTransformerEmotionConfig`] and [`SegmentCRNNEmotionConfig`]).

    Args:
        sampling_rate (`int`, defaults to 16000): Sampling rate of `input_values`.
        n_fft (`int`, defaults to 512): FFT size of the STFT.
        win_length (`int`, *optional*, defaults to 400): Hann window length (25 ms); `None` uses `n_fft`.
        hop_length (`int`, defaults to 160): Samples between frames (10 ms).
        n_mels (`int`, defaults to 128): Mel bands (Slaney scale and normalisation).
        f_min (`float`, defaults to 0.0): Lowest mel frequency in Hz.
        f_max (`float`, *optional*): Highest mel frequency in Hz; `None` is `sampling_rate / 2`.
        mel_normalization (`str`, defaults to `"utterance"`): `"utterance"` normalises each mel
            band to zero mean and unit variance over the clip's valid frames (removes the clip's
            long-term spectrum, e.g. its spectral tilt); `"corpus"` normalises each band with
            statistics of the training data, tracked over valid frames like BatchNorm running
            statistics (keeps the differences between clips); `"none"` keeps the log-mel.
        num_time_masks (`int`, defaults to 2): SpecAugment time masks per clip (training only; 0 disables).
        time_mask_width (`int`, defaults to 20): Largest time mask in frames (at most the clip's length).
        num_freq_masks (`int`, defaults to 2): SpecAugment frequency masks per clip (0 disables).
        freq_mask_width (`int`, defaults to 16): Largest frequency mask in mel bands.
        frequency_warp (`float`, defaults to 0.0): Vocal tract length perturbation in training: each
            clip's linear frequency axis is scaled, before the mel filter bank, by a factor drawn
            uniformly from `[1 - frequency_warp, 1 + frequency_warp]` (formants and harmonics move
            together, as between speakers of different vocal tract length). 0 disables it; 0.1 is
            the usual range (Jaitly & Hinton, 2013).
        classifier_dropout (`float`, defaults to 0.1): Dropout before the classifier's output layer.
        class_weights (`list[float]`, *optional*): Per-class weights of the loss.
        focal_gamma (`float`, defaults to 0.0): Focal-loss focusing parameter; 0 gives cross-entropy.
        label_smoothing (`float`, defaults to 0.0): Label smoothing of the cross-entropy.
        mixup_alpha (`float`, defaults to 0.0): Mixup (Zhang et al., 2018) in training, when labels
            are given: each clip's normalised log-mel is mixed with another clip of the batch with a
            weight drawn from Beta(alpha, alpha), and the loss mixes both clips' losses the same
            way. 0 disables it.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_fft: int = 512,
        win_length: int | None = 400,
        hop_length: int = 160,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_normalization: str = "utterance",
        num_time_masks: int = 2,
        time_mask_width: int = 20,
        num_freq_masks: int = 2,
        freq_mask_width: int = 16,
        frequency_warp: float = 0.0,
        classifier_dropout: float = 0.1,
        class_weights: list[float] | None = None,
        focal_gamma: float = 0.0,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        **kwargs: Any,
    ):
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {mixup_alpha}.")
        if not 0.0 <= frequency_warp < 1.0:
            raise ValueError(f"frequency_warp must be in [0, 1), got {frequency_warp}.")
        if mel_normalization not in MEL_NORMALIZATIONS:
            raise ValueError(
                f"mel_normalization must be one of {MEL_NORMALIZATIONS}, got {mel_normalization!r}."
            )
        if win_length is not None and win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft}).")
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.mel_normalization = mel_normalization
        self.num_time_masks = num_time_masks
        self.time_mask_width = time_mask_width
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.frequency_warp = frequency_warp
        self.classifier_dropout = classifier_dropout
        self.class_weights = class_weights
        self.focal_gamma = focal_gamma
        self.label_smoothing = label_smoothing
        self.mixup_alpha = mixup_alpha
        super().__init__(**kwargs)

    @property
    def min_input_frames(self) -> int:
        """Fewest mel frames the model needs; shorter clips are zero-padded to it inside the model."""
        return 1

    @property
    def min_input_samples(self) -> int:
        """Samples giving `min_input_frames` frames (a clip of n samples has `1 + n // hop_length`)."""
        return max(self.n_fft, (self.min_input_frames - 1) * self.hop_length)

    def feature_extractor_kwargs(self) -> dict[str, Any]:
        """Settings the [`EmotionFeatureExtractor`] of this model needs."""
        return {
            "sampling_rate": self.sampling_rate,
            "min_samples": self.min_input_samples,
            "hop_length": self.hop_length,
            "compute_pitch": False,
        }


class CNNTransformerEmotionConfig(SpectrogramEmotionConfig):
    r"""
    Configuration of [`CNNTransformerForAudioClassification`]: a 2-D CNN over the log-mel, the
    frequency axis folded into one vector per pooled frame, optional 1-D convolutions over time
    (a TDNN), a Transformer encoder with a learnable-scale sinusoidal position encoding, masked
    pooling over time and a linear (or one-hidden-layer) classifier.

    Args:
        conv_channels (`list[int]`, defaults to `[32, 64, 128, 256, 512]`): Output channels of each
            conv → BatchNorm → ReLU → max-pool block. `[]` skips the 2-D CNN: the log-mel frames
            themselves are projected to `hidden_size`.
        conv_kernel_sizes (`list[int]`, defaults to `[7, 3, 3, 3, 3]`): Square kernel of each block
            ("same" padding).
        pool_sizes (`list[int | list[int]]`, defaults to `[2, 2, 2, 2, 2]`): Max-pooling of each
            block, an int (square) or `[time, freq]`; 1 keeps that axis. Time is pooled in floor
            mode, so a clip of `n` frames keeps `n // prod(time pools)` steps.
        frequency_reduction (`str`, defaults to `"flatten"`): How the remaining frequency axis is
            folded: `"flatten"` concatenates channels × remaining bands (keeps where in the spectrum
            a pattern occurs), `"mean"` averages over bands. A linear layer then maps to `hidden_size`.
        hidden_size (`int`, defaults to 512): Width of the frame sequence after the projection
            (the 1-D convolutions and the Transformer keep it).
        time_conv_kernel_sizes (`list[int]`, defaults to `[]`): Odd kernel of each 1-D conv →
            BatchNorm → ReLU layer over the projected frame sequence, with a residual connection
            (a TDNN; cheap on CPU compared with 2-D convolutions). `[]` has none.
        time_conv_dilations (`list[int]`, *optional*): Dilation of each 1-D conv layer; `None` is 1 for all.
        num_hidden_layers (`int`, defaults to 2): Transformer encoder layers; 0 skips the
            Transformer and its position encoding.
        num_attention_heads (`int`, defaults to 4): Attention heads.
        intermediate_size (`int`, defaults to 1024): Feed-forward width.
        transformer_activation (`str`, defaults to `"relu"`): Feed-forward activation, `"relu"` or `"gelu"`.
        transformer_norm_first (`bool`, defaults to `False`): Pre-LayerNorm layers instead of post-LN.
        hidden_dropout (`float`, defaults to 0.1): Dropout after the projection + position encoding.
        transformer_dropout (`float`, defaults to 0.1): Dropout inside the Transformer layers.
        pooling (`str`, defaults to `"mean"`): Pooling over valid steps: `"mean"`, `"statistics"`
            (mean and standard deviation, concatenated) or `"attentive_statistics"` (attention-
            weighted mean and standard deviation, Okabe et al. 2018).
        pooling_attention_size (`int`, defaults to 128): Hidden size of the attentive pooling's scorer.
        classifier_hidden_size (`int`, defaults to 0): Width of a dense → ReLU → dropout layer
            before the output layer; 0 gives a linear classifier on the pooled vector.
        pitch_embedding_size (`int`, defaults to 0): When > 0, the model also reads the clip's F0:
            `pitch_ids` from the feature extractor (`compute_pitch=True`: log-F0 normalised by the
            training speakers' per-gender statistics, quantised to `pitch_bins` bins, 0 unvoiced).
            Each mel frame's voicing and normalised log-F0 go through a dense → ReLU layer of this
            width, are averaged over the frames of each pooled CNN step and concatenated to the CNN's
            frame vector before the projection. 64 mel bands barely resolve the harmonics of a low
            voice, so pitch, central to emotion, otherwise reaches the model only indirectly.
            0 reads the log-mel alone (and the feature extractor computes no F0).
        pitch_bins (`int`, defaults to 256): Voiced F0 bins of `pitch_ids` (the feature extractor's
            quantisation; ids 1..`pitch_bins` span ±4 standard deviations of log-F0).
        delta_order (`int`, defaults to 0): Input channels of the 2-D CNN beyond the log-mel: 1 adds
            its Δ, 2 adds Δ and ΔΔ (the "3-D log-mel" of Chen et al., 2018). A 3×3 first layer sees
            only ±1 frame; regression deltas over `delta_width` frames give it the local slope of
            each band (e.g. how fast energy or a formant moves) directly.
        delta_width (`int`, defaults to 5): Odd window of the Δ regression (`N = delta_width // 2`
            frames each side, each clip's edge frames replicated), as `librosa.feature.delta(width=...)`.
        kwargs: Every argument of [`SpectrogramEmotionConfig`] (mel settings, SpecAugment, mixup, loss).
    """

    model_type = "emotion_cnn_transformer"
    keys_to_ignore_at_inference = ["embeddings"]

    def __init__(
        self,
        conv_channels: list[int] | None = None,
        conv_kernel_sizes: list[int] | None = None,
        pool_sizes: list[int | list[int]] | None = None,
        frequency_reduction: str = "flatten",
        hidden_size: int = 512,
        time_conv_kernel_sizes: list[int] | None = None,
        time_conv_dilations: list[int] | None = None,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int = 1024,
        transformer_activation: str = "relu",
        transformer_norm_first: bool = False,
        hidden_dropout: float = 0.1,
        transformer_dropout: float = 0.1,
        pooling: str = "mean",
        pooling_attention_size: int = 128,
        classifier_hidden_size: int = 0,
        pitch_embedding_size: int = 0,
        pitch_bins: int = 256,
        delta_order: int = 0,
        delta_width: int = 5,
        **kwargs: Any,
    ):
        self.conv_channels = list(conv_channels if conv_channels is not None else [32, 64, 128, 256, 512])
        default_kernels = [7, 3, 3, 3, 3] if conv_channels is None else [3] * len(self.conv_channels)
        self.conv_kernel_sizes = list(conv_kernel_sizes if conv_kernel_sizes is not None else default_kernels)
        self.pool_sizes = list(pool_sizes if pool_sizes is not None else [2] * len(self.conv_channels))
        self.frequency_reduction = frequency_reduction
        self.hidden_size = hidden_size
        self.time_conv_kernel_sizes = list(time_conv_kernel_sizes or [])
        self.time_conv_dilations = list(time_conv_dilations or [1] * len(self.time_conv_kernel_sizes))
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.transformer_activation = transformer_activation
        self.transformer_norm_first = transformer_norm_first
        self.hidden_dropout = hidden_dropout
        self.transformer_dropout = transformer_dropout
        self.pooling = pooling
        self.pooling_attention_size = pooling_attention_size
        self.classifier_hidden_size = classifier_hidden_size
        self.pitch_embedding_size = pitch_embedding_size
        self.pitch_bins = pitch_bins
        self.delta_order = delta_order
        self.delta_width = delta_width
        super().__init__(**kwargs)
        if pitch_embedding_size < 0 or pitch_bins < 2:
            raise ValueError("pitch_embedding_size must be >= 0 and pitch_bins >= 2.")
        if delta_order not in (0, 1, 2):
            raise ValueError(f"delta_order must be 0, 1 or 2, got {delta_order}.")
        if delta_width < 3 or delta_width % 2 == 0:
            raise ValueError(f"delta_width must be an odd integer >= 3, got {delta_width}.")
        if delta_order and not self.conv_channels:
            raise ValueError("delta_order > 0 adds CNN input channels; it needs conv_channels.")
        if len(self.time_conv_dilations) != len(self.time_conv_kernel_sizes):
            raise ValueError("time_conv_dilations needs one entry per time_conv_kernel_sizes entry.")
        if any(k % 2 == 0 or k < 1 for k in self.time_conv_kernel_sizes) or any(
            d < 1 for d in self.time_conv_dilations
        ):
            raise ValueError("time_conv_kernel_sizes must be odd and time_conv_dilations >= 1.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if num_hidden_layers < 0 or classifier_hidden_size < 0:
            raise ValueError("num_hidden_layers and classifier_hidden_size must be >= 0.")
        if not len(self.conv_channels) == len(self.conv_kernel_sizes) == len(self.pool_sizes):
            raise ValueError("conv_channels, conv_kernel_sizes and pool_sizes need one entry per block.")
        if any(kernel % 2 == 0 for kernel in self.conv_kernel_sizes):
            raise ValueError("conv_kernel_sizes must be odd ('same' padding keeps the frame count).")
        if frequency_reduction not in FREQUENCY_REDUCTIONS:
            raise ValueError(f"frequency_reduction must be one of {FREQUENCY_REDUCTIONS}.")
        if hidden_size % num_attention_heads or hidden_size % 2:
            raise ValueError("hidden_size must be even and divisible by num_attention_heads.")
        if self.pooled_mel_bands < 1:
            raise ValueError(f"n_mels={self.n_mels} is pooled away by pool_sizes={self.pool_sizes}.")

    def feature_extractor_kwargs(self) -> dict[str, Any]:
        """Settings the [`EmotionFeatureExtractor`] of this model needs (F0 when it reads pitch)."""
        kwargs = super().feature_extractor_kwargs()
        if self.pitch_embedding_size:
            kwargs.update(compute_pitch=True, pitch_bins=self.pitch_bins)
        return kwargs

    @property
    def pooled_mel_bands(self) -> int:
        return pooled_size(self.n_mels, [freq for _, freq in pool_pairs(self.pool_sizes)])

    @property
    def min_input_frames(self) -> int:
        """Frames that survive every time pooling as at least one step."""
        frames = 1
        for time, _ in pool_pairs(self.pool_sizes):
            frames *= time
        return frames


class SegmentCRNNEmotionConfig(SpectrogramEmotionConfig):
    r"""
    Configuration of [`SegmentCRNNForAudioClassification`]: log-mel with Δ and ΔΔ as three
    channels, cut into overlapping fixed-length segments; a CNN turns each segment into one
    vector, a BiLSTM runs over the segment sequence, masked attention pools it, and an MLP classifies.

    Args:
        delta_width (`int`, defaults to 5): Odd window of the Δ regression (`N = delta_width // 2`
            frames each side, edges replicated), as `librosa.feature.delta(width=...)`.
        segment_length (`int`, defaults to 64): Frames per segment.
        segment_hop (`int`, defaults to 32): Frames between segment starts. A clip of `n` frames
            has `1 + ceil(max(n - segment_length, 0) / segment_hop)` segments; the last one and
            a clip shorter than one segment are zero-padded.
        conv_channels (`list[int]`, defaults to `[32, 64, 128, 256]`): Output channels of each
            conv → BatchNorm → ReLU → max-pool block of the segment CNN (global average pooling follows).
        conv_kernel_sizes (`list[int]`, defaults to `[3, 3, 3, 3]`): Square kernel of each block.
        pool_sizes (`list[int | list[int]]`, defaults to `[2, 2, 2, 2]`): Max-pooling of each
            block, an int (square) or `[time, freq]`.
        segment_dropout (`float`, defaults to 0.1): Dropout on the segment vectors before the BiLSTM.
        lstm_hidden_size (`int`, defaults to 128): BiLSTM hidden size per direction.
        lstm_num_layers (`int`, defaults to 1): BiLSTM layers.
        lstm_dropout (`float`, defaults to 0.0): Dropout between BiLSTM layers.
        pooling_attention_size (`int`, defaults to 128): Hidden size of the attention scorer.
        classifier_hidden_size (`int`, defaults to 128): Width of the MLP's dense layer.
        classifier_activation (`str`, defaults to `"relu"`): `"relu"` or `"tanh"` after the dense layer.
        classifier_dropout (`float`, defaults to 0.3): Dropout between the activation and the output layer.
        n_mels (`int`, defaults to 64): Mel bands.
        freq_mask_width (`int`, defaults to 8): Largest SpecAugment frequency mask in mel bands.
        kwargs: Every other argument of [`SpectrogramEmotionConfig`] (mel settings, SpecAugment, loss).
    """

    model_type = "emotion_segment_crnn"
    keys_to_ignore_at_inference = ["embeddings"]

    def __init__(
        self,
        delta_width: int = 5,
        segment_length: int = 64,
        segment_hop: int = 32,
        conv_channels: list[int] | None = None,
        conv_kernel_sizes: list[int] | None = None,
        pool_sizes: list[int | list[int]] | None = None,
        segment_dropout: float = 0.1,
        lstm_hidden_size: int = 128,
        lstm_num_layers: int = 1,
        lstm_dropout: float = 0.0,
        pooling_attention_size: int = 128,
        classifier_hidden_size: int = 128,
        classifier_activation: str = "relu",
        classifier_dropout: float = 0.3,
        n_mels: int = 64,
        freq_mask_width: int = 8,
        **kwargs: Any,
    ):
        self.delta_width = delta_width
        self.segment_length = segment_length
        self.segment_hop = segment_hop
        self.conv_channels = list(conv_channels or [32, 64, 128, 256])
        self.conv_kernel_sizes = list(conv_kernel_sizes or [3] * len(self.conv_channels))
        self.pool_sizes = list(pool_sizes or [2] * len(self.conv_channels))
        self.segment_dropout = segment_dropout
        self.lstm_hidden_size = lstm_hidden_size
        self.lstm_num_layers = lstm_num_layers
        self.lstm_dropout = lstm_dropout
        self.pooling_attention_size = pooling_attention_size
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_activation = classifier_activation
        super().__init__(
            n_mels=n_mels, freq_mask_width=freq_mask_width, classifier_dropout=classifier_dropout, **kwargs
        )
        if delta_width < 3 or delta_width % 2 == 0:
            raise ValueError(f"delta_width must be an odd integer >= 3, got {delta_width}.")
        if segment_hop < 1 or segment_length < 1:
            raise ValueError("segment_length and segment_hop must be positive.")
        if not len(self.conv_channels) == len(self.conv_kernel_sizes) == len(self.pool_sizes):
            raise ValueError("conv_channels, conv_kernel_sizes and pool_sizes need one entry per block.")
        if any(kernel % 2 == 0 for kernel in self.conv_kernel_sizes):
            raise ValueError("conv_kernel_sizes must be odd ('same' padding keeps the frame count).")
        if classifier_activation not in CLASSIFIER_ACTIVATIONS:
            raise ValueError(f"classifier_activation must be one of {CLASSIFIER_ACTIVATIONS}.")
        pairs = pool_pairs(self.pool_sizes)
        if (
            pooled_size(segment_length, [t for t, _ in pairs]) < 1
            or pooled_size(n_mels, [f for _, f in pairs]) < 1
        ):
            raise ValueError("pool_sizes pool a segment (segment_length × n_mels) down to nothing.")
