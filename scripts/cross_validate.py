#!/usr/bin/env python
"""Train and evaluate every fold of a recipe's protocol, then pool the results.

    python scripts/cross_validate.py configs/<recipe>.json [train.py overrides ...]
    accelerate launch scripts/cross_validate.py configs/<recipe>.json --output_dir runs/x

Each fold trains in `output_dir/fold_<k>` with `train.py`; a fold whose `results.json` exists is
skipped, and an interrupted fold resumes from its last checkpoint, so re-running the command
continues where it stopped. Writes to `output_dir`: `cv_results.json` (`pooled`: WA/UA/macro-F1
over all test utterances; `folds`: one entry per fold with its test speakers and metrics;
`mean`/`std` over folds), `cv_results.md` (Markdown table) and `confusion_pooled.png`.

Options of this script (not train.py's), on the command line or in the recipe's
`"cross_validation"` block (the command line wins):
- `--folds 0,3,7`: run only these folds (pooled over them).
- `--parallel_folds N`: train N folds at a time, each in its own `train.py` process with
  `--threads_per_fold` intra-op threads (default: the CPU count divided by N, at least 1); each
  process logs to `fold_<k>/train.log`. On a 2-core CPU, `--parallel_folds 2` runs two folds with
  one thread each, faster than one fold with two threads for small models.
- `--seeds 0,1` (recipe: `"seeds": [0, 1]`): a seed ensemble. Each fold trains once per seed in
  `fold_<k>/seed_<s>` and the fold's predictions average the seeds' emotion probabilities
  (validation and test); nothing is selected on test data.
- `"members": [{"seed": 0}, {"name": "deltas", "seed": 0, "model_config": {"delta_order": 2}}]`
  (recipe only; instead of `seeds`): an ensemble of variants. Each member trains once per fold in
  `fold_<k>/<name>` with its seed and its `model_config` fields over the recipe's (a member
  without `model_config` is named `seed_<s>` by default), and the fold averages the members'
  probabilities like a seed ensemble. Members that differ in what they read (an input, a model
  size) tend to make less correlated errors than seeds of one model, which is what averaging needs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    write_jsonl_atomic,
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


def _strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """`argv` without `--name value` and `--name=value` for each of `names` (argv[0] may be a recipe)."""
    stripped, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if i > 0 or not arg.endswith(".json"):
            if arg in {f"--{n}" for n in names} and i + 1 < len(argv):
                skip = True
                continue
            if arg.startswith(tuple(f"--{n}=" for n in names)):
                continue
        stripped.append(arg)
    return stripped


def _fold_argv(
    argv: list[str], fold: int, fold_dir: Path, seed: int | None = None, model_config: dict | None = None
) -> list[str]:
    names = ("fold", "output_dir") if seed is None else ("fold", "output_dir", "seed")
    extra = [] if seed is None else ["--seed", str(seed)]
    if model_config:
        # On top of any --model_config of the command line (train.py merges it into the recipe's).
        given = _option(argv, "model_config")
        extra += ["--model_config", json.dumps({**(json.loads(given) if given else {}), **model_config})]
        names += ("model_config",)
    return [*_strip_options(argv, names), "--fold", str(fold), "--output_dir", str(fold_dir), *extra]


CV_OPTIONS = ("folds", "parallel_folds", "threads_per_fold", "seeds", "members")
MEMBER_KEYS = ("name", "seed", "model_config")


def ensemble_members(seeds: list[int] | None, members: Any) -> list[dict[str, Any]] | None:
    """The runs each fold averages, `[{"name", "seed", "model_config"}]`, from `seeds` or the
    recipe's `members` list; None for a single run per fold."""
    if members in (None, []):
        return [{"name": f"seed_{s}", "seed": s, "model_config": {}} for s in seeds] if seeds else None
    if seeds:
        raise ValueError("cross_validation: give either seeds or members, not both")
    if not isinstance(members, list):
        raise ValueError(f"cross_validation members must be a list of objects, got {members!r}")
    specs = []
    for i, member in enumerate(members):
        if not isinstance(member, dict) or set(member) - set(MEMBER_KEYS):
            raise ValueError(f"cross_validation members[{i}] must be an object with keys among {MEMBER_KEYS}")
        overrides = member.get("model_config") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"cross_validation members[{i}].model_config must be an object")
        seed = int(member.get("seed", 0))
        name = str(member.get("name") or (f"seed_{seed}" if not overrides else f"member_{i}"))
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum() or name.startswith("."):
            raise ValueError(f"cross_validation members[{i}] name {name!r}: use letters, digits, _ - .")
        specs.append({"name": name, "seed": seed, "model_config": overrides})
    names = [m["name"] for m in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"cross_validation member names must be unique, got {names}")
    return specs


