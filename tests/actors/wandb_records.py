"""Reads a W&B offline run file (run-<id>.wandb) back: the records wandb-core wrote, in LevelDB's
log format (32 KiB blocks of 7-byte-headed chunks) after a 7-byte ":W&B" file header, each a
`wandb_internal_pb2.Record`. wandb 0.31 ships no Python reader of its own."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind not in (FULL, FIRST, MIDDLE, LAST):
            break  # zero fill after the last record
        parts += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def history(path: Path) -> list[dict[str, float]]:
    """Every wandb.log call of the file, as {key: value}."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records(path) if r.WhichOneof("record_type") == "history"]


def run_ids(path: Path) -> set[str]:
    return {r.run.run_id for r in records(path) if r.WhichOneof("record_type") == "run"}


def wait_complete(path: Path, timeout: float = 60.0) -> None:
    """Waits for the file's exit record: wandb-core writes the file in its own process, and under load
    finish() has been seen to return before the resumed run's records reached the disk."""
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout:.0f} s"
        time.sleep(0.2)
