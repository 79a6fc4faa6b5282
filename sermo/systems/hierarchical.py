"""``hierarchical``: joint discrete and continuous emotion, hierarchical multi-task (paper 002).

Sharma, Dhamyal, Raj, Singh: frozen SSL features -> 4-layer conformer (hidden 64) -> frames H;
each decoder branch has its own self-attentive pooling and an MLP (64 -> 32, LeakyReLU,
dropout 0.2) giving E_C (continuous) or E_D (discrete). Continuous output: 3 values through
a ReLU; discrete output: class logits. Rows: ``baseline_c``, ``baseline_d``, ``multitask``
(independent branches), ``hier_dc`` (continuous predicted from [E_D, E_C]) and ``hier_cd``
(discrete predicted from [E_C, E_D]). Loss: alpha * sum over V, A, D of (1 - CCC) + beta * CE.
Missing labels are masked, so utterances with only one label type train their own head.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sermo.config import RunConfig, setting
from sermo.data.batch import Batch
from sermo.data.protocols import TRANSFER_FOLD, TRANSFER_TESTS
from sermo.data.spec import ModelSpec
from sermo.evaluation.runfolder import RunResults
from sermo.nn.layers import Conformer, LayerWeighting, Standardize, average_frames, frames_left
from sermo.nn.losses import ccc_per_dim, masked_cross_entropy
from sermo.nn.pooling import SelfAttentivePool
from sermo.systems.api import FoldContext, Output, Row, RowResult, Stats
from sermo.systems.common import lacking
from sermo.systems.definition import Deviation, SystemDef, register

ROWS = {
    "baseline_c": ("continuous",),
    "baseline_d": ("discrete",),
    "multitask": ("continuous", "discrete"),
    "hier_dc": ("continuous", "discrete"),
    "hier_cd": ("continuous", "discrete"),
}

LABEL_TYPES = ("continuous", "discrete", "none")

TABLE2 = [  # paper 002, Table 2: (ID, IEMOCAP training labels, MSP-Podcast training labels)
    (1, "none", "continuous"), (2, "continuous", "none"), (3, "none", "discrete"), (4, "discrete", "none"),
    (5, "continuous", "continuous"), (6, "discrete", "discrete"), (7, "continuous", "discrete"),
    (8, "discrete", "continuous"),
]


@dataclass
class HierarchicalConfig:
    """Model section of the hierarchical recipe.

    Attributes:
        rows: which of ``baseline_c baseline_d multitask hier_dc hier_cd`` to train.
        conformer_layers, hidden, heads, kernel: the encoder (paper: 4 layers, 64 hidden).
        mlp: the branch MLP widths after pooling (paper: 64, 32).
        dropout: decoder dropout (paper: 0.2).
        subsample: average every n input frames before the conformer (1 = none).
        alpha, beta: weights of the CCC sum and the cross-entropy (paper: 1, 1).
        labels: with two corpora (protocol ``corpus-transfer``): the label type each corpus
            contributes to training, ``{"iemocap": "continuous", "msp-podcast": "discrete"}``
            (``none``: the corpus is left out of training); the other type is masked. Unset:
            all eight combinations of Table 2 are trained, one row each.
    """

    rows: list[str] = field(default_factory=lambda: list(ROWS))
    conformer_layers: int = setting(4, min=1)
    hidden: int = setting(64, min=1)
    heads: int = setting(4, min=1)
    kernel: int = setting(15, min=1)
    mlp: list[int] = setting(default_factory=lambda: [64, 32], min=1)
    dropout: float = setting(0.2, min=0, lt=1)
    subsample: int = setting(1, min=1)
    alpha: float = setting(1.0, min=0)
    beta: float = setting(1.0, min=0)
    labels: dict[str, str] | None = None


class Branch(nn.Module):
    """Self-attentive pooling over H, then the MLP: ``(B, T, hidden) -> (B, mlp[-1])``."""

    def __init__(self, hidden: int, widths: list[int], dropout: float):
        super().__init__()
        self.pool = SelfAttentivePool(hidden)
        layers: list[nn.Module] = []
        dims = [hidden, *widths]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(h, mask))


class HierarchicalModel(nn.Module):
    """One row of paper 002: shared conformer encoder, one or two branches, hierarchical heads."""

    def __init__(self, row: str, *, audio: tuple[int, int], num_classes: int, cfg: HierarchicalConfig):
        super().__init__()
        if row not in ROWS:
            raise ValueError(f"unknown hierarchical row {row!r}; known: {', '.join(ROWS)}")
        self.row, self.cfg = row, cfg
        layers, dim = audio
        self.norm = Standardize(layers, dim)
        self.layers = LayerWeighting(layers)
        self.encoder = Conformer(dim, cfg.hidden, cfg.conformer_layers, cfg.heads, cfg.kernel, dropout=0.1)
        tasks = ROWS[row]
        width = cfg.mlp[-1] if cfg.mlp else cfg.hidden
        self.cont = Branch(cfg.hidden, cfg.mlp, cfg.dropout) if "continuous" in tasks else None
        self.disc = Branch(cfg.hidden, cfg.mlp, cfg.dropout) if "discrete" in tasks else None
        self.dims_head = nn.Linear(2 * width if row == "hier_dc" else width, 3) if self.cont is not None else None
        self.cls_head = nn.Linear(2 * width if row == "hier_cd" else width, num_classes) if self.disc else None
        if self.dims_head is not None:
            # the ReLU output starts in the middle of the [0, 1] targets: a ReLU that starts at or
            # below zero for most inputs never gets a gradient and the branch dies
            nn.init.constant_(self.dims_head.bias, 0.5)

    def forward(self, batch: Batch) -> Output:
        audio, audio_mask = batch.need("audio"), batch.need("audio_mask")
        x = self.layers.standardized(audio, self.norm, audio_mask)  # (B, T, D)
        x, mask = average_frames(x, audio_mask, frames_left(self.cfg.subsample, batch.audio_pool))
        h = self.encoder(x, mask)  # (B, T', hidden): H
        e_c = self.cont(h, mask) if self.cont is not None else None  # E_C
        e_d = self.disc(h, mask) if self.disc is not None else None  # E_D
        dims = logits = None
        if e_c is not None and self.dims_head is not None:
            dims = torch.relu(self.dims_head(torch.cat([e_d, e_c], -1) if e_d is not None and self.row == "hier_dc"
                                             else e_c))
        if e_d is not None and self.cls_head is not None:
            logits = self.cls_head(torch.cat([e_c, e_d], -1) if e_c is not None and self.row == "hier_cd" else e_d)
        return Output(dims=dims, logits=logits, extras={"e_c": e_c, "e_d": e_d})

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=batch.dims.device)
        if out.dims is not None:
            c = ccc_per_dim(out.dims, batch.dims)
            present = torch.isfinite(c)
            ccc_sum = (1 - c[present]).sum() if present.any() else out.dims.sum() * 0.0
            parts["ccc"] = ccc_sum
            total = total + self.cfg.alpha * ccc_sum
        if out.logits is not None:
            parts["ce"] = masked_cross_entropy(out.need("logits"), batch.category)
            total = total + self.cfg.beta * parts["ce"]
        return {"loss": total, **parts}


def build_model(architecture: str, cfg: HierarchicalConfig, spec: ModelSpec,
                stats: Stats | None = None) -> HierarchicalModel:
    """A row's model (one of :data:`ROWS`) for its spec's features, standardised with ``stats``."""
    if spec.audio is None:
        raise ValueError(f"a hierarchical {architecture} model reads audio features; its spec has none")
    model = HierarchicalModel(architecture, audio=spec.audio, num_classes=spec.num_classes, cfg=cfg)
    if stats and "audio" in stats:
        model.norm.set(*stats["audio"])
    return model


def row(name: str, architecture: str, cfg: HierarchicalConfig) -> Row:
    """A row reading the recipe's speech features, with the model ``architecture``."""
    return Row(name, ("audio",), architecture, functools.partial(build_model, architecture, cfg))


