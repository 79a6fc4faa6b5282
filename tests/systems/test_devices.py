"""Models must never create a tensor on a fixed device (on a GPU, ``torch.rand(b)`` inside a
forward is a CPU tensor beside CUDA ones: a device-mismatch error). Without a GPU this is
caught by watching every tensor factory that sermo's model and loss code calls during the
contract examples' training step and prediction: each must say ``device=`` (or derive from
an input, ``x.new_zeros``/``zeros_like``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import sermo
from sermo.systems import load_all
from tests.conftest import tiny_speech_model, tiny_text_model
from tests.systems.contract import examples, random_batch

SERMO = str(Path(sermo.__file__).parent)
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint,
             torch.randperm, torch.arange, torch.linspace, torch.eye, torch.tensor, torch.scalar_tensor}


class FixedDevices(TorchFunctionMode):
    """Records the factory calls from sermo's code that name no device."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)
            while frame is not None and not frame.f_code.co_filename.startswith(SERMO) \
                    and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(SERMO):
                where = f"{Path(frame.f_code.co_filename).relative_to(SERMO)}:{frame.f_lineno} {func.__name__}"
                if where not in self.found:
                    self.found.append(where)
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"speech": tiny_speech_model(root / "hubert"), "text": tiny_text_model(root / "bert")}


def test_the_check_catches_a_tensor_made_on_the_cpu():
    from sermo.nn.pooling import last_valid

    with FixedDevices() as mode:
        torch.zeros(2)  # not sermo's code: not reported
        last_valid(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))  # arange(..., device=...)
    assert mode.found == []
    from sermo.nn import layers

    source = "def bad(x):\n    return x + torch.rand(x.shape[0])\n"
    namespace = {"torch": torch}
    exec(compile(source, layers.__file__, "exec"), namespace)  # as if the line stood in sermo/nn/layers.py
    with FixedDevices() as mode:
        namespace["bad"](torch.zeros(3))
    assert mode.found == ["nn/layers.py:2 rand"]


@pytest.mark.parametrize("system", sorted(load_all()))
def test_no_model_or_loss_makes_a_tensor_on_a_fixed_device(system, encoders):
    sysdef = load_all()[system]
    found = []
    for ex in examples(sysdef, encoders):
        model = sysdef.model_for(ex.row, ex.config, ex.spec)
        batch = random_batch(ex.spec)
        batch.extras.update(ex.extras(batch) if ex.extras else {})
        with FixedDevices() as mode:
            model.train()
            model.losses(model(batch), batch)["loss"].backward()
            model.eval()
            with torch.no_grad():
                model(random_batch(ex.spec, seed=1))
        found += [f"{ex.row}: {w}" for w in mode.found]
    assert found == []
