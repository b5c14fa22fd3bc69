"""Configurations of the SpeechSplit-style decomposition model (family 4, stage 1) and of the
decomposed-speech multi-task emotion model (family 3, Hsu, Wu & Wei, Interspeech 2023, stage 2)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

from .configuration_emotion_ssl import build_backbone_config

CODE_NAMES = ("content", "rhythm", "pitch", "timbre")


class SpeechDecompositionConfig(PretrainedConfig):
    r"""
    Configuration of [`SpeechDecompositionModel`]: a SpeechSplit autoencoder (Qian et al., ICML 2020,
    "Unsupervised Speech Decomposition via Triple Information Bottleneck") that splits a log-mel
    spectrogram into content, rhythm and pitch codes plus an utterance timbre embedding and
    reconstructs the log-mel from them. Defaults are SpeechSplit's sizes. The labels of this model
    (`id2label`) are speakers: the timbre embedding is trained by a speaker classifier.

    Args:
        sampling_rate (`int`, defaults to 16000): Expected sampling rate of the waveform.
        n_mels (`int`, defaults to 80): Mel bins of the log-mel spectrogram.
        n_fft (`int`, defaults to 1024): FFT size of the STFT.
        win_length (`int`, *optional*): Window length; defaults to `n_fft`.
        hop_length (`int`, defaults to 256): Samples between mel frames (the feature extractor's
            `hop_length` must be the same, so that `pitch_ids` line up with the mel frames).
        f_min (`float`, defaults to 90.0): Lowest mel filter frequency in Hz.
        f_max (`float`, defaults to 7600.0): Highest mel filter frequency in Hz.
        mel_ref_level_db (`float`, defaults to 16.0): SpeechSplit's scaling of the log-mel:
            `(dB - ref_level_db - min_level_db) / -min_level_db`, no clipping (as SpeechSplit's
            `make_spect_f0.py`; the 1e-5 magnitude floor maps to -0.16). Waveforms are normalised
            to unit variance by the feature extractor, so loud frames exceed 1.
        mel_min_level_db (`float`, defaults to -100.0): SpeechSplit's dB offset of the scaling.
        pitch_bins (`int`, defaults to 256): Voiced F0 bins of `pitch_ids`; the pitch encoder reads
            a one-hot of `pitch_bins + 1` dimensions (id 0 = unvoiced).
        encoder_kernel_size (`int`, defaults to 5): Kernel size of every encoder convolution.
        norm_group_size (`int`, defaults to 16): Channels per group of the (masked) GroupNorm
            after each encoder convolution; every encoder width must be a multiple of it.
        content_encoder_channels (`int`, defaults to 512): Width of the content convolutions.
        content_encoder_layers (`int`, defaults to 3): Number of content convolutions.
        content_lstm_size (`int`, defaults to 8): Units per direction of the content BiLSTM (the
            content code has `2 * content_lstm_size` dimensions).
        content_lstm_layers (`int`, defaults to 2): Layers of the content BiLSTM.
        content_downsample (`int`, defaults to 8): Time downsampling factor of the content code.
        rhythm_encoder_channels (`int`, defaults to 128): Width of the rhythm convolutions.
        rhythm_encoder_layers (`int`, defaults to 1): Number of rhythm convolutions.
        rhythm_lstm_size (`int`, defaults to 1): Units per direction of the rhythm BiLSTM.
        rhythm_lstm_layers (`int`, defaults to 1): Layers of the rhythm BiLSTM.
        rhythm_downsample (`int`, defaults to 8): Time downsampling factor of the rhythm code.
        pitch_encoder_channels (`int`, defaults to 256): Width of the pitch convolutions.
        pitch_encoder_layers (`int`, defaults to 3): Number of pitch convolutions.
        pitch_lstm_size (`int`, defaults to 32): Units per direction of the pitch BiLSTM.
        pitch_lstm_layers (`int`, defaults to 1): Layers of the pitch BiLSTM.
        pitch_downsample (`int`, defaults to 8): Time downsampling factor of the pitch code.
        timbre_encoder_channels (`int`, defaults to 256): Width of the timbre convolutions.
        timbre_encoder_layers (`int`, defaults to 3): Number of timbre convolutions (followed by a
            masked mean over time and a linear projection).
        timbre_size (`int`, defaults to 128): Size of the utterance timbre embedding (SpeechSplit
            used an 82-dimensional one-hot speaker id instead).
        decoder_lstm_size (`int`, defaults to 512): Units per direction of the decoder BiLSTM.
        decoder_lstm_layers (`int`, defaults to 3): Layers of the decoder BiLSTM.
        random_resampling (`bool`, defaults to `True`): Apply SpeechSplit's random time-resampling
            to the content and pitch paths in training mode (never in eval mode).
        resample_each_conv_layer (`bool`, defaults to `True`): Resample after every convolution of
            the content and pitch paths, as SpeechSplit does; `False` resamples once, after the
            last convolution, before the LSTMs.
        resample_min_segment (`int`, defaults to 19): Shortest random segment, in frames.
        resample_max_segment (`int`, defaults to 32): Longest random segment, in frames (inclusive).
        resample_min_scale (`float`, defaults to 0.5): Smallest length factor of a segment.
        resample_max_scale (`float`, defaults to 1.5): Largest length factor of a segment.
        reconstruction_weight (`float`, defaults to 1.0): Weight of the masked mel MSE.
        speaker_weight (`float`, defaults to 1.0): Weight of the speaker cross-entropy on the timbre
            embedding (0 disables the term; the speaker head stays, its logits are the model's).
        min_input_samples (`int`, defaults to 400): Shortest input; the feature extractor pads
            shorter clips to it.
    """

    model_type = "speech_decomposition"
    # Trainer evaluation keeps only `logits`. "loss" is listed because the label-free reconstruction
    # term makes `loss` present even in batches without labels, where Trainer would keep it.
    keys_to_ignore_at_inference = [
        "loss",
        "reconstruction",
        "log_mel",
        "reconstruction_loss",
        "speaker_loss",
        "embeddings",
        "content_codes",
        "rhythm_codes",
        "pitch_codes",
    ]

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 256,
        f_min: float = 90.0,
        f_max: float = 7600.0,
        mel_ref_level_db: float = 16.0,
        mel_min_level_db: float = -100.0,
        pitch_bins: int = 256,
        encoder_kernel_size: int = 5,
        norm_group_size: int = 16,
        content_encoder_channels: int = 512,
        content_encoder_layers: int = 3,
        content_lstm_size: int = 8,
        content_lstm_layers: int = 2,
        content_downsample: int = 8,
        rhythm_encoder_channels: int = 128,
        rhythm_encoder_layers: int = 1,
        rhythm_lstm_size: int = 1,
        rhythm_lstm_layers: int = 1,
        rhythm_downsample: int = 8,
        pitch_encoder_channels: int = 256,
        pitch_encoder_layers: int = 3,
        pitch_lstm_size: int = 32,
        pitch_lstm_layers: int = 1,
        pitch_downsample: int = 8,
        timbre_encoder_channels: int = 256,
        timbre_encoder_layers: int = 3,
        timbre_size: int = 128,
        decoder_lstm_size: int = 512,
        decoder_lstm_layers: int = 3,
        random_resampling: bool = True,
        resample_each_conv_layer: bool = True,
        resample_min_segment: int = 19,
        resample_max_segment: int = 32,
        resample_min_scale: float = 0.5,
        resample_max_scale: float = 1.5,
        reconstruction_weight: float = 1.0,
        speaker_weight: float = 1.0,
        min_input_samples: int = 400,
        **kwargs: Any,
    ):
        self.sampling_rate = sampling_rate
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.f_min = f_min
        self.f_max = f_max
        self.mel_ref_level_db = mel_ref_level_db
        self.mel_min_level_db = mel_min_level_db
        self.pitch_bins = pitch_bins
        self.encoder_kernel_size = encoder_kernel_size
        self.norm_group_size = norm_group_size
        self.content_encoder_channels = content_encoder_channels
        self.content_encoder_layers = content_encoder_layers
        self.content_lstm_size = content_lstm_size
        self.content_lstm_layers = content_lstm_layers
        self.content_downsample = content_downsample
        self.rhythm_encoder_channels = rhythm_encoder_channels
        self.rhythm_encoder_layers = rhythm_encoder_layers
        self.rhythm_lstm_size = rhythm_lstm_size
        self.rhythm_lstm_layers = rhythm_lstm_layers
        self.rhythm_downsample = rhythm_downsample
        self.pitch_encoder_channels = pitch_encoder_channels
        self.pitch_encoder_layers = pitch_encoder_layers
        self.pitch_lstm_size = pitch_lstm_size
        self.pitch_lstm_layers = pitch_lstm_layers
        self.pitch_downsample = pitch_downsample
        self.timbre_encoder_channels = timbre_encoder_channels
        self.timbre_encoder_layers = timbre_encoder_layers
        self.timbre_size = timbre_size
        self.decoder_lstm_size = decoder_lstm_size
        self.decoder_lstm_layers = decoder_lstm_layers
        self.random_resampling = random_resampling
        self.resample_each_conv_layer = resample_each_conv_layer
        self.resample_min_segment = resample_min_segment
        self.resample_max_segment = resample_max_segment
        self.resample_min_scale = resample_min_scale
        self.resample_max_scale = resample_max_scale
        self.reconstruction_weight = reconstruction_weight
        self.speaker_weight = speaker_weight
        self.min_input_samples = min_input_samples
        self._validate_decomposition()
        super().__init__(**kwargs)

    def _validate_decomposition(self) -> None:
        for name in ("content", "rhythm", "pitch", "timbre"):
            channels = getattr(self, f"{name}_encoder_channels")
            if channels % self.norm_group_size:
                raise ValueError(
                    f"{name}_encoder_channels ({channels}) must be a multiple of norm_group_size "
                    f"({self.norm_group_size})."
                )
        for name in ("content", "rhythm", "pitch"):
            if getattr(self, f"{name}_downsample") < 1:
                raise ValueError(f"{name}_downsample must be >= 1.")
        if self.rhythm_encoder_layers < 1:
            raise ValueError("rhythm_encoder_layers must be >= 1.")
        if not 1 <= self.resample_min_segment <= self.resample_max_segment:
            raise ValueError("need 1 <= resample_min_segment <= resample_max_segment.")
        if not 0 < self.resample_min_scale <= self.resample_max_scale:
            raise ValueError("need 0 < resample_min_scale <= resample_max_scale.")

    # Sizes derived from the fields, shared by both families.
    @property
    def content_input_size(self) -> int:
        """Features per frame read by the content encoder (the log-mel in stage 1)."""
        return self.n_mels

    @property
    def pitch_input_size(self) -> int:
        return self.pitch_bins + 1

    def code_size(self, name: str) -> int:
        """Dimensions of the code `name` (`content`, `rhythm`, `pitch` or `timbre`)."""
        if name == "timbre":
            return self.timbre_size
        return 2 * getattr(self, f"{name}_lstm_size")

    def mel_kwargs(self) -> dict[str, Any]:
        """Arguments of the model's `LogMelSpectrogram`."""
        return {
            "sampling_rate": self.sampling_rate,
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
        }

    def feature_extractor_kwargs(self) -> dict[str, Any]:
        """Settings the [`EmotionFeatureExtractor`] of this model needs (F0 on the mel frame grid)."""
        return {
            "sampling_rate": self.sampling_rate,
            "min_samples": self.min_input_samples,
            "compute_pitch": True,
            "hop_length": self.hop_length,
            "pitch_bins": self.pitch_bins,
        }


class DecomposedEmotionConfig(SpeechDecompositionConfig):
    r"""
    Configuration of [`DecomposedEmotionForAudioClassification`]: speech emotion recognition with
    decomposed speech and multi-task learning (Hsu, Wu & Wei, Interspeech 2023). A wav2vec2 /
    HuBERT / WavLM backbone feeds the emotion head, a character CTC head and the content encoder of
    a SpeechSplit decomposition (rhythm, pitch and timbre encoders read the log-mel and F0; a decoder
    reconstructs the log-mel; a speaker head reads the timbre embedding). The loss is
    `CE(emotion) + ctc_weight * CTC + reconstruction_weight * MSE(mel) + speaker_weight * CE(speaker)`;
    a weight of 0 removes the term and the modules only it needs.

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*, defaults to wav2vec2-base sizes):
            Configuration of the SSL backbone; its `model_type` is `wav2vec2`, `hubert` or `wavlm`.
        use_weighted_layer_sum (`bool`, defaults to `False`): Use a learnable softmax-weighted sum
            of all hidden layers (instead of the last one) for the emotion pooling and the content
            encoder. The CTC head always reads the last layer.
        pooling (`str`, defaults to `"mean"`): Pooling of the SSL features for the emotion head:
            `"mean"`, `"attentive_statistics"` or `"attention"`.
        pooling_attention_size (`int`, defaults to 128): Hidden size of the attention scorer.
        emotion_code_inputs (`list[str]`, defaults to `["content", "rhythm", "pitch"]`): Codes whose
            masked time-mean (at the mel frame rate) is concatenated to the pooled SSL features
            at the emotion head's input; any of `content`, `rhythm`, `pitch`, `timbre`. Timbre is
            left out by default so that the emotion head is not handed speaker identity.
        classifier_hidden_size (`int`, defaults to 256): Width of the emotion head's dense layer.
        classifier_dropout (`float`, defaults to 0.1): Dropout between the head's tanh and output.
        class_weights (`list[float]`, *optional*): Per-class weights of the emotion loss.
        focal_gamma (`float`, defaults to 0.0): Focal-loss focusing parameter; 0 gives cross-entropy.
        label_smoothing (`float`, defaults to 0.0): Label smoothing of the emotion cross-entropy.
        vocab_size (`int`, defaults to 32): Size of the CTC vocabulary (the tokenizer's).
        ctc_weight (`float`, defaults to 0.1): Weight of the CTC term; 0 removes the CTC head.
        ctc_loss_reduction (`str`, defaults to `"mean"`): `"mean"` or `"sum"`.
        ctc_zero_infinity (`bool`, defaults to `True`): Zero infinite CTC losses.
        ctc_dropout (`float`, defaults to 0.1): Dropout before the CTC projection.
        pad_token_id (`int`, defaults to 0): CTC blank id (the tokenizer's pad token).
        num_speakers (`int`, defaults to 0): Training speakers of the speaker head on the timbre
            embedding; the head exists when `num_speakers > 0` and `speaker_weight > 0`.
        reconstruction_weight (`float`, defaults to 1.0): Weight of the masked mel MSE; 0 removes the
            decoder (and every encoder the emotion head does not read).
        speaker_weight (`float`, defaults to 0.1): Weight of the speaker cross-entropy.
        min_input_samples (`int`, defaults to 400): Shortest input the backbone accepts.
        kwargs: Every other argument of [`SpeechDecompositionConfig`] (mel, encoder, decoder and
            resampling settings, SpeechSplit defaults).
    """

    model_type = "emotion_decomposed"
    sub_configs = {"backbone_config": AutoConfig}
    # Trainer evaluation keeps only `logits` and `ctc_logits` (see SpeechDecompositionConfig for "loss").
    keys_to_ignore_at_inference = [
        "loss",
        "reconstruction",
        "speaker_logits",
        "emotion_loss",
        "ctc_loss",
        "reconstruction_loss",
        "speaker_loss",
        "embeddings",
        "hidden_states",
        "attentions",
    ]

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        use_weighted_layer_sum: bool = False,
        pooling: str = "mean",
        pooling_attention_size: int = 128,
        emotion_code_inputs: list[str] | None = None,
        classifier_hidden_size: int = 256,
        classifier_dropout: float = 0.1,
        class_weights: list[float] | None = None,
        focal_gamma: float = 0.0,
        label_smoothing: float = 0.0,
        vocab_size: int = 32,
        ctc_weight: float = 0.1,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        ctc_dropout: float = 0.1,
        pad_token_id: int = 0,
        num_speakers: int = 0,
        reconstruction_weight: float = 1.0,
        speaker_weight: float = 0.1,
        min_input_samples: int = 400,
        **kwargs: Any,
    ):
        self.backbone_config = build_backbone_config(backbone_config)
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.pooling = pooling
        self.pooling_attention_size = pooling_attention_size
        if emotion_code_inputs is None:
            emotion_code_inputs = ["content", "rhythm", "pitch"]
        unknown = [name for name in emotion_code_inputs if name not in CODE_NAMES]
        if unknown:
            raise ValueError(f"emotion_code_inputs: unknown codes {unknown}; choose from {list(CODE_NAMES)}.")
        self.emotion_code_inputs = list(emotion_code_inputs)
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_dropout = classifier_dropout
        self.class_weights = class_weights
        self.focal_gamma = focal_gamma
        self.label_smoothing = label_smoothing
        self.vocab_size = vocab_size
        self.ctc_weight = ctc_weight
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        self.ctc_dropout = ctc_dropout
        self.num_speakers = num_speakers
        super().__init__(
            reconstruction_weight=reconstruction_weight,
            speaker_weight=speaker_weight,
            min_input_samples=min_input_samples,
            pad_token_id=pad_token_id,
            **kwargs,
        )

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.hidden_size

    @property
    def content_input_size(self) -> int:
        """The content encoder reads SSL features interpolated to the mel frame rate."""
        return self.backbone_config.hidden_size

    # Which optional modules exist: a weight of 0 removes its term and the modules only it needs.
    @property
    def uses_decoder(self) -> bool:
        return self.reconstruction_weight > 0

    @property
    def uses_speaker_head(self) -> bool:
        return self.speaker_weight > 0 and self.num_speakers > 0

    @property
    def uses_ctc_head(self) -> bool:
        return self.ctc_weight > 0

    def uses_code(self, name: str) -> bool:
        """Whether the encoder of code `name` is built."""
        if self.uses_decoder or name in self.emotion_code_inputs:
            return True
        return name == "timbre" and self.uses_speaker_head
