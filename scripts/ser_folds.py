"""Evaluation protocols: which speakers (or dialogues) are train, validation and test in a fold.

Speaker-independent protocols keep train, validation and test speakers disjoint in every fold:
- `loso`: leave one speaker out (test), `num_validation_speakers` others for validation. With
  `speaker_folds=k`, speakers are dealt round-robin (sorted) into k groups and each fold leaves
  one group out (for corpora with many speakers, e.g. CREMA-D's 91).
- `loso_session`: leave one session out (IEMOCAP: 5 folds of 2 speakers), validation speakers
  drawn from the remaining sessions.
- `fixed`: the dataset's own train/validation/test splits (speaker overlap is reported).
The speaker-dependent split of Cai et al. / Hsu et al. (10 folds over dialogue prefixes, speakers
shared between train and test) is available only as `speaker_dependent_dialogue_10fold`, and
every report made with it is marked speaker-dependent.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

SPEAKER_INDEPENDENT = ("loso", "loso_session", "fixed")
SPEAKER_DEPENDENT = ("speaker_dependent_dialogue_10fold",)
PROTOCOLS = SPEAKER_INDEPENDENT + SPEAKER_DEPENDENT


@dataclass
class Fold:
    """Assignment of one fold: sets of speakers (or dialogues for the speaker-dependent protocol)."""

    protocol: str
    index: int
    num_folds: int
    train: set[str] = field(default_factory=set)
    validation: set[str] = field(default_factory=set)
    test: set[str] = field(default_factory=set)
    unit: str = "speaker"  # what the sets contain: "speaker" or "dialogue"

    @property
    def speaker_independent(self) -> bool:
        return self.protocol in SPEAKER_INDEPENDENT

    def split_of(self, key: str) -> str | None:
        for name in ("train", "validation", "test"):
            if key in getattr(self, name):
                return name
        return None

    def describe(self) -> dict:
        return {
            "protocol": self.protocol,
            "speaker_independent": self.speaker_independent,
            "fold": self.index,
            "num_folds": self.num_folds,
            "unit": self.unit,
            "train": sorted(self.train),
            "validation": sorted(self.validation),
            "test": sorted(self.test),
        }


def _pick_validation(candidates: Sequence[str], count: int, genders: dict[str, str], seed: int) -> set[str]:
    """`count` validation speakers from `candidates`, alternating genders when they are known."""
    if count <= 0:
        return set()
    if count >= len(candidates):
        raise ValueError(
            f"num_validation_speakers={count} leaves no training speaker (only {len(candidates)} candidates)."
        )
    rng = random.Random(seed)
    pool = sorted(candidates)
    rng.shuffle(pool)
    by_gender: dict[str, list[str]] = {}
    for speaker in pool:
        by_gender.setdefault(genders.get(speaker, "unknown"), []).append(speaker)
    order = sorted(by_gender, key=lambda g: (g == "unknown", g))
    chosen: list[str] = []
    while len(chosen) < count:
        for gender in order:
            if by_gender[gender] and len(chosen) < count:
                chosen.append(by_gender[gender].pop(0))
    return set(chosen)


def speaker_groups(
    speakers: Sequence[str], speaker_folds: int | None, genders: dict[str, str] | None = None
) -> list[set[str]]:
    """Test groups of the `loso` protocol: one speaker each, or `speaker_folds` groups dealt
    round-robin from the speakers sorted by (gender, id), so that groups mix genders when known."""
    genders = genders or {}
    unique = sorted(set(speakers), key=lambda s: (genders.get(s, "unknown"), s))
    if not speaker_folds or speaker_folds >= len(unique):
        return [{s} for s in sorted(unique)]
    return [set(unique[i::speaker_folds]) for i in range(speaker_folds)]


def num_folds(
    protocol: str,
    speakers: Sequence[str],
    sessions: dict[str, str] | None = None,
    speaker_folds: int | None = None,
) -> int:
    if protocol == "loso":
        return len(speaker_groups(speakers, speaker_folds))  # the count does not depend on genders
    if protocol == "loso_session":
        if not sessions:
            raise ValueError("protocol loso_session needs a session for every speaker (session_column).")
        return len(set(sessions.values()))
    if protocol == "speaker_dependent_dialogue_10fold":
        return 10
    if protocol == "fixed":
        return 1
    raise ValueError(f"Unknown protocol {protocol!r}; choose one of {PROTOCOLS}.")


def make_fold(
    protocol: str,
    fold: int,
    speakers: Sequence[str],
    genders: dict[str, str] | None = None,
    sessions: dict[str, str] | None = None,
    dialogues: Sequence[str] | None = None,
    num_validation_speakers: int = 1,
    seed: int = 0,
    speaker_folds: int | None = None,
) -> Fold:
    """Assign speakers (or dialogues) of fold `fold` under `protocol`.

    Args:
        speakers: Speaker of each utterance (or the unique speakers).
        speaker_folds: `loso` only: number of speaker groups (default one speaker per fold).
        genders: Speaker -> gender, used to balance validation speakers.
        sessions: Speaker -> session, for `loso_session`.
        dialogues: Dialogue id of each utterance, for the speaker-dependent protocol.
    """
    genders = genders or {}
    unique = sorted(set(speakers))
    total = num_folds(protocol, unique, sessions, speaker_folds)
    if not 0 <= fold < total:
        raise ValueError(f"fold {fold} out of range: protocol {protocol!r} has {total} folds here.")
    if protocol == "loso":
        if len(unique) < 2 + num_validation_speakers:
            raise ValueError(
                f"loso needs at least {2 + num_validation_speakers} speakers, got {len(unique)}."
            )
        test = speaker_groups(unique, speaker_folds, genders)[fold]
    elif protocol == "loso_session":
        session_ids = sorted(set(sessions.values()))
        test = {s for s in unique if sessions.get(s) == session_ids[fold]}
    elif protocol == "speaker_dependent_dialogue_10fold":
        if dialogues is None:
            raise ValueError("speaker_dependent_dialogue_10fold needs a dialogue column (dialogue_column).")
        units = sorted(set(dialogues))
        test = {u for i, u in enumerate(units) if i % total == fold}
        rest = sorted(set(units) - test)
        validation = {u for i, u in enumerate(rest) if i % 9 == 0}
        return Fold(protocol, fold, total, set(rest) - validation, validation, test, unit="dialogue")
    else:
        raise ValueError("protocol 'fixed' uses the dataset's splits; make_fold is for cross-validation.")
    rest = [s for s in unique if s not in test]
    validation = _pick_validation(rest, num_validation_speakers, genders, seed + fold)
    return Fold(protocol, fold, total, set(rest) - validation, validation, test)
