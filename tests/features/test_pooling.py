"""data.frame_pool (frames averaged once in the data path) and data.memory_gb (features kept in
memory after their first read)."""

import numpy as np
import pytest
import torch

from sermo.data.corpora import prepare
from sermo.data.spec import FeatureInput
from sermo.features import FeatureStore
from sermo.features.pipeline import UtteranceDataset, collate_for
from sermo.data.frames import pool_frames
from sermo.features.source import FeatureSource, MemoryBudget
from sermo.nn.layers import average_frames, frames_left


def test_pooled_frames_are_the_models_own_average():
    x = np.random.default_rng(0).normal(size=(2, 37, 5)).astype(np.float32)  # 37: a partial last block
    pooled = pool_frames(x, 4)
    assert pooled.shape == (2, 10, 5)
    for layer in range(2):
        want, mask = average_frames(torch.from_numpy(x[layer])[None], torch.ones(1, 37, dtype=torch.bool), 4)
        np.testing.assert_allclose(pooled[layer], want[0].numpy(), rtol=1e-6, atol=1e-6)
    assert pool_frames(x, 1) is x


def test_a_model_averages_only_what_the_data_path_has_not():
    from sermo.data.batch import Batch
    from sermo.systems.hierarchical import HierarchicalConfig, HierarchicalModel

    torch.manual_seed(0)
    cfg = HierarchicalConfig(conformer_layers=1, hidden=8, heads=2, kernel=3, mlp=[8, 4], subsample=8)
    model = HierarchicalModel("hier_dc", audio=(2, 6), num_classes=4, cfg=cfg).eval()
    rng = np.random.default_rng(1)
    frames = [rng.normal(size=(2, n, 6)).astype(np.float32) for n in (48, 32)]  # whole blocks of 8

    def batch(arrays, pool):
        ds = UtteranceDataset(["a", "b"], audio=Stored(dict(zip("ab", arrays)), pool))
        return collate_for(ds)(ds.__getitems__([0, 1]))

    plain, pooled = batch(frames, 1), batch([pool_frames(f, 4) for f in frames], 4)
    assert isinstance(plain, Batch) and pooled.audio_pool == 4 and pooled.audio.shape[2] == 12
    with torch.no_grad():
        a, b = model(plain), model(pooled)
    torch.testing.assert_close(a.dims, b.dims, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)


def test_frames_left_to_average():
    assert frames_left(8, 1) == 8 and frames_left(8, 4) == 2 and frames_left(4, 4) == 1 and frames_left(1, 4) == 1
    with pytest.raises(ValueError, match="multiple of data.frame_pool"):
        frames_left(6, 4)


class Stored:
    """A stand-in source of already pooled frames."""

    name = "fake"

    def __init__(self, arrays, pool):
        self.arrays = arrays
        self.input = FeatureInput("fake", None, 2, 6, 50.0 / pool, pool=pool)

    def has(self, uid):
        return uid in self.arrays

    def get(self, uid):
        return self.arrays[uid]

    def length(self, uid):
        return self.arrays[uid].shape[1]


def test_stored_source_pools_and_keeps_what_the_budget_allows(tmp_path, iemocap_synth):
    manifest = prepare("iemocap", iemocap_synth)
    manifest = manifest.subset(manifest.ids[:6])
    store = FeatureStore(tmp_path / "store")
    plain = FeatureSource("logmel", None, manifest, store, progress=False)
    uid = manifest.ids[0]
    full = np.asarray(plain.get(uid), dtype=np.float32)

    sizes = [pool_frames(np.asarray(plain.get(u)), 4).nbytes for u in manifest.ids]
    memory = MemoryBudget(sizes[0] + sizes[1])  # room for two utterances' pooled frames
    src = FeatureSource("logmel", None, manifest, store, progress=False, pool=4, memory=memory)
    assert src.input.pool == 4 and src.frame_rate == plain.frame_rate / 4
    got = src.get(uid)
    assert got.shape[1] == -(-full.shape[1] // 4) == src.length(uid)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), pool_frames(full, 4), atol=2e-2)

    reads = []
    real = store.get
    store.get = lambda identity, key: reads.append(key) or real(identity, key)
    for u in manifest.ids:  # the first two were kept in memory (within the budget), the others not
        src.get(u)
    assert len(reads) == len(manifest.ids) - 1  # the first utterance is already held
    reads.clear()
    for u in manifest.ids:
        src.get(u)
    assert len(reads) == len(manifest.ids) - 2
    assert memory.left == 0  # what was kept is counted against the budget
