"""`f0_method="yin"`: the numpy-only F0 tracker of the feature extractor (`track_f0_yin`).

Frame-by-frame properties on signals whose F0 is known exactly (a constant tone, an octave glide,
tones separated by silence), pitch equivariance, noise, framing of any length, the numpy StoneMask
against pyworld's, that pyworld is not needed, and the save/load round trip.
"""

import sys

import numpy as np
import pytest

from modeling.feature_extraction_emotion import (
    F0_METHODS,
    YIN_TRACKER,
    EmotionFeatureExtractor,
    stonemask_refine,
    track_f0_yin,
)

SR, HOP = 16000, 256
RANGES = {"male": (50.0, 250.0), "female": (100.0, 600.0), "unknown": (50.0, 600.0)}


def harmonic(f0_hz, seconds: float = 1.0, harmonics: int = 8) -> np.ndarray:
    """Sum of harmonics with 1/k amplitudes; `f0_hz` is a number or a per-sample array."""
    n = int(seconds * SR)
    f0 = np.broadcast_to(np.asarray(f0_hz, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))).astype(np.float32)


def test_yin_is_a_method_with_documented_settings():
    assert "yin" in F0_METHODS
    extractor = EmotionFeatureExtractor(compute_pitch=True, f0_method="yin")
    assert extractor.f0_method == "yin"
    assert {"unvoiced_cost", "octave_cost", "jump_cost", "band_limit"} <= set(YIN_TRACKER)
    doc = track_f0_yin.__doc__
    for key in YIN_TRACKER:  # every setting's reason is written down
        assert f"`{key}`" in doc


@pytest.mark.parametrize("gender", ["male", "female", "unknown"])
@pytest.mark.parametrize("pitch", [90.0, 140.0, 230.0])
def test_constant_pitch_is_recovered_in_every_frame(gender, pitch):
    floor, ceil = RANGES[gender]
    if not floor * 1.2 <= pitch <= ceil / 1.2:
        pytest.skip("outside the gender's search range")
    f0 = track_f0_yin(harmonic(pitch), SR, HOP, floor, ceil)
    inner = f0[2:-2]
    assert (inner > 0).all()
    assert np.abs(inner / pitch - 1).max() < 0.02


def test_an_octave_glide_is_tracked_frame_by_frame():
    # 120 -> 240 Hz exponentially over one second: no constant answer fits every frame, and a
    # frame-rate octave error would show as a 100 % deviation.
    t = np.arange(SR) / SR
    truth = 120.0 * 2.0**t
    f0 = track_f0_yin(harmonic(truth), SR, HOP, *RANGES["unknown"])
    centres = np.arange(len(f0)) * HOP
    expected = 120.0 * 2.0 ** (np.minimum(centres, SR - 1) / SR)
    inner = slice(2, len(f0) - 2)
    assert (f0[inner] > 0).all()
    assert np.abs(f0[inner] / expected[inner] - 1).max() < 0.02


def test_tones_are_recovered_and_silence_is_unvoiced():
    pieces = [(130.0, 0.5), (None, 0.4), (210.0, 0.5), (None, 0.3), (95.0, 0.4), (None, 0.3)]
    signal, truth = [], []
    for pitch, seconds in pieces:
        n = int(seconds * SR)
        signal.append(harmonic(pitch, seconds) if pitch else np.zeros(n, np.float32))
        truth.append(np.full(n, pitch or 0.0))
    signal, truth = np.concatenate(signal), np.concatenate(truth)
    f0 = EmotionFeatureExtractor(compute_pitch=True, f0_method="yin").extract_f0(signal, "unknown")
    assert len(f0) == 1 + len(signal) // HOP
    # Judge only frames whose whole analysis span (centre +- 30 ms) lies in one piece.
    margin = int(0.03 * SR)
    tones = silences = 0
    for frame, value in enumerate(f0):
        centre = frame * HOP
        if centre - margin < 0 or centre + margin > len(truth):
            continue
        span = truth[centre - margin : centre + margin]
        if span.min() != span.max():
            continue
        if span[0] == 0:
            assert value == 0, f"frame {frame} in silence called voiced ({value:.1f} Hz)"
            silences += 1
        else:
            assert value > 0, f"frame {frame} of a {span[0]:g} Hz tone called unvoiced"
            assert abs(value / span[0] - 1) < 0.02, (frame, value, span[0])
            tones += 1
    assert tones > 60
    assert silences > 40


