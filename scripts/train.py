#!/usr/bin/env python
"""Train a speech emotion model on a Hub or local corpus, evaluate it speaker-independently, and
save a model directory that loads with `trust_remote_code=True`.

    accelerate launch scripts/train.py configs/<recipe>.json [--option value ...]
    python scripts/train.py configs/<recipe>.json --max_steps 2 --output_dir out

The recipe JSON holds model, data and `TrainingArguments` fields; command-line options override it.
Results: `results.json` (test metrics at the top level, validation metrics under `validation`),
`predictions_test.jsonl`, `predictions_validation.jsonl`, `confusion_test.png`, `skipped.jsonl` and the model files, all in
`output_dir`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from ser_augment import Augmenter, build_augmentations  # noqa: E402
from ser_batching import EmotionDataCollator, EpochCallback, ResumableTrainer, TrainTransform  # noqa: E402
from ser_data import (  # noqa: E402
    AudioSettings,
    ColumnSpec,
    DataConfigError,
    build_vocab,
    derived_column_names,
    f0_stats_by_gender,
    f0_stats_by_speaker,
    filter_rows,
    load_corpus,
    normalize_transcript,
    prepare_audio,
    resolve_labels,
    standardize,
)
from ser_ensemble import (  # noqa: E402
    SELECTIONS,
    build_checkpoint_ensemble,
    predict_by_speaker,
    prune_checkpoints,
)
from ser_folds import PROTOCOLS, Fold, make_fold, num_folds  # noqa: E402
from ser_inference import model_accepts, predict_waveforms  # noqa: E402
from ser_metrics import (  # noqa: E402
    classification_metrics,
    save_confusion_png,
    transcription_metrics,
    write_json_atomic,
    write_jsonl_atomic,
)
from ser_training import ComponentLossCallback, backbone_param_groups, compute_metrics  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    Wav2Vec2CTCTokenizer,
    set_seed,
)
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint  # noqa: E402

from modeling import MODEL_CLASSES, EmotionFeatureExtractor, EmotionProcessor  # noqa: E402

logger = logging.getLogger("train")
# Column options a recipe may list in `optional_columns`: only gender has a neutral reading
# ('unknown'); without labels, speakers, sessions, dialogues or transcripts the recipe's protocol
# or loss has nothing to work on.
OPTIONAL_COLUMN_OPTIONS = ("gender_column",)


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


def _json_field(default: Any = None, help: str = "") -> Any:
    """A field that takes a JSON value in the recipe, or a JSON string on the command line."""
    return field(default=default, metadata={"help": help + " (JSON on the command line)"})


@dataclass
class ModelArguments:
    model_type: str = field(
        default="emotion_ssl", metadata={"help": f"Model family, one of {sorted(MODEL_CLASSES)}."}
    )
    backbone_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pretrained SSL backbone (Hub id or local directory); random init if unset."},
    )
    backbone_config: str | None = _json_field(
        help="Backbone config fields (model_type, sizes; overrides when a pretrained backbone is given)"
    )
    model_config: str | None = _json_field(help="Config fields of the model family (see its config class)")
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from a saved model of this family (local dir or Hub id)."}
    )
    decomposition_init: str | None = field(
        default=None,
        metadata={"help": "emotion_decomposed only: stage-1 speech_decomposition model to initialise from."},
    )
    freeze_feature_encoder: bool = field(
        default=True, metadata={"help": "Freeze the SSL convolutional encoder."}
    )
    freeze_backbone: bool = field(default=False, metadata={"help": "Freeze the whole SSL backbone."})
    backbone_lr_multiplier: float = field(
        default=1.0, metadata={"help": "Learning rate of backbone parameters relative to the head's."}
    )
    class_weighting: str = field(
        default="none", metadata={"help": "'balanced' weights the emotion loss by inverse class frequency."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "For model_name_or_path from the Hub."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh: delete output_dir's checkpoint-* directories and results.json first "
            "instead of resuming from the last checkpoint (the default when output_dir has one)."
        },
    )
    ensemble_checkpoints: int = field(
        default=1,
        metadata={
            "help": "Average the emotion probabilities of this many saved checkpoints for the validation "
            "and test predictions (scripts/ser_ensemble.py); 1 evaluates the single best model."
        },
    )
    ensemble_selection: str = field(
        default="best",
        metadata={
            "help": f"Checkpoints of the ensemble, one of {SELECTIONS}: best validation metric, most recent, "
            "or evenly spaced through training (the ends of cosine_with_restarts cycles: a snapshot ensemble)."
        },
    )

    def __post_init__(self):
        self.backbone_config = _parse_json(self.backbone_config, "backbone_config")
        self.model_config = _parse_json(self.model_config, "model_config") or {}
        if self.model_type not in MODEL_CLASSES:
            raise ValueError(
                f"model_type {self.model_type!r} unknown; choose one of {sorted(MODEL_CLASSES)}."
            )
        if self.class_weighting not in ("none", "balanced"):
            raise ValueError("class_weighting must be 'none' or 'balanced'.")
        if self.ensemble_checkpoints < 1 or self.ensemble_selection not in SELECTIONS:
            raise ValueError(f"ensemble_checkpoints must be >= 1 and ensemble_selection one of {SELECTIONS}.")


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id, or a builder such as 'audiofolder' (with data_dir)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    data_dir: str | None = field(default=None, metadata={"help": "Local data directory (audiofolder)."})
    data_files: str | None = _json_field(help="data_files for load_dataset")
    splits: list[str] | None = field(
        default=None, metadata={"help": "Splits to load; all are pooled for cross-validation protocols."}
    )
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    label_column: str = field(default="emotion", metadata={"help": "Emotion label column."})
    transcript_column: str | None = field(default=None, metadata={"help": "Transcript column (CTC)."})
    speaker_column: str | None = field(default=None, metadata={"help": "Speaker column."})
    gender_column: str | None = field(default=None, metadata={"help": "Gender column."})
    session_column: str | None = field(default=None, metadata={"help": "Session column (loso_session)."})
    dialogue_column: str | None = field(
        default=None, metadata={"help": "Dialogue column (speaker-dependent)."}
    )
    derive_columns: str | None = _json_field(
        help="Regex over a column (or the audio path): {source, pattern with named groups, templates}"
    )
    gender_map: str | None = _json_field(help="Map gender values or speakers to male/female")
    optional_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Column options the corpus may lack, e.g. ['gender_column'] so that one recipe runs "
            "on corpora with and without genders: a missing one is logged and read as absent (gender "
            "'unknown': the full F0 range and pooled F0 statistics). Any other missing column is an error."
        },
    )
    label_map: str | None = _json_field(help="Merge/rename raw label values, e.g. {excited: happy}")
    labels: list[str] | None = field(default=None, metadata={"help": "Classes to keep, in id order."})
    protocol: str = field(default="loso", metadata={"help": f"Evaluation protocol, one of {PROTOCOLS}."})
    fold: int = field(default=0, metadata={"help": "Fold index under the protocol."})
    num_validation_speakers: int = field(
        default=1,
        metadata={
            "help": "Validation speakers per fold. 0 trains on every non-test speaker with no evaluation "
            "during training: the model is the last epoch's (or, with ensemble_checkpoints > 1, an "
            "ensemble_selection 'last'/'spaced' ensemble), since there is nothing to select on."
        },
    )
    speaker_folds: int | None = field(
        default=None,
        metadata={"help": "loso: group speakers into this many folds (default: one per speaker)."},
    )
    row_filter: str | None = _json_field(
        help="Keep rows whose column has one of the values: {column: [values]}"
    )
    train_split: str = field(default="train", metadata={"help": "protocol=fixed: training split."})
    validation_split: str = field(
        default="validation", metadata={"help": "protocol=fixed: validation split."}
    )
    test_split: str = field(default="test", metadata={"help": "protocol=fixed: test split."})
    sampling_rate: int = field(default=16000, metadata={"help": "Model sampling rate; audio is resampled."})
    max_duration: float | None = field(default=6.0, metadata={"help": "Random crop length in training (s)."})
    max_eval_duration: float | None = field(
        default=None,
        metadata={"help": "Centre-crop evaluation clips longer than this (s); full length if unset."},
    )
    min_duration: float = field(default=0.1, metadata={"help": "Skip clips shorter than this (s)."})
    augmentations: str | None = _json_field(help="List of {name, p, ...} or 'seed004'")
    f0_method: str = field(
        default="dio",
        metadata={
            "help": "F0 estimator: dio (pyworld DIO + StoneMask), dio_fast, harvest (pyworld) or yin "
            "(numpy only); figures in EmotionFeatureExtractor's docstring and benchmarks/README.md."
        },
    )
    f0_normalization: str = field(
        default="gender",
        metadata={
            "help": "Log-F0 statistics for pitch quantisation: 'gender' (training speakers' per-gender "
            "statistics for every clip, the same at inference) or 'speaker' (each training speaker's own; "
            "unseen speakers fall back to gender statistics unless transductive_speaker_normalization)."
        },
    )
    transductive_speaker_normalization: bool = field(
        default=False,
        metadata={"help": "Normalise test speakers' F0 with their own (unlabelled) audio. Transductive."},
    )
    speaker_adaptive_batchnorm: bool = field(
        default=False,
        metadata={
            "help": "Re-estimate every BatchNorm layer's statistics on each validation/test speaker's "
            "unlabelled audio before predicting that speaker (per-speaker AdaBN; for the spectrogram "
            "families it includes corpus mel normalisation). Transductive."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "num_proc for datasets.map."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate training data (debug)."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache directory."})

    def __post_init__(self):
        for name in (
            "data_files",
            "derive_columns",
            "gender_map",
            "label_map",
            "augmentations",
            "row_filter",
        ):
            setattr(self, name, _parse_json(getattr(self, name), name))
        if self.f0_normalization not in ("gender", "speaker"):
            raise ValueError("f0_normalization must be 'gender' or 'speaker'.")
        if self.transductive_speaker_normalization and self.f0_normalization != "speaker":
            raise ValueError("transductive_speaker_normalization needs f0_normalization='speaker'.")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} unknown; choose one of {PROTOCOLS}.")
        unknown = sorted(set(self.optional_columns or ()) - set(OPTIONAL_COLUMN_OPTIONS))
        if unknown:
            raise ValueError(
                f"optional_columns {unknown} unknown; choose from {list(OPTIONAL_COLUMN_OPTIONS)}."
            )


def _parse_json(value: Any, name: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            if name == "augmentations":
                return value  # a preset name such as "seed004"
            raise ValueError(f"{name} must be JSON, got {value!r}") from None
    return value


# Recipe defaults that differ from TrainingArguments' own.
TRAINING_DEFAULTS = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "ua",
    "greater_is_better": True,
    "logging_steps": 10,
    "report_to": ["tensorboard"],
    "train_sampling_strategy": "group_by_length",
    "remove_unused_columns": False,
    "dataloader_num_workers": 0,
    "label_names": ["labels"],
}


MERGED_FIELDS = ("model_config", "backbone_config", "derive_columns", "label_map", "gender_map")


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`train.py [recipe.json] [--flag value ...]`: the JSON sets defaults, flags override them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    recipe: dict[str, Any] = {}
    if argv and argv[0].endswith(".json"):
        recipe_path = Path(argv.pop(0))
        if not recipe_path.exists():
            raise FileNotFoundError(f"recipe {recipe_path} not found")
        recipe = json.loads(recipe_path.read_text())
    known = {
        f.name for dc in (ModelArguments, DataArguments, TrainingArguments) for f in dataclasses.fields(dc)
    }
    # "_comment" keys, and the "cross_validation" block that scripts/cross_validate.py reads
    recipe = {k: v for k, v in recipe.items() if not k.startswith("_") and k != "cross_validation"}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; see `python scripts/train.py --help`.")
    defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if k in known}
    defaults.update(recipe)
    parser.set_defaults(**defaults)
    if "output_dir" not in defaults and "--output_dir" not in argv:
        raise ValueError("output_dir is required (in the recipe or as --output_dir).")
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if training_args.push_to_hub:
        raise ValueError(
            "train.py does not push (Trainer would upload pickled training state); publish the output "
            "directory with scripts/push_to_hub.py."
        )
    if training_args.hub_token:
        # Trainer pickles its arguments into every checkpoint (training_args.bin), token included.
        logger.warning("--hub_token is not used by train.py and is dropped (it is not stored anywhere).")
        training_args.hub_token = None
    # A JSON object given on the command line updates the recipe's object instead of replacing it,
    # so `--model_config '{"focal_gamma": 0}'` changes one field of the recipe's model_config.
    for args in (model_args, data_args):
        for name in MERGED_FIELDS:
            if hasattr(args, name) and isinstance(recipe.get(name), dict) and f"--{name}" in argv:
                value = getattr(args, name)
                if isinstance(value, dict):
                    setattr(args, name, {**recipe[name], **value})
    if is_decomposition(model_args):
        # Stage-1 pre-training has no emotion head: select the checkpoint by validation loss.
        training_args.metric_for_best_model = "loss"
        training_args.greater_is_better = False
        training_args.label_names = ["speaker_labels"]
    limit = training_args.save_total_limit
    if model_args.ensemble_checkpoints > 1 and limit is not None and limit > 0:  # None or 0: keep all
        needed = model_args.ensemble_checkpoints + 1  # + the best, which Trainer always keeps
        if model_args.ensemble_selection != "last" or limit < needed:
            raise ValueError(
                f"ensemble_selection={model_args.ensemble_selection!r} with ensemble_checkpoints="
                f"{model_args.ensemble_checkpoints} needs its checkpoints kept: set save_total_limit to null or 0 "
                f"(checkpoints outside the ensemble are deleted after evaluation)"
                + (
                    f" or, for 'last', to at least {needed}."
                    if model_args.ensemble_selection == "last"
                    else "."
                )
            )
    if data_args.num_validation_speakers == 0 and data_args.protocol in ("loso", "loso_session"):
        no_validation(model_args, training_args)
    return model_args, data_args, training_args


def no_validation(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """`num_validation_speakers: 0`: every non-test speaker trains, nothing evaluates during
    training, and the checkpoints that make the model are chosen without scores."""
    if model_args.ensemble_checkpoints > 1 and model_args.ensemble_selection == "best":
        raise ValueError(
            "num_validation_speakers=0 leaves no validation data to pick the 'best' checkpoints: "
            "set ensemble_selection to 'last' or 'spaced' (or ensemble_checkpoints to 1, the last epoch)."
        )
    training_args.eval_strategy = IntervalStrategy.NO
    training_args.load_best_model_at_end = False
    logger.info("num_validation_speakers=0: no validation split; the model is chosen without evaluation.")


def is_decomposition(model_args: ModelArguments) -> bool:
    """SpeechSplit stage-1 pre-training: speakers are its labels, reconstruction its objective."""
    return model_args.model_type == "speech_decomposition"


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler()],
    )
    level = training_args.get_process_log_level()
    # This script's warnings (skipped rows, dropped options) stay visible even when the
    # libraries' verbosity is lowered: nothing may be skipped silently.
    logger.setLevel(min(level, logging.WARNING))
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def build_config(model_args: ModelArguments) -> Any:
    """The model config from the recipe, before data-dependent fields (labels, vocab) are set."""
    config_class, _ = MODEL_CLASSES[model_args.model_type]
    if model_args.model_name_or_path:
        return AutoConfig.from_pretrained(
            model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
        )
    kwargs = dict(model_args.model_config)
    allowed = _init_parameters(config_class) | _init_parameters(transformers.PretrainedConfig)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"model_config has fields {unknown} that {config_class.__name__} does not define; "
            f"it accepts {sorted(allowed - {'self', 'kwargs'} - _init_parameters(transformers.PretrainedConfig))}."
        )
    if "backbone_config" in _init_parameters(config_class):
        backbone = dict(model_args.backbone_config or {})
        if model_args.backbone_name_or_path:
            backbone = {**AutoConfig.from_pretrained(model_args.backbone_name_or_path).to_dict(), **backbone}
        if backbone:
            kwargs["backbone_config"] = backbone
    elif model_args.backbone_name_or_path or model_args.backbone_config:
        raise ValueError(f"{model_args.model_type} has no SSL backbone: remove backbone_* options.")
    return config_class(**kwargs)


def _init_parameters(config_class: type) -> set[str]:
    names = set()
    for klass in config_class.__mro__:
        if "__init__" in klass.__dict__:
            names |= set(inspect.signature(klass.__init__).parameters)
    return names


@dataclass
class PreparedData:
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    labels: list[str]
    fold: Fold | None
    skipped: list[dict[str, str]]
    vocab: dict[str, int] | None
    speakers: list[str]
    speaker_f0_stats: dict[str, list[float]]
    gender_f0_stats: dict[str, list[float]]


def _spec(data_args: DataArguments) -> ColumnSpec:
    derive = data_args.derive_columns
    return ColumnSpec(
        audio=data_args.audio_column,
        label=data_args.label_column,
        transcript=data_args.transcript_column,
        speaker=data_args.speaker_column,
        gender=data_args.gender_column,
        session=data_args.session_column,
        dialogue=data_args.dialogue_column,
        derive=tuple(
            sorted((k, v if not isinstance(v, dict) else tuple(sorted(v.items()))) for k, v in derive.items())
        )
        if derive
        else None,
        gender_map=tuple(sorted(data_args.gender_map.items())) if data_args.gender_map else None,
    )


def drop_missing_optional_columns(data_args: DataArguments, column_names: list[str]) -> DataArguments:
    """`data_args` without the `optional_columns` the corpus lacks (each one logged)."""
    derived = derived_column_names(data_args.derive_columns)
    missing = {}
    for option in data_args.optional_columns or ():
        column = getattr(data_args, option)
        if column is not None and column not in column_names and column not in derived:
            logger.warning(
                "%s %r is not a column of the corpus (columns: %s); it is optional in this recipe, so it "
                "is read as absent%s.",
                option,
                column,
                column_names,
                " (every gender 'unknown')" if option == "gender_column" else "",
            )
            missing[option] = None
    return dataclasses.replace(data_args, **missing) if missing else data_args


def load_standardized(data_args: DataArguments) -> datasets.DatasetDict:
    """The recipe's corpus with canonical columns (see ser_data.standardize)."""
    corpus = load_corpus(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.data_dir,
        data_args.data_files,
        data_args.splits,
        data_args.cache_dir,
    )
    rows = filter_rows(corpus, data_args.row_filter)
    columns = set.intersection(*(set(split.column_names) for split in rows.values()))
    data_args = drop_missing_optional_columns(data_args, sorted(columns))
    return standardize(rows, _spec(data_args), data_args.preprocessing_num_workers)


