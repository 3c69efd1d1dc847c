"""Where replicas meet (docs/sync.md): a plain folder or any rclone remote, behind one small interface.

A remote only has to list names under a prefix, read an object, and write an object once. Writing
once is the rule that makes a lock unnecessary: a replica writes only new names under its own prefix,
and an object appears whole or not at all (a temp name then a rename on a folder; rclone's own
partial-upload handling, and an upload to a temp name then a server-side move, on rclone remotes).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol

from ..errors import MemfsError
from ..filestore import fsync_dir

TEMP_PREFIX = "tmp/"  # in-progress uploads; readers never look here


class RemoteError(MemfsError):
    """The remote could not be reached, listed, read or written. Nothing local was changed."""


class ObjectGone(RemoteError):
    """An object listed a moment ago was gone when read: its replica compacted it meanwhile."""

    def __init__(self, name: str, where: str):
        super().__init__(f"the object {name} was listed on the remote {where} but was gone when read (its replica "
                         "compacted it meanwhile: `memfs sync compact`); nothing was changed, sync again")


class Remote(Protocol):
    where: str

    def list(self, prefix: str) -> dict[str, int]:
        """Every object name under `prefix` (recursively, relative to the remote's root) -> its size."""
        ...

    def read(self, name: str) -> bytes:
        """The object's bytes; ObjectGone if it does not exist (any more)."""
        ...

    def write_once(self, name: str, data: bytes) -> bool:
        """Write `name` whole, unless it exists already (then False, and nothing is written)."""
        ...

    def delete(self, name: str) -> None:
        """Only ever called for the caller's own objects (compaction)."""
        ...


class FolderRemote:
    """A directory: a mounted disk, a NAS share, a Dropbox folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.where = str(self.root)

    def list(self, prefix: str) -> dict[str, int]:
        base = self.root / prefix
        found: dict[str, int] = {}
        if not base.is_dir():
            return found
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                full = Path(dirpath) / f
                try:
                    found[full.relative_to(self.root).as_posix()] = full.stat().st_size
                except FileNotFoundError:
                    continue
        return found

    def read(self, name: str) -> bytes:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            raise ObjectGone(name, self.where) from None
        except OSError as e:
            raise RemoteError(f"cannot read {name} from the remote {self.where}: {e.strerror or e}; check the "
                              "folder is mounted and readable, then sync again") from e

    def write_once(self, name: str, data: bytes) -> bool:
        path = self.root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if the name exists: never replaces another's object
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(path.parent)
            return True
        except OSError as e:
            raise RemoteError(f"cannot write {name} to the remote {self.where}: {e.strerror or e}; check space "
                              "and permissions there, then sync again (nothing half-written is left)") from e

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class RcloneRemote:
    """Any rclone remote (`s3:bucket/memfs`, `b2:…`, `sftp-host:path`), driven through the rclone binary."""

    FLAGS = ("--contimeout", "15s", "--timeout", "120s", "--retries", "2", "--low-level-retries", "3")

    def __init__(self, dest: str, *, binary: str = "rclone", config: Path | None = None):
        self.dest = dest.rstrip("/") if not dest.endswith(":") else dest
        self.where = dest
        self.binary = binary
        self.config = config

    def _path(self, name: str) -> str:
        return f"{self.dest}{name}" if self.dest.endswith(":") else f"{self.dest}/{name}"

    def _run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        exe = shutil.which(self.binary)
        if exe is None:
            raise RemoteError(f"rclone is not installed (looked for {self.binary!r}); install Debian's rclone "
                              "package (apt-get install rclone) or sync to a folder")
        cmd = [exe, *(["--config", str(self.config)] if self.config else []), *self.FLAGS, *args]
        return subprocess.run(cmd, input=input, capture_output=True)

    def _fail(self, what: str, r: subprocess.CompletedProcess) -> RemoteError:
        lines = [ln for ln in r.stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"rclone exited {r.returncode}"
        return RemoteError(f"{what} on the remote {self.where} failed: {last[:300]}; check the remote with "
                           "`rclone lsf` and sync again")

    def list(self, prefix: str) -> dict[str, int]:
        r = self._run("lsf", "-R", "--files-only", "--format", "ps", "--separator", "\t", self._path(prefix))
        if r.returncode != 0:
            if b"directory not found" in r.stderr.lower() or b"not found" in r.stderr.lower():
                return {}
            raise self._fail(f"listing {prefix}", r)
        found = {}
        for line in r.stdout.decode().splitlines():
            name, _, size = line.rpartition("\t")
            if name:
                found[f"{prefix.rstrip('/')}/{name}" if prefix else name] = int(size or 0)
        return found

    def read(self, name: str) -> bytes:
        r = self._run("cat", self._path(name))
        if r.returncode != 0:
            if b"not found" in r.stderr.lower():
                raise ObjectGone(name, self.where)
            raise self._fail(f"reading {name}", r)
        return r.stdout

    def write_once(self, name: str, data: bytes) -> bool:
        parent, _, base = name.rpartition("/")
        if self.list(parent).get(name) is not None:
            return False
        with tempfile.TemporaryDirectory(prefix="memfs-sync-") as d:
            local = Path(d) / base
            local.write_bytes(data)
            tmp = f"{TEMP_PREFIX}{secrets.token_hex(8)}-{base}"
            r = self._run("copyto", str(local), self._path(tmp))
            if r.returncode != 0:
                raise self._fail(f"uploading {name}", r)
            r = self._run("moveto", self._path(tmp), self._path(name))
            if r.returncode != 0:
                raise self._fail(f"moving {name} into place", r)
        return True

    def delete(self, name: str) -> None:
        r = self._run("deletefile", self._path(name))
        if r.returncode != 0 and b"not found" not in r.stderr.lower():
            raise self._fail(f"deleting {name}", r)


def open_remote(dest: str, *, rclone_config: Path | None = None) -> Remote:
    """A folder for a path (`/mnt/nas/memfs`, `./x`, `C:\\x`), else an rclone remote (`name:path`)."""
    if not dest:
        raise RemoteError("no remote given; name a folder or an rclone remote (`memfs sync s3:bucket/memfs`)")
    head = dest.split("/", 1)[0]
    if ":" in head and not (len(head) >= 2 and head[1] == ":" and len(head.split(":")[0]) == 1):
        return RcloneRemote(dest, config=rclone_config)
    return FolderRemote(Path(dest).expanduser())
