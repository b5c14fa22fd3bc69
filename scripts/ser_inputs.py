"""The input side of `predict.py`: which files to read, and decoding them ahead of the model.

`find_audio_files` expands files, folders and globs. `load_file` decodes one file just far enough
to know whether it is short (the whole waveform, checked as training checks it) or long (its first
blocks and the open stream, windowed later in bounded memory); bad input becomes the file's
`error`, never an exception. `prefetched` runs the decoding in a background thread, a bounded
number of files (and seconds of audio) ahead, and hands the results over in input order.
"""

from __future__ import annotations

import glob
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ser_audio import AUDIO_EXTENSIONS, AudioReadError, read_clip, stream_audio
from ser_data import check_waveform

if TYPE_CHECKING:
    import argparse

    from predict import Predictor

logger = logging.getLogger(__name__)

BLOCK_SECONDS = 10.0  # decode block; together with one window batch it bounds memory
PREFETCH_SECONDS = 240.0  # decoded audio waiting for the model, at most (plus one file)


def _audio_files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def find_audio_files(patterns: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files named by `patterns` (files as given, folders searched recursively for audio
    extensions, globs expanded), de-duplicated in order; and the patterns that matched nothing."""
    files: list[Path] = []
    unmatched: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = _audio_files_under(path)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(pattern):
            found = []
            for match in sorted(glob.glob(pattern, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    found += _audio_files_under(match_path)
                elif match_path.suffix.lower() in AUDIO_EXTENSIONS:
                    found.append(match_path)
        else:
            found = []
        if not found:
            unmatched.append(pattern)
        files += found
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, unmatched


def _limited(blocks: Iterable[np.ndarray], max_samples: int | None) -> Iterator[np.ndarray]:
    total = 0
    for block in blocks:
        total += len(block)
        if max_samples is not None and total > max_samples:
            raise AudioReadError(
                "", f"longer than --max_file_seconds; stopped after {total - len(block)} samples"
            )
        yield block


@dataclass
class LoadedFile:
    """One input file after decoding: a short file's whole `waveform` (checked), or a long file's
    decoded `head` blocks and the `rest` of its stream, or the `error` that made it fail."""

    path: Path
    waveform: np.ndarray | None = None
    error: str | None = None
    head: list[np.ndarray] = field(default_factory=list)
    rest: Iterator[np.ndarray] | None = None
    duration_hint: float | None = None

    @property
    def samples(self) -> int:
        """Decoded samples held (what the prefetch queue counts)."""
        if self.waveform is not None:
            return len(self.waveform)
        return sum(len(block) for block in self.head)


def load_file(path: Path, predictor: Predictor, args: argparse.Namespace) -> LoadedFile:
    """Decode one file up to the point where it is known to be short (whole waveform, checked as
    training checks it) or long (head blocks + the open stream). Never raises for bad input."""
    sr = predictor.sampling_rate
    max_samples = None if args.max_file_seconds is None else int(args.max_file_seconds * sr)
    threshold = int(args.long_threshold_seconds * sr)

    def failed(reason: str) -> LoadedFile:
        return LoadedFile(path, error=reason)

    def short(waveform: np.ndarray) -> LoadedFile:
        if max_samples is not None and len(waveform) > max_samples:
            return failed(f"longer than --max_file_seconds ({args.max_file_seconds:g} s)")
        reason = check_waveform(waveform, predictor.audio_settings)
        return failed(reason) if reason is not None else LoadedFile(path, waveform=waveform)

    try:
        header, waveform = read_clip(path, sr, threshold)  # one decoder call for a short file
    except AudioReadError as error:
        return failed(error.reason)
    if (
        args.max_file_seconds is not None
        and header.duration_seconds is not None
        and header.duration_seconds > args.max_file_seconds
    ):
        return failed(
            f"longer than --max_file_seconds ({header.duration_seconds:.1f} s > {args.max_file_seconds:g} s)"
        )
    if waveform is not None:
        return short(waveform)
    # Long (or not decodable in one call): stream it, deciding on the decoded length.
    blocks = stream_audio(path, sr, BLOCK_SECONDS)
    head: list[np.ndarray] = []
    head_samples = 0
    try:
        for block in blocks:
            head.append(block)
            head_samples += len(block)
            if max_samples is not None and head_samples > max_samples:
                return failed(f"longer than --max_file_seconds ({args.max_file_seconds:g} s)")
            if head_samples > threshold:
                break
    except AudioReadError as error:
        return failed(error.reason)
    if head_samples <= threshold:
        return short(np.concatenate(head) if head else np.zeros(0, dtype=np.float32))
    rest = _limited(blocks, None if max_samples is None else max_samples - head_samples)
    return LoadedFile(path, head=head, rest=rest, duration_hint=header.duration_seconds)


def load_file_safely(path: Path, predictor: Predictor, args: argparse.Namespace) -> LoadedFile:
    """`load_file`, with any unexpected exception turned into the file's error."""
    try:
        return load_file(path, predictor, args)
    except Exception as error:  # one file never stops the others
        logger.debug("unexpected failure decoding %s", path, exc_info=True)
        return LoadedFile(path, error=f"unexpected error: {type(error).__name__}: {error}")


class _WorkerFailed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(
    paths: list[Path], load: Any, max_items: int, max_samples: int | None = None
) -> Iterator[LoadedFile]:
    """`load(path)` of every path, in order, computed by a background thread that runs at most
    `max_items` files and `max_samples` decoded samples ahead of the consumer (one file is always
    allowed). `max_items` 0: no thread, each file is loaded when the consumer asks for it.

    Every path yields exactly one result, in input order (`load` turns bad input into a result);
    an exception that escapes `load` in the thread is raised here, in the consumer.
    """
    if max_items <= 0:
        for path in paths:
            yield load(path)
        return
    ready: deque = deque()
    queued_samples = 0
    condition = threading.Condition()
    stop = False

    def work() -> None:
        nonlocal queued_samples
        for path in paths:
            try:
                item = load(path)
            except BaseException as error:  # handed to the consumer, which raises it
                item = _WorkerFailed(error)
            size = item.samples if isinstance(item, LoadedFile) else 0
            with condition:
                while (
                    not stop
                    and ready
                    and (
                        len(ready) >= max_items
                        or (max_samples is not None and queued_samples + size > max_samples)
                    )
                ):
                    condition.wait()
                if stop:
                    return
                ready.append((item, size))
                queued_samples += size
                condition.notify_all()
            if isinstance(item, _WorkerFailed):
                return

    worker = threading.Thread(target=work, name="predict-prefetch", daemon=True)
    worker.start()
    try:
        for _ in paths:
            with condition:
                while not ready:
                    if not worker.is_alive() and not ready:
                        raise RuntimeError("the decoding thread stopped early")
                    condition.wait(timeout=0.5)
                item, size = ready.popleft()
                queued_samples -= size
                condition.notify_all()
            if isinstance(item, _WorkerFailed):
                raise item.error
            yield item
    finally:
        with condition:
            stop = True
            condition.notify_all()
        worker.join()
