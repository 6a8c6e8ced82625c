"""diffusers_mrs.metrics against closed forms: PSNR of a known error, SSIM of identical
images, clipping of the restoration only, and means per degradation."""

from __future__ import annotations

import math

import pytest
import torch

from diffusers_mrs.metrics import mean_per_group, psnr, psnr_and_ssim


def test_psnr_of_a_constant_error_is_its_closed_form() -> None:
    clean = torch.full((2, 3, 8, 8), 0.5)
    restored = clean + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    # MSE = e^2, so PSNR = -10 log10(e^2) = -20 log10(e)
    assert psnr(restored, clean) == pytest.approx([20.0, 40.0], abs=1e-4)  # float32 inputs


def test_restorations_are_clipped_references_are_not() -> None:
    clean = torch.zeros(1, 1, 4, 4)
    over = torch.full((1, 1, 4, 4), -0.5)  # clipped to 0: a perfect restoration
    assert math.isinf(psnr(over, clean)[0])
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    same_psnr, same_ssim = psnr_and_ssim(image, image.clone())
    assert same_ssim == pytest.approx([1.0]) and math.isinf(same_psnr[0])
    _, other_ssim = psnr_and_ssim(image.flip(-1), image)
    assert other_ssim[0] < 0.5


def test_mean_per_group_and_shape_checks() -> None:
    means = mean_per_group([1.0, 2.0, 4.0], ["b", "a", "b"])
    assert list(means) == ["b", "a", "average"]
    assert means == {"b": 2.5, "a": 2.0, "average": pytest.approx(7 / 3)}
    with pytest.raises(ValueError, match="group labels"):
        mean_per_group([1.0], ["a", "b"])
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


class _Float64Watch(torch.overrides.TorchFunctionMode):
    """Records whether every widening to float64 acts on a tensor already on the host
    (the result of ``.cpu()``): MPS has no float64, so widening first fails there."""

    def __init__(self) -> None:
        super().__init__()
        self.on_host: set[int] = set()
        self.widened_on_device: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name == "cpu":
            self.on_host.add(id(out))
        widening = name == "double" or (
            name == "to" and torch.float64 in (*args[1:], *(kwargs or {}).values())
        )
        if widening and id(args[0]) not in self.on_host:
            self.widened_on_device.append(name)
        return out


def test_scores_widen_to_float64_only_after_the_copy_to_the_host() -> None:
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with _Float64Watch() as watch:
        psnr_and_ssim(image, image.flip(-1))
        psnr(image, image)
    assert watch.on_host and watch.widened_on_device == []
