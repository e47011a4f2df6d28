"""A versioned, verified, atomically built folder in textpolicy's cache directory.

``ensure_cached(name, build)`` returns ``<cache root>/<name>`` after checking its marker file
(a SHA-256 of every file in the folder). A missing or corrupt folder is (re)built by calling
``build(tmp_dir)`` on a fresh temporary folder next to it, which is then renamed into place, so
a crash mid-build never leaves a half-written folder under the final name and two processes
building at once both end up using one complete copy.

The cache root is ``$TEXTPOLICY_CACHE_DIR`` when set (tests point it at a temporary folder),
else platformdirs' user cache directory for ``textpolicy``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textpolicy import strictjson
from textpolicy.errors import EngineError

CACHE_ENV = "TEXTPOLICY_CACHE_DIR"
MARKER = "textpolicy_cache.json"


def cache_root() -> Path:
    """The root of textpolicy's cache (``$TEXTPOLICY_CACHE_DIR`` or the user cache dir)."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("textpolicy"))


def folder_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative posix path → hex), marker excluded."""
    digests: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MARKER:
            digests[path.relative_to(folder).as_posix()] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return digests


def is_valid(folder: Path, version: str) -> bool:
    """True when ``folder`` holds a marker of ``version`` whose hashes match its files."""
    marker = folder / MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("version") != version:
        return False
    files = meta.get("files")
    return isinstance(files, dict) and bool(files) and files == folder_digest(folder)


def write_marker(folder: Path, version: str) -> None:
    meta = {"version": version, "files": folder_digest(folder)}
    (folder / MARKER).write_text(strictjson.dumps(meta, indent=1, sort_keys=True))


#: temporary folders this module and ``state`` make: ``.<name>.<kind>-<pid>-<random>``
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>build|trash|saving|old)-(?:(?P<pid>\d+)-)?")
#: a temporary folder without a pid (written by an older version) is stale after this long
_LEGACY_STALE_S = 3600.0


def owned_tmp_dir(name: str, kind: str, parent: Path) -> Path:
    """A fresh ``parent/.<name>.<kind>-<pid>-XXXX`` folder; the pid lets the next start tell
    a dead process's leftover from a folder another live process is still writing."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.{kind}-{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_leftovers(parent: Path) -> list[Path]:
    """Delete the temporary folders (interrupted builds, saves, trash) under ``parent`` whose
    process is gone; return what was deleted. On a real model these are partial multi-GB
    checkpoints."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = m.group("pid")
        if pid is not None:
            stale = int(pid) != os.getpid() and not _alive(int(pid))
        else:
            try:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_STALE_S
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def ensure_cached(name: str, version: str, build: Callable[[Path], None],
                  root: Path | None = None) -> Path:
    """Return the verified folder ``<root>/<name>``, building it when missing or corrupt."""
    root = cache_root() if root is None else root
    final = root / name
    remove_leftovers(root)
    if is_valid(final, version):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"cache: cannot create {root}: {exc}") from None
    tmp = owned_tmp_dir(name, "build", root)
    try:
        build(tmp)
        write_marker(tmp, version)
        if final.exists() and not is_valid(final, version):
            # corrupt or stale: move it aside first (rename is atomic), then delete it
            trash = owned_tmp_dir(name, "trash", root)
            with contextlib.suppress(OSError):
                os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # another process renamed its complete copy into place first
            if not is_valid(final, version):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not is_valid(final, version):
        raise EngineError(f"cache: {final} failed verification right after it was built")
    return final
