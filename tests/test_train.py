"""scripts/train.py and scripts/cross_validate.py on tiny local data."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import hub_fixtures
import pytest
import ser_data
import torch
import train
from conftest import ROOT, TINY_DECOMPOSITION, TINY_SPECTROGRAM, tiny_backbone_config
from safetensors.torch import load_file
from ser_data import DataConfigError
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    HubertModel,
    Wav2Vec2ForPreTraining,
    WavLMModel,
)

pytestmark = pytest.mark.slow
TINY_BACKBONE = json.dumps(tiny_backbone_config())
FAST = [
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "8",
    "--report_to",
    "none",
    "--logging_steps",
    "1",
]


def without_option(args: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        else:
            out.append(arg)
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """64 synthetic clips: 8 speakers (4 female) x 4 emotions x 2 sentences, with transcripts."""
    if not any(Path(p, "espeak-ng").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    from make_demo_corpus import make_corpus

    return make_corpus(tmp_path_factory.mktemp("corpus") / "demo", num_speakers=8, sentences_per_speaker=2)


@pytest.fixture(scope="session")
def pretrained_backbones(tmp_path_factory) -> dict[str, Path]:
    """Tiny local stand-ins for facebook/wav2vec2-base, chinese-hubert-base and wavlm-base-plus."""
    out = {}
    root = tmp_path_factory.mktemp("backbones")
    for model_type, model_class in (
        ("wav2vec2", Wav2Vec2ForPreTraining),
        ("hubert", HubertModel),
        ("wavlm", WavLMModel),
    ):
        config = AutoConfig.for_model(**tiny_backbone_config(model_type))
        if model_type == "wav2vec2":
            config.codevector_dim = config.proj_codevector_dim = 16
            config.num_codevectors_per_group = 8
        torch.manual_seed(0)
        model_class(config).save_pretrained(root / model_type)
        out[model_type] = root / model_type
    return out


def demo_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--data_dir",
        str(corpus),
        "--transcript_column",
        "text",
        "--speaker_column",
        "speaker",
        "--gender_column",
        "gender",
        "--output_dir",
        str(output_dir),
        "--backbone_config",
        TINY_BACKBONE,
        *FAST,
        *extra,
    ]


def check_results(output_dir: Path) -> dict:
    results = json.loads((output_dir / "results.json").read_text())
    protocol = results["protocol"]
    for key in ("wa", "ua", "macro_f1"):
        assert 0.0 <= results[key] <= 1.0
        if protocol["validation"]:
            assert 0.0 <= results["validation"][key] <= 1.0
        else:  # num_validation_speakers 0: nothing held out for validation
            assert results["validation"] == {"num_examples": 0}
    assert not set(protocol["train"]) & set(protocol["test"])
    assert not set(protocol["validation"]) & (set(protocol["test"]) | set(protocol["train"]))
    assert (output_dir / "model.safetensors").exists()
    assert not (output_dir / "training_args.bin").exists()
    rows = [json.loads(line) for line in (output_dir / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == results["num_examples"]
    assert {r["speaker"] for r in rows} == set(protocol["test"])
    return results


@pytest.mark.parametrize("model_type", ["emotion_ssl", "emotion_ssl_ctc"])
def test_train_main_on_demo_corpus(corpus, tmp_path, model_type):
    out = tmp_path / model_type
    results = train.main(demo_args(corpus, out, "--model_type", model_type, "--augmentations", "seed004"))
    assert results == check_results(out)
    assert results["speaker_independent"] is True
    loaded = AutoModelForAudioClassification.from_pretrained(out)
    assert loaded.config.id2label == {0: "angry", 1: "happy", 2: "neutral", 3: "sad"}
    if model_type == "emotion_ssl_ctc":
        assert results["cer"] >= 0
        assert (out / "vocab.json").exists()
        assert "transcript" in (out / "predictions_test.jsonl").read_text()
        history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        logged = [entry for entry in history if "train_ctc_loss" in entry]
        assert logged
        assert all(entry["train_emotion_loss"] > 0 for entry in logged)


@pytest.mark.parametrize("model_type", sorted(TINY_SPECTROGRAM))
def test_train_main_spectrogram_families(corpus, tmp_path, model_type):
    args = without_option(demo_args(corpus, tmp_path, "--model_type", model_type), "--backbone_config")
    args += ["--model_config", json.dumps({**TINY_SPECTROGRAM[model_type], "focal_gamma": 2.0})]
    results = train.main(args)
    assert results == check_results(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["focal_gamma"] == 2.0


def test_rerun_with_another_model_config_refuses_to_resume_unless_overwriting(corpus, tmp_path):
    tiny = TINY_SPECTROGRAM["emotion_cnn_transformer"]
    args = without_option(
        demo_args(corpus, tmp_path, "--model_type", "emotion_cnn_transformer"), "--backbone_config"
    )
    train.main([*args, "--model_config", json.dumps(tiny)])
    assert list(tmp_path.glob("checkpoint-*"))
    changed = [*args, "--model_config", json.dumps({**tiny, "hidden_size": 24})]
    with pytest.raises(ser_data.DataConfigError, match=r"another model configuration.*hidden_size"):
        train.main(changed)
    results = train.main([*changed, "--overwrite_output_dir"])
    assert results == check_results(tmp_path)
    for checkpoint in tmp_path.glob("checkpoint-*"):
        assert json.loads((checkpoint / "config.json").read_text())["hidden_size"] == 24
    # The same configuration again resumes from the finished run's last checkpoint.
    assert train.main([*changed])["ua"] == results["ua"]


def test_train_main_decomposition_stage1_then_stage2(corpus, tmp_path):
    stage1 = tmp_path / "stage1"
    tiny = json.dumps(TINY_DECOMPOSITION)
    args = demo_args(corpus, stage1, "--model_type", "speech_decomposition", "--model_config", tiny)
    results = train.main(without_option(args, "--backbone_config"))
    assert results["reconstruction_loss"] > 0
    assert results["validation"]["reconstruction_loss"] > 0
    saved = json.loads((stage1 / "config.json").read_text())
    assert sorted(saved["id2label"].values()) == sorted(results["protocol"]["train"])  # labels are speakers
    assert json.loads((stage1 / "preprocessor_config.json").read_text())["compute_pitch"] is True

    stage2 = tmp_path / "stage2"
    tiny2 = json.dumps({**TINY_DECOMPOSITION, "ctc_weight": 0.1, "speaker_weight": 0.1})
    args = [*demo_args(corpus, stage2, "--model_type", "emotion_decomposed", "--model_config", tiny2)]
    args += ["--decomposition_init", str(stage1)]
    model_args, data_args, training_args = train.parse_arguments(args)
    config = train.build_config(model_args)
    data = train.prepare_data(data_args, config, training_args, uses_ctc=True)
    model = train.build_model(model_args, train.finalize_config(config, data, model_args))
    source = load_file(stage1 / "model.safetensors")
    target = model.state_dict()
    decoder = [k for k in source if k.startswith("decomposition.decoder.")]
    assert decoder
    assert all(torch.equal(source[k], target[k]) for k in decoder)

    results = train.main(args)
    assert results == check_results(stage2)
    assert "cer" in results
    assert json.loads((stage2 / "config.json").read_text())["num_speakers"] == len(
        results["protocol"]["train"]
    )
    history = json.loads(sorted(stage2.glob("checkpoint-*/trainer_state.json"))[-1].read_text())[
        "log_history"
    ]
    assert any("train_reconstruction_loss" in entry and "train_speaker_loss" in entry for entry in history)


def test_feature_cache_is_reused(corpus, tmp_path):
    args = demo_args(
        corpus, tmp_path / "a", "--model_type", "emotion_ssl", "--cache_dir", str(tmp_path / "cache")
    )
    model_args, data_args, training_args = train.parse_arguments(args)
    config = train.build_config(model_args)
    before = ser_data._DECODE_CALLS["decode"]
    train.prepare_data(data_args, config, training_args, uses_ctc=False)
    first = ser_data._DECODE_CALLS["decode"] - before
    train.prepare_data(data_args, config, training_args, uses_ctc=False)
    second = ser_data._DECODE_CALLS["decode"] - before - first
    assert first == 64
    assert second == 0


def test_config_errors_list_what_exists(corpus, tmp_path):
    base = demo_args(corpus, tmp_path / "e", "--model_type", "emotion_ssl")
    with pytest.raises(DataConfigError, match=r"label_column 'mood'.*columns are \[.*'emotion'"):
        train.main([*base, "--label_column", "mood"])
    with pytest.raises(DataConfigError, match=r"labels \['fear'\] do not occur.*'angry': 16"):
        train.main([*base, "--labels", "angry", "fear"])
    with pytest.raises(DataConfigError, match=r"needs split 'validation'.*\['train'\]"):
        train.main([*base, "--protocol", "fixed"])
    with pytest.raises(DataConfigError, match="speaker for every row"):
        train.main(without_option(base, "--speaker_column"))
    recipe = tmp_path / "bad.json"
    recipe.write_text(json.dumps({"model_type": "emotion_ssl", "learning_rte": 1e-3, "output_dir": "x"}))
    with pytest.raises(ValueError, match=r"unknown recipe keys \['learning_rte'\]"):
        train.parse_arguments([str(recipe)])
    assert not (tmp_path / "e" / "model.safetensors").exists()


def test_cli_overrides_recipe(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"model_type": "emotion_ssl_ctc", "learning_rate": 1e-3, "output_dir": "a"}))
    model_args, _data_args, training_args = train.parse_arguments(
        [
            str(recipe),
            "--learning_rate",
            "5e-5",
            "--output_dir",
            str(tmp_path / "b"),
            "--model_config",
            '{"ctc_weight": 0.3}',
        ]
    )
    assert training_args.learning_rate == 5e-5
    assert training_args.output_dir == str(tmp_path / "b")
    assert model_args.model_config == {"ctc_weight": 0.3}
    assert training_args.metric_for_best_model == "ua"


RECIPE_FIXTURES = {
    "iemocap.json": ("iemocap", {"backbone_name_or_path": "wav2vec2"}),
    "crema_d_cnn_transformer.json": ("crema_d", {}, ["--num_validation_speakers", "1"]),
    "esd_dcnn_blstm.json": ("esd", {}),
    "iemocap_ctc.json": ("iemocap", {"backbone_name_or_path": "wav2vec2"}),
    "iemocap_ssl.json": ("iemocap", {"backbone_name_or_path": "wav2vec2"}),
    "casia_hubert.json": ("casia", {"backbone_name_or_path": "hubert"}),
    "ravdess.json": ("ravdess", {"backbone_name_or_path": "wavlm"}),
    "emodb.json": ("emodb", {}),
}


@pytest.mark.parametrize("recipe", sorted(RECIPE_FIXTURES))
def test_recipe_runs_on_local_fixture_with_hub_schema(recipe, corpus, pretrained_backbones, tmp_path):
    schema, swaps, *extra = RECIPE_FIXTURES[recipe]
    fixture = hub_fixtures.BUILDERS[schema](hub_fixtures.read_corpus(corpus), tmp_path / schema)
    config = json.loads((ROOT / "configs" / recipe).read_text())
    args = [str(ROOT / "configs" / recipe), "--output_dir", str(tmp_path / "out"), *FAST]
    args += extra[0] if extra else []
    if config.get("dataset_name") in (None, "audiofolder"):
        args += ["--data_dir", str(fixture)]
    else:
        args += ["--dataset_name", str(fixture)]
    for key, backbone in swaps.items():
        args += [f"--{key}", str(pretrained_backbones[backbone])]
    if swaps:
        args += ["--backbone_config", json.dumps({"mask_time_prob": 0.0})]
    tiny = {"emotion_decomposed": TINY_DECOMPOSITION, **TINY_SPECTROGRAM}.get(config["model_type"])
    if tiny:  # tiny sizes, the recipe's inputs (F0 or not)
        inputs = {k: v for k, v in config.get("model_config", {}).items() if k == "pitch_embedding_size"}
        args += ["--model_config", json.dumps({**tiny, **inputs})]
    args += ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1"]
    results = train.main(args)
    check_results(tmp_path / "out")
    assert results["labels"] == (config.get("labels") or results["labels"])
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    for key, value in config.get("model_config", {}).items():
        if key == "pitch_embedding_size":
            assert saved[key] == value
    assert results["protocol"]["protocol"] == config["protocol"]


def test_optional_gender_column_may_be_missing(corpus, tmp_path, caplog):
    """The EmoDB recipe on a corpus without genders: read as 'unknown' with a warning, while a
    missing column that is not optional still fails with the corpus's columns listed."""
    fixture = hub_fixtures.emodb(hub_fixtures.read_corpus(corpus), tmp_path / "emodb")
    rows = (fixture / "metadata.csv").read_text().splitlines()
    (fixture / "metadata.csv").write_text(
        "\n".join(",".join(c for i, c in enumerate(r.split(",")) if i != 2) for r in rows) + "\n"
    )
    recipe = json.loads((ROOT / "configs" / "emodb.json").read_text())
    recipes = {}
    for name, optional in (("strict", None), ("optional", ["gender_column"])):
        recipes[name] = tmp_path / f"{name}.json"
        recipes[name].write_text(json.dumps({**recipe, "optional_columns": optional}))
    common = ["--data_dir", str(fixture), *FAST]
    tiny = {
        **TINY_SPECTROGRAM["emotion_cnn_transformer"],
        "pitch_embedding_size": 4,
    }  # F0 with unknown gender
    common += ["--model_config", json.dumps(tiny)]
    with pytest.raises(
        DataConfigError, match=r"gender_column 'gender' is not a column.*'speaker', 'emotion'"
    ):
        train.main([str(recipes["strict"]), *common, "--output_dir", str(tmp_path / "strict")])
    with caplog.at_level(logging.WARNING, logger="train"):
        results = train.main([str(recipes["optional"]), *common, "--output_dir", str(tmp_path / "out")])
    check_results(tmp_path / "out")
    assert "gender_column 'gender' is not a column of the corpus" in caplog.text
    assert (
        len((tmp_path / "out" / "predictions_test.jsonl").read_text().splitlines()) == results["num_examples"]
    )
    assert results["num_examples"] > 0
    with pytest.raises(ValueError, match=r"optional_columns \['label_column'\] unknown"):
        train.parse_arguments([str(recipes["strict"]), "--optional_columns", "label_column"])


