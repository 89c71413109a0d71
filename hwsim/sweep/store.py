"""The results store of a sweep: one SQLite row per finished point, committed as it arrives, so killing
the sweep at any moment loses nothing that finished and a rerun skips exactly those points."""

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY, point TEXT NOT NULL, status TEXT NOT NULL, result TEXT, error TEXT,
    seconds REAL, run TEXT NOT NULL, finished REAL NOT NULL)"""


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")  # a commit survives the process being killed right after
        self.db.execute(SCHEMA)
        self.db.commit()

    def done(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM points")}

    def put(self, point: dict[str, Any], row: dict[str, Any], run: str) -> None:
        with self.db:  # one transaction per point
            self.db.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (point["key"], json.dumps(point, sort_keys=True), row["status"],
                             json.dumps(row["result"], sort_keys=True) if row["result"] is not None else None,
                             row["error"], row["seconds"], run, time.time()))

    def rows(self, keys: set[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for key, point, status, result, error, seconds, run, finished in self.db.execute(
                "SELECT * FROM points ORDER BY key"):
            if keys is None or key in keys:
                out.append({**json.loads(point), "status": status, "result": json.loads(result) if result else None,
                            "error": error, "seconds": seconds, "run": run, "finished": finished})
        return out

    def close(self) -> None:
        self.db.close()
