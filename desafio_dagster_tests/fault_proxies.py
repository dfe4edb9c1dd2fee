"""Fault-injecting proxies for the tests (no toxiproxy here): an HTTP one in front of an S3 server, a TCP one in
front of Postgres. Each decides its faults from the names in the traffic (a request's key, a connection's
application_name), never from timing, so a test that uses one injects the same faults on every run."""

import collections
import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

# --- HTTP, in front of an S3 server ----------------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
               "content-length", "expect"}
_ERRORS = {"503": (503, "SlowDown", "Please reduce your request rate."),
           "500": (500, "InternalError", "We encountered an internal error. Please try again.")}


@dataclass(frozen=True)
class S3Call:
    method: str
    key: str  # the request's path without its query: /bucket/key
    query: str
    attempt: int  # 1 for a request's first attempt, 2 for the SDK's first retry of it, …
    seen: int  # how many requests of this method, path and query came so far, this one included

    @property
    def name(self) -> str:
        """The object's name (the key's last part), or the bucket's for a listing: the same on every run,
        where a version's name is not."""
        return self.key.rstrip("/").rsplit("/", 1)[-1]


# A fault plan: the fault for a call, or None to forward it untouched. Faults: a key of _ERRORS (S3's error
# answer), "reset" (before the server sees the request), "lost" (the server applies it, then the answer is lost to
# a reset), "cut" (the answer reset halfway through its body), "slow" (answered after HttpFaultProxy.delay).
FaultPlan = Callable[[S3Call], "str | None"]


def always(fault: str, of: Callable[[S3Call], bool]) -> FaultPlan:
    """fault on every attempt of the calls `of` selects: a permanent failure."""
    return lambda call: fault if of(call) else None


