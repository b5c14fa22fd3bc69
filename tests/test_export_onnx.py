"""scripts/export_onnx.py: every exportable family matches onnxruntime on padded batches of new
lengths; the others are refused with the reason."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import export_onnx
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import TINY_DECOMPOSITION, TINY_SPECTROGRAM, label_kwargs, speech_like, tiny_backbone_config

from modeling import MODEL_CLASSES, EmotionFeatureExtractor

TINY = {
    "emotion_ssl": {"backbone_config": tiny_backbone_config(), "pooling": "attentive_statistics"},
    "emotion_ssl/wavlm-group-norm": {
        "backbone_config": tiny_backbone_config("wavlm", feat_extract_norm="group"),
        "use_weighted_layer_sum": True,
    },
    "emotion_ssl_ctc": {"backbone_config": tiny_backbone_config(), "vocab_size": 12},
    **TINY_SPECTROGRAM,
    # F0 input and Δ/ΔΔ channels in one variant: both add length-dependent steps to the graph.
    "emotion_cnn_transformer/pitch-deltas": {
        **TINY_SPECTROGRAM["emotion_cnn_transformer"],
        "pitch_embedding_size": 4,
        "delta_order": 2,
    },
    "emotion_decomposed": {
        "backbone_config": tiny_backbone_config(),
        "ctc_weight": 0.1,
        "vocab_size": 12,
        **TINY_DECOMPOSITION,
    },
    "speech_decomposition": TINY_DECOMPOSITION,
}
EXPORTABLE = [
    "emotion_ssl",
    "emotion_ssl/wavlm-group-norm",
    "emotion_ssl_ctc",
    "emotion_cnn_transformer",
    "emotion_cnn_transformer/pitch-deltas",
    "emotion_decomposed",
    "speech_decomposition",
]
PITCH_INPUT = ("emotion_cnn_transformer/pitch-deltas", "emotion_decomposed")
REFUSED = {"emotion_segment_crnn": ["int(counts.max())", "packed sequences", "segment count"]}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny(name: str, directory: Path) -> Path:
    model_type = name.split("/")[0]
    config_class, model_class = MODEL_CLASSES[model_type]
    torch.manual_seed(0)
    model = model_class(config_class(**TINY[name], **label_kwargs())).eval()
    model.save_pretrained(directory)
    EmotionFeatureExtractor(**model.config.feature_extractor_kwargs()).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_matches_onnxruntime_on_new_lengths(name, tmp_path):
    model_dir = save_tiny(name, tmp_path / "model")
    output = tmp_path / "model.onnx"
    report = export_onnx.main([str(model_dir), "--output", str(output)])
    assert report["exporter"] == ("dynamo" if name.startswith("emotion_cnn_transformer") else "legacy")
    assert max(report["max_abs_diff"].values()) < 1e-3
    assert not (tmp_path / "model.onnx.log").exists()

    # Independently of the script's own check: a batch of 4 clips at lengths the export never saw.
    model, extractor = export_onnx.load(str(model_dir))
    clips = [speech_like(s, seed=20 + i) for i, s in enumerate((2.7, 0.3, 1.15, 0.05))]
    features = extractor(clips, sampling_rate=16000, return_tensors="np")
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    # Stage-1 speaker logits do not read pitch_ids, so its graph has no such input.
    assert list(inputs)[:2] == ["input_values", "attention_mask"]
    assert set(inputs) <= set(features)
    assert ("pitch_ids" in inputs) == (name in PITCH_INPUT)
    assert all(isinstance(dim, str) for i in inputs.values() for dim in i.shape)  # dynamic batch and time
    outputs = session.run(None, {name: features[name] for name in inputs})
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in features.items()})
    assert outputs[0].shape == expected.logits.shape == (4, model.config.num_labels)
    assert np.abs(outputs[0] - expected.logits.numpy()).max() < 1e-4
    if "ctc_logits" in expected and expected.ctc_logits is not None:
        assert [o.name for o in session.get_outputs()] == ["logits", "ctc_logits"]
        assert np.abs(outputs[1] - expected.ctc_logits.numpy()).max() < 1e-4
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["id2label"]) == {"0": "neutral", "1": "angry", "2": "sad"}
    assert metadata["sampling_rate"] == "16000"


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_non_exportable_families_exit_with_the_reason(model_type, tmp_path, caplog):
    model_dir = save_tiny(model_type, tmp_path / "model")
    output = tmp_path / "model.onnx"
    with caplog.at_level(logging.ERROR, logger="export_onnx"):
        status = export_onnx.cli([str(model_dir), "--output", str(output)])
    assert status == 2
    message = caplog.text
    assert f"{model_type} models cannot be exported to ONNX" in message
    for reason in REFUSED[model_type]:
        assert reason in message
    assert not output.exists()


def test_parity_failure_and_missing_model_exit_codes(tmp_path, caplog):
    model_dir = save_tiny("emotion_ssl", tmp_path / "model")
    with caplog.at_level(logging.ERROR, logger="export_onnx"):
        assert (
            export_onnx.cli([str(model_dir), "--output", str(tmp_path / "m.onnx"), "--tolerance", "1e-12"])
            == 1
        )
        assert "parity check failed" in caplog.text
        assert export_onnx.cli([str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.onnx")]) == 2
        assert "cannot load model" in caplog.text


def test_default_output_is_model_onnx_in_the_model_directory(tmp_path):
    """Where `predict.py --backend auto` looks for it; a Hub id needs --output."""
    model_dir = save_tiny("emotion_ssl", tmp_path / "model")
    report = export_onnx.main([str(model_dir)])
    assert report["output"] == str(model_dir / "model.onnx")
    assert (model_dir / "model.onnx").is_file()
    with pytest.raises(SystemExit):
        export_onnx.parse_arguments(["someone/some-model"])
