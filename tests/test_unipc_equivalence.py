"""At mu = 0, max_sigma = 1 and thetas from DDPM betas, MR UniPC is UniPC
(docs/math.md#mr-unipc): it must match diffusers' UniPCMultistepScheduler step for step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from diffusers_mrs import MRUniPCScheduler


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic, non-linear stand-in for a network."""
    return torch.tanh(x) * 0.7 + 0.1 * torch.sin(x * float(t) / 100.0)


def paired_schedulers(**unipc_config) -> tuple[UniPCMultistepScheduler, MRUniPCScheduler]:
    """diffusers' UniPC and ours from its config (the DDPM -> MR conversion)."""
    uni = UniPCMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        lower_order_final=False,
        final_sigmas_type="sigma_min",
        **unipc_config,
    )
    mr = MRUniPCScheduler.from_config(uni.config)
    assert mr.config.max_sigma == 1.0 and mr.config.num_train_timesteps == 999
    return uni, mr


def exact_sigmas(uni: UniPCMultistepScheduler) -> torch.Tensor:
    """diffusers' own sigma grid (sqrt((1 - abar)/abar) at its timesteps, then at t = 0 for
    "sigma_min"), in float64 from the betas instead of its float32 rounding."""
    abar = np.cumprod(1.0 - uni.betas.double().numpy())
    sigma = np.sqrt((1.0 - abar) / abar)
    return torch.from_numpy(np.append(sigma[uni.timesteps.numpy()], sigma[0]))


def worst_relative_difference(uni, mr, nfe: int, dtype: torch.dtype) -> float:
    uni.set_timesteps(nfe)
    mr.set_timesteps(timesteps=uni.timesteps)
    torch.testing.assert_close(mr.timesteps, uni.timesteps.float())
    if dtype == torch.float64:
        uni.sigmas = exact_sigmas(uni)
    x_uni = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    x_mr = x_uni.clone()
    worst = 0.0
    for i, t in enumerate(uni.timesteps):
        x_uni = uni.step(toy_model(x_uni, t), t, x_uni).prev_sample
        x_mr = mr.step(toy_model(x_mr, t), mr.timesteps[i], x_mr).prev_sample
        worst = max(worst, float((x_mr - x_uni).norm() / x_uni.norm()))
    return worst


@pytest.mark.parametrize("predict_x0", [True, False])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_matches_diffusers_unipc_step_for_step(predict_x0, solver_type, order, prediction_type):
    """diffusers' algorithm run in float64 on the exact sigmas: every step agrees to < 1e-5
    relative (float64 round-off in fact)."""
    uni, mr = paired_schedulers(predict_x0=predict_x0, solver_type=solver_type,
                                solver_order=order, prediction_type=prediction_type)
    assert mr.config.parameterization == ("data" if predict_x0 else "noise")
    for nfe in (6, 20):
        assert worst_relative_difference(uni, mr, nfe, torch.float64) < 1e-5


@pytest.mark.parametrize("order", [1, 3])
def test_matches_stock_float32_diffusers_to_its_rounding(order):
    """Unmodified diffusers rounds its sigmas to float32; the trajectories still agree."""
    uni, mr = paired_schedulers(solver_order=order, prediction_type="v_prediction")
    assert worst_relative_difference(uni, mr, 10, torch.float32) < 1e-3


def test_disable_corrector_means_what_diffusers_means():
    """Index i in ``disable_corrector`` leaves the result of step i uncorrected."""
    uni, mr = paired_schedulers(solver_order=2, disable_corrector=[0, 3])
    assert list(mr.config.disable_corrector) == [0, 3]
    assert worst_relative_difference(uni, mr, 8, torch.float64) < 1e-5
    corrected = MRUniPCScheduler.from_config(mr.config, disable_corrector=None)
    assert worst_relative_difference(uni, corrected, 8, torch.float64) > 1e-4


def test_dpm_solver_type_names_become_bh2():
    """As in diffusers' UniPC, a DPM-Solver ``solver_type`` in a DDPM config means "bh2"."""
    config = dict(UniPCMultistepScheduler().config, solver_type="midpoint")
    assert MRUniPCScheduler.from_config(config).config.solver_type == "bh2"