def test_track_follows_the_signal_pitch():
    # Equivariance: the same waveform shape at 1.5x the F0 gives a 1.5x track.
    t = np.arange(SR) / SR
    contour = 110.0 * (1 + 0.15 * np.sin(2 * np.pi * 2 * t))
    low = track_f0_yin(harmonic(contour), SR, HOP, *RANGES["unknown"])
    high = track_f0_yin(harmonic(1.5 * contour), SR, HOP, *RANGES["unknown"])
    both = (low > 0) & (high > 0)
    assert both[2:-2].all()
    assert np.abs(high[both] / low[both] / 1.5 - 1).max() < 0.02


def test_noise_and_silence_are_unvoiced():
    rng = np.random.default_rng(0)
    for gender, (floor, ceil) in RANGES.items():
        noise = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
        assert (track_f0_yin(noise, SR, HOP, floor, ceil) > 0).mean() < 0.05, gender
        assert not track_f0_yin(np.zeros(SR, np.float32), SR, HOP, floor, ceil).any()


@pytest.mark.parametrize("length", [1, 2, 100, 255, 256, 400, 1001, 16000, 16385])
def test_any_length_gives_the_extractors_frame_count(length):
    extractor = EmotionFeatureExtractor(compute_pitch=True, f0_method="yin")
    for signal in (harmonic(150.0, length / SR + 1e-9)[:length], np.zeros(length, np.float32)):
        f0 = extractor.extract_f0(signal, "female")
        assert f0.shape == (extractor.num_frames(length),)
        assert f0.dtype == np.float32
        assert np.isfinite(f0).all()
        assert (f0 >= 0).all()


@pytest.mark.parametrize("rate", [8000, 22050])
def test_other_sampling_rates(rate):
    n = rate
    t = np.arange(n) / rate
    signal = 0.3 * sum(np.sin(2 * np.pi * k * 180.0 * t) / k for k in range(1, 8))
    hop = 256 * rate // 16000
    f0 = track_f0_yin(signal, rate, hop, 50.0, 600.0)
    assert len(f0) == 1 + n // hop
    assert np.abs(f0[2:-2] / 180.0 - 1).max() < 0.02


def test_yin_needs_no_pyworld(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyworld", None)  # `import pyworld` now raises ImportError
    f0 = EmotionFeatureExtractor(f0_method="yin").extract_f0(harmonic(150.0), "male")
    assert np.abs(f0[2:-2] / 150.0 - 1).max() < 0.02
    with pytest.raises(ImportError, match="yin"):
        EmotionFeatureExtractor(f0_method="dio").extract_f0(harmonic(150.0), "male")


def test_numpy_stonemask_matches_pyworld():
    pyworld = pytest.importorskip("pyworld")
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    contour = 150.0 * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t))
    signal = harmonic(contour, 2.0).astype(np.float64) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    signal += 0.01 * rng.standard_normal(signal.size)
    frames = 1 + signal.size // HOP
    rough = contour[np.minimum(np.arange(frames) * HOP, signal.size - 1)] * rng.uniform(0.93, 1.07, frames)
    rough[rng.random(frames) < 0.2] = 0.0  # unvoiced frames stay unvoiced
    expected = pyworld.stonemask(signal, rough, np.arange(frames) * HOP / SR, SR)
    refined = stonemask_refine(signal, rough, HOP, SR)
    np.testing.assert_array_equal(refined == 0, expected == 0)
    voiced = expected > 0
    difference = np.abs(refined[voiced] / expected[voiced] - 1)
    assert np.median(difference) < 1e-6
    assert np.percentile(difference, 99) < 1e-3
    # and it did refine: the rough input was up to 7 % off, the output is near the contour
    centre = contour[np.minimum(np.arange(frames) * HOP, signal.size - 1)]
    assert np.median(np.abs(refined[voiced] / centre[voiced] - 1)) < 0.01


def test_yin_round_trips_through_save_and_load(tmp_path):
    extractor = EmotionFeatureExtractor(compute_pitch=True, f0_method="yin")
    extractor.save_pretrained(tmp_path)
    loaded = EmotionFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.f0_method == "yin"
    clip = harmonic(np.linspace(120, 180, SR), 1.0)
    first = extractor(clip, sampling_rate=SR, gender="male")["pitch_ids"]
    again = loaded(clip, sampling_rate=SR, gender="male")["pitch_ids"]
    np.testing.assert_array_equal(first, again)
    assert (first[0, 2:-2] > 0).all()
