"""The one table of prediction types (docs/math.md#prediction-types): every conversion
derived from it inverts the training target exactly, and equals the closed forms of the docs."""

from __future__ import annotations

import math

import pytest
import torch

from diffusers_mrs import MRPosteriorScheduler, MRSamplerScheduler
from diffusers_mrs.prediction_types import (
    PREDICTION_TYPES,
    network_target,
    prediction_conversion,
    x0_from_output,
)

MS = 0.3  # max_sigma != 1, so a missing max_sigma factor shows

# The closed forms of docs/math.md#prediction-types, written out independently of the table.
CLOSED_FORMS = {
    ("epsilon", "data"): lambda a, s: (1 / a, -s / a),
    ("epsilon", "noise"): lambda a, s: (0.0, 1.0),
    ("sample", "data"): lambda a, s: (0.0, 1.0),
    ("sample", "noise"): lambda a, s: (1 / s, -a / s),
    ("v_prediction", "data"): lambda a, s: (a, -s / MS),
    ("v_prediction", "noise"): lambda a, s: (s / MS**2, a / MS),
}


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
@pytest.mark.parametrize("alpha", [0.999, 0.6, 0.05])
def test_conversions_equal_the_closed_forms(ptype: str, alpha: float) -> None:
    sigma = MS * math.sqrt(1 - alpha**2)
    for target in ("data", "noise"):
        p, q = prediction_conversion(ptype, target, alpha, sigma, MS)
        p_ref, q_ref = CLOSED_FORMS[ptype, target](alpha, sigma)
        assert p == pytest.approx(p_ref, rel=1e-12, abs=1e-15)
        assert q == pytest.approx(q_ref, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
def test_target_and_conversions_invert_each_other(ptype: str) -> None:
    g = torch.Generator().manual_seed(0)
    x0, mu = torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64), torch.rand(4, 3, 5, 5)
    mu, noise = mu.double(), torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    alpha = torch.rand(4, 1, 1, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    sigma = MS * torch.sqrt(1 - alpha**2)
    x_t = alpha * (x0 - mu) + sigma * noise + mu
    out = network_target(ptype, x0, noise, alpha, sigma, MS, mu)
    torch.testing.assert_close(x0_from_output(ptype, out, x_t, alpha, sigma, MS, mu), x0)
    m = out - mu if ptype == "sample" else out
    p, q = prediction_conversion(ptype, "noise", alpha, sigma, MS)
    torch.testing.assert_close(p * (x_t - mu) + q * m, noise)
    if ptype == "sample":  # x coordinates: the sample target and estimate are exact
        assert torch.equal(out, x0)
        assert torch.equal(x0_from_output(ptype, x0, x_t, alpha, sigma, MS, mu), x0)


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
def test_schedulers_use_the_table(ptype: str) -> None:
    """predict_original_sample and get_velocity read alpha and sigma from the scheduler's
    noise schedule and convert with the table."""
    for cls in (MRSamplerScheduler, MRPosteriorScheduler):
        sched = cls(num_train_timesteps=100, max_sigma=MS, prediction_type=ptype)
        t = torch.tensor([3.0, 50.0, 97.5])
        alpha, sigma = (v.double().view(-1, 1, 1, 1) for v in
                        sched.noise_schedule.alpha_sigma(t, dtype=torch.float64))
        g = torch.Generator().manual_seed(1)
        x0, mu = torch.rand(3, 3, 4, 4, generator=g), torch.rand(3, 3, 4, 4, generator=g)
        noise = torch.randn(3, 3, 4, 4, generator=g)
        x_t = sched.add_noise(x0, noise, t, mu=mu)
        out = network_target(ptype, x0, noise, alpha.float(), sigma.float(), MS, mu)
        x0_hat = sched.predict_original_sample(out, t, x_t, mu=mu)
        torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=0)
        v = sched.get_velocity(x0, noise, t, mu=mu)
        ref = MS * alpha * noise.double() - (sigma / MS) * (x0 - mu).double()
        torch.testing.assert_close(v.double(), ref, atol=1e-6, rtol=0)


def test_unknown_prediction_type_is_named() -> None:
    with pytest.raises(ValueError, match="prediction_type 'x0'"):
        prediction_conversion("x0", "data", 0.5, 0.1, MS)
    with pytest.raises(ValueError, match="prediction_type 'x0'"):
        MRSamplerScheduler(prediction_type="x0")
