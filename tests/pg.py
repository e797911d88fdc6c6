"""A real, throwaway PostgreSQL server for the tests (and the benchmarks) of ``PostgresStore``.

Theory of operation: ``start_server`` finds Debian's server binaries (``initdb`` and ``pg_ctl``
on PATH, else the newest ``/usr/lib/postgresql/*/bin``), makes a cluster in a fresh temporary
directory and starts it listening only on a Unix socket in that directory (no TCP port, so
servers never collide with each other or with a system one). PostgreSQL refuses to run as root:
as root, the directory is handed to an unprivileged user (``postgres`` if there is one, else
``nobody``) and the server's commands run as that user. ``stop`` stops the server at once
(``pg_ctl -m immediate``) and removes the directory. A missing server is an error saying what to
install, never a skip: the store's tests must not pass quietly on a machine without it.

bench/ reuses ``start_server`` (with ``fsync=True``, the default: numbers measured without it
would be meaningless); the tests turn fsync off.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "PostgresStore's tests need a PostgreSQL server (initdb and pg_ctl, on PATH or in "
    "/usr/lib/postgresql/*/bin): install Debian's `postgresql` package "
    "(apt-get install --no-install-recommends postgresql)"
)


class ServerNotFound(RuntimeError):
    """Raised when no PostgreSQL server binaries are installed."""


def server_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: the one on PATH, else Debian's newest."""
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        folder = Path(on_path).resolve().parent
        if (folder / "initdb").exists():
            return folder
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    found = [f for f in found if (f / "initdb").exists()]
    if not found:
        raise ServerNotFound(INSTALL_HINT)
    return max(found, key=lambda f: _version(f.parent.name))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in text.split("."))


def _unprivileged() -> dict[str, Any]:
    """``subprocess`` arguments that run a command as a user PostgreSQL accepts (not root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise ServerNotFound("running as root, and there is neither a `postgres` nor a `nobody` user")


def _base(other_user: bool) -> str:
    """Where the server's folder goes: the temporary folder, unless its path is too long for a
    Unix socket (107 bytes) or, for a server run as another user, a folder above it is closed
    to others (as pytest's are, and a root's TMPDIR often is); then /tmp."""
    base = Path(tempfile.gettempdir()).resolve()
    if len(str(base)) > 60:
        return "/tmp"
    if other_user and any(not p.stat().st_mode & 0o001 for p in [base, *base.parents]):
        return "/tmp"
    return str(base)


def start_server(*, fsync: bool = True) -> tuple[str, Callable[[], None]]:
    """Start a fresh server; return its DSN (superuser ``postgres``, database ``postgres``) and
    a function that stops it and removes its files.

    Args:
        fsync: keep PostgreSQL's fsync on (the default; benchmarks need it). Tests may turn
            it off (with full_page_writes and synchronous_commit): durability is no concern
            of theirs, and creating databases and committing get much cheaper.

    Raises:
        ServerNotFound: the server binaries are not installed.
        RuntimeError: initdb or pg_ctl failed (the message carries their output).
    """
    bin_dir = server_binaries()
    as_user = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="engine-pg-", dir=_base(bool(as_user))))
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data, log = root / "data", root / "server.log"
    options = (
        f"-k {shlex.quote(str(root))} -c listen_addresses='' -c fsync={'on' if fsync else 'off'}"
    )
    if not fsync:
        options += " -c full_page_writes=off -c synchronous_commit=off"

    def run(*args: str | Path) -> None:
        done = subprocess.run(
            [str(a) for a in args],
            cwd=root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            **as_user,
        )
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{Path(str(args[0])).name} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}{tail}"
            )

    def stop() -> None:
        try:
            if (data / "postmaster.pid").exists():
                run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    try:
        run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync")  # fmt: skip
        run(bin_dir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "start")
    except BaseException:
        stop()
        raise
    host = str(root).replace("\\", "\\\\").replace("'", "\\'")
    return f"host='{host}' user=postgres dbname=postgres", stop
