#!/usr/bin/env python
"""Run the performance benchmarks, print their tables and record the figures.

    python benchmarks/run_all.py                 # everything (15-25 minutes on 2 cores)
    python benchmarks/run_all.py --quick         # tiny smoke version (results_quick.json)
    python benchmarks/run_all.py --only f0       # one benchmark; the others' figures stay

Each benchmark module (`bench_<name>.py`) has `run(quick)` returning a `BenchResult`; its headline
figures become top-level keys of the results file (`ctc_step_ratio`, `decomposed_step_ratio`,
`inference_speedup`, `f0_realtime_per_core`, `padding_fraction`, `long_audio_peak_rss_gib`, `gpu`)
next to `date`, `machine` and `load_average`; `runs[<name>]` keeps each benchmark's details and
table. A benchmark that fails is reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    DEFAULT_RESULTS,
    QUICK_RESULTS,
    load_average,
    machine_info,
    machine_summary,
    record_result,
)

BENCHMARKS = ("step", "inference", "f0", "padding", "long_audio", "gpu")
KEYS = (
    "ctc_step_ratio",
    "decomposed_step_ratio",
    "inference_speedup",
    "f0_realtime_per_core",
    "padding_fraction",
    "long_audio_peak_rss_gib",
    "gpu",
)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="Tiny sizes: a smoke test in well under a minute."
    )
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="Run only this benchmark (repeatable)."
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Results file (default benchmarks/results.json; benchmarks/results_quick.json with --quick).",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)."
    )
    parser.add_argument(
        "--profile_dir", type=Path, default=None, help="Write torch.profiler tables here (step)."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="pyworld")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or (QUICK_RESULTS if args.quick else DEFAULT_RESULTS)
    machine = machine_info()
    print(
        f"Machine: {machine_summary(machine)}; torch threads {torch.get_num_threads()}; load {load_average()}"
    )
    failures = []
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        try:
            result = module.run(
                quick=args.quick, profile=args.profile_dir is not None, workdir=args.profile_dir
            )
        except Exception:  # report and go on with the other benchmarks
            failures.append(name)
            print(f"\n## {name}: FAILED\n{traceback.format_exc()}", flush=True)
            continue
        elapsed = time.perf_counter() - started
        result.details["seconds"] = round(elapsed, 1)
        record_result(output, result, machine, args.quick)
        print(f"\n## {name} ({elapsed:.0f} s, load {load_average()})\n{result.table}\n", flush=True)
        print("   " + ", ".join(f"{k} = {v}" for k, v in result.figures.items() if k != "gpu"), flush=True)
    print(f"\nResults: {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
