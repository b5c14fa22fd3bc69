"""Run in a separate interpreter outside the repository: load a saved model only through
`trust_remote_code=True` and report logits and pipeline output as one JSON line.

usage: remote_check.py MODEL_DIR INPUTS.npz EXTRA_JSON
"""

import json
import sys

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, pipeline


def main() -> None:
    model_dir, inputs_path, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if any(name == "modeling" or name.startswith("modeling.") for name in sys.modules):
        raise SystemExit("the local modeling package leaked into the remote check")
    with np.load(inputs_path, allow_pickle=False) as data:
        waveforms = [data[key] for key in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    model = AutoModelForAudioClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    report = {"model_class": type(model).__name__, "module": type(model).__module__, "logits": []}
    with torch.no_grad():
        for waveform in waveforms:
            features = extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt")
            report["logits"].append(model(**features).logits[0].tolist())
            assert torch.allclose(base(**features).logits, model(**features).logits)
    classifier = pipeline("audio-classification", model=model_dir, trust_remote_code=True)
    report["pipeline"] = [classifier(w, top_k=None) for w in waveforms]
    if extra.get("audio_file"):
        report["pipeline_file"] = classifier(extra["audio_file"])
    if extra.get("processor"):
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
        features = processor(waveforms[0], sampling_rate=extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            out = model(**features)
        lengths = model.ctc_frame_lengths(features["input_values"], features.get("attention_mask"))
        report["transcripts"] = processor.decode_ctc(out.ctc_logits, lengths)
    report["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
