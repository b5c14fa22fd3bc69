"""Ensembles of the checkpoints of one training run, and speaker-adaptive BatchNorm statistics.

Checkpoint ensembles (`--ensemble_checkpoints k`): after training, the emotion probabilities of `k`
saved checkpoints are averaged for the validation and test predictions. Which checkpoints:
- `best`: the `k` with the best validation metric (`metric_for_best_model`, UA by default);
- `last`: the `k` most recent;
- `spaced`: `k` checkpoints evenly spaced through training, the last one included. With
  `lr_scheduler_type=cosine_with_restarts`, `lr_scheduler_kwargs={"num_cycles": k}` and no warm-up,
  these are the ends of the learning-rate cycles: a snapshot ensemble (Huang et al., 2017) that
  costs one training run.
Selection uses validation metrics and training progress only, never test metrics.

Speaker-adaptive BatchNorm (`--transductive_speaker_normalization` for models without F0 input):
before a speaker's clips are predicted, every BatchNorm layer's statistics are re-estimated on
that speaker's (unlabelled) clips, as AdaBN (Li et al., 2017) with one domain per speaker. It uses
test speakers' audio, so results made with it are marked transductive.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ser_inference import model_accepts, plan_batches
from transformers.modeling_outputs import SequenceClassifierOutput

SELECTIONS = ("best", "last", "spaced")
CHECKPOINT_PREFIX = "checkpoint-"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """`(step, path)` of every `checkpoint-<step>` directory, oldest first."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def validation_scores(log_history: Sequence[dict[str, Any]], metric: str) -> dict[int, float]:
    """Step -> validation `metric` from a trainer's log history (`eval_<metric>` entries)."""
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    return {int(entry["step"]): float(entry[key]) for entry in log_history if key in entry}


def select_checkpoints(
    steps: Sequence[int],
    count: int,
    selection: str,
    scores: dict[int, float] | None = None,
    greater_is_better: bool = True,
) -> list[int]:
    """The steps of the `count` checkpoints that `selection` picks (see the module docstring),
    in training order. Ties in the validation score go to the later checkpoint."""
    if selection not in SELECTIONS:
        raise ValueError(f"ensemble selection must be one of {SELECTIONS}, got {selection!r}.")
    steps = sorted(steps)
    if count < 1 or not steps:
        raise ValueError("an ensemble needs at least one checkpoint.")
    count = min(count, len(steps))
    if selection == "last":
        chosen = steps[-count:]
    elif selection == "spaced":
        # The checkpoint at or before each of count evenly spaced points of training.
        last = steps[-1]
        chosen = []
        for i in range(1, count + 1):
            target = last * i / count
            candidates = [s for s in steps if s <= target + 1e-9 and s not in chosen]
            chosen.append(candidates[-1] if candidates else next(s for s in steps if s not in chosen))
    else:
        scores = scores or {}
        missing = [s for s in steps if s not in scores]
        if missing:
            raise ValueError(f"no validation score for checkpoint steps {missing}; evaluate at every save.")
        sign = 1.0 if greater_is_better else -1.0
        chosen = sorted(steps, key=lambda s: (sign * scores[s], s), reverse=True)[:count]
    return sorted(chosen)


