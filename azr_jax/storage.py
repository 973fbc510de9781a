"""Files at local paths or URLs (`gs://bucket/run`, any fsspec protocol), for workdirs, metrics and exports.

A path with a `scheme://` prefix other than `file://` is remote and goes through fsspec (`gs://` needs
`gcsfs`); anything else is a local path and goes through the standard library, so local behaviour is
what it was before. Object stores have no directories and no appends: `makedirs` is a no-op there,
`isdir` is true once an object exists below the prefix, and a file is rewritten whole. Writing an
object is atomic on GCS (it appears complete when the upload finishes); `write_text` makes local
writes atomic too (a temporary file, then `os.replace`).

Errors name the path: a missing file or directory raises FileNotFoundError with the path, a
protocol whose fsspec package is not installed raises ImportError saying what to `pip install`.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from typing import IO

import fsspec

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL_PROTOCOLS = ("file", "local")
# protocol -> the pip package that provides its fsspec filesystem
_PACKAGES = {
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "s3": "s3fs",
    "s3a": "s3fs",
    "az": "adlfs",
    "abfs": "adlfs",
    "hf": "huggingface_hub",
}
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "azr_jax", "remote")


def protocol(path) -> str | None:
    """'gs' for 'gs://bucket/key', None for a plain local path."""
    m = _SCHEME.match(os.fspath(path))
    return m.group(1).lower() if m else None


def is_remote(path) -> bool:
    """True for a URL whose protocol is not the local file system (`gs://...`, `s3://...`, `memory://...`)."""
    return protocol(path) not in (None, *_LOCAL_PROTOCOLS)


def join(*parts) -> str:
    """`os.path.join` for local paths; for URLs, '/'-joins the parts (a part that is a URL starts over)."""
    parts = [os.fspath(p) for p in parts]
    if not parts:
        raise TypeError("join needs at least one part")
    start = max((i for i, p in enumerate(parts) if protocol(p) is not None), default=None)
    if start is None or not is_remote(parts[start]):
        return os.path.join(*(_local(p) for p in parts))
    out = parts[start]
    for p in parts[start + 1 :]:
        p = p.strip("/")
        if p:
            out = out.rstrip("/") + "/" + p
    return out


def makedirs(path) -> None:
    """Creates the directory and its parents if missing (a no-op on object stores)."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
        return
    fs, p = filesystem(path)
    fs.makedirs(p, exist_ok=True)


def exists(path) -> bool:
    if not is_remote(path):
        return os.path.exists(_local(path))
    fs, p = _uncached(path)
    return fs.exists(p)


def isdir(path) -> bool:
    if not is_remote(path):
        return os.path.isdir(_local(path))
    fs, p = _uncached(path)
    return fs.isdir(p)


def listdir(path) -> list[str]:
    """Sorted base names of the entries directly in the directory `path`."""
    if not is_remote(path):
        local = _local(path)
        if not os.path.isdir(local):
            raise _not_found(path, "no such directory")
        return sorted(os.listdir(local))
    fs, p = _uncached(path)
    if not fs.isdir(p):
        raise _not_found(path, "no such directory")
    root = _norm(fs, p)
    names = {_basename(n) for n in fs.ls(p, detail=False) if _norm(fs, n) != root}
    return sorted(n for n in names if n)


def open(path, mode: str = "r", **kwargs) -> IO:  # noqa: A001 - the module's `open`, like builtins.open
    """A file object for `path`: builtins.open for local paths (so a file's directory must exist: `makedirs`
    first), fsspec for URLs (text or binary modes; an object is written when the file is closed).

    Remote files cannot be appended to (mode 'a'): read, change and rewrite them instead.
    """
    if not is_remote(path):
        return builtins.open(_local(path), mode, **kwargs)
    if "a" in mode or "+" in mode:
        raise ValueError(f"cannot open {path} with mode {mode!r}: remote objects are written whole, not appended to")
    fs, p = filesystem(path)
    try:
        return fs.open(p, mode, **kwargs)
    except FileNotFoundError as e:
        raise _not_found(path, "no such file") from e


