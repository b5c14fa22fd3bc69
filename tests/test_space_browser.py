"""The Gradio Space in a real browser: start `spaces/app.py` on localhost with a tiny model, upload a
clip in headless Chromium, and check that the page shows the model's own prediction.

Also a tool for the README screenshot (the real demo model, the long example clip):

    .venv/bin/python tests/test_space_browser.py --model outputs/demo \
        --clip spaces/examples/neutral_angry_sad_spk05.flac --gender male --screenshot docs/space_screenshot.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "spaces" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
sys.path.insert(0, str(ROOT / "spaces"))

from ser_demo import AudioDecodeError, check_level, load_audio, window_starts  # noqa: E402


def browser_skip_reason() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; CI sets EXTRA_APT=chromium)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -r requirements-dev.txt)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(model_dir: Path | str, workdir: Path, timeout: float = 240) -> Iterator[str]:
    """`python spaces/app.py` with MODEL_ID=model_dir on a free port; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN")}
    env.update(
        MODEL_ID=str(model_dir),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(workdir / "hf_modules"),
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    log = open(workdir / "app.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, str(APP)], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"the app exited with {process.returncode}:\n{(workdir / 'app.log').read_text()[-4000:]}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
            if time.time() > deadline:
                raise AssertionError(
                    f"the app did not start in {timeout} s:\n{(workdir / 'app.log').read_text()[-4000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def analyse_in_page(page, clip: Path, gender: str | None = None, timeout_ms: int = 120_000) -> dict:
    """Upload `clip`, press the button, wait for the result; returns what the page shows."""
    clear = page.locator("#audio-input button[aria-label='Clear']")
    if clear.count():  # a previous clip: the file input returns once it is cleared
        clear.first.click()
    page.locator("#audio-input input[type=file]").set_input_files(str(clip))
    page.wait_for_selector("#audio-input audio", state="attached", timeout=30_000)  # upload done
    if gender:
        page.locator("#gender").get_by_label(gender, exact=True).check()
    toast = page.locator(".toast-body")
    label = page.locator('#emotion-label [data-testid="label-output-value"]')
    status = page.locator("#emotion-label [data-testid='status-tracker']")
    errors_before, had_label = toast.count(), label.count() > 0
    page.click("#submit")
    seen_busy, deadline = False, time.time() + timeout_ms / 1000
    while True:
        if toast.count() > errors_before:
            return {"error": toast.last.inner_text()}
        busy = any(word in status.inner_text() for word in ("processing", "queue"))
        seen_busy = seen_busy or busy
        if label.count() and not busy and (seen_busy or not had_label):
            break
        if time.time() > deadline:
            raise AssertionError("no prediction appeared in the page")
        page.wait_for_timeout(50)
    page.wait_for_timeout(500)  # let the plots render
    return {
        "label": label.inner_text().strip(),
        "transcript": page.locator("#transcript textarea").input_value()
        if page.locator("#transcript").is_visible()
        else None,
        "timeline_visible": page.locator("#timeline-plot").is_visible(),
        "signal_plot": page.locator("#signal-plot img, #signal-plot svg, #signal-plot canvas").count() > 0,
    }


def direct_prediction(model_dir: Path, clip: Path) -> tuple[str, str]:
    """The model's label and transcript for the clip, computed without the app."""
    import torch

    from modeling import EmotionCTCForAudioClassification, EmotionFeatureExtractor, EmotionProcessor

    model = EmotionCTCForAudioClassification.from_pretrained(model_dir).eval()
    extractor = EmotionFeatureExtractor.from_pretrained(model_dir)
    processor = EmotionProcessor.from_pretrained(model_dir)
    waveform, rate = sf.read(clip, dtype="float32")
    features = extractor(waveform, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**features)
    lengths = model.ctc_frame_lengths(features["input_values"], features["attention_mask"])
    label = model.config.id2label[int(outputs.logits[0].argmax())]
    return label, processor.decode_ctc(outputs.ctc_logits, lengths)[0]


# ------------------------------------------------------------------------------------------------
# Helpers without a browser
# ------------------------------------------------------------------------------------------------


def test_audio_checks_give_readable_errors(tmp_path):
    silent, broken, empty = tmp_path / "silent.wav", tmp_path / "broken.wav", tmp_path / "empty.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    broken.write_bytes(b"RIFF\x00\x00WAVEfmt not really audio" * 20)
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="silent"):
        check_level(load_audio(str(silent), 16000), 16000, 0.3)
    with pytest.raises(AudioDecodeError, match="too short"):
        check_level(np.ones(100, np.float32), 16000, 0.3)
    for path in (broken, empty):
        with pytest.raises(AudioDecodeError, match="Could not read this file"):
            load_audio(str(path), 16000)


def test_load_audio_downmixes_and_resamples(tmp_path):
    stereo = np.stack([np.sin(np.arange(44100) / 10), np.zeros(44100)], axis=1).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", stereo, 44100)
    waveform = load_audio(str(tmp_path / "stereo.wav"), 16000)
    assert waveform.dtype == np.float32
    assert waveform.ndim == 1
    assert abs(waveform.size - 16000) <= 1
    assert 0.4 < np.abs(waveform).max() < 0.6  # mean of a full-scale and a silent channel


def test_window_starts_cover_the_clip():
    assert window_starts(100, 200, 50) == [0]
    starts = window_starts(16000 * 8, 48000, 16000)
    assert starts[0] == 0
    assert starts[-1] + 48000 == 16000 * 8
    assert window_starts(16000 * 7 + 5, 48000, 16000)[-1] == 16000 * 7 + 5 - 48000


# ------------------------------------------------------------------------------------------------
# The browser test
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_space_predicts_in_a_real_browser(tmp_path):
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from conftest import speech_like
    from playwright.sync_api import sync_playwright
    from tiny_runs import save_tiny_ctc_model

    model_dir = tmp_path / "model"
    save_tiny_ctc_model(model_dir, seed=1)
    clip, broken = tmp_path / "clip.wav", tmp_path / "broken.wav"
    sf.write(clip, speech_like(4.0, seed=3), 16000)  # longer than a 3 s window: timeline
    broken.write_bytes(b"RIFF\x00\x00WAVEfmt not really audio" * 50)
    expected_label, expected_transcript = direct_prediction(model_dir, clip)

    with running_app(model_dir, tmp_path) as url, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url)
            page.wait_for_selector("#audio-input")
            assert not page.locator("#gender").is_visible()  # no pitch input for this model
            shown = analyse_in_page(page, clip)
            page.screenshot(path=str(tmp_path / "space.png"), full_page=True)
            assert shown.get("error") is None, shown
            assert shown["label"] == expected_label
            assert shown["transcript"] == expected_transcript
            assert shown["timeline_visible"]
            assert shown["signal_plot"]
            failure = analyse_in_page(page, broken)
            assert "Could not read this file as audio" in failure.get("error", ""), failure
            assert "Traceback" not in failure["error"]
        finally:
            browser.close()
    assert (tmp_path / "space.png").stat().st_size > 10_000


def take_screenshot(model: Path, clip: Path, gender: str | None, output: Path) -> None:
    from playwright.sync_api import sync_playwright

    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"space_screenshot_{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    # A path inside the repository is passed as given (e.g. outputs/demo): the app resolves it
    # against the repository root and shows it as the model id.
    model_id = str(model.resolve().relative_to(ROOT)) if model.resolve().is_relative_to(ROOT) else str(model)
    with running_app(model_id, workdir) as url, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(url)
        page.wait_for_selector("#audio-input")
        shown = analyse_in_page(page, clip.resolve(), gender)
        print(shown)
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output), full_page=True)
        browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Screenshot of the Space with a real model")
    parser.add_argument("--model", type=Path, default=ROOT / "outputs" / "demo")
    parser.add_argument(
        "--clip", type=Path, default=ROOT / "spaces" / "examples" / "neutral_angry_sad_spk05.flac"
    )
    parser.add_argument("--gender", default="male")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "space_screenshot.png")
    options = parser.parse_args()
    take_screenshot(options.model, options.clip, options.gender, options.screenshot)
