#!/usr/bin/env python
"""Publish a trained emotion model to the Hugging Face Hub with a model card (and its Space).

    python scripts/push_to_hub.py OUTPUT_DIR --repo_id OWNER/NAME [--private] [--create_pr]
        [--revision BRANCH] [--fold K] [--recipe configs/x.json] [--license mit] [--language en]
        [--space_id OWNER/NAME] [--export_onnx] [--dry_run --local_dir DIR]

OUTPUT_DIR is a `train.py` output directory (`results.json` at the top) or a `cross_validate.py`
directory (`cv_results.json`; the model of the fold with the best validation UA is published
unless `--fold` names one, and the card shows every fold).

Steps: load the model, feature extractor (and CTC processor) with the local classes; save them
with their remote code into a staging folder (safetensors only, no pickle, no checkpoints) with
the model card, the confusion matrix and the training configuration; reload the staged folder in
a fresh interpreter started outside the repository with `trust_remote_code=True` and compare its
logits, pipeline labels and transcripts with the local model's; only then create the repo and
upload the folder with `HfApi.upload_folder` (`--create_pr` opens a pull request, `--revision`
pushes to a branch). `--space_id` also creates/updates the Gradio Space from `spaces/`, with the
model id filled in. `--dry_run --local_dir DIR` writes the exact folder(s) that would be uploaded
(the Space to `DIR-space`) and uploads nothing.

`--export_onnx` also exports the model to ONNX into the upload folder as `model.onnx`
(`scripts/export_onnx.py`'s exporter for the family), runs onnxruntime against the PyTorch model on
padded batches of clips of new lengths and refuses to upload anything unless the largest output
difference is below 1e-3 (what `predict.py` accepts); the model card then says how to use it.
`python scripts/predict.py OWNER/NAME FILES --output out.csv` (`--backend auto`, the default)
downloads `model.onnx` and runs it with onnxruntime on the CPU. A family that cannot be exported
(`emotion_segment_crnn`) is refused with the reason before anything is staged; publish it without
`--export_onnx`.

Token: `HF_TOKEN` or the token stored by `hf auth login`. It is never printed or written to a file.
The recipe (model and data arguments) is read from `--recipe`, or from `recipe.json` in the output
directory when `train.py` wrote one; without it the card's configuration is rebuilt from
`results.json` and `config.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
SPACE_DIR = ROOT / "spaces"
REMOTE_CHECK_FLAG = "--_remote_check"

logger = logging.getLogger("push_to_hub")

# What may be published: weights as safetensors (and the ONNX export, a protobuf that holds no
# code), JSON configs, code, the card and images.
ALLOWED_SUFFIXES = {".json", ".safetensors", ".onnx", ".py", ".md", ".png", ".txt"}
FORBIDDEN_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib"}
SPACE_SUFFIXES = {".py", ".txt", ".md", ".wav", ".flac", ".json", ".png"}
LOGITS_TOLERANCE = 1e-5


class PublishError(RuntimeError):
    """A problem the user can fix; reported without a traceback."""


# ------------------------------------------------------------------------------------------------
# Arguments and sources
# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", type=Path, help="train.py or cross_validate.py output directory")
    parser.add_argument("--repo_id", required=True, help="Model repository, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="Create the repositories as private")
    parser.add_argument("--create_pr", action="store_true", help="Open a pull request instead of pushing")
    parser.add_argument("--revision", default=None, help="Branch to push to (created if missing)")
    parser.add_argument("--fold", type=int, default=None, help="cross-validation: fold to publish")
    parser.add_argument("--recipe", type=Path, default=None, help="Recipe JSON of the run (for the card)")
    parser.add_argument("--license", default=None, help="License id for the card metadata, e.g. mit")
    parser.add_argument("--language", nargs="*", default=[], help="Language codes for the card metadata")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--space_id", default=None, help="Also create/update this Gradio Space")
    parser.add_argument(
        "--export_onnx",
        action="store_true",
        help="Also upload model.onnx (exported and checked against PyTorch; predict.py --backend auto uses it)",
    )
    parser.add_argument("--dry_run", action="store_true", help="Stage into --local_dir, upload nothing")
    parser.add_argument("--local_dir", type=Path, default=None, help="Where --dry_run writes the folder")
    args = parser.parse_args(argv)
    if args.dry_run and args.local_dir is None:
        parser.error("--dry_run needs --local_dir")
    if args.create_pr and args.revision not in (None, "main"):
        parser.error("--create_pr opens a pull request against main; do not combine it with --revision")
    for name in ("repo_id", "space_id"):
        value = getattr(args, name)
        if value is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            parser.error(f"--{name} must look like OWNER/NAME, got {value!r}")
    return args


@dataclass
class Source:
    model_dir: Path
    results: dict[str, Any]
    confusion_png: Path | None
    cv: dict[str, Any] | None = None
    fold: int | None = None
    fold_choice: str = ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PublishError(f"cannot read {path}: {error}") from None


def resolve_source(output_dir: Path, fold: int | None) -> Source:
    """The model directory to publish and its results (for CV: the chosen fold's)."""
    if (output_dir / "cv_results.json").exists():
        cv = _read_json(output_dir / "cv_results.json")
        folds = cv.get("folds") or []
        if not folds:
            raise PublishError(f"{output_dir / 'cv_results.json'} lists no folds")
        if fold is None:
            best = max(folds, key=lambda f: (f.get("validation_ua", float("-inf")), -int(f["fold"])))
            fold = int(best["fold"])
            choice = (
                f"chosen by its validation UA, {100 * best.get('validation_ua', 0):.1f}%, not by test results"
            )
        else:
            if fold not in [int(f["fold"]) for f in folds]:
                raise PublishError(
                    f"--fold {fold} is not in cv_results.json (folds {[f['fold'] for f in folds]})"
                )
            choice = "chosen with --fold"
        model_dir = output_dir / f"fold_{fold}"
        if not (model_dir / "results.json").exists():
            raise PublishError(f"{model_dir} has no results.json; was fold {fold} trained?")
        png = output_dir / "confusion_pooled.png"
        return Source(
            model_dir, _read_json(model_dir / "results.json"), png if png.exists() else None, cv, fold, choice
        )
    if (output_dir / "results.json").exists():
        if fold is not None:
            raise PublishError("--fold is for cross_validate.py directories (with cv_results.json)")
        png = output_dir / "confusion_test.png"
        return Source(output_dir, _read_json(output_dir / "results.json"), png if png.exists() else None)
    raise PublishError(
        f"{output_dir} has neither results.json (train.py) nor cv_results.json (cross_validate.py)"
    )


def load_recipe(source: Source, output_dir: Path, recipe_path: Path | None) -> dict[str, Any] | None:
    import dataclasses

    from transformers import TrainingArguments

    # TrainingArguments are reported from training_args.json (the values in effect, after
    # command-line overrides), so the recipe keeps the model and data arguments.
    training_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    for path in (recipe_path, source.model_dir / "recipe.json", output_dir / "recipe.json"):
        if path is not None and path.exists():
            recipe = _read_json(path)
            return {k: v for k, v in recipe.items() if not k.startswith("_") and k not in training_fields}
    if recipe_path is not None:
        raise PublishError(f"--recipe {recipe_path} not found")
    return None


def non_default_training_args(model_dir: Path) -> dict[str, Any]:
    """TrainingArguments of the run that differ from the library defaults."""
    path = model_dir / "training_args.json"
    if not path.exists():
        return {}
    from transformers import TrainingArguments

    used = _read_json(path)
    with tempfile.TemporaryDirectory() as tmp:
        defaults = json.loads(TrainingArguments(output_dir=tmp).to_json_string())
    return {k: v for k, v in used.items() if k not in defaults or defaults[k] != v}


# ------------------------------------------------------------------------------------------------
# Staging
# ------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    model: Any
    extractor: Any
    processor: Any | None


def load_local_model(model_dir: Path) -> LoadedModel:
    """Load with the repository's own classes (not remote code): this is the reference."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from modeling import MODEL_CLASSES, EmotionFeatureExtractor, EmotionProcessor

    config = _read_json(model_dir / "config.json")
    model_type = config.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise PublishError(f"{model_dir}: model_type {model_type!r} is not one of {sorted(MODEL_CLASSES)}")
    if (
        not (model_dir / "model.safetensors").exists()
        and not (model_dir / "model.safetensors.index.json").exists()
    ):
        raise PublishError(f"{model_dir} has no model.safetensors")
    model = MODEL_CLASSES[model_type][1].from_pretrained(model_dir).eval()
    extractor = EmotionFeatureExtractor.from_pretrained(model_dir)
    processor = None
    if (model_dir / "vocab.json").exists() and (model_dir / "tokenizer_config.json").exists():
        processor = EmotionProcessor.from_pretrained(model_dir)
    return LoadedModel(model, extractor, processor)


def stage_model(loaded: LoadedModel, staging: Path) -> list[str]:
    """Weights, configs and remote code; returns the code files written."""
    loaded.model.save_pretrained(staging, safe_serialization=True)
    loaded.extractor.save_pretrained(staging)
    if loaded.processor is not None:
        loaded.processor.save_pretrained(staging)
    return sorted(p.name for p in staging.glob("*.py"))


def check_exportable(model_dir: Path) -> None:
    """Refuse `--export_onnx` for a family export_onnx.py cannot export, before any work."""
    from export_onnx import export_plan

    model_type = _read_json(model_dir / "config.json").get("model_type")
    reason = export_plan(str(model_type)).reason
    if reason is not None:
        raise PublishError(
            f"--export_onnx: {model_type} models cannot be exported to ONNX: {reason} "
            "Publish without --export_onnx (predict.py then runs the model with PyTorch)."
        )


def stage_onnx(loaded: LoadedModel, staging: Path, name: str) -> dict[str, Any]:
    """Export the model into `staging` and check onnxruntime against PyTorch with the tolerance
    predict.py's load-time probe accepts; returns export_onnx's report. Any failure is a
    PublishError, raised before anything is uploaded."""
    import export_onnx
    from ser_backend import ONNX_FILE, ONNX_TOLERANCE

    rerun = f"(python scripts/export_onnx.py {name} --output model.onnx shows the details)"
    try:
        return export_onnx.export_checked(
            loaded.model, loaded.extractor, staging / ONNX_FILE, tolerance=ONNX_TOLERANCE, name=name
        )
    except export_onnx.NotExportableError as error:
        raise PublishError(f"--export_onnx: {error}") from None
    except ImportError as error:
        raise PublishError(f"--export_onnx needs onnx and onnxruntime ({error})") from None
    except AssertionError as error:
        raise PublishError(
            f"--export_onnx: onnxruntime does not reproduce the PyTorch model: {error}; nothing was uploaded"
        ) from None
    except Exception as error:  # the exporters' own errors, often pages of graph dump
        raise PublishError(
            f"--export_onnx: the ONNX export failed: {type(error).__name__}: "
            f"{export_onnx.first_line(error)}; nothing was uploaded {rerun}"
        ) from None


def check_staged_files(staging: Path, token: str | None) -> None:
    """Refuse pickles, checkpoints, unexpected files and anything that contains the token."""
    problems = []
    for path in sorted(staging.rglob("*")):
        relative = path.relative_to(staging).as_posix()
        if path.is_dir():
            if path.name.startswith("checkpoint"):
                problems.append(f"{relative}: checkpoint directory")
            continue
        if path.suffix in FORBIDDEN_SUFFIXES or path.name == "training_args.bin":
            problems.append(f"{relative}: pickle-capable file")
        elif path.suffix not in ALLOWED_SUFFIXES:
            problems.append(f"{relative}: unexpected file type")
        if token and token.encode() in path.read_bytes():
            problems.append(f"{relative}: contains the Hub token")
    for required in ("config.json", "README.md", "preprocessor_config.json"):
        if not (staging / required).exists():
            problems.append(f"{required}: missing")
    if not list(staging.glob("*.safetensors")):
        problems.append("no safetensors weights")
    if problems:
        raise PublishError("the staged folder is not publishable:\n  " + "\n  ".join(problems))


def reference_waveforms(sampling_rate: int) -> list:
    """Deterministic voiced, pitch-varying test signals of different lengths."""
    import numpy as np

    clips = []
    for seed, seconds in enumerate((1.3, 0.7, 2.1)):
        rng = np.random.default_rng(seed)
        t = np.arange(int(seconds * sampling_rate)) / sampling_rate
        f0 = 120 + 40 * seed + 30 * np.sin(2 * np.pi * 1.5 * t + seed)
        phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
        signal = sum(np.sin(k * phase) / k for k in range(1, 8)) * (
            0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
        )
        clips.append((0.3 * signal + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def local_report(loaded: LoadedModel, waveforms: list) -> dict[str, Any]:
    import torch

    report: dict[str, Any] = {"logits": [], "transcripts": []}
    rate = loaded.extractor.sampling_rate
    with torch.no_grad():
        for waveform in waveforms:
            features = loaded.extractor(waveform, sampling_rate=rate, return_tensors="pt")
            outputs = loaded.model(**features)
            report["logits"].append(outputs.logits[0].tolist())
            if loaded.processor is not None and getattr(outputs, "ctc_logits", None) is not None:
                lengths = loaded.model.ctc_frame_lengths(features["input_values"], features["attention_mask"])
                report["transcripts"] += loaded.processor.decode_ctc(outputs.ctc_logits, lengths)
    report["id2label"] = {str(k): v for k, v in loaded.model.config.id2label.items()}
    return report


def remote_check(staging: Path, loaded: LoadedModel, workdir: Path) -> dict[str, Any]:
    """Reload `staging` in a fresh interpreter outside the repository with trust_remote_code and
    compare it with the local model. Raises PublishError on any difference."""
    import numpy as np

    waveforms = reference_waveforms(loaded.extractor.sampling_rate)
    inputs, output = workdir / "inputs.npz", workdir / "remote_report.json"
    np.savez(inputs, *waveforms)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    }
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "hf_modules"), PYTHONWARNINGS="ignore")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        REMOTE_CHECK_FLAG,
        str(staging),
        str(inputs),
        str(output),
    ]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise PublishError(f"the staged folder does not load with trust_remote_code:\n{done.stderr[-4000:]}")
    remote = json.loads(output.read_text())
    expected = local_report(loaded, waveforms)
    compare_reports(expected, remote)
    return remote


def compare_reports(expected: dict[str, Any], remote: dict[str, Any]) -> None:
    import numpy as np

    problems = []
    if remote.get("leaked_modules"):
        problems.append(f"the local package leaked into the check: {remote['leaked_modules']}")
    if remote.get("id2label") != expected["id2label"]:
        problems.append(f"id2label differs: {remote.get('id2label')} vs {expected['id2label']}")
    for i, (a, b) in enumerate(zip(expected["logits"], remote.get("logits", []))):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.allclose(a, b, atol=LOGITS_TOLERANCE, rtol=0):
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else "shape"
            problems.append(f"clip {i}: logits differ (max abs diff {diff})")
    if len(remote.get("logits", [])) != len(expected["logits"]):
        problems.append("the remote check returned a different number of clips")
    if remote.get("transcripts", []) != expected["transcripts"]:
        problems.append(f"transcripts differ: {remote.get('transcripts')} vs {expected['transcripts']}")
    labels = set(expected["id2label"].values())
    for result in remote.get("pipeline", []):
        if {entry["label"] for entry in result} != labels:
            problems.append(
                f"pipeline labels {[e['label'] for e in result]} are not id2label's {sorted(labels)}"
            )
    if problems:
        raise PublishError("the reloaded model differs from the trained one:\n  " + "\n  ".join(problems))


def _remote_check_main(argv: list[str]) -> None:
    """Child process: load only through trust_remote_code and write a JSON report."""
    import numpy as np
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    model_dir, inputs_path, output = argv
    with np.load(inputs_path, allow_pickle=False) as data:
        waveforms = [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    model = AutoModelForAudioClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    processor = None
    if Path(model_dir, "processor_config.json").exists():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    report: dict[str, Any] = {"logits": [], "transcripts": [], "module": type(model).__module__}
    with torch.no_grad():
        for waveform in waveforms:
            features = extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt")
            outputs = model(**features)
            report["logits"].append(outputs.logits[0].tolist())
            if processor is not None and getattr(outputs, "ctc_logits", None) is not None:
                features = processor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt")
                lengths = model.ctc_frame_lengths(features["input_values"], features["attention_mask"])
                report["transcripts"] += processor.decode_ctc(model(**features).ctc_logits, lengths)
    classifier = pipeline("audio-classification", model=model_dir, trust_remote_code=True)
    report["pipeline"] = [classifier(w, top_k=None) for w in waveforms[:1]]
    report["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
    report["leaked_modules"] = sorted(m for m in sys.modules if m == "modeling" or m.startswith("modeling."))
    Path(output).write_text(json.dumps(report))


def write_card_and_extras(
    args: argparse.Namespace,
    source: Source,
    loaded: LoadedModel,
    staging: Path,
    code_files: list[str],
    onnx: dict[str, Any] | None = None,
) -> None:
    from ser_card import CONFUSION_FILE, TRAINING_CONFIG_FILE, CardInputs, build_model_card, training_config

    recipe = load_recipe(source, args.output_dir, args.recipe)
    config = _read_json(staging / "config.json")
    inputs = CardInputs(
        repo_id=args.repo_id,
        results=source.results,
        config=config,
        code_files=code_files,
        cv=source.cv,
        fold=source.fold,
        fold_choice=source.fold_choice,
        recipe=recipe,
        training_args=non_default_training_args(source.model_dir),
        has_processor=loaded.processor is not None,
        compute_pitch=bool(getattr(loaded.extractor, "compute_pitch", False)),
        license=args.license,
        languages=list(args.language),
        space_id=args.space_id,
        onnx=None
        if onnx is None
        else {
            "file": Path(onnx["output"]).name,
            "outputs": onnx["outputs"],
            "max_abs_diff": onnx["max_abs_diff"],
        },
    )
    if source.confusion_png is not None:
        shutil.copyfile(source.confusion_png, staging / CONFUSION_FILE)
    else:
        from ser_metrics import save_confusion_png

        matrix = (source.cv or {}).get("pooled", {}).get("confusion_matrix") or source.results[
            "confusion_matrix"
        ]
        save_confusion_png(matrix, source.results["labels"], staging / CONFUSION_FILE, args.repo_id)
    results = {k: v for k, v in source.results.items() if k not in ("skipped", "_dir")}
    (staging / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    if source.cv is not None:
        (staging / "cv_results.json").write_text(json.dumps(source.cv, indent=2, ensure_ascii=False))
    (staging / TRAINING_CONFIG_FILE).write_text(
        json.dumps(training_config(inputs), indent=2, ensure_ascii=False, default=str)
    )
    build_model_card(inputs).save(staging / "README.md")


def stage_space(staging: Path, model_id: str, revision: str | None, source_dir: Path = SPACE_DIR) -> None:
    """Copy spaces/ with MODEL_ID (and the revision) filled in as the app's default and the README's
    `models:` entry."""
    from huggingface_hub import RepoCard

    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        if path.is_dir() or "__pycache__" in relative.parts or path.suffix not in SPACE_SUFFIXES:
            continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    app = staging / "app.py"
    text, count = re.subn(
        r"^DEFAULT_MODEL_ID = .*$", f"DEFAULT_MODEL_ID = {json.dumps(model_id)}", app.read_text(), flags=re.M
    )
    text, count_revision = re.subn(
        r"^DEFAULT_MODEL_REVISION = .*$",
        f"DEFAULT_MODEL_REVISION = {json.dumps(revision) if revision else None}",
        text,
        flags=re.M,
    )
    if count != 1 or count_revision != 1:
        raise PublishError("spaces/app.py must define DEFAULT_MODEL_ID and DEFAULT_MODEL_REVISION once each")
    app.write_text(text)
    card = RepoCard.load(staging / "README.md")
    card.data.models = [model_id]
    card.save(staging / "README.md")


# ------------------------------------------------------------------------------------------------
# Upload
# ------------------------------------------------------------------------------------------------


def hub_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError("no Hub token: set HF_TOKEN or run `hf auth login` (or use --dry_run --local_dir)")
    return token


def upload(
    args: argparse.Namespace, token: str, folder: Path, repo_id: str, repo_type: str, **create_kwargs: Any
) -> Any:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    url = api.create_repo(
        repo_id, repo_type=repo_type, private=args.private or None, exist_ok=True, **create_kwargs
    )
    revision = args.revision if repo_type == "model" else None
    if revision and revision != "main" and not args.create_pr:
        api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
    kind = "model" if repo_type == "model" else "Space"
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=folder,
        commit_message=args.commit_message or f"Upload {kind} with scripts/push_to_hub.py",
        revision=revision,
        create_pr=args.create_pr,
    )
    print(
        f"{kind} {url}: " + (f"pull request {info.pr_url}" if args.create_pr else f"commit {info.commit_url}")
    )
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    token = None if args.dry_run else hub_token()
    if args.dry_run:
        for folder in (args.local_dir, Path(f"{args.local_dir}-space") if args.space_id else None):
            if folder is not None and folder.exists() and any(folder.iterdir()):
                raise PublishError(f"{folder} is not empty; give --local_dir a new or empty directory")
    source = resolve_source(args.output_dir, args.fold)
    if args.export_onnx:
        check_exportable(source.model_dir)
    loaded = load_local_model(source.model_dir)
    with tempfile.TemporaryDirectory(prefix="push_to_hub_") as tmp:
        staging, space_staging, workdir = Path(tmp, "model"), Path(tmp, "space"), Path(tmp, "check")
        staging.mkdir()
        workdir.mkdir()
        code_files = stage_model(loaded, staging)
        onnx = stage_onnx(loaded, staging, str(source.model_dir)) if args.export_onnx else None
        write_card_and_extras(args, source, loaded, staging, code_files, onnx)
        check_staged_files(staging, token)
        logger.info("Reloading the staged folder with trust_remote_code in a fresh interpreter")
        remote_check(staging, loaded, workdir)
        logger.info("Remote-code check passed: logits match within %g", LOGITS_TOLERANCE)
        if args.space_id:
            stage_space(space_staging, args.repo_id, args.revision)
            if token and any(
                token.encode() in p.read_bytes() for p in space_staging.rglob("*") if p.is_file()
            ):
                raise PublishError("the staged Space contains the Hub token")
        summary: dict[str, Any] = {"files": sorted(p.name for p in staging.iterdir()), "fold": source.fold}
        if onnx is not None:
            summary["onnx_max_abs_diff"] = onnx["max_abs_diff"]
        if args.dry_run:
            shutil.copytree(staging, args.local_dir, dirs_exist_ok=True)
            print(f"Dry run: the model repository's files are in {args.local_dir}")
            if args.space_id:
                shutil.copytree(space_staging, f"{args.local_dir}-space", dirs_exist_ok=True)
                print(f"Dry run: the Space's files are in {args.local_dir}-space")
            return summary
        summary["model"] = upload(args, token, staging, args.repo_id, "model")
        if args.space_id:
            summary["space"] = upload(args, token, space_staging, args.space_id, "space", space_sdk="gradio")
        return summary


def cli() -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        main()
    except (PublishError, HfHubHTTPError) as error:
        print(f"push_to_hub: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == REMOTE_CHECK_FLAG:
        _remote_check_main(sys.argv[2:])
    else:
        cli()