def cv_options(argv: list[str]) -> dict[str, Any]:
    """This script's options: the recipe's `"cross_validation"` block, updated by the command line."""
    options: dict[str, Any] = {}
    if argv and argv[0].endswith(".json") and Path(argv[0]).exists():
        block = json.loads(Path(argv[0]).read_text()).get("cross_validation") or {}
        unknown = sorted(set(block) - set(CV_OPTIONS))
        if unknown:
            raise ValueError(f"unknown cross_validation keys {unknown}; expected some of {CV_OPTIONS}")
        options.update(block)
    for name in CV_OPTIONS[:-1]:  # members only in the recipe
        value = _option(argv, name)
        if value is not None:
            options[name] = value

    def int_list(value: Any) -> list[int] | None:
        if value is None or value == "" or value == []:
            return None
        return [int(v) for v in (value.split(",") if isinstance(value, str) else value)]

    parallel = int(options.get("parallel_folds") or 1)
    threads = options.get("threads_per_fold")
    threads = int(threads) if threads else max(1, (os.cpu_count() or 1) // parallel)
    if parallel < 1 or threads < 1:
        raise ValueError("parallel_folds and threads_per_fold must be >= 1")
    seeds = int_list(options.get("seeds"))
    if _option(argv, "seeds") is not None:
        options.pop("members", None)  # --seeds on the command line replaces the recipe's members
    return {
        "folds": int_list(options.get("folds")),
        "parallel_folds": parallel,
        "threads_per_fold": threads,
        "seeds": seeds,
        "members": ensemble_members(seeds, options.get("members")),
    }


def _run_subprocess(argv: list[str], run_dir: Path, threads: int) -> dict[str, Any]:
    """`train.py argv` in a fresh process limited to `threads` intra-op threads; its output goes
    to `run_dir/train.log`. Returns its results.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    command = [sys.executable, str(Path(__file__).resolve().parent / "train.py"), *argv]
    with open(run_dir / "train.log", "a") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"train.py failed (exit {completed.returncode}); see {run_dir / 'train.log'}")
    result = _finished_fold(run_dir / "results.json")
    if result is None:
        raise RuntimeError(f"train.py wrote no results.json in {run_dir}")
    return result


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def average_member_predictions(member_dirs: list[Path], split: str, labels: list[str]):
    """Rows whose probabilities are the mean over the members' `predictions_<split>.jsonl`, and
    their metrics. Members must hold the same utterances."""
    members = [{r["utt_id"]: r for r in _read_jsonl(d / f"predictions_{split}.jsonl")} for d in member_dirs]
    rows = []
    for utt, first in members[0].items():
        if any(utt not in m for m in members[1:]):
            raise ValueError(f"ensemble members disagree on the {split} utterances ({utt})")
        probs = np.mean([[m[utt]["probabilities"][name] for name in labels] for m in members], axis=0)
        rows.append(
            {
                **{k: v for k, v in first.items() if k not in ("prediction", "probabilities")},
                "prediction": labels[int(probs.argmax())],
                "probabilities": {name: round(float(p), 6) for name, p in zip(labels, probs)},
            }
        )
    metrics = classification_metrics(
        [labels.index(r["label"]) for r in rows], [labels.index(r["prediction"]) for r in rows], labels
    )
    return rows, metrics


def combine_members(
    fold_dir: Path, member_results: dict[str, dict[str, Any]], specs: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The fold's results from its ensemble members' runs (`fold_dir/<name>`, e.g. `seed_0`):
    averaged probabilities, written to the fold's `predictions_{validation,test}.jsonl` and
    `results.json`. `specs` (name → seed and model_config) is recorded with each member."""
    names = list(member_results)
    first = member_results[names[0]]
    labels = first["labels"]
    member_dirs = [fold_dir / name for name in names]
    test_rows, test = average_member_predictions(member_dirs, "test", labels)
    write_jsonl_atomic(fold_dir / "predictions_test.jsonl", test_rows)
    runs = member_results.values()
    validation_sets = {tuple(sorted(r["protocol"].get("validation", []))) for r in runs}
    if validation_sets == {()}:  # num_validation_speakers=0: nothing was validated
        validation = {"num_examples": 0}
        write_jsonl_atomic(fold_dir / "predictions_validation.jsonl", [])
    elif len(validation_sets) == 1:
        validation_rows, validation = average_member_predictions(member_dirs, "validation", labels)
        write_jsonl_atomic(fold_dir / "predictions_validation.jsonl", validation_rows)
    else:
        # train.py draws a fold's validation speakers with the training seed, so each seed may
        # hold out other (non-test) speakers: there is no common validation set to ensemble on.
        # The fold reports the mean of its members' validation metrics instead.
        validation = {k: float(np.mean([r["validation"][k] for r in runs])) for k in ("wa", "ua", "macro_f1")}
        validation["mean_of_seed_runs"] = True
    result = {
        **{k: v for k, v in first.items() if k not in ("validation", "train", "ensemble")},
        **test,
        "validation": validation,
        "protocol": {
            **first["protocol"],
            "validation": sorted({v for r in runs for v in r["protocol"].get("validation", [])}),
            "train": sorted(set.intersection(*(set(r["protocol"].get("train", [])) for r in runs))),
        },
        "member_ensemble": {
            "validation_speakers": {
                n: r["protocol"].get("validation", []) for n, r in member_results.items()
            },
            "members": {
                name: {
                    **((specs or {}).get(name) or {}),
                    "test": {k: r[k] for k in ("wa", "ua", "macro_f1")},
                    "validation": {
                        k: r["validation"][k] for k in ("wa", "ua", "macro_f1") if k in r["validation"]
                    },
                }
                for name, r in member_results.items()
            },
        },
    }
    write_json_atomic(fold_dir / "results.json", result)
    return result


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
        if "ua" in result["validation"]:  # absent when num_validation_speakers=0
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


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, float]:
    """WA, UA and macro-F1 of a confusion matrix (rows: true labels, columns: predictions)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support, predicted, correct = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=present)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(correct), where=denominator > 0)
    return {
        "wa": float(correct.sum() / matrix.sum()),
        "ua": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "num_examples": int(matrix.sum()),
    }


def ensemble_components(fold_results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Pooled metrics of the parts of the folds' ensembles, from the files the runs wrote: each
    member alone (`seed_<s>` or the member's name, with its checkpoint ensemble if any) and, where
    a checkpoint ensemble was used, the run's best-validation checkpoint alone
    (`[<member> ]single_checkpoint`).
    Empty when no ensemble was used."""
    labels = fold_results[0]["labels"]
    size = len(labels)
    totals: dict[str, np.ndarray] = {}

    def add(name: str, matrix: Any) -> None:
        totals[name] = totals.get(name, np.zeros((size, size))) + np.asarray(matrix)

    for result in fold_results:
        fold_dir = Path(result["_dir"])
        runs = {"": result}
        if "member_ensemble" in result:
            runs = {
                name: json.loads((fold_dir / name / "results.json").read_text())
                for name in result["member_ensemble"]["members"]
            }
        for name, run in runs.items():
            if name:
                add(name, run["confusion_matrix"])
            single = (run.get("ensemble") or {}).get("single_model", {}).get("test", {})
            if "confusion_matrix" in single:
                add(f"{name} single_checkpoint".strip(), single["confusion_matrix"])
    return {name: metrics_from_confusion(matrix) for name, matrix in sorted(totals.items())}


