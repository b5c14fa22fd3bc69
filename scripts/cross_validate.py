#!/usr/bin/env python
"""Train and evaluate every fold of a recipe's protocol, then pool the results.

    python scripts/cross_validate.py configs/<recipe>.json [train.py overrides ...]
    accelerate launch scripts/cross_validate.py configs/<recipe>.json --output_dir runs/x

Each fold trains in `output_dir/fold_<k>` with `train.py`; a fold whose `results.json` exists is
skipped, and an interrupted fold resumes from its last checkpoint, so re-running the command
continues where it stopped. Writes to `output_dir`: `cv_results.json` (`pooled`: WA/UA/macro-F1
over all test utterances; `folds`: one entry per fold with its test speakers and metrics;
`mean`/`std` over folds), `cv_results.md` (Markdown table) and `confusion_pooled.png`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train
from ser_metrics import (
    classification_metrics,
    format_table,
    save_confusion_png,
    write_json_atomic,
    write_text_atomic,
)

logger = logging.getLogger("cross_validate")
METRICS = ("wa", "ua", "macro_f1", "wer", "cer")


def _option(argv: list[str], name: str) -> str | None:
    """Value of `--name` in an argument list (last one wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _fold_argv(argv: list[str], fold: int, fold_dir: Path) -> list[str]:
    stripped, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--fold", "--output_dir") and i + 1 < len(argv):
            skip = True
            continue
        if arg.startswith(("--fold=", "--output_dir=")):
            continue
        stripped.append(arg)
    return [*stripped, "--fold", str(fold), "--output_dir", str(fold_dir)]


def _finished_fold(path: Path) -> dict[str, Any] | None:
    """A fold's results, or None when it has not finished. train.py writes results.json
    atomically; an unreadable one (copied or edited by hand) is reported and the fold is rerun,
    resuming from its last checkpoint."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("%s is unreadable (%s); running the fold again", path, error)
        return None


def pool_results(output_dir: Path, fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled metrics over all test utterances, per-fold rows and mean ± std across folds."""
    labels = fold_results[0]["labels"]
    y_true, y_pred = [], []
    for result in fold_results:
        fold_dir = Path(result["_dir"])
        for line in (fold_dir / "predictions_test.jsonl").read_text().splitlines():
            row = json.loads(line)
            y_true.append(labels.index(row["label"]))
            y_pred.append(labels.index(row["prediction"]))
    pooled = classification_metrics(y_true, y_pred, labels)
    folds = []
    for result in fold_results:
        protocol = result["protocol"]
        entry = {
            "fold": protocol.get("fold", 0),
            "test_speakers": protocol.get("test", []),
            "validation_speakers": protocol.get("validation", []),
            "num_test": result["num_examples"],
        }
        entry.update({k: result[k] for k in METRICS if result.get(k) is not None})
        entry["validation_ua"] = result["validation"]["ua"]
        folds.append(entry)
    mean = {k: float(np.mean([f[k] for f in folds])) for k in METRICS if all(k in f for f in folds)}
    std = {k: float(np.std([f[k] for f in folds])) for k in mean}
    first = fold_results[0]
    return {
        "pooled": pooled,
        "folds": folds,
        "mean": mean,
        "std": std,
        "protocol": first["protocol"].get("protocol"),
        "speaker_independent": all(r.get("speaker_independent") for r in fold_results),
        "transductive": any(r.get("transductive") for r in fold_results),
        "model_type": first.get("model_type"),
        "labels": labels,
    }


def write_report(output_dir: Path, summary: dict[str, Any]) -> None:
    independence = "speaker-independent" if summary["speaker_independent"] else "SPEAKER-DEPENDENT"
    if summary["transductive"]:
        independence += ", transductive (test speakers' unlabelled audio used for normalisation)"
    rows = [{**f, "test_speakers": ",".join(map(str, f["test_speakers"]))} for f in summary["folds"]]
    pooled_row = {"fold": "pooled", **{k: summary["pooled"][k] for k in ("wa", "ua", "macro_f1")}}
    mean_row = {
        "fold": "mean ± std",
        **{k: f"{100 * summary['mean'][k]:.1f} ± {100 * summary['std'][k]:.1f}" for k in summary["mean"]},
    }
    columns = ["fold", "test_speakers", "num_test", "wa", "ua", "macro_f1"]
    columns += [k for k in ("wer", "cer") if k in summary["mean"]]
    text = [
        f"# Cross-validation: {summary['model_type']}, protocol {summary['protocol']} ({independence})",
        "",
        f"Metrics in %. Pooled over all {summary['pooled']['num_examples']} test utterances; "
        f"wall time {summary.get('wall_time_s', 0) / 60:.1f} min.",
        "",
        format_table([*rows, pooled_row, mean_row], columns),
        "",
    ]
    write_text_atomic(output_dir / "cv_results.md", "\n".join(text))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    output_dir = _option(argv, "output_dir")
    if output_dir is None and argv and argv[0].endswith(".json"):
        output_dir = json.loads(Path(argv[0]).read_text()).get("output_dir")
    if output_dir is None:
        raise ValueError("output_dir is required (in the recipe or as --output_dir).")
    output_dir = Path(output_dir)
    only = _option(argv, "folds")  # ours, not train.py's: strip it before train.py parses argv
    argv = [a for i, a in enumerate(argv) if a != "--folds" and (i == 0 or argv[i - 1] != "--folds")]
    argv = [a for a in argv if not a.startswith("--folds=")]
    total, protocol = train.count_folds(argv)
    folds = [int(f) for f in only.split(",")] if only else list(range(total))
    logger.info("%s: %d folds -> %s", protocol, total, output_dir)
    results = []
    for fold in folds:
        fold_dir = output_dir / f"fold_{fold}"
        result = _finished_fold(fold_dir / "results.json")
        if result is not None:
            logger.info("fold %d already finished, skipping", fold)
        else:
            logger.info("fold %d/%d", fold + 1, total)
            result = train.main(_fold_argv(argv, fold, fold_dir))
        if result:  # empty on non-main processes under DDP
            result["_dir"] = str(fold_dir)
            results.append(result)
    if not results:
        return {}
    summary = pool_results(output_dir, results)
    summary["wall_time_s"] = round(time.time() - started, 1)
    summary["folds_run"] = folds
    write_json_atomic(output_dir / "cv_results.json", summary)
    save_confusion_png(
        summary["pooled"]["confusion_matrix"],
        summary["labels"],
        output_dir / "confusion_pooled.png",
        f"{summary['model_type']} pooled over {len(results)} folds",
    )
    write_report(output_dir, summary)
    logger.info("\n%s", (output_dir / "cv_results.md").read_text())
    return summary


if __name__ == "__main__":
    main()
