"""Trainer plumbing: optimizer parameter groups, evaluation metrics and component-loss logging."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from transformers import EvalPrediction, TrainerCallback


def backbone_param_groups(
    model: torch.nn.Module, learning_rate: float, backbone_multiplier: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups: backbone parameters at `learning_rate * backbone_multiplier`, the rest at
    `learning_rate`; no weight decay on biases and normalisation weights. Frozen parameters are
    left out."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = defaultdict(list)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_backbone = name.startswith("backbone.")
        no_decay = param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        groups[(in_backbone, no_decay)].append(param)
    out = []
    for (in_backbone, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": learning_rate * (backbone_multiplier if in_backbone else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        )
    return out


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """WA, UA and macro-F1 of the emotion logits (Trainer evaluation; model selection uses UA)."""
    logits = (
        prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    )
    labels = prediction.label_ids[0] if isinstance(prediction.label_ids, tuple) else prediction.label_ids
    predicted = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    keep = labels != -100
    labels, predicted = labels[keep], predicted[keep]
    return {
        "wa": float(accuracy_score(labels, predicted)),
        "ua": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


class ComponentLossCallback(TrainerCallback):
    """Adds the running mean of every `*_loss` output of the model (emotion, CTC, reconstruction,
    speaker, ...) to the training logs. A forward hook records them; Trainer has no other way to
    see them."""

    def __init__(self, model: torch.nn.Module):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        model.register_forward_hook(self._record)

    def _record(self, module, inputs, outputs) -> None:
        if not module.training or not hasattr(outputs, "items"):
            return
        for key, value in outputs.items():
            if key.endswith("_loss") and isinstance(value, torch.Tensor) and value.numel() == 1:
                self.sums[key] += float(value.detach())
                self.counts[key] += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        means = {
            f"train_{k}": round(total / self.counts[k], 4) for k, total in self.sums.items() if self.counts[k]
        }
        logs.update(means)  # seen by the console, TensorBoard and other reporters after this callback
        if state.log_history and state.log_history[-1].get("loss") == logs["loss"]:
            state.log_history[-1].update(means)  # kept in trainer_state.json
        self.sums.clear()
        self.counts.clear()
