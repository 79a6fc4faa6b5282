import pytest

from sermo.features import FeatureStore
from sermo.training.runner import run_system


@pytest.fixture(scope="session")
def baselines_run(iemocap_synth, tmp_path_factory):
    """A one-fold baselines run on the 200-utterance built-in corpus (its bundles are served)."""
    out = tmp_path_factory.mktemp("serving") / "run"
    run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=out, progress=False,
               store=FeatureStore(out.parent / "store"),
               overrides=["train.epochs=2", "train.batch_size=16", "model.hidden=32", "model.embedding=16"], profile="demo")
    return out
