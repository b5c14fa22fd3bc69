"""Training-time batching: the random crop + augmentation transform of the training split and the
data collator that turns cached rows into model inputs."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ser_augment import Augmenter
from ser_data import normalize_transcript
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler


@dataclass
class TrainTransform:
    """Random crop to `max_samples` (hop-aligned so F0 frames stay aligned) and augmentation.

    Used with `Dataset.set_transform` on the training split only; evaluation sees full clips.
    The randomness of each row depends only on (seed, epoch, utt_id), so a run resumed from a
    checkpoint draws the same crops and augmentations as an uninterrupted one. `epoch` is kept
    current by `EpochCallback`.
    """

    max_samples: int | None
    hop_length: int = 256
    augmenter: Augmenter | None = None
    seed: int = 0
    epoch: int = 0

    def _row_seed(self, utt_id: str) -> list[int]:
        return [self.seed, self.epoch, zlib.crc32(str(utt_id).encode())]

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        waveforms, tracks = [], []
        has_f0 = "f0" in batch
        for i, values in enumerate(batch["input_values"]):
            row_seed = self._row_seed(batch["utt_id"][i])
            rng = np.random.default_rng(row_seed)
            waveform = np.asarray(values, dtype=np.float32)
            f0 = np.asarray(batch["f0"][i], dtype=np.float32) if has_f0 else None
            if self.max_samples and waveform.size > self.max_samples:
                hops = (waveform.size - self.max_samples) // self.hop_length
                start = int(rng.integers(0, hops + 1)) * self.hop_length
                waveform = waveform[start : start + self.max_samples]
                if f0 is not None:
                    first = start // self.hop_length
                    f0 = f0[first : first + 1 + self.max_samples // self.hop_length]
            if self.augmenter is not None:
                waveform, f0 = self._augment(waveform, f0, int(rng.integers(0, 2**31 - 1)))
            waveforms.append(waveform)
            tracks.append(f0)
        out = dict(batch)
        out["input_values"] = waveforms
        if has_f0:
            out["f0"] = tracks
        return out

    def _augment(self, waveform, f0, seed: int):
        # audiomentations draws from the global `random` and numpy generators: seed them for this
        # row and restore them afterwards so nothing else is disturbed.
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.augmenter(waveform, f0)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class EpochCallback(TrainerCallback):
    """Keeps `TrainTransform.epoch` equal to the trainer's current epoch."""

    def __init__(self, transform: TrainTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = int(state.epoch or 0)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped shuffling, drawn from a generator seeded by (seed, epoch).

    The stock sampler shuffles with the global torch RNG when an epoch's iterator is created. A
    run resumed mid-epoch creates that iterator before it restores the checkpoint's RNG state, so
    it trained on other batches than the interrupted run would have. Here the order depends only
    on the seed and `clock.epoch` (the `TrainTransform`, kept current by `EpochCallback`).
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int, clock: TrainTransform):
        super().__init__(batch_size, lengths=list(lengths))
        self.seed = seed
        self.clock = clock

    def __iter__(self):
        seed = zlib.crc32(f"{self.seed}/{self.clock.epoch}".encode())
        self.generator = torch.Generator().manual_seed(seed)
        return super().__iter__()


class ResumableTrainer(Trainer):
    """`Trainer` whose length-grouped training order depends only on (seed, epoch), so that a run
    killed mid-epoch and resumed from its last checkpoint sees the batches an uninterrupted run
    sees (see `EpochSeededLengthGroupedSampler`). `clock` is the training split's `TrainTransform`."""

    def __init__(self, *args: Any, clock: TrainTransform, **kwargs: Any):
        self.clock = clock
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed, self.clock)
        return sampler


@dataclass
class EmotionDataCollator:
    """Pads a list of rows into model inputs.

    Rows carry `input_values` (raw waveform), `label`, and as the model needs them `f0` (Hz per
    frame), `speaker`, `gender` and `text`. F0 is quantised by the feature extractor using the
    speaker's statistics when the speaker is a training speaker, else its gender/global ones.
    """

    feature_extractor: Any
    tokenizer: Any = None
    speaker_f0_stats: dict[str, list[float]] | None = None
    speaker_to_id: dict[str, int] | None = None
    return_labels: bool = True
    return_ctc_labels: bool = False
    return_speaker_labels: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        extractor = self.feature_extractor
        waveforms = [np.asarray(r["input_values"], dtype=np.float32) for r in rows]
        kwargs: dict[str, Any] = {"gender": [r.get("gender") for r in rows]}
        if getattr(extractor, "compute_pitch", False):
            kwargs["f0"] = [np.asarray(r["f0"], dtype=np.float32) for r in rows]
            stats = self.speaker_f0_stats or {}
            kwargs["f0_stats"] = [stats.get(str(r.get("speaker"))) for r in rows]
        batch = dict(
            extractor(waveforms, sampling_rate=extractor.sampling_rate, return_tensors="pt", **kwargs)
        )
        if self.return_labels:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
        if self.return_ctc_labels:
            batch["ctc_labels"] = self._ctc_labels([r.get("text", "") for r in rows])
        if self.return_speaker_labels:
            mapping = self.speaker_to_id or {}
            batch["speaker_labels"] = torch.tensor(
                [mapping.get(str(r.get("speaker")), -100) for r in rows], dtype=torch.long
            )
        return batch

    def _ctc_labels(self, texts: list[str]) -> torch.Tensor:
        ids = []
        for text in texts:
            normalised = normalize_transcript(text)
            ids.append(self.tokenizer(normalised)["input_ids"] if normalised else [])
        width = max(1, max(len(x) for x in ids))
        labels = torch.full((len(ids), width), -100, dtype=torch.long)
        for row, seq in enumerate(ids):
            if seq:
                labels[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return labels
