#!/usr/bin/env python
"""Export a saved emotion model to ONNX and check it against PyTorch with onnxruntime.

    python scripts/export_onnx.py MODEL_DIR [--output model.onnx] [--opset N] [--exporter auto]

Without `--output`, a local MODEL_DIR gets `MODEL_DIR/model.onnx`, which `scripts/predict.py`
then runs with onnxruntime (`--backend auto`, the default; see its "Backend" section).

The ONNX graph takes what the model's feature extractor returns (`return_tensors="np"`):
`input_values` (float32, batch x samples), `attention_mask` (int32, batch x samples) and, for the
F0 families, `pitch_ids` (int64, batch x frames); batch, samples and frames are dynamic axes. It
returns `logits` (batch x num_labels) and, for models with a CTC head, `ctc_logits` (batch x frames
x vocab). The graph's metadata holds `id2label`, `model_type` and `sampling_rate` (JSON), so the
file is usable without the model directory:

    session = onnxruntime.InferenceSession("model.onnx")
    features = extractor(waveforms, sampling_rate=16000, return_tensors="np")
    logits = session.run(["logits"], {i.name: features[i.name] for i in session.get_inputs()})[0]

After the export, the ONNX model runs in onnxruntime on padded batches of synthetic clips of
different lengths (not the export example's); the largest absolute difference from the PyTorch
logits is printed and must stay below `--tolerance` (default 1e-3), else the exit status is 1.

Exportability per family (torch 2.11, onnxruntime 1.32; `--exporter auto` picks the column):

    emotion_ssl            TorchScript exporter (fast, exact); the dynamo exporter works too, slowly
    emotion_ssl_ctc        TorchScript exporter; also exports ctc_logits
    emotion_cnn_transformer  dynamo exporter (the TorchScript exporter freezes
                           nn.MultiheadAttention's reshapes to the example's length)
    emotion_decomposed,    TorchScript exporter: every code encoder and the decoder are BiLSTMs,
    speech_decomposition   which only the TorchScript exporter keeps dynamic in time (torch.export
                           unrolls LSTMs over the example's length, and stops at the pitch_ids range
                           check). Under tracing the log-mel takes torch.stft's real (re, im) output,
                           as that exporter has no complex tensors, and the code downsampling keeps
                           the number of codes symbolic. F0 extraction (pyworld) stays outside the
                           graph: it is the feature extractor's job (`pitch_ids` is an input).
                           Random time-resampling is training-only and not part of the eval graph.
    emotion_segment_crnn   not exportable: the number of segments is read from the data
                           (`int(counts.max())`) and valid segments are picked by boolean masks
                           (data-dependent shapes); the BiLSTM runs on packed sequences. torch.export
                           (dynamo) refuses data-dependent shapes and unrolls LSTMs over the
                           example's length; the TorchScript exporter, which keeps LSTMs dynamic,
                           would freeze the segment count to the example's.

A refused family exits with status 2 and the reason; `--force` tries anyway (for a model whose
code has been changed to avoid those constructs), and the parity check decides.

Exit status: 0 exported and within tolerance; 1 export failed or parity check failed; 2 the
family cannot be exported (or the model cannot be loaded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("export_onnx")


@dataclass(frozen=True)
class ExportPlan:
    """How a family is exported: `exporter` ("legacy" = TorchScript, "dynamo" = torch.export), or
    the `reason` it cannot be (with the exporter to try under `--force`)."""

    exporter: str
    reason: str | None = None


EXPORT_PLANS = {
    "emotion_ssl": ExportPlan("legacy"),
    "emotion_ssl_ctc": ExportPlan("legacy"),
    "emotion_cnn_transformer": ExportPlan("dynamo"),
    "emotion_segment_crnn": ExportPlan(
        "legacy",
        "the number of segments is read from the data (int(counts.max())) and valid segments are "
        "selected with boolean masks (data-dependent shapes, which torch.export refuses); its BiLSTM "
        "runs on packed sequences, which only the TorchScript exporter keeps dynamic, but that exporter "
        "would freeze the segment count to the example's.",
    ),
    "emotion_decomposed": ExportPlan("legacy"),
    "speech_decomposition": ExportPlan("legacy"),
}
DEFAULT_OPSET = {"legacy": 17, "dynamo": 18}
DEFAULT_TOLERANCE = 1e-3  # largest allowed |onnxruntime - PyTorch| output difference
EXPORT_SECONDS = (1.3, 0.8)  # the traced example: two clips, one padded
PARITY_SECONDS = ((2.1, 0.45, 1.0), (0.7,), (3.2, 1.6))  # other lengths and batch sizes


class NotExportableError(RuntimeError):
    """The family cannot be exported, or the model cannot be loaded (exit status 2)."""


def synthetic_clip(seconds: float, seed: int, sampling_rate: int) -> np.ndarray:
    """A voiced, pitch-varying harmonic signal with noise (F0 extraction finds voiced frames)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    return (0.3 * signal * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@contextlib.contextmanager
def captured_output(log_path: Path):
    """Send the exporters' console output (progress, graph dumps on failure; partly written by C++
    straight to file descriptors 1 and 2) to `log_path`, kept only if the export fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with log_path.open("w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    except BaseException:
        logger.error("the exporter's output is in %s", log_path)
        raise
    finally:
        for fd in saved:
            os.close(fd)
    log_path.unlink()


class ExportWrapper(torch.nn.Module):
    """Positional inputs and a tuple of tensors out, as the exporters want."""

    def __init__(self, model: torch.nn.Module, output_names: list[str]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_values, attention_mask, pitch_ids=None):
        inputs = {"input_values": input_values, "attention_mask": attention_mask}
        if pitch_ids is not None:
            inputs["pitch_ids"] = pitch_ids
        outputs = self.model(**inputs)
        return tuple(getattr(outputs, name) for name in self.output_names)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def load(model_dir: str):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model = AutoModelForAudioClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    return model, extractor


def featurize(extractor: Any, seconds: tuple[float, ...], seed: int = 0) -> dict[str, np.ndarray]:
    sr = extractor.sampling_rate
    clips = [synthetic_clip(s, seed + i, sr) for i, s in enumerate(seconds)]
    return dict(extractor(clips, sampling_rate=sr, return_tensors="np"))


def output_names_for(model: torch.nn.Module, example: dict[str, torch.Tensor]) -> list[str]:
    with torch.no_grad():
        outputs = model(**example)
    names = ["logits"]
    if getattr(outputs, "ctc_logits", None) is not None:
        names.append("ctc_logits")
    return names


def export(
    model: torch.nn.Module, extractor: Any, output: Path, exporter: str, opset: int | None
) -> tuple[list[str], list[str]]:
    """Write the ONNX file; returns its input and output names."""
    features = featurize(extractor, EXPORT_SECONDS)
    input_names = [n for n in ("input_values", "attention_mask", "pitch_ids") if n in features]
    example = {n: torch.from_numpy(features[n]) for n in input_names}
    output_names = output_names_for(model, example)
    wrapper = ExportWrapper(model, output_names).eval()
    opset = opset or DEFAULT_OPSET[exporter]
    axes = {
        "input_values": {0: "batch", 1: "samples"},
        "attention_mask": {0: "batch", 1: "samples"},
        "pitch_ids": {0: "batch", 1: "frames"},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with captured_output(output.with_name(output.name + ".log")), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side checks on valid inputs
        if exporter == "legacy":
            output_axes = {"logits": {0: "batch"}, "ctc_logits": {0: "batch", 1: "ctc_frames"}}
            torch.onnx.export(
                wrapper,
                tuple(example.values()),
                str(output),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes={n: axes.get(n) or output_axes[n] for n in input_names + output_names},
                opset_version=opset,
                dynamo=False,
            )
        else:
            program = torch.onnx.export(
                wrapper,
                (),
                kwargs=example,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes={n: axes[n] for n in input_names},
                opset_version=opset,
                dynamo=True,
            )
            program.save(str(output), external_data=False)
    add_metadata(output, model, extractor, exporter, opset)
    return input_names, output_names


def add_metadata(path: Path, model: torch.nn.Module, extractor: Any, exporter: str, opset: int) -> None:
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    metadata = {
        "id2label": json.dumps({int(k): v for k, v in model.config.id2label.items()}),
        "model_type": model.config.model_type,
        "sampling_rate": str(extractor.sampling_rate),
        "exporter": f"torch {torch.__version__} {exporter}, opset {opset}",
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


# ----------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------


def parity(model: torch.nn.Module, extractor: Any, path: Path) -> dict[str, Any]:
    """Largest absolute difference between onnxruntime and PyTorch outputs over padded batches of
    clips of other lengths (and batch sizes) than the export example."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    differences: dict[str, float] = {}
    for index, seconds in enumerate(PARITY_SECONDS):
        features = featurize(extractor, seconds, seed=10 * (index + 1))
        with torch.no_grad():
            reference = model(**{k: torch.from_numpy(v) for k, v in features.items()})
        results = session.run(output_names, {name: features[name] for name in graph_inputs})
        for name, value in zip(output_names, results):
            expected = getattr(reference, name).float().numpy()
            if value.shape != expected.shape:
                raise AssertionError(f"{name}: onnxruntime shape {value.shape} != PyTorch {expected.shape}")
            differences[name] = max(differences.get(name, 0.0), float(np.abs(value - expected).max()))
    return {"max_abs_diff": differences, "inputs": graph_inputs, "outputs": output_names}


def export_plan(model_type: str) -> ExportPlan:
    """The family's plan; a family not listed is tried with the dynamo exporter."""
    return EXPORT_PLANS.get(model_type, ExportPlan("dynamo"))


def export_checked(
    model: torch.nn.Module,
    extractor: Any,
    output: Path,
    exporter: str = "auto",
    opset: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    force: bool = False,
    name: str = "the model",
) -> dict[str, Any]:
    """Export with the family's exporter (`exporter` "auto"), then check onnxruntime against
    PyTorch (`parity`); returns the report. `name` is what the log calls the model.

    Raises:
        NotExportableError: the family is listed as not exportable (and not `force`).
        AssertionError: the largest difference is not below `tolerance` (the file stays written).
        Exception: whatever the exporter raises.
    """
    started = time.time()
    model_type = model.config.model_type
    plan = export_plan(model_type)
    if plan.reason is not None and not force:
        raise NotExportableError(f"{model_type} models cannot be exported to ONNX: {plan.reason}")
    exporter = plan.exporter if exporter == "auto" else exporter
    logger.info("exporting %s (%s) with the %s exporter ...", name, model_type, exporter)
    export(model, extractor, output, exporter, opset)
    report = parity(model, extractor, output)
    worst = max(report["max_abs_diff"].values())
    report.update(
        {
            "output": str(output),
            "model_type": model_type,
            "exporter": exporter,
            "opset": opset or DEFAULT_OPSET[exporter],
            "tolerance": tolerance,
            "size_mb": round(output.stat().st_size / 2**20, 2),
            "wall_time_s": round(time.time() - started, 1),
        }
    )
    logger.info(
        "onnxruntime vs PyTorch on padded batches %s: max |difference| %s (tolerance %g)",
        list(PARITY_SECONDS),
        ", ".join(f"{k} {v:.2e}" for k, v in report["max_abs_diff"].items()),
        tolerance,
    )
    if worst >= tolerance:
        raise AssertionError(f"parity check failed: max |difference| {worst:.3e} >= {tolerance:g}")
    return report


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Exportability per family") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", help="Saved model directory (or Hub id).")
    parser.add_argument(
        "--output",
        default=None,
        help="ONNX file to write (default: model.onnx in MODEL_DIR, where predict.py finds it; required "
        "for a Hub id).",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default 17 TorchScript, 18 dynamo)."
    )
    parser.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "legacy"],
        default="auto",
        help="'dynamo' (torch.export), 'legacy' (TorchScript) or 'auto' (the family's, see below).",
    )
    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE, help="Largest allowed |logit difference|."
    )
    parser.add_argument("--force", action="store_true", help="Try families listed as not exportable.")
    args = parser.parse_args(argv)
    if args.output is None:
        if not Path(args.model_dir).is_dir():
            parser.error(f"--output is required: {args.model_dir!r} is not a local directory.")
        args.output = str(Path(args.model_dir) / "model.onnx")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Export and check; returns a report. Raises `NotExportableError`, or `AssertionError` on a parity
    failure."""
    args = parse_arguments(argv)
    started = time.time()
    try:
        model, extractor = load(args.model_dir)
    except Exception as error:
        raise NotExportableError(f"cannot load model {args.model_dir!r}: {error}") from error
    report = export_checked(
        model,
        extractor,
        Path(args.output),
        exporter=args.exporter,
        opset=args.opset,
        tolerance=args.tolerance,
        force=args.force,
        name=args.model_dir,
    )
    report["wall_time_s"] = round(time.time() - started, 1)  # loading included, as before
    logger.info(
        "wrote %s (%.1f MB, inputs %s, outputs %s)",
        report["output"],
        report["size_mb"],
        report["inputs"],
        report["outputs"],
    )
    return report


def first_line(error: BaseException) -> str:
    """An exception's first line without the TorchScript exporter's graph dump, plus, for
    torch.export failures, the model code line that raised (torch.export's own summary)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error).strip()) or type(error).__name__
    line = text.splitlines()[0].split(" [Caused by")[0][:500]
    marker = "The following call raised this error:"
    if marker in text:
        summary = [part.strip() for part in text.split("## Exception summary")[-1].strip().splitlines()]
        where = [part.strip() for part in text.split(marker)[-1].strip().splitlines()[:2]]
        line += f" {summary[0][:300]} at {' : '.join(where)}"
    return line


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    try:
        main(argv)
    except NotExportableError as error:
        logger.error("%s", error)
        return 2
    except AssertionError as error:
        logger.error("%s", error)
        return 1
    except Exception as error:  # an exporter failure: report its first line, not pages of graph dump
        logger.error("export failed: %s: %s", type(error).__name__, first_line(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
