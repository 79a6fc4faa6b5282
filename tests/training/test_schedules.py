"""Warm-up schedules reach their peak within the run's real number of steps."""

import pytest

from sermo.config import TrainConfig
from sermo.training.task import warmup_schedule


def test_a_warm_up_longer_than_the_run_is_cut_so_the_peak_is_reached():
    # paper 002 on IEMOCAP: 15,000 warm-up steps, about 6,900 steps in 50 epochs
    cfg = TrainConfig(scheduler="noam", warmup_steps=15000, warmup_max_share=0.3)
    s = warmup_schedule(cfg, 6900)
    assert s.steps == 2070 and s.peak == 1.0 and s.requested == 15000
    uncut = warmup_schedule(TrainConfig(scheduler="noam", warmup_steps=15000, warmup_max_share=None), 6900)
    assert uncut.peak == pytest.approx(6900 / 15000)  # what ran before: the peak never reached
    # ESPnet's WarmupLR: linear up to the peak, then the inverse square root of the step
    assert s.factor(0) == pytest.approx(1 / 2070) and s.factor(2069) == 1.0
    assert s.factor(4 * 2070 - 1) == pytest.approx(0.5)
    # warm-up then constant (paper 003)
    flat = warmup_schedule(TrainConfig(scheduler="warmup", warmup_steps=100), 10_000)
    assert flat.steps == 100 and flat.factor(5000) == 1.0 and flat.to_dict()["peak_factor"] == 1.0