def prepare_data(
    data_args: DataArguments, config: Any, training_args: TrainingArguments, uses_ctc: bool
) -> PreparedData:
    """Load, map columns and labels, split by protocol and fold, decode and cache audio features."""
    corpus = load_standardized(data_args)
    pooled = datasets.concatenate_datasets(list(corpus.values()))
    labels, label_map = resolve_labels(pooled, data_args.label_map, data_args.labels)
    label_ids = {label: i for i, label in enumerate(labels)}
    skipped: list[dict[str, str]] = []

    def assign_label(split_ds: datasets.Dataset, split: str) -> datasets.Dataset:
        raw = split_ds["emotion"]
        ids = [label_ids.get(label_map.get(v, v), -1) if v is not None else -1 for v in raw]
        for utt, value, i in zip(split_ds["utt_id"], raw, ids):
            if i < 0:
                reason = "missing label" if value is None else f"unknown label: {value!r} not in {labels}"
                skipped.append({"utt_id": utt, "reason": reason, "split": split})
        split_ds = split_ds.add_column("label", ids)
        return split_ds.filter(lambda i: i >= 0, input_columns="label")

    fold = None
    if data_args.protocol == "fixed":
        for name in (data_args.train_split, data_args.validation_split, data_args.test_split):
            if name not in corpus:
                raise DataConfigError(
                    f"protocol 'fixed' needs split {name!r}; the dataset has {sorted(corpus)}."
                )
        parts = {
            "train": corpus[data_args.train_split],
            "validation": corpus[data_args.validation_split],
            "test": corpus[data_args.test_split],
        }
    else:
        fold, parts = _split_by_fold(pooled, data_args, training_args.seed)
    parts = {name: assign_label(ds, name) for name, ds in parts.items()}
    if data_args.max_train_samples:
        parts["train"] = (
            parts["train"]
            .shuffle(seed=training_args.seed)
            .select(range(min(data_args.max_train_samples, len(parts["train"]))))
        )

    fe_kwargs = config.feature_extractor_kwargs()
    sr = data_args.sampling_rate
    base = AudioSettings(
        sampling_rate=sr,
        min_samples=max(int(data_args.min_duration * sr), int(fe_kwargs.get("min_samples", 0))),
        compute_f0=bool(fe_kwargs.get("compute_pitch")),
        hop_length=int(fe_kwargs.get("hop_length", 256)),
        f0_method=data_args.f0_method,
    )
    with training_args.main_process_first(desc="audio decoding and features"):
        prepared = {}
        for name, ds in parts.items():
            if len(ds) == 0 and name == "validation":  # num_validation_speakers=0
                prepared[name] = ds
                continue
            settings = base
            if name != "train" and data_args.max_eval_duration:
                settings = dataclasses.replace(base, max_eval_samples=int(data_args.max_eval_duration * sr))
            prepared[name], split_skipped = prepare_audio(
                ds, settings, data_args.preprocessing_num_workers, desc=f"audio ({name})"
            )
            skipped += [{**row, "split": name} for row in split_skipped]
    for name, ds in prepared.items():
        if len(ds) == 0 and not (name == "validation" and len(parts[name]) == 0):
            raise DataConfigError(
                f"the {name} split is empty after filtering; check the protocol and labels."
            )

    vocab = None
    if uses_ctc:
        vocab = build_vocab(prepared["train"]["text"])
    train_speakers = sorted({str(s) for s in prepared["train"]["speaker"]})
    speaker_stats, gender_stats = {}, {}
    if base.compute_f0:
        gender_stats = f0_stats_by_gender(prepared["train"])
        if data_args.f0_normalization == "speaker":
            speaker_stats = f0_stats_by_speaker(prepared["train"])
        if data_args.transductive_speaker_normalization:
            for name in ("validation", "test"):
                speaker_stats.update(f0_stats_by_speaker(prepared[name]))
    return PreparedData(
        prepared["train"],
        prepared["validation"],
        prepared["test"],
        labels,
        fold,
        skipped,
        vocab,
        train_speakers,
        speaker_stats,
        gender_stats,
    )


