"""Read the records of an offline W&B run (``run-*.wandb``): the file W&B uploads with ``wandb sync``.

The file is a 7-byte header (``:W&B``, a 2-byte magic, a version byte) followed by LevelDB log
blocks of 32 KiB; each chunk is a 7-byte header (CRC, length, type) and a slice of a serialized
``wandb_internal_pb2.Record``. Chunks of type FULL hold a whole record; FIRST/MIDDLE/LAST pieces join.
"""

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pending, out = 7, b"", []
    while position + CHUNK_HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < CHUNK_HEADER:  # the rest of a block too small for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + CHUNK_HEADER])
        payload = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zero padding
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """Every ``log`` call: a dict of metric name to value (a dict of fields for media such as images)."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            value = json.loads(item.value_json)
            if item.key:
                row[item.key] = value
            else:  # a media value arrives one field at a time: ["fit/training_curves", "_type"] -> ...
                *parents, leaf = item.nested_key
                node = row
                for parent in parents:
                    node = node.setdefault(parent, {})
                node[leaf] = value
        rows.append(row)
    return rows


def config(path: Path) -> dict[str, Any]:
    """The run config: the run record's config, then every config update, merged."""
    merged: dict[str, Any] = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            merged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return merged
