import json

import numpy as np
import pytest
import torch

from sermo.data.batch import Batch
from sermo.data.corpora import prepare
from sermo.data.manifest import Manifest
from sermo.data.protocols import build_protocol
from sermo.features import FeatureStore
from sermo.nn.pooling import SelfAttentivePool
from sermo.systems.hierarchical import HierarchicalConfig, HierarchicalModel, masked_labels, resolve_labels
from sermo.training.runner import run_system
from tests.conftest import small_iemocap

CFG = HierarchicalConfig(conformer_layers=1, hidden=16, heads=2, kernel=3, mlp=[16, 8], dropout=0.0)


def make_batch(n=6, frames=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, frames, dtype=torch.bool)
    mask[0, 6:] = False
    return Batch(ids=[str(i) for i in range(n)], dims=torch.rand(n, 3, generator=g),
                 category=torch.randint(0, 5, (n,), generator=g), audio=torch.randn(n, 1, frames, 8, generator=g),
                 audio_mask=mask)


def test_self_attentive_pooling_ignores_padding():
    pool = SelfAttentivePool(4, hidden=8)
    x = torch.randn(1, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    noisy = x.clone()
    noisy[0, 4:] = 1e4
    assert torch.allclose(pool(x, mask), pool(noisy, mask), atol=1e-5)
    assert torch.allclose(pool(x, mask), pool(x[:, :4], mask[:, :4]), atol=1e-5)


@pytest.mark.parametrize("row, head, other", [("hier_dc", "dims_head", "disc"), ("hier_cd", "cls_head", "cont")])
def test_hierarchical_heads_read_and_train_the_other_branch(row, head, other):
    torch.manual_seed(0)
    model = HierarchicalModel(row, audio=(1, 8), num_classes=5, cfg=CFG)
    width = CFG.mlp[-1]
    assert getattr(model, head).in_features == 2 * width  # [E_other, E_own]
    batch = make_batch()
    out = model(batch)
    target = out.dims.sum() if row == "hier_dc" else out.logits.sum()
    target.backward()
    grads = [p.grad for p in getattr(model, other).parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # gradients flow into the other branch
    # in the plain multi-task model they do not
    plain = HierarchicalModel("multitask", audio=(1, 8), num_classes=5, cfg=CFG)
    plain(batch).dims.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in plain.disc.parameters())


@pytest.mark.parametrize("row", ["hier_dc", "hier_cd", "multitask"])
def test_each_head_reads_what_the_paper_says(row):
    # paper 002, Fig. 1: D-C predicts the dimensions from [E_D, E_C] and the class from E_D alone;
    # C-D the class from [E_C, E_D] and the dimensions from E_C alone; multi-task each from its own
    torch.manual_seed(0)
    model = HierarchicalModel(row, audio=(1, 8), num_classes=5, cfg=CFG).eval()
    batch = make_batch()
    out = model(batch)

    def after_scrambling(branch):
        copy = __import__("copy").deepcopy(model)
        with torch.no_grad():
            for p in getattr(copy, branch).parameters():
                p.add_(torch.randn_like(p))
        o = copy(batch)
        return (o.dims - out.dims).abs().max().item(), (o.logits - out.logits).abs().max().item()

    dims_by_disc, _ = after_scrambling("disc")
    _, logits_by_cont = after_scrambling("cont")
    assert (dims_by_disc > 1e-3) == (row == "hier_dc"), dims_by_disc
    assert (logits_by_cont > 1e-3) == (row == "hier_cd"), logits_by_cont
    # and the other label type teaches the branch it reads: the CCC loss alone moves E_D's branch
    # in D-C (not in the multi-task model), the CE alone moves E_C's branch in C-D
    loss_of, moved = ("ccc", "disc") if row != "hier_cd" else ("ce", "cont")
    model.train()
    before = [p.detach().clone() for p in getattr(model, moved).parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        model.losses(model(batch), batch)[loss_of].backward()
        opt.step()
    change = sum((p.detach() - b).abs().sum().item() for p, b in zip(getattr(model, moved).parameters(), before))
    assert (change > 1e-3) == (row != "multitask"), change


def test_batches_with_one_label_type_train_without_nan():
    torch.manual_seed(0)
    model = HierarchicalModel("multitask", audio=(1, 8), num_classes=5, cfg=CFG)
    only_disc = make_batch()
    only_disc.dims[:] = float("nan")
    losses = model.losses(model(only_disc), only_disc)
    assert torch.isfinite(losses["loss"]) and losses["ccc"].item() == 0.0
    assert torch.isclose(losses["loss"], losses["ce"])
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    only_cont = make_batch(seed=1)
    only_cont.category[:] = -1
    losses = model.losses(model(only_cont), only_cont)
    assert losses["ce"].item() == 0.0 and torch.isclose(losses["loss"], losses["ccc"])
    # a mixed batch counts each label only where present: masking items changes the CE to theirs
    mixed = make_batch(seed=2)
    out = model(mixed)
    full_ce = model.losses(out, mixed)["ce"]
    mixed.category[3:] = -1
    part = torch.nn.functional.cross_entropy(out.logits[:3], mixed.category[:3])
    assert torch.isclose(model.losses(out, mixed)["ce"], part) and not torch.isclose(part, full_ce)


def test_relu_head_starts_alive():
    model = HierarchicalModel("hier_dc", audio=(1, 8), num_classes=5, cfg=CFG)
    assert (model(make_batch()).dims > 0).float().mean() > 0.9


def two_corpora(iemocap_synth, msp_synth):
    return Manifest.concat([prepare("iemocap", iemocap_synth), prepare("msp-podcast", msp_synth)])


def test_transfer_protocol_draws_an_msp_subset_of_iemocaps_training_size(iemocap_synth, msp_synth):
    manifest = two_corpora(iemocap_synth, msp_synth)
    corpus = dict(zip(manifest.df["id"], manifest.df["corpus"]))
    fold = build_protocol("corpus-transfer", manifest, seed=0).folds[0]
    iem = [u for u in fold.train if corpus[u] == "iemocap"]
    msp = [u for u in fold.train if corpus[u] == "msp-podcast"]
    msp_train = (manifest.df["partition"] == "Train").sum()
    assert len(msp) == min(len(iem), msp_train) and len(msp) > 0
    assert set(fold.tests) == {"iemocap", "msp-test1"}
    other = build_protocol("corpus-transfer", manifest, seed=1).folds[0]
    assert set(other.train) != set(fold.train) and set(other.tests["iemocap"]) == set(fold.tests["iemocap"])


def test_transfer_protocol_trains_iemocap_on_four_sessions_and_sizes_msp_after_the_label_filter(iemocap_synth,
                                                                                               msp_synth):
    # paper 002, section 3.6: IEMOCAP trains on the four sessions it does not test on; the MSP-Podcast
    # subset is as large as IEMOCAP's training data, which is the 5-class data the models learn from
    from sermo.data.labels import Labels, get_label_space, labelled_ids

    manifest = two_corpora(iemocap_synth, msp_synth)
    df = manifest.df
    session = dict(zip(df["id"], df["session"]))
    corpus = dict(zip(df["id"], df["corpus"]))
    labels = Labels.from_manifest(manifest, get_label_space("iemocap-5"))
    keep = labelled_ids(df["id"], labels, ("category",))
    fold = build_protocol("corpus-transfer", manifest, seed=0, keep=keep).folds[0]
    sessions = sorted(df.loc[df["corpus"] == "iemocap", "session"].unique())
    iem_seen = {session[u] for u in (*fold.train, *fold.valid) if corpus[u] == "iemocap"}
    assert iem_seen == set(sessions[:-1]) and {session[u] for u in fold.tests["iemocap"]} == {sessions[-1]}
    assert {session[u] for u in fold.train if corpus[u] == "iemocap"} == set(sessions[:-1])
    iem = [u for u in fold.train if corpus[u] == "iemocap" and u in keep]
    msp = [u for u in fold.train if corpus[u] == "msp-podcast"]
    assert len(msp) == len(iem) > 0 and all(u in keep for u in msp)


def test_masked_labels_keep_only_the_chosen_type(iemocap_synth, msp_synth):
    from sermo.data.labels import get_label_space
    from sermo.data.labels import Labels

    manifest = two_corpora(iemocap_synth, msp_synth)
    labels = Labels.from_manifest(manifest, get_label_space("iemocap-5"))
    corpus_of = dict(zip(manifest.df["id"], manifest.df["corpus"]))
    kinds = resolve_labels({"iemocap": "continuous", "msp": "discrete"}, ["iemocap", "msp-podcast"])
    assert kinds == {"iemocap": "continuous", "msp-podcast": "discrete"}
    masked = masked_labels(labels, corpus_of, kinds)
    for u, c in corpus_of.items():
        if c == "iemocap":
            assert masked.category[u] == -1 and np.array_equal(masked.dims[u], labels.dims[u], equal_nan=True)
        else:
            assert np.isnan(masked.dims[u]).all() and masked.category[u] == labels.category[u]
    with pytest.raises(ValueError, match="not one of"):
        resolve_labels({"meld": "continuous"}, ["iemocap", "msp-podcast"])


@pytest.mark.slow
def test_every_model_and_the_mismatched_setup_run_one_step(iemocap_synth, msp_synth, tmp_path):
    small = small_iemocap(iemocap_synth, tmp_path / "iem.parquet", 5)
    store = FeatureStore(tmp_path / "store")
    fast = ["train.epochs=1", "train.batch_size=16", "model.conformer_layers=1", "model.hidden=16",
            "model.mlp=[16, 8]", "model.subsample=16"]
    out = run_system("hierarchical", [("iemocap", small)], folds=[1], out=tmp_path / "one", store=store,
                     progress=False, overrides=fast, profile="demo")
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert list(rows) == ["baseline_c", "baseline_d", "multitask", "hier_dc", "hier_cd"]
    # every row, the continuous one too, reads the five classes' utterances only (paper 002)
    import pandas as pd

    tested = pd.read_parquet(out / "predictions" / "baseline_c.fold1.test.parquet")
    assert len(tested) and (tested["category_true"] >= 0).all()
    report = (out / "REPORT.md").read_text()
    assert "## Deviations from the paper" in report and "differs from the `paper` profile" in report
    assert "## Significance of the paper's comparisons" in report and "hier_dc vs baseline_c" in report
    assert "ua" not in rows["baseline_c"]["mean"] and "ccc_mean" not in rows["baseline_d"]["mean"]
    assert {"ccc_mean", "ua", "wa", "macro_f1"} <= set(rows["hier_cd"]["mean"])
    out = run_system("hierarchical", [("iemocap", small), ("msp-podcast", msp_synth)], out=tmp_path / "two",
                     store=store, progress=False, overrides=fast, profile="demo")
    rows = json.loads((out / "results.json").read_text())["rows"]
    # the mismatched rows 7 and 8 train both hierarchical models, and the multi-task one beside them
    assert [r["info"][0]["table2_id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 7, 7, 8, 8, 8]
    assert [r["info"][0]["model"] for r in rows if r["info"][0]["table2_id"] == 7] == ["hier_dc", "hier_cd",
                                                                                       "multitask"]
    report = (out / "REPORT.md").read_text()
    assert "Table 2" in report and report.count("| Cont. |") >= 2
    bundle = json.loads((out / "bundles" / rows[6]["name"] / "config.json").read_text())
    assert bundle["label_scale"] == [1.0, 5.0]  # the first corpus's scale; every corpus's listed
    assert bundle["label_scales"] == {"iemocap": [1.0, 5.0], "msp-podcast": [1.0, 7.0]}
    out = run_system("hierarchical", [("iemocap", small), ("msp-podcast", msp_synth)], out=tmp_path / "three",
                     store=store, progress=False, overrides=fast + ["model.labels={iemocap: continuous, msp: discrete}"], profile="demo")
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["info"][0]["model"] for r in rows] == ["hier_dc", "hier_cd", "multitask"]


def test_a_corpus_with_categories_only_trains_the_rows_it_can_and_skips_the_rest(tmp_path):
    # issue 29, item 3: a categorical corpus of one's own stopped the whole run ("the model predicts
    # dimensions, but its training split has none of them")
    from tests.data.corpora.test_own_corpus import write_corpus

    table = write_corpus(tmp_path / "mine")
    out = run_system("hierarchical", [("mine", table)], folds=[1], out=tmp_path / "run", progress=False,
                     store=FeatureStore(tmp_path / "store"),
                     overrides=["data.label_space=auto", "data.protocol=speaker-folds(3)", "data.audio_encoder=logmel",
                                "data.frame_pool=1", "train.epochs=1", "train.batch_size=8", "model.conformer_layers=1",
                                "model.hidden=16", "model.mlp=[16, 8]", "model.subsample=4"], profile="demo")
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert "ua" in rows["baseline_d"]["mean"] and not rows["baseline_d"].get("skipped")
    for name in ("baseline_c", "multitask", "hier_dc", "hier_cd"):
        assert "no dimensional labels" in rows[name]["skipped"], name
