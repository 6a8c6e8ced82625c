"""The one image reader/writer: every entry point sees a file the same way, formats are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image

from diffusers_mrs import data
from diffusers_mrs import image_io as io
from diffusers_mrs.cli import read_image as cli_read_image
from diffusers_mrs.image_io import ImageFormatWarning, ImageInputError

EXIF_ORIENTATION = 0x0112


def dark_gray16(h: int = 6, w: int = 5) -> np.ndarray:
    """16-bit values 0..250: a dark image, whose maximum looks like an 8-bit one."""
    return (np.arange(h * w).reshape(h, w) * 250 // (h * w - 1)).astype(np.uint16)


def write_files(folder: Path) -> dict[str, np.ndarray]:
    """The test files and the float RGB each must read as."""
    folder.mkdir(parents=True, exist_ok=True)
    gray = dark_gray16()
    Image.fromarray(gray).save(folder / "dark16.pgm")
    Image.fromarray(gray).save(folder / "dark16.png")
    rgb16 = (np.random.default_rng(0).integers(0, 65536, (4, 7, 3))).astype(np.uint16)
    png.from_array(rgb16.reshape(4, 21), "RGB;16").save(folder / "rgb16.png")
    pixels = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    exif = Image.Image().getexif()
    exif[EXIF_ORIENTATION] = 6  # display = stored image rotated 90 degrees clockwise
    Image.fromarray(pixels).save(folder / "rotated.jpg", exif=exif, quality=95)
    stored = np.asarray(Image.open(folder / "rotated.jpg").convert("RGB"), dtype=np.float32)
    gray_rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / 65535.0
    return {
        "dark16.pgm": gray_rgb,
        "dark16.png": gray_rgb,
        "rgb16.png": rgb16.astype(np.float32) / 65535.0,
        "rotated.jpg": np.rot90(stored, k=-1) / 255.0,
    }


def test_pipeline_cli_and_dataset_read_alike(tmp_path: Path) -> None:
    """A dark 16-bit PGM, 16-bit PNGs and an EXIF-rotated JPEG: one reading everywhere.

    Behaviour change: the pipeline used to pick the 16-bit scale from the pixel maximum, so
    this PGM (values 0..250, mode ``I``) was read 257x too bright; the dataset ignored EXIF
    orientation. Now the file's mode decides the scale and EXIF is applied everywhere.
    """
    expected = write_files(tmp_path / "lq")
    write_files(tmp_path / "gt")
    pairs = data.PairedFolderDataset(tmp_path, lq_dir="lq", gt_dir="gt")
    by_name = {p.name: k for k, p in enumerate(pairs.lq_paths)}
    for name, want in expected.items():
        path = tmp_path / "lq" / name
        cli = cli_read_image(path).rgb()
        dataset = data.load_image(path)
        from_dataset = pairs.sample(by_name[name])[0].numpy().transpose(1, 2, 0)
        from_path = io.prepare_images(str(path))[0].numpy().transpose(1, 2, 0)
        for got in (cli, dataset, from_dataset, from_path):
            np.testing.assert_allclose(got, want, atol=1e-7, err_msg=name)
        if name != "rgb16.png":  # Pillow itself keeps only 8 bits of 16-bit colour PNGs
            with Image.open(path) as img:
                from_pil = io.prepare_images(img)[0].numpy().transpose(1, 2, 0)
            np.testing.assert_allclose(from_pil, want, atol=1e-7, err_msg=name)
    assert expected["dark16.pgm"].max() == pytest.approx(250 / 65535)


def test_scale_never_depends_on_pixel_values() -> None:
    dark = dark_gray16()
    hot = dark.copy()
    hot[0, 0] = 65535  # one hot pixel
    (a,) = io.prepare_images(Image.fromarray(dark.astype(np.int32), mode="I"))
    (b,) = io.prepare_images(Image.fromarray(hot.astype(np.int32), mode="I"))
    assert torch.equal(a[:, 1:], b[:, 1:])
    with pytest.raises(ImageInputError, match="32-bit integer"):
        io.prepare_images(Image.fromarray(np.full((3, 3), 70000, np.int32), mode="I"))


@pytest.mark.parametrize(
    ("mode", "out_mode"),
    [("L", "L"), ("LA", "LA"), ("RGB", "RGB"), ("RGBA", "RGBA"), ("1", "L"), ("I;16", "I;16")],
)
def test_writer_keeps_gray_alpha_and_bit_depth(tmp_path: Path, mode: str, out_mode: str) -> None:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (5, 6)).astype(np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)).convert(mode)
    img.save(tmp_path / "in.png")
    decoded = io.read_image(tmp_path / "in.png")
    restored = np.clip(decoded.rgb() + 0.01, 0, 1)
    io.write_image(tmp_path / "out.png", restored, decoded)
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == out_mode and out.size == (6, 5)
        if "A" in mode:  # alpha carried through unchanged
            np.testing.assert_array_equal(np.asarray(out)[..., -1], np.asarray(img)[..., -1])


def test_sixteen_bit_colour_and_alpha_kept(tmp_path: Path) -> None:
    rgba16 = np.random.default_rng(2).integers(0, 65536, (3, 4, 4)).astype(np.uint16)
    png.from_array(rgba16.reshape(3, 16), "RGBA;16").save(tmp_path / "in.png")
    decoded = io.read_image(tmp_path / "in.png")
    assert decoded.bit_depth == 16 and decoded.alpha is not None
    io.write_image(tmp_path / "out.png", decoded.rgb(), decoded)
    _, _, rows, info = png.Reader(filename=str(tmp_path / "out.png")).asDirect()
    back = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(3, 4, 4)
    assert info["bitdepth"] == 16 and info["alpha"]
    np.testing.assert_array_equal(back, rgba16)  # identity restoration: every bit kept


def test_palette_and_cmyk_warn(tmp_path: Path) -> None:
    pal = Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert("P")
    with pytest.warns(ImageFormatWarning, match="P image"):
        assert io.decode_pil(pal).pixels.shape == (4, 4, 3)
    pal.info["transparency"] = 0
    assert io.decode_pil(pal).alpha is not None  # palette transparency becomes alpha
    with pytest.warns(ImageFormatWarning, match="CMYK"):
        io.decode_pil(Image.new("CMYK", (3, 3)))


def test_multi_frame_refused(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((4, 4, 3), 80 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageInputError, match="3 frames"):
        io.read_image(tmp_path / "anim.gif")
    with Image.open(tmp_path / "anim.gif") as img, pytest.raises(ImageInputError, match="frames"):
        io.prepare_images(img)


@pytest.mark.parametrize(
    ("value", "match"),
    [(255.0, "divide by 255"), (3e38, "float values"), (np.nan, "NaN"), (-1.0, "float values")],
)
def test_float_range_refused(value: float, match: str) -> None:
    arr = np.full((4, 4, 3), value, np.float32)
    with pytest.raises(ImageInputError, match=match):
        io.prepare_images(arr)
    with pytest.raises(ImageInputError, match=match):
        io.prepare_images(torch.from_numpy(arr).permute(2, 0, 1))


def test_array_rules() -> None:
    (t,) = io.prepare_images(np.full((2, 3), 65535, np.uint16))
    assert t.shape == (3, 2, 3) and torch.all(t == 1)
    (t,) = io.prepare_images(np.ones((2, 3, 3), np.float32), channels=1)
    assert t.shape == (1, 2, 3) and torch.allclose(t, torch.ones(1))
    assert len(io.prepare_images(torch.rand(2, 3, 4, 5))) == 2
    with pytest.warns(ImageFormatWarning, match="alpha"):
        assert io.prepare_images(np.zeros((2, 2, 4), np.uint8))[0].shape == (3, 2, 2)
    for bad, match in (
        (np.zeros((2, 2, 3), np.int32), "dtype"),
        (np.zeros((1, 1, 2, 2, 3)), "shape"),
        (np.zeros((0, 2, 3)), "empty"),
        (np.zeros((2, 2, 5)), "channels"),
        ([], "empty list"),
        ("no/such/file.png", "cannot read"),
        (3, "unsupported type"),
    ):
        with pytest.raises((ImageInputError, OSError), match=match):
            io.prepare_images(bad)
