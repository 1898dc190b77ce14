#!/usr/bin/env python3
"""Parity of balancerd with the real haproxy, on the same traffic.

For each case: start name-stamping HTTP backends on 127.0.0.1, ask
`balancerd export-haproxy <options>` for the haproxy.cfg of that run, check it with
`haproxy -c -f`, start haproxy on it (`-db`, foreground, stopped by its pid) and balancerd
with the same options (`--quiet`; only the listen port differs: both run at once), send the
same client requests to both and compare what the clients saw. Writes PARITY.md at the
repository root (a table: case, haproxy, balancerd, verdict and why).

    Benchmarks/parity.py [--balancerd PATH] [--haproxy PATH] [--output FILE]

balancerd is `$BALANCERD_BIN`, else `.build/debug/balancerd` (build it first with
`swift build`). Exit status: 0 when every difference is an intended one, 1 otherwise.
"""

import argparse
import datetime
import os
import re
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Sections of PARITY.md below this line are written by the tests that check them (metrics,
# routing), not by this script: a new report keeps them as they are.
KEPT_MARKER = "<!-- parity.py keeps everything below this line: sections maintained by their tests -->"
# Health checks fast enough that a stopped server is noticed within a second.
CHECK = "check inter 200ms fall 1 rise 1"


# --- Backends -------------------------------------------------------------------------

class StampHandler(BaseHTTPRequestHandler):
    """Answers every request 200 with the server's name as the body (and X-Server)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                self.rfile.read(size + 2)
        length = self.headers.get("Content-Length")
        if length:
            self.rfile.read(int(length))

    def _answer(self):
        server = self.server
        try:
            self._read_body()
        except (ValueError, OSError):
            # A body the backend cannot frame: close without answering.
            self.close_connection = True
            return
        with server.lock:
            server.requests += 1
        body = server.name.encode()
        self.send_response(200)
        self.send_header("X-Server", server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _answer


class StampServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, name, port):
        self.name = name
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = set()
        super().__init__(("127.0.0.1", port), StampHandler)

    def process_request(self, request, client_address):
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        pass  # resets from the proxies (pooled connections closed) are normal here

    def shutdown_request(self, request):
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)


class Backend:
    """A stamp server that can be stopped (listener and every open connection, so neither a
    health check nor a pooled proxy connection reaches it) and started again on its port."""

    def __init__(self, name, port=0):
        self.name = name
        self.port = port
        self.server = None
        self.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        for _ in range(50):
            try:
                self.server = StampServer(self.name, self.port)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"backend {self.name} cannot bind 127.0.0.1:{self.port}")
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        if self.server is None:
            return
        server, self.server = self.server, None
        server.shutdown()
        server.server_close()
        with server.lock:
            open_connections = list(server.connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# --- The two daemons ------------------------------------------------------------------

class Haproxy:
    """Real haproxy in the foreground on `cfg_text`; stopped by its pid."""

    def __init__(self, binary, cfg_text, port, workdir, label):
        self.cfg = os.path.join(workdir, f"{label}.haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(cfg_text)
        check = subprocess.run([binary, "-c", "-f", self.cfg], capture_output=True, text=True, timeout=20)
        self.check_ok = check.returncode == 0
        self.check_output = (check.stdout + check.stderr).strip()
        self.log_path = os.path.join(workdir, f"{label}.haproxy.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "-f", self.cfg, "-db"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.port = port
        self.started = wait_for_port(port, self.proc)

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to this pid only
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class Balancerd:
    """balancerd --quiet with the run's options; its port is read from the startup line."""

    def __init__(self, binary, arguments, workdir, label):
        self.log_path = os.path.join(workdir, f"{label}.balancerd.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "--quiet"] + arguments, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.port = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = re.search(r"listening frontend=main addr=\S+:(\d+) ", self.output())
            if match:
                self.port = int(match.group(1))
                break
            time.sleep(0.05)

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


# --- Clients --------------------------------------------------------------------------

def parse_response(data):
    """(status, body, rest) of the first response in `data`, or None if incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body_end = end + 4 + length
    if len(data) < body_end:
        return None
    return status, data[end + 4:body_end].decode("latin-1"), data[body_end:]


def exchange(port, raw, timeout=3.0):
    """Sends `raw` on a new connection and reads until the first complete response (or
    close, or timeout). Returns the status (None for no response) and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parsed = parse_response(data)
            if parsed:
                return parsed[0], parsed[1]
            try:
                s.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        parsed = parse_response(data)
        if parsed:
            return parsed[0], parsed[1]
        match = re.match(rb"HTTP/1\.\d (\d{3})", data)
        return (int(match.group(1)) if match else None), ""


GET_CLOSE = b"GET / HTTP/1.1\r\nHost: parity.test\r\nConnection: close\r\n\r\n"


def names_new_connections(port, count):
    return [body if status == 200 else f"<{status}>" for status, body in (exchange(port, GET_CLOSE) for _ in range(count))]


def names_keep_alive(port, count, timeout=3.0):
    names = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = b""
        for _ in range(count):
            s.sendall(b"GET / HTTP/1.1\r\nHost: parity.test\r\n\r\n")
            while (parsed := parse_response(data)) is None:
                chunk = s.recv(65536)
                if not chunk:
                    names.append("<closed>")
                    return names
                data += chunk
            status, body, data = parsed
            names.append(body if status == 200 else f"<{status}>")
    return names


# --- Comparisons ----------------------------------------------------------------------

def cycle_of(names, size):
    """The cycle `names` repeats (its first `size` names), or None if it is not a rotation."""
    cycle = names[:size]
    if len(set(cycle)) != size or any(n != cycle[i % size] for i, n in enumerate(names)):
        return None
    return cycle


def same_cycle(a, b):
    return a is not None and b is not None and len(a) == len(b) and any(a == b[i:] + b[:i] for i in range(len(b)))


def longest_run(names, name):
    best = current = 0
    for n in names:
        current = current + 1 if n == name else 0
        best = max(best, current)
    return best


def tally(names):
    counts = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(f"{k}={counts[k]}" for k in sorted(counts))


def show(names, limit=12):
    text = " ".join(names[:limit])
    return text + (" …" if len(names) > limit else "")


# --- The run --------------------------------------------------------------------------

class Parity:
    def __init__(self, balancerd, haproxy, workdir):
        self.balancerd = balancerd
        self.haproxy = haproxy
        self.workdir = workdir
        self.rows = []  # (case, haproxy, balancerd, verdict, why)
        self.findings = []  # problems with the exported file, in words
        self.unexpected = 0
        self.labels = 0
        # (export arguments, haproxy's alert) for flag runs haproxy would not start on

    def row(self, case, h, b, verdict, why=""):
        if verdict.startswith("DIFFERENT"):
            self.unexpected += 1
        self.rows.append((case, h, b, verdict, why))
        print(f"{verdict:<22} {case}: haproxy [{h}] balancerd [{b}] {why}", flush=True)

    def export(self, arguments):
        result = subprocess.run([self.balancerd, "export-haproxy"] + arguments, capture_output=True, text=True,
                                timeout=20)
        if result.returncode != 0:
            raise RuntimeError(f"balancerd export-haproxy {' '.join(arguments)} exited {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result.stdout

    def start_pair(self, case, flags=None, config=None):
        """Exports, checks and starts haproxy, then balancerd. `flags` is an argument list
        containing `--listen {listen}`; `config` a haproxy.cfg text containing `{bind}`.
        Returns (haproxy, balancerd) or None after recording why not."""
        self.labels += 1
        label = f"{self.labels:02d}"
        port = free_port()
        if flags is not None:
            h_args = [a.replace("{listen}", f"127.0.0.1:{port}") for a in flags]
            b_args = [a.replace("{listen}", "127.0.0.1:0") for a in flags]
        else:
            h_path = os.path.join(self.workdir, f"{label}.input-haproxy.cfg")
            b_path = os.path.join(self.workdir, f"{label}.input-balancerd.cfg")
            with open(h_path, "w") as f:
                f.write(config.replace("{bind}", f"127.0.0.1:{port}"))
            with open(b_path, "w") as f:
                f.write(config.replace("{bind}", "127.0.0.1:0"))
            h_args, b_args = ["--config", h_path], ["--config", b_path]
        try:
            cfg = self.export(h_args)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            self.row(case, "-", "-", "DIFFERENT (no export)", str(error).replace("\n", " "))
            return None
        haproxy = Haproxy(self.haproxy, cfg, port, self.workdir, label)
        if not haproxy.check_ok:
            self.findings.append(f"`haproxy -c -f` rejects the export of `{' '.join(h_args)}`:\n\n```\n"
                                 f"{haproxy.check_output}\n```")
        if not haproxy.started:
            self.row(case, "did not start", "-", "DIFFERENT (haproxy)", last_lines(haproxy.output(), 2))
            haproxy.stop()
            return None
        balancer = Balancerd(self.balancerd, b_args, self.workdir, label)
        if balancer.port is None:
            self.row(case, "-", "did not start", "DIFFERENT (balancerd)", last_lines(balancer.output(), 2))
            haproxy.stop()
            balancer.stop()
            return None
        return haproxy, balancer

    # Cases ------------------------------------------------------------------------------

    def rotation(self, mode, keep_alive):
        servers = [Backend(f"s{i}") for i in (1, 2, 3)]
        flags = ["--mode", mode, "--listen", "{listen}"] + [a for s in servers for a in ("--server", s.address)]
        how = "one keep-alive connection" if keep_alive else "new connection each"
        case = f"equal weights (flags), {mode}, 12 requests, {how}"
        pair = self.start_pair(case, flags=flags)
        if pair:
            haproxy, balancer = pair
            fetch = names_keep_alive if keep_alive else names_new_connections
            h, b = fetch(haproxy.port, 12), fetch(balancer.port, 12)
            hc, bc = cycle_of(h, 3), cycle_of(b, 3)
            if same_cycle(hc, bc):
                self.row(case, show(h), show(b), "same", "rotations of the same cycle")
            else:
                self.row(case, show(h), show(b), "DIFFERENT", f"haproxy cycle {hc}, balancerd cycle {bc}")
            haproxy.stop()
            balancer.stop()
        for s in servers:
            s.stop()

    def weights(self, weights, keep_alive=False):
        servers = [Backend(f"s{i + 1}") for i in range(len(weights))]
        flags = ["--mode", "http", "--listen", "{listen}"]
        for server, weight in zip(servers, weights):
            flags += ["--server", f"{server.address},weight={weight}"]
        ratio = ":".join(map(str, weights))
        case = f"weights {ratio} (flags), http, 100 requests, " + ("one keep-alive connection" if keep_alive else "new connection each")
        pair = self.start_pair(case, flags=flags)
        if pair:
            haproxy, balancer = pair
            fetch = names_keep_alive if keep_alive else names_new_connections
            h, b = fetch(haproxy.port, 100), fetch(balancer.port, 100)
            heavy = servers[-1].name
            hr, br = longest_run(h, heavy), longest_run(b, heavy)
            same_split = tally(h) == tally(b)
            detail = f"{tally(h)}; longest {heavy} run {hr}; first: {show(h, 10)}"
            bdetail = f"{tally(b)}; longest {heavy} run {br}; first: {show(b, 10)}"
            if same_split and br <= hr:
                self.row(case, detail, bdetail, "same", f"exact split; {heavy} bunched no more than in haproxy")
            else:
                self.row(case, detail, bdetail, "DIFFERENT", "split differs" if not same_split else
                         f"more bunching: balancerd sends {heavy} {br} times in a row, haproxy at most {hr}")
            haproxy.stop()
            balancer.stop()
        for s in servers:
            s.stop()

    def backup(self):
        primaries = [Backend("s1"), Backend("s2")]
        spare = Backend("b1")
        config = ("global\n"
                  "defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n"
                  "    retries 3\n    option redispatch\n\n"
                  "listen main\n    bind {bind}\n    balance roundrobin\n"
                  f"    server s1 {primaries[0].address} {CHECK}\n"
                  f"    server s2 {primaries[1].address} {CHECK}\n"
                  f"    server b1 {spare.address} backup {CHECK}\n")
        pair = self.start_pair("backup server", config=config)
        if pair:
            haproxy, balancer = pair
            time.sleep(0.6)  # a few check rounds
            phases = [("backup: primaries up, 12 requests", None)]
            phases.append(("backup: both primaries stopped, 6 requests", lambda: [s.stop() for s in primaries]))
            phases.append(("backup: s1 started again, 6 requests", lambda: primaries[0].start()))
            for case, change in phases:
                if change:
                    change()
                    time.sleep(1.2)  # several check rounds at 200ms, fall 1 / rise 1
                count = 12 if change is None else 6
                h, b = names_new_connections(haproxy.port, count), names_new_connections(balancer.port, count)
                if sorted(set(h)) == sorted(set(b)) and tally(h) == tally(b):
                    self.row(case, tally(h), tally(b), "same")
                else:
                    self.row(case, show(h), show(b), "DIFFERENT", "servers used differ")
            haproxy.stop()
            balancer.stop()
        for s in primaries + [spare]:
            s.stop()

    def all_down(self, checked):
        ports = [free_port(), free_port()]  # nothing listens there
        options = f" {CHECK}" if checked else ""
        config = ("global\n"
                  "defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\n"
                  "listen main\n    bind {bind}\n    balance roundrobin\n"
                  f"    server s1 127.0.0.1:{ports[0]}{options}\n"
                  f"    server s2 127.0.0.1:{ports[1]}{options}\n")
        case = "all servers down" + (" (health-checked)" if checked else " (no checks: connects refused)")
        pair = self.start_pair(case, config=config)
        if pair:
            haproxy, balancer = pair
            if checked:
                time.sleep(1.0)
            h = [exchange(haproxy.port, GET_CLOSE, timeout=10)[0] for _ in range(3)]
            b = [exchange(balancer.port, GET_CLOSE, timeout=10)[0] for _ in range(3)]
            verdict = "same" if h == b == [503] * 3 else "DIFFERENT"
            self.row(case, " ".join(map(str, h)), " ".join(map(str, b)), verdict)
            haproxy.stop()
            balancer.stop()

    def bad_requests(self):
        servers = [Backend("s1")]
        config = ("global\n"
                  "defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n"
                  "    timeout http-request 3s\n\n"
                  "listen main\n    bind {bind}\n    balance roundrobin\n"
                  f"    server s1 {servers[0].address}\n")
        pair = self.start_pair("bad requests", config=config)
        if pair:
            haproxy, balancer = pair
            for name, raw, why in BAD_REQUESTS:
                h, b = exchange(haproxy.port, raw)[0], exchange(balancer.port, raw)[0]
                case = f"bad request: {name}"
                if h == b:
                    self.row(case, str(h), str(b), "same")
                elif why:
                    self.row(case, str(h), str(b), "different (intended)", why)
                else:
                    self.row(case, str(h), str(b), "DIFFERENT")
            haproxy.stop()
            balancer.stop()
        for s in servers:
            s.stop()

    def exports_check(self):
        """`haproxy -c -f` on exports of a handful of configurations (none is started)."""
        configs = {
            "tcp and http frontends, two backends, backups, checks, weights 0..256": (
                "global\n"
                "defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\n"
                "frontend web\n    bind 127.0.0.1:18081\n    default_backend app\n"
                "frontend db\n    bind 127.0.0.1:18082\n    mode tcp\n    default_backend pg\n"
                "backend app\n    balance roundrobin\n    server a0 127.0.0.1:9100 weight 0\n"
                "    server a1 127.0.0.1:9101 weight 1 check\n    server a2 127.0.0.1:9102 weight 256 check inter 500ms rise 2 fall 3\n"
                "    server ab 127.0.0.1:9103 backup check\n"
                "backend pg\n    mode tcp\n    balance roundrobin\n    server p1 127.0.0.1:9201\n"
                "    server p2 127.0.0.1:9202 backup\n"),
            "listen section, tcp": (
                "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\n"
                "listen main\n    bind 127.0.0.1:18083\n    server s1 127.0.0.1:9301\n    server s2 127.0.0.1:9302 weight 3\n"),
        }
        for case, text in configs.items():
            path = os.path.join(self.workdir, "check-" + re.sub(r"\W+", "-", case) + ".cfg")
            with open(path, "w") as f:
                f.write(text)
            self.check_export(f"haproxy -c accepts the export: {case}", ["--config", path])
        self.check_export("haproxy -c accepts the export: flags, tcp, weights 1,2,256, backup",
                          ["--mode", "tcp", "--listen", "127.0.0.1:18084", "--server", "127.0.0.1:9401",
                           "--server", "127.0.0.1:9402,weight=2", "--server", "127.0.0.1:9403,weight=256",
                           "--server", "127.0.0.1:9404,backup"])

    def check_export(self, case, arguments):
        try:
            cfg = self.export(arguments)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            self.row(case, "-", "-", "DIFFERENT (no export)", str(error).replace("\n", " "))
            return
        path = os.path.join(self.workdir, f"export-{len(self.rows)}.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        result = subprocess.run([self.haproxy, "-c", "-f", path], capture_output=True, text=True, timeout=20)
        output = (result.stdout + result.stderr).strip()
        if result.returncode == 0:
            warnings = [l for l in output.splitlines() if "WARNING" in l]
            self.row(case, "valid" + (f" ({len(warnings)} warnings)" if warnings else ""), "exported", "same",
                     "; ".join(warnings)[:300])
        else:
            self.findings.append(f"`haproxy -c -f` rejects the export of `{' '.join(arguments)}`:\n\n```\n{output}\n```")
            self.row(case, f"rejected (exit {result.returncode})", "exported", "DIFFERENT", last_lines(output, 2))


H = b"Host: parity.test\r\n"
POST = b"POST / HTTP/1.1\r\n" + H

# (case, raw request, why balancerd differs on purpose: empty when both should agree)
BAD_REQUESTS = [
    ("request line without version", b"GET /\r\n" + H + b"\r\n", ""),
    ("request line with extra word", b"GET / HTTP/1.1 extra\r\n" + H + b"\r\n", ""),
    ("bad version FOO/1.1", b"GET / FOO/1.1\r\n" + H + b"\r\n", ""),
    ("non-token char in method", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", ""),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : parity.test\r\n\r\n", ""),
    ("non-token char in field name", b"GET / HTTP/1.1\r\n" + H + b"X(Bad): 1\r\n\r\n", ""),
    ("space inside field name", b"GET / HTTP/1.1\r\n" + H + b"X Bad: 1\r\n\r\n", ""),
    ("bare CR in a value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", ""),
    ("Content-Length: abc", POST + b"Content-Length: abc\r\n\r\n", ""),
    ("Content-Length: -1", POST + b"Content-Length: -1\r\n\r\n", ""),
    ("empty Content-Length", POST + b"Content-Length: \r\n\r\n", ""),
    ("two differing Content-Length", POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", ""),
    ("differing Content-Length list", POST + b"Content-Length: 5, 6\r\n\r\nhello!", ""),
    ("overflowing Content-Length", POST + b"Content-Length: 99999999999999999999999\r\n\r\n", ""),
    ("bad chunk size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", ""),
    ("Transfer-Encoding: gzip (not chunked last)", POST + b"Transfer-Encoding: gzip\r\n\r\nhello", ""),
    ("Transfer-Encoding: chunked, chunked", POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", ""),
    ("two different Host", b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", ""),
    # Both refuse these; the differences are balancerd's on purpose.
    ("101 header fields", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-F%d: v\r\n" % i for i in range(1, 102)) + b"\r\n",
     "both refuse; balancerd answers 431 for its field-count limit as for its size limit, haproxy 400"),
    ("head over 16 KiB", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n",
     "both refuse; balancerd answers 431 (RFC 6585), haproxy 400"),
    # haproxy 2.6 forwards these; balancerd refuses them on purpose.
    ("Content-Length with Transfer-Encoding", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "balancerd stricter: the classic smuggling vector; haproxy 2.6 drops Content-Length and forwards"),
    ("Transfer-Encoding with Content-Length", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
     "balancerd stricter: the classic smuggling vector; haproxy 2.6 drops Content-Length and forwards"),
    ("obs-fold continuation line", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
     "balancerd stricter: rejects obs-fold (RFC 9112 5.2 allows it); haproxy 2.6 folds it and forwards"),
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
     "balancerd stricter: RFC 9112 3.2 says 400; haproxy 2.6 forwards it"),
    ("NUL in a value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\0b\r\n\r\n",
     "balancerd stricter: RFC 9110 5.5 says reject or replace; haproxy 2.6 forwards it"),
    ("request line with double space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
     "balancerd stricter: one SP between parts (RFC 9112 3); haproxy 2.6 accepts runs of spaces"),
    ("good request (control)", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", ""),
]


def hard_fd_limit():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def last_lines(text, count):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " / ".join(lines[-count:])


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(path, parity, haproxy_version, command, started):
    lines = [
        "# Parity with haproxy",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC against {haproxy_version}.",
        "Each case exports the run's haproxy.cfg with `balancerd export-haproxy <options>`, checks it with",
        "`haproxy -c -f`, starts haproxy on it and balancerd with the same options (only the listen port",
        "differs, since both run at once) in front of the same name-stamping Python backends, and sends",
        "both the same requests. `same` means the clients saw the same thing; `different (intended)` is a",
        "place where balancerd is stricter (or answers differently) on purpose; `DIFFERENT` is unexpected.",
        "No case sets maxconn: both derive it from the open-file limit, and the export writes none.",
        "",
        "| case | haproxy | balancerd | verdict | why |",
        "|---|---|---|---|---|",
    ]
    for case, h, b, verdict, why in parity.rows:
        lines.append(f"| {cell(case)} | {cell(h)} | {cell(b)} | {cell(verdict)} | {cell(why)} |")
    same = sum(1 for r in parity.rows if r[3] == "same")
    intended = sum(1 for r in parity.rows if r[3].startswith("different"))
    lines += ["", f"{len(parity.rows)} cases: {same} same, {intended} intended differences, "
              f"{parity.unexpected} unexpected differences."]
    lines += ["", "## Problems with the exported file", ""]
    lines += list(parity.findings) or ["None found."]
    kept = ""
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if KEPT_MARKER in previous:
            kept = previous[previous.index(KEPT_MARKER):]
    lines += ["", kept or KEPT_MARKER]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--balancerd", default=os.environ.get("BALANCERD_BIN") or os.path.join(ROOT, ".build/debug/balancerd"))
    parser.add_argument("--haproxy", default="haproxy")
    parser.add_argument("--output", default=os.path.join(ROOT, "PARITY.md"))
    args = parser.parse_args()
    os.environ["PATH"] += ":/usr/sbin"
    if not os.access(args.balancerd, os.X_OK):
        sys.exit(f"balancerd not found at {args.balancerd}: run `swift build` or pass --balancerd")
    try:
        version = subprocess.run([args.haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        sys.exit("haproxy not installed; run .ci/run")
    version = version.split(" - ")[0]

    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="balancerd-parity-") as workdir:
        parity = Parity(args.balancerd, args.haproxy, workdir)
        parity.rotation("http", keep_alive=False)
        parity.rotation("http", keep_alive=True)
        parity.rotation("tcp", keep_alive=False)
        parity.weights([1, 3])
        parity.weights([2, 3, 5])
        parity.weights([2, 3, 5], keep_alive=True)
        parity.backup()
        parity.all_down(checked=False)
        parity.all_down(checked=True)
        parity.bad_requests()
        parity.exports_check()
    command = "Benchmarks/parity.py" + ("" if args.output == os.path.join(ROOT, "PARITY.md") else f" --output {args.output}")
    write_report(args.output, parity, version, command, started)
    print(f"wrote {args.output}: {len(parity.rows)} cases, {parity.unexpected} unexpected differences")
    return 1 if parity.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
