"""Redis deployments a test starts and stops itself: one server, a Cluster, a Sentinel group.

Every server is Debian's ``redis-server`` (``redis-sentinel`` for the sentinels), run in the
foreground as a child of the test process on spare random loopback ports, with its files in
a temporary folder. Each child gets ``PR_SET_PDEATHSIG``, so even a test process that is
killed leaves no server behind; ``stop()`` shuts them down and removes the folder, and the
``with`` form calls it on any failure.

* :class:`LocalRedis`: one server (``redis://``);
* :class:`LocalCluster`: three masters, no replicas, slots spread by
  ``redis-cli --cluster create`` (``redis+cluster://h1:p1,h2:p2,h3:p3/``);
* :class:`LocalSentinel`: a primary, one replica and three sentinels watching them
  (``redis+sentinel://h1:p1,h2:p2,h3:p3/SERVICE/0``), with :meth:`LocalSentinel.kill_primary`
  and :meth:`LocalSentinel.wait_failover` for failover tests.

Each takes ``tls=True``: then every server (and sentinel) listens for TLS only, with a
certificate for 127.0.0.1 signed by a CA made for it (:func:`make_certificates`, openssl),
replicas and the cluster bus speak TLS too, and :attr:`Topology.url` is the ``rediss…://``
URL a site would configure, with the CA as ``ssl_ca_certs``. :func:`redis_tls_missing`
says whether the installed ``redis-server`` was built with TLS.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

#: Ports the servers are picked from at random (a cluster node also needs port + 10000).
PORT_RANGE = range(20000, 29000)
TOPOLOGIES = ("single", "cluster", "sentinel")
SERVICE = "cbfleet"
_PR_SET_PDEATHSIG = 1


def binaries_missing(*names: str) -> list[str]:
    """The programs among ``names`` that are not on PATH."""
    return [name for name in names if shutil.which(name) is None]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def spare_port(bus: bool = False, host: str = "127.0.0.1") -> int:
    """A free port chosen at random (with ``bus``: port + 10000 is free too)."""
    for _ in range(200):
        port = random.choice(PORT_RANGE)
        if _port_free(port, host) and (not bus or _port_free(port + 10000, host)):
            return port
    raise RuntimeError(f"no free port found in {PORT_RANGE}")


def redis_tls_missing() -> str | None:
    """None when ``redis-server`` speaks TLS, else why not (for a skip message).

    A server built with TLS, asked for a ``--tls-port`` without a certificate, refuses to
    start with "No tls-cert-file configured!"; one built without TLS rejects the option
    (or ignores it and starts on its plain port, which ``--port 0`` turns off)."""
    if binaries_missing("redis-server"):
        return "redis-server not installed (apt-get install redis-server)"
    command = [
        "redis-server", "--port", "0", "--tls-port", str(spare_port()), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--daemonize", "no",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(), preexec_fn=_die_with_parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "redis-server ignores --tls-port (built without TLS)"
    said = done.stdout + done.stderr
    if "No tls-cert-file configured" in said:
        return None
    lines = [line for line in said.splitlines() if line.strip()]
    return "redis-server has no TLS: " + (lines[-1] if lines else f"exit {done.returncode}")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGKILL it when the test process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def make_certificates(folder: Path) -> dict[str, str]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (``openssl``), as the
    ``--tls-*`` arguments of a server: ``{"ca": …, "cert": …, "key": …}`` (file paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: str(folder / f"{name}.pem") for name in ("ca", "ca-key", "cert", "key")}
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    run([
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=circuitbreaker-app test CA", "-keyout", paths["ca-key"], "-out", paths["ca"],
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])  # fmt: skip
    request = str(folder / "server.csr")
    run([
        "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", paths["key"], "-out", request,
    ])  # fmt: skip
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    run([
        "openssl", "x509", "-req", "-in", request, "-CA", paths["ca"], "-CAkey", paths["ca-key"],
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", paths["cert"],
    ])  # fmt: skip
    return paths


def _quoted(text: str) -> str:
    """``text`` as one argument of a redis.conf line."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; raise TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


