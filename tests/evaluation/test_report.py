"""REPORT.md's deviations: what applies to the run's profile and corpora, and what it overrode."""

from sermo.config import load_recipe
from sermo.evaluation.report import _deviations
from sermo.systems import get_system


def test_a_paper_run_with_overrides_lists_what_actually_ran():
    # a paper profile run with train.epochs=1 must not read as the paper's 50 epochs
    sysdef = get_system("hierarchical")
    cfg = load_recipe("hierarchical", "paper", sysdef.config_cls, ["train.epochs=1", "model.hidden=16"],
                      path=sysdef.recipe_path)
    text = _deviations(sysdef, cfg, ["iemocap"])
    assert "overrode its `paper` profile" in text
    assert "| train.epochs | 1 | 50 |" in text and "| model.hidden | 16 | 64 |" in text
    plain = _deviations(sysdef, load_recipe("hierarchical", "paper", sysdef.config_cls, path=sysdef.recipe_path),
                        ["iemocap"])
    assert "overrode" not in plain


def test_deviations_follow_the_corpus_and_the_run_settings():
    sysdef = get_system("hierarchical")
    cfg = load_recipe("hierarchical", "paper", sysdef.config_cls, path=sysdef.recipe_path)
    iemocap, msp = _deviations(sysdef, cfg, ["iemocap"]), _deviations(sysdef, cfg, ["msp-podcast"])
    assert "iemocap-loso-holdout" in iemocap and "iemocap-loso-holdout" not in msp  # an IEMOCAP-only note
    assert "clipped at 1" in iemocap
    unclipped = load_recipe("hierarchical", "paper", sysdef.config_cls, ["train.grad_clip=null"],
                            path=sysdef.recipe_path)
    assert "clipped at" not in _deviations(sysdef, unclipped, ["iemocap"])


def test_the_table_says_how_many_test_utterances_each_row_was_scored_on():
    from sermo.evaluation.report import results_table

    rows = [{"name": "audio", "modalities": ["audio"], "trainable_params": 10, "mean": {"ua": 0.5}, "std": {},
             "utterances": 120, "ids_digest": "aaa"},
            {"name": "text", "modalities": ["text"], "trainable_params": 10, "mean": {"ua": 0.6}, "std": {},
             "utterances": 111, "ids_digest": "bbb"},
            {"name": "fusion", "modalities": ["audio", "text"], "trainable_params": 0, "mean": {"ua": 0.7},
             "std": {}, "utterances": 120, "ids_digest": "aaa"}]
    table = results_table(rows)
    assert "| test utts |" in table and "| 111 |" in table
    assert "text on 111 (the other rows on 120)" in table
    same = results_table([rows[0], rows[2]])
    assert "Not every row" not in same


def test_every_test_set_gets_the_papers_own_numbers(tmp_path):
    # distilled: Table 1 has seen (Test1) and unseen (Test2) columns; hierarchical's mixed-corpus
    # run (Table 2) must not be shown Table 1's IEMOCAP numbers
    from types import SimpleNamespace

    from sermo.evaluation.report import run_report

    protocol = SimpleNamespace(spec="msp-partitions", description="MSP-Podcast's partitions", folds=[])
    row = {"name": "hubert-base", "modalities": ["audio"], "trainable_params": 5, "mean": {"ccc_valence": 0.4},
           "std": {}, "test_set": "test1", "tests": {"test2": {"mean": {"ccc_valence": 0.2}, "std": {}}}}
    results = {"system": "distilled", "corpus": "msp-podcast", "profile": "paper", "label_space": "msp-4",
               "rows": [row]}
    text = run_report(results, protocol, get_system("distilled"), [("msp-podcast", tmp_path)], {})
    seen, unseen = text.split("## The paper's numbers (test2)")
    assert "0.440" in seen.split("## The paper's numbers")[1] and "0.225" in unseen
    mixed = dict(results, system="hierarchical", corpus="iemocap+msp-podcast")
    assert "The paper's numbers" not in run_report(mixed, protocol, get_system("hierarchical"),
                                                   [("iemocap", tmp_path)], {})


def test_settings_show_in_full_and_the_training_table_counts_budgets_that_ended_first(tmp_path):
    import json

    from sermo.evaluation.report import _training

    sysdef = get_system("baselines")
    cfg = load_recipe("baselines", "default", sysdef.config_cls, path=sysdef.recipe_path)
    text = _deviations(sysdef, cfg, ["mine"])
    # 0.0005 and 0.001 differ: a table rounding both to 0.001 said the run matched the paper
    assert "| train.lr | 0.001 | 0.0005 |" in text and "| train.weight_decay | 0.001 | 0 |" in text
    assert "`default` profile differs from the `paper` profile" in text
    for fold, best in ((1, 39), (2, 12), (3, 39)):  # Lightning counts epochs from 0: 39 is the 40th
        (tmp_path / f"fold{fold}" / "audio").mkdir(parents=True)
        (tmp_path / f"fold{fold}" / "audio" / "DONE").write_text(json.dumps({"best_epoch": best, "epochs": 40}))
    table = _training(tmp_path)
    assert "| audio | 3 | 40 | 31.0 | 2 of 3 |" in table
