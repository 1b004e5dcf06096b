"""Disk space: what the upload directory's file system has left, and the reserve
kept for uploads already running.  No HTTP, nothing else of the project.

When new uploads keep being created on a filling disk, the uploads already
running starve: every resume gets 507 and no one finishes.  Below the reserve
(``disk_reserve``) the service therefore refuses to *create* uploads, and the
running ones use what is left to finish.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class DiskSpace:
    """What ``statvfs`` says of a file system, as an unprivileged writer sees it."""

    free: int
    total: int
    free_inodes: int
    total_inodes: int

    @classmethod
    def of(cls, directory: str) -> DiskSpace:
        stat = os.statvfs(directory)
        return cls(stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize,
                   stat.f_favail, stat.f_files)


@dataclass(frozen=True)
class DiskReserve:
    """Space kept free for running uploads: ``size`` bytes, or a ``share`` of the
    file system, its blocks and its inodes alike (a flood of empty uploads runs out
    of inodes, not bytes).  Neither: no reserve."""

    size: int = 0
    share: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.size or self.share)

    def __str__(self) -> str:
        return f"{self.share * 100:g}%" if self.share else str(self.size)

    def kept(self, space: DiskSpace) -> int:
        """Bytes kept free on ``space``."""
        return self.size or int(self.share * space.total)

    def refusal(self, space: DiskSpace, needed: int = 0) -> Optional[str]:
        """Why a new upload that stores ``needed`` bytes at once must wait, or ``None``."""
        kept = self.kept(space)
        if space.free - needed < kept:
            return f"{space.free} bytes free, {kept} kept for uploads already running"
        kept_inodes = int(self.share * space.total_inodes)
        if space.free_inodes < kept_inodes:
            return f"{space.free_inodes} inodes free, {kept_inodes} kept for uploads already running"
        return None
