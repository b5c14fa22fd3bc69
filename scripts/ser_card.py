"""Model card of a published emotion model: metadata (model-index with WA/UA/macro-F1 and WER),
the evaluation protocol in plain words, results, usage, the training configuration and the
limitations of emotion recognition.

Pure functions over the JSON files that `train.py` / `cross_validate.py` write; `push_to_hub.py`
gathers them into `CardInputs` and calls `build_model_card`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CONFUSION_FILE = "confusion_matrix.png"
TRAINING_CONFIG_FILE = "training_config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

FAMILIES = {
    "emotion_ssl": "a self-supervised speech encoder (wav2vec 2.0 / HuBERT / WavLM family) with "
    "pooling and a classification head",
    "emotion_ssl_ctc": "a self-supervised speech encoder with an emotion head and an auxiliary CTC "
    "(character transcription) head, trained jointly",
    "emotion_decomposed": "a decomposed-speech multi-task model: a self-supervised content encoder "
    "plus rhythm, pitch and timbre encoders (SpeechSplit style), trained on emotion, CTC "
    "transcription, mel reconstruction and speaker objectives",
    "emotion_cnn_transformer": "a CNN + Transformer classifier on log-mel spectrograms",
    "emotion_segment_crnn": "a segment-level CNN + BiLSTM + attention classifier on log-mel spectrograms",
}
PROTOCOL_WORDS = {
    "loso": "leave-one-speaker-out cross-validation",
    "loso_session": "leave-one-session-out cross-validation",
    "fixed": "the dataset's own train / validation / test splits",
    "speaker_dependent_dialogue_10fold": "10-fold cross-validation over dialogues (speaker-dependent)",
}
# TrainingArguments that say where or how a run was logged, not how the model was trained.
_UNINFORMATIVE_ARGS = re.compile(
    r"(token|hub_|push_to_hub|output_dir|logging_dir|report_to|run_name|project|trackio|"
    r"disable_tqdm|log_level|local_rank|^do_|resume_from_checkpoint|dataloader_|save_on_each_node)"
)


def is_hub_id(value: Any) -> bool:
    """`owner/name` that is not an existing local path."""
    return isinstance(value, str) and bool(_HUB_ID.match(value)) and not os.path.exists(value)


@dataclass
class CardInputs:
    repo_id: str
    results: dict[str, Any]  # results.json of the published model (the chosen fold for CV)
    config: dict[str, Any]  # config.json
    code_files: list[str]
    cv: dict[str, Any] | None = None  # cv_results.json
    fold: int | None = None  # the published fold (CV)
    fold_choice: str = ""  # how the fold was chosen (CV)
    recipe: dict[str, Any] | None = None
    training_args: dict[str, Any] = field(default_factory=dict)  # non-default TrainingArguments
    has_processor: bool = False
    compute_pitch: bool = False
    license: str | None = None
    languages: list[str] = field(default_factory=list)
    space_id: str | None = None
    onnx: dict[str, Any] | None = None  # the uploaded ONNX export: file, outputs, max_abs_diff


def base_model(inputs: CardInputs) -> str | None:
    """The backbone's Hub id when the run started from a pretrained backbone."""
    candidates = [(inputs.recipe or {}).get("backbone_name_or_path")]
    candidates.append((inputs.config.get("backbone_config") or {}).get("_name_or_path"))
    return next((c for c in candidates if is_hub_id(c)), None)


def dataset_ids(inputs: CardInputs) -> tuple[str, str]:
    """(type, name) of the dataset for the model-index: the Hub id when there is one."""
    recipe = inputs.recipe or {}
    name = recipe.get("dataset_name")
    if is_hub_id(name):
        config_name = recipe.get("dataset_config_name")
        return name, name + (f" ({config_name})" if config_name else "")
    local = recipe.get("data_dir") or name or "unknown"
    return str(name or "local"), f"local dataset {os.path.basename(str(local).rstrip('/'))}"


def _protocol(inputs: CardInputs) -> dict[str, Any]:
    return dict(inputs.results.get("protocol") or {})


