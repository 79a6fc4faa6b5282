"""The system contract's test kit (transformers' ModelTesterMixin style): a tiny example of each
kind of row a system has, a random batch carrying exactly a spec's inputs, and the check every
example passes (built from its spec, one training step, prediction, a bundle round trip).

Each system keeps its own examples: ``tests/systems/examples/<system>.py`` (``examples(enc)``),
or a ``contract_examples(enc)`` function beside a system written outside sermo (the toy)."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sermo.config import build
from sermo.data.batch import Batch
from sermo.data.bundle import BundleConfig, read_bundle, save_bundle
from sermo.data.spec import FeatureInput, InputSpec, ModelSpec
from sermo.systems.definition import SystemDef

C = 4  # classes


@dataclass
class Example:
    """One tiny row model: its architecture, config, spec and the training-only extras of a batch."""

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


def examples(sysdef: SystemDef, enc: dict[str, str]) -> list[Example]:
    """A system's own examples (``enc``: tiny HF speech and text models), or none."""
    try:
        module = importlib.import_module(f"tests.systems.examples.{sysdef.name}")
    except ModuleNotFoundError:
        module = sys.modules.get(sysdef.run_fold.__module__)
    make = getattr(module, "examples", None) or getattr(module, "contract_examples", None)
    return list(make(enc)) if make is not None else []

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


def check_example(sysdef: SystemDef, k: int, ex: Example, tmp_path: Path) -> None:
    """Build, one training step, prediction and a bundle round trip of one example."""
    system = sysdef.name
    where = f"{system} example {k} ({ex.row})"
    torch.manual_seed(k)
    model = sysdef.model_for(ex.row, ex.config, ex.spec)
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
    again = sysdef.model_for(cfg.row, build(sysdef.config_cls, cfg.model, "bundle"), cfg.spec)
    again.load_state_dict(weights, strict=True)
    again.eval()
    with torch.no_grad():
        out2 = again(plain)
    for x, y in ((out.dims, out2.dims), (out.logits, out2.logits)):
        assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-6)), where


def planned(system: str, profile: str, *sets: str) -> dict[tuple, tuple[int, bool, bool]]:
    """What the plan sizes for a recipe, merged as the plan merges it: ``(encoder, layers) ->
    (models reading it every epoch, read on the analysis folds only, read for the whole corpus)``."""
    from sermo.config import load_recipe
    from sermo.systems import get_system

    sysdef = get_system(system)
    out: dict[tuple, tuple[int, bool, bool]] = {}
    for use in sysdef.feature_uses(load_recipe(system, profile, sysdef.config_cls, list(sets))):
        readers, analysis, corpus = out.get((use.encoder, use.layers), (0, True, False))
        out[(use.encoder, use.layers)] = (readers + use.readers, analysis and use.analysis, corpus or use.corpus)
    return out
