#!/usr/bin/env python3
"""Measures balancerd against haproxy and nginx in one interleaved run, on loopback.

Started by Benchmarks/run, which installs the tools, builds the release balancerd and the
malloc counter, and raises the open-file limit. Standard library only.

Every proxy forwards to the same two nginx backends with one worker (balancerd
`--threads 1`, haproxy `nbthread 1`, nginx `worker_processes 1`), so that wrk has the
other core of a 2-core machine. Every load is bounded in time and count. Nothing here is
asserted: the numbers are for reading.

Writes results/latest.json (every figure and the machine it came from), results/latest.md
(the table) and results/latest.svg (the chart); --snapshot also copies the chart to
Benchmarks/chart.svg, which the README embeds.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROXIES = ["balancerd", "haproxy", "nginx"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_TIMEOUT = "10s"

# wrk scenarios: key -> (mode, label, path, connections key, extra wrk arguments).
SCENARIOS = {
    "http_keepalive": ("http", "HTTP keep-alive, small responses", "/", "conns", []),
    "http_close": ("http", "HTTP Connection: close", "/", "conns", ["-H", "Connection: close"]),
    "http_64k": ("http", "HTTP keep-alive, 64 KiB responses", "/64k", "conns", []),
    "http_keepalive_many": ("http", "HTTP keep-alive, small responses", "/", "many_conns", []),
    "tcp_keepalive": ("tcp", "TCP keep-alive, small responses", "/", "conns", []),
    "tcp_close": ("tcp", "TCP new connection per request", "/", "conns", ["-H", "Connection: close"]),
    "tcp_64k": ("tcp", "TCP keep-alive, 64 KiB responses", "/64k", "conns", []),
    # An HTTPS frontend (HTTP mode, the same backends); wrk handshakes once per connection.
    "https_keepalive": ("https", "HTTPS keep-alive, small responses (RSA 2048)", "/", "conns", []),
}

# The TLS cases that are not wrk scenarios (https_keepalive is one): see tls_handshakes()
# and the 1 GiB download over TLS in run().
TLS_CASES = ["https_keepalive", "tls_handshakes", "tls_download"]
# Certificates made once per run with `openssl req`. RSA 2048 serves every TLS case; full
# handshakes are also measured with ECDSA P-256, what most public sites serve, whose
# signature costs the server far less (resumed handshakes sign nothing, bulk transfer
# depends only on the cipher).
TLS_KEYS = {
    "rsa2048": ("RSA 2048", ["-newkey", "rsa:2048"]),
    "p256": ("ECDSA P-256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
}
# tls_handshakes variants: key -> (label, s_time mode, certificate key).
HANDSHAKES = {
    "full_rsa2048": ("new TLS connections, full handshake, RSA 2048", "-new", "rsa2048"),
    "full_p256": ("new TLS connections, full handshake, ECDSA P-256", "-new", "p256"),
    "resumed": ("new TLS connections, resumed session, RSA 2048", "-reuse", "rsa2048"),
}
TLS_NAME = "bench.test"


class Unsupported(Exception):
    """A proxy that refuses a configuration (balancerd before TLS lands: `--tls-cert`)."""

# --------------------------------------------------------------------------------------
# processes


class Processes:
    """Everything this run started, stopped by pid (and only those) when the run ends."""

    def __init__(self):
        self.started = []

    def start(self, argv, name, env=None, stderr_path=None):
        err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                env=env)
        self.started.append((name, proc))
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started = [(n, p) for (n, p) in self.started if p is not proc]

    def stop_all(self):
        for _, proc in list(reversed(self.started)):
            self.stop(proc)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before port {port} opened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def children(pid):
    """Direct children of pid (nginx's worker is the master's only child)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def serving_pid(kind, proc):
    """The process that carries the connections: nginx's worker, the others' only process."""
    if kind != "nginx":
        return proc.pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = children(proc.pid)
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise RuntimeError("nginx started no worker")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[11] and [12] are utime and stime (fields 14 and 15 of proc(5)), all threads.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(pid, timeout=10.0):
    """Waits until the proxy's descriptor count has stopped changing: it has finished
    accepting or closing what the client just did."""
    deadline = time.monotonic() + timeout
    last, stable = -1, 0
    while time.monotonic() < deadline:
        n = fd_count(pid)
        stable = stable + 1 if n == last else 0
        if stable >= 3:
            return n
        last = n
        time.sleep(0.1)
    return last


# --------------------------------------------------------------------------------------
# configurations


def backend_conf(work, b1, b2, user_line):
    return f"""{user_line}
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {work}/backend.pid;
error_log {work}/backend.err;
events {{ worker_connections 16000; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {work}/backend_body;
    server {{ listen 127.0.0.1:{b1}; location / {{ return 200 "b1\\n"; }} location /64k {{ alias {work}/64k.bin; }} location /1g {{ alias {work}/1g.bin; }} }}
    server {{ listen 127.0.0.1:{b2}; location / {{ return 200 "b2\\n"; }} location /64k {{ alias {work}/64k.bin; }} location /1g {{ alias {work}/1g.bin; }} }}
}}
"""


def haproxy_like_conf(kind, mode, port, b1, b2, bind_options=""):
    """The same haproxy.cfg for haproxy and balancerd (which reads haproxy's language);
    haproxy alone gets `http-reuse always`, a keyword balancerd does not take.
    `bind_options` ends the bind line (`ssl crt PEM alpn http/1.1`)."""
    lines = [
        "global",
        "    # haproxy refuses to start when it cannot raise the fd limit to about 2 x maxconn;",
        "    # the hard limit here is 20000.",
        "    maxconn 6000",
        "    nbthread 1",
        "defaults",
        f"    mode {mode}",
        "    timeout connect 5s",
        "    timeout client 50s",
        "    timeout server 50s",
    ]
    if mode == "http":
        lines += ["    option forwardfor", "    timeout http-keep-alive 60s"]
        if kind == "haproxy":
            lines += ["    option http-keep-alive", "    http-reuse always"]
    lines += [
        "listen main",
        f"    bind 127.0.0.1:{port}{bind_options}",
        "    balance roundrobin",
        f"    server s1 127.0.0.1:{b1}",
        f"    server s2 127.0.0.1:{b2}",
    ]
    return "\n".join(lines) + "\n"


