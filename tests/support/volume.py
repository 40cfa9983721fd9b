"""A small tmpfs volume that a test can fill: a real full disk (needs root)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallVolume:
    """A tmpfs of `size` bytes mounted at `path`, and a file that fills it up."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"

    def mount(self) -> SmallVolume:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        return self

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self) -> None:
        """Write to the filler file until the volume has no byte left."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 16, 1 << 12, 1):
                block = b"\0" * size
                with contextlib.suppress(OSError):
                    while os.write(fd, block):
                        pass
        finally:
            os.close(fd)

    def free(self) -> None:
        """Room again: the filler goes."""
        self.filler.unlink()

    def available(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize


@contextlib.contextmanager
def small_volume(path: Path, size: int) -> Iterator[SmallVolume]:
    """Mount a tmpfs for the test, or skip it where the machine does not allow that."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root (tmpfs); the SQLITE_FULL tests still run")
    volume = SmallVolume(path, size)
    try:
        volume.mount()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield volume
    finally:
        volume.unmount()
