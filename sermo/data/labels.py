"""Label spaces: which emotion categories a run uses and how corpus codes map onto them.

Manifests keep each corpus's own category codes (IEMOCAP ``neu hap exc ang sad fru sur
fea dis oth xxx``, MSP-Podcast ``A S H U F D C N O X``). A :class:`LabelSpace` maps codes
to class names; a code it does not map (``xxx``, ``fru`` in the 4-class set, ...) is left
out of training and evaluation for that space, never silently relabelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IEMOCAP_CODES = ("neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
"""Every category code of IEMOCAP's EmoEvaluation files; ``xxx`` = no majority."""

MSP_CODES = ("A", "S", "H", "U", "F", "D", "C", "N", "O", "X")
"""MSP-Podcast EmoClass codes; ``O`` = other, ``X`` = no agreement."""


class LabelSpaceError(ValueError):
    """A label space that cannot be used: unknown, an unreadable mapping file, codes mapped twice."""


@dataclass(frozen=True)
class LabelSpace:
    """An ordered set of class names and the corpus codes that map onto each.

    Attributes:
        name: the space's registry name.
        classes: class names in output order (logit index = position).
        mapping: corpus code -> class name; codes not in it are excluded.
    """

    name: str
    classes: tuple[str, ...]
    mapping: dict[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        unknown = sorted({c for c in self.mapping.values()} - set(self.classes))
        if unknown:
            raise LabelSpaceError(f"label space {self.name!r} maps codes to unknown classes {unknown}")

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def class_of(self, code: object) -> str | None:
        """The class a corpus code maps to, or ``None`` when the space leaves it out."""
        if code is None or (isinstance(code, float) and np.isnan(code)):
            return None
        return self.mapping.get(str(code))

    def index_of(self, code: object) -> int:
        """Class index of a code; -1 when the space leaves it out (the masking convention)."""
        cls = self.class_of(code)
        return -1 if cls is None else self.classes.index(cls)

    def indices(self, codes) -> np.ndarray:
        """Vectorised :meth:`index_of`: ``(n,)`` int64 with -1 for excluded codes."""
        return np.array([self.index_of(c) for c in codes], dtype=np.int64)

    def to_dict(self) -> dict:
        """JSON-ready description, saved with every run and bundle."""
        return {"name": self.name, "classes": list(self.classes), "mapping": dict(self.mapping)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpace":
        """Inverse of :meth:`to_dict`."""
        return cls(d["name"], tuple(d["classes"]), dict(d["mapping"]))

    @classmethod
    def from_codes(cls, codes, *, name: str = "observed") -> "LabelSpace":
        """A space with one class per distinct code (for generic ``table`` corpora)."""
        present = sorted({str(c) for c in codes if c is not None and not (isinstance(c, float) and np.isnan(c))})
        return cls(name, tuple(present), {c: c for c in present})


def _space(name: str, classes: tuple[str, ...], groups: dict[str, tuple[str, ...]]) -> LabelSpace:
    return LabelSpace(name, classes, {code: cls for cls, codes in groups.items() for code in codes})


# IEMOCAP and MSP-Podcast codes never collide, so one space can serve both corpora: this is
# what lets the hierarchical system train on the two with one classifier.
_FOUR = {"neutral": ("neu", "N"), "happy": ("hap", "exc", "H"), "angry": ("ang", "A"), "sad": ("sad", "S")}
# paper 002's five classes name "happy" and no merge: excited stays out (as fru, sur, ...)
_FIVE = {**_FOUR, "happy": ("hap", "H"), "disgust": ("dis", "D")}
_MSP8: dict[str, tuple[str, ...]] = {
    "angry": ("A",), "sad": ("S",), "happy": ("H",), "surprise": ("U",),
    "fear": ("F",), "disgust": ("D",), "contempt": ("C",), "neutral": ("N",),
}

LABEL_SPACES: dict[str, LabelSpace] = {
    "iemocap-4": _space("iemocap-4", ("neutral", "happy", "angry", "sad"), _FOUR),
    "iemocap-5": _space("iemocap-5", ("neutral", "angry", "happy", "sad", "disgust"), _FIVE),
    "msp-4": _space("msp-4", ("neutral", "happy", "angry", "sad"), _FOUR),
    "msp-5": _space("msp-5", ("neutral", "angry", "happy", "sad", "disgust"), _FIVE),
    "msp-8": _space("msp-8", tuple(_MSP8), _MSP8),
}
"""Named label spaces. ``iemocap-4``: neutral, happy (= hap + exc), angry, sad (the common
4-class set; excited merged into happy). ``iemocap-5``: the 5-class set of paper 002
(neutral, angry, happy, sad, disgust; happy is ``hap`` alone, excited is left out, as the paper
names no merge). The ``msp-*`` spaces are the same classes read from
MSP-Podcast codes; ``msp-8`` is its eight primary emotions. Each space maps the other
corpus's codes too, so mixed-corpus runs share one classifier."""


def get_label_space(name: str) -> LabelSpace:
    """Look up a named label space.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return LABEL_SPACES[name]
    except KeyError:
        raise LabelSpaceError(f"unknown label space {name!r}; known: {', '.join(LABEL_SPACES)}, auto, a list "
                         "(neutral,happy,sad) or a YAML file mapping each class to its codes") from None


def resolve_label_space(spec: str, categories=()) -> LabelSpace:
    """A label space from a recipe's ``data.label_space``:

    - a registered name (``iemocap-4`` ...);
    - ``auto``: one class per category in ``categories`` (those of the training folds), sorted;
    - a comma-separated list of the corpus's own category names (``neutral,happy,sad,angry``);
    - a YAML or JSON file mapping each class to the codes it merges (``happy: [hap, exc]``).

    Raises:
        ValueError: an unknown name, an empty ``auto``, or a malformed mapping file.
    """
    from pathlib import Path

    spec = str(spec).strip()
    if spec in LABEL_SPACES:
        return LABEL_SPACES[spec]
    if spec == "auto":
        space = LabelSpace.from_codes(categories, name="auto")
        if not space.classes:
            raise LabelSpaceError("label space auto: the training folds have no categories")
        return space
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") and path.is_file():
        import yaml

        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise LabelSpaceError(f"{path}: not a readable mapping ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict) or not raw:
            raise LabelSpaceError(f"{path}: a label space file maps each class to its codes, e.g. happy: [hap, exc]")
        groups = {str(c): tuple(str(x) for x in (v if isinstance(v, list) else [v])) for c, v in raw.items()}
        clash = sorted({x for v in groups.values() for x in v if sum(x in w for w in groups.values()) > 1})
        if clash:
            raise LabelSpaceError(f"{path}: code(s) {clash} map to more than one class")
        return _space(path.stem, tuple(groups), groups)
    if "," in spec:
        classes = tuple(c.strip() for c in spec.split(",") if c.strip())
        return LabelSpace("list", classes, {c: c for c in classes})
    return get_label_space(spec)


def left_out(space: LabelSpace, categories) -> dict[str, int]:
    """The categories a label space leaves out, with their counts (none is relabelled)."""
    counts: dict[str, int] = {}
    for c in categories:
        if c is None or (isinstance(c, float) and np.isnan(c)) or space.class_of(c) is not None:
            continue
        counts[str(c)] = counts.get(str(c), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


@dataclass
class Labels:
    """The targets of a manifest in one label space, by utterance id.

    Attributes:
        dims: ``(3,)`` float32 arousal, valence, dominance scaled to [0, 1] of the utterance's
            corpus scale (NaN = missing).
        category: class index in the label space (-1 = missing or left out by the space).
        scale: ``(min, max)`` of the utterance's corpus scale (NaN when it has none).
    """

    dims: dict[str, np.ndarray]
    category: dict[str, int]
    scale: dict[str, tuple[float, float]]

    @classmethod
    def from_manifest(cls, manifest, space: LabelSpace) -> "Labels":
        """Targets of every row of ``manifest`` (a :class:`~sermo.data.manifest.Manifest`)."""
        from sermo.data.manifest import DIMENSIONS

        df = manifest.df
        lo = df["scale_min"].to_numpy(dtype=float)
        hi = df["scale_max"].to_numpy(dtype=float)
        raw = df[list(DIMENSIONS)].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            norm = (raw - lo[:, None]) / (hi - lo)[:, None]
        cats = space.indices(df["category"].tolist())
        ids = df["id"].tolist()
        return cls(dims={u: norm[i].astype(np.float32) for i, u in enumerate(ids)},
                   category={u: int(cats[i]) for i, u in enumerate(ids)},
                   scale={u: (float(lo[i]), float(hi[i])) for i, u in enumerate(ids)})

    def to_corpus_scale(self, ids: list[str], dims01: np.ndarray) -> np.ndarray:
        """Map ``(n, 3)`` [0, 1] predictions back to each utterance's corpus scale."""
        lo = np.array([self.scale[u][0] for u in ids], dtype=float)
        hi = np.array([self.scale[u][1] for u in ids], dtype=float)
        lo, hi = np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)
        return dims01 * (hi - lo)[:, None] + lo[:, None]


def label_summary(manifest, space: LabelSpace) -> str:
    """The categories a corpus has (with counts), which of them the label space maps, and whether
    it has dimensions: what a user needs to choose a label space."""
    from sermo.data.manifest import DIMENSIONS

    df = manifest.df
    counts = df["category"].dropna().astype(str).value_counts()
    found = ", ".join(f"{c} {n}" for c, n in counts.head(12).items()) or "none"
    mapped = [c for c in counts.index if space.class_of(c) is not None]
    dims = "it has A/V/D values" if df[list(DIMENSIONS)].notna().any().any() else "it has no A/V/D values"
    return (f"label space {space.name!r} maps {len(mapped)} of the corpus's categories ({found}); {dims}. Choose a "
            "label space that maps its categories, or rows that learn what it has")


def usable_ids(folds, labels: Labels, targets) -> set[str]:
    """The utterances a run can use: in one of its folds and labelled with what its rows learn
    from (``dims``: any dimension; ``category``: a class of the label space)."""
    ids = {u for f in folds for u in (*f.train, *f.valid, *(x for t in f.tests.values() for x in t))}
    return labelled_ids(ids, labels, targets)


def labelled_ids(ids, labels: Labels, targets) -> set[str]:
    """Those of ``ids`` labelled with what a system's rows learn from (see :func:`usable_ids`)."""
    return {u for u in ids if ("dims" in targets and np.isfinite(labels.dims[u]).any())
            or ("category" in targets and labels.category[u] >= 0)}
