"""Real training photographs that a fresh machine gets from the package registries.

The selection is the explicit list :data:`PHOTOS`: high-resolution photographs from Debian's
wallpaper packages (``mate-backgrounds``, ``plasma-workspace-wallpapers``,
``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04``; fetched with ``apt-get download``
and unpacked with ``dpkg -x``, nothing installed) and the natural
photographs that scikit-image and scikit-learn ship. Renders, drawings, abstract art and
micrographs are left out; every entry names its package, the file inside it and the license
from the package's copyright file. :data:`VAL_PHOTO_NAMES` is the fixed held-out split.

:func:`fetch_photos` copies the files into a cache folder (default
``~/.cache/diffusers-mrs/photos``, see :func:`default_cache_dir`) and writes
``manifest.json`` there: each file's package, package version, license, split, size and
SHA-256. A re-run verifies every file against the manifest and fetches only what is missing
or corrupt. See ``docs/training_data.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME",
    "PHOTOS",
    "SPLITS",
    "VAL_PHOTO_NAMES",
    "MissingToolError",
    "PhotoEntry",
    "check_selection",
    "default_cache_dir",
    "fetch_argument_parser",
    "fetch_photos",
    "load_manifest",
    "photo_paths",
    "sha256_of",
]

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "all")
#: A source's provider: ``(package, work_dir) -> (root folder of its files, package version)``.
Provider = Callable[[str, Path], tuple[Path, str]]


@dataclass(frozen=True)
class PhotoEntry:
    """One selected photograph.

    Attributes:
        name: unique name, ``"<collection>/<Name>"``; the cached file is
            ``<cache>/images/<name><suffix of path>``.
        source: ``"deb"`` (a Debian package) or ``"python"`` (files a Python package ships).
        package: the Debian package, or the Python distribution (``scikit-image``, ...).
        path: the file inside the unpacked package (``deb``) or the package's data folder.
        license: the license the package's copyright file (or data README) gives the file.
        copyright: its holder(s), from the same place.
    """

    name: str
    source: str
    package: str
    path: str
    license: str
    copyright: str

    @property
    def cache_file(self) -> str:
        """The file's path relative to the cache folder."""
        return f"images/{self.name}{Path(self.path).suffix.lower()}"


def _mate(name: str, holder: str) -> PhotoEntry:
    return PhotoEntry(f"mate/{name}", "deb", "mate-backgrounds",
                      f"usr/share/backgrounds/mate/nature/{name}.jpg", "GPL-2+", holder)


def _plasma(name: str, author: str) -> PhotoEntry:
    # debian/copyright: "Files: * / Copyright: 2014 KDE Visual Design Group / License: GPL-2+";
    # the photographer is the author in the wallpaper's metadata.json.
    return PhotoEntry(f"plasma/{name}", "deb", "plasma-workspace-wallpapers",
                      f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg", "GPL-2+",
                      f"2014 KDE Visual Design Group (photograph: {author})")


def _lomiri(file: str, license_: str, holder: str, release: str = "16.04") -> PhotoEntry:
    # debian/copyright gives each file its own stanza; the name is the file's stem up to "_by_".
    return PhotoEntry(f"lomiri/{file.split('_by_')[0]}", "deb", f"lomiri-wallpapers-{release}",
                      f"usr/share/backgrounds/{file}.jpg", license_, holder)


def _python(name: str, package: str, file: str, license_: str, holder: str) -> PhotoEntry:
    return PhotoEntry(name, "python", package, file, license_, holder)


