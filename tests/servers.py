"""Real servers for tests: a standalone ``redis-server`` and a 3-master Redis Cluster on loopback.

Each runs in its own temporary directory on free ports, without persistence
(``--save "" --appendonly no``), and is stopped by :meth:`stop` (the fixtures in
``conftest.py`` do that at session end). ``redis-server`` comes from the Debian
package (``apt-get install -y redis-server``).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A free loopback port; for a cluster node also its bus port (+10000), so at most 55535."""
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(200):
        port = random.randint(20000, 30000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait_for_ping(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer PING (exit code {proc.poll()})")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:<free port>."""

    def __init__(self, *extra: str, port: Optional[int] = None, workdir: Optional[Path] = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.port = port or free_port(cluster="--cluster-enabled" in extra)
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="wxhelper-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.log), "--protected-mode", "no", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_ping(self.port, self.proc)
        except Exception as exc:
            code = self.proc.poll()
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"{exc}; exit code {code}; log:\n{log}") from exc

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A Redis Cluster of ``masters`` masters (no replicas) on loopback."""

    def __init__(self, masters: int = 3) -> None:
        if REDIS_CLI is None:
            raise RuntimeError("redis-cli is not installed (apt-get install -y redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="wxhelper-cluster-"))
        self.nodes: list[RedisServer] = []
        try:
            for i in range(masters):
                node_dir = self.dir / f"node{i}"
                self.nodes.append(RedisServer("--cluster-enabled", "yes",
                                              "--cluster-config-file", str(node_dir / "nodes.conf"),
                                              "--cluster-node-timeout", "2000", workdir=node_dir))
            subprocess.run(
                [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self._wait_ok()
        except Exception:
            self.stop()
            raise

    def _wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for node in self.nodes:
                out = subprocess.run([REDIS_CLI, "-p", str(node.port), "cluster", "info"],
                                     capture_output=True, text=True, timeout=10).stdout
                if "cluster_state:ok" not in out:
                    ok = False
            if ok:
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSentinel:
    """A master ``redis-server`` watched by one ``redis-server --sentinel`` (quorum 1) on loopback."""

    def __init__(self, master_name: str = "wxmaster") -> None:
        self.master = RedisServer()
        self.master_name = master_name
        self.dir = Path(tempfile.mkdtemp(prefix="wxhelper-sentinel-"))
        self.port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {master_name} 5000\n"
        )
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_ping(self.port, self.proc)
        except Exception:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.master_name}/0"

    def stop(self) -> None:
        stop_process(self.proc)
        self.master.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
