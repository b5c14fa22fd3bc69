"""Feature extractor shared by every emotion model family.

It validates raw waveforms, normalises and pads them, and (for the decomposition families)
extracts F0 (with pyworld, or with numpy only for `f0_method="yin"`) and quantises it into pitch
ids. Log-mel spectrograms are computed inside the models, on their device.

Remote code: module-level imports are limited to numpy, transformers and the standard library;
pyworld and torch are imported where needed, inside `try/except ImportError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature


class AudioInputError(ValueError):
    """Raised for audio the feature extractor cannot use. The message names the clip and the reason."""


F0_METHODS = ("dio", "dio_fast", "harvest", "yin")
# `f0_method="dio_fast"`: DIO's decimation (`speed`), candidate acceptance (`allowed_range`) and the
# longest interior unvoiced gap (frames) filled by interpolation. See `EmotionFeatureExtractor`.
DIO_FAST = {"speed": 2, "allowed_range": 0.2, "fill_gap_frames": 4}
# `f0_method="yin"`: settings of `track_f0_yin` (numpy only, no pyworld); each one's reason is in
# `track_f0_yin`'s docstring.
YIN_TRACKER = {
    "analysis_rate": 4000,  # Hz, the band-limited signal the difference function is computed on
    "band_limit": 1000.0,  # Hz, low-pass edge before the analysis
    "candidates": 4,  # deepest dips of the normalised difference function kept per frame
    "octave_cost": 0.1,  # cost per octave below the F0 ceiling (prefers the shortest period)
    "jump_cost": 0.5,  # cost per octave of F0 change between consecutive frames
    "unvoiced_cost": 0.65,  # cost of calling a frame unvoiced (a dip deeper than this is voiced)
    "switch_cost": 0.2,  # cost of a voiced/unvoiced change
    "silence_db": -60.0,  # frames this far below the clip's loudest frame are unvoiced
    "extend_frames": 2,  # voiced runs grow by at most this many frames at each end ...
    "extend_tolerance": 0.1,  # ... into frames with a dip within 10 % of the edge F0 ...
    "extend_max_dip": 0.8,  # ... whose normalised difference is below this (weakly periodic)
    "min_periods": 2.2,  # voiced runs not longer than 2.2 periods of their mean F0 are dropped
}
DEFAULT_F0_RANGES = {"male": [50.0, 250.0], "female": [100.0, 600.0], "unknown": [50.0, 600.0]}
_GENDER_ALIASES = {
    "m": "male",
    "male": "male",
    "man": "male",
    "f": "female",
    "female": "female",
    "woman": "female",
}


def normalize_gender(gender: Any) -> str:
    """Map gender labels found in corpora (`M`, `Female`, …) to `male`, `female` or `unknown`."""
    if gender is None:
        return "unknown"
    return _GENDER_ALIASES.get(str(gender).strip().lower(), "unknown")


def fill_unvoiced_gaps(f0: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill unvoiced runs (F0 = 0) of at most `max_gap` frames that lie between two voiced frames by
    linear interpolation of log-F0; leading and trailing unvoiced frames stay 0."""
    f0 = np.array(f0, dtype=np.float64)
    voiced = np.flatnonzero(f0 > 0)
    if max_gap <= 0 or voiced.size < 2:
        return f0
    gaps = np.diff(voiced) - 1
    for index in np.flatnonzero((gaps > 0) & (gaps <= max_gap)):
        left, right = voiced[index], voiced[index + 1]
        inside = np.arange(left + 1, right)
        f0[inside] = np.exp(np.interp(inside, [left, right], np.log([f0[left], f0[right]])))
    return f0