def _split_by_fold(pooled: datasets.Dataset, data_args: DataArguments, seed: int):
    speakers = pooled["speaker"]
    if any(s is None for s in speakers):
        raise DataConfigError(
            f"protocol {data_args.protocol!r} needs a speaker for every row: set speaker_column "
            "or derive_columns."
        )
    genders = dict(zip(speakers, pooled["gender"]))
    sessions = None
    if data_args.protocol == "loso_session":
        sessions = dict(zip(speakers, pooled["session"]))
        if any(v is None for v in sessions.values()):
            raise DataConfigError("protocol loso_session needs session_column (or a derived session).")
    dialogues = pooled["dialogue"] if data_args.protocol == "speaker_dependent_dialogue_10fold" else None
    fold = make_fold(
        data_args.protocol,
        data_args.fold,
        speakers,
        genders=genders,
        sessions=sessions,
        dialogues=dialogues,
        num_validation_speakers=data_args.num_validation_speakers,
        seed=seed,
        speaker_folds=data_args.speaker_folds,
    )
    keys = dialogues if fold.unit == "dialogue" else speakers
    assignment = [fold.split_of(str(k)) for k in keys]
    parts = {}
    for name in ("train", "validation", "test"):
        parts[name] = pooled.select([i for i, a in enumerate(assignment) if a == name])
        if len(parts[name]) == 0 and not (name == "validation" and data_args.num_validation_speakers == 0):
            raise DataConfigError(f"fold {fold.index} of {fold.protocol} leaves the {name} split empty.")
    return fold, parts


