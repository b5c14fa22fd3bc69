"""Recipe machinery: checkpoint ensembles and speaker-adaptive BatchNorm (scripts/ser_ensemble.py),
and their use by train.py on a tiny synthetic audiofolder corpus."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import train
from conftest import label_kwargs, speech_like
from ser_ensemble import (
    ProbabilityAverage,
    adapt_batchnorm,
    build_checkpoint_ensemble,
    predict_by_speaker,
    select_checkpoints,
    validation_scores,
)
from ser_inference import model_accepts, predict_waveforms

from modeling import (
    CNNTransformerEmotionConfig,
    CNNTransformerForAudioClassification,
    EmotionFeatureExtractor,
)

TINY_TDNN = {
    "n_mels": 16,
    "conv_channels": [],
    "conv_kernel_sizes": [],
    "pool_sizes": [],
    "hidden_size": 8,
    "time_conv_kernel_sizes": [3],
    "num_hidden_layers": 0,
    "mel_normalization": "corpus",
    "pooling": "statistics",
    "num_time_masks": 0,
    "num_freq_masks": 0,
}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **overrides) -> CNNTransformerForAudioClassification:
    torch.manual_seed(seed)
    config = CNNTransformerEmotionConfig(**{**TINY_TDNN, **label_kwargs(), **overrides})
    return CNNTransformerForAudioClassification(config).eval()


def test_select_checkpoints_best_last_spaced():
    steps = [10, 20, 30, 40, 50, 60]
    scores = {10: 0.2, 20: 0.6, 30: 0.5, 40: 0.6, 50: 0.3, 60: 0.4}
    assert select_checkpoints(steps, 2, "last") == [50, 60]
    # Best by validation score; the tie between steps 20 and 40 goes to the later one.
    assert select_checkpoints(steps, 1, "best", scores) == [40]
    assert select_checkpoints(steps, 3, "best", scores) == [20, 30, 40]
    assert select_checkpoints(steps, 1, "best", {s: -v for s, v in scores.items()}, False) == [40]
    assert select_checkpoints(steps, 3, "spaced") == [20, 40, 60]
    assert select_checkpoints(steps, 4, "spaced") == [10, 30, 40, 60]
    assert select_checkpoints(steps, 10, "last") == steps  # capped at what exists
    with pytest.raises(ValueError, match="no validation score"):
        select_checkpoints(steps, 2, "best", {10: 0.1})
    with pytest.raises(ValueError, match="selection"):
        select_checkpoints(steps, 2, "worst")


def test_validation_scores_from_log_history():
    history = [
        {"loss": 1.0, "step": 5},
        {"eval_ua": 0.5, "eval_loss": 1.2, "step": 10},
        {"eval_ua": 0.7, "step": 20},
    ]
    assert validation_scores(history, "ua") == {10: 0.5, 20: 0.7}
    assert validation_scores(history, "eval_loss") == {10: 1.2}


def test_probability_average_matches_mean_of_softmax():
    members = [tiny_model(seed) for seed in range(3)]
    ensemble = ProbabilityAverage(members).eval()
    extractor = EmotionFeatureExtractor(**members[0].config.feature_extractor_kwargs())
    clips = [speech_like(s, seed=i) for i, s in enumerate((0.6, 0.3, 0.45))]
    features = extractor(clips, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = torch.stack([m(**features).logits.softmax(-1) for m in members]).mean(0)
        got = ensemble(**features).logits.softmax(-1)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(members[0](**features).logits.softmax(-1), expected, atol=1e-3)
    # It takes the members' inputs, so the batched predictor passes them; a copy is independent.
    assert model_accepts(ensemble, "attention_mask")
    assert not model_accepts(ensemble, "ctc_labels")
    predictions = predict_waveforms(ensemble, extractor, clips, max_batch_size=2)
    assert np.allclose(np.stack([p.logits for p in predictions]), got.log().numpy(), atol=1e-5)
    clone = copy.deepcopy(ensemble)
    with torch.no_grad():
        clone.members[0].classifier.weight.zero_()
        assert torch.allclose(ensemble(**features).logits.softmax(-1), expected, atol=1e-6)
        assert not torch.allclose(clone(**features).logits.softmax(-1), expected, atol=1e-4)


def test_adapt_batchnorm_uses_the_given_clips_only():
    model = tiny_model()
    extractor = EmotionFeatureExtractor(**model.config.feature_extractor_kwargs())
    loud = [speech_like(0.5, seed=1) * 5.0 + 0.05 * np.random.default_rng(0).standard_normal(8000)]
    quiet_tilt = [np.convolve(speech_like(0.4, seed=2), np.ones(8) / 8, mode="same").astype(np.float32)]
    before = copy.deepcopy(model.state_dict())
    adapted = adapt_batchnorm(model, extractor, quiet_tilt)
    # The original is untouched; the copy's mel statistics are those of the one clip.
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    features = extractor(quiet_tilt, sampling_rate=16000, return_tensors="pt")
    log_mel, lengths = adapted.encoder.front_end.mel(
        features["input_values"], features["attention_mask"].sum(-1)
    )
    norm = adapted.encoder.front_end.corpus_norm
    assert torch.allclose(norm.running_mean, log_mel[0, : int(lengths[0])].mean(0), atol=1e-4)
    assert not adapted.training
    weights = {k: v for k, v in adapted.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert all(torch.equal(v, before[k]) for k, v in weights.items())
    # Per speaker: each speaker's clips are predicted with statistics of that speaker's clips.
    clips = loud + quiet_tilt
    by_speaker = predict_by_speaker(model, extractor, clips, ["a", "b"], predict_waveforms, 4)
    alone = [predict_waveforms(adapt_batchnorm(model, extractor, [c]), extractor, [c])[0] for c in clips]
    for got, expected in zip(by_speaker, alone):
        assert np.allclose(got.logits, expected.logits, atol=1e-5)
    plain = predict_waveforms(model, extractor, clips)
    assert not np.allclose(by_speaker[1].logits, plain[1].logits, atol=1e-3)


def test_build_checkpoint_ensemble_from_saved_checkpoints(tmp_path):
    for step, seed in ((10, 0), (20, 1), (30, 2)):
        tiny_model(seed).save_pretrained(tmp_path / f"checkpoint-{step}")
    history = [{"eval_ua": 0.4, "step": 10}, {"eval_ua": 0.9, "step": 20}, {"eval_ua": 0.5, "step": 30}]
    (tmp_path / "checkpoint-30" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    ensemble, members = build_checkpoint_ensemble(CNNTransformerForAudioClassification, tmp_path, 2, "best")
    assert [m["checkpoint"] for m in members] == ["checkpoint-20", "checkpoint-30"]
    assert members[0]["validation_ua"] == 0.9
    reference = tiny_model(1)
    assert torch.equal(ensemble.members[0].classifier.weight, reference.classifier.weight)


# ----------------------------------------------------------------------------------------------
# train.py integration
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """Audiofolder: 6 speakers (3 female) x 3 emotions x 2 clips of harmonic signals whose pitch
    and level depend on the emotion."""
    root = tmp_path_factory.mktemp("small_corpus")
    rows = []
    for speaker in range(6):
        gender = "female" if speaker % 2 else "male"
        for label_index, emotion in enumerate(("neutral", "angry", "sad")):
            for take in range(2):
                seed = 100 * speaker + 10 * label_index + take
                clip = speech_like(0.5 + 0.1 * take, seed=seed) * (0.5 + label_index)
                name = f"s{speaker}_{emotion}_{take}.wav"
                sf.write(root / name, clip, 16000)
                rows.append(
                    {"file_name": name, "speaker": f"spk{speaker}", "gender": gender, "emotion": emotion}
                )
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def train_args(corpus: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_type",
        "emotion_cnn_transformer",
        "--model_config",
        json.dumps(TINY_TDNN),
        "--dataset_name",
        "audiofolder",
        "--data_dir",
        str(corpus),
        "--speaker_column",
        "speaker",
        "--gender_column",
        "gender",
        "--num_validation_speakers",
        "1",
        "--num_train_epochs",
        "3",
        "--per_device_train_batch_size",
        "8",
        "--report_to",
        "none",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


@pytest.mark.slow
def test_train_with_checkpoint_ensemble_and_speaker_adaptive_batchnorm(small_corpus, tmp_path):
    out = tmp_path / "run"
    args = train_args(small_corpus, out, "--save_total_limit", "0")
    args += [
        "--ensemble_checkpoints",
        "2",
        "--ensemble_selection",
        "last",
        "--speaker_adaptive_batchnorm",
        "true",
    ]
    results = train.main(args)
    ensemble = results["ensemble"]
    members = [m["checkpoint"] for m in ensemble["members"]]
    last_step = max(m["step"] for m in ensemble["members"])
    assert len(members) == 2
    assert members[1] == f"checkpoint-{last_step}"
    assert set(ensemble["single_model"]) == {"validation", "test"}
    assert results["transductive"] is True
    assert results["transductive_methods"] == ["speaker_adaptive_batchnorm"]
    # Checkpoints outside the ensemble were deleted, except the best one.
    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    state = json.loads((out / members[1] / "trainer_state.json").read_text())
    assert set(kept) == {*members, Path(state["best_model_checkpoint"]).name}
    assert ensemble["pruned_checkpoints"] == 3 - len(kept)
    rows = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == results["num_examples"] == 6
    # The test predictions are the two members' averaged probabilities, speaker-adapted.
    extractor = EmotionFeatureExtractor.from_pretrained(out)
    members = [CNNTransformerForAudioClassification.from_pretrained(out / c) for c in members]
    clips, speakers = [], []
    for row in rows:
        waveform, _ = sf.read(small_corpus / row["utt_id"].split("/")[-1], dtype="float32")
        clips.append(waveform)
        speakers.append(row["speaker"])
    expected = predict_by_speaker(
        ProbabilityAverage(members), extractor, clips, speakers, predict_waveforms, 8
    )
    probabilities = np.array([[r["probabilities"][k] for k in results["labels"]] for r in rows])
    expected = np.stack([np.exp(p.logits) / np.exp(p.logits).sum() for p in expected])
    assert np.allclose(probabilities, expected, atol=1e-4)


def test_ensemble_options_are_checked(small_corpus, tmp_path):
    with pytest.raises(ValueError, match="save_total_limit"):
        train.parse_arguments(train_args(small_corpus, tmp_path, "--ensemble_checkpoints", "3"))
    with pytest.raises(ValueError, match="at least 4"):
        train.parse_arguments(
            train_args(small_corpus, tmp_path, "--ensemble_checkpoints", "3", "--ensemble_selection", "last")
        )
    model_args, data_args, _ = train.parse_arguments(
        train_args(small_corpus, tmp_path, "--ensemble_checkpoints", "3", "--save_total_limit", "0")
    )
    assert model_args.ensemble_selection == "best"
    assert data_args.speaker_adaptive_batchnorm is False
    with pytest.raises(ValueError, match="ensemble_selection"):
        train.parse_arguments(train_args(small_corpus, tmp_path, "--ensemble_selection", "median"))


# ----------------------------------------------------------------------------------------------
# cross_validate.py: folds in parallel processes, seed ensembles
# ----------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_from_confusion_match_classification_metrics():
    import cross_validate
    from ser_metrics import classification_metrics

    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    labels[labels == 3] = 2  # a class with no examples, predicted anyway
    expected = classification_metrics(labels, predictions, ["a", "b", "c", "d"])
    got = cross_validate.metrics_from_confusion(expected["confusion_matrix"])
    for key in ("wa", "ua", "macro_f1", "num_examples"):
        assert got[key] == pytest.approx(expected[key]), key


def test_cross_validate_options_from_recipe_and_command_line(tmp_path):
    import cross_validate

    recipe = tmp_path / "r.json"
    recipe.write_text(
        json.dumps({"output_dir": "x", "cross_validation": {"seeds": [0, 1], "parallel_folds": 2}})
    )
    options = cross_validate.cv_options([str(recipe), "--parallel_folds", "3", "--folds=1,2"])
    assert options["seeds"] == [0, 1]
    assert options["parallel_folds"] == 3  # the command line wins
    assert options["folds"] == [1, 2]
    assert options["threads_per_fold"] >= 1
    assert cross_validate.cv_options([str(recipe), "--threads_per_fold", "1"])["threads_per_fold"] == 1
    assert cross_validate.cv_options(["--seeds", "4"])["seeds"] == [4]
    recipe.write_text(json.dumps({"cross_validation": {"seed": [0]}}))
    with pytest.raises(ValueError, match="unknown cross_validation keys"):
        cross_validate.cv_options([str(recipe)])
    # train.py ignores the block; cross_validate's own options never reach train.py.
    argv = [str(recipe), "--seeds", "0,1", "--parallel_folds=2", "--learning_rate", "1e-3"]
    assert cross_validate._strip_options(argv, cross_validate.CV_OPTIONS) == [
        str(recipe),
        "--learning_rate",
        "1e-3",
    ]
    fold_argv = cross_validate._fold_argv(["--seed", "9", "--fold", "3"], 1, tmp_path / "f", seed=2)
    assert fold_argv == ["--fold", "1", "--output_dir", str(tmp_path / "f"), "--seed", "2"]


def test_cross_validate_members_of_an_ensemble(tmp_path):
    """`members` in the recipe: variants with their own seed and model_config fields, named
    `seed_<s>` by default; their fields go on top of a --model_config given on the command line."""
    import cross_validate

    recipe = tmp_path / "r.json"
    members = [{"seed": 0}, {"seed": 1}, {"name": "deltas", "seed": 0, "model_config": {"delta_order": 2}}]
    recipe.write_text(json.dumps({"cross_validation": {"members": members}}))
    specs = cross_validate.cv_options([str(recipe)])["members"]
    assert [m["name"] for m in specs] == ["seed_0", "seed_1", "deltas"]
    assert specs[2] == {"name": "deltas", "seed": 0, "model_config": {"delta_order": 2}}
    # --seeds on the command line replaces the recipe's members; "" means one run per fold.
    assert [m["name"] for m in cross_validate.cv_options([str(recipe), "--seeds", "3"])["members"]] == [
        "seed_3"
    ]
    assert cross_validate.cv_options([str(recipe), "--seeds", ""])["members"] is None
    assert cross_validate.ensemble_members(None, None) is None
    for bad, message in (
        ([{"seed": 0}, {"seed": 0}], "unique"),
        ([{"seed": 0, "epochs": 3}], "keys among"),
        ([{"name": "../x", "model_config": {"n_mels": 8}}], "letters, digits"),
        ([{"model_config": [1]}], "must be an object"),
        ({"seed": 0}, "must be a list"),
    ):
        with pytest.raises(ValueError, match=message):
            cross_validate.ensemble_members(None, bad)
    with pytest.raises(ValueError, match="either seeds or members"):
        cross_validate.ensemble_members([0], [{"seed": 1}])
    assert cross_validate.ensemble_members(None, [{"model_config": {"n_mels": 8}}])[0]["name"] == "member_0"
    argv = ["--model_config", json.dumps({"n_mels": 16, "hidden_size": 8}), "--learning_rate", "1e-3"]
    fold_argv = cross_validate._fold_argv(argv, 2, tmp_path / "f", seed=0, model_config={"n_mels": 32})
    assert fold_argv.count("--model_config") == 1
    assert json.loads(fold_argv[fold_argv.index("--model_config") + 1]) == {"n_mels": 32, "hidden_size": 8}
    assert fold_argv[:2] == ["--learning_rate", "1e-3"]


@pytest.mark.slow
def test_cross_validate_parallel_folds_match_in_process_folds(small_corpus, tmp_path):
    import cross_validate

    common = train_args(small_corpus, tmp_path, "--num_train_epochs", "1", "--folds", "0,1")
    sequential = cross_validate.main([*common, "--output_dir", str(tmp_path / "seq")])
    parallel = cross_validate.main(
        [*common, "--output_dir", str(tmp_path / "par"), "--parallel_folds", "2", "--threads_per_fold", "1"]
    )
    assert parallel["parallel_folds"] == 2
    assert [f["fold"] for f in parallel["folds"]] == [0, 1]
    assert parallel["pooled"] == sequential["pooled"]
    for fold in (0, 1):
        assert (tmp_path / "par" / f"fold_{fold}" / "train.log").exists()
        rows = [read_jsonl(tmp_path / d / f"fold_{fold}" / "predictions_test.jsonl") for d in ("seq", "par")]
        assert rows[0] == rows[1]  # one thread in and out of process: the same numbers


@pytest.mark.slow
def test_no_validation_speakers_trains_on_every_non_test_speaker(small_corpus, tmp_path):
    import cross_validate

    argv = train_args(small_corpus, tmp_path / "cv", "--num_train_epochs", "3")
    argv[argv.index("--num_validation_speakers") + 1] = "0"
    with pytest.raises(ValueError, match="'last' or 'spaced'"):
        train.parse_arguments([*argv, "--ensemble_checkpoints", "2", "--save_total_limit", "0"])
    argv += ["--ensemble_checkpoints", "2", "--ensemble_selection", "last", "--save_total_limit", "0"]
    summary = cross_validate.main([*argv, "--folds", "0", "--seeds", "0,1"])
    fold = tmp_path / "cv" / "fold_0"
    runs = [json.loads((fold / f"seed_{s}" / "results.json").read_text()) for s in (0, 1)]
    for run in runs:
        protocol = run["protocol"]
        assert protocol["validation"] == []
        assert len(protocol["train"]) == 5
        assert run["num_train_examples"] == 30
        assert run["num_validation_examples"] == 0
        assert run["validation"] == {"num_examples": 0}
        # Nothing was evaluated during training; the ensemble is the last two epochs.
        state = json.loads((fold / "seed_0" / "checkpoint-12" / "trainer_state.json").read_text())
        assert not any(k.startswith("eval_") for entry in state["log_history"] for k in entry)
        assert [m["step"] for m in run["ensemble"]["members"]] == [8, 12]
    assert read_jsonl(fold / "predictions_validation.jsonl") == []
    assert summary["pooled"]["num_examples"] == 6
    assert "validation_ua" not in summary["folds"][0]
    assert "seed_0" in summary["components"]


@pytest.mark.slow
def test_cross_validate_seed_ensemble_averages_probabilities(small_corpus, tmp_path, monkeypatch):
    import cross_validate

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"output_dir": str(tmp_path / "cv"), "cross_validation": {"seeds": [0, 1]}}))
    argv = [
        str(recipe),
        *train_args(small_corpus, tmp_path / "cv", "--num_train_epochs", "2", "--folds", "0"),
    ]
    argv += ["--parallel_folds", "2", "--threads_per_fold", "1", "--ensemble_checkpoints", "2"]
    argv += ["--save_total_limit", "0"]
    summary = cross_validate.main(argv)
    assert summary["seeds"] == [0, 1]
    fold = tmp_path / "cv" / "fold_0"
    members = [read_jsonl(fold / f"seed_{s}" / "predictions_test.jsonl") for s in (0, 1)]
    rows = read_jsonl(fold / "predictions_test.jsonl")
    labels = summary["labels"]
    assert len(rows) == len(members[0]) == summary["pooled"]["num_examples"]
    runs = [json.loads((fold / f"seed_{s}" / "results.json").read_text()) for s in (0, 1)]
    assert runs[0]["protocol"]["test"] == runs[1]["protocol"]["test"]  # the same test speaker
    first = [[r["probabilities"][k] for k in labels] for r in members[0]]
    second = [[r["probabilities"][k] for k in labels] for r in members[1]]
    assert not np.allclose(first, second)
    expected = (np.array(first) + np.array(second)) / 2
    got = np.array([[r["probabilities"][k] for k in labels] for r in rows])
    assert np.allclose(got, expected, atol=1e-5)
    assert [r["prediction"] for r in rows] == [labels[i] for i in expected.argmax(1)]
    results = json.loads((fold / "results.json").read_text())
    assert sorted(results["member_ensemble"]["members"]) == ["seed_0", "seed_1"]
    assert results["member_ensemble"]["validation_speakers"] == {
        f"seed_{s}": r["protocol"]["validation"] for s, r in zip((0, 1), runs)
    }
    # The parts of the ensemble, pooled: each seed, and each seed's best checkpoint alone.
    components = summary["components"]
    assert sorted(components) == ["seed_0", "seed_0 single_checkpoint", "seed_1", "seed_1 single_checkpoint"]
    for seed in (0, 1):
        assert components[f"seed_{seed}"]["ua"] == pytest.approx(runs[seed]["ua"])
        single = runs[seed]["ensemble"]["single_model"]["test"]
        assert components[f"seed_{seed} single_checkpoint"]["ua"] == pytest.approx(single["ua"])
    assert "Parts of the ensemble" in (tmp_path / "cv" / "cv_results.md").read_text()
    # A rerun trains nothing and pools the same predictions.
    monkeypatch.setattr(cross_validate, "_run_subprocess", lambda *a: pytest.fail("retrained"))
    assert cross_validate.main(argv)["pooled"] == summary["pooled"]


@pytest.mark.slow
def test_cross_validate_variant_ensemble_trains_each_member_with_its_config(small_corpus, tmp_path):
    import cross_validate

    recipe = tmp_path / "recipe.json"
    members = [{"seed": 0}, {"name": "wide", "seed": 0, "model_config": {"hidden_size": 12}}]
    recipe.write_text(
        json.dumps({"output_dir": str(tmp_path / "cv"), "cross_validation": {"members": members}})
    )
    argv = [
        str(recipe),
        *train_args(small_corpus, tmp_path / "cv", "--num_train_epochs", "1", "--folds", "0"),
    ]
    summary = cross_validate.main([*argv, "--parallel_folds", "2", "--threads_per_fold", "1"])
    fold = tmp_path / "cv" / "fold_0"
    configs = {name: json.loads((fold / name / "config.json").read_text()) for name in ("seed_0", "wide")}
    assert configs["seed_0"]["hidden_size"] == 8
    assert configs["wide"]["hidden_size"] == 12
    assert configs["wide"]["n_mels"] == 16  # the command line's model_config still applies
    labels = summary["labels"]
    parts = [
        np.array(
            [
                [r["probabilities"][k] for k in labels]
                for r in read_jsonl(fold / name / "predictions_test.jsonl")
            ]
        )
        for name in ("seed_0", "wide")
    ]
    got = np.array(
        [[r["probabilities"][k] for k in labels] for r in read_jsonl(fold / "predictions_test.jsonl")]
    )
    assert np.allclose(got, (parts[0] + parts[1]) / 2, atol=1e-5)
    results = json.loads((fold / "results.json").read_text())
    assert results["member_ensemble"]["members"]["wide"]["model_config"] == {"hidden_size": 12}
    assert sorted(summary["components"]) == ["seed_0", "wide"]
    wide = json.loads((fold / "wide" / "results.json").read_text())
    assert summary["components"]["wide"]["ua"] == pytest.approx(wide["ua"])
    assert [m["name"] for m in summary["members"]] == ["seed_0", "wide"]
    assert "ensemble of seed_0, wide" in (tmp_path / "cv" / "cv_results.md").read_text()


def test_combine_members_with_different_validation_speakers(tmp_path):
    """The validation speakers of a fold are drawn with the training seed: seed runs may hold out
    different speakers. Test predictions are averaged; validation metrics are the runs' mean."""
    import cross_validate

    labels = ["angry", "sad"]
    results = {}
    for seed, (p_first, validation) in enumerate(((0.9, ["a"]), (0.2, ["b"]))):
        run = tmp_path / "fold_0" / f"seed_{seed}"
        run.mkdir(parents=True)
        rows = [
            {
                "utt_id": "t1",
                "speaker": "t",
                "label": "angry",
                "prediction": "",
                "probabilities": {"angry": p_first, "sad": 1 - p_first},
            },
            {
                "utt_id": "t2",
                "speaker": "t",
                "label": "sad",
                "prediction": "",
                "probabilities": {"angry": 0.3, "sad": 0.7},
            },
        ]
        (run / "predictions_test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        (run / "predictions_validation.jsonl").write_text(
            json.dumps(
                {
                    "utt_id": f"v{seed}",
                    "speaker": validation[0],
                    "label": "sad",
                    "prediction": "sad",
                    "probabilities": {"angry": 0.0, "sad": 1.0},
                }
            )
        )
        results[f"seed_{seed}"] = {
            "labels": labels,
            "wa": 0.5,
            "ua": 0.5,
            "macro_f1": 0.5,
            "validation": {"wa": 0.2 + seed, "ua": 0.4 + seed, "macro_f1": 0.6 + seed},
            "protocol": {"test": ["t"], "validation": validation, "train": ["c", "b" if seed == 0 else "a"]},
        }
    combined = cross_validate.combine_members(tmp_path / "fold_0", results)
    rows = read_jsonl(tmp_path / "fold_0" / "predictions_test.jsonl")
    assert rows[0]["probabilities"]["angry"] == pytest.approx(0.55)
    assert [r["prediction"] for r in rows] == ["angry", "sad"]
    assert combined["ua"] == 1.0
    assert combined["validation"]["ua"] == pytest.approx(0.9)  # mean of 0.4 and 1.4
    assert combined["validation"]["mean_of_seed_runs"] is True
    assert combined["protocol"]["validation"] == ["a", "b"]
    assert combined["protocol"]["train"] == ["c"]
    assert not (tmp_path / "fold_0" / "predictions_validation.jsonl").exists()
