"""At mu = 0, max_sigma = 1 and thetas from DDPM betas the MR Sampler is DPM-Solver(++)
(docs/math.md#shifted-coordinates): it must match diffusers'
DPMSolverMultistepScheduler step for step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from diffusers_mrs import MRSamplerScheduler

ALGORITHMS = {
    "dpmsolver++": ("ode", "data"),
    "dpmsolver": ("ode", "noise"),
    "sde-dpmsolver++": ("sde", "data"),
    "sde-dpmsolver": ("sde", "noise"),
}


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic, non-linear stand-in for a network."""
    return torch.tanh(x) * 0.7 + 0.1 * torch.sin(x * float(t) / 100.0)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("nfe", [8, 20])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_matches_diffusers_dpmsolver(algorithm, order, nfe, prediction_type):
    dpm = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        algorithm_type=algorithm,
        solver_type="heun",
        solver_order=order,
        final_sigmas_type="sigma_min",
        prediction_type=prediction_type,
        lower_order_final=True,
    )
    algorithm_type, parameterization = ALGORITHMS[algorithm]
    mrs = MRSamplerScheduler.from_config(
        dpm.config, algorithm_type=algorithm_type, parameterization=parameterization
    )
    assert mrs.config.max_sigma == 1.0 and mrs.config.num_train_timesteps == 999
    dpm.set_timesteps(nfe)
    mrs.set_timesteps(timesteps=dpm.timesteps)
    torch.testing.assert_close(mrs.timesteps, dpm.timesteps.float())

    g = torch.Generator().manual_seed(0)
    x_dpm = torch.randn(2, 3, 8, 8, generator=g)
    x_mrs = x_dpm.clone()
    for i, t in enumerate(dpm.timesteps):
        noise = torch.randn(2, 3, 8, 8, generator=g)
        x_dpm = dpm.step(toy_model(x_dpm, t), t, x_dpm, variance_noise=noise).prev_sample
        x_mrs = mrs.step(
            toy_model(x_mrs, t), mrs.timesteps[i], x_mrs, variance_noise=noise
        ).prev_sample
        torch.testing.assert_close(x_mrs, x_dpm, rtol=1e-3, atol=1e-4)  # float32 arithmetic


def test_drop_in_for_a_ddpm_pipeline_config():
    """`MRSamplerScheduler.from_config(ddpm.config)` builds the VP-equivalent schedule."""
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    mrs = MRSamplerScheduler.from_config(ddpm.config)
    T = torch.tensor([0.0, 500.0, 999.0])
    alpha, sigma = mrs.noise_schedule.alpha_sigma(T, dtype=torch.float64)
    acp = torch.cumprod(1 - ddpm.betas.double(), 0)[[0, 500, 999]]
    torch.testing.assert_close(alpha, acp.sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(sigma, (1 - acp).sqrt(), rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    ("dpm_algorithm", "mrs_algorithm"), [("sde-dpmsolver++", "sde"), ("dpmsolver++", "ode")]
)
def test_ddpm_pipeline_drop_in_matches_dpmsolver(dpm_algorithm: str, mrs_algorithm: str):
    """In a real diffusers ``DDPMPipeline``, ``MRSamplerScheduler.from_config(ddpm_config)``
    gives the images diffusers' DPM-Solver++(2M) (SDE variant by default) gives from the same
    config and seed. Only the time grid is chosen equal: our integer ``trailing`` spacing is
    DPM-Solver's ``linspace``."""
    from diffusers import DDPMPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    # v_prediction keeps a random network's images inside [0, 1] where epsilon saturates them.
    ddpm_config = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction").config
    mrs = MRSamplerScheduler.from_config(
        ddpm_config, timestep_spacing="trailing", algorithm_type=mrs_algorithm
    )
    assert (mrs.config.parameterization, mrs.config.solver_order) == ("data", 2)
    dpm = DPMSolverMultistepScheduler.from_config(
        ddpm_config,
        algorithm_type=dpm_algorithm,
        solver_order=2,
        solver_type="heun",
        timestep_spacing="linspace",
        final_sigmas_type="sigma_min",
    )
    images = {}
    for name, scheduler in (("mrs", mrs), ("dpm", dpm)):
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        images[name] = pipe(
            batch_size=2,
            num_inference_steps=10,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images
    torch.testing.assert_close(mrs.timesteps, dpm.timesteps.float())
    inside = (images["dpm"] > 0) & (images["dpm"] < 1)
    assert inside.mean() > 0.5, "the images saturate: the comparison would measure nothing"
    np.testing.assert_allclose(images["mrs"], images["dpm"], atol=2e-5, rtol=0)
