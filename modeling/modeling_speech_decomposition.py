"""SpeechSplit decomposition pre-training (family 4, stage 1) and decomposed-speech multi-task
emotion recognition (family 3, Hsu, Wu & Wei, Interspeech 2023, stage 2).

Design choices where the papers are silent are listed in the class docstrings and, with their
SpeechSplit references, in docs/decomposed_mtl.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_speech_decomposition import DecomposedEmotionConfig, SpeechDecompositionConfig
from .decomposition_layers import MaskedGroupNorm, SpeechDecomposition, interpolate_frames
from .emotion_layers import (
    ClassificationHead,
    LogMelSpectrogram,
    add_auto_model_entries,
    build_pooling,
    checked_pitch_ids,
    ctc_loss_from_config,
    emotion_loss,
    lengths_to_mask,
    masked_mean,
    sample_lengths,
    weighted_sum,
    zero_padded_frames,
)
from .ssl_backbone import SSLBackboneMixin, WeightedLayerSum, build_backbone

try:  # transformers >= 5 initialisers skip weights already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init

# Settings a stage-1 checkpoint must share with a stage-2 model for its weights to mean the same.
MEL_FIELDS = (
    "sampling_rate",
    "n_mels",
    "n_fft",
    "hop_length",
    "f_min",
    "f_max",
    "mel_ref_level_db",
    "mel_min_level_db",
    "pitch_bins",
)
CODE_FIELDS = (
    "norm_group_size",
    "content_lstm_size",
    "rhythm_lstm_size",
    "pitch_lstm_size",
    "timbre_size",
    "content_downsample",
    "rhythm_downsample",
    "pitch_downsample",
)


@dataclass
class SpeechDecompositionOutput(ModelOutput):
    """Output of [`SpeechDecompositionModel`].

    Args:
        loss: `reconstruction_weight * reconstruction_loss + speaker_weight * speaker_loss` over the
            terms with a positive weight (the speaker term only when `speaker_labels` are given).
        logits: Speaker logits of the timbre head `(batch, num_labels)`; `id2label` holds speakers.
        reconstruction: Reconstructed scaled log-mel `(batch, frames, n_mels)`, zero on padding.
        log_mel: The scaled log-mel target `(batch, frames, n_mels)`, zero on padding.
        reconstruction_loss: Masked MSE between the two over valid frames, unweighted.
        speaker_loss: Speaker cross-entropy (labels of -100 ignored), unweighted.
        embeddings: Timbre embedding `(batch, timbre_size)`.
        content_codes, rhythm_codes, pitch_codes: Downsampled codes `(batch, codes, size)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    log_mel: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    speaker_loss: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    content_codes: torch.FloatTensor | None = None
    rhythm_codes: torch.FloatTensor | None = None
    pitch_codes: torch.FloatTensor | None = None


@dataclass
class DecomposedEmotionOutput(ModelOutput):
    """Output of [`DecomposedEmotionForAudioClassification`].

    Args:
        loss: Weighted sum of the component losses that could be computed (see the model).
        logits: Emotion logits `(batch, num_labels)`.
        ctc_logits: Character logits per backbone frame `(batch, frames, vocab_size)`.
        reconstruction: Reconstructed scaled log-mel `(batch, mel_frames, n_mels)`.
        speaker_logits: Speaker logits of the timbre head `(batch, num_speakers)`.
        emotion_loss, ctc_loss, reconstruction_loss, speaker_loss: The terms, unweighted.
        embeddings: Input of the emotion head (pooled SSL features ⊕ time-mean of the codes).
        hidden_states, attentions: The backbone's, when requested.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    ctc_logits: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    speaker_logits: torch.FloatTensor | None = None
    emotion_loss: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    speaker_loss: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid frames (and every bin) of `(batch, frames, bins)` tensors."""
    weights = mask.to(prediction.dtype).unsqueeze(-1)
    squared = ((prediction.float() - target.float()) ** 2) * weights
    return squared.sum() / (weights.sum() * prediction.shape[-1]).clamp(min=1.0)


def speaker_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over clips with a known speaker (-100 = unknown); 0 when there are none."""
    if not (labels != -100).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


class DecompositionFrontEnd(nn.Module):
    """Scaled log-mel and one-hot F0 of a padded batch, on the mel frame grid.

    The log-mel (natural log, `LogMelSpectrogram`, magnitude floor 1e-5) is mapped as in
    SpeechSplit: to dB, then `(dB - ref_level_db - min_level_db) / -min_level_db`, unclipped.
    """

    def __init__(self, config: SpeechDecompositionConfig):
        super().__init__()
        self.mel = LogMelSpectrogram(**config.mel_kwargs())
        self.ref_level_db = config.mel_ref_level_db
        self.min_level_db = config.mel_min_level_db
        self.pitch_bins = config.pitch_bins
        self.hop_length = config.hop_length

    def log_mel(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None):
        """Returns `(scaled log-mel (batch, frames, n_mels), frame_lengths, frame_mask)`."""
        log_mel, lengths = self.mel(input_values, sample_lengths(input_values, attention_mask))
        decibels = log_mel * (20.0 / math.log(10.0))
        scaled = (decibels - self.ref_level_db - self.min_level_db) / -self.min_level_db
        mask = lengths_to_mask(lengths, scaled.shape[1])
        return zero_padded_frames(scaled, mask), lengths, mask

    def pitch_one_hot(self, pitch_ids: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """One-hot `(batch, frames, pitch_bins + 1)` of the feature extractor's `pitch_ids`."""
        pitch_ids = checked_pitch_ids(pitch_ids, mask, self.pitch_bins, self.hop_length)
        one_hot = F.one_hot(pitch_ids.long(), self.pitch_bins + 1).float()
        return zero_padded_frames(one_hot, mask)


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------


class SpeechDecompositionPreTrainedModel(PreTrainedModel):
    config_class = SpeechDecompositionConfig
    base_model_prefix = "decomposition"
    main_input_name = "input_values"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # SpeechSplit initialises its encoder convolutions with Xavier (ReLU gain). Only the
        # decomposition's convolutions reach here: the backbone initialises its own modules. Modules
        # without parameters of their own are skipped by transformers, so this matches leaf modules.
        if isinstance(module, nn.Conv1d):
            init.xavier_uniform_(module.weight, gain=math.sqrt(2.0))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MaskedGroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, WeightedLayerSum):
            init.constant_(module.layer_weights, 1.0 / module.layer_weights.numel())


# ----------------------------------------------------------------------------------------------
# Family 4: decomposition pre-training (stage 1)
# ----------------------------------------------------------------------------------------------


class SpeechDecompositionModel(SpeechDecompositionPreTrainedModel):
    """SpeechSplit decomposition autoencoder (Qian et al., ICML 2020) with a timbre encoder.

    waveform → scaled log-mel (in the model) and `pitch_ids` (from the feature extractor with
    `compute_pitch=True`, one-hot of `pitch_bins + 1`) → content code (content encoder on the
    log-mel), rhythm code (rhythm encoder on the log-mel), pitch code (pitch encoder on the F0
    one-hot), timbre embedding (timbre encoder on the log-mel) → decoder → reconstructed log-mel.
    In training mode the content and pitch paths are randomly time-resampled together.

    The loss is `reconstruction_weight * masked MSE + speaker_weight * CE(speaker)`.

    This model has no emotion head. As an `AutoModelForAudioClassification` its `logits` are the
    **speaker** logits of the timbre head and `config.id2label` holds the training speakers, so
    `pipeline("audio-classification")` returns speaker labels. Its purpose is to pre-train the
    decomposition for [`DecomposedEmotionForAudioClassification.load_decomposition_weights`].
    """

    def __init__(self, config: SpeechDecompositionConfig):
        super().__init__(config)
        self.front_end = DecompositionFrontEnd(config)
        self.decomposition = SpeechDecomposition(config, config.n_mels)
        self.speaker_head = nn.Linear(config.timbre_size, config.num_labels)
        add_auto_model_entries(config, self)
        self.post_init()

    @property
    def is_padding_invariant(self) -> bool:
        """Batched predictions equal single-clip ones (in eval mode)."""
        return True

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pitch_ids: torch.Tensor | None = None,
        speaker_labels: torch.Tensor | None = None,
    ) -> SpeechDecompositionOutput:
        config = self.config
        mel, lengths, mask = self.front_end.log_mel(input_values, attention_mask)
        pitch = self.front_end.pitch_one_hot(pitch_ids, mask)
        parts = self.decomposition(mel, mel, pitch, lengths)
        logits = self.speaker_head(parts.timbre)
        reconstruction_term = masked_mse(parts.reconstruction, mel, mask)
        speaker_term = None
        if speaker_labels is not None:
            speaker_term = speaker_classification_loss(logits, speaker_labels)
        loss = weighted_sum(
            [(config.reconstruction_weight, reconstruction_term), (config.speaker_weight, speaker_term)]
        )
        return SpeechDecompositionOutput(
            loss=loss,
            logits=logits,
            reconstruction=parts.reconstruction,
            log_mel=mel,
            reconstruction_loss=reconstruction_term,
            speaker_loss=speaker_term,
            embeddings=parts.timbre,
            content_codes=parts.content_codes,
            rhythm_codes=parts.rhythm_codes,
            pitch_codes=parts.pitch_codes,
        )


# ----------------------------------------------------------------------------------------------
# Family 3: decomposed-speech multi-task emotion recognition (stage 2)
# ----------------------------------------------------------------------------------------------


class DecomposedEmotionForAudioClassification(SSLBackboneMixin, SpeechDecompositionPreTrainedModel):
    """Speech emotion recognition with decomposed speech and multi-task learning (Hsu, Wu & Wei,
    Interspeech 2023). The authors published no code; this is our reading of the paper, whose
    abstract fixes only: a SpeechSplit-style autoencoder decomposes speech into content, timbre,
    pitch and rhythm, these are used as emotion features, and emotion, speaker and speech
    recognition and spectral reconstruction are trained jointly.

    Our choices (docs/decomposed_mtl.md gives the reasons and the SpeechSplit references):

    - **Emotion head input**: the masked mean over valid frames of the SSL features (last layer, or
      a learned weighted sum of layers with `use_weighted_layer_sum`; other poolings via `pooling`)
      concatenated with the masked time-mean, at the mel frame rate, of the codes listed in
      `emotion_code_inputs` (default content, rhythm, pitch, upsampled by repetition as in
      SpeechSplit's decoder input), then dense → tanh → dropout → out. Timbre is excluded by default
      so that the head is not handed speaker identity (it would help within-speaker splits and hurt
      unseen speakers); add `"timbre"` to include the embedding itself.
    - **Content code**: the SSL features (the same layer choice as the pooling) linearly
      interpolated per clip from the backbone rate (50 Hz) to the mel frame rate using each clip's
      own lengths, then SpeechSplit's content encoder, whose first convolution reads `hidden_size`
      features instead of mel bins. Rhythm and timbre encoders read the log-mel, the pitch encoder
      the one-hot quantised F0, as in stage 1.
    - **Random resampling** of the content and pitch paths stays on in training (eval is
      deterministic); the emotion head reads the same, resampled, codes as the decoder.
    - **CTC head**: dropout + linear on the last SSL layer (as family 2); input lengths from the
      attention mask; clips without a transcript add nothing.
    - **Speaker head**: linear on the timbre embedding, `num_speakers` classes; -100 = unknown.
    - **Reconstruction**: masked MSE between the decoder output and the scaled log-mel.
    - **Loss**: `CE(emotion) + ctc_weight * CTC + reconstruction_weight * MSE + speaker_weight *
      CE(speaker)`; a weight of 0 removes the term and the modules only it needs (no CTC head, no
      decoder, no speaker head, no encoder the emotion head does not read). Default weights
      (0.1, 1.0, 0.1) are ours: the paper's are not in its abstract.
    - **Initialisation**: optionally from a stage-1 [`SpeechDecompositionModel`] via
      [`load_decomposition_weights`]; otherwise the decomposition starts from random weights.

    Inputs: `pitch_ids` from the feature extractor with `compute_pitch=True` (see
    `config.feature_extractor_kwargs()`) are required whenever the pitch encoder exists.
    """

    config_class = DecomposedEmotionConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True

    def __init__(self, config: DecomposedEmotionConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        if config.use_weighted_layer_sum:
            self.layer_sum = WeightedLayerSum(config.backbone_config.num_hidden_layers + 1)
        self.pooler = build_pooling(config.pooling, config.hidden_size, config.pooling_attention_size)
        self.front_end = DecompositionFrontEnd(config)
        skip = tuple(name for name in ("content", "rhythm", "pitch", "timbre") if not config.uses_code(name))
        if not config.uses_decoder:
            skip += ("decoder",)
        self.decomposition = SpeechDecomposition(config, config.content_input_size, skip=skip)
        code_size = sum(config.code_size(name) for name in config.emotion_code_inputs)
        self.classifier = ClassificationHead(
            self.pooler.output_size + code_size,
            config.classifier_hidden_size,
            config.num_labels,
            config.classifier_dropout,
        )
        if config.uses_ctc_head:
            self.ctc_dropout = nn.Dropout(config.ctc_dropout)
            self.ctc_head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.uses_speaker_head:
            self.speaker_head = nn.Linear(config.timbre_size, config.num_speakers)
        add_auto_model_entries(config, self)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pitch_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ctc_labels: torch.Tensor | None = None,
        speaker_labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> DecomposedEmotionOutput:
        config = self.config
        decomposition = self.decomposition
        hidden, ssl_lengths, outputs = self.encode_backbone(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        pooled = self.pooler(hidden, lengths_to_mask(ssl_lengths, hidden.shape[1]))

        mel, mel_lengths, mel_mask = self.front_end.log_mel(input_values, attention_mask)
        pitch = self.front_end.pitch_one_hot(pitch_ids, mel_mask) if decomposition.has("pitch") else None
        content_input = None
        if decomposition.has("content"):
            content_input = interpolate_frames(hidden, ssl_lengths, mel_lengths, mel.shape[1])
        parts = decomposition(content_input, mel, pitch, mel_lengths)

        code_summaries = [
            parts.timbre if name == "timbre" else masked_mean(parts.frames(name), mel_mask)
            for name in config.emotion_code_inputs
        ]
        embeddings = torch.cat([pooled, *code_summaries], dim=-1)
        logits = self.classifier(embeddings)
        ctc_logits = speaker_logits = None
        if config.uses_ctc_head:
            ctc_logits = self.ctc_head(self.ctc_dropout(outputs.last_hidden_state))
        if config.uses_speaker_head:
            speaker_logits = self.speaker_head(parts.timbre)

        emotion_term = emotion_loss(logits, labels, config)
        ctc_term = reconstruction_term = speaker_term = None
        if ctc_logits is not None:
            ctc_term = ctc_loss_from_config(ctc_logits, ssl_lengths, ctc_labels, config)
        if parts.reconstruction is not None:
            reconstruction_term = masked_mse(parts.reconstruction, mel, mel_mask)
        if speaker_labels is not None and speaker_logits is not None:
            speaker_term = speaker_classification_loss(speaker_logits, speaker_labels)
        loss = weighted_sum(
            [
                (1.0, emotion_term),
                (config.ctc_weight, ctc_term),
                (config.reconstruction_weight, reconstruction_term),
                (config.speaker_weight, speaker_term),
            ]
        )
        return DecomposedEmotionOutput(
            loss=loss,
            logits=logits,
            ctc_logits=ctc_logits,
            reconstruction=parts.reconstruction,
            speaker_logits=speaker_logits,
            emotion_loss=emotion_term,
            ctc_loss=ctc_term,
            reconstruction_loss=reconstruction_term,
            speaker_loss=speaker_term,
            embeddings=embeddings,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )

    def load_decomposition_weights(
        self, stage1_name_or_path: str, **from_pretrained_kwargs: Any
    ) -> dict[str, list[str]]:
        """Initialise the decomposition from a saved stage-1 [`SpeechDecompositionModel`].

        Copies the rhythm, pitch and timbre encoders, the decoder and every content-encoder weight
        whose shape matches (the first content convolution reads mel bins in stage 1 and SSL
        features here, so its weight is skipped, while its bias and norm are copied). The speaker
        head is copied only when the speaker counts match. Modules this model does not build (a
        weight of 0) are skipped.

        Returns `{"loaded": [...], "skipped": [...]}` with this model's parameter names.

        Raises:
            ValueError: the checkpoint is not a `speech_decomposition` model, or its mel front-end or
                code sizes differ from this model's (the codes would not mean the same).
        """
        config_dict, _ = SpeechDecompositionConfig.get_config_dict(stage1_name_or_path)
        if config_dict.get("model_type") != SpeechDecompositionConfig.model_type:
            raise ValueError(
                f"{stage1_name_or_path} is a {config_dict.get('model_type')!r} checkpoint; stage-1 "
                f"weights come from a {SpeechDecompositionConfig.model_type!r} model (SpeechDecompositionModel)."
            )
        source = SpeechDecompositionModel.from_pretrained(stage1_name_or_path, **from_pretrained_kwargs)
        source_state = source.state_dict()
        mine, theirs = self.config, source.config
        differences = [
            f"{field}: stage 1 has {getattr(theirs, field)!r}, this model {getattr(mine, field)!r}"
            for field in MEL_FIELDS + CODE_FIELDS
            if getattr(theirs, field) != getattr(mine, field)
        ]
        if (theirs.win_length or theirs.n_fft) != (mine.win_length or mine.n_fft):
            differences.append(f"win_length: stage 1 has {theirs.win_length}, this model {mine.win_length}")
        if differences:
            raise ValueError(
                "The stage-1 decomposition is incompatible with this model (mel settings and code sizes "
                "must match): " + "; ".join(differences)
            )

        own = self.state_dict()
        loaded, skipped = [], []
        for name, tensor in source_state.items():
            if not name.startswith(("decomposition.", "speaker_head.")):
                continue
            if name.startswith("speaker_head.") and not mine.uses_speaker_head:
                skipped.append(name)
            elif name in own and own[name].shape == tensor.shape:
                loaded.append(name)
            else:
                skipped.append(name)
        parameters = dict(self.named_parameters())
        with torch.no_grad():
            for name in loaded:
                parameters[name].copy_(source_state[name].to(parameters[name].device))
        return {"loaded": loaded, "skipped": skipped}