def finalize_config(config: Any, data: PreparedData, model_args: ModelArguments) -> Any:
    """Set labels, vocabulary, speakers and class weights from the prepared data."""
    if not model_args.model_name_or_path:
        classes = data.speakers if is_decomposition(model_args) else data.labels
        config.id2label = dict(enumerate(classes))
        config.label2id = {label: i for i, label in enumerate(classes)}
        if data.vocab is not None:
            config.vocab_size = len(data.vocab)
            config.pad_token_id = data.vocab["<pad>"]
        if hasattr(config, "num_speakers"):
            config.num_speakers = len(data.speakers)
    elif [config.id2label[i] for i in range(len(config.id2label))] != data.labels:
        raise DataConfigError(
            f"model_name_or_path has labels {list(config.id2label.values())} but the data gives {data.labels}."
        )
    if model_args.class_weighting == "balanced":
        counts = Counter(data.train["label"])
        total = sum(counts.values())
        config.class_weights = [
            total / (len(data.labels) * max(counts.get(i, 0), 1)) for i in range(len(data.labels))
        ]
    return config


def build_model(model_args: ModelArguments, config: Any) -> torch.nn.Module:
    _, model_class = MODEL_CLASSES[model_args.model_type]
    if model_args.model_name_or_path:
        model = model_class.from_pretrained(model_args.model_name_or_path, config=config)
    else:
        model = model_class(config)
        if model_args.backbone_name_or_path:
            report = model.load_pretrained_backbone(model_args.backbone_name_or_path)
            logger.info(
                "Loaded backbone %s (ignored keys: %d)",
                model_args.backbone_name_or_path,
                len(report["ignored"]),
            )
        if model_args.decomposition_init:
            report = model.load_decomposition_weights(model_args.decomposition_init)
            logger.info("Initialised decomposition from %s: %s", model_args.decomposition_init, report)
    if hasattr(model, "freeze_feature_encoder") and model_args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if model_args.freeze_backbone:
        model.freeze_backbone()
    return model


