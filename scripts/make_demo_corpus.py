"""Synthesise the small labelled emotional-speech corpus that `make demo` and the tests train on.

Speakers are espeak-ng voices and variants, each with its own base pitch and rate. Every speaker
says a subset of ~20 neutral-content English sentences once per emotion; the emotion is rendered
as prosody (SSML pitch level, pitch range and rate, espeak-ng's word gap) plus a post-synthesis
vocal-effort cue (spectral tilt and peak level). Every parameter is jittered per utterance, so
the classes overlap: the task is learnable but not trivial.

The output is a `datasets` audiofolder (16 kHz mono 16-bit FLAC under `audio/` and
`metadata.csv` with file_name, emotion, text, speaker, gender):

    python scripts/make_demo_corpus.py --output_dir data/demo            # 8 x 4 x 12 = 384 clips
    python scripts/make_demo_corpus.py --output_dir /tmp/tiny --small    # 4 x 4 x 3 = 48 clips

    from make_demo_corpus import make_corpus
    corpus_dir = make_corpus("data/demo", num_speakers=8, sentences_per_speaker=12, seed=0)
    dataset = datasets.load_dataset("audiofolder", data_dir=str(corpus_dir), split="train")

Generation is deterministic given the seed and the espeak-ng version: each clip draws its own
random numbers from (seed, speaker, emotion, sentence), so a smaller corpus is a subset of a
larger one made with the same seed. A `corpus_manifest.json` records the settings, a hash of the
recipe, the espeak-ng version and the file count; a second call with the same settings does
nothing. A new corpus is built in a sibling temporary directory and renamed into place, so an
interrupted run never leaves a half corpus that looks complete.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf

logger = logging.getLogger("make_demo_corpus")

# Bump when the signal processing changes in a way the recipe hash below cannot see.
GENERATOR_VERSION = 2
MANIFEST_NAME = "corpus_manifest.json"
METADATA_NAME = "metadata.csv"
AUDIO_DIR = "audio"
SAMPLING_RATE = 16000
ESPEAK_SAMPLING_RATE = 22050
EMOTIONS = ("neutral", "happy", "angry", "sad")
SMALL_SETTINGS = {"num_speakers": 4, "sentences_per_speaker": 3}


class EspeakNotFoundError(RuntimeError):
    """espeak-ng is not installed (Debian package `espeak-ng`)."""


@dataclass(frozen=True)
class Speaker:
    """An espeak-ng voice+variant with its own base pitch (-p, 0-99) and rate (-s, words/min)."""

    speaker_id: str
    voice: str
    gender: str
    base_pitch: int
    base_rate: int


@dataclass(frozen=True)
class EmotionStyle:
    """Mean prosody of one emotion, relative to the speaker's neutral voice.

    pitch_percent: SSML `pitch`, change of pitch level in percent.
    range_percent: SSML `range`, pitch range in percent of normal.
    rate_percent: SSML `rate`, speaking rate in percent of normal.
    word_gap: espeak-ng `-g`, extra pause between words in units of 10 ms.
    tilt: spectral tilt after synthesis, y = x + tilt * (x[n] - x[n-1]); > 0 is brighter (more
        vocal effort), < 0 darker. The gain at Nyquist is 1 + 2 * tilt.
    level_db: peak level in dBFS of the final clip.
    """

    pitch_percent: float
    range_percent: float
    rate_percent: float
    word_gap: float
    tilt: float
    level_db: float


# Alternating genders, so the first k speakers of any size are balanced. en-gb+<variant> ignores
# the variant in espeak-ng 1.51, hence `en+...` and the named British voices.
# Speakers differ in voice, base pitch and rate, but less than the emotions do: with a handful of
# training speakers, a wider spread made held-out speakers' neutral speech look like another
# emotion (version 1 of this generator: 36 % UA on held-out speakers against 75 % on validation).
SPEAKERS = (
    Speaker("spk01", "en-us+m1", "male", base_pitch=46, base_rate=169),
    Speaker("spk02", "en-us+f1", "female", base_pitch=49, base_rate=173),
    Speaker("spk03", "en+m3", "male", base_pitch=51, base_rate=175),
    Speaker("spk04", "en+f2", "female", base_pitch=46, base_rate=167),
    Speaker("spk05", "en-gb-scotland+m4", "male", base_pitch=48, base_rate=165),
    Speaker("spk06", "en-gb-x-rp+f4", "female", base_pitch=52, base_rate=177),
    Speaker("spk07", "en-029+m7", "male", base_pitch=44, base_rate=179),
    Speaker("spk08", "en-us-nyc+f5", "female", base_pitch=47, base_rate=171),
    Speaker("spk09", "en-gb-x-rp+m2", "male", base_pitch=50, base_rate=172),
    Speaker("spk10", "en-029+f1", "female", base_pitch=50, base_rate=166),
    Speaker("spk11", "en-us-nyc+m6", "male", base_pitch=47, base_rate=176),
    Speaker("spk12", "en+f3", "female", base_pitch=45, base_rate=170),
)

# Angry: louder, brighter, faster, higher, wide range. Happy: highest, widest range, a little
# faster. Sad: lower, narrow range, slower with pauses, quieter and darker. Neutral: baseline.
STYLES = {
    "neutral": EmotionStyle(0.0, 100.0, 100.0, 0.0, 0.0, -6.0),
    "happy": EmotionStyle(16.0, 165.0, 110.0, 0.0, 0.15, -4.5),
    "angry": EmotionStyle(9.0, 140.0, 117.0, 0.0, 0.5, -2.0),
    "sad": EmotionStyle(-10.0, 55.0, 82.0, 1.5, -0.3, -10.0),
}

# Per-utterance standard deviations, scaled by `variation`; large enough that neighbouring classes
# overlap on every single cue.
JITTER = EmotionStyle(
    pitch_percent=7.5, range_percent=28.0, rate_percent=9.0, word_gap=0.8, tilt=0.25, level_db=2.5
)

# Emotionally neutral content, so the words never give the label away.
SENTENCES = (
    "The train leaves the station at noon.",
    "I left my keys on the kitchen table.",
    "We are going to visit my aunt on Sunday.",
    "She painted the fence a bright shade of blue.",
    "The meeting has been moved to next week.",
    "He bought a new coat for the winter.",
    "Please put the boxes near the front door.",
    "They walked along the river after dinner.",
    "The letter arrived early this morning.",
    "My brother is moving to another city.",
    "It rained all day, and the streets are wet.",
    "You can find the book on the top shelf.",
    "The dog slept under the chair all afternoon.",
    "We didn't expect so many people to come.",
    "Dinner will be ready in a few minutes.",
    "The phone rang twice before anyone answered.",
    "I haven't seen that film before.",
    "Turn left at the end of the road.",
    "The children are playing in the garden.",
    "She told me the news on the way home.",
)


def normalize_transcript(text: str) -> str:
    """Lowercase letters, apostrophes and single spaces (the CTC vocabulary of the recipes)."""
    text = re.sub(r"[^a-z' ]+", " ", text.lower())
    return " ".join(text.split())


def find_espeak_ng() -> str:
    """Path of the espeak-ng executable, or a clear error naming the Debian package."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotFoundError(
            "espeak-ng is required to synthesise the demo corpus but was not found on PATH. "
            "Install the Debian package: `apt-get install espeak-ng` (or run `make setup`)."
        )
    return path