def rows(cfg: RunConfig) -> list[Row]:
    """Table 1's rows the recipe names (Table 2's are declared per label combination when a
    corpus-transfer fold runs)."""
    return [row(name, name, cfg.model) for name in cfg.model.rows]


def run_fold(ctx: FoldContext) -> list[RowResult]:
    """The five models of Table 1 on one corpus; with two corpora (protocol ``corpus-transfer``)
    the mismatched-label models of Table 2."""
    if ctx.name == TRANSFER_FOLD:
        return run_transfer(ctx)
    declared = rows(ctx.cfg)
    why = lacking(ctx, ("audio",))
    if why:  # a text-only corpus: every row reads speech
        return [ctx.skipped_row(r.name, r.modalities, why) for r in declared]
    results = []
    # a corpus of one's own may carry one label type only: the rows that need the other are skipped
    train = ctx.ids("train")
    has = {"continuous": any(np.isfinite(ctx.labels.dims[u]).any() for u in train),
           "discrete": any(ctx.labels.category[u] >= 0 for u in train)}
    lacking_text = {"continuous": "dimensional labels (arousal, valence, dominance)",
                    "discrete": "categories of the label space"}
    for r in declared:
        missing = [t for t in ROWS[r.architecture] if not has[t]]
        if missing:
            results.append(ctx.skipped_row(r.name, r.modalities, "the corpus's training split has no "
                                           + " and no ".join(lacking_text[t] for t in missing)))
            continue
        results.append(ctx.train(r))
    return results