def nginx_proxy_conf(work, name, mode, port, b1, b2, user_line, tls=None):
    """`tls`: (certificate, key) for an HTTPS listener."""
    head = f"""{user_line}
{"load_module /usr/lib/nginx/modules/ngx_stream_module.so;" if mode == "tcp" else ""}
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.err;
events {{ worker_connections 16000; }}
"""
    if mode == "tcp":
        return head + f"""stream {{
    upstream app {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; }}
    server {{ listen 127.0.0.1:{port}; proxy_pass app; }}
}}
"""
    return head + f"""http {{
    access_log off;
    client_body_temp_path {work}/{name}_body;
    proxy_temp_path {work}/{name}_proxy;
    upstream web {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; keepalive 6000; }}
    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""};
        {nginx_tls_lines(tls)}
        keepalive_requests 1000000;
        keepalive_timeout 75s;
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


def nginx_tls_lines(tls):
    """nginx 1.22 (Debian 12) leaves TLS 1.3 out of its default ssl_protocols: named here
    so that it negotiates what haproxy and balancerd do. Session tickets are on by default
    (keys made at start); the shared cache serves session IDs, as haproxy's does."""
    if not tls:
        return ""
    cert, key = tls
    return (f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; "
            "ssl_session_cache shared:SSL:10m; ssl_session_tickets on;")


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="balancerd-bench.")
        self.procs = Processes()
        self.user_line = "user root;" if os.getuid() == 0 else ""
        self.b1, self.b2 = free_port(), free_port()
        self.instances = {}  # (kind, mode) -> (port, serving pid); mode "https" or "https-p256" for TLS
        self.certs = {}  # TLS_KEYS key -> {"crt", "key", "pem"}
        self.unsupported = {}  # kind -> why it refused a TLS frontend
        self.tls_peers = {}  # kind -> what one s_client handshake negotiated

    def write(self, name, text):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_backends(self):
        with open(os.path.join(self.work, "64k.bin"), "wb") as f:
            f.write(os.urandom(65536))
        # Sparse: the download measures the proxies, not the disk. Read once here, so that
        # the page cache holds it: the first download otherwise pays for filling the cache
        # (a gigabyte of zeroed pages), and the proxy that happens to go first with it.
        with open(os.path.join(self.work, "1g.bin"), "wb") as f:
            f.truncate(1 << 30)
        with open(os.path.join(self.work, "1g.bin"), "rb") as f:
            while f.read(1 << 20):
                pass
        conf = self.write("backend.conf", backend_conf(self.work, self.b1, self.b2, self.user_line))
        proc = self.procs.start(["nginx", "-p", self.work, "-c", conf], "backend")
        wait_port(self.b1, proc)
        wait_port(self.b2, proc)

    def start_proxy(self, kind, mode, name, env_extra=None, threads=1, tls_key=None):
        """Starts one proxy instance on a fresh port; returns (port, proc, serving pid).
        With `tls_key` (a TLS_KEYS key) the frontend is HTTPS, HTTP mode, that certificate.
        Raises Unsupported when balancerd refuses the TLS options."""
        port = free_port()
        env = dict(os.environ)
        env.update(env_extra or {})
        cert = self.certs[tls_key] if tls_key else None
        if cert:
            mode = "http"
        if kind == "balancerd" and cert:
            argv = [self.args.balancerd, "--mode", "http", "--listen", f"127.0.0.1:{port}", "--tls-cert", cert["pem"],
                    "--server", f"127.0.0.1:{self.b1}", "--server", f"127.0.0.1:{self.b2}",
                    "--threads", str(threads), "--quiet"]
        elif kind == "balancerd":
            if mode == "http":
                conf = self.write(f"{name}.cfg", haproxy_like_conf(kind, mode, port, self.b1, self.b2))
                argv = [self.args.balancerd, "--config", conf, "--threads", str(threads), "--quiet"]
            else:
                argv = [self.args.balancerd, "--mode", "tcp", "--listen", f"127.0.0.1:{port}",
                        "--server", f"127.0.0.1:{self.b1}", "--server", f"127.0.0.1:{self.b2}",
                        "--threads", str(threads), "--quiet"]
        elif kind == "haproxy":
            # haproxy's defaults keep TLS session tickets on and a 20,000-entry session cache.
            bind = f" ssl crt {cert['pem']} alpn http/1.1" if cert else ""
            conf = self.write(f"{name}.cfg", haproxy_like_conf(kind, mode, port, self.b1, self.b2, bind))
            argv = ["haproxy", "-f", conf, "-db"]
        else:
            conf = self.write(f"{name}.conf", nginx_proxy_conf(self.work, name, mode, port, self.b1, self.b2,
                                                              self.user_line,
                                                              (cert["crt"], cert["key"]) if cert else None))
            argv = ["nginx", "-p", self.work, "-c", conf]
        stderr_path = os.path.join(self.work, f"{name}.stderr")
        proc = self.procs.start(argv, name, env=env, stderr_path=stderr_path)
        try:
            wait_port(port, proc)
        except RuntimeError as error:
            if kind != "balancerd" or not cert or proc.poll() is None:
                raise
            # Exited at once: this build does not take --tls-cert yet (or refused the PEM).
            self.procs.stop(proc)
            with open(stderr_path, errors="replace") as f:
                said = next((line.strip() for line in f if line.strip()), "")[:200]
            raise Unsupported(said or str(error)) from error
        return port, proc, serving_pid(kind, proc)

    # ----------------------------------------------------------------------------------
    # TLS

    def make_certificates(self):
        """One certificate per TLS_KEYS key, for bench.test and 127.0.0.1, made once per
        run; `pem` is certificate then key, as haproxy's `crt` and balancerd's `--tls-cert`
        take it."""
        os.makedirs(os.path.join(self.work, "tls"), exist_ok=True)
        for key, (_, newkey) in TLS_KEYS.items():
            base = os.path.join(self.work, "tls", key)
            subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-subj", f"/CN={TLS_NAME}",
                            "-addext", f"subjectAltName=DNS:{TLS_NAME},IP:127.0.0.1", "-days", "2",
                            "-keyout", base + ".key", "-out", base + ".crt"],
                           check=True, capture_output=True, timeout=60)
            with open(base + ".pem", "w") as f:
                f.write(open(base + ".crt").read() + open(base + ".key").read())
            self.certs[key] = {"crt": base + ".crt", "key": base + ".key", "pem": base + ".pem"}

    def check_tls(self, kind, port, tls_key):
        """One `openssl s_client` handshake: the proxy serves our certificate; returns the
        protocol, cipher and ALPN it negotiated."""
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", TLS_NAME,
                              "-alpn", "http/1.1"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=30).stdout
        served = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
        with open(self.certs[tls_key]["crt"]) as f:
            ours = f.read().strip()
        if not served or served.group(0).strip() != ours:
            raise RuntimeError(f"{kind} on port {port} does not serve the {tls_key} certificate:\n{out[-2000:]}")
        m = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
        alpn = re.search(r"^ALPN protocol: (\S+)", out, re.M)
        return {"protocol": m.group(1) if m else None, "cipher": m.group(2) if m else None,
                "alpn": alpn.group(1) if alpn else None}

    def start_tls_instances(self, keys):
        for kind in PROXIES:
            for tls_key in keys:
                mode = "https" if tls_key == "rsa2048" else f"https-{tls_key}"
                try:
                    port, _, pid = self.start_proxy(kind, "http", f"{kind}-{mode}", tls_key=tls_key)
                except Unsupported as why:
                    self.unsupported[kind] = str(why)
                    log(f"{kind}: not supported by this build ({why})")
                    break
                self.instances[(kind, mode)] = (port, pid)
                self.tls_peers.setdefault(kind, self.check_tls(kind, port, tls_key))
                log(f"{kind} HTTPS ({TLS_KEYS[tls_key][0]}) on port {port}: {self.tls_peers[kind]}")

    def s_time(self, port, mode, seconds, clients, pid):
        """`clients` concurrent `openssl s_time -connect … -new|-reuse -time S -www /`: each
        opens connections one after the other, handshakes (full with -new; with -reuse, one
        full and then resumed sessions) and GETs / over HTTP/1.0 until S seconds have passed.
        s_time prints one `*` per full handshake and one `r` per resumed one."""
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        procs = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-time", str(seconds),
                                   "-www", "/"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL, text=True)
                 for _ in range(clients)]
        outs = []
        try:
            for p in procs:
                outs.append(p.communicate(timeout=seconds + 60)[0])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        full = resumed = connections = 0
        for out in outs:
            m = re.search(r"^(\d+) connections in [\d.]+s;", out, re.M)
            connections += int(m.group(1)) if m else 0
            for line in out.splitlines():
                if line and set(line) <= {"*", "r"}:
                    full += line.count("*")
                    resumed += line.count("r")
        return {"connections": connections, "full": full, "resumed": resumed, "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3), "per_s": round(connections / wall, 1) if wall > 0 else None,
                "per_cpu_s": round(connections / cpu) if cpu > 0 else None,
                "resumed_fraction": round(resumed / connections, 3) if connections else None}

    # ----------------------------------------------------------------------------------
    # wrk

    def wrk(self, port, path, conns, seconds, extra, pid, scheme="http"):
        cpu0 = cpu_seconds(pid)
        # --timeout 10s: wrk's default of 2 s would drop the slowest responses of the
        # 5,000-connection case from the latency figures and count them as errors.
        out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT, "--latency", *extra,
                              f"{scheme}://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, timeout=seconds + 120).stdout
        cpu = cpu_seconds(pid) - cpu0
        result = {"rps": None, "requests": None, "p50_ms": None, "p99_ms": None, "cpu_s": round(cpu, 3),
                  "errors": 0, "non_2xx": 0}
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if m:
            result["rps"] = float(m.group(1))
        m = re.search(r"(\d+) requests in", out)
        if m:
            result["requests"] = int(m.group(1))
        for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
            m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
            if m:
                result[key] = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            result["errors"] = sum(int(x) for x in m.groups())
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if m:
            result["non_2xx"] = int(m.group(1))
        if result["requests"] and cpu > 0:
            result["req_per_cpu_s"] = round(result["requests"] / cpu)
        return result

    def download(self, port, tls_key=None):
        """One 1 GiB GET with curl; MB/s with MB = 10^6 bytes. With `tls_key`, over HTTPS,
        verifying that certificate for bench.test."""
        url = [f"http://127.0.0.1:{port}/1g"]
        if tls_key:
            url = ["--cacert", self.certs[tls_key]["crt"], "--resolve", f"{TLS_NAME}:{port}:127.0.0.1",
                   f"https://{TLS_NAME}:{port}/1g"]
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download} %{http_code}",
                              *url], capture_output=True, text=True, timeout=120).stdout
        speed, size, code = out.split()
        if int(float(size)) != 1 << 30 or code != "200":
            raise RuntimeError(f"download through port {port}: {size} bytes, status {code}")
        return float(speed) / 1e6

    # ----------------------------------------------------------------------------------
    # idle keep-alive connections (memory)

    @staticmethod
    def read_response(sock, keep_alive=True):
        """Reads one response with a Content-Length body (or until EOF when not keep_alive)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed before a response head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {head[:80]!r}")
        if not keep_alive:
            while sock.recv(65536):
                pass
            return
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        length = int(m.group(1)) if m else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed inside a body")
            body += chunk

    def open_idle(self, port, count):
        """count client connections that each made one keep-alive request and stay open."""
        request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
        socks = []
        batch = 200
        try:
            for start in range(0, count, batch):
                group = []
                for _ in range(min(batch, count - start)):
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    group.append(s)
                    s.sendall(request)
                for s in group:
                    self.read_response(s)
                socks += group
        except BaseException:
            for s in socks:
                s.close()
            raise
        return socks

    def idle_waves(self, kind):
        """A fresh HTTP-mode instance: the baseline after a warm-up, then `waves` waves of
        idle keep-alive connections, each closed before the next."""
        a = self.args
        port, proc, pid = self.start_proxy(kind, "http", f"{kind}-memory")
        try:
            for s in self.open_idle(port, 20):
                s.close()
            settle(pid)
            before = rss_kib(pid)
            open_rss, closed_rss = [], []
            for _ in range(a.waves):
                socks = self.open_idle(port, a.idle_conns)
                settle(pid)
                open_rss.append(rss_kib(pid))
                for s in socks:
                    s.close()
                settle(pid)
                closed_rss.append(rss_kib(pid))
        finally:
            self.procs.stop(proc)
        return {
            "rss_before_kib": before,
            "rss_open_kib": open_rss,
            "rss_after_wave_kib": closed_rss,
            "per_idle_conn_kib": round((open_rss[0] - before) / a.idle_conns, 2),
            "rss_after_first_wave_mb": round(closed_rss[0] / 1024, 1),
            "rss_after_last_wave_mb": round(closed_rss[-1] / 1024, 1),
            "waves_ratio": round(closed_rss[-1] / closed_rss[0], 3),
        }

    # ----------------------------------------------------------------------------------
    # allocations of the real binary

    def allocations(self):
        a = self.args
        counts = os.path.join(self.work, "malloc-counts")
        port, proc, pid = self.start_proxy("balancerd", "http", "balancerd-malloc",
                                           env_extra={"LD_PRELOAD": a.malloc_counter, "MALLOC_COUNTER_FILE": counts})

        def allocated():
            with open(counts, "rb") as f:
                return struct.unpack("<Q", f.read(8))[0]

        keep = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
        close = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"

        def new_connections(n):
            for _ in range(n):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(close)
                    self.read_response(s, keep_alive=False)

        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(a.alloc_warmup):
                conn.sendall(keep)
                self.read_response(conn)
            new_connections(a.alloc_warmup // 10)
            settle(pid)

            start = allocated()
            for _ in range(a.alloc_requests):
                conn.sendall(keep)
                self.read_response(conn)
            settle(pid)
            per_request = (allocated() - start) / a.alloc_requests

            start = allocated()
            new_connections(a.alloc_connections)
            settle(pid)
            per_connection = (allocated() - start) / a.alloc_connections
            conn.close()
        finally:
            self.procs.stop(proc)
        return {
            "keepalive_requests": a.alloc_requests,
            "per_keepalive_request": round(per_request, 3),
            "close_connections": a.alloc_connections,
            "per_close_connection": round(per_connection, 2),
        }

    # ----------------------------------------------------------------------------------

    def run(self):
        a = self.args
        results = {"scenarios": {}, "download": {}, "memory": {}, "allocations": None, "listener_layout": None,
                   "handshakes": {}, "tls_download": {}, "tls": None}
        log(f"work directory {self.work}")
        self.start_backends()
        for kind in PROXIES:
            for mode in ("tcp", "http"):
                port, _, pid = self.start_proxy(kind, mode, f"{kind}-{mode}")
                self.instances[(kind, mode)] = (port, pid)
        if any(c in a.scenarios for c in TLS_CASES):
            self.make_certificates()
            self.start_tls_instances(["rsa2048"] + (["p256"] if "tls_handshakes" in a.scenarios else []))
            results["tls"] = {"certificates": {k: TLS_KEYS[k][0] for k in self.certs}, "name": TLS_NAME,
                              "negotiated": self.tls_peers, "unsupported": self.unsupported,
                              "s_time_clients": a.tls_clients}
        hs = {v: {p: [] for p in PROXIES} for v in HANDSHAKES} if "tls_handshakes" in a.scenarios else {}
        tls_dl = {p: [] for p in PROXIES} if "tls_download" in a.scenarios else {}

        scenario_keys = [k for k in SCENARIOS if k in a.scenarios]
        raw = {k: {p: [] for p in PROXIES} for k in scenario_keys}
        downloads = {p: [] for p in PROXIES + ["balancerd_tcp"]}
        for rnd in range(a.rounds):
            # Interleaved: every round runs every case for every proxy, starting with a
            # different proxy each round so that none always runs first.
            order = PROXIES[rnd % 3:] + PROXIES[:rnd % 3]
            for key in scenario_keys:
                mode, label, path, conns_key, extra = SCENARIOS[key]
                conns = getattr(a, conns_key)
                for kind in order:
                    if (kind, mode) not in self.instances:
                        continue  # not supported by this build (reported once, at start)
                    port, pid = self.instances[(kind, mode)]
                    r = self.wrk(port, path, conns, a.seconds, extra, pid, scheme="https" if mode == "https" else "http")
                    raw[key][kind].append(r)
                    log(f"round {rnd + 1}/{a.rounds} {label} ({conns} conns) {kind}: {fmt_num(r['rps'])} req/s, "
                        f"p99 {r['p99_ms']} ms, {r['req_per_cpu_s'] if 'req_per_cpu_s' in r else '-'} req/CPU-s"
                        + (f", {r['errors']} socket errors" if r["errors"] else ""))
                    time.sleep(0.5)
            if "download" in a.scenarios:
                for kind in order + ["balancerd_tcp"]:
                    port = self.instances[("balancerd", "tcp")][0] if kind == "balancerd_tcp" \
                        else self.instances[(kind, "http")][0]
                    mbs = self.download(port)
                    downloads[kind].append(mbs)
                    log(f"round {rnd + 1}/{a.rounds} 1 GiB download {kind}: {mbs:.0f} MB/s")
            for variant, (label, st_mode, tls_key) in HANDSHAKES.items() if hs else ():
                for kind in order:
                    inst = self.instances.get((kind, "https" if tls_key == "rsa2048" else f"https-{tls_key}"))
                    if inst is None:
                        continue
                    r = self.s_time(inst[0], st_mode, a.seconds, a.tls_clients, inst[1])
                    hs[variant][kind].append(r)
                    log(f"round {rnd + 1}/{a.rounds} {label} {kind}: {fmt_num(r['per_s'])}/s, "
                        f"{fmt_num(r['per_cpu_s'])} per CPU-s, {r['resumed']} of {r['connections']} resumed")
                    time.sleep(0.5)
            for kind in order if tls_dl else ():
                inst = self.instances.get((kind, "https"))
                if inst is None:
                    continue
                cpu0 = cpu_seconds(inst[1])
                mbs = self.download(inst[0], tls_key="rsa2048")
                tls_dl[kind].append({"mb_s": round(mbs, 1), "cpu_s": round(cpu_seconds(inst[1]) - cpu0, 2)})
                log(f"round {rnd + 1}/{a.rounds} 1 GiB download over TLS {kind}: {mbs:.0f} MB/s, "
                    f"{tls_dl[kind][-1]['cpu_s']} CPU-s")

        for key in scenario_keys:
            mode, label, path, conns_key, extra = SCENARIOS[key]
            entry = {"label": label, "mode": mode, "connections": getattr(a, conns_key), "path": path,
                     "wrk_extra": extra}
            for kind in PROXIES:
                runs = raw[key][kind]  # empty for a proxy that does not support the case
                entry[kind] = {
                    "rps": median([r["rps"] for r in runs]),
                    "p99_ms": median([r["p99_ms"] for r in runs]),
                    "p50_ms": median([r["p50_ms"] for r in runs]),
                    "req_per_cpu_s": median([r.get("req_per_cpu_s") for r in runs]),
                    "errors": sum(r["errors"] for r in runs),
                    "non_2xx": sum(r["non_2xx"] for r in runs),
                    "rounds": runs,
                }
            results["scenarios"][key] = entry
        if "download" in a.scenarios:
            results["download"] = {k: {"mb_s": round(median(v), 1), "rounds": [round(x, 1) for x in v]}
                                   for k, v in downloads.items()}
        for variant, per_kind in hs.items():
            results["handshakes"][variant] = {"label": HANDSHAKES[variant][0], **{kind: {
                "per_s": median([r["per_s"] for r in runs]),
                "per_cpu_s": median([r["per_cpu_s"] for r in runs]),
                "resumed_fraction": median([r["resumed_fraction"] for r in runs]),
                "rounds": runs} for kind, runs in per_kind.items()}}
        if tls_dl:
            results["tls_download"] = {kind: {"mb_s": median([r["mb_s"] for r in runs]),
                                              "cpu_s": median([r["cpu_s"] for r in runs]), "rounds": runs}
                                       for kind, runs in tls_dl.items()}

        # Memory and allocations use fresh instances of their own, one at a time.
        if "memory" in a.scenarios:
            for kind in PROXIES:
                log(f"idle connections: {kind}, {a.waves} waves of {a.idle_conns}")
                results["memory"][kind] = self.idle_waves(kind)
                m = results["memory"][kind]
                log(f"  {kind}: {m['per_idle_conn_kib']} KiB per idle connection, RSS after wave 1 "
                    f"{m['rss_after_first_wave_mb']} MB, after wave {a.waves} {m['rss_after_last_wave_mb']} MB")
        if "allocations" in a.scenarios:
            if a.malloc_counter:
                log("allocations of the release balancerd (LD_PRELOAD malloc counter)")
                results["allocations"] = self.allocations()
                log(f"  {results['allocations']}")
            else:
                log("allocations: skipped, no --malloc-counter library given")

        if "layout" in a.scenarios:
            results["listener_layout"] = self.listener_layout()
        return results

    def listener_layout(self):
        """balancerd with 2 threads: one SO_REUSEPORT listener per loop vs one shared
        listener (BALANCERD_LISTENER=shared), keep-alive and new connections."""
        a = self.args
        out = {}
        for name, env in (("reuseport", {}), ("shared", {"BALANCERD_LISTENER": "shared"})):
            port, proc, pid = self.start_proxy("balancerd", "tcp", f"balancerd-layout-{name}", env_extra=env,
                                               threads=2)
            try:
                ka = self.wrk(port, "/", a.conns, a.seconds, [], pid)
                close = self.wrk(port, "/", a.conns, a.seconds, ["-H", "Connection: close"], pid)
            finally:
                self.procs.stop(proc)
            out[name] = {"keepalive_rps": ka["rps"], "close_rps": close["rps"]}
            log(f"listener layout {name}: keep-alive {fmt_num(ka['rps'])}, new connections {fmt_num(close['rps'])}")
        return out


# --------------------------------------------------------------------------------------
# figures, ratios and output


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def log(text):
    print(text, flush=True)


def fmt_num(v, digits=None):
    if v is None:
        return "n/a"
    if digits is not None:
        return f"{v:.{digits}f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_short(v):
    """41.6k, 705, 3.21: for the chart's labels."""
    if v is None:
        return "n/a"
    if v >= 10000:
        return f"{v / 1000:.1f}k"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def best_peer_ratio(values, higher_is_better):
    """balancerd / the best of haproxy and nginx, with what "best" means for the metric."""
    b = values.get("balancerd")
    peers = [values.get(p) for p in ("haproxy", "nginx") if values.get(p) is not None]
    if b is None or not peers:
        return None
    best = max(peers) if higher_is_better else min(peers)
    return round(b / best, 2) if best else None