class Server:
    """One ``redis-server`` (or ``redis-sentinel``) child process on ``port``."""

    def __init__(
        self,
        folder: Path,
        port: int,
        args: list[str],
        program: str = "redis-server",
        password: str | None = None,
        tls: dict[str, str] | None = None,
    ):
        self.folder = folder
        self.port = port
        self.program = program
        self.args = args
        self.password = password  # what its clients must give (``requirepass``)
        #: :func:`make_certificates`' files: the server speaks only TLS, on ``port``.
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        command = [self.program]
        if self.program == "redis-sentinel":
            command.append(str(self.folder / "sentinel.conf"))
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:  # TLS only, to clients, replicas and sentinels alike
            command += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.tls["cert"], "--tls-key-file", self.tls["key"],
                "--tls-ca-cert-file", self.tls["ca"], "--tls-auth-clients", "no",
                "--tls-replication", "yes",
            ]  # fmt: skip
        command += [
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--logfile", str(self.folder / "server.log"),
            "--daemonize", "no",
            *self.args,
        ]  # fmt: skip
        if self.program == "redis-server":
            # No files; a replica is synced at once (the default waits 5 s for more to
            # come), and SIGTERM does not wait for replicas to catch up (10 s at most).
            command += [
                "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0", "--shutdown-timeout", "0",
            ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_until(self.ping, 10, f"{self.program} on port {self.port}")

    def client(self, **kwargs: Any) -> redis.Redis:
        if self.tls is not None:  # its certificate is good for a client too (clientAuth)
            kwargs = {
                "ssl": True,
                "ssl_ca_certs": self.tls["ca"],
                "ssl_certfile": self.tls["cert"],
                "ssl_keyfile": self.tls["key"],
                **kwargs,
            }
        return redis.Redis(
            port=self.port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
            **kwargs,
        )

    def ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.program} on port {self.port} exited:\n{log}")
        client = self.client()
        try:
            return bool(client.ping())
        finally:
            client.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server vanishes as a crashed host would."""
        if self.alive:
            self.process.kill()  # type: ignore[union-attr]
            self.process.wait(10)  # type: ignore[union-attr]

    def pause(self, seconds: float) -> threading.Thread:
        """SIGSTOP now, SIGCONT ``seconds`` later (from a thread; returned): the server
        keeps its connections but answers nothing meanwhile, as a starved or swapping
        host's would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

        def resume() -> None:
            time.sleep(seconds)
            if self.alive:
                self.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

        thread = threading.Thread(target=resume, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        if not self.alive:
            return
        self.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]  # if paused
        self.process.terminate()  # type: ignore[union-attr]  # redis shuts down on SIGTERM
        try:
            self.process.wait(10)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self.kill()


class Topology:
    """Servers started together and stopped together (also as a context manager).

    ``tls``: :func:`make_certificates`' files (``ca``, ``cert``, ``key``) when the servers
    speak only TLS, else None."""

    kind = ""
    url = ""

    def __init__(self, tls: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"cb-{self.kind}-"))
        self.servers: list[Server] = []
        try:
            self.tls = make_certificates(self.folder / "tls") if tls else None
        except BaseException:
            self.stop()
            raise

    def tls_query(self) -> str:
        """``?ssl_ca_certs=…`` (the CA the servers' certificates are signed by) or ""."""
        return f"?ssl_ca_certs={quote(self.tls['ca'], safe='/')}" if self.tls else ""

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError("subclasses of Topology must provide start()")

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def flush(self) -> None:
        """Empty every master (between tests)."""
        raise NotImplementedError("subclasses of Topology must provide flush()")