def build_processing(config: Any, data: PreparedData, output_dir: Path, f0_method: str):
    """Feature extractor (with the training speakers' F0 statistics) and, for CTC, the processor."""
    kwargs = dict(config.feature_extractor_kwargs())
    if kwargs.get("compute_pitch"):
        kwargs.update(f0_method=f0_method, pitch_stats=data.gender_f0_stats or None)
    extractor = EmotionFeatureExtractor(**kwargs)
    tokenizer = processor = None
    if data.vocab is not None:
        vocab_file = output_dir / "vocab.json"
        output_dir.mkdir(parents=True, exist_ok=True)
        vocab_file.write_text(json.dumps(data.vocab, ensure_ascii=False, indent=1))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
        )
        processor = EmotionProcessor(extractor, tokenizer)
    return extractor, tokenizer, processor


def build_trainer(model_args, data_args, training_args, model, data, extractor, tokenizer) -> Trainer:
    sr = data_args.sampling_rate
    max_samples = int(data_args.max_duration * sr) if data_args.max_duration else None
    transform = TrainTransform(
        max_samples=max_samples,
        hop_length=extractor.hop_length,
        augmenter=Augmenter(build_augmentations(data_args.augmentations), sr, extractor.hop_length)
        if data_args.augmentations
        else None,
        seed=training_args.seed,
    )
    train = data.train
    if max_samples:
        cropped = [min(n, max_samples) for n in train["length"]]
        train = train.remove_columns("length").add_column("length", cropped)
    train.set_transform(transform)
    collator = EmotionDataCollator(
        feature_extractor=extractor,
        tokenizer=tokenizer,
        speaker_f0_stats=data.speaker_f0_stats,
        speaker_to_id={s: i for i, s in enumerate(data.speakers)},
        return_labels=model_accepts(model, "labels"),
        return_ctc_labels=model_accepts(model, "ctc_labels"),
        return_speaker_labels=model_accepts(model, "speaker_labels"),
    )
    optimizer = None
    if hasattr(model, "backbone"):
        optimizer = (
            torch.optim.AdamW,
            {
                "params": backbone_param_groups(
                    model,
                    training_args.learning_rate,
                    model_args.backbone_lr_multiplier,
                    training_args.weight_decay,
                ),
                "lr": training_args.learning_rate,
                "betas": (training_args.adam_beta1, training_args.adam_beta2),
                "eps": training_args.adam_epsilon,
            },
        )
    trainer = ResumableTrainer(
        model=model,
        clock=transform,
        args=training_args,
        train_dataset=train,
        eval_dataset=data.validation if len(data.validation) else None,
        data_collator=collator,
        compute_metrics=None if is_decomposition(model_args) else compute_metrics,
        preprocess_logits_for_metrics=lambda logits, labels: (
            logits[0] if isinstance(logits, tuple) else logits
        ),
        optimizer_cls_and_kwargs=optimizer,
        callbacks=[EpochCallback(transform)],
    )
    trainer.callback_handler.callbacks.insert(0, ComponentLossCallback(model))
    return trainer


