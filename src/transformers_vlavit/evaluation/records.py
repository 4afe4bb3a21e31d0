"""Predictions written as JSON Lines while a task runs, so that a rerun skips the items already done."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


class PredictionFile:
    """An append-only JSONL file of per-item records keyed by their ``"id"``.

    Each record is written and flushed as soon as it is known; a rerun reads the file back and the task
    skips every id already in it. A last line cut short by an interruption (no newline, invalid JSON) is
    dropped on reading and rewritten on the next append, so an interrupted run never poisons the file.

    Args:
        path: the ``.jsonl`` file (created with its folder when missing).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records = self._read()
        # rewrite without a torn last line so appends start on a fresh line
        with self.path.open("w", encoding="utf-8") as handle:
            for record in self._records.values():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _read(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        if not self.path.is_file():
            return records
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[str(record["id"])] = record
        return records

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._records

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[dict]) -> None:
        """Append records (each with an ``"id"``) and flush them to disk."""
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                self._records[str(record["id"])] = record
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def records(self, ids: Iterable[object] | None = None) -> list[dict]:
        """The records in file order, or those of ``ids`` in that order (missing ids are skipped)."""
        if ids is None:
            return list(self._records.values())
        return [self._records[str(i)] for i in ids if str(i) in self._records]


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)