def training_config(inputs: CardInputs) -> dict[str, Any]:
    """The recipe (model and data arguments) and the TrainingArguments that differ from defaults."""
    recipe = inputs.recipe
    if recipe is None:
        recipe = {
            "_reconstructed": "recipe file not found; fields rebuilt from results.json and config.json",
            "model_type": inputs.results.get("model_type") or inputs.config.get("model_type"),
            "labels": inputs.results.get("labels"),
            "protocol": _protocol(inputs).get("protocol"),
            "fold": _protocol(inputs).get("fold"),
        }
        if inputs.config.get("backbone_config"):
            backbone = inputs.config["backbone_config"]
            keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "_name_or_path")
            recipe["backbone_config"] = {k: backbone[k] for k in keys if backbone.get(k) not in (None, "")}
    recipe = {k: v for k, v in recipe.items() if not _UNINFORMATIVE_ARGS.search(k) or k == "protocol"}
    args = {k: v for k, v in inputs.training_args.items() if not _UNINFORMATIVE_ARGS.search(k)}
    return {"recipe": recipe, "training_arguments": args}


# ------------------------------------------------------------------------------------------------
# Metadata
# ------------------------------------------------------------------------------------------------


def eval_results(inputs: CardInputs) -> list[EvalResult]:
    """WA, UA, macro-F1 (and WER for CTC models) on the test data of the protocol."""
    dataset_type, dataset_name = dataset_ids(inputs)
    protocol = _protocol(inputs)
    if inputs.cv:
        source = dict(inputs.cv["pooled"])
        if "wer" in inputs.cv.get("mean", {}):
            source["wer"] = inputs.cv["mean"]["wer"]
        folds = len(inputs.cv.get("folds", []))
        args = {
            "protocol": inputs.cv.get("protocol"),
            "folds": folds,
            "aggregation": "pooled test predictions",
        }
        args["speaker_independent"] = bool(inputs.cv.get("speaker_independent"))
        suffix = f" ({inputs.cv.get('protocol')}, pooled over {folds} folds)"
    else:
        source = inputs.results
        args = {"protocol": protocol.get("protocol"), "fold": protocol.get("fold")}
        args["speaker_independent"] = inputs.results.get("speaker_independent")
        suffix = f" ({protocol.get('protocol')}, fold {protocol.get('fold')})"
        if protocol.get("protocol") == "fixed":
            args.pop("fold")
            suffix = " (fixed splits)"
    args["transductive"] = bool((inputs.cv or inputs.results).get("transductive"))
    metrics = [
        ("wa", "accuracy", None, "WA (weighted accuracy)"),
        ("ua", "recall", "macro", "UA (unweighted accuracy, macro recall)"),
        ("macro_f1", "f1", "macro", "Macro-F1"),
        ("wer", "wer", None, "WER of the CTC head" + (" (mean over folds)" if inputs.cv else "")),
    ]
    results = []
    for key, metric_type, metric_config, metric_name in metrics:
        if source.get(key) is None:
            continue
        results.append(
            EvalResult(
                task_type="audio-classification",
                task_name="Speech emotion recognition",
                dataset_type=dataset_type,
                dataset_name=dataset_name + suffix,
                dataset_split="test",
                dataset_args={k: v for k, v in args.items() if v is not None},
                metric_type=metric_type,
                metric_config=metric_config,
                metric_name=metric_name,
                metric_value=round(float(source[key]), 4),
            )
        )
    return results


def card_data(inputs: CardInputs) -> ModelCardData:
    recipe = inputs.recipe or {}
    model_type = inputs.results.get("model_type") or inputs.config.get("model_type")
    has_wer = any(r.metric_type == "wer" for r in eval_results(inputs))
    return ModelCardData(
        model_name=inputs.repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag="audio-classification",
        base_model=base_model(inputs),
        datasets=[recipe["dataset_name"]] if is_hub_id(recipe.get("dataset_name")) else None,
        language=inputs.languages or None,
        license=inputs.license,
        metrics=["accuracy", "recall", "f1", *(["wer"] if has_wer else [])],
        tags=[
            "audio-classification",
            "speech-emotion-recognition",
            "custom_code",
            str(model_type),
            *(["onnx"] if inputs.onnx else []),
        ],
        eval_results=eval_results(inputs),
    )


