"""Evaluation protocols: named, speaker-independent train / validation / test folds.

``iemocap-loso``
    5 folds over IEMOCAP's sessions in order: fold k tests on session k, validates on session
    k+1 (mod 5) and trains on the other three (paper 000's protocol).
``iemocap-loso-holdout`` / ``iemocap-loso-holdout(share)``
    5 folds: fold k tests on session k and trains on all four other sessions, less a held-out
    share (default 0.1) of their dialogs used for validation (papers 002, 003 and 004 train on
    four sessions and do not say how they validated). The test session stays speaker-
    independent; validation shares speakers with training.
``msp-partitions``
    one fold from MSP-Podcast's own partitions: Train, Development, and every test set the
    manifest has (``test1``, ``test2``, ``test3``), each reported separately.
``speaker-folds`` / ``speaker-folds(k)`` / ``speaker-folds(k, column)``
    k speaker-disjoint folds for any corpus (default 5): speakers (or the values of another
    column, e.g. ``session``) are dealt to k groups, fold i tests on group i, validates on group
    i+1 and trains on the rest.
``partitions``
    one fold from a corpus's own ``partition`` column as given: ``train``, a validation split
    (``dev``, ``development``, ``valid``, ``validation``, ``val``) and every test split (``test``,
    ``test1``, ...), each reported separately; speakers shared between the splits are reported in
    the fold's description instead of refused (TV-dialogue corpora share them by design).

A fold that puts one speaker in two of its parts raises :class:`ProtocolError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from sermo.data.manifest import Manifest

MSP_TESTS = {"Test1": "test1", "Test2": "test2", "Test3": "test3"}
TRANSFER_FOLD = "transfer"
"""The one fold of ``corpus-transfer`` (systems branch on ``ctx.name`` against it)."""
TRANSFER_TESTS = ("iemocap", "msp-test1")
"""``corpus-transfer``'s test sets: IEMOCAP's held-out session, MSP-Podcast's Test1."""


class ProtocolError(ValueError):
    """A protocol that cannot be built or breaks speaker independence."""


@dataclass(frozen=True)
class Fold:
    """One split of a manifest.

    Attributes:
        name: ``fold1`` ... or the partition set's name.
        train, valid: utterance ids.
        tests: named test sets (``{"test": ids}``, or MSP's ``test1``/``test2``/...).
        description: the fold in words, for reports (e.g. "test Ses01, validation Ses02").
    """

    name: str
    train: tuple[str, ...]
    valid: tuple[str, ...]
    tests: dict[str, tuple[str, ...]] = field(hash=False)
    description: str = ""

    @property
    def test(self) -> tuple[str, ...]:
        """The primary test set: ``test`` or, for MSP-Podcast, ``test1``."""
        return self.tests.get("test") or self.tests[next(iter(self.tests))]

    def to_dict(self) -> dict:
        """JSON-ready form (ids included), saved with every run."""
        return {"name": self.name, "description": self.description, "train": list(self.train),
                "valid": list(self.valid), "tests": {k: list(v) for k, v in self.tests.items()}}


@dataclass(frozen=True)
class Protocol:
    """A named list of folds; ``spec`` is the name it was built from (saved with runs)."""

    spec: str
    folds: tuple[Fold, ...]
    description: str

    def select(self, numbers) -> "Protocol":
        """Only the folds with the given 1-based numbers (``--folds 1,3``).

        Raises:
            ProtocolError: a number outside 1..len(folds).
        """
        numbers = list(numbers)
        bad = [n for n in numbers if not 1 <= n <= len(self.folds)]
        if bad:
            raise ProtocolError(f"protocol {self.spec} has folds 1..{len(self.folds)}; asked for {bad}")
        if sorted(set(numbers)) == list(range(1, len(self.folds) + 1)):
            return self
        ran = ", ".join(str(n) for n in numbers)
        return Protocol(self.spec, tuple(self.folds[n - 1] for n in numbers),
                        f"{self.description} (of its {len(self.folds)} folds, fold{'s' if len(numbers) > 1 else ''} "
                        f"{ran} ran)")