def resolve_labels(given: dict[str, str], corpora: list[str]) -> dict[str, str]:
    """Map ``--labels`` keys (a corpus name or a prefix of one: ``msp`` for ``msp-podcast``) to the
    manifest's corpus names; every corpus gets a type (unnamed ones: ``none``).

    Raises:
        ValueError: an unknown corpus or label type.
    """
    out = {c: "none" for c in corpora}
    for key, kind in given.items():
        if kind not in LABEL_TYPES:
            raise ValueError(f"label type {kind!r} for {key!r}; known: {', '.join(LABEL_TYPES)}")
        match = [c for c in corpora if c == key] or [c for c in corpora if c.startswith(key)]
        if len(match) != 1:
            raise ValueError(f"--labels names {key!r}, which is not one of the run's corpora {corpora}")
        out[match[0]] = kind
    return out


def masked_labels(labels, corpus_of: dict[str, str], kinds: dict[str, str]):
    """A copy of ``labels`` where each corpus keeps only its training label type: ``continuous``
    masks the category (-1), ``discrete`` the dimensions (NaN)."""
    dims, cats = dict(labels.dims), dict(labels.category)
    nan = np.full(3, np.nan, dtype=np.float32)
    for u, c in corpus_of.items():
        kind = kinds.get(c, "none")
        if kind != "discrete" and u in cats:
            cats[u] = -1
        if kind != "continuous" and u in dims:
            dims[u] = nan
    return dataclasses.replace(labels, dims=dims, category=cats)


def run_transfer(ctx: FoldContext) -> list[RowResult]:
    """One model per label combination: the continuous, discrete or multi-task model as the
    combination needs, trained on both corpora with each contributing its chosen label type."""
    cfg: HierarchicalConfig = ctx.cfg.model
    df = ctx.manifest.df
    corpus_of = dict(zip(df["id"], df["corpus"]))
    corpora = sorted(set(corpus_of.values()))
    plans: list[tuple[int | None, dict[str, str]]]
    if cfg.labels:
        plans = [(None, resolve_labels(cfg.labels, corpora))]
    else:
        if set(corpora) != {"iemocap", "msp-podcast"}:
            raise ValueError(f"the Table 2 experiment needs IEMOCAP and MSP-Podcast; the run has {corpora}")
        plans = [(i, {"iemocap": a, "msp-podcast": b}) for i, a, b in TABLE2]
    results = []
    for table_id, kinds in plans:
        trained = {k for k in kinds.values() if k != "none"}
        if not trained:
            raise ValueError("--labels gives every corpus the type none: nothing to train on")
        # with both label types (Table 2's mismatched rows) the paper's point is the hierarchical
        # models; the plain multi-task model is trained beside them for comparison
        archs = ["hier_dc", "hier_cd", "multitask"] if trained == {"continuous", "discrete"} else \
            (["baseline_c"] if trained == {"continuous"} else ["baseline_d"])
        short = {"continuous": "cont", "discrete": "disc", "none": "none"}
        base = "_".join(f"{c.split('-')[0]}-{short[kinds[c]]}" for c in sorted(kinds))
        if table_id is not None:
            base = f"t{table_id}_{base}"
        # training sees each corpus's chosen labels only, and only the corpora that give one
        labels = masked_labels(ctx.labels, corpus_of, kinds)
        keep = {u for u, c in corpus_of.items() if kinds.get(c, "none") != "none"}
        for arch in archs:
            name = base + (f"_{arch}" if len(archs) > 1 else "")
            results.append(ctx.train(row(name, arch, cfg), labels=labels, only=keep,
                                     info={"table2_id": table_id, "labels": kinds, "model": arch}))
    return results