class LocalRedis(Topology):
    """One server; ``bind`` adds addresses it listens on besides 127.0.0.1.

    ``client_certificates`` (with ``tls``): the server accepts only clients with a
    certificate of its CA (``tls-auth-clients yes``); :attr:`url` gives the server's own
    (good for a client too) as ``ssl_certfile``/``ssl_keyfile``."""

    kind = "single"

    def __init__(
        self, bind: tuple[str, ...] = (), tls: bool = False, client_certificates: bool = False
    ) -> None:
        super().__init__(tls)
        self.bind = bind
        self.port = spare_port()
        # Clients on another address are refused in protected mode (no password set).
        args = ["--bind", " ".join(("127.0.0.1", *bind)), "--protected-mode", "no"] if bind else []
        self.client_certificates = client_certificates and self.tls is not None
        if self.client_certificates:
            args += ["--tls-auth-clients", "yes"]  # after Server's "no": the last one counts
        self.server = Server(self.folder, self.port, args, tls=self.tls)
        self.servers.append(self.server)
        self.url = self.url_on("127.0.0.1")

    def url_on(self, host: str) -> str:
        scheme = "rediss" if self.tls else "redis"
        query = self.tls_query()
        if self.client_certificates:
            assert self.tls is not None
            query += f"&ssl_certfile={quote(self.tls['cert'], safe='/')}"
            query += f"&ssl_keyfile={quote(self.tls['key'], safe='/')}"
        return f"{scheme}://{host}:{self.port}/0{query}"

    def start(self) -> None:
        self.server.start()

    def flush(self) -> None:
        client = self.server.client()
        client.flushall()
        client.close()


