"""F0 estimators of the feature extractor: the old `dio` behaviour is kept, `dio_fast` tracks a
known pitch, and the gap filling interpolates only interior unvoiced runs."""

import numpy as np
import pytest

from modeling.feature_extraction_emotion import DIO_FAST, EmotionFeatureExtractor, fill_unvoiced_gaps

pyworld = pytest.importorskip("pyworld")


def harmonic(f0_hz: float, seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 8)).astype(np.float32) * 0.3


def test_default_dio_is_unchanged():
    extractor = EmotionFeatureExtractor(compute_pitch=True)
    assert extractor.f0_method == "dio"
    wave = harmonic(140.0)
    signal = wave.astype(np.float64)
    f0, times = pyworld.dio(signal, 16000, 50.0, 250.0, frame_period=16.0)
    expected = pyworld.stonemask(signal, f0, times, 16000)[: extractor.num_frames(len(wave))]
    np.testing.assert_allclose(extractor.extract_f0(wave, "male"), expected.astype(np.float32))


@pytest.mark.parametrize("method", ["dio", "dio_fast", "harvest"])
@pytest.mark.parametrize("pitch", [110.0, 220.0])
def test_methods_track_a_known_pitch(method, pitch):
    extractor = EmotionFeatureExtractor(compute_pitch=True, f0_method=method)
    wave = harmonic(pitch)
    f0 = extractor.extract_f0(wave, "female")
    assert len(f0) == extractor.num_frames(len(wave))
    voiced = f0[3:-3] > 0  # edges may be unvoiced
    assert voiced.mean() > 0.9
    assert np.median(np.abs(f0[3:-3][voiced] / pitch - 1)) < 0.02


def test_dio_fast_voices_at_least_as_much_as_dio_on_speech_like_audio():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    pitch = 150 * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    wave = (0.3 * wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    slow = EmotionFeatureExtractor(f0_method="dio").extract_f0(wave, "male")
    fast = EmotionFeatureExtractor(f0_method="dio_fast").extract_f0(wave, "male")
    assert slow.shape == fast.shape
    assert (fast > 0).sum() >= (slow > 0).sum()


def test_fill_unvoiced_gaps():
    f0 = np.array([0, 100, 0, 0, 400, 0, 0, 0, 0, 0, 200, 0], dtype=float)
    filled = fill_unvoiced_gaps(f0, max_gap=2)
    np.testing.assert_allclose(filled[1:5], [100, 158.740105, 251.984210, 400], rtol=1e-5)  # log-linear
    assert filled[0] == 0  # edges stay unvoiced
    assert filled[-1] == 0
    assert (filled[5:10] == 0).all()  # a 5-frame gap is longer than max_gap
    np.testing.assert_array_equal(fill_unvoiced_gaps(f0, 0), f0)
    assert DIO_FAST["fill_gap_frames"] > 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="dio_fast"):
        EmotionFeatureExtractor(f0_method="crepe")
