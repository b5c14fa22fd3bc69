"""Dataset preparation for the training scripts: load a Hub or local corpus, map its columns onto
the canonical ones, map and filter labels, decode and check the audio, and cache features.

Canonical columns after `standardize`: `utt_id`, `emotion` (string), `speaker`, `gender`
(`male`/`female`/`unknown`), `session`, `dialogue`, `text`, plus the original audio column.
Rows that cannot be used are never dropped silently: each skip has a reason that ends up in
`skipped.jsonl` and in `results.json`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Audio, Dataset, DatasetDict, Features, Sequence, Value

from modeling.feature_extraction_emotion import EmotionFeatureExtractor, normalize_gender


class DataConfigError(ValueError):
    """The recipe does not match the dataset (missing column, label or split). Raised before training."""


CANONICAL_COLUMNS = ("utt_id", "emotion", "speaker", "gender", "session", "dialogue", "text")
logger = logging.getLogger(__name__)
_DECODE_CALLS = Counter()  # counts audio decodes per process; tests use it to prove cache reuse


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_corpus(
    dataset_name: str | None,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    data_files: Any = None,
    splits: Iterable[str] | None = None,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Load a corpus through `datasets.load_dataset`, from the Hub (`dataset_name` an id) or local
    files (`audiofolder` with `data_dir`, or a builder with `data_files`), as a `DatasetDict`."""
    if dataset_name is None:
        if data_dir is None and data_files is None:
            raise DataConfigError("Give dataset_name (Hub id or builder such as 'audiofolder') or data_dir.")
        dataset_name = "audiofolder"
    if data_dir is not None and not Path(data_dir).exists() and dataset_name == "audiofolder":
        raise DataConfigError(f"data_dir {data_dir!r} does not exist.")
    loaded = datasets.load_dataset(
        dataset_name, dataset_config_name, data_dir=data_dir, data_files=data_files, cache_dir=cache_dir
    )
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    if splits:
        missing = [s for s in splits if s not in loaded]
        if missing:
            raise DataConfigError(f"split(s) {missing} not in the dataset; it has splits {sorted(loaded)}.")
        loaded = DatasetDict({s: loaded[s] for s in splits})
    return loaded


def filter_rows(corpus: DatasetDict, row_filter: dict[str, list[Any]] | None) -> DatasetDict:
    """Keep rows whose `column` value is one of the listed values (e.g. ESD's English half)."""
    if not row_filter:
        return corpus
    out = {}
    for split, dataset in corpus.items():
        for column, allowed in row_filter.items():
            if column not in dataset.column_names:
                raise DataConfigError(
                    f"row_filter column {column!r} is not in the dataset; its columns are {dataset.column_names}."
                )
            allowed_set = {str(v) for v in allowed}
            dataset = dataset.filter(lambda v, keep=allowed_set: str(v) in keep, input_columns=column)
        out[split] = dataset
    return DatasetDict(out)


# ----------------------------------------------------------------------------------------------
# Column mapping
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnSpec:
    """Where each canonical field comes from. Every name refers to a dataset column, except that
    `derive` may read `audio` (the audio file's path)."""

    audio: str = "audio"
    label: str = "emotion"
    transcript: str | None = None
    speaker: str | None = None
    gender: str | None = None
    session: str | None = None
    dialogue: str | None = None
    # {"source": column, "pattern": regex with named groups, "templates": {name: "{group}..."}}
    derive: tuple[tuple[str, Any], ...] | None = None
    gender_map: tuple[tuple[str, str], ...] | None = None  # value or speaker -> male/female


def derived_column_names(derive: Any) -> set[str]:
    """The columns a `derive_columns` setting (dict or ColumnSpec's sorted tuple) adds."""
    if not derive:
        return set()
    derive = dict(derive)
    return set(re.compile(derive["pattern"]).groupindex) | set(dict(derive.get("templates") or {}))


