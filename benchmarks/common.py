"""Shared helpers of the benchmarks: machine description, alternating timers, tables, results file.

Timings on a shared machine are noisy. Every comparison in these benchmarks runs both sides in
the same process, alternating them step by step, and reports medians, so that background load
slows both sides alike; the load average is recorded next to every figure.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SHARED_EMODB = ROOT.parent / "shared" / "data" / "emodb"
DEMO_CORPUS = ROOT / "data" / "demo"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results.json"
QUICK_RESULTS = ROOT / "benchmarks" / "results_quick.json"


@dataclass
class BenchResult:
    """What one benchmark returns: its headline figures (top-level keys of results.json), the
    details behind them, and the table it printed."""

    name: str
    figures: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    table: str = ""


# ----------------------------------------------------------------------------------------------
# Machine and load
# ----------------------------------------------------------------------------------------------


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    # OpenMP threads spin while they wait; on a machine shared with other jobs this decides timings
    # (see benchmarks/README.md), so the settings are recorded.
    info["env"] = {
        k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if k in os.environ
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_summary(info: dict[str, Any]) -> str:
    text = f"{info.get('cpu', '?')}, {info.get('cpu_count', '?')} cores"
    if info.get("memory_gib"):
        text += f", {info['memory_gib']} GiB RAM"
    if info.get("gpu"):
        text += f", {info['gpu']}"
    return text + f"; torch {info.get('torch')}, transformers {info.get('transformers')}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def alternate(
    functions: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Wall time of each function over `repeats` rounds after `warmup` untimed rounds. Within a
    round every function runs once; the order rotates from round to round so that none is always
    first after a change of background load."""
    names = list(functions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            functions[name]()
            elapsed = time.perf_counter() - started
            if round_index >= warmup:
                times[name].append(elapsed)
        if log is not None:
            label = "warm-up" if round_index < warmup else f"round {round_index - warmup + 1}/{repeats}"
            last = ", ".join(
                f"{name} {times[name][-1]:.3f}s" for name in names if round_index >= warmup and times[name]
            )
            log(f"  {label} {last} (load {load_average()[:1]})")
    return times


def median(values: Iterable[float]) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the round-by-round ratios (each pair ran back to back under similar load)."""
    return median(a / b for a, b in zip(numerator, denominator) if b > 0)


# ----------------------------------------------------------------------------------------------
# Tables and results
# ----------------------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "–"
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def read_results(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def record_result(path: Path, result: BenchResult, machine: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Merge one benchmark's figures into the results file (written atomically) and return it.

    Top-level keys are the headline figures; `date`, `machine` and `load_average` describe the
    latest run, and `runs[<benchmark>]` keeps each benchmark's own date, load and details, since
    `--only` reruns one benchmark and leaves the others' figures in place.
    """
    data = read_results(path)
    stamp = now_iso()
    data.update(result.figures)
    data["date"] = stamp
    data["machine"] = machine
    data["load_average"] = load_average()
    data["quick"] = quick
    runs = data.setdefault("runs", {})
    runs[result.name] = {
        "date": stamp,
        "torch_threads": machine.get("torch_threads"),
        "load_average_after": load_average(),
        "quick": quick,
        "figures": result.figures,
        "details": result.details,
        "table": result.table,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


# ----------------------------------------------------------------------------------------------
# Audio for the benchmarks
# ----------------------------------------------------------------------------------------------


def corpus_dir() -> tuple[Path | None, str]:
    """A real speech corpus laid out as an audiofolder (EmoDB in ../shared when present, else the
    demo corpus, generated with `make demo`'s settings when missing), with a description;
    (None, reason) when neither exists and espeak-ng cannot make the demo corpus."""
    for path, name in (
        (SHARED_EMODB, "EmoDB (../shared/data/emodb)"),
        (DEMO_CORPUS, "demo corpus (data/demo)"),
    ):
        if (path / "metadata.csv").exists():
            return path, name
    from make_demo_corpus import EspeakNotFoundError, make_corpus

    try:  # the Makefile's demo settings, so that `make demo` later reuses it
        make_corpus(DEMO_CORPUS, num_speakers=12, sentences_per_speaker=10)
    except EspeakNotFoundError as error:
        return None, f"no corpus: ../shared/data/emodb is absent and the demo corpus cannot be made ({error})"
    return DEMO_CORPUS, "demo corpus (data/demo, generated)"


def corpus_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["path"] = str(path / row["file_name"])
    return rows


def synthetic_speech(seconds: float, seed: int = 0, sampling_rate: int = 16000) -> np.ndarray:
    """Voiced, pitch-varying harmonic signal with syllable-like envelope, pauses and noise."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sampling_rate))
    t = np.arange(n) / sampling_rate
    base = rng.uniform(100, 250)
    f0 = base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
    signal = sum(np.sin(k * phase) * rng.uniform(0.2, 1.0) / k for k in range(1, 10))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, None)
    noise = rng.standard_normal(n)
    return (0.3 * signal * syllables + 0.01 * noise).astype(np.float32)
