"""Emotion models as transformers custom models.

Importing this package registers every family with the Auto classes (for local use) and marks
the classes for `register_for_auto_class`, so that `save_pretrained` writes the code files and
`auto_map` that `from_pretrained(..., trust_remote_code=True)` needs. The files next to this one
are the remote code: flat, relative imports, torch/transformers/numpy/stdlib only.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoProcessor,
)

from .configuration_emotion_ssl import EmotionCTCConfig, EmotionSSLConfig
from .configuration_spectrogram_emotion import CNNTransformerEmotionConfig, SegmentCRNNEmotionConfig
from .configuration_speech_decomposition import DecomposedEmotionConfig, SpeechDecompositionConfig
from .feature_extraction_emotion import AudioInputError, EmotionFeatureExtractor
from .modeling_emotion_ssl import (
    EmotionClassifierOutput,
    EmotionCTCForAudioClassification,
    EmotionCTCOutput,
    EmotionSSLForAudioClassification,
)
from .modeling_spectrogram_emotion import (
    CNNTransformerForAudioClassification,
    SegmentCRNNForAudioClassification,
    SpectrogramClassifierOutput,
)
from .modeling_speech_decomposition import (
    DecomposedEmotionForAudioClassification,
    DecomposedEmotionOutput,
    SpeechDecompositionModel,
    SpeechDecompositionOutput,
)
from .processing_emotion import EmotionProcessor

# model_type -> (config class, model class), one entry per family.
MODEL_CLASSES = {
    EmotionSSLConfig.model_type: (EmotionSSLConfig, EmotionSSLForAudioClassification),
    EmotionCTCConfig.model_type: (EmotionCTCConfig, EmotionCTCForAudioClassification),
    CNNTransformerEmotionConfig.model_type: (
        CNNTransformerEmotionConfig,
        CNNTransformerForAudioClassification,
    ),
    SegmentCRNNEmotionConfig.model_type: (SegmentCRNNEmotionConfig, SegmentCRNNForAudioClassification),
    SpeechDecompositionConfig.model_type: (SpeechDecompositionConfig, SpeechDecompositionModel),
    DecomposedEmotionConfig.model_type: (DecomposedEmotionConfig, DecomposedEmotionForAudioClassification),
}


def _register() -> None:
    EmotionFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    EmotionProcessor.register_for_auto_class("AutoProcessor")
    for config_class, model_class in MODEL_CLASSES.values():
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForAudioClassification")
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForAudioClassification.register(config_class, model_class, exist_ok=True)
        AutoFeatureExtractor.register(config_class, EmotionFeatureExtractor, exist_ok=True)
        AutoProcessor.register(config_class, EmotionProcessor, exist_ok=True)


_register()

__all__ = [
    "MODEL_CLASSES",
    "AudioInputError",
    "CNNTransformerEmotionConfig",
    "CNNTransformerForAudioClassification",
    "DecomposedEmotionConfig",
    "DecomposedEmotionForAudioClassification",
    "DecomposedEmotionOutput",
    "EmotionCTCConfig",
    "EmotionCTCForAudioClassification",
    "EmotionCTCOutput",
    "EmotionClassifierOutput",
    "EmotionFeatureExtractor",
    "EmotionProcessor",
    "EmotionSSLConfig",
    "EmotionSSLForAudioClassification",
    "SegmentCRNNEmotionConfig",
    "SegmentCRNNForAudioClassification",
    "SpectrogramClassifierOutput",
    "SpeechDecompositionConfig",
    "SpeechDecompositionModel",
    "SpeechDecompositionOutput",
]