def check_columns(dataset: Dataset, spec: ColumnSpec) -> None:
    """Fail early, listing the dataset's real columns, when the recipe names a missing one."""
    derived = derived_column_names(spec.derive)
    if spec.derive:
        source = dict(spec.derive)["source"]
        if source not in dataset.column_names:
            raise DataConfigError(
                f"derive_columns.source {source!r} is not a column; the dataset has {dataset.column_names}."
            )
    wanted = {
        "audio_column": spec.audio,
        "label_column": spec.label,
        "transcript_column": spec.transcript,
        "speaker_column": spec.speaker,
        "gender_column": spec.gender,
        "session_column": spec.session,
        "dialogue_column": spec.dialogue,
    }
    for option, column in wanted.items():
        if column is not None and column not in dataset.column_names and column not in derived:
            raise DataConfigError(
                f"{option} {column!r} is not a column of the dataset; its columns are {dataset.column_names}"
                + (f" (derived: {sorted(derived)})" if derived else "")
                + "."
            )


def _derive(row: dict[str, Any], derive: dict[str, Any]) -> dict[str, str]:
    source = row[derive["source"]]
    if isinstance(source, dict):  # an undecoded Audio value: match its path
        source = source.get("path") or ""
    match = re.search(derive["pattern"], str(source))
    if match is None:
        return {}
    values = {k: v for k, v in match.groupdict().items() if v is not None}
    for name, template in dict(derive.get("templates") or {}).items():
        values[name] = template.format(**values)
    return values


def _standardize_row(row: dict[str, Any], index: int, spec: ColumnSpec, split: str) -> dict[str, Any]:
    derived = _derive(row, dict(spec.derive)) if spec.derive else {}

    def field(column: str | None) -> Any:
        if column is None:
            return None
        value = derived.get(column, row.get(column))
        return None if value is None else value

    audio = row[spec.audio]
    path = audio.get("path") if isinstance(audio, dict) else None
    speaker = field(spec.speaker)
    gender_value = field(spec.gender)
    gender_map = dict(spec.gender_map or {})
    if gender_map:
        gender_value = gender_map.get(str(gender_value), gender_map.get(str(speaker), gender_value))
    label = field(spec.label)
    return {
        "utt_id": f"{split}/{index:06d}" + (f"/{Path(path).name}" if path else ""),
        "emotion": None if label is None else str(label),
        "speaker": None if speaker is None else str(speaker),
        "gender": normalize_gender(gender_value),
        "session": None if field(spec.session) is None else str(field(spec.session)),
        "dialogue": None if field(spec.dialogue) is None else str(field(spec.dialogue)),
        "text": "" if field(spec.transcript) is None else str(field(spec.transcript)),
    }


def standardize(corpus: DatasetDict, spec: ColumnSpec, num_proc: int | None = None) -> DatasetDict:
    """Add the canonical columns (keeping the audio column undecoded) and drop the others."""
    out = {}
    for split, dataset in corpus.items():
        check_columns(dataset, spec)
        dataset = dataset.cast_column(spec.audio, Audio(decode=False))
        remove = [c for c in dataset.column_names if c != spec.audio]
        features = Features(
            {spec.audio: dataset.features[spec.audio], **{c: Value("string") for c in CANONICAL_COLUMNS}}
        )
        dataset = dataset.map(
            _standardize_row,
            fn_kwargs={"spec": spec, "split": split},
            with_indices=True,
            remove_columns=remove,
            features=features,
            num_proc=num_proc,
            desc=f"columns ({split})",
        )
        if spec.audio != "audio":
            dataset = dataset.rename_column(spec.audio, "audio")
        out[split] = dataset
    return DatasetDict(out)


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


