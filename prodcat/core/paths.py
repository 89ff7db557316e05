"""The one resolver for ``../shared`` (real catalogues, taxonomy, pretrained weights).

``PRODCAT_SHARED_DIR`` wins; otherwise ``../shared`` beside the repository root. Nothing else in
prodcat guesses where shared data lives.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PRODCAT_SHARED_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]

TAXONOMY_FILE = "data/taxonomies/google-product-taxonomy-with-ids.en-US.2021-09-21.txt"


class SharedDirMissing(FileNotFoundError):
    """Raised when the shared folder (data and models) cannot be found."""


def shared_dir() -> Path:
    """Return the shared folder.

    Raises:
        SharedDirMissing: when neither ``$PRODCAT_SHARED_DIR`` nor ``<repo>/../shared`` exists;
            the message says which paths were tried and how to fix it.
    """
    env = os.environ.get(ENV_VAR)
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared"
    if not candidate.is_dir():
        source = f"${ENV_VAR}={env}" if env else "the default ../shared beside the repository"
        raise SharedDirMissing(
            f"shared folder not found at {candidate} ({source}). Put the shared data next to the "
            f"repository or set {ENV_VAR} to the folder that holds data/ and models/."
        )
    return candidate


def shared_path(relative: str) -> Path:
    """Return ``shared_dir() / relative``, raising ``FileNotFoundError`` with the path when absent."""
    path = shared_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"{relative} not found under the shared folder {shared_dir()}")
    return path


def taxonomy_file() -> Path:
    """The Google Product Taxonomy (2021-09-21, with ids) in the shared folder."""
    return shared_path(TAXONOMY_FILE)


def catalogs_dir() -> Path:
    """``<shared>/data/catalogs``: one folder per platform with its export and images."""
    return shared_path("data/catalogs")


def models_dir() -> Path:
    """``<shared>/models``: pretrained encoders that load offline."""
    return shared_path("models")