class ProbabilityAverage(torch.nn.Module):
    """Several models of one family as one: the output's `logits` are the log of the members'
    mean emotion probabilities (so a softmax of them gives the averaged probabilities). Its
    `forward` takes the same inputs as the members'."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("ProbabilityAverage needs at least one member.")
        self.members = torch.nn.ModuleList(members)
        self.config = members[0].config
        # predict_waveforms passes only the inputs the model's forward names: expose the members'.
        # A method bound to this instance, so that copy.deepcopy rebinds it to the copy.
        signature = inspect.signature(members[0].forward)

        def forward(module: ProbabilityAverage, **inputs: Any) -> SequenceClassifierOutput:
            return module._average(**inputs)

        own = inspect.Parameter("module", inspect.Parameter.POSITIONAL_ONLY)
        forward.__signature__ = signature.replace(parameters=[own, *signature.parameters.values()])
        self.forward = types.MethodType(forward, self)

    def _average(self, **inputs: Any) -> SequenceClassifierOutput:
        probabilities = torch.stack([member(**inputs).logits.float().softmax(-1) for member in self.members])
        return SequenceClassifierOutput(logits=probabilities.mean(0).clamp(min=1e-12).log())


def load_members(model_class: type, paths: Sequence[str | Path]) -> list[torch.nn.Module]:
    return [model_class.from_pretrained(str(path)).eval() for path in paths]


def prune_checkpoints(output_dir: str | Path, keep: Sequence[str | Path]) -> list[str]:
    """Delete the checkpoint directories of `output_dir` not in `keep`; returns the deleted names."""
    keep_names = {Path(p).name for p in keep}
    deleted = []
    for _, path in list_checkpoints(output_dir):
        if path.name not in keep_names:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path.name)
    return deleted


def build_checkpoint_ensemble(
    model_class: type,
    output_dir: str | Path,
    count: int,
    selection: str,
    metric: str = "ua",
    greater_is_better: bool = True,
    log_history: Sequence[dict[str, Any]] | None = None,
) -> tuple[ProbabilityAverage, list[dict[str, Any]]]:
    """Load the selected checkpoints of a finished run as one averaged model.

    `log_history` defaults to the newest checkpoint's `trainer_state.json`. Returns the model and
    a description of each member (checkpoint name, step, validation score).
    """
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoints in {output_dir} to ensemble")
    if log_history is None:
        state = json.loads((checkpoints[-1][1] / "trainer_state.json").read_text())
        log_history = state.get("log_history", [])
    scores = validation_scores(log_history, metric)
    steps = select_checkpoints([s for s, _ in checkpoints], count, selection, scores, greater_is_better)
    paths = dict(checkpoints)
    members = load_members(model_class, [paths[s] for s in steps])
    described = [
        {"checkpoint": paths[s].name, "step": s, f"validation_{metric}": scores.get(s)} for s in steps
    ]
    return ProbabilityAverage(members), described


# ----------------------------------------------------------------------------------------------
# Speaker-adaptive BatchNorm (transductive)
# ----------------------------------------------------------------------------------------------


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def adapt_batchnorm(
    model: torch.nn.Module,
    feature_extractor: Any,
    waveforms: Sequence[np.ndarray],
    max_batch_size: int = 16,
    max_batch_seconds: float = 160.0,
) -> torch.nn.Module:
    """A copy of `model` whose BatchNorm running statistics are re-estimated on `waveforms` (one
    speaker's clips): cumulative averages over batches of similar length, every other layer in
    eval mode (no dropout, no SpecAugment, no mixup). Statistics of masked BatchNorm layers count
    valid frames only, as in training."""
    adapted = copy.deepcopy(model).eval()
    norms = [m for m in adapted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return adapted
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
        norm.train()
    sampling_rate = feature_extractor.sampling_rate
    lengths = [len(w) for w in waveforms]
    for batch in plan_batches(lengths, max_batch_size, int(max_batch_seconds * sampling_rate)):
        features = feature_extractor(
            [waveforms[i] for i in batch], sampling_rate=sampling_rate, return_tensors="pt"
        )
        adapted(**{k: v for k, v in features.items() if model_accepts(adapted, k)})
    return adapted.eval()


def predict_by_speaker(
    model: torch.nn.Module,
    feature_extractor: Any,
    waveforms: Sequence[np.ndarray],
    speakers: Sequence[Any],
    predict: Any,
    max_batch_size: int = 16,
    **kwargs: Any,
) -> list[Any]:
    """`predict(model, feature_extractor, waveforms, max_batch_size=..., **kwargs)` run speaker by
    speaker with `adapt_batchnorm` on that speaker's clips first; per-clip list arguments in
    `kwargs` (genders, F0 tracks, ...) are split the same way. Results come back in input order."""
    results: list[Any] = [None] * len(waveforms)
    groups: dict[str, list[int]] = {}
    for index, speaker in enumerate(speakers):
        groups.setdefault(str(speaker), []).append(index)
    for indices in groups.values():
        clips = [waveforms[i] for i in indices]
        adapted = adapt_batchnorm(model, feature_extractor, clips, max_batch_size=max_batch_size)
        subset = {
            k: ([v[i] for i in indices] if isinstance(v, (list, tuple)) else v) for k, v in kwargs.items()
        }
        for index, result in zip(
            indices, predict(adapted, feature_extractor, clips, max_batch_size=max_batch_size, **subset)
        ):
            results[index] = result
    return results
