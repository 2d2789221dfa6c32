"""Reading TensorBoard event files back in tests, as TensorBoard does: TFRecord framing (length,
masked CRC-32C of the length, the serialized ``Event``, masked CRC-32C of it), every checksum
verified, then the scalar summaries by tag. Works on local and ``gs://`` directories."""
from __future__ import annotations

import struct

from invariance import storage


def records(data: bytes) -> list[bytes]:
  from tensorboardX.record_writer import masked_crc32c
  out, i = [], 0
  while i < len(data):
    header = data[i:i + 8]
    (length,) = struct.unpack("Q", header)
    assert struct.unpack("I", data[i + 8:i + 12])[0] == masked_crc32c(header), "length CRC"
    body = data[i + 12:i + 12 + length]
    assert struct.unpack("I", data[i + 12 + length:i + 16 + length])[0] == masked_crc32c(body), \
        "data CRC"
    out.append(body)
    i += 16 + length
  return out


def scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} over every event file in ``directory`` (files in name order, i.e.
  by creation time), with TensorBoard's purge rule: a SessionLog START at step s hides what
  earlier events logged at steps >= s."""
  from tensorboardX.proto import event_pb2
  out: dict[str, list[tuple[int, float]]] = {}
  for name in storage.listdir(directory):
    if ".tfevents." not in name:
      continue
    for body in records(storage.read_bytes(storage.join(directory, name))):
      event = event_pb2.Event.FromString(body)
      if event.session_log.status == event_pb2.SessionLog.START:
        out = {tag: [(s, v) for s, v in pts if s < event.step] for tag, pts in out.items()}
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out