# ------------------------------------------------------------------------------------------------
# Body
# ------------------------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


def _speakers(names: list[Any]) -> str:
    names = [str(n) for n in names]
    return ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + f", … ({len(names)} in all)"


def _selection(inputs: CardInputs) -> str:
    args = inputs.training_args
    if args.get("load_best_model_at_end"):
        return f"the checkpoint with the best validation {str(args.get('metric_for_best_model', 'loss')).upper()} was kept"
    return "it was monitored during training and the last checkpoint was kept"


def protocol_text(inputs: CardInputs) -> str:
    """The evaluation protocol in plain words."""
    recipe = inputs.recipe or {}
    protocol = _protocol(inputs)
    name = (inputs.cv or {}).get("protocol") or protocol.get("protocol") or "unknown"
    independent = (inputs.cv or inputs.results).get("speaker_independent")
    transductive = bool((inputs.cv or inputs.results).get("transductive"))
    lines = [f"- **Protocol:** `{name}`, {PROTOCOL_WORDS.get(name, 'see the recipe')}."]
    if independent:
        lines.append(
            "- **Speaker-independent:** no test speaker's audio was used for training or for choosing "
            "the checkpoint; train, validation and test speakers are disjoint."
        )
    elif independent is None:
        lines.append("- **Speaker independence unknown:** the dataset has no speaker ids.")
    else:
        overlap = protocol.get("train_test_speaker_overlap") or []
        lines.append(
            "- **SPEAKER-DEPENDENT:** speakers are shared between training and test"
            + (f" ({_speakers(overlap)})" if overlap else "")
            + ", so these numbers overestimate accuracy on new speakers and are not comparable "
            "with speaker-independent results."
        )
    if name in ("loso", "loso_session"):
        count = recipe.get("num_validation_speakers", len(protocol.get("validation", [])) or 1)
        lines.append(
            f"- **Validation speakers:** {count} per fold, taken from the non-test speakers with a "
            f"seeded shuffle that alternates genders when they are known; {_selection(inputs)}."
        )
    elif name == "fixed":
        lines.append(f"- **Validation:** the dataset's validation split; {_selection(inputs)}.")
    if transductive:
        lines.append(
            "- **Transductive:** the test speakers' *unlabelled* audio was used to compute their F0 "
            "normalisation statistics (their labels were not used)."
        )
    else:
        lines.append(
            "- **Not transductive:** nothing from the test speakers, not even unlabelled audio, was used "
            "for training, normalisation or model selection."
        )
    if protocol and not inputs.cv:
        lines.append(
            f"- **This model:** fold {protocol.get('fold', 0)} of {protocol.get('num_folds', 1)}; "
            f"test {protocol.get('unit', 'speaker')}s: {_speakers(protocol.get('test', []))}; "
            f"validation: {_speakers(protocol.get('validation', []))}; "
            f"{len(protocol.get('train', []))} training {protocol.get('unit', 'speaker')}s."
        )
    if inputs.cv and inputs.fold is not None:
        lines.append(f"- **Published weights:** the model of fold {inputs.fold} ({inputs.fold_choice}).")
    return "\n".join(lines)


