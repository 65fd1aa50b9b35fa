"""Notice when the config file changes, including a Kubernetes ConfigMap's symlink swap.

A ConfigMap volume holds ``switchboard.yaml -> ..data/switchboard.yaml`` and
``..data -> ..2026_11_26_13_00_00.123``; an update writes a new timestamped directory and
renames a new ``..data`` link over the old one. An inotify watch on the file would stay on the
old inode and miss it, so this polls instead: it follows the links and compares the resolved
path, device, inode, size and modification time. One ``stat`` a second per file costs nothing,
needs no dependency and works the same on every filesystem (bind mounts and network volumes
included). Secret volumes update the same way, so the files a config refers to (keys, secrets)
are watched alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FileState:
    """What identifies one version of a file; ``None`` fields mean it could not be read."""

    resolved: str
    device: int | None = None
    inode: int | None = None
    size: int | None = None
    mtime_ns: int | None = None


def file_state(path: str | Path) -> FileState:
    """The file's current state, following symlinks. Never raises: a missing or unreadable
    file has a state too (so that its return counts as a change)."""
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError:
        return FileState(resolved)
    return FileState(resolved, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatcher:
    """Polled by its owner: ``changed()`` says whether any watched file differs from the
    last look."""

    def __init__(self, *paths: str | Path) -> None:
        self._paths = tuple(Path(p) for p in paths)
        self._seen = self._states()

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def _states(self) -> tuple[FileState, ...]:
        return tuple(file_state(p) for p in self._paths)

    def changed(self) -> bool:
        """True (once) when a file has changed since the last call or ``mark_seen``."""
        now = self._states()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def mark_seen(self, paths: Iterable[str | Path] | None = None) -> None:
        """Take the files as they are now as known, watching ``paths`` from now on if given
        (a reloaded config may refer to other files)."""
        if paths is not None:
            self._paths = tuple(Path(p) for p in paths)
        self._seen = self._states()
