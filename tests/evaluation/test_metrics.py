import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, accuracy_score, confusion_matrix as sk_cm, f1_score

from sermo.evaluation.metrics import (METRIC_KEYS, ccc, classification_metrics, confusion_matrix, macro_f1,
                                      pearson, regression_metrics, unweighted_accuracy, weighted_accuracy,
                                      weighted_f1)


def test_ccc_hand_computed():
    t = [1.0, 2.0, 3.0]
    p = [2.0, 3.0, 4.0]
    # var t = var p = 2/3, cov = 2/3, mean diff = 1: 2*(2/3) / (2/3 + 2/3 + 1) = 4/7
    assert ccc(t, p) == pytest.approx(4 / 7)
    assert ccc(t, t) == pytest.approx(1.0)
    assert ccc(t, [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert pearson(t, p) == pytest.approx(1.0)


def test_ccc_edge_cases():
    assert ccc([1, 2, 3], [2, 2, 2]) == 0.0  # constant prediction: 0, not NaN
    assert pearson([1, 2, 3], [2, 2, 2]) == 0.0
    assert ccc([2, 2, 2], [2, 2, 2]) == 0.0
    assert ccc([1, np.nan, 3, 4], [1, 100, 3, 4]) == pytest.approx(1.0)  # missing labels are skipped
    with pytest.raises(ValueError, match="no labelled"):
        ccc([np.nan], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        ccc([1, 2], [1, 2, 3])


def test_against_scikit_learn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, t, rng.integers(0, 4, 200))
    assert unweighted_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p))
    assert weighted_accuracy(t, p) == pytest.approx(accuracy_score(t, p))
    assert macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro"))
    assert weighted_f1(t, p) == pytest.approx(f1_score(t, p, average="weighted"))
    skewed = np.where(t == 3, 0, t)  # class 3 never true; imbalanced truth
    assert weighted_f1(skewed, p) == pytest.approx(f1_score(skewed, p, average="weighted", labels=[0, 1, 2]))
    assert (confusion_matrix(t, p, 4) == sk_cm(t, p, labels=range(4))).all()
    x = rng.normal(size=100)
    y = 0.5 * x + rng.normal(size=100)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_classes_absent_from_a_fold():
    t = np.array([0, 0, 1, 1, -1])  # class 2 never true here; -1 is unlabelled
    p = np.array([0, 2, 1, 1, 0])
    # UA over present classes: recall(0) = 0.5, recall(1) = 1
    assert unweighted_accuracy(t, p) == pytest.approx(0.75)
    assert weighted_accuracy(t, p) == pytest.approx(0.75)
    # F1 over classes in truth or predictions: f1(0) = 2/3, f1(1) = 1, f1(2) = 0
    assert macro_f1(t, p) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert confusion_matrix(t, p, 3).tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]


def test_result_keys():
    t = np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2], [4, 4, 4]], float)
    r = regression_metrics(t, t + 0.1)
    assert set(r) == {"ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean",
                      "pearson_arousal", "pearson_valence", "pearson_dominance"}
    assert set(r) | set(classification_metrics([0, 1], [0, 1])) == set(METRIC_KEYS)
    t[:, 2] = np.nan  # a corpus without dominance
    assert "ccc_dominance" not in regression_metrics(t, t)


def test_the_report_explains_only_the_metrics_it_shows_and_its_spread():
    from sermo.evaluation.report import metric_note, results_table
    from sermo.training.runner import _sample_std

    assert _sample_std([0.5, 0.7]) == pytest.approx(0.1414214) and _sample_std([0.5]) is None
    rows = [{"name": "audio", "modalities": ["audio"], "trainable_params": 10,
             "mean": {"ua": 0.5, "weighted_f1": 0.4}, "std": {"ua": 0.1, "weighted_f1": None}}]
    note = metric_note(rows, folds=5)
    assert "UA:" in note and "wF1:" in note and "CCC" not in note and "ddof 1" in note
    assert "no spread" in metric_note(rows, folds=1)
    table = results_table(rows)
    assert "0.500 ± 0.100" in table and "| 0.400 |" in table