def resolve_labels(
    dataset: Dataset, label_map: dict[str, str] | None, labels: list[str] | None
) -> tuple[list[str], dict[str, str]]:
    """The label list (order = class ids) and the raw-value -> label mapping.

    `label_map` merges or renames raw values (IEMOCAP: excited -> happy); `labels` keeps only these
    classes, in this order. A configured label that never occurs raises `DataConfigError` listing
    the values the data does have.
    """
    raw_values = Counter(v for v in dataset["emotion"] if v is not None)
    label_map = {str(k): str(v) for k, v in (label_map or {}).items()}
    unknown_keys = sorted(set(label_map) - set(raw_values))
    if unknown_keys and len(unknown_keys) == len(label_map):
        raise DataConfigError(
            f"label_map names values {unknown_keys} that do not occur; the label column has "
            f"{dict(sorted(raw_values.items()))}."
        )
    if unknown_keys:  # e.g. a subset of the corpus without some classes
        logger.warning("label_map values %s do not occur in this data", unknown_keys)
    mapped = Counter()
    for value, count in raw_values.items():
        mapped[label_map.get(value, value)] += count
    if labels is None:
        labels = sorted(mapped)
    missing = [label for label in labels if label not in mapped]
    if missing:
        raise DataConfigError(
            f"labels {missing} do not occur after label_map; the data has {dict(sorted(mapped.items()))}."
        )
    full_map = {value: label_map.get(value, value) for value in raw_values}
    return list(labels), full_map


# ----------------------------------------------------------------------------------------------
# Transcripts and the CTC vocabulary
# ----------------------------------------------------------------------------------------------

_PUNCTUATION = re.compile(r"[^\w' ]+")


