"""Files of a run, on a local disk or on Cloud Storage (``gs://bucket/...``): one place for every
read and write a study or ``train.fit`` makes outside orbax.

Local paths go through ``os`` (atomic writes: a temp file in the same directory, fsync, rename).
``gs://`` paths go through ``etils.epath`` - the path library orbax itself uses for checkpoint
directories - which reaches Cloud Storage through ``gcsfs`` when TensorFlow is absent. Cloud
Storage has no rename and no append, but one object upload is atomic (a reader sees the old
object or the new one, never a part), so ``write_atomic`` is a single upload there and ``append``
rewrites the whole (small) object. Clients are pointed at an emulator by their documented
variables: ``STORAGE_EMULATOR_HOST`` (gcsfs, google-cloud-storage) and
``TENSORSTORE_GCS_HTTP_URL`` (tensorstore, orbax's array store); see ``tests/gcs_emulator.py``.

TFDS's array_record files are read and written with local file I/O only, so a ``gs://`` data
directory is mirrored: ``download_tree`` before the study, ``copy_tree(..., only_new=True)`` of
what the study built (see ``experiments/cli.py``).
"""
from __future__ import annotations

import os
import posixpath
import tempfile

REMOTE_PREFIX = "gs://"


def is_remote(path) -> bool:
  return str(path).startswith(REMOTE_PREFIX)


def _epath(path):
  from etils import epath  # local: only gs:// paths need it
  return epath.Path(str(path))


def join(path, *parts) -> str:
  return posixpath.join(str(path), *parts) if is_remote(path) else os.path.join(path, *parts)


def absolute(path) -> str:
  """An absolute local path, or the ``gs://`` URL unchanged."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def parent(path) -> str:
  return posixpath.dirname(str(path)) if is_remote(path) else os.path.dirname(absolute(path))


def exists(path) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path) -> bool:
  return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path) -> bool:
  return exists(path) and not isdir(path)


def makedirs(path) -> None:
  if is_remote(path):
    _epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path) -> list[str]:
  """Names in a directory ([] if there is none)."""
  if not isdir(path):
    return []
  if is_remote(path):
    return sorted(p.name for p in _epath(path).iterdir())
  return sorted(os.listdir(path))


def read_bytes(path) -> bytes:
  if is_remote(path):
    return _epath(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def read_text(path) -> str:
  return read_bytes(path).decode()


def write_atomic(path, data: bytes | str) -> None:
  """Write the whole file so that a reader (or a kill) never sees a part of it."""
  data = data.encode() if isinstance(data, str) else data
  if is_remote(path):
    _epath(path).write_bytes(data)          # one upload: atomic on Cloud Storage
    return
  directory = parent(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def append(path, text: str) -> None:
  """Add ``text`` at the end of a file (created if missing). Local: an O_APPEND write (a kill can
  tear the last line, which readers must expect); ``gs://``: the object rewritten whole."""
  if is_remote(path):
    old = read_bytes(path) if exists(path) else b""
    write_atomic(path, old + text.encode())
    return
  with open(path, "a") as f:
    f.write(text)


def bucket_error(path) -> str | None:
  """Why a ``gs://`` path cannot be used (its bucket is missing or unreadable), or None."""
  if not is_remote(path):
    return None
  bucket = str(path)[len(REMOTE_PREFIX):].split("/", 1)[0]
  if not bucket:
    return "names no bucket"
  try:
    if _epath(REMOTE_PREFIX + bucket).exists():
      return None
    reason = "does not exist or is not readable with these credentials"
  except Exception as e:  # gcsfs raises auth, network and HTTP errors of many types
    reason = f"cannot be reached ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
  return f"bucket gs://{bucket} {reason}"


def copy_tree(local_dir: str, dest, only_new: bool = False) -> int:
  """Copy the files under a local directory to ``dest`` (local or ``gs://``), keeping the tree
  (``only_new``: skip files already there). Returns the number of files copied."""
  copied = 0
  for root, _, files in os.walk(local_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), local_dir)
      target = join(dest, *rel.split(os.sep))
      if only_new and exists(target):
        continue
      if not is_remote(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
      write_atomic(target, read_bytes(os.path.join(root, name)))
      copied += 1
  return copied


def download_tree(remote, local_dir: str) -> int:
  """Copy every file under ``remote`` (``gs://``) missing from ``local_dir`` down to it. Returns
  the number of files copied."""
  base = str(remote).rstrip("/")
  copied = 0
  pending, files = [_epath(base)] if isdir(base) else [], []
  while pending:                           # epath refuses recursive globs on gs://: walk it
    for path in pending.pop().iterdir():
      (pending if path.is_dir() else files).append(path)
  for path in files:
    rel = os.fspath(path)[len(base) + 1:]
    target = os.path.join(local_dir, *rel.split("/"))
    if not os.path.exists(target):
      write_atomic(target, path.read_bytes())
      copied += 1
  return copied