#: The selected photographs. Left out as not photographs: mate-backgrounds' abstract/ and
#: desktop/ folders (Elephants is a painting), plasma's renders and drawings (Altai, Autumn,
#: Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui, Honeywave, IceCold, Kay, Kokkini,
#: MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna); lomiri's renders and
#: drawings (16.04: umang_by_Abhishek_Mudgal, and analogpattern_by_Peter_Nerlich, a texture
#: close-up under an added colour gradient; 20.04: Fossa_by_Jasper_Roks,
#: Infinite-Sea_by_Aury88, Painting-Colors_by__herobrine7gamer; lomiri-wallpapers:
#: warty-final-ubuntu.png, lomiri-default-background.png); scikit-image's
#: hubble_deep_field, retina, immunohistochemistry, skin (telescope and micrographs), its
#: drawings, and its grayscale images.
PHOTOS: tuple[PhotoEntry, ...] = (
    _mate("Aqua", "2008, Charles Barbin"),
    _mate("Blinds", "2008, Lennart Poettering, Andrea Cimitan"),
    _mate("Dune", "2007, Marco Cogoni; 2008, Hylke Bons"),
    _mate("FreshFlower", "2005, Jens Ansorg"),
    _mate("Garden", "2008, Charles Barbin"),
    _mate("GreenMeadow", "2005, Timothy Schellhase; 2008, Lapo Calamandrei"),
    _mate("LadyBird", "2008, Charles Barbin"),
    _mate("RainDrops", '2008, "blackcombwhistler07"'),
    _mate("Storm", "2008, Sergey Nazarov"),
    _mate("TwoWings", "2008, Charles Barbin; 2008, Hylke Bons"),
    _mate("Wood", "2008, Jean-François Fortin Tam"),
    _mate("YellowFlower", "2008, Charles Barbin"),
    _plasma("BytheWater", "Maciej Wiklo"),
    _plasma("ColdRipple", "Risto Saukonpää"),
    _plasma("ColorfulCups", "Dmitri Popov"),
    _plasma("DarkestHour", "Risto Saukonpää"),
    _plasma("EveningGlow", "Ian Hex"),
    _plasma("FallenLeaf", "Martin Klapetek"),
    _plasma("Grey", "Sigi Sagi"),
    _plasma("Kite", "Risto Saukonpää"),
    _plasma("OneStandsOut", "Risto Saukonpää"),
    _plasma("Path", "Risto Saukonpää"),
    _plasma("summer_1am", "Risto Saukonpää"),
    _lomiri("Bridge_by_Sander_Klootwijk", "CC-BY-SA-4.0", "2018. Sander Klootwijk"),
    _lomiri("Dragonfly_by_Bolly", "CC-BY-SA-4.0", '"Bolly", 2018'),
    _lomiri("Kleiber_by_Lukas_Baubkus", "CC-BY-SA-3.0", "2021, Lukas Baubkus", "20.04"),
    _lomiri("Picture_0B_by_freespace", "CC-BY-4.0", 'Trevor "Freespace", 2018'),
    _lomiri("Picture_1A_by_freespace", "CC-BY-4.0", 'Trevor "Freespace", 2018'),
    _lomiri("Wine_by_Jakkub_Mede", "CC-BY-4.0", "Jakub Mede, 2018"),
    _lomiri("aitzgorri_by_Aitzol_Berasategi", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
    _lomiri("free_by_Peter_Nerlich", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
    _lomiri("friends_by_Aitzol_Berasategi", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
    _lomiri("greentock_by_Peter_Nerlich", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
    _lomiri("life_by_Aitzol_Berasategi", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
    _lomiri("picosdeeuropa_by_Aitzol_Berasategi", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
    _lomiri("seeding_by_Clements_Engelhardt", "CC0-1.0", "Clemens Engelhardt, 2018"),
    _lomiri("sunset_by_Aitzol_Berasategi", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
    _python("skimage/astronaut", "scikit-image", "astronaut.png", "public domain", "NASA"),
    _python("skimage/rocket", "scikit-image", "rocket.jpg", "public domain", "SpaceX"),
    _python("skimage/chelsea", "scikit-image", "chelsea.png", "CC0", "Stefan van der Walt"),
    _python("skimage/coffee", "scikit-image", "coffee.png", "CC0", "Rachel Michetti"),
    _python("skimage/motorcycle_left", "scikit-image", "motorcycle_left.png",
            "none stated (Middlebury Stereo 2014)", "Scharstein et al."),
    _python("skimage/motorcycle_right", "scikit-image", "motorcycle_right.png",
            "none stated (Middlebury Stereo 2014)", "Scharstein et al."),
    _python("sklearn/china", "scikit-learn", "china.jpg", "CC-BY-2.0", "danielbuechele"),
    _python("sklearn/flower", "scikit-learn", "flower.jpg", "CC-BY-2.0", "vultilion"),
)

#: The fixed held-out split (never trained on): the bundled validation photos of
#: :mod:`diffusers_mrs.data` (chelsea, coffee, flower) and four wallpapers of different scenes.
VAL_PHOTO_NAMES: tuple[str, ...] = (
    "skimage/chelsea",
    "skimage/coffee",
    "sklearn/flower",
    "mate/LadyBird",
    "mate/Storm",
    "plasma/EveningGlow",
    "plasma/Path",
)

_PYTHON_DATA = {"scikit-image": "skimage.data", "scikit-learn": "sklearn.datasets.images"}


def default_cache_dir() -> Path:
    """``$DIFFUSERS_MRS_PHOTOS``, else ``$XDG_CACHE_HOME/diffusers-mrs/photos`` (default
    ``~/.cache/diffusers-mrs/photos``)."""
    if os.environ.get("DIFFUSERS_MRS_PHOTOS"):
        return Path(os.environ["DIFFUSERS_MRS_PHOTOS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "diffusers-mrs" / "photos"


def check_selection(entries: Sequence[PhotoEntry], val_names: Iterable[str]) -> None:
    """Raise ``ValueError`` if names repeat, a source is unknown, or a validation name is not
    an entry."""
    names = [e.name for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"photo names repeat: {repeated}")
    unknown = sorted({e.source for e in entries} - {"deb", "python"})
    if unknown:
        raise ValueError(f"unknown photo sources {unknown}; expected 'deb' or 'python'")
    missing = sorted(set(val_names) - set(names))
    if missing:
        raise ValueError(f"validation photos {missing} are not in the selection")


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (huggingface_hub's chunked reader)."""
    from huggingface_hub.utils.sha import sha_fileobj

    with open(path, "rb") as f:
        return sha_fileobj(f).hex()


# ----------------------------------------------------------------------------------------------
# Providers: where a package's files come from
# ----------------------------------------------------------------------------------------------
class MissingToolError(RuntimeError):
    """A command-line tool that a source needs is not installed."""


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise MissingToolError(
            f"{cmd[0]} not found: the wallpaper photographs come from Debian packages "
            "(apt-get, dpkg); on another system fetch only the Python ones (--sources python)")
    try:
        done = subprocess.run(list(cmd), cwd=cwd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {e.stderr.strip()}") from e
    return done.stdout


def _apt_knows(package: str) -> bool:
    try:
        return bool(_run(["apt-cache", "show", package]).strip())
    except MissingToolError:
        raise
    except RuntimeError:
        return False


def deb_provider(package: str, work_dir: Path) -> tuple[Path, str]:
    """``apt-get download`` the package into ``work_dir`` (after ``apt-get update`` if apt
    does not know it yet) and unpack it with ``dpkg -x``; nothing is installed."""
    if not _apt_knows(package):
        _run(["apt-get", "update"])
        if not _apt_knows(package):
            raise RuntimeError(f"apt knows no package {package!r} (after apt-get update)")
    _run(["apt-get", "download", package], cwd=work_dir)
    debs = sorted(work_dir.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} left no .deb in {work_dir}")
    root = work_dir / package
    _run(["dpkg", "-x", str(debs[-1]), str(root)])
    version = _run(["dpkg-deb", "-f", str(debs[-1]), "Version"]).strip()
    debs[-1].unlink()
    return root, version


def python_provider(package: str, work_dir: Path) -> tuple[Path, str]:
    """The data folder of an installed Python distribution (scikit-image, scikit-learn)."""
    del work_dir  # files are read where the package installed them
    if package not in _PYTHON_DATA:
        raise ValueError(f"no data folder known for {package!r}; expected {sorted(_PYTHON_DATA)}")
    try:
        root = Path(str(resources.files(_PYTHON_DATA[package])))
    except ModuleNotFoundError as e:
        raise RuntimeError(f"{package} is not installed (pip install {package})") from e
    return root, metadata.version(package)


DEFAULT_PROVIDERS: dict[str, Provider] = {"deb": deb_provider, "python": python_provider}


# ----------------------------------------------------------------------------------------------
# Manifest and fetching
# ----------------------------------------------------------------------------------------------
def load_manifest(cache_dir: str | Path) -> dict[str, Any]:
    """The cache's ``manifest.json`` (``{"photos": [...], ...}``); a missing one is empty."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return {"photos": []}
    return json.loads(path.read_text())


def _verified(cache_dir: Path, record: Mapping[str, Any] | None) -> bool:
    if record is None:
        return False
    path = cache_dir / record["file"]
    return path.is_file() and sha256_of(path) == record["sha256"]


def _record(entry: PhotoEntry, cache_dir: Path, version: str) -> dict[str, Any]:
    from PIL import Image

    path = cache_dir / entry.cache_file
    with Image.open(path) as im:
        width, height = im.size
    fields = {k: v for k, v in asdict(entry).items() if k != "path"}
    return {**fields, "package_file": entry.path, "package_version": version,
            "file": entry.cache_file, "width": width, "height": height,
            "bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _copy_package_files(entries: Sequence[PhotoEntry], root: Path, cache_dir: Path) -> None:
    for entry in entries:
        src = root / entry.path
        if not src.is_file():
            raise FileNotFoundError(f"{entry.package} has no file {entry.path} ({entry.name})")
        dst = cache_dir / entry.cache_file
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _check_unchanged(new: Mapping[str, Any], old: Mapping[str, Any] | None, refresh: bool) -> None:
    if old is not None and old["sha256"] != new["sha256"] and not refresh:
        raise ValueError(
            f"{new['name']} from {new['package']} {new['package_version']} has SHA-256 "
            f"{new['sha256']}, the manifest {old['sha256']} ({old['package_version']}): the file "
            "changed upstream; pass refresh=True (--refresh) to accept the new version")


def fetch_photos(
    cache_dir: str | Path | None = None,
    entries: Sequence[PhotoEntry] = PHOTOS,
    val_names: Sequence[str] = VAL_PHOTO_NAMES,
    providers: Mapping[str, Provider] | None = None,
    refresh: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch the selected photographs into ``cache_dir`` and write its manifest.

    Files already in the cache whose SHA-256 matches the manifest are kept; the others are
    fetched again, one package at a time (``providers[entry.source]``). A refetched file
    whose SHA-256 differs from the manifest's raises ``ValueError`` unless ``refresh``.

    Args:
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        entries: the selection (default :data:`PHOTOS`).
        val_names: the held-out names (default :data:`VAL_PHOTO_NAMES`).
        providers: ``{source: provider}``, default :data:`DEFAULT_PROVIDERS`.
        refresh: accept files that changed upstream.
        progress: show tqdm progress bars.

    Returns:
        The manifest written to ``<cache_dir>/manifest.json``.
    """
    from tqdm.auto import tqdm

    check_selection(entries, val_names)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    providers = dict(DEFAULT_PROVIDERS, **(providers or {}))
    old = {r["name"]: r for r in load_manifest(cache)["photos"]}
    records = {e.name: old[e.name]
               for e in tqdm(entries, desc="verify", unit="photo", disable=not progress)
               if _verified(cache, old.get(e.name))}
    todo: dict[tuple[str, str], list[PhotoEntry]] = {}
    for e in entries:
        if e.name not in records:
            todo.setdefault((e.source, e.package), []).append(e)
    cache.mkdir(parents=True, exist_ok=True)
    for (source, package), group in tqdm(todo.items(), desc="fetch", unit="package",
                                         disable=not progress):
        with tempfile.TemporaryDirectory(dir=cache, prefix=".work-") as work:
            root, version = providers[source](package, Path(work))
            _copy_package_files(group, root, cache)
        for e in group:
            records[e.name] = _record(e, cache, version)
            _check_unchanged(records[e.name], old.get(e.name), refresh)
    photos = [{**records[e.name], "split": "val" if e.name in val_names else "train"}
              for e in entries]
    manifest = {"format": 1, "val_names": list(val_names), "photos": photos}
    tmp = cache / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(cache / MANIFEST_NAME)
    return manifest


def _lacking_training_photos(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The training photographs of :data:`PHOTOS` that a manifest lacks, among the sources
    (``deb``, ``python``) it was fetched from: those added to the selection after the fetch."""
    have = {r["name"] for r in records}
    sources = {r["source"] for r in records}
    return [e.name for e in PHOTOS if e.source in sources and e.name not in have
            and e.name not in VAL_PHOTO_NAMES]


def photo_paths(cache_dir: str | Path | None = None, split: str = "train") -> list[Path]:
    """The cached files of one split (``"train"``, ``"val"`` or ``"all"``), in manifest order.

    Raises ``FileNotFoundError`` naming the fetch command if the cache has no manifest, a
    listed file is missing, or (``"train"``, ``"all"``) the manifest predates training
    photographs of :data:`PHOTOS`; the held-out split of such a cache still loads.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    records = load_manifest(cache)["photos"]
    if not records:
        raise FileNotFoundError(
            f"no photos in {cache}: run `python examples/fetch_training_photos.py "
            f"--cache-dir {cache}` first")
    lacking = _lacking_training_photos(records) if split != "val" else []
    if lacking:
        names = ", ".join(lacking[:3]) + (", ..." if len(lacking) > 3 else "")
        raise FileNotFoundError(
            f"{cache} was fetched before {len(lacking)} training photograph(s) joined the "
            f"selection ({names}): run `python "
            f"examples/fetch_training_photos.py --cache-dir {cache}`, which fetches only "
            "the missing ones")
    paths = [cache / r["file"] for r in records if split in ("all", r["split"])]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} photos missing from {cache} ({missing[:3]}): "
                                "run examples/fetch_training_photos.py again")
    return paths


def fetch_argument_parser(description: str, default_dir: Path) -> argparse.ArgumentParser:
    """The options of the photo-fetching commands (``examples/fetch_training_photos.py``,
    ``examples/fetch_real_photos.py``): ``--cache-dir``, ``--sources`` and ``--refresh``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache-dir", default=None,
                        help=f"cache folder (default {default_dir})")
    parser.add_argument("--sources", nargs="+", choices=("deb", "python"),
                        default=["deb", "python"], help="which sources to fetch")
    parser.add_argument("--refresh", action="store_true",
                        help="accept files whose SHA-256 changed upstream")
    return parser
