"""Local stand-ins for the Hub datasets the recipes use, with the same column schema and file-name
conventions, built from the synthetic demo corpus. `load_dataset(<directory>)` reads them through
the same code path as `load_dataset(<hub id>)` (parquet data files), so a recipe runs unchanged
except for `dataset_name`.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from datasets import Audio, Dataset

EMOTION_CODES = {
    "crema_d": {"angry": "ANG", "happy": "HAP", "neutral": "NEU", "sad": "SAD"},
    "ravdess": {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"},
    "ravdess_names": {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry"},
    "esd": {"angry": "Angry", "happy": "Happy", "neutral": "Neutral", "sad": "Sad"},
    "emodb": {"angry": "anger", "happy": "happiness", "neutral": "neutral", "sad": "sadness"},
}
SENTENCES = ["DFA", "IEO", "IOM", "ITH"]
CASIA_SPEAKERS = ["liuchanghong", "wangzhe", "zhaoquanyin", "ZhaoZuoxiang", "spk5", "spk6", "spk7", "spk8"]


def read_corpus(corpus_dir: Path) -> list[dict]:
    with open(corpus_dir / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["path"] = str(corpus_dir / row["file_name"])
    return rows


def _write_parquet(rows: list[dict], out_dir: Path) -> Path:
    records = {key: [r[key] for r in rows] for key in rows[0] if key != "audio"}
    records["audio"] = [{"bytes": Path(r["audio"]).read_bytes(), "path": Path(r["audio"]).name} for r in rows]
    dataset = Dataset.from_dict(records).cast_column("audio", Audio())
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(out_dir / "data" / "train-00000-of-00001.parquet"))
    return out_dir


def speaker_index(rows: list[dict]) -> dict[str, int]:
    return {s: i for i, s in enumerate(sorted({r["speaker"] for r in rows}))}


def iemocap(rows: list[dict], out_dir: Path) -> Path:
    """AbstractTTS/IEMOCAP: file, audio, major_emotion, transcription, gender (+ extras).
    Two speakers (one M, one F) per session; half of `happy` is labelled `excited`."""
    index = speaker_index(rows)
    records = []
    counters: dict[str, int] = {}
    for r in rows:
        i = index[r["speaker"]]
        session, gender = 1 + i // 2, "F" if r["gender"] == "female" else "M"
        n = counters[r["speaker"]] = counters.get(r["speaker"], -1) + 1
        emotion = r["emotion"]
        if emotion == "happy" and n % 2:
            emotion = "excited"
        records.append(
            {
                "file": f"Ses0{session}M_impro0{1 + n % 3}_{gender}{n:03d}",
                "audio": r["path"],
                "major_emotion": emotion,
                "transcription": r["text"].capitalize() + ".",
                "gender": "Female" if gender == "F" else "Male",
                "speaking_rate": 3.0,
            }
        )
    return _write_parquet(records, out_dir)


def crema_d(rows: list[dict], out_dir: Path) -> Path:
    """AbstractTTS/CREMA-D: file (`1001_DFA_ANG_XX.wav`), audio, major_emotion, gender, transcription."""
    index = speaker_index(rows)
    records = [
        {
            "file": f"{1001 + index[r['speaker']]}_{SENTENCES[n % 4]}_{EMOTION_CODES['crema_d'][r['emotion']]}_XX.wav",
            "audio": r["path"],
            "major_emotion": r["emotion"],
            "gender": r["gender"].capitalize(),
            "transcription": r["text"],
        }
        for n, r in enumerate(rows)
    ]
    return _write_parquet(records, out_dir)


def ravdess(rows: list[dict], out_dir: Path) -> Path:
    """AbstractTTS/RAVDESS: file (`03-01-05-01-01-01-12.wav`), audio, gender, transcription, emotion, intensity."""
    index = speaker_index(rows)
    records = [
        {
            "file": f"03-01-{EMOTION_CODES['ravdess'][r['emotion']]}-01-01-0{1 + n % 2}-{1 + index[r['speaker']]:02d}.wav",
            "audio": r["path"],
            "gender": r["gender"],
            "transcription": r["text"],
            "emotion": EMOTION_CODES["ravdess_names"][r["emotion"]],
            "intensity": "normal",
        }
        for n, r in enumerate(rows)
    ]
    return _write_parquet(records, out_dir)


def esd(rows: list[dict], out_dir: Path) -> Path:
    """jspaulsen/esd: audio, transcript, emotion, speaker_id, gender, language. The first speaker
    is marked Chinese (`zh`) so that the recipe's language filter has something to drop."""
    index = speaker_index(rows)
    names = {"angry": "anger", "happy": "happiness", "neutral": "neutral", "sad": "sadness"}
    records = [
        {
            "audio": r["path"],
            "transcript": r["text"],
            "emotion": names[r["emotion"]],
            "speaker_id": f"{index[r['speaker']] + 10:04d}",
            "gender": r["gender"],
            "language": "zh" if index[r["speaker"]] == 0 else "en",
        }
        for r in rows
    ]
    return _write_parquet(records, out_dir)


def casia(rows: list[dict], out_dir: Path) -> Path:
    """CASIA as distributed: `<speaker>/<emotion>/<n>.wav` folders (an audiofolder)."""
    index = speaker_index(rows)
    for n, r in enumerate(rows):
        target = out_dir / CASIA_SPEAKERS[index[r["speaker"]]] / r["emotion"] / f"{201 + n}.flac"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r["path"], target)
    return out_dir


def emodb(rows: list[dict], out_dir: Path) -> Path:
    """The layout of ../shared/data/emodb: audiofolder with file_name, speaker, gender, emotion, sentence."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = speaker_index(rows)
    with open(out_dir / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "speaker", "gender", "emotion", "sentence"])
        for n, r in enumerate(rows):
            name = f"{10 + index[r['speaker']]:02d}a{n:02d}{EMOTION_CODES['emodb'][r['emotion']][0].upper()}a.flac"
            shutil.copy(r["path"], out_dir / name)
            writer.writerow(
                [name, 10 + index[r["speaker"]], r["gender"], EMOTION_CODES["emodb"][r["emotion"]], "a01"]
            )
    return out_dir


BUILDERS = {
    "iemocap": iemocap,
    "crema_d": crema_d,
    "ravdess": ravdess,
    "esd": esd,
    "casia": casia,
    "emodb": emodb,
}
