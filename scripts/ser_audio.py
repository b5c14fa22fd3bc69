"""Audio files for prediction: streaming decode to mono at the model's rate, and overlapping windows.

Decoding goes packet by packet through torchcodec's `Demuxer` → `AudioPacketDecoder` →
`AudioConverter` (FFmpeg's resampler and down-mixer, stateful across packets). Memory is one block
plus the codec's and the resampler's state, whatever the file's length, and the samples are
identical to a whole-file `AudioDecoder(path, sample_rate=sr, num_channels=1)` decode, which is what
training uses (`datasets.Audio`) and what `pipeline(...)` gets from the `ffmpeg` command line.
Every format FFmpeg reads is accepted (wav, flac, mp3, ogg/opus, m4a/aac, webm, video files, ...).

Clips that prediction takes whole (up to `predict.py --long_threshold_seconds`) go through
`read_clip` instead: one `AudioDecoder` call decoding at most the threshold plus a second, with
the same samples and half the per-file overhead of the packet loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = frozenset(
    [
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".wma",
        ".aif",
        ".aiff",
        ".aifc",
        ".caf",
        ".au",
        ".webm",
        ".mka",
        ".mp4",
        ".mkv",
        ".mov",
    ]
)


class AudioReadError(RuntimeError):
    """A file that cannot be opened or decoded. The message names the file and FFmpeg's reason;
    `reason` is the message without the path."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _reason(error: BaseException) -> str:
    """FFmpeg's message, first line, without torchcodec's source location."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return re.sub(r"^.*?\.cpp:\d+,\s*", "", lines[0])[:300]


@dataclass(frozen=True)
class AudioHeader:
    """What the container header says; `duration_seconds` may be None (streams without one)."""

    sampling_rate: int | None
    num_channels: int | None
    duration_seconds: float | None
    codec: str | None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise AudioReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioReadError(path, "empty file (0 bytes)")


def _open(path: str | Path):
    from torchcodec.decoders import Demuxer

    path = Path(path)
    _check_file(path)
    try:
        demuxer = Demuxer(str(path), streams="audio")
    except Exception as error:  # FFmpeg's message says why (no audio stream, invalid data, ...)
        raise AudioReadError(path, f"cannot open as audio: {_reason(error)}") from error
    return demuxer


def read_header(path: str | Path) -> AudioHeader:
    """Header metadata of the file's audio stream, without decoding.

    Raises:
        AudioReadError: missing, empty or unreadable file, or no audio stream.
    """
    demuxer = _open(path)
    metadata = demuxer.streams[0].metadata
    return AudioHeader(
        sampling_rate=getattr(metadata, "sample_rate", None),
        num_channels=getattr(metadata, "num_channels", None),
        duration_seconds=getattr(metadata, "duration_seconds_from_header", None),
        codec=getattr(metadata, "codec", None),
    )


def read_clip(
    path: str | Path, sampling_rate: int, max_samples: int
) -> tuple[AudioHeader, np.ndarray | None]:
    """The header and, when the file holds at most `max_samples` samples at `sampling_rate`, its
    whole audio (mono float32); None for a longer file, or one this call does not decode (no
    audio frames, a decoding error part-way), which the caller streams instead (`stream_audio`
    then yields what can be decoded and raises with the reason).

    One FFmpeg call (torchcodec's `AudioDecoder`, range 0 to just past `max_samples`) opens and
    decodes the file, about twice as fast as `stream_audio` on short clips; the samples are
    identical to the whole-file decode and to `stream_audio`'s blocks concatenated (tested).
    Memory stays bounded whatever the file's length or what its header claims: at most
    `max_samples` plus one second are decoded.

    Raises:
        AudioReadError: missing or empty file, or one FFmpeg cannot open (the reasons of
            `stream_audio`).
    """
    from torchcodec.decoders import AudioDecoder

    path = Path(path)
    _check_file(path)
    try:
        decoder = AudioDecoder(str(path), sample_rate=int(sampling_rate), num_channels=1)
    except Exception as error:
        raise AudioReadError(path, f"cannot open as audio: {_reason(error)}") from error
    metadata = decoder.metadata
    header = AudioHeader(
        sampling_rate=getattr(metadata, "sample_rate", None),
        num_channels=getattr(metadata, "num_channels", None),
        duration_seconds=getattr(metadata, "duration_seconds_from_header", None),
        codec=getattr(metadata, "codec", None),
    )
    if header.duration_seconds is not None and header.duration_seconds > max_samples / sampling_rate + 1.0:
        return header, None  # clearly long: not worth decoding the head twice
    try:
        samples = decoder.get_samples_played_in_range(0.0, max_samples / sampling_rate + 1.0).data
    except Exception:  # e.g. no audio frames at all: the streaming path gives the usual reason
        return header, None
    if samples.ndim != 2 or samples.shape[0] != 1 or samples.shape[-1] > max_samples:
        return header, None
    return header, np.ascontiguousarray(samples[0].numpy(), dtype=np.float32)


def stream_audio(path: str | Path, sampling_rate: int, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Yield the file's audio as consecutive mono float32 blocks at `sampling_rate`.

    Blocks hold about `block_seconds` of audio (the last one less); concatenated, they equal the
    whole-file decode. Multi-channel audio is down-mixed and other rates resampled by FFmpeg,
    with the resampler's state carried across blocks, so block boundaries leave no trace.

    Raises:
        AudioReadError: the file cannot be opened, or decoding fails part-way (blocks already
            yielded stay valid).
    """
    from torchcodec.decoders import AudioConverter

    demuxer = _open(path)
    try:
        decoder = demuxer.streams[0].make_decoder()
        converter = AudioConverter(sample_rate=int(sampling_rate), num_channels=1)
    except Exception as error:
        raise AudioReadError(path, f"cannot decode: {_reason(error)}") from error
    block_samples = max(1, int(block_seconds * sampling_rate))
    pending: list[np.ndarray] = []
    pending_samples = 0
    converted = 0

    def convert(raw_frames) -> Iterable[np.ndarray]:
        nonlocal converted
        for raw in raw_frames:
            converted += 1
            samples = converter.convert(raw).data
            if samples.numel():
                yield samples[0].numpy()

    def decoded() -> Iterator[np.ndarray]:
        for packet in demuxer:
            yield from convert(decoder.decode(packet))
        yield from convert(decoder.drain())
        if converted:  # the converter refuses to drain before its first frame (0-sample files)
            tail = converter.drain().data
            if tail.numel():
                yield tail[0].numpy()

    iterator = decoded()
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            break
        except Exception as error:
            raise AudioReadError(path, f"decoding failed: {_reason(error)}") from error
        pending.append(np.asarray(chunk, dtype=np.float32))
        pending_samples += len(chunk)
        while pending_samples >= block_samples:
            joined = np.concatenate(pending)
            yield joined[:block_samples]
            rest = joined[block_samples:]
            pending, pending_samples = ([rest] if len(rest) else []), len(rest)
    if pending_samples:
        yield np.concatenate(pending)


def read_audio(
    path: str | Path, sampling_rate: int, max_seconds: float | None = None, block_seconds: float = 10.0
) -> np.ndarray:
    """The whole file as one mono float32 array at `sampling_rate`.

    Raises:
        AudioReadError: unreadable file, or longer than `max_seconds` (decoding stops there).
    """
    blocks, total = [], 0
    for block in stream_audio(path, sampling_rate, block_seconds):
        blocks.append(block)
        total += len(block)
        if max_seconds is not None and total > max_seconds * sampling_rate:
            raise AudioReadError(path, f"longer than {max_seconds:g} s")
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


@dataclass
class Window:
    """One analysis window: `samples` (a copy) starting at sample `start` of the file."""

    start: int
    samples: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def sliding_windows(blocks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[Window]:
    """Overlapping windows of `window` samples every `hop` samples over a stream of blocks.

    Windows start at 0, hop, 2*hop, ... while they fit; if the last one ends before the stream
    does, one more window is aligned with the stream's end, so every sample is covered. A stream
    shorter than `window` gives a single window holding all of it. Only the samples still needed
    are kept (at most `window + hop` plus one block), so memory does not grow with the stream.
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop}.")
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0  # absolute index of buffer[0]
    next_start = 0
    last_end = 0
    for block in blocks:
        buffer = np.concatenate([buffer, np.asarray(block, dtype=np.float32)])
        while next_start + window <= buffer_start + len(buffer):
            offset = next_start - buffer_start
            yield Window(next_start, buffer[offset : offset + window].copy())
            last_end = next_start + window
            next_start += hop
        # Keep from the last window's start on: the end-aligned final window may reach back there.
        keep_from = min(max(buffer_start, next_start - hop), buffer_start + len(buffer))
        buffer = buffer[keep_from - buffer_start :]
        buffer_start = keep_from
    total = buffer_start + len(buffer)
    if total > last_end:
        start = max(0, total - window)
        yield Window(start, buffer[start - buffer_start :].copy())
