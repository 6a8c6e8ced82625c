"""The original side of ``bench_restore.py``: the original ``MRSampler.sampling`` and
``IRSDE.reverse_posterior`` loops (imported from checkouts by ``original_code.py``), run with
the settings of our scheduler config on the network's original counterpart."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from original_code import OriginalCode
from restore_measure import Runner
from restore_networks import Network, network_device

FIT_TARGET = {"epsilon": "noise", "sample": "data", "v_prediction": "velocity"}
TIME_SCHEDULE = {
    "logsnr": "linear-lambda",
    "linspace": "linspace",
    "karras": "karras-n",
    "karras_time": "karras-t",
    "leading": "leading",
    "trailing": "trailing",
}


def original_mrs_runner(code: OriginalCode, net: Network, nfe: int) -> Runner:
    """The original ``MRSampler.sampling`` with the settings of our scheduler config."""
    from types import SimpleNamespace

    cfg = net.scheduler_config
    sde = SimpleNamespace(
        device=network_device(net),
        T=cfg["num_train_timesteps"],
        max_sigma=cfg["max_sigma"],
        model=net.original,
    )
    opt = {
        "sde": {
            "max_sigma": cfg["max_sigma"],
            "T": cfg["num_train_timesteps"],
            "schedule": cfg["theta_schedule"],
            "eps": cfg["eps"],
        }
    }
    sampler = code.mr_sampler(
        sde,
        opt,
        nfe,
        solver_type=cfg["algorithm_type"],
        parameterization=cfg["parameterization"],
        order=cfg["solver_order"],
        fit_target=FIT_TARGET[cfg["prediction_type"]],
        lambda_min=cfg["lambda_min"],
        time_schedule=TIME_SCHEDULE[cfg["timestep_spacing"]],
        thresholding=cfg["thresholding"],
    )

    @torch.no_grad()
    def run(mu: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return sampler.sampling(mu, **net.original_contexts(mu))[0]

    return run


def original_sde_class(code: OriginalCode, net: Network) -> Any:
    """The original ``IRSDE`` class for a network: DA-CLIP's own for a context network
    (where a DA-CLIP or MR Sampler checkout was given), else IR-SDE's."""
    if net.contexts is not None and code.daclip_sde is not None:
        return code.daclip_sde
    return code.irsde_sde


def original_posterior_runner(code: OriginalCode, net: Network, nfe: int) -> Runner:
    """The original ``IRSDE.reverse_posterior`` (it visits every grid time: nfe = T)."""
    cfg = net.scheduler_config
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the schedule's name
        sde = original_sde_class(code, net)(
            max_sigma=cfg["max_sigma"],
            T=cfg["num_train_timesteps"],
            schedule=cfg["theta_schedule"],
            eps=cfg["eps"],
            device=network_device(net),
        )
    sde.set_model(net.original)

    @torch.no_grad()  # as the original's test() runs it: no autograd graph over the loop
    def run(mu: torch.Tensor, seed: int) -> torch.Tensor:
        sde.set_mu(mu)
        torch.manual_seed(seed)
        noisy = sde.noise_state(mu)
        return sde.reverse_posterior(noisy, **net.original_contexts(mu)).clamp(0.0, 1.0)

    return run
