"""The MinHash signatures of staged records, on disk: no process of `gte prep` holds them all.

A signature is num_perm uint32 values (256 bytes at the default 64) for the query and as many for the positive:
512 bytes a record, 51 GB at 100M records. Step 1 appends each batch's rows to two raw files per staged source
(`q_sig.u32`, `p_sig.u32` in its stage folder); later steps read back a record range or a set of record ids. The
local engine reads them all at once (its in-memory LSH needs them anyway); engine=ray reads one block at a time
and hands it to a Ray task, so the driver's memory for them is one block, whatever the input size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Q_FILE, P_FILE = "q_sig.u32", "p_sig.u32"
FILES = (Q_FILE, P_FILE)


class SignatureWriter:
    """Appends (query, positive) signature rows of one staged source to its folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.handles = [open(folder / name, "wb") for name in FILES]
        self.rows = 0

    def add(self, q_sig: np.ndarray, p_sig: np.ndarray) -> None:
        for fh, sig in zip(self.handles, (q_sig, p_sig)):
            fh.write(np.ascontiguousarray(sig, dtype=np.uint32).tobytes())
        self.rows += len(q_sig)

    def close(self) -> int:
        """Flush to disk (a source is marked staged only after this) -> its rows."""
        for fh in self.handles:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        return self.rows


@dataclass
class Signatures:
    """Every staged record's signatures, in record order, as the per-source files step 1 wrote."""

    num_perm: int
    parts: list[tuple[int, Path]] = field(default_factory=list)  # (rows, folder) per staged source, in order

    def __len__(self) -> int:
        return sum(rows for rows, _ in self.parts)

    def add_part(self, rows: int, folder: Path) -> None:
        size = (folder / FILES[0]).stat().st_size
        if size != rows * self.num_perm * 4:
            raise ValueError(f"{folder / FILES[0]}: {size} bytes, expected {rows} rows of {self.num_perm} uint32")
        self.parts.append((rows, folder))

    def range(self, lo: int, hi: int, files: tuple[str, ...] = FILES) -> tuple[np.ndarray, ...]:
        """Rows lo..hi-1 of each of `files` (queries, positives) -> uint32 [hi - lo, num_perm] each, read into this
        process's memory."""
        out = [np.empty((max(hi - lo, 0), self.num_perm), np.uint32) for _ in files]
        start = 0
        for rows, folder in self.parts:
            a, b = max(lo, start), min(hi, start + rows)
            if a < b:
                for arr, name in zip(out, files):
                    arr[a - lo:b - lo] = np.fromfile(folder / name, dtype=np.uint32, count=(b - a) * self.num_perm,
                                                     offset=(a - start) * self.num_perm * 4).reshape(-1, self.num_perm)
            start += rows
        return tuple(out)

    def rows(self, ids: np.ndarray, files: tuple[str, ...] = FILES) -> tuple[np.ndarray, ...]:
        """Rows of the record ids (any order, repeats allowed) of each of `files` -> [len(ids), num_perm] each. Each
        file is mapped only while it is read, so its pages do not stay in this process."""
        ids = np.asarray(ids, dtype=np.int64)
        out = [np.empty((len(ids), self.num_perm), np.uint32) for _ in files]
        start = 0
        for rows, folder in self.parts:
            mine = np.flatnonzero((ids >= start) & (ids < start + rows))
            if len(mine) and rows:
                for arr, name in zip(out, files):
                    mapped = np.memmap(folder / name, dtype=np.uint32, mode="r", shape=(rows, self.num_perm))
                    arr[mine] = mapped[ids[mine] - start]
                    del mapped
            start += rows
        return tuple(out)

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        return self.range(0, len(self))