def iemocap_loso(manifest: Manifest) -> Protocol:
    """Leave-one-session-out over the manifest's sessions (5 for IEMOCAP)."""
    df = manifest.df
    sessions = sorted(s for s in df["session"].dropna().unique())
    if len(sessions) < 3:
        raise ProtocolError(f"iemocap-loso needs at least 3 sessions; the manifest has {sessions}")
    folds = []
    for k, test_s in enumerate(sessions):
        valid_s = sessions[(k + 1) % len(sessions)]
        train_s = [s for s in sessions if s not in (test_s, valid_s)]
        fold = Fold(
            name=f"fold{k + 1}",
            train=_ids(df, df["session"].isin(train_s)),
            valid=_ids(df, df["session"] == valid_s),
            tests={"test": _ids(df, df["session"] == test_s)},
            description=f"test {test_s}, validation {valid_s}, training {', '.join(train_s)}",
        )
        check_speaker_independence(fold, manifest)
        folds.append(fold)
    return Protocol("iemocap-loso", tuple(folds),
                    f"leave-one-session-out over {len(sessions)} sessions: fold k tests on session k, "
                    "validates on session k+1 (mod n) and trains on the others")


def iemocap_loso_holdout(manifest: Manifest, share: float = 0.1, *, seed: int = 0) -> Protocol:
    """Leave one session out, training on every other session less a held-out ``share`` of their
    dialogs (whole dialogs, drawn at random with ``seed``), which validate."""
    if not 0.0 < share < 0.5:
        raise ProtocolError(f"iemocap-loso-holdout: the held-out share must be in (0, 0.5), got {share}")
    df = manifest.df
    sessions = sorted(s for s in df["session"].dropna().unique())
    if len(sessions) < 2:
        raise ProtocolError(f"iemocap-loso-holdout needs at least 2 sessions; the manifest has {sessions}")
    rng = np.random.default_rng(seed)
    folds = []
    for k, test_s in enumerate(sessions):
        rest = df[df["session"].isin([s for s in sessions if s != test_s])]
        groups = rest["dialog"].where(rest["dialog"].notna(), rest["id"])  # whole dialogs, else utterances
        sizes = groups.value_counts().sort_index()
        held, count = [], 0
        for g in rng.permutation(sizes.index.to_numpy()):
            if count >= share * len(rest):
                break
            held.append(g)
            count += int(sizes[g])
        valid = groups.isin(held)
        fold = Fold(
            name=f"fold{k + 1}",
            train=tuple(rest.loc[~valid, "id"]), valid=tuple(rest.loc[valid, "id"]),
            tests={"test": _ids(df, df["session"] == test_s)},
            description=f"test {test_s}, training the other sessions less {len(held)} held-out dialogs "
                        f"({count} utterances, {count / max(len(rest), 1):.0%}) that validate",
        )
        check_speaker_independence(fold, manifest, parts=("train+valid", "test"))
        folds.append(fold)
    return Protocol(f"iemocap-loso-holdout({share:g})", tuple(folds),
                    f"leave-one-session-out over {len(sessions)} sessions: fold k tests on session k and trains "
                    f"on all the others, less {share:.0%} of their dialogs held out (at random) for validation")


def msp_partitions(manifest: Manifest) -> Protocol:
    """MSP-Podcast's own partitions as one fold with every test set present."""
    df = manifest.df
    part = df["partition"]
    tests = {short: _ids(df, part == split) for split, short in MSP_TESTS.items() if (part == split).any()}
    if not (part == "Train").any() or not (part == "Development").any() or not tests:
        found = sorted(part.dropna().unique())
        raise ProtocolError(f"msp-partitions needs Train, Development and a Test set; the manifest has {found}")
    fold = Fold("partitions", _ids(df, part == "Train"), _ids(df, part == "Development"), tests,
                description="train Train, validation Development, test " + ", ".join(
                    s for s in MSP_TESTS if (part == s).any()))
    check_speaker_independence(fold, manifest)
    return Protocol("msp-partitions", (fold,),
                    "the corpus partitions: Train for training, Development for model selection, "
                    "each Test set reported separately")


