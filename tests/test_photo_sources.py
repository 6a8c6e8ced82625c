"""The training photographs: selection, manifest, SHA-256 checks, splits and training data,
offline on a fake unpacked package tree."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_mrs.training import photo_sources as ps
from diffusers_mrs.training.photo_data import (
    load_photos,
    photo_validation_set,
    photos_cache_dir,
    training_images,
)
from diffusers_mrs.training.photo_sources import PhotoEntry, fetch_photos, photo_paths
from diffusers_mrs.training.realistic_degradations import degrade_realistic

FAKE_ENTRIES = (
    PhotoEntry("wall/Sea", "deb", "fake-wallpapers", "usr/share/bg/Sea.jpg", "GPL-2+", "A"),
    PhotoEntry("wall/Hill", "deb", "fake-wallpapers", "usr/share/bg/Hill.png", "GPL-2+", "B"),
    PhotoEntry("wall/Leaf", "deb", "other-wallpapers", "pics/Leaf.png", "CC0", "C"),
    PhotoEntry("py/cat", "python", "fake-python", "cat.png", "CC0", "D"),
)
FAKE_VAL = ("wall/Hill",)


class FakeRegistry:
    """Providers that unpack a fake package tree and count how often each package is fetched."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls, self.version = root, [], "1.0-1"
        for i, entry in enumerate(FAKE_ENTRIES):
            self.write(entry, seed=i)

    def write(self, entry: PhotoEntry, seed: int) -> Path:
        path = self.root / entry.package / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(seed).integers(0, 256, (60, 90, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
        return path

    def provide(self, package: str, work_dir: Path) -> tuple[Path, str]:
        assert work_dir.is_dir()
        self.calls.append(package)
        return self.root / package, self.version

    @property
    def providers(self) -> dict:
        return {"deb": self.provide, "python": self.provide}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch) -> FakeRegistry:
    """The fake packages; the fake entries stand in for the shipped selection, against
    which ``photo_paths`` checks a cache's training split."""
    monkeypatch.setattr(ps, "PHOTOS", FAKE_ENTRIES)
    return FakeRegistry(tmp_path / "packages")


def _fetch(cache: Path, registry: FakeRegistry, **kw) -> dict:
    return fetch_photos(cache, FAKE_ENTRIES, FAKE_VAL, registry.providers, progress=False, **kw)


def test_manifest_records_package_license_split_and_sha256(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    manifest = _fetch(cache, registry)
    assert json.loads((cache / "manifest.json").read_text()) == manifest
    records = {r["name"]: r for r in manifest["photos"]}
    assert list(records) == [e.name for e in FAKE_ENTRIES]
    for entry in FAKE_ENTRIES:
        r = records[entry.name]
        source = registry.root / entry.package / entry.path
        assert r["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert (r["package"], r["license"], r["copyright"]) == (
            entry.package, entry.license, entry.copyright)
        assert (r["package_file"], r["package_version"]) == (entry.path, "1.0-1")
        assert (r["width"], r["height"]) == (90, 60)
        assert r["split"] == ("val" if entry.name in FAKE_VAL else "train")
        assert (cache / r["file"]).read_bytes() == source.read_bytes()
    # one fetch per package
    assert sorted(registry.calls) == ["fake-python", "fake-wallpapers", "other-wallpapers"]
    assert not list(cache.glob(".work-*"))  # the unpacked packages are gone


def test_rerun_verifies_and_refetches_only_corrupt_files(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    first = _fetch(cache, registry)
    registry.calls.clear()
    assert _fetch(cache, registry) == first and registry.calls == []
    (cache / "images" / "wall" / "Leaf.png").write_bytes(b"corrupt")
    (cache / "images" / "py" / "cat.png").unlink()
    assert _fetch(cache, registry) == first
    assert sorted(registry.calls) == ["fake-python", "other-wallpapers"]


def test_a_file_changed_upstream_needs_refresh(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    _fetch(cache, registry)
    leaf = FAKE_ENTRIES[2]
    new_source = registry.write(leaf, seed=99)
    registry.version = "2.0-1"
    (cache / leaf.cache_file).unlink()
    with pytest.raises(ValueError, match=r"wall/Leaf .*changed upstream"):
        _fetch(cache, registry)
    manifest = _fetch(cache, registry, refresh=True)
    record = next(r for r in manifest["photos"] if r["name"] == "wall/Leaf")
    assert record["sha256"] == hashlib.sha256(new_source.read_bytes()).hexdigest()
    assert record["package_version"] == "2.0-1"


def test_selection_errors_are_named(tmp_path, registry) -> None:
    with pytest.raises(ValueError, match="repeat"):
        fetch_photos(tmp_path, FAKE_ENTRIES + FAKE_ENTRIES[:1], (), registry.providers)
    with pytest.raises(ValueError, match="not in the selection"):
        fetch_photos(tmp_path, FAKE_ENTRIES, ("wall/Nope",), registry.providers)
    missing = PhotoEntry("wall/Gone", "deb", "fake-wallpapers", "usr/share/bg/Gone.jpg", "x", "y")
    with pytest.raises(FileNotFoundError, match="fake-wallpapers has no file usr/share/bg/Gone"):
        fetch_photos(tmp_path / "c", (missing,), (), registry.providers, progress=False)


def test_the_shipped_selection_is_photographs_with_licenses() -> None:
    ps.check_selection(ps.PHOTOS, ps.VAL_PHOTO_NAMES)
    names = {e.name for e in ps.PHOTOS}
    not_photos = {"mate/Elephants", "skimage/hubble_deep_field", "skimage/retina",
                  "skimage/immunohistochemistry", "plasma/Autumn", "plasma/SafeLanding"}
    assert not names & not_photos
    assert all(e.license and e.copyright for e in ps.PHOTOS)
    assert {Path(e.path).suffix for e in ps.PHOTOS} <= {".jpg", ".png"}
    train = names - set(ps.VAL_PHOTO_NAMES)
    assert len(ps.VAL_PHOTO_NAMES) == 7 and len(train) == 38
    # a stereo pair is never split between training and validation
    assert {"skimage/motorcycle_left", "skimage/motorcycle_right"} <= train


def test_default_cache_is_outside_the_repository(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DIFFUSERS_MRS_PHOTOS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ps.default_cache_dir() == tmp_path / "diffusers-mrs" / "photos"
    monkeypatch.setenv("DIFFUSERS_MRS_PHOTOS", str(tmp_path / "mine"))
    assert ps.default_cache_dir() == tmp_path / "mine"


def test_splits_and_training_data_from_the_cache(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=r"fetch_training_photos\.py"):
        photo_paths(cache, "train")
    _fetch(cache, registry)
    assert [p.stem for p in photo_paths(cache, "val")] == ["Hill"]
    assert [p.stem for p in photo_paths(cache, "train")] == ["Sea", "Leaf", "cat"]
    with pytest.raises(ValueError, match="split"):
        photo_paths(cache, "test")
    small = load_photos(cache, "train", max_side=45)
    assert list(small) == ["wall/Sea", "wall/Leaf", "py/cat"]
    assert all(im.shape == (30, 45, 3) and im.dtype == np.uint8 for im in small.values())
    assert photos_cache_dir(f"photos:{cache}") == cache and photos_cache_dir("photos") is None
    images, degrader = training_images(f"photos:{cache}")
    assert degrader is degrade_realistic and len(images) == 3


def test_validation_set_is_fixed_for_a_seed(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    _fetch(cache, registry)
    lq, gt, labels = photo_validation_set(cache, ("noise", "lowlight", "clean"), crop=24)
    assert lq.shape == gt.shape == (3, 3, 24, 24)
    assert labels == ["noise/wall/Hill", "lowlight/wall/Hill", "clean/wall/Hill"]
    hill = np.asarray(Image.open(cache / "images" / "wall" / "Hill.png"), dtype=np.float32) / 255
    np.testing.assert_array_equal(gt[0].permute(1, 2, 0).numpy(), hill[18:42, 33:57])
    assert lq[1].mean() < 0.6 * gt[1].mean()  # darkened
    assert (lq[2] == gt[2]).all()
    again = photo_validation_set(cache, ("noise", "lowlight", "clean"), crop=24)
    assert all((a == b).all() for a, b in zip((lq, gt), again[:2], strict=True))


def test_training_on_the_photos_validates_on_their_held_out_split(tmp_path, registry) -> None:
    from diffusers_mrs.training import TrainingConfig, train

    cache = tmp_path / "cache"
    _fetch(cache, registry)
    out = tmp_path / "run"
    config = TrainingConfig(
        output_dir=str(out), train_data=f"photos:{cache}", kinds=["noise", "lowlight", "clean"],
        validation_kinds=["noise", "lowlight"], degradation_aware=True, nf=4, depth=2,
        unet_kwargs={"attention_heads": 1, "attention_head_dim": 4}, patch_size=16,
        train_batch_size=2, max_train_steps=1, lr_warmup_steps=1, checkpointing_steps=None,
        validation_steps=None, validation_num_inference_steps=2, validation_crop=16,
        num_threads=2, save_pipeline=False, use_ema=False)
    train(config)
    validation = json.loads((out / "final_metrics.json").read_text())["validation"]
    assert {"noise/psnr_in", "lowlight/psnr_in"} <= set(validation)
    assert "blur/psnr_in" not in validation


def test_classifier_refit_draws_its_crops_from_the_photos(tmp_path, registry) -> None:
    from diffusers_mrs.training.classifier import classifier_batch

    cache = tmp_path / "cache"
    _fetch(cache, registry)
    photos, degrader = training_images(f"photos:{cache}")
    images, labels = classifier_batch(photos, ["lowlight", "clean"], 6, 32,
                                      np.random.default_rng(0), degrader)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert set(labels.tolist()) == {0, 1}
    sources = [torch.from_numpy(p.astype(np.float32) / 255) for p in photos]
    for image, label in zip(images, labels.tolist(), strict=True):
        if label == 1:  # clean: a crop of one of the photos, unchanged
            assert any(_contains(s, image) for s in sources)
        else:  # low light: darker than the photos (mean 0.5) and 8-bit
            assert image.mean() < 0.35
            assert torch.allclose(image * 255, torch.round(image * 255), atol=1e-3)


def _contains(photo: torch.Tensor, crop: torch.Tensor) -> bool:
    h, w = crop.shape[1:]
    windows = photo.unfold(0, h, 1).unfold(1, w, 1)  # H' x W' x 3 x h x w
    return bool((windows == crop).all(dim=(2, 3, 4)).any())


def test_a_missing_apt_is_named(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-cache, apt-get or dpkg
    with pytest.raises(ps.MissingToolError, match=r"apt-cache not found.*--sources python"):
        ps.deb_provider("mate-backgrounds", tmp_path)


def test_the_split_follows_the_selection_not_the_old_manifest(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    _fetch(cache, registry)
    registry.calls.clear()
    manifest = fetch_photos(cache, FAKE_ENTRIES, ("wall/Sea",), registry.providers,
                            progress=False)
    assert registry.calls == []  # verified, not fetched again
    assert [r["split"] for r in manifest["photos"]] == ["val", "train", "train", "train"]


HELD_OUT = ("skimage/chelsea", "skimage/coffee", "sklearn/flower", "mate/LadyBird", "mate/Storm",
            "plasma/EveningGlow", "plasma/Path")
LOMIRI_LICENSES = {"CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-SA-3.0", "CC0-1.0"}


def test_the_lomiri_photographs_train_with_their_licenses() -> None:
    lomiri = [e for e in ps.PHOTOS if e.name.startswith("lomiri/")]
    assert len(lomiri) == 14
    assert ps.VAL_PHOTO_NAMES == HELD_OUT  # the held-out split did not change
    for e in lomiri:
        assert e.source == "deb" and e.package in {"lomiri-wallpapers-16.04",
                                                   "lomiri-wallpapers-20.04"}
        stem = e.name.removeprefix("lomiri/")
        assert e.path.startswith(f"usr/share/backgrounds/{stem}_by_") and e.path.endswith(".jpg")
        assert e.license in LOMIRI_LICENSES and e.copyright
    renders = {"lomiri/Fossa", "lomiri/Infinite-Sea", "lomiri/Painting-Colors", "lomiri/umang",
               "lomiri/analogpattern", "lomiri/warty-final-ubuntu"}
    assert not {e.name for e in lomiri} & renders
    licenses = {e.name: (e.package, e.license) for e in lomiri}
    assert licenses["lomiri/Kleiber"] == ("lomiri-wallpapers-20.04", "CC-BY-SA-3.0")
    assert licenses["lomiri/seeding"] == ("lomiri-wallpapers-16.04", "CC0-1.0")


def _old_cache(cache: Path) -> None:
    """A cache as fetched before the Lomiri photographs joined: its manifest lists the others."""
    records = []
    for e in ps.PHOTOS:
        if e.name.startswith("lomiri/"):
            continue
        path = cache / e.cache_file
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(path)
        records.append({"name": e.name, "source": e.source, "package": e.package,
                        "file": e.cache_file,
                        "split": "val" if e.name in HELD_OUT else "train"})
    (cache / "manifest.json").write_text(json.dumps({"format": 1, "photos": records}))


def test_an_old_cache_still_validates_but_must_be_fetched_again_to_train(tmp_path) -> None:
    cache = tmp_path / "old"
    _old_cache(cache)
    val = [f"{p.parent.name}/{p.stem}" for p in photo_paths(cache, "val")]
    assert sorted(val) == sorted(HELD_OUT) and list(load_photos(cache, "val")) == val
    refetch = r"14 training photograph\(s\) .*lomiri/Bridge.*fetch_training_photos\.py"
    for split in ("train", "all"):
        with pytest.raises(FileNotFoundError, match=refetch):
            photo_paths(cache, split)
    with pytest.raises(FileNotFoundError, match=refetch):
        training_images(f"photos:{cache}")


def test_a_fetch_adds_only_the_photographs_a_cache_lacks(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    old_selection = [e for e in FAKE_ENTRIES if e.name != "wall/Leaf"]
    fetch_photos(cache, old_selection, FAKE_VAL, registry.providers, progress=False)
    assert [p.stem for p in photo_paths(cache, "val")] == ["Hill"]
    with pytest.raises(FileNotFoundError, match=r"1 training photograph\(s\) .*\(wall/Leaf\)"):
        photo_paths(cache, "train")
    registry.calls.clear()
    _fetch(cache, registry)
    assert registry.calls == ["other-wallpapers"]
    assert [p.stem for p in photo_paths(cache, "train")] == ["Sea", "Leaf", "cat"]


def test_a_python_only_cache_trains_on_its_own_source(tmp_path, registry) -> None:
    cache = tmp_path / "cache"
    python_only = [e for e in FAKE_ENTRIES if e.source == "python"]
    fetch_photos(cache, python_only, (), registry.providers, progress=False)
    assert [p.stem for p in photo_paths(cache, "train")] == ["cat"]
