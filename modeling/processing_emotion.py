"""Processor pairing the emotion feature extractor with a character CTC tokenizer."""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import ProcessorMixin


class EmotionProcessor(ProcessorMixin):
    r"""
    Wraps an [`EmotionFeatureExtractor`] and a `Wav2Vec2CTCTokenizer` for the models with a CTC
    head. Audio goes to the feature extractor, text to the tokenizer (as `ctc_labels`), and
    [`decode_ctc`] turns CTC logits into transcripts.

    Args:
        feature_extractor (`EmotionFeatureExtractor`): Prepares the waveform.
        tokenizer (`Wav2Vec2CTCTokenizer`): Character vocabulary of the CTC head.
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(self, audio: Any = None, text: str | list[str] | None = None, **kwargs: Any):
        if audio is None and text is None:
            raise ValueError("Give `audio`, `text` or both.")
        inputs = self.feature_extractor(audio, **kwargs) if audio is not None else {}
        if text is not None:
            ids = self.tokenizer(text)["input_ids"]
            if audio is None:
                return ids
            inputs["ctc_labels"] = ids
        return inputs

    def decode_ctc(self, ctc_logits: Any, frame_lengths: Any | None = None) -> list[str]:
        """Greedy CTC decoding: argmax per frame, padded frames cut, repeats merged, blanks dropped."""
        ids = np.asarray(ctc_logits.argmax(-1).cpu() if hasattr(ctc_logits, "cpu") else ctc_logits.argmax(-1))
        if ids.ndim == 1:
            ids = ids[None]
        if frame_lengths is not None:
            lengths = np.asarray(frame_lengths.cpu() if hasattr(frame_lengths, "cpu") else frame_lengths)
            ids = [row[: int(n)] for row, n in zip(ids, lengths)]
        return self.tokenizer.batch_decode([list(map(int, row)) for row in ids], skip_special_tokens=True)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return list(self.feature_extractor.model_input_names)
