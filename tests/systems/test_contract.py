"""The system contract, checked for every registered system (transformers' ModelTesterMixin
style): each row's model is built from its spec, takes one training step on a random batch
that carries exactly the spec's inputs, predicts, and survives a bundle round trip.

Every registered system must have examples here: a new system fails this test until it adds
its own (tiny configs of each kind of row it has)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from sermo.config import build
from sermo.data.batch import Batch
from sermo.data.bundle import BundleConfig, read_bundle, save_bundle
from sermo.data.spec import FeatureInput, InputSpec, ModelSpec
from sermo.systems import load_all
from tests.conftest import tiny_speech_model, tiny_text_model

C = 4  # classes


@dataclass
class Example:
    """One tiny row model: its config, its spec and the training-only extras of a batch."""

    row: str
    config: Any
    spec: ModelSpec
    extras: Callable[[Batch], dict] | None = None


def feats(layers: int, dim: int, name: str = "stored") -> FeatureInput:
    return FeatureInput(name, None, layers, dim)


def spec(*, audio=None, text=None, wave=False, tokens=None, speaker=False, speech_model=None, text_model=None,
         options=None) -> ModelSpec:
    return ModelSpec(InputSpec(audio=audio, text=text, wave=wave, tokens=tokens, speaker=speaker), C, speech_model,
                     text_model, options or {})


def examples(system: str, enc: dict[str, str]) -> list[Example]:
    """Tiny examples of every kind of row of a system (``enc``: tiny HF speech and text models)."""
    a, t = feats(2, 6), feats(1, 5)
    if system == "baselines":
        from sermo.systems.baselines import BaselinesConfig as Cfg

        return [Example("audio", Cfg(head="gru", hidden=8, embedding=8, gru_layers=1), spec(audio=a)),
                Example("text", Cfg(head="pool", hidden=8, embedding=8), spec(text=t)),
                Example("fusion", Cfg(head="pool", hidden=8, embedding=8, modality_dropout=0.5, aux_weight=0.5),
                        spec(audio=a, text=t))]
    if system == "teacher_student":
        from sermo.systems.teacher_student import TeacherStudentConfig as Cfg

        cfg = Cfg(hidden=8, gru_layers=1, embedding=6)
        student = lambda b: {"teacher_emb": torch.randn(len(b), 6), "ts_keep": torch.tensor([1.0, 0.0, 1.0])}  # noqa: E731
        return [Example("audio", cfg, spec(audio=a)), Example("text", cfg, spec(text=t)),
                Example("multimodal", cfg, spec(audio=a, text=t)), Example("cts", cfg, spec(audio=a), student),
                Example("audio_ft", cfg, spec(wave=True, speech_model=enc["speech"]))]
    if system == "distilled":
        from sermo.systems.distilled.config import DistilledConfig as Cfg

        cfg = Cfg(hidden=8, speech_layers=[-1])
        return [Example("x", cfg, spec(audio=a)), Example("x+text", cfg, spec(audio=a, text=t)),
                Example("x+text", cfg, spec(wave=True, tokens=enc["text"], speech_model=enc["speech"],
                                            text_model=enc["text"])),
                Example("x+text", cfg, spec(audio=a, text=feats(1, 16), text_model=enc["text"],
                                            options={"text_top": 1}))]
    if system == "hierarchical":
        from sermo.systems.hierarchical import HierarchicalConfig as Cfg

        cfg = Cfg(conformer_layers=1, hidden=8, heads=2, kernel=3, mlp=[8, 4])
        return [Example(row, cfg, spec(audio=a)) for row in
                ("baseline_c", "baseline_d", "multitask", "hier_dc", "hier_cd", "t7_iemocap-cont_msp-disc")]
    if system == "label_embedding":
        from sermo.systems.label_embedding.config import LabelEmbeddingConfig as Cfg

        cfg = Cfg(dim=8, dropout=0.0)
        a1 = feats(1, 6)
        context = lambda b: {"t_current": torch.tensor([3, 2, 4])}  # noqa: E731
        both = {"label_dims": {"text": 5, "audio": 3}}  # speech units of another width (codevectors)
        return [Example("text", cfg, spec(text=t)), Example("speech", cfg, spec(audio=a1)),
                Example("text_context_le", cfg, spec(text=t, options={"label_dims": {"text": 5}}), context),
                Example("speech_le", cfg, spec(audio=a1, options={"label_dims": {"audio": 3}}))]\
            + [Example(row, cfg, spec(audio=a1, text=t, options=both), context)
               for row in ("le_mer", "fusion_ar_plus_al", "fusion_al_only", "fusion_ar_only")]\
            + [Example("le_mer", cfg, spec(wave=True, tokens=enc["text"], speech_model=enc["speech"],
                                           text_model=enc["text"], options=both))]
    if system == "cross_representation":
        from sermo.systems.cross_representation.config import CrossRepresentationConfig as Cfg

        cfg = Cfg(channels=8, encoder_convs=1, encoder_lstm_layers=1, decoder_lstm1=8, decoder_convs=1,
                  decoder_lstm2=8, decoder_lstm2_layers=1, postnet_convs=2, postnet_channels=8, phone_dim=8,
                  classifier=[8], text_filters=[8])

        def decoder_targets(b):
            lengths = 2 * b.audio_mask.sum(1)  # the mel spectrogram at twice the features' rate
            return {"mel": torch.randn(len(b), int(lengths.max()), 80), "mel_len": lengths,
                    "phones": torch.randint(0, 128, (len(b), int(lengths.max()))), "phones_len": lengths}

        return [Example("speech_small", cfg, spec(audio=feats(3, 6), speaker=True), decoder_targets),
                Example("speech_large", cfg, spec(audio=feats(3, 6), speaker=True), decoder_targets),
                Example("text", cfg, spec(text=t))]
    return []


def random_batch(s: ModelSpec, n: int = 3, seed: int = 0) -> Batch:
    """A batch carrying exactly the inputs of ``s``, each padded from three lengths."""
    g = torch.Generator().manual_seed(seed)

    def lengths_and_mask(lengths):
        lengths = torch.tensor(lengths)
        return lengths, torch.arange(int(lengths.max()))[None] < lengths[:, None]  # (B,), (B, T)

    b = Batch(ids=[f"u{i}" for i in range(n)], dims=torch.rand(n, 3, generator=g), category=torch.arange(n) % C)
    inp = s.inputs
    for name, f, lengths in (("audio", inp.audio, [40, 25, 33]), ("text", inp.text, [9, 6, 7])):
        if f is not None:
            _, mask = lengths_and_mask(lengths)
            x = torch.randn(n, f.num_layers, mask.shape[1], f.dim, generator=g) * mask[:, None, :, None]
            setattr(b, name, x)
            setattr(b, f"{name}_mask", mask)
    if inp.wave:
        b.wave_lengths, mask = lengths_and_mask([8000, 5000, 6400])
        b.wave = torch.randn(mask.shape, generator=g) * mask
    if inp.tokens:
        b.token_lengths, mask = lengths_and_mask([7, 5, 6])
        b.tokens = torch.randint(5, 20, mask.shape, generator=g) * mask
    if inp.speaker:
        b.speaker = torch.randn(n, 256, generator=g)
    return b


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"speech": tiny_speech_model(root / "hubert"), "text": tiny_text_model(root / "bert")}


def test_every_registered_system_has_examples(encoders):
    missing = [name for name in load_all() if not examples(name, encoders)]
    assert missing == [], f"add contract examples for {missing} to tests/systems/test_contract.py"


@pytest.mark.parametrize("system", sorted(load_all()))
def test_each_row_builds_trains_predicts_and_round_trips(system, encoders, tmp_path):
    sysdef = load_all()[system]
    for k, ex in enumerate(examples(system, encoders)):
        where = f"{system} example {k} ({ex.row})"
        torch.manual_seed(k)
        model = sysdef.build_model(ex.row, ex.config, ex.spec)
        # param_groups, where a model has them, cover every trainable parameter exactly once
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert trainable, where
        if hasattr(model, "param_groups"):
            grouped = [id(p) for ps, _ in model.param_groups() for p in ps if p.requires_grad]
            assert sorted(grouped) == sorted(id(p) for p in trainable), where
        # one training step
        batch = random_batch(ex.spec)
        batch.extras.update(ex.extras(batch) if ex.extras else {})
        model.train()
        out = model(batch)
        losses = model.losses(out, batch)
        assert torch.isfinite(losses["loss"]), where
        before = [p.detach().clone() for p in trainable]
        opt = torch.optim.Adam(trainable, lr=1e-2)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        assert any(not torch.equal(a, p) for a, p in zip(before, trainable)), f"{where}: nothing learned"
        # prediction: no training extras, eval mode, outputs of the promised shapes
        model.eval()
        plain = random_batch(ex.spec, seed=1)
        with torch.no_grad():
            out = model(plain)
        assert out.dims is not None or out.logits is not None, where
        if out.dims is not None:
            assert out.dims.shape[0] == 3 and torch.isfinite(out.dims).all(), where
        if out.logits is not None:
            assert out.logits.shape == (3, C) and torch.isfinite(out.logits).all(), where
        # the bundle rebuilds the same model from the system's code and the weights alone
        config = BundleConfig(system=system, row=ex.row, modalities=["audio"], model=dataclasses.asdict(ex.config),
                              spec=ex.spec, label_space={"name": "t", "classes": list("abcd"),
                                                         "mapping": {c: c for c in "abcd"}})
        folder = save_bundle(tmp_path / f"b{k}", model, config)
        cfg, weights = read_bundle(folder)
        again = sysdef.build_model(cfg.row, build(sysdef.config_cls, cfg.model, "bundle"), cfg.spec)
        again.load_state_dict(weights, strict=True)
        again.eval()
        with torch.no_grad():
            out2 = again(plain)
        for x, y in ((out.dims, out2.dims), (out.logits, out2.logits)):
            assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-6)), where


def test_a_system_written_outside_sermo_runs_and_serves(iemocap_synth, tmp_path):
    """A module and a recipe in the test folder, nothing under sermo/: `sermo run` trains it and
    `Predictor` serves its bundle."""
    import json

    from sermo.cli import main
    from sermo.serving import Predictor
    from sermo.systems import SYSTEMS
    from tests.conftest import small_iemocap
    from tests.systems.toy_system import define

    recipe = tmp_path / "toy.yaml"
    recipe.write_text("system: toy\nprofiles:\n  demo:\n    data: {audio_encoder: logmel, text_encoder: null}\n"
                      "    train: {epochs: 2, batch_size: 8}\n    model: {rows: [pooled]}\n")
    define(recipe)
    try:
        small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 4)
        assert main(["run", "toy", "--profile", "demo", "--corpus", f"iemocap={small}", "--folds", "1", "--out", str(tmp_path / "run"),
                     "--store", str(tmp_path / "store"), "--quiet"]) == 0
        rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
        assert [r["name"] for r in rows] == ["pooled"] and "ua" in rows[0]["mean"]
        assert main(["run", "toy", "--profile", "demo", "--corpus", f"iemocap={small}", "--set", "model.rows=[other]",
                     "--out", str(tmp_path / "bad"), "--store", str(tmp_path / "store"), "--quiet"]) == 2
        wav = sorted(iemocap_synth.rglob("*.wav"))[0]
        pred = Predictor.from_pretrained(tmp_path / "run" / "bundles" / "pooled").predict(wav)
        assert pred.category in ("neutral", "happy", "angry", "sad") and 1.0 <= pred.valence <= 5.0
    finally:
        SYSTEMS.pop("toy", None)
