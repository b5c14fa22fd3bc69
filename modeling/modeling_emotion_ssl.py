"""SSL-backbone emotion classifier (family 1) and multi-task SER + CTC (family 2, Cai et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_emotion_ssl import EmotionCTCConfig, EmotionSSLConfig
from .emotion_layers import (
    ClassificationHead,
    add_auto_model_entries,
    build_pooling,
    ctc_loss_from_config,
    emotion_loss,
    lengths_to_mask,
    weighted_sum,
)
from .ssl_backbone import SSLBackboneMixin, WeightedLayerSum, build_backbone

try:  # transformers >= 5 initialisers skip weights already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init


@dataclass
class EmotionClassifierOutput(ModelOutput):
    """Output of [`EmotionSSLForAudioClassification`].

    Args:
        loss: Emotion loss, when `labels` are given.
        logits: Emotion logits `(batch, num_labels)`.
        embeddings: Pooled utterance embedding fed to the head `(batch, dim)`.
        hidden_states, attentions: The backbone's, when requested.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class EmotionCTCOutput(ModelOutput):
    """Output of [`EmotionCTCForAudioClassification`].

    Args:
        loss: `emotion_loss + ctc_weight * ctc_loss` over the terms whose labels are given.
        logits: Emotion logits `(batch, num_labels)`.
        ctc_logits: Character logits per backbone frame `(batch, frames, vocab_size)`.
        emotion_loss, ctc_loss: The two terms, unweighted.
        embeddings: Pooled utterance embedding fed to the emotion head.
        hidden_states, attentions: The backbone's, when requested.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    ctc_logits: torch.FloatTensor | None = None
    emotion_loss: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class EmotionSSLPreTrainedModel(SSLBackboneMixin, PreTrainedModel):
    config_class = EmotionSSLConfig
    base_model_prefix = "backbone"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, WeightedLayerSum):
            init.constant_(module.layer_weights, 1.0 / module.layer_weights.numel())

    def _build_emotion_encoder(self, config: EmotionSSLConfig) -> None:
        """The backbone, the optional weighted layer sum, the pooling and the emotion head."""
        self.backbone = build_backbone(config.backbone_config)
        if config.use_weighted_layer_sum:
            self.layer_sum = WeightedLayerSum(config.backbone_config.num_hidden_layers + 1)
        self.pooler = build_pooling(config.pooling, config.hidden_size, config.pooling_attention_size)
        self.classifier = ClassificationHead(
            self.pooler.output_size,
            config.classifier_hidden_size,
            config.num_labels,
            config.classifier_dropout,
        )

    def _classify(self, input_values, attention_mask, output_attentions, output_hidden_states):
        """Emotion logits, the pooled features, the backbone's frame lengths and outputs."""
        hidden, frame_lengths, outputs = self.encode_backbone(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        pooled = self.pooler(hidden, lengths_to_mask(frame_lengths, hidden.shape[1]))
        return self.classifier(pooled), pooled, frame_lengths, outputs


class EmotionSSLForAudioClassification(EmotionSSLPreTrainedModel):
    """Emotion classifier on a wav2vec2 / HuBERT / WavLM backbone: masked pooling over the last
    layer (or a learned weighted sum of layers) followed by dense → tanh → dropout → out."""

    def __init__(self, config: EmotionSSLConfig):
        super().__init__(config)
        self._build_emotion_encoder(config)
        add_auto_model_entries(config, self)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> EmotionClassifierOutput:
        logits, pooled, _, outputs = self._classify(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        return EmotionClassifierOutput(
            loss=emotion_loss(logits, labels, self.config),
            logits=logits,
            embeddings=pooled,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )


class EmotionCTCForAudioClassification(EmotionSSLPreTrainedModel):
    """Multi-task emotion classification + character CTC (Cai et al., Interspeech 2021).

    The emotion head pools the backbone's features as in [`EmotionSSLForAudioClassification`];
    the CTC head is a linear layer on the last hidden layer. The loss is
    `CE + ctc_weight * CTC`, with CTC input lengths taken from the attention mask. Clips without a
    transcript (all `ctc_labels` equal to -100) add no CTC term.
    """

    config_class = EmotionCTCConfig

    def __init__(self, config: EmotionCTCConfig):
        super().__init__(config)
        self._build_emotion_encoder(config)
        self.ctc_dropout = nn.Dropout(config.ctc_dropout)
        self.ctc_head = nn.Linear(config.hidden_size, config.vocab_size)
        add_auto_model_entries(config, self)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ctc_labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> EmotionCTCOutput:
        config = self.config
        logits, pooled, frame_lengths, outputs = self._classify(
            input_values, attention_mask, output_attentions, output_hidden_states
        )
        ctc_logits = self.ctc_head(self.ctc_dropout(outputs.last_hidden_state))
        emotion_term = emotion_loss(logits, labels, config)
        ctc_term = ctc_loss_from_config(ctc_logits, frame_lengths, ctc_labels, config)
        loss = weighted_sum([(1.0, emotion_term), (config.ctc_weight, ctc_term)])
        return EmotionCTCOutput(
            loss=loss,
            logits=logits,
            ctc_logits=ctc_logits,
            emotion_loss=emotion_term,
            ctc_loss=ctc_term,
            embeddings=pooled,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )
