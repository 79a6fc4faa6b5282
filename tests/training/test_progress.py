from sermo.training.progress import RunProgress


def test_the_run_bar_estimates_from_the_recipe_then_from_finished_folds():
    p = RunProgress("baselines", folds=3, rows=2, epochs=5)
    assert p.bar.total == 30 and "about 30 training epochs" in p.describe()
    p.fold("fold1")
    for _ in range(4):  # one row trained 4 epochs (early stopping), the other none (a linear probe)
        p.tick()
    p.fold_done()
    assert p.bar.n == 4 and p.bar.total == 4 + 2 * 4  # two folds left, as long as the first
    p.skip_fold()  # finished before a resume
    assert p.bar.total == 8
    p.fold("fold3")
    for _ in range(6):
        p.tick()
    assert p.bar.total == 10  # more than expected: the total grows instead of passing 100%
    p.fold_done()
    assert p.bar.total == p.bar.n == 10
    p.close()
    assert RunProgress("x", 2, 1, 3, enabled=False).bar is None
