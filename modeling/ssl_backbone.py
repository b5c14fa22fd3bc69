"""Helpers for models that hold a wav2vec2 / HuBERT / WavLM backbone under `self.backbone`."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)

# Heads that self-supervised checkpoints carry besides the encoder (wav2vec2 pre-training's
# quantizer and projections, HuBERT's label embeddings): expected to be left out of the backbone.
PRETRAINING_ONLY_PREFIXES = (
    "quantizer.",
    "project_hid.",
    "project_q.",
    "final_proj.",
    "label_embs_concat",
    "lm_head.",
)


def build_backbone(backbone_config: PretrainedConfig) -> PreTrainedModel:
    """The bare encoder (`Wav2Vec2Model`, `HubertModel` or `WavLMModel`) for a backbone config."""
    return AutoModel.from_config(backbone_config)


class WeightedLayerSum(nn.Module):
    """Softmax-weighted sum of the backbone's hidden layers (SUPERB-style)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.full((num_layers,), 1.0 / num_layers))

    def forward(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        stacked = torch.stack(hidden_states, dim=0)
        weights = torch.softmax(self.layer_weights, dim=-1).to(stacked.dtype)
        return (stacked * weights.view(-1, 1, 1, 1)).sum(0)


class SSLBackboneMixin:
    """Backbone utilities for a `PreTrainedModel` with `self.backbone` and `config.backbone_config`."""

    backbone: PreTrainedModel

    @property
    def is_padding_invariant(self) -> bool:
        """Whether batched predictions equal single-clip ones. False for backbones whose first
        convolution uses GroupNorm over time (`feat_extract_norm="group"`: wav2vec2-base,
        hubert-base, wavlm-base/-plus), whose statistics include the padding."""
        return getattr(self.config.backbone_config, "feat_extract_norm", "layer") == "layer"

    def freeze_feature_encoder(self) -> None:
        """Stop gradients through the backbone's convolutional feature encoder."""
        self.backbone.feature_extractor._freeze_parameters()

    def freeze_backbone(self) -> None:
        """Stop gradients through the whole backbone (linear probing)."""
        for param in self.backbone.parameters():
            param.requires_grad = False

    def encode_backbone(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ):
        """Run the backbone; returns the features to pool (last layer, or the learned sum of all
        layers when `config.use_weighted_layer_sum`), each clip's number of valid frames, and the
        backbone outputs."""
        use_layer_sum = self.config.use_weighted_layer_sum
        outputs = self.backbone(
            input_values,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=bool(output_hidden_states or use_layer_sum),
        )
        hidden = self.layer_sum(outputs.hidden_states) if use_layer_sum else outputs.last_hidden_state
        return hidden, self.backbone_frame_lengths(input_values, attention_mask), outputs

    def ctc_frame_lengths(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Valid CTC frames per clip, to cut padding before greedy decoding."""
        return self.backbone_frame_lengths(input_values, attention_mask)

    def backbone_frame_lengths(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None):
        """Number of backbone frames of each clip, from the attention mask."""
        if attention_mask is None:
            lengths = torch.full((input_values.shape[0],), input_values.shape[-1], device=input_values.device)
        else:
            lengths = attention_mask.long().sum(-1)
        return self.backbone._get_feat_extract_output_lengths(lengths).long()

    def load_pretrained_backbone(
        self, name_or_path: str, **from_pretrained_kwargs: Any
    ) -> dict[str, list[str]]:
        """Copy the encoder weights of a pretrained checkpoint (Hub id or local directory of a
        wav2vec2 / HuBERT / WavLM model) into `self.backbone`.

        Raises `ValueError` if any backbone weight is missing from the checkpoint or the shapes do
        not match. Returns `{"ignored": [...]}`: checkpoint keys outside the encoder (pre-training
        heads), which are expected and skipped.
        """
        source, info = AutoModel.from_pretrained(
            name_or_path, output_loading_info=True, **from_pretrained_kwargs
        )
        if source.config.model_type != self.config.backbone_config.model_type:
            raise ValueError(
                f"{name_or_path} is a {source.config.model_type} checkpoint but this model's backbone is "
                f"{self.config.backbone_config.model_type}."
            )
        missing = sorted(info.get("missing_keys", []))
        mismatched = sorted(str(key) for key in info.get("mismatched_keys", []))
        if missing or mismatched:
            raise ValueError(
                f"{name_or_path} does not provide every backbone weight: missing {missing[:10]}, "
                f"shape-mismatched {mismatched[:10]}."
            )
        result = self.backbone.load_state_dict(source.state_dict(), strict=True)
        if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept for clarity
            raise ValueError(f"backbone keys differ: {result}")
        ignored = sorted(info.get("unexpected_keys", []))
        unknown = [key for key in ignored if not key.startswith(PRETRAINING_ONLY_PREFIXES)]
        if unknown:
            logger.warning("Checkpoint keys not used by the backbone: %s", unknown[:20])
        return {"ignored": ignored}

    @classmethod
    def from_pretrained_backbone(cls, name_or_path: str, **config_kwargs: Any):
        """Build a new model around a pretrained backbone: the backbone config is read from the
        checkpoint, every other field from `config_kwargs`; the head starts from random weights."""
        backbone_config = AutoConfig.from_pretrained(name_or_path)
        config = cls.config_class(backbone_config=backbone_config.to_dict(), **config_kwargs)
        model = cls(config)
        model.load_pretrained_backbone(name_or_path)
        return model