def results_text(inputs: CardInputs) -> str:
    columns = ["wa", "ua", "macro_f1"] + [k for k in ("wer", "cer") if inputs.results.get(k) is not None]
    header = "| | " + " | ".join(c.upper().replace("MACRO_F1", "Macro-F1") for c in columns) + " | N |"
    rule = "|---" * (len(columns) + 2) + "|"
    if not inputs.cv:
        rows = [
            ("test", inputs.results),
            ("validation", inputs.results.get("validation") or {}),
        ]
        body = [
            f"| {name} | " + " | ".join(_pct(r.get(c)) for c in columns) + f" | {r.get('num_examples', '')} |"
            for name, r in rows
        ]
        return "Metrics in %.\n\n" + "\n".join([header, rule, *body])
    cv = inputs.cv
    columns = ["wa", "ua", "macro_f1"] + [k for k in ("wer", "cer") if k in cv.get("mean", {})]
    header = "| fold | test speakers | N | " + " | ".join(c.upper() for c in columns) + " |"
    header = header.replace("MACRO_F1", "Macro-F1")
    rule = "|---" * (len(columns) + 3) + "|"
    body = []
    for fold in cv.get("folds", []):
        mark = " (published)" if fold.get("fold") == inputs.fold else ""
        cells = " | ".join(_pct(fold.get(c)) for c in columns)
        body.append(
            f"| {fold.get('fold')}{mark} | {_speakers(fold.get('test_speakers', []))} | "
            f"{fold.get('num_test', '')} | {cells} |"
        )
    pooled = cv.get("pooled", {})
    body.append(
        f"| pooled | all | {pooled.get('num_examples', '')} | "
        + " | ".join(_pct(pooled.get(c)) if c in pooled else "–" for c in columns)
        + " |"
    )
    mean, std = cv.get("mean", {}), cv.get("std", {})
    body.append(
        "| mean ± std | | | "
        + " | ".join(f"{_pct(mean.get(c))} ± {_pct(std.get(c))}" for c in columns)
        + " |"
    )
    return (
        "Metrics in %. *Pooled* scores all test utterances of all folds together; *mean ± std* is "
        "over folds.\n\n" + "\n".join([header, rule, *body])
    )


def usage_text(inputs: CardInputs) -> str:
    repo = inputs.repo_id
    gender = ', gender="female")  # or "male"; omit if unknown' if inputs.compute_pitch else ")"
    text = f"""```python
import librosa
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

repo = "{repo}"
model = AutoModelForAudioClassification.from_pretrained(repo, trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)

waveform, rate = librosa.load("speech.wav", sr=extractor.sampling_rate, mono=True)
inputs = extractor(waveform, sampling_rate=rate, return_tensors="pt"{gender}
with torch.no_grad():
    probabilities = model(**inputs).logits.softmax(-1)[0]
print({{model.config.id2label[i]: round(float(p), 3) for i, p in enumerate(probabilities)}})
```

With the `pipeline` (decodes and resamples files with ffmpeg):

```python
from transformers import pipeline

classifier = pipeline("audio-classification", model="{repo}", trust_remote_code=True)
print(classifier("speech.wav", top_k=None))
```
"""
    if inputs.compute_pitch:
        text += (
            "\nThis model quantises F0 (pyworld) relative to the training speakers' per-gender "
            'log-F0 statistics: pass `gender="female"` or `"male"` to the feature extractor when '
            "you know it; without it the F0 search range and statistics of all speakers are used, "
            "which is less accurate. It needs `pip install pyworld 'setuptools<81'`.\n"
        )
    if inputs.has_processor:
        text += f"""
The CTC head also transcribes (greedy decoding):

```python
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
features = processor(waveform, sampling_rate=rate, return_tensors="pt")
with torch.no_grad():
    outputs = model(**features)
lengths = model.ctc_frame_lengths(features["input_values"], features["attention_mask"])
print(processor.decode_ctc(outputs.ctc_logits, lengths))
```
"""
    if inputs.onnx:
        text += onnx_text(inputs, gender)
    if inputs.space_id:
        text += f"\nTry it in the browser: [{inputs.space_id}](https://huggingface.co/spaces/{inputs.space_id}).\n"
    return text


def onnx_text(inputs: CardInputs, gender: str) -> str:
    """How to run the uploaded ONNX export, with this project's predict.py or onnxruntime alone."""
    repo, onnx = inputs.repo_id, inputs.onnx or {}
    name = onnx["file"]
    outputs = " and ".join(f"`{output}`" for output in onnx["outputs"])
    difference = max(onnx["max_abs_diff"].values())
    return f"""
`{name}` is an ONNX export of these weights: it takes what the feature extractor returns
(`return_tensors="np"`) and returns {outputs}. Before upload, onnxruntime was checked against
PyTorch on padded batches of clips of new lengths (max |difference| {difference:.1e}). This
project's `scripts/predict.py` downloads it and runs it with onnxruntime on the CPU
(`--backend auto`, the default; a load-time probe against the PyTorch weights falls back to PyTorch
if the two disagree):

```bash
python scripts/predict.py {repo} recordings/ --output predictions.csv --backend auto
```

Or with onnxruntime directly (after the feature extraction above):

```python
import onnxruntime
from huggingface_hub import hf_hub_download

session = onnxruntime.InferenceSession(hf_hub_download("{repo}", "{name}"))
features = extractor(waveform, sampling_rate=rate, return_tensors="np"{gender}
logits = session.run(["logits"], {{i.name: features[i.name] for i in session.get_inputs()}})[0]
```
"""


