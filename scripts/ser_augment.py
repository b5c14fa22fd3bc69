"""On-the-fly waveform augmentation for the training split, built on audiomentations.

A recipe lists augmentations by name with their audiomentations arguments, e.g.
`[{"name": "gain", "p": 0.5, "min_gain_db": -6, "max_gain_db": 6}, {"name": "pitch_shift", "p": 0.3}]`.
The default set is seed 004's: time shift, low-pass, high-pass, coloured noise, pitch shift, gain.
When the model uses F0, the cached F0 track is transformed to match: a pitch shift of n semitones
multiplies F0 by 2^(n/12) and a time shift rolls the frames; the other transforms keep F0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

AUGMENTATIONS = {
    "time_shift": "Shift",
    "low_pass": "LowPassFilter",
    "high_pass": "HighPassFilter",
    "colored_noise": "AddColorNoise",
    "pitch_shift": "PitchShift",
    "gain": "Gain",
}

SEED_004_AUGMENTATIONS = [
    {"name": "time_shift", "p": 0.5, "min_shift": -0.2, "max_shift": 0.2},
    {"name": "low_pass", "p": 0.3, "min_cutoff_freq": 2000.0, "max_cutoff_freq": 7500.0},
    {"name": "high_pass", "p": 0.3, "min_cutoff_freq": 20.0, "max_cutoff_freq": 400.0},
    {"name": "colored_noise", "p": 0.3, "min_snr_db": 15.0, "max_snr_db": 40.0},
    {"name": "pitch_shift", "p": 0.3, "min_semitones": -2.0, "max_semitones": 2.0},
    {"name": "gain", "p": 0.5, "min_gain_db": -6.0, "max_gain_db": 6.0},
]


def build_augmentations(specs: list[dict[str, Any]] | str | None) -> list[tuple[str, Any]]:
    """Instantiate audiomentations transforms from recipe entries (`"seed004"` = the default set)."""
    if not specs:
        return []
    if specs == "seed004":
        specs = SEED_004_AUGMENTATIONS
    import audiomentations

    transforms = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in AUGMENTATIONS:
            raise ValueError(f"Unknown augmentation {name!r}; available: {sorted(AUGMENTATIONS)}.")
        if name == "time_shift":
            spec.setdefault("rollover", True)
        try:
            transforms.append((name, getattr(audiomentations, AUGMENTATIONS[name])(**spec)))
        except TypeError as error:
            raise ValueError(f"Bad arguments for augmentation {name!r}: {error}") from error
    return transforms


@dataclass
class Augmenter:
    """Applies the transforms in order, keeping an optional F0 track aligned."""

    transforms: list[tuple[str, Any]]
    sampling_rate: int = 16000
    hop_length: int = 256

    def __call__(
        self, waveform: np.ndarray, f0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        waveform = np.asarray(waveform, dtype=np.float32)
        for name, transform in self.transforms:
            waveform = transform(waveform, sample_rate=self.sampling_rate)
            if f0 is None or not transform.parameters.get("should_apply"):
                continue
            if name == "pitch_shift":
                f0 = f0 * np.float32(2.0 ** (transform.parameters["num_semitones"] / 12.0))
            elif name == "time_shift":
                samples = self._shift_samples(transform, len(waveform))
                f0 = np.roll(f0, round(samples / self.hop_length))
        peak = float(np.abs(waveform).max()) if waveform.size else 0.0
        if not np.isfinite(peak):  # a filter on a pathological clip: fall back to silence-safe zeros
            waveform = np.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
        return waveform.astype(np.float32), f0

    def _shift_samples(self, transform: Any, length: int) -> float:
        amount = transform.parameters["shift_amount"]
        unit = getattr(transform, "shift_unit", "fraction")
        if unit == "fraction":
            return amount * length
        if unit == "seconds":
            return amount * self.sampling_rate
        return amount
