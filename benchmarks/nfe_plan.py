"""The plan of the NFE benchmark: which sampler configurations run at which NFE.

A :class:`Method` is a scheduler class plus config overrides; :func:`plan_runs` expands the
selected methods into (method, NFE) cells and gives each the key of the computation it
performs, so that cells computing the same thing run once.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NFE_LIST: tuple[int, ...] = (100, 50, 20, 10, 5, 4, 3, 2)
#: Families that visit the integer training grid (so run only at NFE <= T).
GRID_FAMILIES = ("posterior", "em")


@dataclass(frozen=True)
class Method:
    """One sampler configuration of the benchmark.

    Attributes:
        key: command-line id, e.g. ``"mrs-sde-data-2"`` or ``"posterior-irsde"``.
        label: column title, e.g. ``"MRS-SDE-d-2"`` (the paper's naming).
        family: ``"mrs"``, ``"unipc"``, ``"posterior"`` or ``"em"`` (which scheduler class).
        overrides: config overrides passed to ``from_config``.
        default_nfes: the NFE values of the default plan.
        fixed_nfes: run ``default_nfes`` even when the command line names other NFEs.
    """

    key: str
    label: str
    family: str
    overrides: tuple[tuple[str, Any], ...] = ()
    default_nfes: tuple[int, ...] = NFE_LIST
    fixed_nfes: bool = False


def build_methods() -> list[Method]:
    """Every method, in the order the default plan runs them (most important first)."""
    baselines_em = (100, 50, 20, 10, 5)
    methods = [
        Method("posterior-irsde", "Posterior (IR-SDE)", "posterior", (("step_mode", "irsde"),)),
        Method("mrs-default", "MRS default", "mrs"),
        Method("posterior-jump", "Posterior (jump)", "posterior", (("step_mode", "jump"),)),
        Method("em-irsde", "EM (IR-SDE)", "em", (("step_mode", "irsde"),), baselines_em),
        Method("em-jump", "EM (jump)", "em", (("step_mode", "jump"),), baselines_em),
        # One network evaluation at t = T: the network's x0 estimate, i.e. its posterior-mean
        # (MMSE) estimate of the clean image. Not a sample: a posterior sample's squared error
        # is twice the MMSE in expectation (PSNR 3.01 dB lower) for a perfect model.
        Method("x0-estimate", "x0 estimate (1 NFE)", "mrs",
               (("algorithm_type", "ode"), ("parameterization", "data"), ("solver_order", 1),
                ("final_sigmas_type", "zero")),
               (1,), fixed_nfes=True),
    ]
    for algorithm in ("sde", "ode"):
        for param in ("data", "noise"):
            for order in (1, 2, 3):
                methods.append(
                    Method(
                        key=f"mrs-{algorithm}-{param}-{order}",
                        label=f"MRS-{algorithm.upper()}-{param[0]}-{order}",
                        family="mrs",
                        overrides=(
                            ("algorithm_type", algorithm),
                            ("parameterization", param),
                            ("solver_order", order),
                        ),
                        # the faithful second-order SDE also at 100: its @10 vs @100 target
                        default_nfes=(100, 20, 10, 5) if (algorithm, param, order) == (
                            "sde", "data", 2) else (20, 10, 5),
                    )
                )
    methods += unipc_methods()
    return methods


def unipc_methods() -> list[Method]:
    """MR UniPC (``MRUniPCScheduler``): B(h) = bh1 / bh2, orders 1-3, in the data
    parameterization (``unipc-bh2-2``) and the noise one (``unipc-noise-bh2-2``), each with
    UniPC's rho = 1/2 shortcut and with the exact single weight (``unipc-exact-bh2-2``,
    docs/math.md#mr-unipc)."""
    return [
        Method(
            key=f"unipc-{prefix}{'' if param == 'data' else 'noise-'}{solver_type}-{order}",
            label=f"UniPC{mark}-{'' if param == 'data' else 'n-'}{solver_type}-{order}",
            family="unipc",
            overrides=(
                ("solver_type", solver_type),
                ("parameterization", param),
                ("solver_order", order),
                ("single_point_rho", rho),
            ),
            default_nfes=(20, 10, 5),
        )
        for rho, prefix, mark in (("half", "", ""), ("exact", "exact-", "x"))
        for param in ("data", "noise")
        for solver_type in ("bh1", "bh2")
        for order in (1, 2, 3)
    ]


#: The converged PF-ODE solution the ``ode_distance`` metric compares with (same latents).
ODE_REFERENCE = Method(
    "ode-reference", "ODE reference", "mrs",
    (("algorithm_type", "ode"), ("parameterization", "data"), ("solver_order", 2)),
)


def select_methods(methods: Sequence[Method], patterns: str | None) -> list[Method]:
    """The methods whose key matches one of the comma-separated glob ``patterns`` (all if None).

    Raises:
        ValueError: a pattern matches no method.
    """
    if not patterns:
        return list(methods)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    for p in pats:
        if not any(fnmatch.fnmatchcase(m.key, p) for m in methods):
            raise ValueError(f"--methods: {p!r} matches none of {[m.key for m in methods]}")
    return [m for m in methods if any(fnmatch.fnmatchcase(m.key, p) for p in pats)]


def scheduler_class(family: str) -> type:
    """The scheduler class of a method family."""
    from diffusers_mrs import (
        MREulerMaruyamaScheduler,
        MRPosteriorScheduler,
        MRSamplerScheduler,
        MRUniPCScheduler,
    )

    return {
        "mrs": MRSamplerScheduler,
        "unipc": MRUniPCScheduler,
        "posterior": MRPosteriorScheduler,
        "em": MREulerMaruyamaScheduler,
    }[family]


def make_scheduler(base_config: Any, method: Method) -> Any:
    """``Cls.from_config(base_config, **overrides)``: shares the model's schedule and target."""
    return scheduler_class(method.family).from_config(base_config, **dict(method.overrides))


@dataclass(frozen=True)
class Run:
    """One cell of the tables: a method at one NFE; ``key`` identifies the computation."""

    method: Method
    nfe: int
    key: str


def computation_key(scheduler: Any, nfe: int, num_train_timesteps: int) -> str:
    """A key equal for runs that compute the same thing (same class, config and NFE).

    At NFE = T the grid baselines visit every integer time and both step modes step t -> t-1,
    so ``irsde`` and ``jump`` coincide there.
    """
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    if "step_mode" in config and nfe == num_train_timesteps:
        config["step_mode"] = "irsde"
    payload = {"class": type(scheduler).__name__, "config": config, "nfe": nfe}
    return json.dumps(payload, sort_keys=True, default=str)


def plan_runs(
    methods: Sequence[Method],
    base_config: Any,
    nfes: Sequence[int] | None = None,
) -> list[Run]:
    """Every (method, NFE) cell: ``nfes`` for all methods, else each method's default NFEs.

    Baselines only run at NFE <= T (they visit integer times of the training grid).
    """
    T = int(base_config["num_train_timesteps"])
    runs = []
    for method in methods:
        sched = make_scheduler(base_config, method)
        chosen = method.default_nfes if method.fixed_nfes or not nfes else nfes
        for nfe in sorted(chosen, reverse=True):
            if method.family in GRID_FAMILIES and nfe > T:
                continue
            runs.append(Run(method, int(nfe), computation_key(sched, int(nfe), T)))
    return runs


def unique_evaluations(runs: Sequence[Run]) -> int:
    """Network evaluations of the plan, each distinct computation counted once."""
    return sum({r.key: r.nfe for r in runs}.values())