def write_report(output_dir: Path, summary: dict[str, Any]) -> None:
    independence = "speaker-independent" if summary["speaker_independent"] else "SPEAKER-DEPENDENT"
    if summary["transductive"]:
        independence += ", transductive (test speakers' unlabelled audio used for normalisation)"
    rows = [
        {
            **f,
            "test_speakers": ",".join(map(str, f["test_speakers"])),
            "validation_speakers": ",".join(map(str, f["validation_speakers"])),
        }
        for f in summary["folds"]
    ]
    pooled_row = {"fold": "pooled", **{k: summary["pooled"][k] for k in ("wa", "ua", "macro_f1")}}
    mean_row = {
        "fold": "mean ± std",
        **{k: f"{100 * summary['mean'][k]:.1f} ± {100 * summary['std'][k]:.1f}" for k in summary["mean"]},
    }
    columns = ["fold", "test_speakers", "validation_speakers", "num_test", "wa", "ua", "macro_f1"]
    columns += [k for k in ("wer", "cer") if k in summary["mean"]]
    text = [
        f"# Cross-validation: {summary['model_type']}, protocol {summary['protocol']} ({independence})",
        "",
        f"Metrics in %. Pooled over all {summary['pooled']['num_examples']} test utterances; "
        f"wall time {summary.get('wall_time_s', 0) / 60:.1f} min"
        f" ({summary.get('parallel_folds', 1)} fold(s) at a time"
        + (f", {summary['threads_per_fold']} thread(s) each" if summary.get("threads_per_fold") else "")
        + (f"; seed ensemble {summary['seeds']}" if summary.get("seeds") else "")
        + (
            f"; ensemble of {', '.join(m['name'] for m in summary['members'])}"
            if summary.get("members")
            else ""
        )
        + ").",
        "",
        format_table([*rows, pooled_row, mean_row], columns),
        "",
    ]
    if summary.get("components"):
        component_rows = [{"model": "ensemble (above)", **summary["pooled"]}]
        component_rows += [{"model": name, **m} for name, m in summary["components"].items()]
        text += [
            "Parts of the ensemble, pooled over the same folds:",
            "",
            format_table(component_rows, ["model", "wa", "ua", "macro_f1"]),
            "",
        ]
    write_text_atomic(output_dir / "cv_results.md", "\n".join(text))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    output_dir = _option(argv, "output_dir")
    if output_dir is None and argv and argv[0].endswith(".json"):
        output_dir = json.loads(Path(argv[0]).read_text()).get("output_dir")
    if output_dir is None:
        raise ValueError("output_dir is required (in the recipe or as --output_dir).")
    output_dir = Path(output_dir)
    options = cv_options(argv)  # ours, not train.py's: stripped before train.py parses argv
    argv = _strip_options(argv, CV_OPTIONS)
    parallel, threads, seeds = options["parallel_folds"], options["threads_per_fold"], options["seeds"]
    members = {m["name"]: m for m in options["members"] or []}
    if parallel > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "parallel_folds > 1 runs folds in separate processes; do not combine it with accelerate launch"
        )
    total, protocol = train.count_folds(argv)
    folds = options["folds"] if options["folds"] is not None else list(range(total))
    logger.info(
        "%s: %d folds -> %s (%d at a time, %d thread(s) each%s)",
        protocol,
        total,
        output_dir,
        parallel,
        threads,
        f", members {list(members)}" if members else "",
    )
    finished = {fold: _finished_fold(output_dir / f"fold_{fold}" / "results.json") for fold in folds}
    # Member-major order: every fold's first member finishes before any second member starts.
    jobs = [(f, m) for m in (list(members) or [None]) for f in folds if finished[f] is None]

    def run_job(job: tuple[int, str | None]) -> dict[str, Any]:
        fold, name = job
        run_dir = output_dir / f"fold_{fold}" / (name or "")
        which = "" if name is None else f" {name}"
        result = _finished_fold(run_dir / "results.json")
        if result is not None:
            logger.info("fold %d%s already finished, skipping", fold, which)
            return result
        logger.info("fold %d/%d%s", fold + 1, total, which)
        member = members.get(name) or {}
        fold_argv = _fold_argv(argv, fold, run_dir, member.get("seed"), member.get("model_config"))
        if parallel == 1:
            return train.main(fold_argv)
        result = _run_subprocess(fold_argv, run_dir, threads)
        logger.info("fold %d%s done: UA %.3f", fold, which, result.get("ua", float("nan")))
        return result

    if parallel == 1:
        outcomes = [run_job(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            outcomes = list(pool.map(run_job, jobs))
    by_job = dict(zip(jobs, outcomes))
    results = []
    for fold in folds:
        fold_dir = output_dir / f"fold_{fold}"
        result = finished[fold]
        if result is not None:
            logger.info("fold %d already finished, skipping", fold)
        elif members:
            runs = {name: by_job[(fold, name)] for name in members}
            specs = {
                name: {"seed": m["seed"], "model_config": m["model_config"]} for name, m in members.items()
            }
            result = combine_members(fold_dir, runs, specs) if all(runs.values()) else {}
        else:
            result = by_job[(fold, None)]
        if result:  # empty on non-main processes under DDP
            result["_dir"] = str(fold_dir)
            results.append(result)
    if not results:
        return {}
    summary = pool_results(output_dir, results)
    summary["components"] = ensemble_components(results)
    summary["wall_time_s"] = round(time.time() - started, 1)
    summary["folds_run"] = folds
    if load_at_start is not None:  # 1, 5 and 15-minute load averages: how busy the machine was
        summary["load_average"] = {"start": list(load_at_start), "end": list(os.getloadavg())}
    summary["cpu_count"] = os.cpu_count()
    summary["parallel_folds"] = parallel
    summary["threads_per_fold"] = threads if parallel > 1 else None
    if seeds:
        summary["seeds"] = seeds
    elif members:
        summary["members"] = list(members.values())
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
