"""The scaling-law tools: Student's t, the power-law fit and its prediction interval,
the bottom of an IsoFLOP profile, the model family, and one real run per budget."""

import math

import numpy as np
import pytest

from foundry_core import PRESETS
from foundry_core.scaling import (
    ScalingRun,
    fit_power_law,
    isoflop_optimum,
    model_at_width,
    t_quantile,
    train_at_compute,
)


@pytest.mark.parametrize(
    "dof, p, expected",
    [(1, 0.975, 12.706), (2, 0.975, 4.303), (10, 0.975, 2.228), (1000, 0.975, 1.962)],
)
def test_t_quantile_matches_the_tables(dof, p, expected):
    assert t_quantile(p, dof) == pytest.approx(expected, abs=2e-3)
    assert t_quantile(0.5, dof) == pytest.approx(0, abs=1e-9)


def test_a_power_law_is_recovered_and_its_interval_covers_the_noise():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e9, 1e12, 8)
    exact = fit_power_law(x, 30 * x**-0.05)
    assert exact.exponent == pytest.approx(-0.05)
    assert exact(1e13) == pytest.approx(30 * 1e13**-0.05)
    assert exact.residual_sd == pytest.approx(0, abs=1e-9)
    # noisy points: 95% prediction intervals hold about 95% of new points
    hits = 0
    for _ in range(400):
        y = 30 * x**-0.05 * np.exp(rng.normal(0, 0.02, x.size))
        low, high = fit_power_law(x, y).interval(4e12)
        hits += low < 30 * 4e12**-0.05 * math.exp(rng.normal(0, 0.02)) < high
    assert 0.92 < hits / 400 < 0.98, hits
    with pytest.raises(ValueError, match="3 or more"):
        fit_power_law([1, 2], [3, 4])


def run(params: float, loss: float) -> ScalingRun:
    return ScalingRun(0, round(params), 1e10, 10, loss)


def test_the_isoflop_optimum_is_the_bottom_of_the_parabola_in_log_params():
    sizes = np.geomspace(1e4, 1e6, 5)
    runs = [run(n, 3 + 0.2 * (math.log(n) - math.log(1e5)) ** 2) for n in sizes]
    params, loss = isoflop_optimum(runs)
    assert params == pytest.approx(1e5, rel=1e-4) and loss == pytest.approx(3, abs=1e-6)
    # no bottom inside the sizes tried: the best run
    falling = [run(n, 4 - 0.1 * math.log(n)) for n in sizes]
    assert isoflop_optimum(falling) == (
        float(int(1e6)),
        pytest.approx(falling[-1].val_loss),
    )


def test_the_model_family_keeps_its_shape():
    base = PRESETS["ci"].model
    sizes = [model_at_width(base, w) for w in (16, 32, 64)]
    assert [m.n_heads for m in sizes] == [1, 2, 4]
    assert all(m.d_ff == 3 * m.d_model and m.n_layers == base.n_layers for m in sizes)
    assert sizes[0].num_params() < sizes[1].num_params() < sizes[2].num_params()


def test_a_run_spends_its_compute_and_learns(tmp_path):
    from foundry_core.data import read_tokens
    from foundry_core.pipeline import ensure

    preset = PRESETS["ci"]
    train, val = (read_tokens(p) for p in ensure("tokens", preset))
    model = model_at_width(preset.model, 32)
    result = train_at_compute(model, preset.train, 2e10, train, val)
    per_step = (
        model.flops_per_token(preset.train.seq_len) * preset.train.tokens_per_step
    )
    assert result.steps == round(2e10 / per_step)
    assert abs(result.compute - 2e10) <= per_step / 2
    assert result.val_loss < math.log(preset.model.vocab_size) - 0.5
