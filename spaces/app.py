"""Gradio demo of a speech emotion recognition model (a Hugging Face Space, or locally).

    MODEL_ID=outputs/demo python spaces/app.py          # what `make space` runs
    MODEL_ID=owner/model python spaces/app.py           # a Hub model

Settings (environment variables):
    MODEL_ID            Hub repo id or local directory; default `DEFAULT_MODEL_ID` below
                        (`push_to_hub.py --space_id` writes the published model's id there). A
                        relative local path is looked up in the current directory, then in the
                        repository root (the parent of spaces/).
    MODEL_REVISION      Hub revision (branch, tag or commit) of MODEL_ID.
    GRADIO_SERVER_NAME  Address to listen on, default 127.0.0.1 (Spaces set 0.0.0.0).
    GRADIO_SERVER_PORT  Port, default 7860.
    MAX_AUDIO_SECONDS   Longest accepted recording (default 60); MAX_UPLOAD_MB (default 20).
    TIMELINE_WINDOW_SECONDS / TIMELINE_HOP_SECONDS  Windows of the emotion timeline (3 / 1), drawn
                        for recordings longer than one window.

The model loads once, with `trust_remote_code=True` (the model's code comes from its repository).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from ser_demo import AudioDecodeError, check_level, load_audio, signal_figure, timeline_figure, window_starts
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, AutoProcessor

DEFAULT_MODEL_ID = "outputs/demo"
DEFAULT_MODEL_REVISION = None

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"
MAX_AUDIO_SECONDS = float(os.environ.get("MAX_AUDIO_SECONDS", 60))
MAX_UPLOAD_MB = float(os.environ.get("MAX_UPLOAD_MB", 20))
MIN_AUDIO_SECONDS = 0.3
WINDOW_SECONDS = float(os.environ.get("TIMELINE_WINDOW_SECONDS", 3.0))
HOP_SECONDS = float(os.environ.get("TIMELINE_HOP_SECONDS", 1.0))
GENDERS = ["unknown", "female", "male"]

logger = logging.getLogger("ser_space")
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def resolve_model_id(model_id: str) -> str:
    """A local directory if one exists under that name (cwd, then the repository root), else a Hub id."""
    for base in (Path.cwd(), HERE.parent):
        candidate = (base / model_id).expanduser()
        if candidate.is_dir():
            return str(candidate)
    looks_local = model_id.startswith((".", "/", "~")) or model_id.count("/") != 1
    if looks_local or Path(model_id).parts[0] in ("outputs", "runs"):
        raise SystemExit(f"MODEL_ID={model_id!r}: no such directory (`make demo` trains outputs/demo).")
    return model_id


class EmotionDemo:
    """The model, its feature extractor and (for CTC models) its processor, loaded once."""

    def __init__(self, model_id: str, revision: str | None = None):
        self.model_id = model_id
        source = resolve_model_id(model_id)
        kwargs = {"trust_remote_code": True, "revision": revision}
        try:
            self.model = AutoModelForAudioClassification.from_pretrained(source, **kwargs).eval()
            self.extractor = AutoFeatureExtractor.from_pretrained(source, **kwargs)
        except OSError as error:
            raise SystemExit(f"Could not load MODEL_ID={model_id!r}: {error}") from None
        self.processor = None
        if hasattr(self.model, "ctc_frame_lengths"):
            try:
                processor = AutoProcessor.from_pretrained(source, **kwargs)
            except (OSError, ValueError, TypeError):  # no tokenizer saved: no transcripts
                processor = None
            if hasattr(processor, "decode_ctc"):
                self.processor = processor
        config = self.model.config
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]
        self.sampling_rate = int(self.extractor.sampling_rate)
        self.uses_pitch = bool(getattr(self.extractor, "compute_pitch", False))
        self.hop_length = int(getattr(self.extractor, "hop_length", 256))

    @torch.inference_mode()
    def classify(
        self, waveforms: list[np.ndarray], gender: str | None
    ) -> tuple[np.ndarray, list[str] | None]:
        """Class probabilities (N, C) and, with a CTC head, transcripts."""
        probabilities, transcripts = [], []
        for start in range(0, len(waveforms), 8):
            batch = waveforms[start : start + 8]
            kwargs = {"gender": [gender] * len(batch)} if self.uses_pitch else {}
            features = self.extractor(batch, sampling_rate=self.sampling_rate, return_tensors="pt", **kwargs)
            outputs = self.model(**features)
            probabilities.append(outputs.logits.float().softmax(-1).numpy())
            if self.processor is not None and getattr(outputs, "ctc_logits", None) is not None:
                lengths = self.model.ctc_frame_lengths(
                    features["input_values"], features.get("attention_mask")
                )
                transcripts += self.processor.decode_ctc(outputs.ctc_logits, lengths)
        return np.concatenate(probabilities), (transcripts if self.processor is not None else None)

    def f0(self, waveform: np.ndarray, gender: str | None) -> np.ndarray | None:
        if not hasattr(self.extractor, "extract_f0"):
            return None
        try:
            return self.extractor.extract_f0(waveform, gender)
        except ImportError:  # pyworld missing: plot without F0
            return None


def build_app(demo: EmotionDemo) -> gr.Blocks:
    def analyse(audio_path: str | None, gender: str):
        if not audio_path:
            raise gr.Error("Upload or record a clip first.")
        try:
            if os.path.getsize(audio_path) > MAX_UPLOAD_MB * 2**20:
                raise AudioDecodeError(f"The file is larger than {MAX_UPLOAD_MB:g} MB.")
            waveform = load_audio(audio_path, demo.sampling_rate)
            seconds = waveform.size / demo.sampling_rate
            if seconds > MAX_AUDIO_SECONDS:
                raise AudioDecodeError(
                    f"The recording is {seconds:.0f} s long; this demo accepts up to {MAX_AUDIO_SECONDS:g} s."
                )
            check_level(waveform, demo.sampling_rate, MIN_AUDIO_SECONDS)
        except AudioDecodeError as error:
            raise gr.Error(str(error)) from None
        speaker_gender = None if gender == "unknown" else gender
        try:
            probabilities, transcripts = demo.classify([waveform], speaker_gender)
        except ValueError as error:  # AudioInputError of the feature extractor
            raise gr.Error(f"The model cannot use this audio: {error}") from None
        scores = {label: float(p) for label, p in zip(demo.labels, probabilities[0])}
        transcript = gr.update(value=transcripts[0] if transcripts else "", visible=transcripts is not None)
        figure = signal_figure(
            waveform, demo.sampling_rate, demo.f0(waveform, speaker_gender), demo.hop_length
        )
        window, hop = int(WINDOW_SECONDS * demo.sampling_rate), int(HOP_SECONDS * demo.sampling_rate)
        timeline = gr.update(value=None, visible=False)
        if waveform.size > window + hop // 2:
            starts = window_starts(waveform.size, window, hop)
            window_probabilities, _ = demo.classify(
                [waveform[s : s + window] for s in starts], speaker_gender
            )
            centres = [(s + window / 2) / demo.sampling_rate for s in starts]
            timeline = gr.update(
                value=timeline_figure(centres, window_probabilities, demo.labels, WINDOW_SECONDS),
                visible=True,
            )
        return scores, transcript, figure, timeline

    description = (
        f"Model: **{demo.model_id}**. Classes: {', '.join(demo.labels)}. Upload a recording or use the "
        f"microphone ({MIN_AUDIO_SECONDS:g}–{MAX_AUDIO_SECONDS:g} s, up to {MAX_UPLOAD_MB:g} MB). "
        "The model reports the emotion *expressed* in speech, as labelled in its training data "
        "(often acted); it does not know what anyone feels. Do not use it to make decisions about people."
    )
    with gr.Blocks(title="Speech emotion recognition", analytics_enabled=False) as app:
        gr.Markdown("# Speech emotion recognition\n" + description)
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", label="Speech", elem_id="audio-input"
                )
                gender = gr.Radio(
                    GENDERS,
                    value="unknown",
                    label="Speaker gender (selects the F0 range and pitch normalisation)",
                    visible=demo.uses_pitch,
                    elem_id="gender",
                )
                submit = gr.Button("Recognise emotion", variant="primary", elem_id="submit")
            with gr.Column():
                label = gr.Label(
                    num_top_classes=min(5, len(demo.labels)), label="Emotion", elem_id="emotion-label"
                )
                transcript = gr.Textbox(
                    label="Transcript (CTC head)",
                    placeholder="(the CTC head decoded no characters)",
                    visible=demo.processor is not None,
                    interactive=False,
                    elem_id="transcript",
                )
        signal = gr.Plot(label="Waveform, F0 and log-mel spectrogram", elem_id="signal-plot")
        timeline = gr.Plot(label="Emotion timeline", visible=False, elem_id="timeline-plot")
        outputs = [label, transcript, signal, timeline]
        submit.click(analyse, inputs=[audio, gender], outputs=outputs, api_name="analyse")
        examples = sorted(EXAMPLES.glob("*.flac")) + sorted(EXAMPLES.glob("*.wav"))
        if examples:
            gr.Examples(
                [[str(path), "male" if demo.uses_pitch else "unknown"] for path in examples],
                inputs=[audio, gender],
                outputs=outputs,
                fn=analyse,
                cache_examples=False,
                label="Examples (synthetic espeak-ng speech from the demo corpus, male voices)",
            )
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    model_id = os.environ.get("MODEL_ID") or DEFAULT_MODEL_ID
    revision = os.environ.get("MODEL_REVISION") or DEFAULT_MODEL_REVISION
    demo = EmotionDemo(model_id, revision)
    app = build_app(demo)
    app.queue(max_size=int(os.environ.get("QUEUE_SIZE", 16)), default_concurrency_limit=1)
    app.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        share=False,
        max_file_size=f"{MAX_UPLOAD_MB:g}mb",
        allowed_paths=[str(EXAMPLES)],
        ssr_mode=False,
        show_error=True,
    )


if __name__ == "__main__":
    main()