def espeak_ng_version() -> str:
    """E.g. '1.51': part of the manifest, since another version synthesises different audio."""
    out = subprocess.run([find_espeak_ng(), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()


def recipe_hash() -> str:
    recipe = {
        "generator_version": GENERATOR_VERSION,
        "speakers": [asdict(s) for s in SPEAKERS],
        "styles": {k: asdict(v) for k, v in STYLES.items()},
        "jitter": asdict(JITTER),
        "sentences": SENTENCES,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Utterance:
    speaker: Speaker
    emotion: str
    sentence_index: int
    style: EmotionStyle
    snr_db: float

    @property
    def file_name(self) -> str:
        return f"{AUDIO_DIR}/{self.speaker.speaker_id}_{self.emotion}_s{self.sentence_index:02d}.flac"


def sentence_indices(speaker_index: int, count: int, seed: int) -> list[int]:
    """The speaker's sentences: a prefix of a per-speaker permutation, so sizes nest."""
    rng = np.random.default_rng([seed, 1, speaker_index])
    return sorted(int(i) for i in rng.permutation(len(SENTENCES))[:count])


def draw_utterance(
    speaker_index: int, emotion: str, sentence_index: int, seed: int, variation: float
) -> Utterance:
    rng = np.random.default_rng([seed, 2, speaker_index, EMOTIONS.index(emotion), sentence_index])
    mean, sd = asdict(STYLES[emotion]), asdict(JITTER)
    drawn = {name: mean[name] + variation * sd[name] * rng.standard_normal() for name in mean}
    style = EmotionStyle(
        pitch_percent=float(np.clip(drawn["pitch_percent"], -40.0, 60.0)),
        range_percent=float(np.clip(drawn["range_percent"], 20.0, 250.0)),
        rate_percent=float(np.clip(drawn["rate_percent"], 60.0, 150.0)),
        word_gap=float(np.clip(round(drawn["word_gap"]), 0, 6)),
        tilt=float(np.clip(drawn["tilt"], -0.45, 1.0)),
        level_db=float(np.clip(drawn["level_db"], -20.0, -0.5)),
    )
    snr_db = float(rng.uniform(25.0, 45.0))
    return Utterance(SPEAKERS[speaker_index], emotion, sentence_index, style, snr_db)


def synthesize(utterance: Utterance, espeak: str) -> np.ndarray:
    """espeak-ng waveform at 22.05 kHz, float64 in [-1, 1]."""
    style, speaker = utterance.style, utterance.speaker
    ssml = (
        f'<speak><prosody pitch="{style.pitch_percent:+.1f}%" range="{style.range_percent:.1f}%" '
        f'rate="{style.rate_percent:.1f}%">{escape(SENTENCES[utterance.sentence_index])}</prosody></speak>'
    )
    # -a 70 leaves headroom: espeak-ng clips internally at wide pitch ranges.
    command = [espeak, "-v", speaker.voice, "-p", str(speaker.base_pitch), "-s", str(speaker.base_rate)]
    command += ["-a", "70", "-g", str(int(style.word_gap)), "-m", "--stdout", ssml]
    data = subprocess.run(command, capture_output=True, check=True).stdout
    # espeak-ng streams a canonical 44-byte PCM header with placeholder sizes, so read it by hand.
    if data[:4] != b"RIFF" or data[36:40] != b"data":
        raise RuntimeError(f"unexpected espeak-ng output for {utterance.file_name}")
    rate = int.from_bytes(data[24:28], "little")
    if rate != ESPEAK_SAMPLING_RATE:
        raise RuntimeError(f"espeak-ng produced {rate} Hz, expected {ESPEAK_SAMPLING_RATE}")
    return np.frombuffer(data[44 : 44 + (len(data) - 44) // 2 * 2], dtype="<i2") / 32768.0


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    try:
        import soxr  # a librosa dependency; fast, high-quality, deterministic
    except ImportError:
        import torch
        import torchaudio

        tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        return torchaudio.functional.resample(tensor, orig_sr, target_sr).numpy().astype(np.float64)
    return soxr.resample(waveform, orig_sr, target_sr, quality="HQ")


def trim_silence(
    waveform: np.ndarray, sampling_rate: int, top_db: float = 40.0, margin_s: float = 0.08
) -> np.ndarray:
    """Cut leading/trailing silence quieter than `top_db` below the loudest 10 ms frame, keep a margin."""
    frame = sampling_rate // 100
    n_frames = len(waveform) // frame
    if n_frames == 0:
        return waveform
    rms = np.sqrt(np.mean(waveform[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    margin = int(margin_s * sampling_rate)
    start = max(0, active[0] * frame - margin)
    end = min(len(waveform), (active[-1] + 1) * frame + margin)
    return waveform[start:end]


def render(utterance: Utterance, espeak: str, seed: int) -> np.ndarray:
    """Synthesise, resample to 16 kHz, trim, apply tilt and noise, peak-normalise: float32."""
    waveform = resample(synthesize(utterance, espeak), ESPEAK_SAMPLING_RATE, SAMPLING_RATE)
    waveform = trim_silence(waveform, SAMPLING_RATE)
    waveform = waveform + utterance.style.tilt * np.diff(waveform, prepend=0.0)
    rng = np.random.default_rng(
        [
            seed,
            3,
            SPEAKERS.index(utterance.speaker),
            EMOTIONS.index(utterance.emotion),
            utterance.sentence_index,
        ]
    )
    # A faint noise floor: espeak-ng's digital silence would be an unrealistically easy cue.
    signal_rms = np.sqrt(np.mean(waveform**2)) + 1e-12
    waveform = waveform + rng.standard_normal(len(waveform)) * signal_rms * 10 ** (-utterance.snr_db / 20)
    waveform = waveform / (np.abs(waveform).max() + 1e-12) * 10 ** (utterance.style.level_db / 20)
    return waveform.astype(np.float32)


def corpus_settings(
    num_speakers: int, sentences_per_speaker: int, emotions: Sequence[str], seed: int, variation: float
) -> dict:
    return {
        "num_speakers": num_speakers,
        "sentences_per_speaker": sentences_per_speaker,
        "emotions": list(emotions),
        "seed": seed,
        "variation": variation,
        "sampling_rate": SAMPLING_RATE,
        "recipe_hash": recipe_hash(),
    }


def read_manifest(output_dir: Path) -> dict | None:
    try:
        return json.loads((output_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_complete(output_dir: str | Path, settings: dict, espeak_version: str) -> bool:
    """True if `output_dir` holds a finished corpus made with these settings and espeak-ng version."""
    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    if manifest is None or manifest.get("settings") != settings:
        return False
    if manifest.get("espeak_ng_version") != espeak_version:
        return False
    audio_files = list((output_dir / AUDIO_DIR).glob("*.flac"))
    if len(audio_files) != manifest.get("num_files") or not (output_dir / METADATA_NAME).is_file():
        return False
    with open(output_dir / METADATA_NAME, newline="") as f:
        return sum(1 for _ in csv.DictReader(f)) == manifest["num_files"]


def plan_utterances(
    num_speakers: int, sentences_per_speaker: int, emotions: Sequence[str], seed: int, variation: float
) -> list[Utterance]:
    return [
        draw_utterance(speaker_index, emotion, sentence_index, seed, variation)
        for speaker_index in range(num_speakers)
        for emotion in emotions
        for sentence_index in sentence_indices(speaker_index, sentences_per_speaker, seed)
    ]


def make_corpus(
    output_dir: str | Path,
    num_speakers: int = 8,
    sentences_per_speaker: int = 12,
    emotions: Sequence[str] = EMOTIONS,
    seed: int = 0,
    variation: float = 1.0,
    num_workers: int = 2,
    force: bool = False,
) -> Path:
    """Build the corpus in `output_dir` (skipped if already complete with the same settings).

    Args:
        output_dir: target directory; replaced only if it is empty or holds an earlier corpus.
        num_speakers: how many of the 12 built-in speakers to use (genders alternate).
        sentences_per_speaker: sentences each speaker says, once per emotion (at most 20).
        emotions: subset of ("neutral", "happy", "angry", "sad").
        seed: all random choices derive from it.
        variation: scale of the per-utterance prosody jitter; larger makes the task harder.
        num_workers: parallel synthesis threads (espeak-ng subprocesses).
        force: regenerate even if a complete corpus is already there.

    Returns:
        The corpus directory, loadable with `datasets.load_dataset("audiofolder", data_dir=...)`.
    """
    output_dir = Path(output_dir)
    if not 1 <= num_speakers <= len(SPEAKERS):
        raise ValueError(f"num_speakers must be in 1..{len(SPEAKERS)}, got {num_speakers}")
    if not 1 <= sentences_per_speaker <= len(SENTENCES):
        raise ValueError(f"sentences_per_speaker must be in 1..{len(SENTENCES)}, got {sentences_per_speaker}")
    unknown = [e for e in emotions if e not in EMOTIONS]
    if unknown or not emotions or len(set(emotions)) != len(emotions):
        raise ValueError(f"emotions must be distinct names from {EMOTIONS}, got {list(emotions)}")
    if variation < 0:
        raise ValueError(f"variation must be >= 0, got {variation}")

    espeak = find_espeak_ng()
    version = espeak_ng_version()
    settings = corpus_settings(num_speakers, sentences_per_speaker, emotions, seed, variation)
    if not force and is_complete(output_dir, settings, version):
        logger.info("Demo corpus already complete in %s (same settings); nothing to do.", output_dir)
        return output_dir
    if output_dir.exists() and any(output_dir.iterdir()) and read_manifest(output_dir) is None:
        raise FileExistsError(
            f"{output_dir} is not empty and holds no {MANIFEST_NAME}; refusing to replace it. "
            "Choose another --output_dir or remove it."
        )

    start = time.perf_counter()
    utterances = plan_utterances(num_speakers, sentences_per_speaker, emotions, seed, variation)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = output_dir.parent / f".{output_dir.name}.partial-{tag}"
    retired = output_dir.parent / f".{output_dir.name}.old-{tag}"
    try:
        (staging / AUDIO_DIR).mkdir(parents=True)

        def write(utterance: Utterance) -> float:
            waveform = render(utterance, espeak, seed)
            sf.write(staging / utterance.file_name, waveform, SAMPLING_RATE, subtype="PCM_16", format="FLAC")
            return len(waveform) / SAMPLING_RATE

        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            durations = list(pool.map(write, utterances))

        with open(staging / METADATA_NAME, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "emotion", "text", "speaker", "gender"])
            for u in utterances:
                text = normalize_transcript(SENTENCES[u.sentence_index])
                writer.writerow([u.file_name, u.emotion, text, u.speaker.speaker_id, u.speaker.gender])

        manifest = {
            "description": "Synthetic emotional speech (espeak-ng) made by scripts/make_demo_corpus.py",
            "settings": settings,
            "espeak_ng_version": version,
            "num_files": len(utterances),
            "total_seconds": round(sum(durations), 2),
            "speakers": {s.speaker_id: s.gender for s in SPEAKERS[:num_speakers]},
        }
        # The manifest is the completion marker: written last, before the directory moves in.
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        if output_dir.exists():
            output_dir.rename(retired)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)

    logger.info(
        "Wrote %d clips (%.1f s of audio; %d speakers x %d emotions x %d sentences) to %s in %.1f s.",
        len(utterances),
        sum(durations),
        num_speakers,
        len(emotions),
        sentences_per_speaker,
        output_dir,
        time.perf_counter() - start,
    )
    return output_dir


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--output_dir", default="data/demo", help="corpus directory (audiofolder)")
    parser.add_argument("--small", action="store_true", help="tiny corpus: 4 speakers x 3 sentences")
    parser.add_argument("--num_speakers", type=int, default=None, help="default 8 (4 with --small)")
    parser.add_argument(
        "--sentences_per_speaker",
        "--clips_per_speaker_emotion",
        type=int,
        default=None,
        help="sentences each speaker says once per emotion; default 12 (3 with --small)",
    )
    parser.add_argument("--emotions", nargs="+", default=list(EMOTIONS), choices=EMOTIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variation", type=float, default=1.0, help="scale of per-utterance jitter")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="regenerate even if already complete")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    defaults = SMALL_SETTINGS if args.small else {"num_speakers": 8, "sentences_per_speaker": 12}
    try:
        make_corpus(
            args.output_dir,
            num_speakers=args.num_speakers or defaults["num_speakers"],
            sentences_per_speaker=args.sentences_per_speaker or defaults["sentences_per_speaker"],
            emotions=args.emotions,
            seed=args.seed,
            variation=args.variation,
            num_workers=args.num_workers,
            force=args.force,
        )
    except (EspeakNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
