"""Import the original MR Sampler / IR-SDE code from a checkout, at run time.

Nothing of the original code is stored in this repository: the user points the benchmark
to a clone of github.com/grrrute/mr-sampler, github.com/Algolzw/image-restoration-sde
and/or github.com/Algolzw/daclip-uir and its modules are loaded from there. Their
module-level imports that play no part in sampling (``cv2``, ``torchvision``: used only to
save images) are replaced by empty stubs when they are not installed, and NumPy's removed
``np.int`` alias (used in one annotation of the MR Sampler code) is restored, only while
the files are imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MRS_UTILS = "universal-image-restoration/utils"
MRS_DACLIP_MODULES = "universal-image-restoration/config/daclip-sde/models/modules"
IRSDE_UTILS = "codes/utils"
IRSDE_UNET_MODULES = "codes/config/deraining/models/modules"


@dataclass
class OriginalCode:
    """What was found in the checkouts: classes, or ``None`` where missing."""

    mr_sampler: Any = None  #: ``MRSampler`` class (mr-sampler repo)
    irsde_sde: Any = None  #: ``IRSDE`` class with ``reverse_posterior`` (either repo)
    irsde_unet: Any = None  #: IR-SDE ``ConditionalUNet(in_nc, out_nc, nf, depth)``
    irsde_arch: Any = None  #: its module (``LinearAttention``, ``Attention``, ...)
    daclip_unet: Any = None  #: DA-CLIP ``ConditionalUNet`` (daclip-uir or mr-sampler repo)
    daclip_sde: Any = None  #: ``IRSDE`` of the DA-CLIP code (daclip-uir, else mr-sampler)
    nafnet: Any = None  #: Refusion ``ConditionalNAFNet`` (image-restoration-sde repo)
    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _import_shims(package_aliases: dict[str, types.ModuleType]) -> Iterator[None]:
    """Temporarily provide stub modules, ``np.int`` and package aliases in ``sys.modules``."""
    added: list[str] = []
    for name in ("cv2", "torchvision", "torchvision.utils"):
        try:
            if importlib.util.find_spec(name.split(".")[0]) is not None and name != "torchvision":
                continue
        except (ImportError, ValueError):
            pass
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    saved = {name: sys.modules.get(name) for name in package_aliases}
    sys.modules.update(package_aliases)
    had_int = hasattr(np, "int")
    if not had_int:
        np.int = int  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had_int:
            del np.int  # type: ignore[attr-defined]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name in added:
            sys.modules.pop(name, None)


def _package(name: str, folder: Path) -> types.ModuleType:
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    return package


def _load(qualified: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def _load_utils(folder: Path, tag: str, with_sampler: bool) -> tuple[Any, Any]:
    """``(sde_utils, sampler)`` modules of a ``utils`` folder (``sampler`` may be None)."""
    package = _package(f"_original_{tag}_utils", folder)
    with _import_shims({"utils": package}):
        sde_utils = _load(f"{package.__name__}.sde_utils", folder / "sde_utils.py")
        sys.modules["utils.sde_utils"] = sde_utils
        try:
            sampler = (
                _load(f"{package.__name__}.sampler", folder / "sampler.py")
                if with_sampler
                else None
            )
        finally:
            sys.modules.pop("utils.sde_utils", None)
    return sde_utils, sampler


def _load_arch(folder: Path, tag: str, module: str) -> types.ModuleType:
    package = _package(f"_original_{tag}_modules", folder)
    with _import_shims({package.__name__: package}):
        sys.modules[package.__name__] = package
        return _load(f"{package.__name__}.{module}", folder / f"{module}.py")


def _load_daclip(found: OriginalCode, repo: Path, tag: str, sde_utils: Any) -> None:
    """DA-CLIP's ``ConditionalUNet`` (and its ``IRSDE``) from an MR Sampler or DA-CLIP
    checkout; a DA-CLIP checkout's own code wins over the MR Sampler copy."""
    own = tag == "daclip"
    if found.daclip_unet is None or own:
        arch = _load_arch(repo / MRS_DACLIP_MODULES, f"{tag}_daclip", "DenoisingUNet_arch")
        found.daclip_unet = arch.ConditionalUNet
    if found.daclip_sde is None or own:
        found.daclip_sde = sde_utils.IRSDE


def _load_repo(found: OriginalCode, repo: Path) -> None:
    """What one checkout holds, by its layout."""
    if (repo / MRS_UTILS / "sampler.py").is_file():
        sde_utils, sampler = _load_utils(repo / MRS_UTILS, "mrs", with_sampler=True)
        found.mr_sampler = sampler.MRSampler
        found.irsde_sde = found.irsde_sde or sde_utils.IRSDE
        _load_daclip(found, repo, "mrs", sde_utils)
        found.sources.append(f"MR Sampler code: {repo}")
    elif (repo / MRS_UTILS / "sde_utils.py").is_file():
        sde_utils, _ = _load_utils(repo / MRS_UTILS, "daclip", with_sampler=False)
        _load_daclip(found, repo, "daclip", sde_utils)
        found.sources.append(f"DA-CLIP code: {repo}")
    elif (repo / IRSDE_UTILS / "sde_utils.py").is_file():
        sde_utils, _ = _load_utils(repo / IRSDE_UTILS, "irsde", with_sampler=False)
        found.irsde_sde = sde_utils.IRSDE
        arch = _load_arch(repo / IRSDE_UNET_MODULES, "irsde_unet", "DenoisingUNet_arch")
        found.irsde_unet, found.irsde_arch = arch.ConditionalUNet, arch
        if (repo / IRSDE_UNET_MODULES / "DenoisingNAFNet_arch.py").is_file():
            naf_mod = _load_arch(repo / IRSDE_UNET_MODULES, "irsde_naf", "DenoisingNAFNet_arch")
            found.nafnet = naf_mod.ConditionalNAFNet
        found.sources.append(f"IR-SDE code: {repo}")
    else:
        found.problems.append(f"{repo}: none of the MR Sampler, DA-CLIP or IR-SDE layouts")


def load_original_code(repos: list[str | Path]) -> OriginalCode:
    """Load whatever of the original code the given checkouts hold."""
    found = OriginalCode()
    for repo in map(Path, repos):
        if not repo.is_dir():
            found.problems.append(f"{repo}: not a directory")
            continue
        try:
            _load_repo(found, repo)
        except Exception as err:
            found.problems.append(f"{repo}: {type(err).__name__}: {err}")
    return found