class LocalCluster(Topology):
    """Three cluster masters holding all 16,384 slots, no replicas."""

    kind = "cluster"

    def __init__(self, masters: int = 3, tls: bool = False) -> None:
        super().__init__(tls)
        for index in range(masters):
            port = spare_port(bus=True)
            self.servers.append(
                Server(
                    self.folder / f"node{index}",
                    port,
                    [
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000",
                        # The bus (port + 10000) speaks TLS too, and the nodes announce
                        # their TLS port in the slot map.
                        *(["--tls-cluster", "yes"] if self.tls else []),
                    ],
                    tls=self.tls,
                )
            )  # fmt: skip
        hosts = ",".join(f"127.0.0.1:{server.port}" for server in self.servers)
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        self.url = f"{scheme}://{hosts}/{self.tls_query()}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        tls = ["--tls", "--cacert", self.tls["ca"]] if self.tls else []
        subprocess.run(
            [
                "redis-cli", *tls, "--cluster", "create",
                *(f"127.0.0.1:{server.port}" for server in self.servers),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        wait_until(self._ready, 20, "cluster_state:ok on every node")

    def _ready(self) -> bool:
        for server in self.servers:
            client = server.client()
            try:
                info = client.cluster("info")
            finally:
                client.close()
            if info.get("cluster_state") != "ok":
                return False
        return True

    def flush(self) -> None:
        for server in self.servers:
            client = server.client()
            client.flushall()
            client.close()


class LocalSentinel(Topology):
    """A primary, one replica, and three sentinels (quorum 2) watching ``SERVICE``.

    ``password``: the primary and the replica need it (``requirepass``, ``masterauth``; the
    sentinels know it as ``auth-pass``); ``sentinel_password``: the sentinels need their
    own. ``tls``: every server and sentinel speaks only TLS, with a certificate of a CA
    made for the group (:func:`make_certificates`). :attr:`url` carries all of it, as
    ``REDIS_URL`` does (``redis_url.py``).
    """

    kind = "sentinel"
    #: How long a sentinel waits before it calls the primary down (ms), and failover pace.
    DOWN_AFTER_MS = 500
    FAILOVER_TIMEOUT_MS = 2000

    def __init__(
        self,
        sentinels: int = 3,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: bool = False,
    ) -> None:
        super().__init__(tls)
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        primary_port = spare_port()
        self.primary = Server(
            self.folder / "primary", primary_port, auth, password=password, tls=self.tls
        )
        replica_port = spare_port()
        self.replica = Server(
            self.folder / "replica",
            replica_port,
            [*auth, "--replicaof", "127.0.0.1", str(primary_port)],
            password=password,
            tls=self.tls,
        )
        self.sentinels = []
        for index in range(sentinels):
            folder = self.folder / f"sentinel{index}"
            folder.mkdir(parents=True)
            (folder / "sentinel.conf").write_text(
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {self.FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                + (f"sentinel auth-pass {SERVICE} {_quoted(password)}\n" if password else "")
                # Sentinels that need a password use it with each other too.
                + (f"requirepass {_quoted(sentinel_password)}\n"
                   f"sentinel sentinel-pass {_quoted(sentinel_password)}\n"
                   if sentinel_password else "")
            )  # fmt: skip
            self.sentinels.append(
                Server(
                    folder,
                    spare_port(),
                    [],
                    program="redis-sentinel",
                    password=sentinel_password,
                    tls=self.tls,
                )
            )
        self.servers = [self.primary, self.replica, *self.sentinels]
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        userinfo = f":{quote(password, safe='')}@" if password else ""
        options = []
        if sentinel_password:
            options.append(f"sentinel_password={quote(sentinel_password, safe='')}")
        if self.tls:
            options.append(self.tls_query()[1:])
        query = "?" + "&".join(options) if options else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        self.url = f"{scheme}://{userinfo}{hosts}/{SERVICE}/0{query}"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_until(self._replica_synced, 20, "replica in sync with the primary")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_watch, 20, "every sentinel watches the primary")

    def _sentinels_watch(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(SERVICE)
            finally:
                client.close()
            if int(state["port"]) != self.primary.port:
                return False
        return True

    def wait_agreed(self) -> None:
        """Until every sentinel knows the replica and its two peers (they find each other
        through hello messages every 2 s), as a failover needs."""
        wait_until(self._sentinels_agree, 20, "every sentinel sees the replica and its peers")

    def _replica_synced(self) -> bool:
        client = self.replica.client()
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(SERVICE)
            finally:
                client.close()
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port(self) -> int:
        """The port the sentinels currently name as primary."""
        client = self.sentinels[0].client()
        try:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            client.close()
        return int(port)

    def current_primary(self) -> Server:
        port = self.master_port()
        return next(server for server in (self.primary, self.replica) if server.port == port)

    def kill_primary(self) -> Server:
        """SIGKILL the current primary; returns the server that was killed."""
        self.wait_agreed()
        server = self.current_primary()
        server.kill()
        return server

    def wait_failover(self, old: Server, timeout: float = 20) -> Server:
        """Until every sentinel names another server as primary and it accepts writes."""

        def promoted() -> bool:
            for sentinel in self.sentinels:
                client = sentinel.client()
                try:
                    _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                finally:
                    client.close()
                if int(port) == old.port:
                    return False
            client = self.current_primary().client()
            try:
                return client.info("replication").get("role") == "master"
            finally:
                client.close()

        wait_until(promoted, timeout, f"failover away from port {old.port}")
        return self.current_primary()

    def flush(self) -> None:
        client = self.current_primary().client()
        client.flushall()
        client.close()


def start(kind: str, tls: bool = False) -> Topology:
    """A started topology of ``kind`` (one of :data:`TOPOLOGIES`); TLS only with ``tls``."""
    make = {"single": LocalRedis, "cluster": LocalCluster, "sentinel": LocalSentinel}[kind]
    return make(tls=tls).__enter__()


@contextlib.contextmanager
def running(kind: str, tls: bool = False) -> Iterator[Topology]:
    """``with running("cluster") as cluster: ...`` — stopped on the way out, whatever happens."""
    topology = start(kind, tls)
    try:
        yield topology
    finally:
        topology.stop()


__all__ = [
    "LocalCluster",
    "LocalRedis",
    "LocalSentinel",
    "SERVICE",
    "TOPOLOGIES",
    "Topology",
    "binaries_missing",
    "make_certificates",
    "redis_tls_missing",
    "running",
    "spare_port",
    "start",
]