def clear_output_dir(output_dir: Path, training_args: TrainingArguments) -> None:
    """`--overwrite_output_dir`: remove what would make the run resume or look finished (the
    checkpoints and results.json), nothing else, once (by the main process)."""
    with training_args.main_process_first(desc="clearing output_dir"):
        if training_args.process_index != 0 or not output_dir.is_dir():
            return
        for checkpoint in output_dir.glob("checkpoint-*"):
            if checkpoint.is_dir():
                shutil.rmtree(checkpoint)
        (output_dir / "results.json").unlink(missing_ok=True)


# Config fields that differ between two runs of the same model without changing its weights.
_VOLATILE_CONFIG_KEYS = {
    "transformers_version",
    "_name_or_path",
    "dtype",
    "torch_dtype",
    "architectures",
    "auto_map",
}


def check_resumable(checkpoint: str, model: torch.nn.Module) -> None:
    """Refuse to resume from a checkpoint of another model configuration (an earlier recipe in the
    same output_dir): its weights would not load, or would load into a different model."""
    saved_path = Path(checkpoint) / "config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    current = json.loads(model.config.to_json_string())
    differing = sorted(
        key
        for key in set(saved) | set(current)
        if key not in _VOLATILE_CONFIG_KEYS and saved.get(key) != current.get(key)
    )
    if differing:
        raise DataConfigError(
            f"{checkpoint} was saved by a run with another model configuration (differs in: "
            f"{', '.join(differing[:12])}{', ...' if len(differing) > 12 else ''}), so this run cannot resume "
            "from it. Use another --output_dir, or --overwrite_output_dir to delete its checkpoints and start afresh."
        )


