import numpy as np
import pytest

import sermo.features.pipeline as pipeline
from sermo.config import RunError
from sermo.features.pipeline import UtteranceDataset


class Source:
    """A stand-in feature source: ``(layers, frames, dim)`` arrays by utterance."""

    name, input = "fake", None

    def __init__(self, arrays):
        self.arrays = arrays

    def has(self, uid):
        return uid in self.arrays

    def get(self, uid):
        return self.arrays[uid]


def test_features_are_checked_for_nan_once_per_utterance_not_every_epoch(monkeypatch):
    calls = []
    real = pipeline.finite
    monkeypatch.setattr(pipeline, "finite", lambda x, uid, src: calls.append(uid) or real(x, uid, src))
    ds = UtteranceDataset(["a", "b"], audio=Source({"a": np.zeros((1, 3, 2)), "b": np.ones((1, 4, 2))}))
    for _ in range(3):  # three epochs
        [ds[i] for i in range(len(ds))]
    assert sorted(calls) == ["a", "b"]
    bad = UtteranceDataset(["c"], audio=Source({"c": np.array([[[np.nan, 0.0]]])}))
    with pytest.raises(RunError, match="utterance c: 1 of its fake features are not finite"):
        bad[0]
