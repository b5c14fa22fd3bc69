"""Audio decoding, windowing and plots for the Space (no Gradio here, so it can be tested alone)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np


class AudioDecodeError(ValueError):
    """The upload cannot be used; the message is shown to the user as is."""


def load_audio(path: str, sampling_rate: int) -> np.ndarray:
    """Decode any file libsndfile or ffmpeg reads into mono float32 at `sampling_rate`."""
    import soundfile as sf

    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        waveform = data.mean(axis=1)
    except Exception:  # libsndfile cannot read mp3/webm/m4a (or the file is broken): try ffmpeg
        waveform, rate = _ffmpeg_decode(path, sampling_rate), sampling_rate
    if waveform.size == 0:
        raise AudioDecodeError("The file contains no audio samples.")
    if not np.isfinite(waveform).all():
        raise AudioDecodeError("The file contains invalid (NaN or infinite) samples.")
    if rate != sampling_rate:
        from math import gcd

        from scipy.signal import resample_poly

        divisor = gcd(int(rate), int(sampling_rate))
        waveform = resample_poly(waveform, sampling_rate // divisor, int(rate) // divisor)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _ffmpeg_decode(path: str, sampling_rate: int) -> np.ndarray:
    if shutil.which("ffmpeg") is None:
        raise AudioDecodeError(
            "Could not read this file as audio (use WAV or FLAC; ffmpeg is not installed)."
        )
    command = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-i",
        path,
        "-f",
        "f32le",
        "-ac",
        "1",
        "-ar",
        str(sampling_rate),
        "-",
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise AudioDecodeError("Decoding the file took too long.") from None
    if done.returncode != 0:
        raise AudioDecodeError("Could not read this file as audio: it is damaged or not an audio format.")
    return np.frombuffer(done.stdout, dtype=np.float32).copy()


def check_level(waveform: np.ndarray, sampling_rate: int, min_seconds: float) -> None:
    """Refuse clips that are too short or silent, with a message a user understands."""
    if waveform.size < min_seconds * sampling_rate:
        raise AudioDecodeError(
            f"The recording is too short ({waveform.size / sampling_rate:.2f} s); give at least {min_seconds} s."
        )
    if float(np.max(np.abs(waveform))) < 1e-4:
        raise AudioDecodeError("The recording is silent; check the microphone or the file.")


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of overlapping windows covering the clip; the last window ends at the end."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def log_mel(waveform: np.ndarray, sampling_rate: int, hop_length: int, n_fft: int = 512, n_mels: int = 64):
    """Log-mel spectrogram (n_mels, frames) in dB below the maximum, centred frames as in the models."""
    from transformers.audio_utils import mel_filter_bank

    padded = np.pad(waveform, n_fft // 2, mode="reflect" if waveform.size > n_fft // 2 else "constant")
    count = 1 + (padded.size - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:count]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)) ** 2
    filters = mel_filter_bank(
        n_fft // 2 + 1, n_mels, 0.0, sampling_rate / 2, sampling_rate, "slaney", "slaney"
    )
    mel = power @ filters
    decibels = 10 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(decibels - decibels.max(), -80.0).T


def signal_figure(waveform: np.ndarray, sampling_rate: int, f0: np.ndarray | None, hop_length: int):
    """Waveform with the F0 contour on a second axis, and the log-mel spectrogram below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time = np.arange(waveform.size) / sampling_rate
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, constrained_layout=True)
    top.plot(time, waveform, color="0.55", linewidth=0.5)
    top.set_ylabel("amplitude")
    top.set_title("Waveform and F0")
    if f0 is not None and (f0 > 0).any():
        pitch = top.twinx()
        frames = np.arange(len(f0)) * hop_length / sampling_rate
        voiced = f0 > 0
        pitch.plot(frames[voiced], f0[voiced], ".", color="tab:red", markersize=2.5)
        pitch.set_ylabel("F0 (Hz)", color="tab:red")
        pitch.tick_params(axis="y", colors="tab:red")
    spectrogram = log_mel(waveform, sampling_rate, hop_length)
    bottom.imshow(
        spectrogram,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, waveform.size / sampling_rate, 0, spectrogram.shape[0]),
    )
    bottom.set_ylabel("mel band")
    bottom.set_xlabel("time (s)")
    bottom.set_title("Log-mel spectrogram")
    return fig


def timeline_figure(
    centres: list[float], probabilities: np.ndarray, labels: list[str], window_seconds: float
):
    """Probability of each emotion per window, at the window centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3), constrained_layout=True)
    for index, label in enumerate(labels):
        ax.plot(centres, probabilities[:, index], marker="o", markersize=3, label=label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s), window centre")
    ax.set_ylabel("probability")
    ax.set_title(f"Emotion over time ({window_seconds:g} s windows)")
    ax.legend(loc="upper right", fontsize=8, ncol=min(len(labels), 4))
    ax.grid(alpha=0.3)
    return fig