def finish(out: Path, results: RunResults) -> str:
    """Table 2 (IEMOCAP CCC and UA, MSP-Podcast CCC and macro-F1 per label combination)."""
    from sermo.evaluation.report import markdown_table

    rows = [r for r in results["rows"] if r.get("info") and "labels" in r["info"][0]]
    if not rows:
        return ""

    def metric(r, test, key):
        m = r["mean"] if r.get("test_set") == test else r.get("tests", {}).get(test, {}).get("mean", {})
        v = m.get(key)
        return "-" if v is None else f"{v:.3f}"

    short = {"continuous": "Cont.", "discrete": "Disc.", "none": "-"}
    lines = []
    for r in rows:
        info = r["info"][0]
        kinds = info["labels"]
        paper = TABLE2_PAPER.get(info["table2_id"], {})
        line = {"ID": info["table2_id"] or "", "IEMOCAP train": short[kinds.get("iemocap", "none")],
                "MSP-Podcast train": short[kinds.get("msp-podcast", "none")], "model": info["model"]}
        for col, test, key in TABLE2_COLUMNS:
            line[col] = metric(r, test, key)
            if info["table2_id"] is not None:
                line[f"{col} (paper)"] = "-" if paper.get(col) is None else f"{paper[col]:.3f}"
        lines.append(line)
    return ("## Mismatched labels across corpora (Table 2)\n\nOne model per row, trained on IEMOCAP and an "
            "MSP-Podcast subset of the same size, each corpus contributing only the label type named (the other "
            "is masked); CCC is the mean over arousal, valence and dominance, UA on IEMOCAP's test session, "
            "macro-F1 on MSP-Podcast Test1. The paper's Table 2 stands beside each (its rows 7 and 8 name no "
            "model, so both hierarchical models and the multi-task one face them).\n\n" + markdown_table(lines))


TABLE2_COLUMNS = (("IEMOCAP CCC", TRANSFER_TESTS[0], "ccc_mean"), ("IEMOCAP UA", TRANSFER_TESTS[0], "ua"),
                  ("MSP-Podcast CCC", TRANSFER_TESTS[1], "ccc_mean"), ("MSP-Podcast F1", TRANSFER_TESTS[1], "macro_f1"))

TABLE2_PAPER = {  # paper 002, Table 2 (IEMOCAP Session05; MSP-Podcast Test1); "Acc" there is the UA
    1: {"IEMOCAP CCC": 0.125, "MSP-Podcast CCC": 0.524},
    2: {"IEMOCAP CCC": 0.327, "MSP-Podcast CCC": 0.140},
    3: {"IEMOCAP UA": 0.459, "MSP-Podcast F1": 0.325},
    4: {"IEMOCAP UA": 0.701, "MSP-Podcast F1": 0.266},
    5: {"IEMOCAP CCC": 0.586, "MSP-Podcast CCC": 0.524},
    6: {"IEMOCAP UA": 0.695, "MSP-Podcast F1": 0.364},
    7: {"IEMOCAP CCC": 0.625, "IEMOCAP UA": 0.470, "MSP-Podcast CCC": 0.189, "MSP-Podcast F1": 0.302},
    8: {"IEMOCAP CCC": 0.218, "IEMOCAP UA": 0.705, "MSP-Podcast CCC": 0.497, "MSP-Podcast F1": 0.283},
}


PAPER = {
    "iemocap": {  # Table 1 (HuBERT large, 5-fold, 5 classes)
        "baseline_c": {"ccc_mean": 0.580, "ccc_valence": 0.548, "ccc_arousal": 0.606, "ccc_dominance": 0.566},
        "baseline_d": {"ua": 0.737},
        "multitask": {"ccc_mean": 0.603, "ccc_valence": 0.571, "ccc_arousal": 0.669, "ccc_dominance": 0.567,
                      "ua": 0.723},
        "hier_dc": {"ccc_mean": 0.667, "ccc_valence": 0.660, "ccc_arousal": 0.717, "ccc_dominance": 0.625,
                    "ua": 0.744},
        "hier_cd": {"ccc_mean": 0.648, "ccc_valence": 0.651, "ccc_arousal": 0.694, "ccc_dominance": 0.599,
                    "ua": 0.749},
    },
    "msp-podcast": {  # Table 3 (Test1)
        "baseline_c": {"ccc_mean": 0.593, "ccc_valence": 0.597, "ccc_arousal": 0.646, "ccc_dominance": 0.538},
        "baseline_d": {"macro_f1": 0.368},
        "multitask": {"ccc_mean": 0.587, "ccc_valence": 0.591, "ccc_arousal": 0.637, "ccc_dominance": 0.533,
                      "macro_f1": 0.393},
        "hier_dc": {"ccc_mean": 0.617, "ccc_valence": 0.588, "ccc_arousal": 0.675, "ccc_dominance": 0.584,
                    "macro_f1": 0.404},
        "hier_cd": {"ccc_mean": 0.605, "ccc_valence": 0.554, "ccc_arousal": 0.661, "ccc_dominance": 0.569,
                    "macro_f1": 0.411},
    },
}