def test_two_process_ddp_matches_single_process(corpus, tmp_path):
    common = demo_args(corpus, tmp_path, "--model_type", "emotion_ssl", "--max_duration", "0", "--seed", "3")
    common = without_option(common, "--per_device_train_batch_size")
    common += ["--train_sampling_strategy", "sequential", "--max_steps", "3", "--save_strategy", "no"]
    common += [
        "--learning_rate",
        "1e-2",
        "--warmup_steps",
        "0",
        "--model_config",
        json.dumps({"classifier_dropout": 0.0}),
    ]
    common += ["--load_best_model_at_end", "false", "--eval_strategy", "no"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    runs = {
        "single": [accelerate, "launch", "--num_processes", "1"],
        "ddp": [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29533"],
    }
    results = {}
    for name, launcher in runs.items():
        batch = "8" if name == "single" else "4"
        cmd = [*launcher, str(ROOT / "scripts" / "train.py"), *common]
        cmd = [*cmd, "--per_device_train_batch_size", batch, "--output_dir", str(tmp_path / name)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-4000:]
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert results["ddp"]["train"]["train_loss"] == pytest.approx(
        results["single"]["train"]["train_loss"], abs=2e-3
    )
    for key in ("wa", "ua", "macro_f1"):
        assert results["ddp"][key] == pytest.approx(results["single"][key], abs=0.03)
    probabilities = {}
    for name in runs:
        rows = [
            json.loads(line) for line in (tmp_path / name / "predictions_test.jsonl").read_text().splitlines()
        ]
        probabilities[name] = [list(r["probabilities"].values()) for r in rows]
    diff = max(
        abs(a - b) for x, y in zip(probabilities["ddp"], probabilities["single"]) for a, b in zip(x, y)
    )
    assert diff < 2e-3, diff
