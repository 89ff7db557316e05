"""Local paths and ``s3://`` URIs through pyarrow filesystems.

S3 settings come from the usual AWS variables; ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
points at an S3-compatible server (MinIO, moto), which is how the tests run against loopback.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from prodcat.core.errors import UnreadableFile


def is_remote(uri: str) -> bool:
    """True for ``s3://`` URIs."""
    return str(uri).startswith("s3://")


def s3_filesystem() -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem honouring ``AWS_ENDPOINT_URL[_S3]`` and ``AWS_DEFAULT_REGION``."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or an ``s3://bucket/key`` URI."""
    uri = str(uri)
    if is_remote(uri):
        return s3_filesystem(), uri[len("s3://"):]
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


def join(base: str, *parts: str) -> str:
    """Join path parts for local paths and URIs alike."""
    if is_remote(base):
        return posixpath.join(base, *parts)
    return str(Path(base).joinpath(*parts))


def parent(uri: str) -> str:
    """The folder holding ``uri`` (``s3://bucket/a/b`` → ``s3://bucket/a``; a local path made
    absolute first)."""
    if is_remote(uri):
        return posixpath.dirname(str(uri).rstrip("/"))
    return str(Path(uri).expanduser().absolute().parent)


def resolve_ref(base: str, ref: str) -> str:
    """``ref`` as named inside the folder ``base``: an ``s3://`` URI or an absolute path as it is,
    a relative path (``model``, ``../weights/x``) joined to ``base`` and normalised. This is how
    a relocatable artifact (cascade, checkpoint) names what it needs."""
    if is_remote(ref) or Path(ref).expanduser().is_absolute():
        return ref
    if is_remote(base):
        bucket_key = str(base)[len("s3://"):].rstrip("/")
        return "s3://" + posixpath.normpath(posixpath.join(bucket_key, ref))
    return os.path.normpath(Path(base).expanduser().absolute() / ref)


def relative_ref(base: str, target: str) -> str | None:
    """``target`` relative to the folder ``base`` when it lies inside it (same filesystem, no
    ``..``), else None; the inverse of :func:`resolve_ref`."""
    if is_remote(base) != is_remote(target):
        return None
    if is_remote(base):
        root, path = str(base).rstrip("/") + "/", str(target).rstrip("/")
        return path[len(root):] if path.startswith(root) else None
    root = Path(base).expanduser().absolute()
    path = Path(target).expanduser().absolute()
    try:
        return str(Path(os.path.normpath(path)).relative_to(os.path.normpath(root)))
    except ValueError:
        return None


def absolute(uri: str) -> str:
    """An ``s3://`` URI as it is; a local path made absolute (normalised)."""
    return str(uri) if is_remote(uri) else os.path.normpath(Path(uri).expanduser().absolute())


def copy_tree(src: str, dst: str, names: set[str] | None = None) -> list[str]:
    """Copy the files of folder ``src`` (recursively; only top-level files named in ``names``
    when given) to ``dst``, across local paths and ``s3://``. Returns the relative paths copied.

    Raises:
        FileNotFoundError: when ``src`` is not a folder.
    """
    fs, path = filesystem(src)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no such folder: {src}")
    copied = []
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        rel = posixpath.relpath(info.path, path)
        if info.type != pafs.FileType.File or (names is not None and rel not in names):
            continue
        write_bytes(join(dst, *rel.split("/")), read_bytes(join(src, *rel.split("/"))))
        copied.append(rel)
    return sorted(copied)


def list_files_recursive(folder: str) -> list[tuple[str, int]]:
    """``(path relative to folder, bytes)`` of every file under ``folder``, sorted; empty when
    the folder does not exist."""
    fs, path = filesystem(folder)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted((posixpath.relpath(i.path, path), i.size) for i in infos
                  if i.type == pafs.FileType.File)


def exists(uri: str) -> bool:
    """True when a file or folder exists at ``uri``."""
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    """Create a folder (a no-op on S3, where folders are implicit)."""
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)


def read_bytes(uri: str) -> bytes:
    """The bytes of a file; raises ``FileNotFoundError`` naming ``uri`` when absent."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError) as err:
        if not exists(uri):
            raise FileNotFoundError(f"no such file: {uri}") from None
        raise err


def read_text(uri: str) -> str:
    """A UTF-8 text file."""
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file, creating parent folders."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    """Write a UTF-8 text file."""
    write_bytes(uri, text.encode("utf-8"))


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file or folder of Parquet files.

    Raises:
        FileNotFoundError: nothing at ``uri``.
        prodcat.core.errors.UnreadableFile: a file that cannot be read (corrupt, truncated, not
            Parquet, a missing column); the message names it.
    """
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or folder: {uri}")
    try:
        return pq.read_table(path, filesystem=fs, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise UnreadableFile(uri, f"{type(err).__name__}: {err}") from None


def write_table(table: pa.Table, uri: str) -> None:
    """Write one Parquet file (parents created), keeping the schema's metadata."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    pq.write_table(table, path, filesystem=fs)


def write_table_atomic(table: pa.Table, uri: str) -> str:
    """Write one Parquet file so that readers see it whole or not at all: locally under a
    ``.tmp-`` name, then renamed; on S3 one PUT (objects appear atomically). Returns ``uri``."""
    if is_remote(uri):
        write_table(table, uri)
        return uri
    folder, name = posixpath.split(str(uri))
    tmp = join(folder, f".tmp-{name}")
    write_table(table, tmp)
    fs, tmp_path = filesystem(tmp)
    fs.move(tmp_path, filesystem(uri)[1])
    return uri


def list_files(folder: str, prefix: str = "", suffix: str = "") -> list[str]:
    """Sorted URIs of the files directly in ``folder`` whose names start with ``prefix`` and end
    with ``suffix`` (``.tmp-`` files of :func:`write_table_atomic` never match ``part-``); an
    empty list when the folder does not exist."""
    fs, path = filesystem(folder)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path))
                   if i.type == pafs.FileType.File and i.base_name.startswith(prefix)
                   and i.base_name.endswith(suffix))
    return [join(folder, n) for n in names]


def list_folders(folder: str, prefix: str = "") -> list[str]:
    """Sorted URIs of the folders directly in ``folder`` whose names start with ``prefix``; an
    empty list when the folder does not exist (on S3: the common prefixes that hold objects)."""
    fs, path = filesystem(folder)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path))
                   if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))
    return [join(folder, n) for n in names]


def local_copy(uri: str, cache_dir: str | Path) -> Path:
    """A local path for ``uri``: itself when local, else a copy (file or folder) under ``cache_dir``.

    An S3 folder is copied once; a second call finds the copy (marked complete by a sentinel).
    """
    if not is_remote(uri):
        return Path(uri).expanduser()
    fs, path = filesystem(uri)
    target = Path(cache_dir) / path.replace("/", "__")
    done = target.with_name(target.name + ".complete")
    if done.exists():
        return target
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or folder: {uri}")
    if info.type == pafs.FileType.File:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(uri))
    else:
        for item in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
            if item.type != pafs.FileType.File:
                continue
            out = target / posixpath.relpath(item.path, path)
            out.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(item.path) as f:
                out.write_bytes(f.read())
    done.touch()
    return target
