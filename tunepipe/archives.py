"""Safe extraction of a downloaded archive (.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) and the size and
file-count limits every download obeys.

An archive from the internet is untrusted: a member may name an absolute path or climb out with `..`, a link
may point outside the target folder, and a small file may unpack into terabytes. Each of these is refused with
the member's name before anything is written, and the limits are checked again while bytes are written (a
header can lie about sizes).
"""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from tunepipe.errors import StageError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
DEFAULT_LIMITS = {"max_bytes": 20 * 2**30, "max_files": 200_000}  # far above any dataset here, far below a bomb


class Budget:
    """Counts files and bytes against the limits; the first overrun stops the stage with the limit's name."""

    def __init__(self, where: str, max_bytes: int, max_files: int):
        self.where, self.max_bytes, self.max_files = where, int(max_bytes), int(max_files)
        self.bytes = self.files = 0

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise StageError(f"{self.where}: more than max_files={self.max_files} files (at {name}); raise the "
                             "limit in params.yaml if this dataset really is that large")

    def add_bytes(self, count: int, name: str) -> None:
        self.bytes += count
        self.check_declared(self.bytes, name)

    def check_declared(self, size: int, name: str) -> None:
        """Refuse a size (a running total, or what a server announces) above max_bytes."""
        if size > self.max_bytes:
            raise StageError(f"{self.where}: more than max_bytes={self.max_bytes} bytes (at {name}); raise the "
                             "limit in params.yaml if this dataset really is that large")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_member(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise StageError(f"{archive.name}: member '{name}' points outside the target folder; refusing the archive")
    return path


def copy_stream(source, target: Path, budget: Budget, name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        for block in iter(lambda: source.read(1 << 20), b""):
            budget.add_bytes(len(block), name)
            handle.write(block)


def extract(archive: Path, out: Path, budget: Budget) -> int:
    """Unpack `archive` into `out` (regular files and folders only); returns the number of files."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.is_dir()]
            for member in members:  # refuse before writing anything
                safe_member(member.filename, archive)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise StageError(f"{archive.name}: member '{member.filename}' is a symbolic link; refusing the archive")
            for member in members:
                budget.add_file(member.filename)
                with bundle.open(member) as source:
                    copy_stream(source, out / safe_member(member.filename, archive), budget, member.filename)
        return len(members)
    with tarfile.open(archive) as bundle:
        members = bundle.getmembers()
        for member in members:
            safe_member(member.name, archive)
            if not (member.isfile() or member.isdir()):
                kind = "link" if member.issym() or member.islnk() else "device or special file"
                raise StageError(f"{archive.name}: member '{member.name}' is a {kind}; refusing the archive")
        files = [m for m in members if m.isfile()]
        for member in files:
            budget.add_file(member.name)
            source = bundle.extractfile(member)
            copy_stream(source, out / safe_member(member.name, archive), budget, member.name)
    return len(files)


def unpack_in_place(out: Path, budget: Budget) -> int:
    """Replace every archive directly in `out` by its contents (the archive itself is not kept)."""
    count = 0
    for archive in sorted(p for p in out.iterdir() if p.is_file() and is_archive(p)):
        staging = out / f".{archive.name}.unpacked"
        try:
            count += extract(archive, staging, budget)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise StageError(f"{archive.name}: not a readable archive ({type(err).__name__}: {err})") from None
        archive.unlink()
        for item in staging.iterdir():
            shutil.move(str(item), out / item.name)
        staging.rmdir()
    return count
