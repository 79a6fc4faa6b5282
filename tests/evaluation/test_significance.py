import numpy as np
import pandas as pd

from sermo.evaluation.metrics import ccc, classification_metrics
from sermo.evaluation.significance import metric_of, paired_bootstrap


def predictions(rng, noise: float, wrong: float) -> pd.DataFrame:
    n = 120
    truth = rng.uniform(1, 5, size=(n, 3))
    cls = np.arange(n) % 4
    pred_cls = np.where(rng.random(n) < wrong, (cls + 1) % 4, cls)
    df = pd.DataFrame({"fold": np.where(np.arange(n) < 60, "fold1", "fold2"), "id": [f"u{i}" for i in range(n)],
                       "category_true": cls, "category_pred": pred_cls})
    for j, d in enumerate(("arousal", "valence", "dominance")):
        df[f"{d}_true"] = truth[:, j]
        df[f"{d}_pred"] = truth[:, j] + noise * rng.normal(size=n)
    df.loc[3, "valence_true"] = np.nan  # a missing label is left out, not counted as a miss
    return df


def test_metrics_and_the_paired_bootstrap():
    # the same seed: the same utterances and truth, the better row's errors a subset of the worse one's
    worse, better = predictions(np.random.default_rng(1), 1.5, 0.5), predictions(np.random.default_rng(1), 0.3, 0.1)
    ok = np.isfinite(better["valence_true"])
    assert metric_of(better, "ccc_valence") == ccc(better["valence_true"][ok].to_numpy(),
                                                   better["valence_pred"][ok].to_numpy())
    assert metric_of(better, "ua") == classification_metrics(better["category_true"].to_numpy(),
                                                             better["category_pred"].to_numpy())["ua"]
    same = paired_bootstrap(better, better, "ccc_mean", n=200)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    for metric in ("ccc_mean", "ua"):
        r = paired_bootstrap(worse, better, metric, n=200)
        assert r["low"] > 0 and r["low"] <= r["difference"] <= r["high"] and r["utterances"] == 120
        assert set(r["folds"]) == {"fold1", "fold2"} and all(v > 0 for v in r["folds"].values())
        assert r == paired_bootstrap(worse, better, metric, n=200)  # seeded: the same interval every time
