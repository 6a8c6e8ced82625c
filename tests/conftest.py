"""Test-wide settings: one CPU thread (tests are small; threads only contend), offline Hub."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