def rows(results, waves):
    """The comparison rows: (label, unit, {proxy: value}, higher_is_better, target)."""
    out = []
    sc = results["scenarios"]

    def add(label, unit, values, higher, target="", spread=None):
        out.append({"label": label, "unit": unit, "values": values, "higher_is_better": higher,
                    "ratio": best_peer_ratio(values, higher), "target": target, "spread": spread})

    def spread(lists):
        """min and max over the rounds, when there was more than one."""
        return {p: [min(v), max(v)] for p, v in lists.items() if len(v) > 1}

    def over_rounds(entry, field):
        return spread({p: [r[field] for r in entry[p]["rounds"] if r.get(field) is not None] for p in PROXIES})

    targets = {"http_keepalive": ("≥ 1.2×", "≤ 1.0×", "≥ 1.15×"), "http_close": ("≥ 1.1×", "", ""),
               "https_keepalive": ("≥ 1.0×", "", "≥ 1.0×")}
    for key, entry in sc.items():
        t = targets.get(key, ("", "", ""))
        label = f"{entry['label']} ({entry['connections']} conns)"
        add(label, "req/s", {p: entry[p]["rps"] for p in PROXIES}, True, t[0], over_rounds(entry, "rps"))
        add(label, "p99 ms", {p: entry[p]["p99_ms"] for p in PROXIES}, False, t[1], over_rounds(entry, "p99_ms"))
        if key in ("http_keepalive", "http_keepalive_many", "https_keepalive"):
            add(label, "requests per CPU-second", {p: entry[p]["req_per_cpu_s"] for p in PROXIES}, True, t[2],
                over_rounds(entry, "req_per_cpu_s"))
    if results["download"]:
        d = results["download"]
        add("1 GiB download, HTTP mode", "MB/s", {p: d[p]["mb_s"] for p in PROXIES}, True, "",
            spread({p: d[p]["rounds"] for p in PROXIES}))
    for variant, h in (results.get("handshakes") or {}).items():
        add(h["label"], "connections/s", {p: h[p]["per_s"] for p in PROXIES}, True, "≥ 1.0×",
            spread({p: [r["per_s"] for r in h[p]["rounds"]] for p in PROXIES}))
        add(h["label"], "connections per CPU-second", {p: h[p]["per_cpu_s"] for p in PROXIES}, True, "≥ 1.0×",
            spread({p: [r["per_cpu_s"] for r in h[p]["rounds"] if r["per_cpu_s"]] for p in PROXIES}))
        if variant == "resumed":
            add(h["label"], "share resumed", {p: h[p]["resumed_fraction"] for p in PROXIES}, True)
    t = results.get("tls_download")
    if t:
        add("1 GiB download over TLS (RSA 2048 certificate)", "MB/s", {p: t[p]["mb_s"] for p in PROXIES}, True,
            "≥ 1.0×", spread({p: [r["mb_s"] for r in t[p]["rounds"]] for p in PROXIES}))
        add("1 GiB download over TLS (RSA 2048 certificate)", "proxy CPU-seconds", {p: t[p]["cpu_s"] for p in PROXIES},
            False)
    m = results["memory"]
    if m:
        add("memory per idle keep-alive client connection", "KiB",
            {p: m[p]["per_idle_conn_kib"] for p in PROXIES}, False, "≤ 0.5× haproxy")
        add("RSS after wave 1 of idle connections", "MB", {p: m[p]["rss_after_first_wave_mb"] for p in PROXIES}, False)
        add(f"RSS after wave {waves} of idle connections", "MB",
            {p: m[p]["rss_after_last_wave_mb"] for p in PROXIES}, False)
        add(f"RSS after wave {waves} / after wave 1", "×", {p: m[p]["waves_ratio"] for p in PROXIES}, False,
            "balancerd ≤ 1.10")
    return out