def speaker_folds(manifest: Manifest, k: int = 5, *, seed: int = 0, column: str = "speaker") -> Protocol:
    """k speaker-disjoint folds; rows without a speaker stay in training only.

    Speakers (or the values of ``column``) are shuffled with ``seed`` and dealt to the group
    with the fewest utterances, which balances fold sizes.
    """
    if k < 3:
        raise ProtocolError("speaker-folds needs k >= 3 (a test and a validation group and training)")
    df = manifest.df.copy()
    if column not in df.columns:
        raise ProtocolError(f"speaker-folds({k}, {column}): the manifest has no column {column!r}; columns: "
                            f"{', '.join(map(str, df.columns))}")
    df["speaker"] = df[column].astype(object).where(df[column].notna(), None)
    counts = df["speaker"].dropna().value_counts()
    if len(counts) < k:
        raise ProtocolError(f"speaker-folds({k}) needs at least {k} speakers; the manifest has {len(counts)}")
    rng = np.random.default_rng(seed)
    speakers = list(counts.index)
    rng.shuffle(speakers)
    speakers.sort(key=lambda s: -counts[s])  # largest first, ties in shuffled order
    groups: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for spk in speakers:
        g = int(np.argmin(sizes))
        groups[g].append(spk)
        sizes[g] += counts[spk]
    folds = []
    for i in range(k):
        test_g, valid_g = groups[i], groups[(i + 1) % k]
        held = set(test_g) | set(valid_g)
        fold = Fold(
            name=f"fold{i + 1}",
            train=_ids(df, ~df["speaker"].isin(held)),
            valid=_ids(df, df["speaker"].isin(valid_g)),
            tests={"test": _ids(df, df["speaker"].isin(test_g))},
            description=f"test speakers {', '.join(sorted(test_g))}; validation {', '.join(sorted(valid_g))}",
        )
        check_speaker_independence(fold, manifest)
        folds.append(fold)
    by = "" if column == "speaker" else f", {column}"
    return Protocol(f"speaker-folds({k}{by})", tuple(folds),
                    f"{k} {column}-disjoint folds: fold i tests on {column} group i, validates on group i+1")


VALID_NAMES = ("dev", "development", "valid", "validation", "val")


def own_partitions(manifest: Manifest) -> Protocol:
    """The corpus's own train / validation / test splits from its ``partition`` column."""
    df = manifest.df
    part = df["partition"].astype(str).str.strip().str.lower().where(df["partition"].notna(), None)
    names = sorted(part.dropna().unique())
    tests = {n: _ids(df, part == n) for n in names if n.startswith("test")}
    valid = next((n for n in VALID_NAMES if n in names), None)
    if "train" not in names or valid is None or not tests:
        raise ProtocolError(f"partitions needs train, a validation split ({', '.join(VALID_NAMES)}) and a test split "
                            f"in the partition column; the manifest has {names}")
    fold = Fold("partitions", _ids(df, part == "train"), _ids(df, part == valid), tests,
                description=f"the corpus's own splits: train, validation {valid}, test {', '.join(tests)}")
    shared = shared_speakers(fold, manifest)
    if shared:
        note = "; ".join(f"{a}-{b} share {n} speaker(s)" for (a, b), n in shared.items())
        fold = Fold(fold.name, fold.train, fold.valid, fold.tests,
                    description=fold.description + f" (not speaker-independent: {note})")
    return Protocol("partitions", (fold,), "the corpus's own train / validation / test splits, as given")