def normalize_transcript(text: str) -> str:
    """NFKC, lower case, punctuation removed (apostrophes kept), spaces collapsed. Letters of any
    script are kept: the vocabulary is built from the training transcripts."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = _PUNCTUATION.sub(" ", text).replace("_", " ")
    return " ".join(text.split())


def build_vocab(transcripts: Iterable[str]) -> dict[str, int]:
    """Character vocabulary for `Wav2Vec2CTCTokenizer`: `<pad>` (CTC blank) first, `|` for spaces."""
    chars = sorted({c for t in transcripts for c in normalize_transcript(t) if c != " "})
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    for char in chars:
        vocab.setdefault(char, len(vocab))
    return vocab


# ----------------------------------------------------------------------------------------------
# Audio decoding, checks and feature caching
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioSettings:
    """What `prepare_audio` computes; part of the datasets cache fingerprint."""

    sampling_rate: int = 16000
    min_samples: int = 1600
    max_eval_samples: int | None = None
    compute_f0: bool = False
    hop_length: int = 256
    f0_method: str = "dio"
    silence_threshold: float = 1e-4


def decode_audio(value: dict[str, Any], sampling_rate: int) -> np.ndarray:
    """Decode one undecoded `Audio` value to mono float32 at `sampling_rate` (downmix, resample).

    FFmpeg downmixes by channel layout (stereo: (L + R) / sqrt(2)), as `pipeline()` on a file and
    `predict.py` do; per-clip normalisation removes the level difference to a plain mean."""
    _DECODE_CALLS["decode"] += 1
    decoder = Audio(sampling_rate=sampling_rate, num_channels=1).decode_example(value)
    try:
        samples = decoder.get_all_samples()
    except RuntimeError as error:
        if "No audio frames were decoded" in str(error):  # torchcodec: a valid header with no samples
            return np.zeros(0, dtype=np.float32)
        raise
    return samples.data.numpy().reshape(-1).astype(np.float32)


# torchcodec prefixes its errors with "function, /path/to/File.cpp:123, "; the rest is the message.
_DECODER_LOCATION = re.compile(r"^\w+, \S+\.(?:cpp|h|c):\d+, ")


def _error_message(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return _DECODER_LOCATION.sub("", lines[0])[:200]


def check_waveform(waveform: np.ndarray, settings: AudioSettings) -> str | None:
    """Reason to skip a decoded clip, or None. Clipped audio is kept (it is still speech)."""
    if waveform.size == 0:
        return "empty audio (0 samples)"
    finite = np.isfinite(waveform)
    if not finite.all():
        return f"NaN/inf samples: {int((~finite).sum())} of {waveform.size}"
    if waveform.size < settings.min_samples:
        return (
            f"too short: {waveform.size / settings.sampling_rate:.3f} s < "
            f"{settings.min_samples / settings.sampling_rate:.3f} s (model receptive field / min_duration)"
        )
    if float(np.abs(waveform).max()) < settings.silence_threshold:
        return "silent (peak amplitude below 1e-4)"
    return None


def _prepare_row(
    row: dict[str, Any], settings: AudioSettings, extractor_kwargs: dict[str, Any]
) -> dict[str, Any]:
    # Typed empty arrays: a writer batch mixing `[]` (float64 to pyarrow) with float32 clips fails.
    nothing = np.zeros(0, dtype=np.float32)
    empty = {"input_values": nothing, "length": 0, "skip_reason": None, "f0": nothing}
    try:
        waveform = decode_audio(row["audio"], settings.sampling_rate)
    except Exception as error:  # any decoder failure is a per-row skip, reported with its message
        return {**empty, "skip_reason": f"undecodable audio: {_error_message(error)}"}
    reason = check_waveform(waveform, settings)
    if reason is not None:
        return {**empty, "skip_reason": reason}
    if settings.max_eval_samples and waveform.size > settings.max_eval_samples:
        start = (waveform.size - settings.max_eval_samples) // 2
        waveform = waveform[start : start + settings.max_eval_samples]
    out = {**empty, "input_values": waveform, "length": int(waveform.size)}
    if settings.compute_f0:
        extractor = EmotionFeatureExtractor(**extractor_kwargs)
        out["f0"] = extractor.extract_f0(waveform, row.get("gender"))
    return out


def prepare_audio(
    dataset: Dataset, settings: AudioSettings, num_proc: int | None = None, desc: str = "audio"
) -> tuple[Dataset, list[dict[str, str]]]:
    """Decode, check and cache each clip (and its F0). Returns the usable rows and the skipped
    ones as `[{"utt_id", "reason"}]`. Results are cached by `datasets` (fingerprinted on the
    settings), so a second run with the same settings decodes nothing."""
    if len(dataset) == 0:
        raise DataConfigError(f"{desc}: no rows to prepare (empty split).")
    extractor_kwargs = {
        "sampling_rate": settings.sampling_rate,
        "hop_length": settings.hop_length,
        "f0_method": settings.f0_method,
    }
    features = Features(
        {
            **{k: v for k, v in dataset.features.items() if k != "audio"},
            "audio": dataset.features["audio"],
            "input_values": Sequence(Value("float32")),
            "length": Value("int64"),
            "skip_reason": Value("string"),
            "f0": Sequence(Value("float32")),
        }
    )
    prepared = dataset.map(
        _prepare_row,
        fn_kwargs={"settings": settings, "extractor_kwargs": extractor_kwargs},
        features=features,
        num_proc=num_proc,
        desc=desc,
    )
    prepared = prepared.remove_columns("audio")
    skipped_rows = prepared.filter(lambda reason: reason is not None, input_columns="skip_reason")
    skipped = [
        {"utt_id": u, "reason": r} for u, r in zip(skipped_rows["utt_id"], skipped_rows["skip_reason"])
    ]
    usable = prepared.filter(lambda reason: reason is None, input_columns="skip_reason")
    return usable.remove_columns("skip_reason"), skipped


def f0_stats_by_speaker(dataset: Dataset) -> dict[str, list[float]]:
    """Log-F0 `[mean, std]` per speaker from cached F0 tracks."""
    tracks: dict[str, list[np.ndarray]] = {}
    for speaker, f0 in zip(dataset["speaker"], dataset["f0"]):
        tracks.setdefault(str(speaker), []).append(np.asarray(f0, dtype=np.float32))
    stats = {}
    for speaker, speaker_tracks in tracks.items():
        value = EmotionFeatureExtractor.log_f0_stats(speaker_tracks)
        if value is not None:
            stats[speaker] = value
    return stats


def f0_stats_by_gender(dataset: Dataset) -> dict[str, list[float]]:
    """Log-F0 `[mean, std]` of training speakers per gender and over all (`all`)."""
    groups: dict[str, list[np.ndarray]] = {"all": []}
    for gender, f0 in zip(dataset["gender"], dataset["f0"]):
        track = np.asarray(f0, dtype=np.float32)
        groups["all"].append(track)
        if gender in ("male", "female"):
            groups.setdefault(gender, []).append(track)
    stats = {}
    for key, tracks in groups.items():
        value = EmotionFeatureExtractor.log_f0_stats(tracks)
        if value is not None:
            stats[key] = value
    return stats
