#!/usr/bin/env python3
"""Discovery under churn: reaction time and failed requests, measured, not asserted.

    python3 Benchmarks/discovery.py [--cycles 100] [--clients 50] [--reactions 40]

Starts the Consul API test server (Tests/ConsulTestServer; the docker-compose stack runs
the real Consul), stamp backends as separate processes, and a release balancerd with
--consul, all on 127.0.0.1. Then:

1. Reaction time: a backend is registered while clients poll; the time from the register
   call returning to the first response from that backend. Median and p99.
2. Churn: 50 keep-alive clients under continuous load while register/deregister cycles
   go through Consul; each cycle deregisters first and stops the server 1 s later. Counts
   failed requests (anything but a 200).
3. SIGKILL: backends killed with SIGKILL while still registered, under the same load of
   idempotent GETs. Counts failed requests.

Loads are bounded by the cycle counts. Only processes this script started are stopped,
by pid. Results go to stdout and Benchmarks/results/discovery.md.
"""
import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSUL_SERVER = os.path.join(ROOT, "Tests", "ConsulTestServer", "consul_test_server.py")

STAMP_SERVER = r'''
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
# The default backlog of 5 drops SYNs under this load, and a dropped SYN is retried after
# 1 s and 3 s: that measures the backend's accept queue, not the balancer.
http.server.ThreadingHTTPServer.request_queue_size = 1024
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
'''

started = []


def start(args, **kw):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kw)
    started.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Backend:
    def __init__(self, name):
        self.name = name
        self.proc = start([sys.executable, "-c", STAMP_SERVER, name])
        self.port = int(self.proc.stdout.readline())


class Consul:
    def __init__(self):
        self.proc = start([sys.executable, CONSUL_SERVER, "--port", "0"])
        line = self.proc.stdout.readline()
        self.port = int(line.strip().rsplit(":", 1)[1])

    def put(self, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("PUT", path, body=json.dumps(body) if body is not None else None)
        r = c.getresponse()
        r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status}")

    def register(self, backend):
        self.put("/v1/agent/service/register",
                 {"Name": "web", "ID": backend.name, "Address": "127.0.0.1", "Port": backend.port})

    def deregister(self, backend):
        self.put(f"/v1/agent/service/deregister/{backend.name}")


class Load:
    """Keep-alive clients doing GET / in a loop, counting results."""

    def __init__(self, port, clients):
        self.port = port
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.failures = []
        self.first_seen = {}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = None
        while not self.stop_flag.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read().decode(errors="replace")
                now = time.monotonic()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                        self.first_seen.setdefault(body, now)
                    else:
                        self.failed += 1
                        self.failures.append(f"status {r.status}")
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # a failed request, counted
                with self.lock:
                    self.failed += 1
                    self.failures.append(repr(e)[:80])
                if conn is not None:
                    conn.close()
                conn = None

    def finish(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--reactions", type=int, default=40)
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()

    subprocess.run(["swift", "build", "-c", "release", "--product", "balancerd"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    binary = os.path.join(ROOT, ".build", "release", "balancerd")
    consul = Consul()
    base = [Backend(f"base{i}") for i in range(2)]
    for b in base:
        consul.register(b)
    # BENCH_LOG=FILE keeps balancerd's request log there (for looking into a failure).
    log_file = os.environ.get("BENCH_LOG")
    bd = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--consul", f"http://127.0.0.1:{consul.port}",
                           "--service", "web", "--threads", "2"] + ([] if log_file else ["--quiet"]),
                          stderr=subprocess.PIPE, text=True)
    started.append(bd)
    port = None
    while port is None:
        line = bd.stderr.readline()
        if "listening" in line:
            port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1])
    def drain():
        with open(log_file or os.devnull, "w") as f:
            for line in bd.stderr:
                f.write(line)
    threading.Thread(target=drain, daemon=True).start()
    time.sleep(0.5)
    results = []

    # 1. Reaction time.
    load = Load(port, 8)
    reactions = []
    for i in range(args.reactions):
        b = Backend(f"react{i}")
        t0 = time.monotonic()
        consul.register(b)
        t1 = time.monotonic()
        deadline = t1 + 5
        while time.monotonic() < deadline:
            with load.lock:
                seen = load.first_seen.get(b.name)
            if seen is not None:
                reactions.append((seen - t1) * 1000)
                break
            time.sleep(0.001)
        consul.deregister(b)
        time.sleep(0.2)
        stop(b.proc)
    load.finish()
    results.append(("reaction time, register to first request (ms)",
                    f"median {statistics.median(reactions):.1f}, p99 {percentile(reactions, 99):.1f}, "
                    f"max {max(reactions):.1f} over {len(reactions)} registrations"))

    # 2. Churn.
    load = Load(port, args.clients)
    for i in range(args.cycles):
        b = Backend(f"churn{i}")
        consul.register(b)
        time.sleep(0.1)
        consul.deregister(b)
        threading.Timer(1.0, stop, args=(b.proc,)).start()
        time.sleep(0.05)
    time.sleep(1.5)
    load.finish()
    results.append(("churn: %d register/deregister cycles, %d keep-alive clients" % (args.cycles, args.clients),
                    f"{load.ok} requests ok, {load.failed} failed"))
    churn_failures = load.failures[:5]

    # 3. SIGKILL while registered.
    victims = [Backend(f"victim{i}") for i in range(args.kills)]
    for v in victims:
        consul.register(v)
    time.sleep(0.5)
    load = Load(port, args.clients)
    time.sleep(0.5)
    for v in victims:
        stop(v.proc, signal.SIGKILL)
        time.sleep(0.2)
    time.sleep(1)
    load.finish()
    results.append((f"SIGKILL: {args.kills} registered backends killed under load (GET)",
                    f"{load.ok} requests ok, {load.failed} failed"))
    kill_failures = load.failures[:5]

    out = ["# Discovery benchmark, " + time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "",
           "Consul API test server, release balancerd (2 threads), Python keep-alive clients, loopback.", "",
           "| measurement | result |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in results]
    if churn_failures or kill_failures:
        out += ["", "First failures: " + "; ".join(churn_failures + kill_failures)]
    text = "\n".join(out) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "Benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "Benchmarks", "results", "discovery.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in reversed(started):
            stop(p)
