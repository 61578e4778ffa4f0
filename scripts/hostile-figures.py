#!/usr/bin/env python3
"""Measures the figures of RELIABILITY.md ("Before and after") against a gateway-server binary.

    cargo build --release
    python3 scripts/hostile-figures.py target/release/gateway-server [scenario ...]

Scenarios: idle h2 huge burst sighup sigterm slowloris busy budget (default: all). Each starts
its own server on 127.0.0.1 and prints one line (budget: two). Loopback only; every wait is
bounded.
"""
import json, os, re, signal, socket, subprocess, sys, threading, time

BIN = sys.argv[1]
BUSY_SECS = int(os.environ.get("BUSY_SECS", "60"))
WANTED = sys.argv[2:] or "idle h2 huge burst sighup sigterm slowloris busy budget".split()


class Server:
    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "--host", "127.0.0.1", "--port", "0", *args],
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        self.port = None
        while time.time() < deadline and self.port is None:
            line = self.proc.stderr.readline()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        # Keep draining the log so the server never blocks on it.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def counts(self):
        pid = self.proc.pid
        return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))

    def cpu(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.proc.poll() is None

    def request(self, raw, timeout=5):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            s.sendall(raw)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                final = data
                while final.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in final:
                    final = final.split(b"\r\n\r\n", 1)[1]  # an interim 1xx answer
                if b"\r\n\r\n" in final:
                    head, body = final.split(b"\r\n\r\n", 1)
                    m = re.search(rb"Content-Length: (\d+)", head, re.I)
                    if m and len(body) >= int(m.group(1)):
                        break
            s.close()
            return data
        except OSError:
            return b""

    def post(self, path, body):
        body = json.dumps(body).encode()
        return self.request(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                            % (path.encode(), len(body), body))

    def stop(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def node(i, blob=0):
    return {"node_id": i, "ip_address": "10.0.0.1", "port": 5000 + i, "capabilities": ["raft"],
            "metadata": {"blob": "x" * blob} if blob else {}}


def many(n, fn, workers=8):
    threads = [threading.Thread(target=lambda: [fn() for _ in range(n // workers)]) for _ in range(workers)]
    [t.start() for t in threads]
    [t.join() for t in threads]


def idle():
    s = Server()
    time.sleep(3)
    c0 = s.cpu()
    time.sleep(30)
    used = (s.cpu() - c0) / 30 * 100
    tw = subprocess.run(["ss", "-tan", "state", "time-wait"], capture_output=True, text=True).stdout
    tw = sum(1 for l in tw.splitlines() if f":{s.port} " in l or l.rstrip().endswith(f":{s.port}"))
    print(f"idle: {used:.3f}% of a core over 30 s; threads {s.counts()[0]}; sockets in TIME_WAIT to its port: {tw}")
    s.stop()


def h2():
    s = Server()
    before = s.counts()
    def one():
        try:
            c = socket.create_connection(("127.0.0.1", s.port), timeout=2)
            c.sendall(b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
            c.close()
        except OSError:
            pass
    many(1000, one)
    time.sleep(10)
    after = s.counts()
    print(f"1,000 HTTP/2.0 request lines, 10 s later: threads {before[0]} -> {after[0]}, descriptors {before[1]} -> {after[1]}")
    s.stop()


def huge():
    s = Server()
    before = s.counts()
    many(1000, lambda: s.request(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n", timeout=2))
    time.sleep(10)
    after = s.counts()
    print(f"1,000 x Content-Length 2^64-1, 10 s later: threads {before[0]} -> {after[0]}, descriptors {before[1]} -> {after[1]}")
    s.stop()


def burst():
    s = Server()
    base = s.counts()[0]
    conns = []
    def one():
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        c.recv(4096)
        conns.append(c)
    many(400, one, workers=40)
    peak = s.counts()[0]
    for c in conns:
        c.close()
    marks = []
    for t in (2, 10, 30):
        time.sleep(t - (marks[-1][0] if marks else 0))
        marks.append((t, s.counts()[0]))
    print(f"400 kept-alive connections, then closed: threads {base} -> {peak}; after close: "
          + ", ".join(f"{n} at {t} s" for t, n in marks))
    s.stop()


def sighup():
    s = Server()
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        s.proc.send_signal(sig)
        time.sleep(0.5)
    print(f"SIGHUP then SIGUSR1: {'still running' if s.alive() else f'exited {s.proc.returncode}'}")
    s.stop()


def sigterm():
    s = Server("--workers", "2")
    for i in range(300):
        s.post("/register", node(i, 8 * 1024))
    c = socket.create_connection(("127.0.0.1", s.port))
    c.sendall(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\n\r\n" * 16)
    time.sleep(2)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    try:
        s.proc.wait(timeout=120)
        print(f"SIGTERM with a client pipelining 16 list requests and never reading: exit {s.proc.returncode} after {time.time() - t0:.1f} s")
    except subprocess.TimeoutExpired:
        print("SIGTERM with a client pipelining 16 list requests and never reading: still running after 120 s")
    c.close()
    s.stop()


def slowloris():
    s = Server()
    silent = []
    for _ in range(64):
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        silent.append(c)
    time.sleep(3)  # all 64 taken off tiny_http's queue
    t0 = time.time()
    result = "still refused after 20 s"
    while time.time() - t0 < 20:
        answer = s.post("/register", node(1, 1500))
        if answer.startswith(b"HTTP/1.1 200"):
            result = f"a 1.5 KiB registration answered 200 after {time.time() - t0:.1f} s"
            break
        time.sleep(0.25)
    print(f"64 connections declaring a 2,000-byte body and sending nothing: {result}")
    s.stop()


def busy():
    s = Server()
    for i in range(300):
        s.post("/register", node(i, 15 * 1024))
    held = []
    t0 = time.time()
    while time.time() - t0 < BUSY_SECS and s.alive():
        for _ in range(2):
            try:
                c = socket.create_connection(("127.0.0.1", s.port), timeout=2)
                c.sendall(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(c)
            except OSError:
                pass
        time.sleep(1)
    state = "still running" if s.alive() else f"exited {s.proc.returncode} after {time.time() - t0:.0f} s"
    health = s.request(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)[:12]
    for c in held:
        c.close()
    t1 = time.time()
    after = b""
    while s.alive() and time.time() - t1 < 60 and not after.startswith(b"HTTP/1.1 200"):
        after = s.request(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    back = (f"{time.time() - t1:.1f} s" if after.startswith(b"HTTP/1.1 200")
            else "never (60 s)" if s.alive() else f"never: exited {s.proc.returncode}")
    print(f"300 nodes x 15 KiB, 2 list readers a second that never read, {BUSY_SECS} s: {state}; "
          f"/health while they hang on: {health!r}; /health 200 {back} after they close")
    s.stop()


def budget():
    """Fills a registry to its --max-registry-bytes, builds the list plain and gzipped, and
    compares the resident memory it took with what the registry accounts."""
    def at_the_limits(i):
        return {"node_id": i, "ip_address": "10.1.2.3", "port": 7000,
                "capabilities": [f"{j:03d}" + "c" * 125 for j in range(64)],
                "metadata": {"blob": "m" * (16384 - 11)}}

    def small(i):
        return {"node_id": i, "ip_address": "10.1.2.3", "port": 7000,
                "capabilities": ["raft", "gossip"], "metadata": {"zone": "a"}}

    for what, make, bytes_ in (("at the per-node limits", at_the_limits, 64 << 20),
                               ("small", small, 8 << 20)):
        s = Server("--max-registry-bytes", str(bytes_), "--log-level", "ERROR")
        rss = lambda: int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{s.proc.pid}/status").read()).group(1)) * 1024
        before = rss()
        full = threading.Event()
        counts = [0] * 4

        def fill(k):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            f = c.makefile("rb")
            i = k * 10_000_000
            while not full.is_set():
                body = json.dumps(make(i)).encode()
                c.sendall(b"POST /register HTTP/1.1\r\nHost: x\r\nPrefer: return=minimal\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                status = int(f.readline().split()[1])
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                f.read(length)
                if status == 507:
                    full.set()
                elif status == 200:
                    counts[k] += 1
                    i += 1
                else:
                    raise SystemExit(f"register: {status}")
            c.close()

        threads = [threading.Thread(target=fill, args=(k,)) for k in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        metrics = s.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        used = int(float(re.search(rb"^cluster_gateway_registry_bytes (\S+)", metrics, re.M).group(1)))
        plain = s.request(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 60)
        s.request(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                  b"Connection: close\r\n\r\n", 60)
        grown = rss() - before
        nodes = sum(counts)
        body = len(plain.split(b"\r\n\r\n", 1)[1])
        print(f"budget {bytes_ >> 20} MiB, nodes {what}: {nodes} admitted, {used} bytes accounted, "
              f"list {body} bytes; +{grown / 2**20:.1f} MiB resident = {grown / used:.2f}x accounted, "
              f"{(grown - 2 * used) / nodes:.0f} B a node over twice")
        s.stop()


for name in WANTED:
    globals()[name]()
