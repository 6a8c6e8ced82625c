"""Test-wide settings: one CPU thread without spin-waiting (tests are small; more threads
only contend on a shared 2-core machine) and an offline Hub."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

torch.set_num_threads(1)
