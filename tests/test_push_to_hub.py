"""scripts/push_to_hub.py against a local stand-in for the Hub HTTP API (tests/fake_hub.py).

The end-to-end test runs the real command (with its trust_remote_code reload check) and
`HfApi.upload_folder` over HTTP to 127.0.0.1; the others call `main` in-process, some with the
reload check replaced, to cover cross-validation, pull requests, branches and dry runs quickly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import push_to_hub
import pytest
import yaml
from conftest import EMOTIONS, ROOT, TINY_SPECTROGRAM, label_kwargs
from fake_hub import FakeHub
from safetensors.numpy import load as load_safetensors
from ser_metrics import save_confusion_png
from tiny_runs import fake_results, save_tiny_ctc_model

TOKEN = "hf_FakeToken0123456789abcdefDoNotLeak"
LABELS = [EMOTIONS[i] for i in range(len(EMOTIONS))]
CODE_FILES = {
    "configuration_emotion_ssl.py",
    "modeling_emotion_ssl.py",
    "emotion_layers.py",
    "ssl_backbone.py",
    "feature_extraction_emotion.py",
    "processing_emotion.py",
}
MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "README.md",
    "confusion_matrix.png",
    "results.json",
    "training_config.json",
} | CODE_FILES
RECIPE = {
    "_comment": "IEMOCAP with a pretrained wav2vec2 backbone",
    "model_type": "emotion_ssl_ctc",
    "backbone_name_or_path": "facebook/wav2vec2-base",
    "dataset_name": "AbstractTTS/IEMOCAP",
    "protocol": "loso_session",
    "num_validation_speakers": 1,
    "learning_rate": 3e-5,
    "output_dir": "runs/iemocap_ctc",
}


def make_run(run_dir: Path, seed: int, fold: int, ua: float, validation_ua: float) -> None:
    """A train.py output directory: model files, results, args, confusion, checkpoint, logs."""
    save_tiny_ctc_model(run_dir, seed=seed)
    (run_dir / "results.json").write_text(
        json.dumps(fake_results(LABELS, fold, ua + 0.02, ua, validation_ua))
    )
    training_args = {"output_dir": str(run_dir), "learning_rate": 3e-5, "num_train_epochs": 7.0}
    training_args |= {"load_best_model_at_end": True, "metric_for_best_model": "ua", "hub_token": TOKEN}
    (run_dir / "training_args.json").write_text(json.dumps(training_args))
    save_confusion_png(
        [[5, 1, 0], [2, 3, 1], [0, 1, 4]], LABELS, run_dir / "confusion_test.png", f"fold {fold}"
    )
    (run_dir / "checkpoint-10").mkdir()
    (run_dir / "checkpoint-10" / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (run_dir / "checkpoint-10" / "optimizer.pt").write_bytes(b"\x80\x04pickle")
    (run_dir / "predictions_test.jsonl").write_text('{"utt_id": "a"}\n')
    (run_dir / "skipped.jsonl").write_text("")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "iemocap_ctc"
    make_run(path, seed=0, fold=0, ua=0.61, validation_ua=0.66)
    (path / "recipe.json").write_text(json.dumps(RECIPE))
    return path


@pytest.fixture(scope="module")
def cv_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cv") / "iemocap_cv"
    folds = []
    for fold, (ua, validation_ua) in enumerate([(0.70, 0.40), (0.50, 0.60), (0.55, 0.45)]):
        make_run(path / f"fold_{fold}", seed=fold, fold=fold, ua=ua, validation_ua=validation_ua)
        folds.append({"fold": fold, "test_speakers": [f"Ses0{fold + 1}F"], "num_test": 17, "wa": ua + 0.02})
        folds[-1] |= {
            "ua": ua,
            "macro_f1": ua - 0.01,
            "wer": 0.75,
            "cer": 0.5,
            "validation_ua": validation_ua,
        }
    pooled = {"wa": 0.6, "ua": 0.58, "macro_f1": 0.57, "num_examples": 51, "labels": LABELS}
    pooled["confusion_matrix"] = [[15, 3, 0], [6, 9, 3], [0, 3, 12]]
    cv = {"pooled": pooled, "folds": folds, "mean": {"wa": 0.6, "ua": 0.583, "macro_f1": 0.573, "wer": 0.75}}
    cv |= {"std": {"wa": 0.08, "ua": 0.085, "macro_f1": 0.085, "wer": 0.0}, "protocol": "loso_session"}
    cv |= {
        "speaker_independent": True,
        "transductive": False,
        "model_type": "emotion_ssl_ctc",
        "labels": LABELS,
    }
    (path / "cv_results.json").write_text(json.dumps(cv))
    save_confusion_png(pooled["confusion_matrix"], LABELS, path / "confusion_pooled.png", "pooled")
    (path / "recipe.json").write_text(json.dumps(RECIPE))
    return path


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any in-process connection that is not to this machine (no test reaches the internet)."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def hub(monkeypatch):
    """The stand-in Hub, with the environment pointing at it (in-process calls)."""
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    # The user-agent header looks up a registry at constants.ENDPOINT: keep it local and uncached.
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    with FakeHub(TOKEN) as server:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


@pytest.fixture
def skip_reload_check(monkeypatch) -> list[Path]:
    """Replace the (tested end to end below) trust_remote_code reload by a recorder."""
    calls: list[Path] = []
    monkeypatch.setattr(push_to_hub, "remote_check", lambda staging, loaded, workdir: calls.append(staging))
    return calls


def front_matter(readme: bytes | str) -> dict:
    text = readme.decode() if isinstance(readme, bytes) else readme
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)[1])


def model_index_metrics(metadata: dict) -> dict[str, float]:
    [entry] = metadata["model-index"]
    [result] = entry["results"]
    return {metric["type"]: metric["value"] for metric in result["metrics"]}


# ------------------------------------------------------------------------------------------------
# End to end: the command line, the reload check and the HTTP upload
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_uploads_model_card_and_space(run_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    # Anything but the stand-in goes to a closed local port and fails.
    env.update(
        HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost"
    )
    command = [
        sys.executable,
        str(ROOT / "scripts" / "push_to_hub.py"),
        str(run_dir),
        "--repo_id",
        "alice/ser-tiny",
    ]
    command += ["--space_id", "alice/ser-demo", "--private", "--license", "mit", "--language", "en"]
    with FakeHub(TOKEN) as hub:
        env["HF_ENDPOINT"] = hub.url
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Remote-code check passed" in done.stderr

    # The model repository: exactly the publishable files, weights and card as expected.
    model_repo = hub.repo("alice/ser-tiny")
    assert model_repo.private is True
    files = hub.files("alice/ser-tiny")
    assert set(files) == MODEL_FILES
    assert (
        load_safetensors(files["model.safetensors"]).keys()
        == load_safetensors((run_dir / "model.safetensors").read_bytes()).keys()
    )
    for name, tensor in load_safetensors(files["model.safetensors"]).items():
        assert (tensor == load_safetensors((run_dir / "model.safetensors").read_bytes())[name]).all(), name
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModelForAudioClassification"].startswith("modeling_emotion_ssl.")
    assert config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
    for name in CODE_FILES:
        assert files[name] == (ROOT / "modeling" / name).read_bytes(), name
    assert files["confusion_matrix.png"] == (run_dir / "confusion_test.png").read_bytes()
    [commit] = model_repo.commits
    assert commit["modes"]["model.safetensors"] == commit["modes"]["confusion_matrix.png"] == "lfsFile"
    assert commit["modes"]["README.md"] == commit["modes"]["config.json"] == "file"

    metadata = front_matter(files["README.md"])
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "audio-classification"
    assert metadata["base_model"] == "facebook/wav2vec2-base"
    assert metadata["datasets"] == ["AbstractTTS/IEMOCAP"]
    assert metadata["license"] == "mit"
    results = json.loads((run_dir / "results.json").read_text())
    expected = {"accuracy": results["wa"], "recall": results["ua"], "f1": results["macro_f1"], "wer": 0.75}
    assert model_index_metrics(metadata) == {k: round(v, 4) for k, v in expected.items()}
    [result] = metadata["model-index"][0]["results"]
    assert result["dataset"]["type"] == "AbstractTTS/IEMOCAP"
    assert result["dataset"]["args"]["protocol"] == "loso_session"
    card = files["README.md"].decode()
    for text in (
        "**Speaker-independent:**",
        "**Not transductive:**",
        "the checkpoint with the best validation UA was kept",
        "test speakers: Ses01F, Ses01M",
        "![Confusion matrix (rows: true class)](confusion_matrix.png)",
        "AutoModelForAudioClassification.from_pretrained(repo, trust_remote_code=True)",
        'pipeline("audio-classification", model="alice/ser-tiny", trust_remote_code=True)',
        "processor.decode_ctc",
        "What `trust_remote_code=True` means",
        "surveillance",
        "Acted vs. natural speech",
        "https://huggingface.co/spaces/alice/ser-demo",
    ):
        assert text in card, text
    training_config = json.loads(files["training_config.json"])
    assert training_config["recipe"]["backbone_name_or_path"] == "facebook/wav2vec2-base"
    assert "learning_rate" not in training_config["recipe"]  # a TrainingArguments field
    assert training_config["training_arguments"]["num_train_epochs"] == 7.0

    # The Space: gradio SDK, private, the model id filled in.
    space = hub.repo("alice/ser-demo", "space")
    assert space.sdk == "gradio"
    assert space.private is True
    space_files = hub.files("alice/ser-demo", "space")
    assert {"app.py", "ser_demo.py", "requirements.txt", "README.md", "packages.txt"} <= set(space_files)
    assert any(name.startswith("examples/") and name.endswith(".flac") for name in space_files)
    assert 'DEFAULT_MODEL_ID = "alice/ser-tiny"' in space_files["app.py"].decode()
    space_metadata = front_matter(space_files["README.md"])
    assert space_metadata["models"] == ["alice/ser-tiny"]
    assert space_metadata["sdk"] == "gradio"
    assert space_metadata["sdk_version"] == "6.31.0"
    assert space_metadata["app_file"] == "app.py"

    # The token authenticated every API call and appears nowhere else.
    assert all(r.status < 400 for r in hub.requests), [(r.method, r.path, r.status) for r in hub.requests]
    public = ("/lfs-storage/", "/api/agent-harnesses")
    api_calls = [r for r in hub.requests if not r.path.startswith(public)]
    assert api_calls
    assert all(r.authorization == f"Bearer {TOKEN}" for r in api_calls)
    assert TOKEN not in done.stdout + done.stderr
    assert not any(TOKEN.encode() in r.body for r in hub.requests)
    for repo in hub.repos.values():
        for branch in repo.branches.values():
            assert not any(TOKEN.encode() in content for content in branch.values())


# ------------------------------------------------------------------------------------------------
# In-process: dry run, pull requests, branches, cross-validation, refusals
# ------------------------------------------------------------------------------------------------


def test_dry_run_writes_exactly_what_is_uploaded(run_dir, hub, skip_reload_check, tmp_path):
    local = tmp_path / "staged"
    push_to_hub.main([str(run_dir), "--repo_id", "bob/ser", "--dry_run", "--local_dir", str(local)])
    assert hub.requests == []
    assert len(skip_reload_check) == 1
    staged = {p.name: p.read_bytes() for p in local.iterdir()}
    assert set(staged) == MODEL_FILES
    assert not any(TOKEN.encode() in content for content in staged.values())

    push_to_hub.main([str(run_dir), "--repo_id", "bob/ser"])
    assert hub.files("bob/ser") == staged

    push_to_hub.main([str(run_dir), "--repo_id", "bob/ser", "--create_pr", "--commit_message", "Update"])
    commit = hub.repo("bob/ser").commits[-1]
    assert commit["revision"] == "refs/pr/1"
    assert commit["summary"] == "Update"
    assert hub.files("bob/ser", revision="refs/pr/1") == staged
    assert any(r.query.get("create_pr") == ["1"] for r in hub.requests if r.path.endswith("/commit/main"))

    push_to_hub.main([str(run_dir), "--repo_id", "bob/ser", "--revision", "experiment"])
    assert hub.repo("bob/ser").commits[-1]["revision"] == "experiment"
    assert hub.files("bob/ser", revision="experiment") == staged
    assert len(hub.repo("bob/ser").commits) == 3


def test_cross_validation_publishes_the_best_validation_fold(cv_dir, skip_reload_check, tmp_path):
    local = tmp_path / "cv"
    summary = push_to_hub.main(
        [str(cv_dir), "--repo_id", "bob/ser-cv", "--dry_run", "--local_dir", str(local)]
    )
    assert summary["fold"] == 1  # validation UA 0.60 beats 0.40 and 0.45 (fold 0 has the best test UA)
    assert (local / "model.safetensors").read_bytes() != (
        cv_dir / "fold_0" / "model.safetensors"
    ).read_bytes()
    staged_weights = load_safetensors((local / "model.safetensors").read_bytes())
    fold_weights = load_safetensors((cv_dir / "fold_1" / "model.safetensors").read_bytes())
    assert all((staged_weights[name] == fold_weights[name]).all() for name in fold_weights)
    assert json.loads((local / "results.json").read_text())["protocol"]["fold"] == 1
    assert json.loads((local / "cv_results.json").read_text()) == json.loads(
        (cv_dir / "cv_results.json").read_text()
    )
    assert (local / "confusion_matrix.png").read_bytes() == (cv_dir / "confusion_pooled.png").read_bytes()
    card = (local / "README.md").read_text()
    assert "| 1 (published) |" in card
    assert "| pooled |" in card
    assert "| mean ± std |" in card
    assert "the model of fold 1 (chosen by its validation UA, 60.0%" in card
    metrics = model_index_metrics(front_matter(card))
    assert metrics == {"accuracy": 0.6, "recall": 0.58, "f1": 0.57, "wer": 0.75}

    chosen = push_to_hub.main(
        [
            str(cv_dir),
            "--repo_id",
            "bob/ser-cv",
            "--fold",
            "0",
            "--dry_run",
            "--local_dir",
            str(tmp_path / "f0"),
        ]
    )
    assert chosen["fold"] == 0
    with pytest.raises(push_to_hub.PublishError, match="--fold 7"):
        push_to_hub.main(
            [str(cv_dir), "--repo_id", "b/c", "--fold", "7", "--dry_run", "--local_dir", str(tmp_path / "x")]
        )


def test_failed_reload_check_uploads_nothing(run_dir, hub, monkeypatch):
    def differs(staging, loaded, workdir):
        push_to_hub.compare_reports(
            {"logits": [[0.0, 1.0]], "transcripts": [], "id2label": {}},
            {"logits": [[0.5, 1.0]], "id2label": {}},
        )

    monkeypatch.setattr(push_to_hub, "remote_check", differs)
    with pytest.raises(push_to_hub.PublishError, match="logits differ"):
        push_to_hub.main([str(run_dir), "--repo_id", "bob/never", "--space_id", "bob/never-space"])
    assert hub.requests == []


def test_compare_reports_names_every_difference():
    expected = {
        "logits": [[0.1, 0.2, 0.3]],
        "transcripts": ["abc"],
        "id2label": {"0": "a", "1": "b", "2": "c"},
    }
    same = {**expected, "pipeline": [[{"label": "a"}, {"label": "b"}, {"label": "c"}]], "leaked_modules": []}
    push_to_hub.compare_reports(expected, same)
    push_to_hub.compare_reports(expected, {**same, "logits": [[0.1 + 5e-6, 0.2, 0.3]]})
    broken = {
        **same,
        "logits": [[0.1, 0.2, 0.31]],
        "transcripts": ["abd"],
        "id2label": {"0": "x"},
        "leaked_modules": ["modeling"],
    }
    with pytest.raises(push_to_hub.PublishError) as error:
        push_to_hub.compare_reports(expected, broken)
    for text in ("logits differ", "transcripts differ", "id2label differs", "leaked"):
        assert text in str(error.value)


def test_staged_folder_policy(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in ("config.json", "README.md", "preprocessor_config.json", "model.safetensors"):
        (staged / name).write_text("{}")
    push_to_hub.check_staged_files(staged, TOKEN)
    (staged / "training_args.bin").write_bytes(b"\x80")
    (staged / "checkpoint-5").mkdir()
    (staged / "notes.yaml").write_text("x")
    (staged / "config.json").write_text(json.dumps({"token": TOKEN}))
    with pytest.raises(push_to_hub.PublishError) as error:
        push_to_hub.check_staged_files(staged, TOKEN)
    for text in (
        "training_args.bin: pickle-capable",
        "checkpoint-5: checkpoint",
        "notes.yaml: unexpected",
        "config.json: contains the Hub token",
    ):
        assert text in str(error.value)


def test_missing_token_fails_before_any_work(run_dir, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(push_to_hub, "resolve_source", lambda *a: pytest.fail("should stop before loading"))
    with pytest.raises(push_to_hub.PublishError, match="HF_TOKEN"):
        push_to_hub.main([str(run_dir), "--repo_id", "bob/ser"])


def test_bad_arguments_and_directories(tmp_path, capsys):
    with pytest.raises(SystemExit):
        push_to_hub.parse_args([str(tmp_path), "--repo_id", "no-owner"])
    with pytest.raises(SystemExit):
        push_to_hub.parse_args([str(tmp_path), "--repo_id", "a/b", "--create_pr", "--revision", "dev"])
    with pytest.raises(SystemExit):
        push_to_hub.parse_args([str(tmp_path), "--repo_id", "a/b", "--dry_run"])
    with pytest.raises(push_to_hub.PublishError, match=r"neither results\.json"):
        push_to_hub.resolve_source(tmp_path, None)


def test_space_staging_fills_model_and_revision(tmp_path):
    push_to_hub.stage_space(tmp_path / "space", "carol/ser", "v2")
    app = (tmp_path / "space" / "app.py").read_text()
    assert 'DEFAULT_MODEL_ID = "carol/ser"' in app
    assert 'DEFAULT_MODEL_REVISION = "v2"' in app
    assert front_matter((tmp_path / "space" / "README.md").read_text())["models"] == ["carol/ser"]
    assert not list((tmp_path / "space").rglob("__pycache__"))


# ------------------------------------------------------------------------------------------------
# --export_onnx
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stale_onnx(tmp_path_factory) -> Path:
    """model.onnx of another model (other weights, same architecture): what a run directory holds
    when it was exported before retraining."""
    import export_onnx

    other = tmp_path_factory.mktemp("other") / "model"
    save_tiny_ctc_model(other, seed=7)
    return Path(export_onnx.main([str(other)])["output"])


def test_export_onnx_uploads_an_export_of_the_uploaded_weights(
    run_dir, stale_onnx, hub, skip_reload_check, tmp_path
):
    """model.onnx goes up with the weights, exported from them (not the stale model.onnx lying in
    the run directory); predict.py --backend auto runs it from a copy of the repository, and its
    load-time probe refuses the stale file in its place; the card says how to use it."""
    import predict

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.copyfile(stale_onnx, run / "model.onnx")
    summary = push_to_hub.main([str(run), "--repo_id", "bob/ser-onnx", "--export_onnx"])
    assert max(summary["onnx_max_abs_diff"].values()) < 1e-3

    files = hub.files("bob/ser-onnx")
    assert set(files) == MODEL_FILES | {"model.onnx"}
    assert hub.repo("bob/ser-onnx").commits[-1]["modes"]["model.onnx"] == "lfsFile"
    repository = tmp_path / "repository"
    repository.mkdir()
    for name, content in files.items():
        (repository / name).write_bytes(content)
    args = predict.parse_arguments(
        [str(repository), "x", "--output", str(tmp_path / "o.csv"), "--device", "cpu"]
    )
    assert predict.load_predictor(args).backend == "onnxruntime"
    shutil.copyfile(stale_onnx, repository / "model.onnx")
    assert predict.load_predictor(args).backend == "torch"  # the probe tells a stale export apart

    card = files["README.md"].decode()
    assert "onnx" in front_matter(card)["tags"]
    for text in (
        "`model.onnx` is an ONNX export of these weights",
        "returns `logits` and `ctc_logits`",
        "python scripts/predict.py bob/ser-onnx recordings/ --output predictions.csv --backend auto",
        'hf_hub_download("bob/ser-onnx", "model.onnx")',
    ):
        assert text in card, text

    # Without the option nothing ONNX is uploaded, even with model.onnx in the run directory.
    push_to_hub.main([str(run), "--repo_id", "bob/ser-plain"])
    assert set(hub.files("bob/ser-plain")) == MODEL_FILES
    assert "model.onnx" not in hub.files("bob/ser-plain")["README.md"].decode()


def test_export_onnx_that_differs_from_pytorch_uploads_nothing(
    run_dir, stale_onnx, hub, skip_reload_check, monkeypatch
):
    import export_onnx

    def stale_export(model, extractor, output, exporter, opset):
        shutil.copyfile(stale_onnx, output)  # a graph of other weights in place of the export

    monkeypatch.setattr(export_onnx, "export", stale_export)
    with pytest.raises(push_to_hub.PublishError, match="onnxruntime does not reproduce the PyTorch model"):
        push_to_hub.main([str(run_dir), "--repo_id", "bob/stale", "--export_onnx", "--space_id", "bob/s"])
    assert hub.requests == []
    assert skip_reload_check == []  # refused before the reload check


def test_export_onnx_refuses_a_family_without_export(tmp_path, monkeypatch, capsys):
    """emotion_segment_crnn: exit status 2 with export_onnx.py's reason, before the model is even
    loaded, and no folder written."""
    from modeling import MODEL_CLASSES, EmotionFeatureExtractor

    config_class, model_class = MODEL_CLASSES["emotion_segment_crnn"]
    model = model_class(config_class(**TINY_SPECTROGRAM["emotion_segment_crnn"], **label_kwargs()))
    run = tmp_path / "crnn"
    model.save_pretrained(run)
    EmotionFeatureExtractor(**model.config.feature_extractor_kwargs()).save_pretrained(run)
    results = fake_results(LABELS, 0, 0.5, 0.5, 0.5) | {"model_type": "emotion_segment_crnn"}
    (run / "results.json").write_text(json.dumps(results))
    monkeypatch.setattr(push_to_hub, "load_local_model", lambda *a: pytest.fail("should stop before loading"))
    local = tmp_path / "staged"
    argv = [str(run), "--repo_id", "bob/crnn", "--export_onnx", "--dry_run", "--local_dir", str(local)]
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.cli()
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "--export_onnx: emotion_segment_crnn models cannot be exported to ONNX" in message
    assert "number of segments is read from the data" in message
    assert "Publish without --export_onnx" in message
    assert "Traceback" not in message
    assert not local.exists()