DEVIATIONS = (
    Deviation("Table 1 validates on 10% of the training sessions' dialogs (iemocap-loso-holdout).",
              "The paper's 'standard 5-fold' trains on four sessions and does not say how it validated.",
              "None on the comparison; every row selects its epoch the same way.", profiles=("paper",),
              corpora=("iemocap",)),
    Deviation("ESPnet's warm-up of 15,000 steps is cut to 30% of a run's real steps when longer; 50 epochs.",
              "The paper does not give its epochs; on IEMOCAP 15,000 steps is more than a whole run, whose peak "
              "rate would never be reached.", "Every row trains on the same schedule.", profiles=("paper",)),
    Deviation("HuBERT large's hidden states are combined with learned softmax weights.",
              "The paper says 'HuBERT-large embeddings'; ESPnet's self-supervised front end weighs every layer.",
              "None on the comparison."),
    Deviation("The conformer's sizes past 'four layers of 64': 4 heads, convolution kernel 15, feed-forward "
              "4 x 64, dropout 0.1; its convolution module normalises each utterance over its real frames "
              "(ESPnet: BatchNorm over the batch, padding included).", "The paper gives only the layers and "
              "width; a batch-dependent normalisation would make an utterance's prediction depend on what it is "
              "batched with.", "Every row has the same encoder; absolute numbers may move."),
    Deviation("Each branch's MLP maps the conformer's 64 to 64 and 32 (LeakyReLU, dropout 0.2).",
              "The paper says the projections map 'the encoded output dimension of 768' to 64, 32, yet its "
              "conformer has 64 units (and HuBERT large 1024): 768 reads as a slip.", "Head capacity only."),
    Deviation("Batch size 32; the cross-entropy of Eq. 1 is the batch mean, not the sum over utterances.",
              "The paper gives no batch size, and with alpha = beta = 1 a sum would weigh CE 32 times the CCC.",
              "Sets the CCC:CE balance of the multi-task and hierarchical rows alike."),
    Deviation("Self-attentive pooling is additive attention (Linear, tanh, Linear); the continuous head is a "
              "ReLU whose bias starts at 0.5.", "The paper names Safari et al.'s pooling without its form; a ReLU "
              "that starts below zero never learns.", "None expected."),
    Deviation("UA averages recall over the classes present in a fold's test session: disgust has 2 utterances "
              "in all of IEMOCAP, so one test utterance can be a fifth of a fold's UA.", "The paper's 5-class "
              "choice; sermo shows the confusion matrix beside it.", "UA varies between folds more than with 4 "
              "classes.", corpora=("iemocap",)),
    Deviation("Table 2's mismatched rows (7, 8) train both hierarchical models, and the multi-task model beside "
              "them.", "The paper's claim is about the hierarchical models there.", "Adds rows."),
)

# Table 1 compares UA on IEMOCAP, Table 3 macro-F1 on MSP-Podcast (test set "test1"); CCC on both
COMPARISONS = tuple((base, row, metric, tests) for base, metric, tests in (
    ("baseline_c", "ccc_mean", ("test", "test1")), ("baseline_d", "ua", ("test",)),
    ("baseline_d", "macro_f1", ("test1",))) for row in ("multitask", "hier_dc", "hier_cd"))

register(SystemDef(
    name="hierarchical", config_cls=HierarchicalConfig, run_fold=run_fold, build_model=build_model,
    rows=tuple(ROWS), paper=PAPER, finish=finish, order=3, targets=("category",), deviations=DEVIATIONS,
    comparisons=COMPARISONS, declare=rows, demo_corpora=("iemocap",), demo_extra=(("iemocap", "msp-podcast"),),
    title="Unifying discrete and continuous emotion labels: hierarchical multi-task models "
          "(Sharma, Dhamyal, Raj, Singh)",
))
