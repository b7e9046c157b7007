"""The resumable results file of ``zoo classify --out results.csv|.jsonl``.

One record per image: ``path, status, label, index, score, top_k, error``; status is
``ok`` or ``rejected`` (the server refused the file with a 4xx: re-running would not
help). Transient failures (5xx after retries) are not recorded, so a re-run tries
them again. Records are appended and flushed per batch; on opening, an existing
file is read, a final line cut short by an interrupted run is dropped, and every
path already recorded is skipped -- so a run can be killed at any moment and
re-run without duplicates.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterable

from clients.discover import path_key

FIELDS = ["path", "status", "label", "index", "score", "top_k", "error"]
FORMATS = (".csv", ".jsonl")


def make_record(path: str, result: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    """A record from one server result (``{"label","index","score","top_k"}``) or an error."""
    if result is not None:
        return {"path": path, "status": "ok", "label": result.get("label"), "index": result.get("index"),
                "score": result.get("score"), "top_k": result.get("top_k", []), "error": ""}
    # One line, always: a newline inside a CSV field would make resuming ambiguous.
    message = " ".join((error or "rejected").split())
    return {"path": path, "status": "rejected", "label": None, "index": None, "score": None, "top_k": [], "error": message}


class ResultStore:
    """Append-only CSV or JSON Lines file keyed by image path."""

    def __init__(self, path: str) -> None:
        ext = os.path.splitext(path)[1].lower()
        if ext not in FORMATS:
            raise ValueError(f"--out must end in .csv or .jsonl, got {path!r}")
        self.path, self.format = path, ext
        self._file: io.TextIOWrapper | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """Records already in the file, keyed by ``path_key``; repairs a cut-off last line."""
        if not os.path.exists(self.path):
            return {}
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            # The run was killed mid-write: drop the partial line so the next append starts clean.
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
            data = data[:keep]
        text = data.decode("utf-8")
        records = self._parse(text)
        return {path_key(r["path"]): r for r in records}

    def _parse(self, text: str) -> list[dict[str, Any]]:
        if not text.strip():
            return []
        if self.format == ".jsonl":
            out = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.path} line {n} is not a JSON record ({exc.msg}); fix or remove it") from None
                if not isinstance(record, dict) or "path" not in record:
                    raise ValueError(f"{self.path} line {n} has no 'path'; is this a zoo classify results file?")
                out.append(record)
            return out
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{self.path} has no 'path' column; is this a zoo classify results file?")
        out = []
        for row in reader:
            row = dict(row)
            row["top_k"] = json.loads(row["top_k"]) if row.get("top_k") else []
            row["index"] = int(row["index"]) if row.get("index") not in (None, "") else None
            row["score"] = float(row["score"]) if row.get("score") not in (None, "") else None
            row["label"] = row.get("label") if row.get("status") == "ok" else None
            out.append(row)
        return out

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Write records and flush, so what is on disk survives a kill right after."""
        records = list(records)
        if not records:
            return
        if self._file is None:
            new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", newline="")
            if new and self.format == ".csv":
                csv.writer(self._file, lineterminator="\n").writerow(FIELDS)
        if self.format == ".jsonl":
            # One write call per batch: fewer chances for a partial record.
            self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        else:
            writer = csv.writer(self._file, lineterminator="\n")
            for r in records:
                row = dict(r, top_k=json.dumps(r.get("top_k") or []))
                writer.writerow(["" if row.get(k) is None else row[k] for k in FIELDS])
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def confusion_matrix(pairs: list[tuple[str, str]], labels: list[str]) -> list[list[int]]:
    """Counts[true][predicted] over ``labels`` order; predictions outside labels are ignored."""
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for true, pred in pairs:
        if true in index and pred in index:
            counts[index[true]][index[pred]] += 1
    return counts


def format_confusion(counts: list[list[int]], labels: list[str]) -> str:
    """A fixed-width table: rows are true classes, columns predicted ones."""
    width = max([len(str(v)) for row in counts for v in row] + [len(lbl) for lbl in labels] + [4])
    first = max([len("true\\pred")] + [len(lbl) for lbl in labels]) + 2
    lines = ["true\\pred".ljust(first) + " ".join(lbl[:width].rjust(width) for lbl in labels)]
    for label, row in zip(labels, counts):
        lines.append(label.ljust(first) + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
