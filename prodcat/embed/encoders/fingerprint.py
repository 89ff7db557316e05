"""Where an encoder's weights come from, and the fingerprint that identifies them.

``weights`` in an encoder config is one of:

- ``shared:<path>``: a folder under the shared folder (resolved by :mod:`prodcat.core.paths`
  on the node that loads the encoder: every node of a cluster needs ``PRODCAT_SHARED_DIR``, in
  its environment or the job's runtime environment, unless ``../shared`` sits beside its copy of
  the repository, which a ``ray job submit --working-dir`` copy never has);
- ``s3://bucket/prefix``: copied once per node into the local cache (a file lock keeps
  concurrent actors on one node from copying twice);
- a local folder or file;
- anything else: a Hugging Face Hub repo id (``FacebookAI/roberta-base``, ``hf-hub:timm/...``),
  downloaded with ``huggingface_hub.snapshot_download`` (needs the network or a warm HF cache).

Every family then loads from a local folder in its library's standard layout, so tiny test
models and real weights go through the same code.

A :class:`Fingerprint` is the architecture, the sha256 of the weight files and the settings that
change the vectors; its :attr:`Fingerprint.key` travels into the embedding store.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prodcat.core import storage
from prodcat.core.paths import ENV_VAR, shared_path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
DEFAULT_CACHE = "~/.cache/prodcat/weights"


def default_cache_dir() -> Path:
    """``$PRODCAT_CACHE_DIR`` or ``~/.cache/prodcat/weights``."""
    return Path(os.environ.get("PRODCAT_CACHE_DIR", DEFAULT_CACHE)).expanduser()


def resolve_weights(spec: str, cache_dir: str | Path | None = None) -> Path:
    """A local path (folder or file) holding the weights named by ``spec``.

    Raises:
        FileNotFoundError: a ``shared:`` path, local path or ``s3://`` URI that does not exist.
        RuntimeError: a hub id that cannot be downloaded (no network and not cached).
    """

    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if spec.startswith("shared:"):
        try:
            return shared_path(spec[len("shared:"):].lstrip("/"))
        except FileNotFoundError as err:
            raise FileNotFoundError(shared_weights_missing(spec, err)) from None
    if storage.is_remote(spec):
        return _locked_copy(spec, cache)
    local = Path(spec).expanduser()
    if local.exists():
        return local
    if spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"encoder weights not found: {spec}")
    return _hub_snapshot(spec.removeprefix("hf-hub:"), cache)


def shared_weights_missing(spec: str, err: Exception) -> str:
    """The message for ``shared:`` weights that this node cannot find: which node, why, and the
    two documented fixes."""
    import socket

    return (f"encoder weights {spec!r} not found on node {socket.gethostname()} ({err}). "
            f"`shared:` paths resolve through {ENV_VAR} on the node that loads the encoder: set "
            f"{ENV_VAR} on every node (in its environment, or in the job's runtime environment: "
            f"ray job submit --runtime-env-json '{{\"env_vars\": {{\"{ENV_VAR}\": \"/path/to/shared\"}}}}'), "
            "or put the weights on s3:// and name them by URI (`prodcat cascade export "
            "--include-weights` copies them into the cascade folder)")


def _locked_copy(uri: str, cache: Path) -> Path:
    """:func:`prodcat.core.storage.local_copy` under a file lock (one copy per node)."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    lock = cache / (uri[len("s3://"):].replace("/", "__") + ".lock")
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return storage.local_copy(uri, cache)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _hub_snapshot(repo_id: str, cache: Path) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS,
                                      cache_dir=str(cache / "hub")))
    except Exception as err:
        raise RuntimeError(
            f"could not fetch encoder weights {repo_id!r} from the Hugging Face Hub ({err}). "
            "Offline, point weights at a local folder, an s3:// URI or shared:models/<name>."
        ) from err


def weight_files(path: Path) -> list[Path]:
    """The weight files of a folder (or the file itself), sorted by name.

    Raises:
        FileNotFoundError: when there are none.
    """
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {path}")
    return files


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of one file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(path: Path) -> str:
    """sha256 of the weights: of the file itself when there is one, else of ``name:sha256`` lines.

    Raises:
        FileNotFoundError: when ``path`` holds no weight files.
    """
    files = weight_files(path)
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{f.name}:{sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What makes two encoders' vectors comparable: same architecture, weights and settings."""

    architecture: str                       # e.g. "transformers:BertModel", "timm:vit_base_..."
    weights_sha256: str                     # see weights_sha256()
    settings: dict = field(default_factory=dict)  # pooling, max_tokens, image_size, normalize, ...

    @property
    def key(self) -> str:
        """16 hex chars identifying architecture + weights + settings."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """JSON-ready form, with the key."""
        return {**asdict(self), "key": self.key}