def run_training(trainer: Trainer, training_args: TrainingArguments) -> dict[str, Any]:
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint == "last" or (checkpoint is None and Path(training_args.output_dir).is_dir()):
        last = (
            get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
        )
        if checkpoint == "last" and last is None:
            raise FileNotFoundError(f"no checkpoint in {training_args.output_dir} to resume from")
        checkpoint = last
        if last:
            logger.info("Resuming from %s", last)
    if checkpoint:
        check_resumable(checkpoint, trainer.model)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    return dict(result.metrics)


def evaluate_reconstruction(model, collator, dataset, batch_size: int) -> dict[str, float]:
    """Stage-1 models: mean reconstruction loss (and speaker loss where speakers are known)."""
    model.eval()
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    order = sorted(range(len(dataset)), key=lambda i: dataset[i]["length"])
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = [dataset[i] for i in order[start : start + batch_size]]
            outputs = model(**collator(rows))
            for key in ("reconstruction_loss", "speaker_loss"):
                value = getattr(outputs, key, None)
                if value is not None and torch.isfinite(value):
                    totals[key] = totals.get(key, 0.0) + float(value) * len(rows)
                    counts[key] = counts.get(key, 0) + len(rows)
    return {key: totals[key] / counts[key] for key in totals} | {"num_examples": len(dataset)}


def evaluate_split(
    model, extractor, processor, dataset, data: PreparedData, batch_size: int, adapt_by_speaker: bool = False
) -> tuple[dict, list]:
    """Predict a split with the batched predictor and compute its metrics and per-utterance rows.
    `adapt_by_speaker` re-estimates BatchNorm statistics on each speaker's clips first (transductive)."""
    if len(dataset) == 0:  # no validation speakers (num_validation_speakers=0)
        return {"num_examples": 0}, []
    model.eval()
    waveforms = [np.asarray(w, dtype=np.float32) for w in dataset.with_format("numpy")["input_values"]]
    kwargs: dict[str, Any] = {"genders": dataset["gender"]}
    if extractor.compute_pitch:
        kwargs["f0"] = [np.asarray(f, dtype=np.float32) for f in dataset.with_format("numpy")["f0"]]
        kwargs["f0_stats"] = [data.speaker_f0_stats.get(str(s)) for s in dataset["speaker"]]
    if adapt_by_speaker:
        predictions = predict_by_speaker(
            model,
            extractor,
            waveforms,
            dataset["speaker"],
            predict_waveforms,
            batch_size,
            processor=processor,
            **kwargs,
        )
    else:
        predictions = predict_waveforms(
            model, extractor, waveforms, processor=processor, max_batch_size=batch_size, **kwargs
        )
    logits = np.stack([p.logits for p in predictions])
    predicted = logits.argmax(-1)
    metrics = classification_metrics(dataset["label"], predicted, data.labels)
    rows = []
    for i, (utt, speaker, label) in enumerate(zip(dataset["utt_id"], dataset["speaker"], dataset["label"])):
        probs = np.exp(logits[i] - logits[i].max())
        probs /= probs.sum()
        row = {
            "utt_id": utt,
            "speaker": speaker,
            "label": data.labels[int(label)],
            "prediction": data.labels[int(predicted[i])],
            "probabilities": {name: round(float(p), 6) for name, p in zip(data.labels, probs)},
        }
        if predictions[i].transcript is not None:
            row["reference"] = normalize_transcript(dataset[i]["text"])
            row["transcript"] = predictions[i].transcript
        rows.append(row)
    if any("transcript" in r for r in rows):
        metrics.update(transcription_metrics([r["reference"] for r in rows], [r["transcript"] for r in rows]))
    return metrics, rows


