"""Which backend runs a model for `predict.py`: its ONNX export in onnxruntime, when one is found
and agrees with the PyTorch model, else PyTorch (see predict.py's docstring, "Backend").

`load_onnx` returns the onnxruntime runner or the reason it is not used. A probe batch compares
the export with the loaded PyTorch model at load time, so an export of other weights (a stale
`model.onnx` left after retraining) is refused instead of silently giving other predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ser_inference import OnnxRunner

if TYPE_CHECKING:
    import argparse

ONNX_FILE = "model.onnx"  # what export_onnx.py writes into a model directory by default
ONNX_TOLERANCE = 1e-3  # largest |logit difference| from PyTorch on the load-time probe


def find_onnx_file(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The ONNX file to use (`--onnx`, else `model.onnx` in the model directory or Hub repo), or
    None and why not."""
    if getattr(args, "onnx", None):
        path = Path(args.onnx)
        return (path, "") if path.is_file() else (None, f"--onnx {args.onnx}: no such file")
    if Path(args.model).is_dir():
        path = Path(args.model) / ONNX_FILE
        if path.is_file():
            return path, ""
        return None, (
            f"no {ONNX_FILE} in {args.model} (write it with: python scripts/export_onnx.py {args.model})"
        )
    try:  # a Hub id: the repo may hold the export too
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(args.model, ONNX_FILE)), ""
    except Exception as error:
        return None, f"no {ONNX_FILE} in the Hub repo {args.model} ({type(error).__name__})"


def onnx_probe_difference(onnx: OnnxRunner, model: torch.nn.Module, extractor: Any) -> float:
    """Largest |logit difference| between onnxruntime and PyTorch on a padded batch of two
    synthetic clips (lengths the exporter's example does not have)."""
    from export_onnx import synthetic_clip

    sr = extractor.sampling_rate
    clips = [synthetic_clip(1.17, 3, sr), synthetic_clip(0.61, 4, sr)]
    features = extractor(clips, sampling_rate=sr, return_tensors="np")
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in features.items()}).logits
    got = onnx(features)["logits"]
    if got.shape != tuple(expected.shape):
        return float("inf")
    return float(np.abs(got - expected.float().numpy()).max())


def load_onnx(
    args: argparse.Namespace, model: torch.nn.Module, extractor: Any, device: torch.device
) -> tuple[OnnxRunner | None, str]:
    """The onnxruntime session for `--backend auto/onnxruntime`, with what was loaded; or None and
    the reason PyTorch is used instead."""
    if device.type != "cpu":
        return None, f"the device is {device} (this backend runs on the CPU; --device cpu selects it)"
    if args.dtype != "float32":
        return None, f"--dtype {args.dtype} (the ONNX export is float32)"
    path, reason = find_onnx_file(args)
    if path is None:
        return None, reason
    try:
        onnx = OnnxRunner(path, threads=torch.get_num_threads())
    except ImportError:
        return None, "onnxruntime is not installed (pip install onnxruntime)"
    except Exception as error:
        return None, f"onnxruntime cannot load {path}: {type(error).__name__}: {str(error)[:300]}"
    try:
        difference = onnx_probe_difference(onnx, model, extractor)
    except Exception as error:
        return None, f"{path} failed on the probe batch: {type(error).__name__}: {str(error)[:300]}"
    if not difference < ONNX_TOLERANCE:
        return None, (
            f"{path} does not match the model: max |logit difference| {difference:.2e} >= "
            f"{ONNX_TOLERANCE:g} on a probe batch (exported from other weights? re-export it)"
        )
    return onnx, f"{path}, probe max |logit difference| {difference:.1e}"