def shared_speakers(fold: Fold, manifest: Manifest) -> dict[tuple[str, str], int]:
    """How many speakers each pair of a fold's parts shares."""
    spk = dict(zip(manifest.df["id"], manifest.df["speaker"]))
    parts = {"train": fold.train, "valid": fold.valid, **fold.tests}
    sets = {k: {spk.get(i) for i in v} - {None} for k, v in parts.items()}
    names = list(sets)
    return {(a, b): len(sets[a] & sets[b]) for i, a in enumerate(names) for b in names[i + 1:]
            if sets[a] & sets[b] and not (a.startswith("test") and b.startswith("test"))}


def corpus_transfer(manifest: Manifest, *, seed: int = 0, share: float = 0.1, keep=None) -> Protocol:
    """IEMOCAP and MSP-Podcast in one fold (paper 002, Table 2): IEMOCAP tests on its last
    session and trains on the four others, less a held-out ``share`` of their dialogs that
    validates (as ``iemocap-loso-holdout``); MSP-Podcast trains on a random subset of Train as
    large as IEMOCAP's training part, validates on Development, tests on Test1. Each corpus's
    test set is reported separately (``iemocap``, ``msp-test1``).

    ``keep``: the utterances a run can learn from (those with a class of its label space); the
    subset is drawn from MSP-Podcast's usable Train utterances to the size of IEMOCAP's usable
    training part, so the two corpora train on equally many utterances after the label filter
    (paper 002, section 3.6). ``None``: every utterance counts."""
    df = manifest.df
    iem, msp = df["corpus"] == "iemocap", df["corpus"] == "msp-podcast"
    sessions = sorted(df.loc[iem, "session"].dropna().unique())
    if len(sessions) < 2 or not msp.any():
        raise ProtocolError("corpus-transfer needs an IEMOCAP corpus (2+ sessions) and an MSP-Podcast corpus; "
                            f"the manifest has {sorted(df['corpus'].dropna().unique())} with sessions {sessions}")
    iem_only = Manifest(df[iem].reset_index(drop=True))
    last = iemocap_loso_holdout(iem_only, share, seed=seed).folds[-1]  # tests on the last session
    counted = (lambda ids: [u for u in ids if u in keep]) if keep is not None else list
    pool = sorted(counted(_ids(df, msp & (df["partition"] == "Train"))))
    rng = np.random.default_rng(seed)
    take = min(len(counted(last.train)), len(pool))
    msp_train = tuple(sorted(rng.choice(pool, take, replace=False).tolist())) if take else ()
    iemocap_test, msp_test = TRANSFER_TESTS
    tests = {iemocap_test: last.tests["test"], msp_test: _ids(df, msp & (df["partition"] == "Test1"))}
    if not msp_train or not tests[msp_test] or not (msp & (df["partition"] == "Development")).any():
        raise ProtocolError("corpus-transfer needs MSP-Podcast Train, Development and Test1 partitions")
    usable = "usable " if keep is not None else ""
    fold = Fold(TRANSFER_FOLD, last.train + msp_train,
                last.valid + _ids(df, msp & (df["partition"] == "Development")),
                tests, description=f"IEMOCAP: {last.description}, {len(counted(last.train))} {usable}training "
                                   f"utterances; MSP-Podcast: a random {len(msp_train)} of {len(pool)} {usable}Train "
                                   "utterances (IEMOCAP's training size), validation Development, test Test1")
    check_speaker_independence(fold, manifest, parts=("train+valid", "test"))
    return Protocol("corpus-transfer", (fold,),
                    "IEMOCAP and MSP-Podcast together: IEMOCAP trains on four sessions (less a held-out share of "
                    "their dialogs that validates) and tests on the last; the MSP-Podcast training subset is drawn "
                    "to the size of IEMOCAP's training part, counted after the label filter; each corpus tested on "
                    "its own test set")


