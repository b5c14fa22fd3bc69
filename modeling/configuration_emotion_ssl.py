"""Configurations of the SSL-backbone emotion classifier and its multi-task SER + CTC variant."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

SUPPORTED_BACKBONES = ("wav2vec2", "hubert", "wavlm")


def build_backbone_config(backbone_config: PretrainedConfig | dict | None) -> PretrainedConfig:
    """Nested backbone config from a config object, a dict with `model_type`, or None (wav2vec2-base sizes)."""
    if backbone_config is None:
        backbone_config = {"model_type": "wav2vec2"}
    if isinstance(backbone_config, dict):
        backbone_config = dict(backbone_config)
        model_type = backbone_config.pop("model_type", "wav2vec2")
        backbone_config = AutoConfig.for_model(model_type, **backbone_config)
    if backbone_config.model_type not in SUPPORTED_BACKBONES:
        raise ValueError(
            f"Unsupported backbone model_type {backbone_config.model_type!r}; "
            f"supported: {', '.join(SUPPORTED_BACKBONES)}."
        )
    return backbone_config


class EmotionSSLConfig(PretrainedConfig):
    r"""
    Configuration of [`EmotionSSLForAudioClassification`]: a wav2vec2 / HuBERT / WavLM backbone,
    pooling over valid frames and a classification head.

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*, defaults to wav2vec2-base sizes):
            Configuration of the SSL backbone; its `model_type` is `wav2vec2`, `hubert` or `wavlm`.
        use_weighted_layer_sum (`bool`, defaults to `False`):
            Pool a learnable softmax-weighted sum of all hidden layers instead of the last one.
        pooling (`str`, defaults to `"mean"`):
            `"mean"` (masked mean), `"attentive_statistics"` (attention-weighted mean and std) or
            `"attention"` (attention-weighted mean).
        pooling_attention_size (`int`, defaults to 128): Hidden size of the attention scorer.
        classifier_hidden_size (`int`, defaults to 256): Width of the dense layer of the head.
        classifier_dropout (`float`, defaults to 0.1): Dropout between the head's tanh and output.
        class_weights (`list[float]`, *optional*): Per-class weights of the emotion loss.
        focal_gamma (`float`, defaults to 0.0): Focal-loss focusing parameter; 0 gives cross-entropy.
        label_smoothing (`float`, defaults to 0.0): Label smoothing of the cross-entropy.
        min_input_samples (`int`, defaults to 400): Shortest input the backbone accepts (its
            convolutional receptive field); the feature extractor pads shorter clips to it.
    """

    model_type = "emotion_ssl"
    sub_configs = {"backbone_config": AutoConfig}
    keys_to_ignore_at_inference = ["embeddings", "hidden_states", "attentions"]

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        use_weighted_layer_sum: bool = False,
        pooling: str = "mean",
        pooling_attention_size: int = 128,
        classifier_hidden_size: int = 256,
        classifier_dropout: float = 0.1,
        class_weights: list[float] | None = None,
        focal_gamma: float = 0.0,
        label_smoothing: float = 0.0,
        min_input_samples: int = 400,
        **kwargs: Any,
    ):
        self.backbone_config = build_backbone_config(backbone_config)
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.pooling = pooling
        self.pooling_attention_size = pooling_attention_size
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_dropout = classifier_dropout
        self.class_weights = class_weights
        self.focal_gamma = focal_gamma
        self.label_smoothing = label_smoothing
        self.min_input_samples = min_input_samples
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.backbone_config.hidden_size

    def feature_extractor_kwargs(self) -> dict[str, Any]:
        """Settings the [`EmotionFeatureExtractor`] of this model needs."""
        return {"min_samples": self.min_input_samples, "compute_pitch": False}


class EmotionCTCConfig(EmotionSSLConfig):
    r"""
    Configuration of [`EmotionCTCForAudioClassification`]: the SSL classifier plus a character CTC
    head trained jointly (Cai et al., Interspeech 2021): `loss = CE + ctc_weight * CTC`.

    Args:
        vocab_size (`int`, defaults to 32): Size of the CTC vocabulary (the tokenizer's).
        ctc_weight (`float`, defaults to 0.1): Weight α of the CTC term (the paper's best value
            for wav2vec2-base).
        ctc_loss_reduction (`str`, defaults to `"mean"`): `"mean"` (per-target-length mean, as in
            `torch.nn.functional.ctc_loss`) or `"sum"`.
        ctc_zero_infinity (`bool`, defaults to `True`): Zero infinite losses (clips shorter than
            their transcript allows).
        ctc_dropout (`float`, defaults to 0.1): Dropout before the CTC projection.
        pad_token_id (`int`, defaults to 0): CTC blank id (the tokenizer's pad token).
        kwargs: Every argument of [`EmotionSSLConfig`].
    """

    model_type = "emotion_ssl_ctc"

    def __init__(
        self,
        vocab_size: int = 32,
        ctc_weight: float = 0.1,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        ctc_dropout: float = 0.1,
        pad_token_id: int = 0,
        **kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.ctc_weight = ctc_weight
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        self.ctc_dropout = ctc_dropout
        super().__init__(pad_token_id=pad_token_id, **kwargs)