def write_text(path, text: str) -> None:
    """Writes `text` (UTF-8) to `path`, creating parent directories; readers never see a partial file."""
    if is_remote(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    path = _local(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a plain open() would give 0644 under the usual umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_text(path) -> str:
    if not is_remote(path):
        try:
            with builtins.open(_local(path), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError as e:
            raise _not_found(path, "no such file") from e
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def upload_dir(local_dir, remote_dir, *, last: tuple[str, ...] = ()) -> None:
    """Copies the tree under the local directory `local_dir` to `remote_dir` (local or remote), file by file.

    Files already at the destination are overwritten; other files there are left alone. The files named
    in `last` (relative, '/'-separated) are copied after all others, so that e.g. a directory whose
    config.json exists is complete.
    """
    local_dir = _local(local_dir)
    if not os.path.isdir(local_dir):
        raise _not_found(local_dir, "no such local directory to upload")
    if not is_remote(remote_dir):
        dst = _local(remote_dir)
        if os.path.isdir(dst) and os.path.samefile(local_dir, dst):
            return
        held = {os.path.join(local_dir, *rel.split("/")): os.path.join(dst, *rel.split("/")) for rel in last}
        shutil.copytree(
            local_dir, dst, dirs_exist_ok=True, ignore=lambda d, ns: [n for n in ns if os.path.join(d, n) in held]
        )
        for src, out in held.items():
            if os.path.isfile(src):
                shutil.copy2(src, out)
        return
    fs, root = filesystem(remote_dir)
    files = []
    for top, dirs, names in os.walk(local_dir):
        rel = os.path.relpath(top, local_dir)
        files += [name if rel == "." else posixpath.join(*rel.split(os.sep), name) for name in names]
    for rel in sorted(files, key=lambda rel: (rel in last, rel)):
        fs.put_file(os.path.join(local_dir, *rel.split("/")), posixpath.join(root, rel))
    fs.invalidate_cache(root)


def local_copy(path, cache_dir=None) -> str:
    """A local path with the contents of `path`: `path` itself when it is local; for a remote directory (or
    file), a copy downloaded into `cache_dir` (default ~/.cache/azr_jax/remote, or $AZR_JAX_CACHE_DIR).

    The copy is reused while the remote listing (names, sizes, generations / modification times) is
    unchanged, so a second call costs one listing; a changed remote is downloaded again. The download
    goes to a temporary directory that is renamed into place, so an interrupted one is never used. Each
    host downloads its own copy (call it on every process that reads the files).
    """
    if not is_remote(path):
        return _local(path)
    fs, root = _uncached(path)
    if not fs.exists(root):
        raise _not_found(path, "nothing at the remote path")
    is_dir = fs.isdir(root)
    files = _remote_files(fs, root) if is_dir else [("", root, fs.info(root))]
    fingerprint = hashlib.sha256(
        json.dumps([(rel, info) for rel, _, info in files], sort_keys=True, default=str).encode()
    ).hexdigest()

    cache_root = os.fspath(cache_dir or os.environ.get("AZR_JAX_CACHE_DIR") or DEFAULT_CACHE_DIR)
    url = os.fspath(path)
    key = re.sub(r"[^A-Za-z0-9._/-]", "_", url.split("://", 1)[1].strip("/"))
    target = os.path.join(cache_root, protocol(url), *[k for k in key.split("/") if k not in ("", ".", "..")])
    stamp = target + ".fingerprint"
    if _is_current(target, stamp, fingerprint):
        return target

    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.partial-{uuid.uuid4().hex}"
    try:
        if is_dir:
            os.makedirs(partial)
            for rel, name, _ in files:
                dst = os.path.join(partial, *rel.split("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                fs.get_file(name, dst)
        else:
            fs.get_file(root, partial)
        if _is_current(target, stamp, fingerprint):  # another process on this host (or a shared cache) won
            _remove(partial)
            return target
        if os.path.lexists(target):  # an older copy: move it aside, then drop it once the new one is in place
            old = f"{target}.old-{uuid.uuid4().hex}"
            os.replace(target, old)
            os.replace(partial, target)
            _remove(old)
        else:
            os.replace(partial, target)
    except BaseException:
        _remove(partial)
        raise
    write_text(stamp, fingerprint + "\n")
    return target


def _is_current(target: str, stamp: str, fingerprint: str) -> bool:
    if not (os.path.lexists(target) and os.path.exists(stamp)):
        return False
    with builtins.open(stamp) as f:
        return f.read().strip() == fingerprint


def _remote_files(fs, root: str) -> list[tuple[str, str, dict]]:
    """(relative '/'-separated name, the file system's name, its info) of every file under `root`, sorted."""
    out = []
    base = _norm(fs, root)
    for name, info in fs.find(root, detail=True).items():
        if info.get("type") != "file":
            continue
        full = _norm(fs, name)
        if not full.startswith(base + "/"):
            raise RuntimeError(f"{name} listed under {root} is not inside it")
        out.append((full[len(base) + 1 :], name, info))
    return sorted(out, key=lambda x: x[0])


def filesystem(path) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, the path in its terms) for a URL; ImportError naming the package if it is missing."""
    path = os.fspath(path)
    proto = protocol(path)
    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as e:
        package = _PACKAGES.get(proto)
        hint = f"`pip install {package}`" if package else f"install the fsspec filesystem for {proto}://"
        raise ImportError(f"cannot access {path}: {proto}:// paths need {hint} ({e})") from e
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise ValueError(f"cannot access {path}: fsspec knows no filesystem for {proto}://") from e
        raise


def _uncached(path) -> tuple[fsspec.AbstractFileSystem, str]:
    """`filesystem(path)` with fsspec's listing cache for `path` dropped: another process may have written it."""
    fs, p = filesystem(path)
    fs.invalidate_cache(p)
    return fs, p


def _local(path) -> str:
    path = os.fspath(path)
    if protocol(path) in _LOCAL_PROTOCOLS:
        return path.split("://", 1)[1]
    return path


def _norm(fs, name: str) -> str:
    return fs._strip_protocol(name).rstrip("/")


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _not_found(path, what: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, what, os.fspath(path))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)