def machine_facts(balancerd):
    def cmd(argv, stderr=False):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (p.stderr if stderr else p.stdout).strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    haproxy_v = cmd(["haproxy", "-v"]) or ""
    m = re.search(r"version (\S+)", haproxy_v)
    nginx_v = cmd(["nginx", "-v"], stderr=True) or ""
    wrk_v = cmd(["wrk", "-v"]) or cmd(["wrk", "-v"], stderr=True) or ""
    commit = cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = bool(cmd(["git", "-C", ROOT, "status", "--porcelain", "--", "Sources"]))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": read_os_release(),
        "haproxy": m.group(1) if m else haproxy_v.split("\n")[0],
        "nginx": nginx_v.split("/", 1)[-1],
        "wrk": (re.search(r"wrk (\S+)", wrk_v) or re.search(r"(.*)", wrk_v)).group(1),
        "curl": (cmd(["curl", "--version"]) or "").split("\n")[0].split(" ")[1],
        "openssl": " ".join((cmd(["openssl", "version"]) or "").split()[:2]),
        "balancerd": (cmd([balancerd, "--version"]) or "").replace("balancerd ", ""),
        "balancerd_commit": (commit or "?") + (" (Sources modified)" if dirty else ""),
        "loadavg_start": None,
    }


def read_os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def markdown(doc):
    a = doc["settings"]
    mach = doc["machine"]
    res = doc["results"]
    lines = [
        f"# balancerd benchmark, {doc['date']}",
        "",
        f"{'Quick run' if a['quick'] else 'Full run'}: {mach['nproc']} cores ({mach['cpu_model']}), "
        f"{mach['memory_gib']} GiB, kernel {mach['kernel']}, {mach['os']}; load average "
        f"{doc['loadavg_start']} at the start, {doc['loadavg_end']} at the end.",
        f"balancerd {mach['balancerd']} (commit {mach['balancerd_commit']}, release build), haproxy {mach['haproxy']}, "
        f"nginx {mach['nginx']}, wrk {mach['wrk']}, curl {mach['curl']}.",
        f"Loopback, one worker each (balancerd `--threads 1`, haproxy `nbthread 1`, nginx `worker_processes 1`), "
        f"two nginx backends; `wrk -t1 -c{a['conns']} -d{a['seconds']}s{' --timeout ' + a['wrk_timeout'] if a.get('wrk_timeout') else ''} --latency` per case "
        f"(`-c{a['many_conns']}` for the many-connections case), "
        f"{'median of ' + str(a['rounds']) + ' interleaved rounds' if a['rounds'] > 1 else 'one round'}. "
        f"HTTP mode: haproxy `mode http` with `http-reuse always`, nginx `proxy_pass` with upstream keepalive. "
        f"TCP mode: haproxy `mode tcp`, nginx `stream`.",
        "Ratio: balancerd / best peer (the higher of haproxy and nginx where higher is better, the lower where lower is)."
        + (" Small figures: the lowest and highest of the rounds." if a["rounds"] > 1 else ""),
        "",
        "| case | unit | balancerd | haproxy | nginx | balancerd / best peer | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        v, sp = r["values"], r.get("spread") or {}

        def cell(p):
            text = f"**{fmt_num(v[p])}**" if p == "balancerd" else fmt_num(v[p])
            if p in sp:
                text += f" <sub>{fmt_short(sp[p][0])}–{fmt_short(sp[p][1])}</sub>"
            return text
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
        lines.append(f"| {r['label']} | {r['unit']} | {cell('balancerd')} | {cell('haproxy')} | "
                     f"{cell('nginx')} | {ratio} | {r['target']} |")
    d = res["download"]
    if d:
        lines += ["", f"1 GiB download (curl, MB = 10⁶ bytes): balancerd HTTP mode {fmt_num(d['balancerd']['mb_s'])} MB/s, "
                      f"balancerd TCP mode {fmt_num(d['balancerd_tcp']['mb_s'])} MB/s: HTTP/TCP = "
                      f"**{d['balancerd']['mb_s'] / d['balancerd_tcp']['mb_s']:.2f}×** (target ≥ 0.9×)."]
    tls = res.get("tls")
    if tls:
        neg = tls["negotiated"]
        lines += ["", f"TLS: every proxy links Debian's libssl3 ({mach.get('openssl') or 'OpenSSL'}) and serves the same "
                      f"self-signed certificates for {tls['name']}, made once per run with `openssl req` "
                      f"({', '.join(tls['certificates'].values())}; RSA 2048 unless a row names ECDSA P-256). "
                      "haproxy `bind … ssl crt PEM alpn http/1.1` with its default session tickets and 20,000-entry "
                      "session cache; nginx `listen … ssl` with `ssl_protocols TLSv1.2 TLSv1.3`, session tickets on and "
                      "`ssl_session_cache shared:SSL:10m`; balancerd `--listen … --tls-cert PEM --threads 1`. "
                      "Negotiated (one `openssl s_client` handshake each): "
                      + "; ".join(f"{p} {n['protocol']} {n['cipher']} ALPN {n['alpn'] or '-'}" for p, n in neg.items())
                      + ". Keep-alive: wrk over https (one handshake per connection). New connections: "
                      f"{tls['s_time_clients']} concurrent `openssl s_time -new` (full handshakes) or `-reuse` "
                      "(resumed sessions) clients, each GETting / over HTTP/1.0 on every connection; "
                      "per CPU-second = connections / CPU time of the serving process. "
                      "Download: curl verifying the certificate, `https://bench.test:PORT/1g`."]
        for p, why in tls["unsupported"].items():
            lines += ["", f"**{p}: not supported by this build** (exited at start: `{why}`)."]
    al = res["allocations"]
    if al:
        lines += ["", f"Heap allocations of the release balancerd (malloc counter preloaded, after a warm-up): "
                      f"**{al['per_keepalive_request']:g} per keep-alive request** (over {al['keepalive_requests']:,} requests "
                      f"on one connection; target 0), **{al['per_close_connection']:g} per new connection** with one "
                      f"`Connection: close` request (over {al['close_connections']:,} connections; target ≤ 2)."]
    m = res["memory"]
    if m:
        lines += ["", f"Idle connections: each proxy freshly started, {a['idle_conns']:,} client connections that each made one "
                      f"keep-alive request and stay open; per connection = (RSS with them − RSS before) / {a['idle_conns']:,}. "
                      f"Then {a['waves']} such waves, each closed before the next; RSS of the serving process (nginx: its worker) "
                      f"after each wave is closed:", ""]
        lines.append("| proxy | RSS before | " + " | ".join(f"wave {i + 1}" for i in range(a["waves"])) + " |")
        lines.append("|---|---|" + "---|" * a["waves"])
        for p in PROXIES:
            lines.append(f"| {p} | {m[p]['rss_before_kib'] / 1024:.1f} MB | "
                         + " | ".join(f"{x / 1024:.1f}" for x in m[p]["rss_after_wave_kib"]) + " |")
    lay = res["listener_layout"]
    if lay:
        lines += ["", "Listener layout, balancerd TCP mode with 2 threads (one round):", "",
                  "| layout | keep-alive req/s | new-connection req/s |", "|---|---|---|",
                  f"| SO_REUSEPORT listener per loop | {fmt_num(lay['reuseport']['keepalive_rps'])} | "
                  f"{fmt_num(lay['reuseport']['close_rps'])} |",
                  f"| one shared listener | {fmt_num(lay['shared']['keepalive_rps'])} | "
                  f"{fmt_num(lay['shared']['close_rps'])} |"]
    errs = [(k, p, e[p]["errors"], e[p]["non_2xx"]) for k, e in res["scenarios"].items() for p in PROXIES
            if e[p]["errors"] or e[p]["non_2xx"]]
    if errs:
        lines += ["", "wrk reported errors (all rounds): " + "; ".join(
            f"{res['scenarios'][k]['label']} ({res['scenarios'][k]['connections']} conns) {p}: {e} socket errors, "
            f"{n} non-2xx" for k, p, e, n in errs) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# the chart: hand-written SVG

COLORS = {"balancerd": "#e8590c", "haproxy": "#1971c2", "nginx": "#2f9e44", "balancerd_tcp": "#868e96"}


def esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(doc):
    """Panels of horizontal bars, one group per scenario and one bar per proxy. Bars are
    scaled within each group (the groups differ by orders of magnitude) and every bar
    carries its value, so the chart reads without an axis."""
    res, mach, a = doc["results"], doc["machine"], doc["settings"]
    sc = res["scenarios"]
    panels = []
    rps_groups = [(e["label"] + (f" ({e['connections']:,} conns)" if e["connections"] != a["conns"] else ""),
                   {p: e[p]["rps"] for p in PROXIES}) for e in sc.values()]
    p99_groups = [(g[0], {p: e[p]["p99_ms"] for p in PROXIES}) for g, e in zip(rps_groups, sc.values())]
    if sc:
        panels.append(("Requests per second", "higher is better", True, rps_groups, ""))
        panels.append(("p99 latency (ms)", "lower is better", False, p99_groups, " ms"))
    extra_hi, extra_lo = [], []
    for key in ("http_keepalive", "http_keepalive_many"):
        if key in sc:
            extra_hi.append((f"requests per CPU-second, HTTP keep-alive ({sc[key]['connections']:,} conns)",
                             {p: sc[key][p]["req_per_cpu_s"] for p in PROXIES}, ""))
    if res["download"]:
        d = res["download"]
        vals = {p: d[p]["mb_s"] for p in PROXIES}
        vals["balancerd_tcp"] = d["balancerd_tcp"]["mb_s"]
        extra_hi.append(("1 GiB download, HTTP mode (grey: balancerd TCP mode)", vals, " MB/s"))
    m = res["memory"]
    if m:
        extra_lo.append((f"memory per idle keep-alive connection ({a['idle_conns']:,} conns)",
                         {p: m[p]["per_idle_conn_kib"] for p in PROXIES}, " KiB"))
        extra_lo.append((f"RSS after {a['waves']} waves of {a['idle_conns']:,} idle connections",
                         {p: m[p]["rss_after_last_wave_mb"] for p in PROXIES}, " MB"))
    tls_groups = [(f"{h['label']}, per CPU-s" if unit == "per_cpu_s" else h["label"],
                   {p: h[p][unit] for p in PROXIES}, " /s" if unit == "per_s" else "")
                  for h in (res.get("handshakes") or {}).values() for unit in ("per_s", "per_cpu_s")]
    if "https_keepalive" in sc:
        tls_groups.insert(0, ("requests per CPU-second, HTTPS keep-alive",
                              {p: sc["https_keepalive"][p]["req_per_cpu_s"] for p in PROXIES}, ""))
    if res.get("tls_download"):
        tls_groups.append(("1 GiB download over TLS", {p: res["tls_download"][p]["mb_s"] for p in PROXIES}, " MB/s"))
    if tls_groups:
        panels.append(("TLS", "higher is better", True, [(g[0], g[1]) for g in tls_groups], [g[2] for g in tls_groups]))
    if extra_hi:
        panels.append(("CPU and download", "higher is better", True, [(g[0], g[1]) for g in extra_hi],
                       [g[2] for g in extra_hi]))
    if extra_lo:
        panels.append(("Memory", "lower is better", False, [(g[0], g[1]) for g in extra_lo],
                       [g[2] for g in extra_lo]))

    col_w, gap, margin = 560, 40, 30
    label_w, bar_max = 92, 360
    bar_h, bar_gap, group_title_h, group_gap = 17, 4, 22, 16
    width = margin * 2 + col_w * 2 + gap

    def group_height(values):
        n = sum(1 for k in values if values[k] is not None or k in PROXIES)
        return group_title_h + n * (bar_h + bar_gap) + group_gap

    def panel_height(groups):
        return 46 + sum(group_height(v) for _, v in groups)

    out = []
    header_h = 108
    # Lay panels out in two columns, in order, each panel going to the shorter column.
    cols = [header_h, header_h]
    placed = []
    for panel in panels:
        c = 0 if cols[0] <= cols[1] else 1
        placed.append((panel, margin + c * (col_w + gap), cols[c]))
        cols[c] += panel_height(panel[3]) + 20
    # balancerd's own figures (no peer to compare with) as a text panel, in the shorter column.
    notes = []
    al = res["allocations"]
    if al:
        notes.append((f"{al['per_keepalive_request']:g}", "heap allocations per keep-alive request", "target 0"))
        notes.append((f"{al['per_close_connection']:g}", "heap allocations per new connection (Connection: close)",
                      "target ≤ 2"))
    if res["download"]:
        d = res["download"]
        notes.append((f"{d['balancerd']['mb_s'] / d['balancerd_tcp']['mb_s']:.2f}×",
                      "1 GiB download, HTTP mode / TCP mode", "target ≥ 0.9×"))
    if m:
        notes.append((f"{m['balancerd']['waves_ratio']:.2f}×", f"RSS after wave {a['waves']} / after wave 1",
                      "target ≤ 1.10×"))
    notes_at = None
    if notes:
        c = 0 if cols[0] <= cols[1] else 1
        notes_at = (margin + c * (col_w + gap), cols[c])
        cols[c] += 46 + 26 * len(notes) + 20
    height = max(cols) + 24

    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">')
    out.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    out.append(f'<text x="{margin}" y="34" font-size="21" font-weight="bold" fill="#212529">'
               f'balancerd vs haproxy {esc(mach["haproxy"].split("-")[0])} vs nginx {esc(mach["nginx"])}</text>')
    sub1 = (f"{doc['date']} · {mach['nproc']} cores, {mach['cpu_model']}, kernel {mach['kernel']} · "
            f"load average {doc['loadavg_start'].split()[0]} → {doc['loadavg_end'].split()[0]} · "
            f"{'quick run, one round' if a['quick'] else 'median of ' + str(a['rounds']) + ' interleaved rounds'}")
    sub2 = (f"loopback, one worker each, wrk -t1 -c{a['conns']} -d{a['seconds']}s, two nginx backends · "
            f"bars scaled within each group · ratio = balancerd / best peer")
    out.append(f'<text x="{margin}" y="56" font-size="13" fill="#495057">{esc(sub1)}</text>')
    out.append(f'<text x="{margin}" y="74" font-size="13" fill="#495057">{esc(sub2)}</text>')
    lx = margin
    for p in PROXIES:
        out.append(f'<rect x="{lx}" y="86" width="14" height="14" fill="{COLORS[p]}"/>')
        out.append(f'<text x="{lx + 20}" y="98" font-size="13" fill="#212529">{p}</text>')
        lx += 110

    for (title, note, higher, groups, units), x0, y0 in placed:
        out.append(f'<text x="{x0}" y="{y0 + 22}" font-size="16" font-weight="bold" fill="#212529">{esc(title)}'
                   f'<tspan dx="10" font-size="12" font-weight="normal" fill="#868e96">{esc(note)}</tspan></text>')
        out.append(f'<line x1="{x0}" y1="{y0 + 30}" x2="{x0 + col_w}" y2="{y0 + 30}" stroke="#dee2e6"/>')
        y = y0 + 46
        for gi, (glabel, values) in enumerate(groups):
            unit = units[gi] if isinstance(units, list) else units
            ratio = best_peer_ratio(values, higher)
            good = ratio is not None and ((ratio >= 1.0) if higher else (ratio <= 1.0))
            out.append(f'<text x="{x0}" y="{y + 12}" font-size="13" font-weight="bold" fill="#343a40">{esc(glabel)}</text>')
            if ratio is not None:
                out.append(f'<text x="{x0 + col_w}" y="{y + 12}" font-size="13" font-weight="bold" text-anchor="end" '
                           f'fill="{"#2b8a3e" if good else "#c92a2a"}">{ratio:.2f}× best peer</text>')
            y += group_title_h
            present = [v for v in values.values() if v is not None]
            top = max(present) if present else 1
            for p, v in values.items():
                out.append(f'<text x="{x0 + label_w - 6}" y="{y + bar_h - 4}" font-size="12" text-anchor="end" '
                           f'fill="#495057">{"balancerd TCP" if p == "balancerd_tcp" else p}</text>')
                w = 0 if v is None or top <= 0 else max(1.0, bar_max * v / top)
                out.append(f'<rect x="{x0 + label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" '
                           f'fill="{COLORS[p]}"/>')
                out.append(f'<text x="{x0 + label_w + w + 6:.1f}" y="{y + bar_h - 4}" font-size="12" '
                           f'font-weight="{"bold" if p == "balancerd" else "normal"}" fill="#212529">'
                           f'{esc(fmt_short(v) + (unit if v is not None else ""))}</text>')
                y += bar_h + bar_gap
            y += group_gap
    if notes_at:
        x0, y0 = notes_at
        out.append(f'<text x="{x0}" y="{y0 + 22}" font-size="16" font-weight="bold" fill="#212529">balancerd alone'
                   f'<tspan dx="10" font-size="12" font-weight="normal" fill="#868e96">the targets of issue 8</tspan></text>')
        out.append(f'<line x1="{x0}" y1="{y0 + 30}" x2="{x0 + col_w}" y2="{y0 + 30}" stroke="#dee2e6"/>')
        y = y0 + 52
        for value, text, target in notes:
            out.append(f'<text x="{x0 + label_w - 6}" y="{y}" font-size="15" font-weight="bold" text-anchor="end" '
                       f'fill="{COLORS["balancerd"]}">{esc(value)}</text>')
            out.append(f'<text x="{x0 + label_w + 4}" y="{y}" font-size="13" fill="#212529">{esc(text)}'
                       f'<tspan dx="8" fill="#868e96">{esc(target)}</tspan></text>')
            y += 26
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seconds_positional", nargs="?", type=int, help="seconds per wrk case (same as --seconds)")
    ap.add_argument("--quick", action="store_true", help="about a minute: short cases, one round, fewer connections")
    ap.add_argument("--seconds", type=int, help="seconds per wrk case (default 10, quick 2)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds; throughput figures are their median (default 3, quick 1)")
    ap.add_argument("--conns", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--many-conns", type=int, help="connections of the many-connections case (default 5000, quick 2000)")
    ap.add_argument("--idle-conns", type=int, help="idle keep-alive connections per wave (default 3000, quick 1000)")
    ap.add_argument("--waves", type=int, help="waves of idle connections (default 10, quick 3)")
    ap.add_argument("--alloc-requests", type=int, help="keep-alive requests counted (default 10000, quick 3000)")
    ap.add_argument("--alloc-connections", type=int, help="new connections counted (default 2000, quick 500)")
    ap.add_argument("--tls-clients", type=int, default=4,
                    help="concurrent `openssl s_time` clients of the handshake cases (default 4)")
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(list(SCENARIOS) +
                    ["download", "memory", "allocations", "layout", "tls_handshakes", "tls_download"]))
    ap.add_argument("--balancerd", default=os.path.join(ROOT, ".build", "release", "balancerd"))
    ap.add_argument("--malloc-counter", help="libmalloccounter.so (Tests/MallocCounter) for the allocation figures")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--snapshot", action="store_true", help="also copy the chart to Benchmarks/chart.svg (committed)")
    ap.add_argument("--chart-only", metavar="JSON", help="redraw the chart and table from a results JSON, run nothing")
    a = ap.parse_args()

    q = a.quick
    a.seconds = a.seconds or a.seconds_positional or (2 if q else 10)
    a.rounds = a.rounds or (1 if q else 3)
    a.many_conns = a.many_conns or (2000 if q else 5000)
    a.idle_conns = a.idle_conns or (1000 if q else 3000)
    a.waves = a.waves or (3 if q else 10)
    a.alloc_requests = a.alloc_requests or (3000 if q else 10000)
    a.alloc_connections = a.alloc_connections or (500 if q else 2000)
    a.alloc_warmup = 2000
    everything = list(SCENARIOS) + ["download", "memory", "allocations", "tls_handshakes", "tls_download"] \
        + ([] if q else ["layout"])
    a.scenarios = a.only.split(",") if a.only else everything
    unknown = set(a.scenarios) - set(SCENARIOS) - {"download", "memory", "allocations", "layout", "tls_handshakes",
                                                    "tls_download"}
    if unknown:
        ap.error(f"unknown case(s) {', '.join(sorted(unknown))}")

    os.makedirs(a.out, exist_ok=True)
    if a.chart_only:
        with open(a.chart_only) as f:
            doc = json.load(f)
        doc["rows"] = rows(doc["results"], doc["settings"]["waves"])
        emit(doc, a)
        return

    # Each idle connection is a descriptor here and one or two in the proxy; wrk's 5,000
    # connections need as many. Raise the soft limit to the hard one (20000 here).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    bench = Bench(a)
    started = datetime.datetime.now(datetime.timezone.utc)
    doc = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"quick": q, "seconds": a.seconds, "rounds": a.rounds, "conns": a.conns,
                     "many_conns": a.many_conns, "idle_conns": a.idle_conns, "waves": a.waves,
                     "alloc_requests": a.alloc_requests, "alloc_connections": a.alloc_connections,
                     "cases": a.scenarios, "open_file_limit": hard, "wrk_timeout": WRK_TIMEOUT,
                     "tls_clients": a.tls_clients},
        "machine": machine_facts(a.balancerd),
        "loadavg_start": loadavg(),
    }
    try:
        doc["results"] = bench.run()
    finally:
        bench.procs.stop_all()
        shutil.rmtree(bench.work, ignore_errors=True)
    doc["loadavg_end"] = loadavg()
    doc["duration_s"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds())
    doc["rows"] = rows(doc["results"], a.waves)
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    emit(doc, a)


def emit(doc, a):
    md = markdown(doc)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(md)
    svg = svg_chart(doc)
    with open(os.path.join(a.out, "latest.svg"), "w") as f:
        f.write(svg)
    if a.snapshot:
        shutil.copyfile(os.path.join(a.out, "latest.svg"), os.path.join(HERE, "chart.svg"))
    print()
    print(md)
    print(f"wrote {a.out}/latest.json, latest.md, latest.svg" + (" and Benchmarks/chart.svg" if a.snapshot else ""))


if __name__ == "__main__":
    # A SIGTERM (a killed run) unwinds like ^C, so the finally blocks stop what we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