def trust_remote_code_text(inputs: CardInputs) -> str:
    files = ", ".join(f"`{name}`" for name in sorted(inputs.code_files))
    return (
        "The model classes are not part of the `transformers` library: they live in this repository "
        f"({files}). `trust_remote_code=True` tells `transformers` to download and **execute** these "
        "Python files on your machine. Read them before you run them, and pin the revision you "
        'reviewed, e.g. `from_pretrained(repo, trust_remote_code=True, revision="<commit sha>")`, so '
        "that a later push cannot change the code you run. The code imports only `torch`, "
        "`transformers`, `numpy` and the standard library (`pyworld` for F0 where needed) and the "
        "weights are stored as `safetensors` (no pickle)."
    )


LIMITATIONS = """\
- **What is measured.** The model predicts which of a fixed set of labels ({labels}) annotators \
(or actors' instructions) attached to a recording. It does not detect what a person feels: \
expressed and felt emotion differ, and labels are culture- and annotator-dependent.
- **Acted vs. natural speech.** Most emotion corpora are acted or elicited (exaggerated, clean, \
scripted). Accuracy on spontaneous, conversational speech is typically far lower, and \
cross-corpus accuracy drops sharply.
- **Language, speakers and channel.** Training data: {data}. Expect worse results for other \
languages, accents, ages, voices unlike the training speakers, children, pathological speech, \
noise, far-field microphones, telephone bandwidth and music.
- **Label set.** Everything is forced into these {count} classes; there is no "other" or \
"uncertain" output, and probabilities are not calibrated.
- **Misuse.** Do not use it to make or support decisions about people: hiring, employment \
monitoring, education, credit, insurance, policing, border control, or lie detection, nor for \
surveillance of people who have not consented. The EU AI Act prohibits emotion-recognition \
systems in workplaces and educational institutions (except for medical or safety reasons) and \
classes other uses as high-risk. Tell people when their voice is analysed.
- **Intended use.** Research on speech emotion recognition, benchmarking, and demos with \
consenting users."""


def build_model_card(inputs: CardInputs) -> ModelCard:
    results = inputs.results
    labels = results.get("labels") or list((inputs.config.get("id2label") or {}).values())
    model_type = results.get("model_type") or inputs.config.get("model_type")
    _, dataset_name = dataset_ids(inputs)
    data_words = dataset_name
    if (inputs.recipe or {}).get("dataset_name") == "audiofolder":
        data_words += " (read with `audiofolder`)"
    base = base_model(inputs)
    summary = (
        f"Speech emotion recognition with {FAMILIES.get(model_type, f'a `{model_type}` model')}"
        + (f", fine-tuned from [{base}](https://huggingface.co/{base})" if base else "")
        + f". Trained on {data_words}. Classes: {', '.join(f'`{label}`' for label in labels)}."
    )
    config_json = json.dumps(training_config(inputs), indent=2, ensure_ascii=False, default=str)
    sections = [
        f"# {inputs.repo_id.split('/')[-1]}",
        summary,
        "## Evaluation protocol",
        protocol_text(inputs),
        "## Results",
        results_text(inputs),
        f"![Confusion matrix (rows: true class)]({CONFUSION_FILE})",
        "## How to use",
        usage_text(inputs),
        "## What `trust_remote_code=True` means",
        trust_remote_code_text(inputs),
        "## Training configuration",
        f"Also in [`{TRAINING_CONFIG_FILE}`]({TRAINING_CONFIG_FILE}).\n\n```json\n{config_json}\n```",
        "## Limitations and responsible use",
        LIMITATIONS.format(labels=", ".join(labels), data=data_words, count=len(labels)),
    ]
    data = card_data(inputs)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
