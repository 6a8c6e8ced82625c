"""Test-wide settings: one CPU thread without spin-waiting (tests are small; more threads
only contend on a shared 2-core machine) and an offline Hub."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

torch.set_num_threads(1)



from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import fresh_accelerate_state, save_tiny_pipeline  # noqa: E402

#: The device of device-parametrised tests (``device`` fixture): ``MRS_TEST_DEVICE``
#: (e.g. ``cuda``), the CPU by default; benchmarks/gpu_check.py runs the suite on CUDA.
TEST_DEVICE = os.environ.get("MRS_TEST_DEVICE", "cpu")


@pytest.fixture
def device() -> torch.device:
    """``MRS_TEST_DEVICE`` as a ``torch.device``; the test is skipped where it is absent."""
    chosen = torch.device(TEST_DEVICE)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"MRS_TEST_DEVICE={TEST_DEVICE} but CUDA is not available")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        pytest.skip(f"MRS_TEST_DEVICE={TEST_DEVICE} but MPS is not available")
    return chosen


@pytest.fixture(scope="module")
def unbiased_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random pipeline folder whose network output is not biased to mid-grey."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("model"), biased_output=False)


@pytest.fixture
def fresh_accelerate() -> Iterator[None]:
    """accelerate's process state reset after the test (the CLI creates one)."""
    yield from fresh_accelerate_state()