def _band_limited(
    signal: np.ndarray, sampling_rate: int, rate: float, band_limit: float
) -> tuple[np.ndarray, float]:
    """`signal` low-passed below `band_limit` (raised-cosine edge) and resampled to about `rate`
    with one FFT; returns the new signal and its exact rate."""
    n = len(signal)
    nfft = 1 << max(4, math.ceil(math.log2(n)))
    bins = min(nfft, max(16, round(nfft * rate / sampling_rate)))
    bins -= bins % 2
    actual = sampling_rate * bins / nfft
    spectrum = np.fft.rfft(signal, nfft)[: bins // 2 + 1]
    freqs = np.arange(bins // 2 + 1) * (sampling_rate / nfft)
    width = 0.1 * actual
    edge = min(band_limit, 0.5 * actual - 0.5 * width)
    gain = np.clip((edge + 0.5 * width - freqs) / width, 0.0, 1.0)
    spectrum = spectrum * (0.5 - 0.5 * np.cos(np.pi * gain))
    out = np.fft.irfft(spectrum, bins) * (bins / nfft)
    return out[: math.ceil(n * bins / nfft)], actual


def _cmnd_frames(
    signal: np.ndarray, centres: np.ndarray, window: int, max_lag: int, silence_db: float
) -> np.ndarray:
    """YIN's cumulative-mean-normalised difference function d'(tau), tau = 0..max_lag + 1, of
    every frame at once (FFT cross-correlation). Row t compares the `window` samples starting
    (window + max_lag) // 2 before `centres[t]` with the same span `tau` samples later. Silent
    frames (below `silence_db` relative to the loudest frame, or without energy) get d' = 1."""
    span = window + max_lag + 2
    nfft = 1 << math.ceil(math.log2(span + 1))
    padded = np.pad(signal, (span, span + 1))
    index = (centres - span // 2 + span)[:, None] + np.arange(span)[None, :]
    segments = padded[index]
    segments = segments - segments.mean(axis=1, keepdims=True)
    head = np.fft.rfft(segments[:, :window], nfft)
    whole = np.fft.rfft(segments, nfft)
    lags = np.arange(max_lag + 2)
    corr = np.fft.irfft(np.conj(head) * whole, nfft)[:, : max_lag + 2]
    energy = np.concatenate([np.zeros((len(centres), 1)), np.cumsum(segments * segments, axis=1)], axis=1)
    first = energy[:, window]
    later = energy[:, lags + window] - energy[:, lags]
    diff = np.maximum(first[:, None] + later - 2.0 * corr, 0.0)
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    scale = np.maximum(first, 1e-300)[:, None]
    ok = running > 1e-9 * scale
    cmnd[:, 1:] = np.where(ok, diff[:, 1:] * lags[1:] / np.where(ok, running, 1.0), 1.0)
    loudest = float(first.max()) if len(first) else 0.0
    silent = (first <= 1e-12 * max(loudest, 1e-30)) | (first < loudest * 10.0 ** (silence_db / 10.0))
    if loudest <= 0.0:
        silent[:] = True
    cmnd[silent] = 1.0
    return cmnd


def _dip_candidates(cmnd: np.ndarray, min_lag: int, max_lag: int, rate: float, count: int):
    """The `count` deepest local minima of d' between `min_lag` and `max_lag` per frame, with
    parabolic interpolation: (F0 in Hz, d' at the dip); missing candidates have F0 0, d' inf."""
    frames = cmnd.shape[0]
    window = cmnd[:, min_lag - 1 : max_lag + 2]
    inner = window[:, 1:-1]
    dips = (inner <= window[:, :-2]) & (inner < window[:, 2:])
    depth = np.where(dips, inner, np.inf)
    count = min(count, depth.shape[1])
    order = np.argsort(depth, axis=1, kind="stable")[:, :count]
    found = np.isfinite(np.take_along_axis(depth, order, axis=1))
    lag = order + min_lag
    rows = np.arange(frames)[:, None]
    left, centre, right = cmnd[rows, lag - 1], cmnd[rows, lag], cmnd[rows, lag + 1]
    curve = left - 2.0 * centre + right
    shift = np.where(curve > 1e-12, 0.5 * (left - right) / np.where(curve > 1e-12, curve, 1.0), 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    f0 = np.where(found, rate / (lag + shift), 0.0)
    value = np.where(found, centre - 0.25 * (left - right) * shift, np.inf)
    return f0, value


def _viterbi_voicing(f0, cost, unvoiced_cost: float, jump_cost: float, switch_cost: float) -> np.ndarray:
    """Cheapest path through the candidates of each frame plus an unvoiced state (index K):
    voiced state cost `cost`, unvoiced `unvoiced_cost`, `jump_cost` per octave between voiced
    frames, `switch_cost` per voiced/unvoiced change. Plain Python over K + 1 states (K is 4):
    faster than numpy calls on arrays this small."""
    frames, k = f0.shape
    log_f0 = np.log2(np.where(f0 > 0, f0, 1.0)).tolist()
    cost = np.where(np.isfinite(cost), cost, 1e3).tolist()
    total = cost[0] + [unvoiced_cost]
    back = [[0] * (k + 1)]
    for t in range(1, frames):
        previous, here, row_cost = log_f0[t - 1], log_f0[t], cost[t]
        unvoiced = total[k]
        last = min(range(k), key=total.__getitem__)
        new_total, row = [], []
        for j in range(k):
            target = here[j]
            best, best_cost = k, unvoiced + switch_cost
            for i in range(k):
                value = total[i] + jump_cost * abs(target - previous[i])
                if value < best_cost:
                    best, best_cost = i, value
            row.append(best)
            new_total.append(best_cost + row_cost[j])
        if total[last] + switch_cost < unvoiced:
            row.append(last)
            new_total.append(total[last] + switch_cost + unvoiced_cost)
        else:
            row.append(k)
            new_total.append(unvoiced + unvoiced_cost)
        back.append(row)
        total = new_total
    path = [0] * frames
    path[-1] = min(range(k + 1), key=total.__getitem__)
    for t in range(frames - 1, 0, -1):
        path[t - 1] = back[t][path[t]]
    return np.asarray(path, dtype=np.int64)


def _voiced_runs(voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def stonemask_refine(signal: np.ndarray, f0: np.ndarray, hop_length: int, sampling_rate: int) -> np.ndarray:
    """WORLD's StoneMask refinement (M. Morise), vectorised in numpy: for each voiced frame (centred
    on sample `t * hop_length`), F0 from the instantaneous frequencies of its first 2, then 6
    harmonics in a Blackman window of 3 periods; a correction above 20 % keeps the input F0.
    Agrees with `pyworld.stonemask` to rounding (tested)."""
    signal = np.asarray(signal, dtype=np.float64)
    f0 = np.asarray(f0, dtype=np.float64)
    refined = np.zeros_like(f0)
    usable = np.flatnonzero((f0 > 40.0) & (f0 <= sampling_rate / 12.0))
    if usable.size == 0:
        return refined
    initial = f0[usable]
    half = (1.5 * sampling_rate / initial + 1.0).astype(np.int64)
    sizes = (2 ** (2 + np.floor(np.log2(2 * half + 1)))).astype(np.int64)

    def harmonics_f0(power, numerator, size, guess, count):
        order = np.arange(1, count + 1)
        index = np.minimum(
            np.floor(guess[:, None] * size / sampling_rate * order + 0.5).astype(np.int64), size // 2
        )
        rows = np.arange(len(guess))[:, None]
        p, q = power[rows, index], numerator[rows, index]
        inst = np.where(
            p > 0, index * sampling_rate / size + q / np.where(p > 0, p, 1.0) * sampling_rate / 2 / np.pi, 0.0
        )
        amplitude = np.sqrt(p)
        return (amplitude * inst).sum(axis=1) / ((amplitude * order).sum(axis=1) + 1e-12)

    for size in np.unique(sizes):
        pick = sizes == size
        frames, guess, halves = usable[pick], initial[pick], half[pick]
        offsets = np.arange(-halves.max(), halves.max() + 1)
        index = np.clip(frames[:, None] * hop_length + offsets[None, :] - 1, 0, len(signal) - 1)
        segment = signal[index]
        length = (2.0 * halves + 1.0)[:, None]
        inside = np.abs(offsets)[None, :] <= halves[:, None]
        cosine = np.cos(2.0 * np.pi * (offsets[None, :] - 1.0) / length)
        window = np.where(inside, 0.34 + cosine * (0.5 + 0.16 * cosine), 0.0)  # Blackman
        slope = np.zeros_like(window)
        slope[:, 1:-1] = -(window[:, 2:] - window[:, :-2]) / 2.0
        slope[:, 0], slope[:, -1] = -window[:, 1] / 2.0, window[:, -2] / 2.0
        main = np.fft.rfft(segment * window, int(size))
        derivative = np.fft.rfft(segment * slope, int(size))
        numerator = main.real * derivative.imag - main.imag * derivative.real
        power = main.real**2 + main.imag**2
        tentative = harmonics_f0(power, numerator, size, guess, 2)
        good = (tentative > 0) & (tentative <= 2.0 * guess)
        final = np.where(good, harmonics_f0(power, numerator, size, np.where(good, tentative, guess), 6), 0.0)
        refined[frames] = np.where(np.abs(final - guess) > 0.2 * guess, guess, final)
    return refined


def track_f0_yin(
    waveform: np.ndarray,
    sampling_rate: int,
    hop_length: int,
    floor: float,
    ceil: float,
    settings: dict[str, Any] | None = None,
) -> np.ndarray:
    """F0 in Hz (0 = unvoiced) at frames centred on `t * hop_length`, `1 + len // hop_length`
    frames, with numpy only (`f0_method="yin"`). Settings (`YIN_TRACKER`) and why:

    1. Low-pass at `band_limit` (1 kHz) and resample to `analysis_rate` (4 kHz) with one FFT. The
       band holds the fundamental and first harmonics of any F0 in range (<= 600 Hz); frication
       noise above it hides the periodicity of voiced fricatives and weak voicing (Harvest, the
       reference, also draws its candidates from bands below 1.1 x the F0 ceiling); and 4 kHz
       makes the difference function 16x cheaper than at 16 kHz.
    2. YIN's cumulative-mean-normalised difference function d' (de Cheveigne & Kawahara 2002) of
       every frame at once: integration window of one period of the F0 floor (YIN's minimum for
       the longest period), lags from the ceiling's to the floor's period.
    3. Candidates: the `candidates` (4) deepest dips of d' per frame, parabolically interpolated.
    4. Voicing and tracking jointly by a Viterbi search over the candidates plus an unvoiced state
       (as in RAPT and pYIN): a voiced state costs its dip depth plus `octave_cost` (0.1) per octave
       below the ceiling, YIN's preference for the shortest period that fits (without it, half
       F0 is picked on strongly periodic frames); `jump_cost` (0.5) per octave of change between
       frames, so that an octave jump costs as much as half a fully aperiodic frame;
       `unvoiced_cost` (0.65): a dip deeper than this is voiced (YIN's aperiodicity scale: 0 is
       periodic, 1 is noise); `switch_cost` (0.2) per voicing change suppresses one-frame flicker.
       Frames more than `silence_db` (60 dB) below the clip's loudest frame are unvoiced.
    5. Harvest's contour rules at this frame rate: voiced runs extend by up to `extend_frames` (2)
       frames at each end while a dip within `extend_tolerance` (10 %) of the edge F0 is weakly
       periodic (d' < `extend_max_dip`, 0.8) (Harvest's `FixStep3` follows the nearest candidate
       within 18 %; a tighter window keeps the extension from following noise); runs not longer
       than `min_periods` (2.2) periods of their mean F0 are dropped (Harvest's 2200 / F0 ms).
    6. StoneMask refinement of every voiced frame (`stonemask_refine`, WORLD's algorithm in
       numpy): the difference function's F0 deviates from Harvest's by about 1 % (median), the
       refined one by 0.4 %, as DIO + StoneMask.

    The values were chosen as the best voicing agreement with Harvest whose gross pitch error stays
    within the benchmark's 5 % on the demo corpus and on half of the EmoDB speakers (03, 09, 11,
    13, 15), then checked on the other half; figures in `EmotionFeatureExtractor`'s docstring.
    """
    settings = {**YIN_TRACKER, **(settings or {})}
    signal = np.asarray(waveform, dtype=np.float64)
    frames = 1 + len(signal) // hop_length
    f0 = np.zeros(frames, dtype=np.float32)
    if len(signal) < 2 or not np.any(signal):
        return f0
    if sampling_rate > settings["analysis_rate"]:
        low, rate = _band_limited(signal, sampling_rate, settings["analysis_rate"], settings["band_limit"])
    else:
        low, rate = _band_limited(signal, sampling_rate, sampling_rate, settings["band_limit"])
    min_lag = max(2, math.floor(rate / ceil))
    max_lag = max(min_lag + 2, math.ceil(rate / floor) + 1)
    window = max(2, round(rate / floor))
    centres = np.round(np.arange(frames) * hop_length * rate / sampling_rate).astype(np.int64)
    cmnd = _cmnd_frames(low, centres, window, max_lag, settings["silence_db"])
    candidates, depth = _dip_candidates(cmnd, min_lag, max_lag, rate, settings["candidates"])
    cost = depth + settings["octave_cost"] * np.log2(
        np.where(candidates > 0, ceil / np.maximum(candidates, 1e-9), 1.0)
    )
    path = _viterbi_voicing(
        candidates, cost, settings["unvoiced_cost"], settings["jump_cost"], settings["switch_cost"]
    )
    voiced = path < candidates.shape[1]
    rows = np.flatnonzero(voiced)
    track = np.zeros(frames, dtype=np.float64)
    track[rows] = candidates[rows, path[rows]]
    track[track <= 0] = 0.0

    def follow(frame: int, reference: float) -> float:
        deviation = np.abs(candidates[frame] - reference) / reference
        best = int(deviation.argmin())
        if deviation[best] > settings["extend_tolerance"] or depth[frame, best] >= settings["extend_max_dip"]:
            return 0.0
        return float(candidates[frame, best])

    reach = int(settings["extend_frames"])
    if reach > 0:
        starts, ends = _voiced_runs(track > 0)
        extended = track.copy()
        for start, end in zip(starts, ends):
            after = (range(end, min(frames, end + reach)), track[end - 1])
            before = (range(start - 1, max(-1, start - 1 - reach), -1), track[start])
            for outward, reference in (after, before):
                for frame in outward:
                    found = follow(frame, reference)
                    if not found:
                        break
                    reference = found
                    if extended[frame] == 0:
                        extended[frame] = found
        track = extended
    frame_ms = 1000.0 * hop_length / sampling_rate
    starts, ends = _voiced_runs(track > 0)
    for start, end in zip(starts, ends):
        if (end - start) * frame_ms <= settings["min_periods"] * 1000.0 / track[start:end].mean():
            track[start:end] = 0.0
    voiced = track > 0
    if voiced.any():
        refined = stonemask_refine(signal, track, hop_length, sampling_rate)
        track = np.where(voiced & (refined > 0), refined, track)
    return track.astype(np.float32)


def _to_numpy(waveform: Any) -> Any:
    if hasattr(waveform, "detach"):  # torch.Tensor, without importing torch
        waveform = waveform.detach().cpu()
        if waveform.is_floating_point() and str(waveform.dtype) == "torch.bfloat16":
            waveform = waveform.float()  # numpy has no bfloat16
        waveform = waveform.numpy()
    return waveform


def as_mono_float32(waveform: Any, name: str = "clip") -> np.ndarray:
    """Convert one waveform to a finite 1-D float32 array or raise `AudioInputError`.

    Integer PCM is scaled to [-1, 1]. Multi-channel arrays are refused here (downmix before the
    feature extractor; the project's audio loader does). Empty and non-finite input is refused,
    and so are samples that are not real numbers (bool, complex, strings, objects, dates).
    """
    try:
        array = np.asarray(_to_numpy(waveform))
    except (TypeError, ValueError) as error:  # ragged nested lists, unconvertible objects
        raise AudioInputError(f"{name}: not an array of samples ({error}).") from None
    if array.dtype.kind not in "iuf":
        raise AudioInputError(
            f"{name}: unsupported sample type {array.dtype}; expected float or integer PCM."
        )
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if info.min == 0:  # unsigned PCM is offset by half the range
            array = (array.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)
        else:
            array = array.astype(np.float64) / float(-info.min)
    if array.ndim == 0:
        raise AudioInputError(f"{name}: expected a 1-D waveform, got a single number.")
    if array.ndim != 1:
        raise AudioInputError(
            f"{name}: expected a mono waveform (1-D array), got shape {tuple(array.shape)}; "
            "downmix multi-channel audio first (e.g. waveform.mean(axis=0))."
        )
    if array.size == 0:
        raise AudioInputError(f"{name}: empty waveform (0 samples).")
    finite = np.isfinite(array)
    if not finite.all():
        raise AudioInputError(f"{name}: {int((~finite).sum())} of {array.size} samples are NaN or infinite.")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise AudioInputError(f"{name}: samples exceed the float32 range (expected PCM in [-1, 1]).")
    return array


class EmotionFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Prepares raw speech for the emotion models: `input_values` (normalised, zero-padded waveforms),
    `attention_mask` and, when `compute_pitch=True`, `pitch_ids` (quantised F0 per mel frame).

    Args:
        feature_size (`int`, defaults to 1): Channels of `input_values` (mono).
        sampling_rate (`int`, defaults to 16000): Expected sampling rate; other rates are refused.
        padding_value (`float`, defaults to 0.0): Value of padded samples.
        do_normalize (`bool`, defaults to `True`): Zero-mean, unit-variance normalisation per clip.
        return_attention_mask (`bool`, defaults to `True`): Return the sample-level attention mask.
        min_samples (`int`, defaults to 400): Clips shorter than this (a model's receptive field;
            400 samples for the wav2vec2 convolution stack) are zero-padded up to it.
        compute_pitch (`bool`, defaults to `False`): Extract F0 (`f0_method`) and return `pitch_ids`.
        hop_length (`int`, defaults to 256): Samples between pitch frames; must equal the model's
            mel hop so that frame `t` of `pitch_ids` lines up with mel frame `t`.
        f0_method (`str`, defaults to `"dio"`): F0 estimator. pyworld: `"dio"`, DIO + StoneMask
            refinement with pyworld's defaults (the behaviour of every model saved so far);
            `"harvest"`, Harvest, the most robust voicing and the slowest; `"dio_fast"`, DIO on a
            2x decimated signal (`speed=2`) with a wider candidate acceptance
            (`allowed_range=0.2`), StoneMask refinement, and interior unvoiced gaps of at most 4
            frames filled by interpolation of log-F0. numpy only (no pyworld): `"yin"`, a
            band-limited YIN difference function of all frames at once, Viterbi tracking over its
            dips with an unvoiced state, Harvest's voiced-run rules and a numpy port of StoneMask
            (`track_f0_yin`; settings and their reasons in `YIN_TRACKER` and its docstring).
            Measured against Harvest (`benchmarks/bench_f0.py`, 180 EmoDB clips, CPU time of one
            core, methods alternating clip by clip on a shared 2-core machine, 23 Nov 2026):
            voicing agreement / gross pitch error (>20 %, on the frames both call voiced) /
            real time per core: `"dio"` 0.65 / 1.1 % / 92x (159x in an earlier run: CPU time per call
            varies with what shares the core; it misses a third of Harvest's voiced frames); `"dio_fast"` 0.82 / 5.6 % / 231x;
            `"yin"` 0.81 / 3.8 % / 311x; Harvest 5x. On the demo corpus (espeak-ng, 180 clips):
            `"dio"` 0.81 / 2.0 %, `"dio_fast"` 0.88 / 5.3 %, `"yin"` 0.87 / 2.0 % / 225x. None
            reaches the benchmark's Harvest-level agreement (0.95 / 5 %), and no fast tracker can
            be expected to: Harvest agrees with itself only 0.95 (EmoDB) / 0.96 (demo) when its
            input is delayed by half a millisecond (0.95 with white noise at -70 dBFS added),
            because it voices much of what is not periodic (82 % of EmoDB's frames, pauses and
            fricatives included) with an F0 that follows the noise there. `"harvest"` stays the
            choice when agreement with Harvest matters more than time.
        f0_ranges (`dict`, defaults to male 50–250 Hz, female 100–600 Hz, unknown 50–600 Hz):
            Search range of F0 per gender, as in SpeechSplit.
        pitch_bins (`int`, defaults to 256): Voiced quantisation bins; id 0 is unvoiced, so the
            one-hot pitch input has `pitch_bins + 1` dimensions.
        pitch_stats (`dict`, *optional*): Log-F0 `[mean, std]` keyed by `"male"`, `"female"` and
            `"all"`, computed on training speakers. Used to normalise F0 of speakers whose own
            statistics are not given (e.g. unseen test speakers); a clip of unknown gender takes
            the gender whose mean is nearer its median log-F0 (see `resolve_pitch_stats`). When
            absent, each clip is normalised by its own voiced frames.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        return_attention_mask: bool = True,
        min_samples: int = 400,
        compute_pitch: bool = False,
        hop_length: int = 256,
        f0_method: str = "dio",
        f0_ranges: dict[str, list[float]] | None = None,
        pitch_bins: int = 256,
        pitch_stats: dict[str, list[float]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if f0_method not in F0_METHODS:
            raise ValueError(f"f0_method must be one of {', '.join(F0_METHODS)}, got {f0_method!r}.")
        self.do_normalize = do_normalize
        self.min_samples = int(min_samples)
        self.compute_pitch = compute_pitch
        self.hop_length = int(hop_length)
        self.f0_method = f0_method
        self.f0_ranges = {k: list(v) for k, v in (f0_ranges or DEFAULT_F0_RANGES).items()}
        self.pitch_bins = int(pitch_bins)
        self.pitch_stats = pitch_stats
        if compute_pitch:
            self.model_input_names = ["input_values", "attention_mask", "pitch_ids"]

    # ------------------------------------------------------------------------------------------
    # F0
    # ------------------------------------------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of `num_samples` samples (centred STFT framing, as in the models)."""
        return 1 + int(num_samples) // self.hop_length

    def extract_f0(self, waveform: np.ndarray, gender: Any = None) -> np.ndarray:
        """F0 in Hz per frame (0 where unvoiced), `num_frames(len(waveform))` frames."""
        floor, ceil = self.f0_ranges.get(normalize_gender(gender), self.f0_ranges["unknown"])
        signal = np.ascontiguousarray(waveform, dtype=np.float64)
        frames = self.num_frames(len(signal))
        if self.f0_method == "yin":  # numpy only
            return track_f0_yin(signal, self.sampling_rate, self.hop_length, floor, ceil)[:frames]
        try:
            import pyworld
        except ImportError as error:
            raise ImportError(
                "F0 extraction needs pyworld: `pip install pyworld 'setuptools<81'` "
                "(pyworld imports pkg_resources, which setuptools 81 removed); "
                'f0_method="yin" needs only numpy.'
            ) from error
        frame_period = 1000.0 * self.hop_length / self.sampling_rate
        if self.f0_method == "harvest":
            f0, times = pyworld.harvest(signal, self.sampling_rate, floor, ceil, frame_period=frame_period)
        elif self.f0_method == "dio_fast":
            f0, times = pyworld.dio(
                signal,
                self.sampling_rate,
                floor,
                ceil,
                frame_period=frame_period,
                speed=DIO_FAST["speed"],
                allowed_range=DIO_FAST["allowed_range"],
            )
            f0 = fill_unvoiced_gaps(
                pyworld.stonemask(signal, f0, times, self.sampling_rate), DIO_FAST["fill_gap_frames"]
            )
        else:
            f0, times = pyworld.dio(signal, self.sampling_rate, floor, ceil, frame_period=frame_period)
            f0 = pyworld.stonemask(signal, f0, times, self.sampling_rate)
        f0 = np.asarray(f0[:frames], dtype=np.float32)
        if len(f0) < frames:
            f0 = np.pad(f0, (0, frames - len(f0)))
        return f0

    @staticmethod
    def log_f0_stats(f0_arrays: Sequence[np.ndarray]) -> list[float] | None:
        """`[mean, std]` of log-F0 over the voiced frames of the given F0 tracks (None if too few)."""
        voiced = [np.log(f0[f0 > 0]) for f0 in f0_arrays if f0 is not None and (np.asarray(f0) > 0).any()]
        if not voiced:
            return None
        values = np.concatenate(voiced)
        if values.size < 2:
            return None
        return [float(values.mean()), float(max(values.std(), 1e-3))]

    def quantize_f0(self, f0: np.ndarray, stats: Sequence[float] | None) -> np.ndarray:
        """SpeechSplit quantisation: log-F0 normalised by `stats` (mean, std), scaled so that ±4
        std maps to [0, 1], clipped, then 1..`pitch_bins`; unvoiced frames are 0."""
        f0 = np.asarray(f0, dtype=np.float64)
        voiced = f0 > 0
        ids = np.zeros(f0.shape, dtype=np.int64)
        if not voiced.any():
            return ids
        if stats is None:
            stats = self.log_f0_stats([f0]) or [math.log(150.0), 0.25]
        mean, std = float(stats[0]), max(float(stats[1]), 1e-3)
        scaled = np.clip((np.log(f0[voiced]) - mean) / std / 4.0, -1.0, 1.0)
        scaled = (scaled + 1.0) / 2.0
        ids[voiced] = np.round(scaled * (self.pitch_bins - 1)).astype(np.int64) + 1
        return ids

    def resolve_pitch_stats(
        self,
        gender: Any = None,
        speaker_stats: Sequence[float] | None = None,
        f0: np.ndarray | None = None,
    ):
        """Statistics used to normalise a clip's F0: the speaker's own (given), else the training
        statistics of its gender, else of all training speakers, else None (per-clip).

        A clip of unknown gender (e.g. from `pipeline()`, which passes none) whose F0 track `f0`
        has voiced frames takes the male or female statistics whose mean log-F0 is nearer to the
        clip's median log-F0: the pooled "all" statistics put typical male speech at the bottom of
        the pitch range, so a model trained with per-gender statistics would read it as low,
        flat pitch (sad, bored) whatever the emotion.
        """
        if speaker_stats is not None:
            return list(speaker_stats)
        if not self.pitch_stats:
            return None
        key = normalize_gender(gender)
        if key == "unknown" and f0 is not None:
            key = self.nearest_gender(f0) or key
        return self.pitch_stats.get(key) or self.pitch_stats.get("all")

    def nearest_gender(self, f0: np.ndarray) -> str | None:
        """`"male"` or `"female"`: whose training mean log-F0 is nearer the clip's median voiced
        log-F0; None without voiced frames or without both genders' statistics."""
        f0 = np.asarray(f0, dtype=np.float64)
        voiced = f0[f0 > 0]
        stats = self.pitch_stats or {}
        if voiced.size == 0 or not (stats.get("male") and stats.get("female")):
            return None
        median = float(np.median(np.log(voiced)))
        return min(("male", "female"), key=lambda name: abs(median - float(stats[name][0])))

    # ------------------------------------------------------------------------------------------
    # Main entry
    # ------------------------------------------------------------------------------------------

    def __call__(
        self,
        raw_speech: np.ndarray | list[float] | list[np.ndarray] | Any,
        sampling_rate: int | None = None,
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        gender: Any = None,
        f0: list[np.ndarray] | None = None,
        f0_stats: list[Sequence[float] | None] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Featurise one clip or a batch.

        Args:
            raw_speech: A 1-D array (one clip), a list of 1-D arrays, or a 2-D array (a batch of
                equal-length clips), at `self.sampling_rate`.
            sampling_rate: Sampling rate of `raw_speech`; a mismatch raises `AudioInputError`.
            padding: `True`/`"longest"` pads to the longest clip; `"max_length"` to `max_length`.
            max_length, truncation: Pad/truncate to this many samples.
            gender: Gender of each clip's speaker (selects the F0 search range and statistics).
            f0: Precomputed F0 tracks in Hz (skips pyworld), one per clip, as from `extract_f0`.
            f0_stats: Per-clip log-F0 `[mean, std]` of the clip's speaker (training speakers).

        Raises:
            AudioInputError: the only error raised for bad audio, with a message naming the clip
                (`clip i`, its position in the batch) and the reason: empty, non-finite,
                multi-channel (including a (samples, channels) array), non-numeric samples (bool,
                complex, strings, objects) or a sampling rate other than `self.sampling_rate`.
                Any length is accepted: clips shorter than `min_samples` are zero-padded.
        """
        if sampling_rate is not None:
            try:
                rate = float(sampling_rate)
            except (TypeError, ValueError):
                raise AudioInputError(f"sampling_rate must be a number, got {sampling_rate!r}.") from None
            if rate != self.sampling_rate:
                raise AudioInputError(
                    f"audio is sampled at {sampling_rate} Hz but this model expects {self.sampling_rate} Hz; "
                    "resample it first (the project's loaders and the pipeline do this)."
                )
        clips = self._as_clip_list(raw_speech)
        batch_size = len(clips)
        genders = gender if isinstance(gender, (list, tuple)) else [gender] * batch_size
        if truncation and max_length is not None:
            clips = [clip[:max_length] for clip in clips]
        clips = [
            np.pad(clip, (0, self.min_samples - len(clip))) if len(clip) < self.min_samples else clip
            for clip in clips
        ]
        lengths = [len(clip) for clip in clips]
        target = max(lengths)
        if padding == "max_length" and max_length is not None:
            target = max(target, max_length)
        if pad_to_multiple_of:
            target = int(math.ceil(target / pad_to_multiple_of) * pad_to_multiple_of)
        if padding is False and len(set(lengths)) > 1:
            raise AudioInputError("clips of different lengths need padding=True to form a batch.")

        values = np.full((batch_size, target), self.padding_value, dtype=np.float32)
        mask = np.zeros((batch_size, target), dtype=np.int32)
        for row, clip in enumerate(clips):
            if self.do_normalize:  # in float64: the variance of large float32 samples overflows
                clip64 = clip.astype(np.float64)
                clip = (clip64 - clip64.mean()) / np.sqrt(clip64.var() + 1e-7)
            values[row, : len(clip)] = clip
            mask[row, : len(clip)] = 1
        data: dict[str, Any] = {"input_values": values}
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        if return_attention_mask:
            data["attention_mask"] = mask
        if self.compute_pitch:
            data["pitch_ids"] = self._pitch_ids(clips, genders, f0, f0_stats, target)
        return BatchFeature(data, tensor_type=return_tensors)

    def _as_clip_list(self, raw_speech: Any) -> list[np.ndarray]:
        raw_speech = _to_numpy(raw_speech)
        if isinstance(raw_speech, np.ndarray) and raw_speech.ndim == 2 and raw_speech.shape[1] <= 8:
            # A 2-D array is a batch (clips, samples); a few-sample "clip" means (samples, channels).
            raise AudioInputError(
                f"got an array of shape {raw_speech.shape}, read as {raw_speech.shape[0]} clips of "
                f"{raw_speech.shape[1]} samples; this looks like (samples, channels) audio: downmix it "
                "to one 1-D waveform first (e.g. waveform.mean(axis=1))."
            )
        if (isinstance(raw_speech, np.ndarray) and raw_speech.ndim == 2) or (
            isinstance(raw_speech, (list, tuple)) and raw_speech and not np.isscalar(raw_speech[0])
        ):
            raw_speech = list(raw_speech)
        else:
            raw_speech = [raw_speech]
        if not raw_speech:
            raise AudioInputError("empty batch: no clips were given.")
        return [as_mono_float32(clip, name=f"clip {i}") for i, clip in enumerate(raw_speech)]

    def _pitch_ids(self, clips, genders, f0, f0_stats, padded_samples: int) -> np.ndarray:
        frames = self.num_frames(padded_samples)
        out = np.zeros((len(clips), frames), dtype=np.int64)
        for row, clip in enumerate(clips):
            track = f0[row] if f0 is not None else self.extract_f0(clip, genders[row])
            track = np.asarray(track, dtype=np.float32)[: self.num_frames(len(clip))]
            speaker_stats = f0_stats[row] if f0_stats is not None else None
            stats = self.resolve_pitch_stats(genders[row], speaker_stats, track)
            ids = self.quantize_f0(track, stats)
            out[row, : len(ids)] = ids
        return out