def save_outputs(
    trainer, model_args, data_args, training_args, data, extractor, processor, train_metrics
) -> dict:
    """Save the model directory and evaluate validation and test splits (main process only)."""
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return {}
    # Trainer pickles its arguments next to the weights; a published model directory holds no
    # pickle, so they are kept as JSON instead.
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    (output_dir / "training_args.json").write_text(training_args.to_json_string())
    # The model and data arguments in effect (recipe + command line), for the model card and reruns.
    recipe = {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args)}
    write_json_atomic(output_dir / "recipe.json", recipe)
    extractor.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    model = trainer.model
    batch = training_args.per_device_eval_batch_size
    ensemble = None
    if is_decomposition(model_args):
        validation = evaluate_reconstruction(model, trainer.data_collator, data.validation, batch)
        test, rows = evaluate_reconstruction(model, trainer.data_collator, data.test, batch), []
        validation_rows = []
    else:
        adapt = data_args.speaker_adaptive_batchnorm
        validation, validation_rows = evaluate_split(
            model, extractor, processor, data.validation, data, batch, adapt
        )
        test, rows = evaluate_split(model, extractor, processor, data.test, data, batch, adapt)
        if model_args.ensemble_checkpoints > 1:
            single = {
                name: {k: split[k] for k in ("wa", "ua", "macro_f1", "confusion_matrix") if k in split}
                for name, split in (("validation", validation), ("test", test))
            }
            averaged, members = build_checkpoint_ensemble(
                type(model),
                output_dir,
                model_args.ensemble_checkpoints,
                model_args.ensemble_selection,
                training_args.metric_for_best_model,
                training_args.greater_is_better,
                trainer.state.log_history,
            )
            validation, validation_rows = evaluate_split(
                averaged, extractor, processor, data.validation, data, batch, adapt
            )
            test, rows = evaluate_split(averaged, extractor, processor, data.test, data, batch, adapt)
            ensemble = {
                "checkpoints": model_args.ensemble_checkpoints,
                "selection": model_args.ensemble_selection,
                "members": members,
                "single_model": single,
            }
            # Keep the members, the best and the newest checkpoint (resumption); drop the rest.
            keep = [m["checkpoint"] for m in members] + [trainer.state.best_model_checkpoint or ""]
            keep.append(str(get_last_checkpoint(str(output_dir)) or ""))
            ensemble["pruned_checkpoints"] = len(prune_checkpoints(output_dir, keep))
    write_jsonl_atomic(output_dir / "predictions_test.jsonl", rows)
    write_jsonl_atomic(output_dir / "predictions_validation.jsonl", validation_rows)
    write_jsonl_atomic(output_dir / "skipped.jsonl", data.skipped)
    if test.get("confusion_matrix"):
        title = f"{model_args.model_type} test" + (f" (fold {data.fold.index})" if data.fold else "")
        save_confusion_png(test["confusion_matrix"], data.labels, output_dir / "confusion_test.png", title)
    protocol = data.fold.describe() if data.fold else {"protocol": "fixed", "speaker_independent": None}
    if data.fold is None:
        train_speakers = set(data.train["speaker"])
        overlap = sorted(train_speakers & set(data.test["speaker"]) - {None})
        protocol["speaker_independent"] = not overlap
        protocol["train_test_speaker_overlap"] = overlap
    results = {
        **{k: v for k, v in test.items()},
        "validation": validation,
        "protocol": protocol,
        "speaker_independent": protocol["speaker_independent"],
        "transductive": bool(
            data_args.transductive_speaker_normalization or data_args.speaker_adaptive_batchnorm
        ),
        "transductive_methods": [
            name
            for name in ("transductive_speaker_normalization", "speaker_adaptive_batchnorm")
            if getattr(data_args, name)
        ],
        "model_type": model_args.model_type,
        "labels": data.labels,
        "num_train_examples": len(data.train),
        "num_validation_examples": len(data.validation),
        "num_test_examples": len(data.test),
        "skipped": {
            "count": len(data.skipped),
            "by_reason": dict(Counter(r["reason"].split(":")[0] for r in data.skipped)),
            "file": "skipped.jsonl",
        },
        "train": train_metrics,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        **({"ensemble": ensemble} if ensemble else {}),
    }
    write_json_atomic(output_dir / "results.json", results)
    if data.skipped:
        logger.warning(
            "Skipped %d rows (%s); see skipped.jsonl", len(data.skipped), results["skipped"]["by_reason"]
        )
    keys = ("wa", "ua", "macro_f1", "wer", "cer", "reconstruction_loss")
    test_summary = {k: round(results[k], 4) for k in keys if results.get(k) is not None}
    validation_summary = {k: round(validation[k], 4) for k in keys if validation.get(k) is not None}
    logger.info("Test %s | validation %s", test_summary, validation_summary)
    return results


def count_folds(argv: list[str] | None = None) -> tuple[int, str]:
    """Number of folds the recipe's protocol gives on its data, and the protocol name."""
    _, data_args, _ = parse_arguments(argv)
    if data_args.protocol == "fixed":
        return 1, "fixed"
    pooled = datasets.concatenate_datasets(list(load_standardized(data_args).values()))
    sessions = (
        dict(zip(pooled["speaker"], pooled["session"])) if data_args.protocol == "loso_session" else None
    )
    return num_folds(
        data_args.protocol, pooled["speaker"], sessions, data_args.speaker_folds
    ), data_args.protocol


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, data_args, training_args = parse_arguments(argv)
    setup_logging(training_args)
    set_seed(training_args.seed)
    started = time.time()
    if model_args.overwrite_output_dir:
        clear_output_dir(Path(training_args.output_dir), training_args)
    config = build_config(model_args)
    _, model_class = MODEL_CLASSES[model_args.model_type]
    uses_ctc = "ctc_labels" in inspect.signature(model_class.forward).parameters
    data = prepare_data(data_args, config, training_args, uses_ctc)
    config = finalize_config(config, data, model_args)
    output_dir = Path(training_args.output_dir)
    extractor, tokenizer, processor = build_processing(config, data, output_dir, data_args.f0_method)
    model = build_model(model_args, config)
    trainer = build_trainer(model_args, data_args, training_args, model, data, extractor, tokenizer)
    train_metrics = run_training(trainer, training_args)
    results = save_outputs(
        trainer, model_args, data_args, training_args, data, extractor, processor, train_metrics
    )
    if results:
        results["wall_time_s"] = round(time.time() - started, 1)
        write_json_atomic(output_dir / "results.json", results)
    trainer.accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    try:
        main()
    except DataConfigError as error:
        logging.getLogger("train").error("%s", error)
        sys.exit(2)