def build_protocol(spec: str, manifest: Manifest, *, seed: int = 0, keep=None) -> Protocol:
    """Build a protocol from its name: ``iemocap-loso``, ``msp-partitions``, ``speaker-folds(k)``,
    ``corpus-transfer`` (IEMOCAP + MSP-Podcast together; ``keep``: the utterances that count
    when sizing its MSP-Podcast subset, see :func:`corpus_transfer`).

    Raises:
        ProtocolError: unknown name (the message lists the known ones) or unusable manifest.
    """
    m = re.fullmatch(r"speaker-folds(?:\((\d+)(?:,\s*([\w.-]+))?\)|:(\d+))?", spec.strip())
    if m:
        return speaker_folds(manifest, int(m[1] or m[3] or 5), seed=seed, column=m[2] or "speaker")
    if spec.strip() == "partitions":
        return own_partitions(manifest)
    m = re.fullmatch(r"iemocap-loso-holdout(?:\(([0-9.]+)\))?", spec.strip())
    if m:
        return iemocap_loso_holdout(manifest, float(m[1] or 0.1), seed=seed)
    if spec == "iemocap-loso":
        return iemocap_loso(manifest)
    if spec == "msp-partitions":
        return msp_partitions(manifest)
    if spec == "corpus-transfer":
        return corpus_transfer(manifest, seed=seed, keep=keep)
    raise ProtocolError(f"unknown protocol {spec!r}; known: iemocap-loso, iemocap-loso-holdout(share), "
                        "msp-partitions, partitions, speaker-folds(k[, column]), corpus-transfer")


def default_protocol(manifest: Manifest) -> str:
    """The protocol a corpus is evaluated with unless a recipe says otherwise."""
    corpora = set(manifest.df["corpus"].dropna())
    if corpora == {"iemocap"}:
        return "iemocap-loso"
    if corpora == {"msp-podcast"}:
        return "msp-partitions"
    if corpora == {"iemocap", "msp-podcast"}:
        return "corpus-transfer"
    parts = set(manifest.df["partition"].dropna().astype(str).str.lower())
    if "train" in parts and parts & set(VALID_NAMES) and any(p.startswith("test") for p in parts):
        return "partitions"
    return "speaker-folds(5)"


def protocol_for(spec: str | None, manifest: Manifest) -> str:
    """The protocol a run uses: the recipe's ``spec``, except that an IEMOCAP protocol
    (``iemocap-loso``, ``iemocap-loso-holdout``: the papers' IEMOCAP setups) applies to IEMOCAP
    alone; other corpora get their own default (MSP-Podcast's partitions, ``corpus-transfer``
    for both together), as the papers evaluate them."""
    corpora = set(manifest.df["corpus"].dropna())
    if not spec or (spec.strip().startswith("iemocap-loso") and corpora and corpora != {"iemocap"}):
        return default_protocol(manifest)
    return spec


def check_speaker_independence(fold: Fold, manifest: Manifest, parts=("train", "valid", "test")) -> None:
    """Raise :class:`ProtocolError` when a speaker occurs in two of ``parts`` of ``fold`` (a part
    may join several with ``+``: ``train+valid`` when validation is held out of training)."""
    spk = dict(zip(manifest.df["id"], manifest.df["speaker"]))
    # Test sets are one part: MSP-Podcast's test sets may share speakers with each other,
    # never with training or validation.
    named = {"train": fold.train, "valid": fold.valid, "test": tuple(i for t in fold.tests.values() for i in t)}
    parts = {p: tuple(i for name in p.split("+") for i in named[name]) for p in parts}
    seen: dict[object, str] = {}
    for part, ids in parts.items():
        for s in {spk[i] for i in ids if spk.get(i) is not None}:
            if s in seen and seen[s] != part:
                raise ProtocolError(f"{fold.name}: speaker {s} is in both {seen[s]} and {part}; "
                                    "folds must be speaker-independent")
            seen.setdefault(s, part)


def _ids(df, mask) -> tuple[str, ...]:
    return tuple(df.loc[mask, "id"].tolist())
