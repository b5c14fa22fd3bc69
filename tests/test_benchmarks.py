"""The benchmarks' smoke version (`benchmarks/run_all.py --quick`: tiny models, a few clips, a
one-minute recording) runs end to end and records every figure with a sane type and value. The
figures of a quick run say nothing about performance; the full run does (`make bench`)."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import run_all  # noqa: E402
from benchmarks.common import BenchResult, alternate, markdown_table, paired_ratio, record_result  # noqa: E402


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> dict:
    import torch

    output = tmp_path_factory.mktemp("bench") / "results.json"
    threads = torch.get_num_threads()
    try:  # one thread: tiny models gain nothing from two, and spinning threads lose on a busy machine
        assert run_all.main(["--quick", "--threads", "1", "--output", str(output)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(output.read_text())


def test_every_key_is_recorded(quick_results):
    for key in (*run_all.KEYS, "date", "machine", "load_average", "runs"):
        assert key in quick_results, key
    assert set(quick_results["runs"]) == set(run_all.BENCHMARKS)
    machine = quick_results["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["torch_threads"] == 1
    assert isinstance(machine["cpu"], str)
    assert quick_results["quick"] is True


@pytest.mark.parametrize("key", ["ctc_step_ratio", "decomposed_step_ratio", "inference_speedup"])
def test_ratios_are_positive_and_finite(quick_results, key):
    value = quick_results[key]  # tiny models: the value says nothing about performance
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert value > 0


def test_f0_padding_and_long_audio_figures(quick_results):
    assert quick_results["f0_realtime_per_core"] > 1  # every pyworld method is faster than real time
    f0 = quick_results["runs"]["f0"]["details"]["methods"]
    assert f0["harvest"]["voicing_agreement"] == 1.0  # the reference agrees with itself
    assert f0["harvest"]["gross_pitch_error"] == 0.0
    for method in ("dio", "dio_fast", "yin"):
        assert 0.3 < f0[method]["voicing_agreement"] <= 1.0
        assert 0.0 <= f0[method]["gross_pitch_error"] < 0.5
    reference = quick_results["runs"]["f0"]["details"]["harvest_delayed_reference"]
    assert 0.5 < reference["voicing_agreement"] <= 1.0  # Harvest against itself, input delayed 0.5 ms
    assert 0.0 <= quick_results["padding_fraction"] < 0.5
    padding = quick_results["runs"]["padding"]["details"]["synthetic 1–12 s"]
    assert padding["project_sampler"] < padding["random_batching"]
    assert 0.1 < quick_results["long_audio_peak_rss_gib"] < 8
    long_audio = quick_results["runs"]["long_audio"]["details"]
    assert long_audio["windows"] == 19  # 40 s in 4 s windows every 2 s
    assert long_audio["summary_row"]["num_windows"] == 19


def test_inference_labels_agree(quick_results):
    """Every pass (files and in memory, onnxruntime and PyTorch) gives the labels of the pipeline
    on the files; the headline pass ran onnxruntime on the export made beforehand."""
    details = quick_results["runs"]["inference"]["details"]
    assert details["label_mismatches"] == 0
    assert sum(details["label_counts"].values()) == details["clips"]
    by_pass = details["label_mismatches_by_pass"]
    assert len(by_pass) == 7
    assert set(by_pass.values()) == {0}
    assert set(details["times_s"]) == set(by_pass)
    assert all(len(t) == details["rounds"] for t in details["times_s"].values())
    assert details["onnxruntime_threads"] == details["torch_threads"] == 1
    assert details["max_abs_logit_difference_onnxruntime_vs_torch"] < 1e-3
    assert details["preparation_s"]["onnx_export"] > 0
    assert details["in_memory_speedup"] > 0


def test_gpu_entry(quick_results):
    gpu = quick_results["gpu"]
    import torch

    assert gpu["available"] is torch.cuda.is_available()
    if not gpu["available"]:
        assert "cuda" in gpu["reason"].lower()
    else:
        assert gpu["families"]["hf_wav2vec2_baseline"]["ratio_vs_baseline"] == pytest.approx(1.0)


def test_alternate_rotates_and_ratio_is_paired():
    calls = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert {len(v) for v in times.values()} == {3}
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0
    assert markdown_table(["x", "y"], [[1, float("nan")]]).splitlines()[-1] == "| 1 | – |"


def test_only_reruns_one_benchmark_and_keeps_the_others(tmp_path):
    output = tmp_path / "results.json"
    machine = {"cpu": "test", "cpu_count": 1, "torch_threads": 1}
    record_result(output, BenchResult("a", {"x": 1.0}), machine, quick=True)
    record_result(output, BenchResult("b", {"y": 2.0}), machine, quick=True)
    record_result(output, BenchResult("a", {"x": 3.0}), machine, quick=True)
    data = json.loads(output.read_text())
    assert data["x"] == 3.0
    assert data["y"] == 2.0
    assert set(data["runs"]) == {"a", "b"}