class HttpFaultProxy:
    """An HTTP proxy in front of upstream (an S3 server's URL) that injects plan's faults: S3's error answers
    (503 SlowDown, 500 InternalError), a reset before any answer, an answer cut off by a reset halfway through
    its body, a slow answer (`delay` seconds). Every call and every injected fault is counted."""

    def __init__(self, upstream: str, plan: FaultPlan, delay: float = 1.0):
        self.upstream, self.plan, self.delay = urlsplit(upstream).netloc, plan, delay
        self.calls: collections.Counter = collections.Counter()  # (method, path and query) -> requests seen
        self.injected: collections.Counter = collections.Counter()  # fault -> times injected
        self.faulted: list[tuple[float, str, S3Call]] = []  # (when, fault, call)
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "HttpFaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join()

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()  # whole, de-chunked; after an `Expect: 100-continue` was answered
        query = environ.get("QUERY_STRING", "")
        with self._lock:
            self.calls[(request.method, request.path, query)] += 1
            # The SDKs number their attempts of one request (amz-sdk-request: attempt=N; max=M); else: the calls so far.
            seen = self.calls[(request.method, request.path, query)]
            numbered = re.search(r"attempt=(\d+)", request.headers.get("amz-sdk-request", ""))
            call = S3Call(request.method, request.path, query, int(numbered.group(1)) if numbered else seen, seen)
            fault = self.plan(call)
            if fault:
                self.injected[fault] += 1
                self.faulted.append((time.monotonic(), fault, call))
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            error = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
                     f"<Resource>{request.path}</Resource></Error>").encode()
            start_response(f"{status} {code}", [("Content-Type", "application/xml"), ("Content-Length", str(len(error)))])
            return [error]
        if fault == "reset":
            _reset(environ["werkzeug.socket"])
        if fault == "slow":
            time.sleep(self.delay)
        status, headers, answer = self._forward(request, body, query)
        if fault == "lost":
            _reset(environ["werkzeug.socket"])
        if fault == "cut" and len(answer) > 1:
            sock = environ["werkzeug.socket"]
            head = "".join(f"{name}: {value}\r\n" for name, value in headers)
            sock.sendall(f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(answer)}\r\n\r\n".encode() + answer[: len(answer) // 2])
            _reset(sock)
        start_response(status, headers + [("Content-Length", str(len(answer)))])
        return [answer]

    def _forward(self, request: Request, body: bytes, query: str) -> tuple[str, list[tuple[str, str]], bytes]:
        connection = HTTPConnection(self.upstream, timeout=60)
        try:
            headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP}
            connection.request(request.method, request.path + (f"?{query}" if query else ""), body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            headers = [(name, value) for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP]
            return f"{response.status} {response.reason}", headers, answer
        finally:
            connection.close()


def _reset(sock: socket.socket) -> None:
    """Drop the connection at once (the client reads its end), then a reset when the server's handler, which
    gives up on it quietly, closes it (its files hold the socket open until then)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionResetError("the fault proxy dropped the connection")


# --- TCP, in front of Postgres ---------------------------------------------------------------------------


@dataclass
class PgFault:
    """What the TCP proxy does to the connections whose application_name starts with `applications`:
    "reset" after `after_bytes` bytes from the server, "stall" (stop passing bytes either way, keep the connection
    open) after `after_bytes`, or "refuse" (close it at once). `times` connections get it (0: all of them)."""

    kind: str
    applications: str = "desafio_dagster export task"
    after_bytes: int = 64 * 1024
    times: int = 1
    hits: list[str] = field(default_factory=list)  # the application names of the connections it hit


class TcpFaultProxy:
    """A TCP proxy on loopback in front of the Postgres server of `url` (over TCP or its Unix socket) that reads
    each connection's startup packet and applies `fault` to those it names; other connections pass untouched.
    Clients reach it at `url` (its URL, without TLS or GSS encryption, so that the startup packet is readable)."""

    def __init__(self, server_url: str, fault: PgFault | None = None):
        params = conninfo_to_dict(server_url)
        host, port = params.get("host") or "127.0.0.1", int(params.get("port") or 5432)
        self.upstream = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self.fault = fault
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = make_conninfo(server_url, host="127.0.0.1", port=self.port, sslmode="disable", gssencmode="disable")
        self._open: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "TcpFaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not, on Linux)
        self._listener.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _claim(self, application: str) -> PgFault | None:
        fault = self.fault
        with self._lock:
            if fault and application.startswith(fault.applications) and (not fault.times or len(fault.hits) < fault.times):
                fault.hits.append(application)
                return fault
        return None

    def _serve(self, client: socket.socket) -> None:
        self._open.append(client)
        with contextlib.suppress(OSError):
            startup = _startup_packet(client)
            fault = self._claim(_parameters(startup).get("application_name", ""))
            if fault and fault.kind == "refuse":
                client.close()
                return
            if isinstance(self.upstream, str):
                server = socket.socket(socket.AF_UNIX)
                server.connect(self.upstream)
            else:
                server = socket.create_connection(self.upstream)
            self._open.append(server)
            server.sendall(startup)
            limit = fault.after_bytes if fault else None
            threading.Thread(target=_pipe, args=(client, server, None, None), daemon=True).start()
            _pipe(server, client, limit, fault.kind if fault else None)


def _startup_packet(sock: socket.socket) -> bytes:
    head = _read_exactly(sock, 4)
    return head + _read_exactly(sock, struct.unpack("!i", head)[0] - 4)


def _parameters(packet: bytes) -> dict[str, str]:
    fields = packet[8:].split(b"\0")
    return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2) if fields[i]}


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _pipe(source: socket.socket, target: socket.socket, limit: int | None, fault: str | None) -> None:
    """Copy source to target; once `limit` bytes passed, apply fault: reset both sides, or stall (stop copying,
    keep both open until the proxy closes)."""
    passed = 0
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            if limit is not None and passed + len(chunk) > limit:
                target.sendall(chunk[: limit - passed])
                if fault == "stall":
                    return
                for sock in (target, source):  # shut down first: a close alone leaves the other copy's recv
                    with contextlib.suppress(OSError):  # holding the socket open, and nothing would reach the peers
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                return
            target.sendall(chunk)
            passed += len(chunk)
        for sock in (target, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
