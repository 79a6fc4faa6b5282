"""The run folder's layout and schema, read and written in one place."""

import json

import pandas as pd
import pytest

from sermo.evaluation.runfolder import RunFolder, write_parquet


def test_a_folds_rows_mark_it_finished_and_keep_its_time(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.fold_rows("fold1") is None and folder.fold_seconds("fold1") == 0.0
    rows = [{"name": "audio", "modalities": ["audio"], "trainable_params": 3, "metrics": {"test": {"ua": 0.5}},
             "info": {}}]
    folder.write_fold_rows("fold1", rows, 12.34)
    assert folder.fold_rows("fold1") == rows and folder.fold_seconds("fold1") == 12.3
    assert json.loads((tmp_path / "fold1" / "rows.json").read_text()) == rows


def test_prediction_files_keep_rows_with_a_common_prefix_apart(tmp_path):
    folder = RunFolder(tmp_path)
    for row in ("x", "x+text", "x_ft"):
        for fold in ("fold1", "fold2"):
            write_parquet(folder.predictions(row, fold, "test"), pd.DataFrame({"id": [f"{row}-{fold}"]}))
    write_parquet(folder.predictions("x", "fold1", "test1"), pd.DataFrame({"id": ["other test set"]}))
    assert [f for f, _ in folder.prediction_files("x", "test")] == ["fold1", "fold2"]
    assert [pd.read_parquet(p)["id"][0] for _, p in folder.prediction_files("x+text", "test")] == \
        ["x+text-fold1", "x+text-fold2"]


def test_results_of_an_unfinished_run_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not finished"):
        RunFolder(tmp_path).read_results()
    RunFolder(tmp_path).write_results({"system": "toy", "rows": []})
    assert RunFolder(tmp_path).read_results()["system"] == "toy"


def test_analyses_come_in_fold_order_and_protocol_folds_tolerate_a_missing_file(tmp_path):
    folder = RunFolder(tmp_path)
    for fold, value in (("fold2", 2), ("fold1", 1)):
        (tmp_path / fold / "analysis").mkdir(parents=True)
        (tmp_path / fold / "analysis" / "grid.json").write_text(json.dumps({"v": value}))
    assert folder.analyses("grid.json") == [("fold1", {"v": 1}), ("fold2", {"v": 2})]
    assert folder.protocol_folds() == []
    (tmp_path / "protocol.json").write_text(json.dumps({"folds": [{"name": "fold1"}, {"name": "fold2"}]}))
    assert folder.protocol_folds() == ["fold1", "fold2"]
