#!/usr/bin/env python3
"""Timing probe for scripts/bench.sh: start a command, measure when something becomes reachable.

  bench-probe.py icmp ADDR        --result FILE [options] -- CMD [ARGS...]
  bench-probe.py dns SERVER NAME  --result FILE [options] -- CMD [ARGS...]
  bench-probe.py http HOST PORT   --result FILE [options] -- CMD [ARGS...]
  bench-probe.py latency --direct HOST:PORT --via HOST:PORT --result FILE [-n N]

The probe opens its socket first, then takes t0, starts CMD (stdin /dev/null, stderr inherited,
stdout to --cmd-out or inherited) and, every --interval ms from t0 on, sends
  icmp: an ICMP echo request to ADDR (a raw socket: needs root). "Network is unreachable" and
        similar send errors are expected until a route exists and are simply retried.
  dns:  an A query for NAME to SERVER:53 (UDP). Success is a NOERROR answer holding an A record.
It stops at the first success once CMD has exited, when CMD exits non-zero, or after --timeout s,
then kills CMD if it still runs and writes one line to FILE:
  reached_ms cmd_ms cmd_rc probes detail
reached_ms: from t0 to the first success (-1: never); cmd_ms: from t0 to CMD's exit (-1: killed
at the timeout); cmd_rc: CMD's exit status; probes: requests sent; detail: the A record's address
(dns) or the replying address (icmp), "-" if none. Times are monotonic, in ms with 3 decimals.
Exit status 0 when FILE was written (whatever was measured), 2 on bad usage or socket errors.

http: every --interval ms, one HTTP/1.1 GET --path (default /) on a fresh connection to HOST:PORT,
      waiting for its answer (up to 5 s: a listener that holds connections makes it slow, not
      failed) before the next. Success is a 200 answer whose body is not --not-body (to wait for a
      new process after a restart: the test server answers "pid N"). With --stop-cmd, CMD (a
      server started to time its own start) is stopped, its whole process group, at the first
      success instead of being waited for. detail: the body's first line, spaces as "_".

latency: the per-request round trip of HTTP/1.1 GETs to two addresses of the same server,
      alternating between them (--direct first, then --via, then --via first...), after --warmup
      requests each that are not counted. Two rounds of -n requests to each: "fresh" (a new TCP
      connection per request, as curl does; the time includes connect) and "keepalive" (one
      connection per address, reused). Writes to FILE one line per round and address:
        round address n median_us p99_us mean_us
      and, with --raw PREFIX, every value to PREFIX-ROUND-ADDRESS.txt. The two addresses must
      answer the same body, or the exit status is 3.
"""

import argparse
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


class IcmpProbe:
    def __init__(self, addr: str):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def send(self) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        payload = b"ovb-bench-probe!"
        hdr = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + payload), self.ident, self.seq) + payload
        self.sock.sendto(pkt, (self.addr, 0))

    def receive(self):
        """A detail string on an echo reply from ADDR with our id, else None."""
        data, src = self.sock.recvfrom(2048)
        if src[0] != self.addr or len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8:
            return None
        typ, _code, _ck, ident, _seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
        if typ == 0 and ident == self.ident:
            return src[0]
        return None


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def skip_name(msg: bytes, off: int) -> int:
    while off < len(msg):
        ln = msg[off]
        if ln == 0:
            return off + 1
        if ln & 0xC0 == 0xC0:
            return off + 2
        off += 1 + ln
    raise ValueError("truncated name")


class DnsProbe:
    def __init__(self, server: str, name: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((server, 53))
        self.sock.setblocking(False)
        self.question = encode_name(name) + struct.pack("!HH", 1, 1)
        self.next_id = int.from_bytes(os.urandom(2), "big")
        self.sent = set()

    def send(self) -> None:
        self.next_id = (self.next_id + 1) & 0xFFFF
        self.sent.add(self.next_id)
        hdr = struct.pack("!HHHHHH", self.next_id, 0x0100, 1, 0, 0, 0)
        self.sock.send(hdr + self.question)

    def receive(self):
        """The address of an A record in a NOERROR answer to one of our queries, else None."""
        msg = self.sock.recv(4096)
        if len(msg) < 12:
            return None
        qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
        if qid not in self.sent or not flags & 0x8000 or flags & 0x000F != 0 or an == 0:
            return None
        try:
            off = 12
            for _ in range(qd):
                off = skip_name(msg, off) + 4
            for _ in range(an):
                off = skip_name(msg, off)
                typ, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[off : off + 10])
                off += 10
                if typ == 1 and rdlen == 4:
                    return socket.inet_ntoa(msg[off : off + 4])
                off += rdlen
        except (ValueError, struct.error):
            return None
        return None


def http_get(sock: socket.socket, host: str, path: str, close: bool) -> tuple:
    """Sends one GET on SOCK and reads the answer (Content-Length framed): (status, body)."""
    conn = "close" if close else "keep-alive"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n".encode("ascii"))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the answer's headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ConnectionError("not an HTTP answer")
    status = int(parts[1])
    length = None
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length is None:
        while True:  # no length: the body ends with the connection
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    else:
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed in the middle of the body")
            body += chunk
    return status, body


def split_hostport(s: str) -> tuple:
    host, _, port = s.rpartition(":")
    return host, int(port)


def run_http(args, cmd) -> int:
    host, port = args.target[0], int(args.target[1])
    not_body = args.not_body.encode().strip() if args.not_body is not None else None
    out = open(args.cmd_out, "wb") if args.cmd_out else None
    done = {}

    t0 = time.monotonic()
    try:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, start_new_session=args.stop_cmd)
    except OSError as e:
        print(f"bench-probe: cannot start {cmd[0]}: {e}", file=sys.stderr)
        return 2

    def waiter():
        rc = child.wait()
        done["t"] = time.monotonic()
        done["rc"] = rc

    threading.Thread(target=waiter, daemon=True).start()
    interval = args.interval / 1000.0
    deadline = t0 + args.timeout
    reached = None
    detail = "-"
    probes = 0
    next_send = t0
    while reached is None and time.monotonic() < deadline:
        if "rc" in done and done["rc"] != 0 and not args.stop_cmd:
            break
        if args.stop_cmd and "rc" in done:
            break  # the server exited before it answered
        probes += 1
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                status, body = http_get(s, f"{host}:{port}", args.path, True)
            if status == 200 and body.strip() != not_body:
                reached = time.monotonic()
                detail = (body.decode("utf-8", "replace").splitlines() or ["-"])[0].strip().replace(" ", "_") or "-"
                break
        except (OSError, ValueError):
            pass
        next_send += interval
        now = time.monotonic()
        if next_send < now:
            next_send = now
        time.sleep(max(0.0, next_send - now))
    if args.stop_cmd and "rc" not in done:
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            child.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    elif reached is not None and "rc" not in done:
        try:  # success: the command gets the rest of the time to finish
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    if "rc" not in done and child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(3)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    time.sleep(0.01)  # let the waiter thread record the exit
    if out:
        out.close()

    def ms(t):
        return "-1" if t is None else f"{(t - t0) * 1000:.3f}"

    cmd_done = None if args.stop_cmd else done.get("t")
    rc = done.get("rc", child.returncode)
    with open(args.result, "w", encoding="ascii") as f:
        f.write(f"{ms(reached)} {ms(cmd_done)} {rc} {probes} {detail}\n")
    return 0


def percentile(values, p):
    """Nearest rank: the 99th percentile of 1000 values is the 990th smallest."""
    v = sorted(values)
    k = max(1, -(-len(v) * p // 100))
    return v[int(k) - 1]


def run_latency(argv) -> int:
    ap = argparse.ArgumentParser(prog="bench-probe.py latency")
    ap.add_argument("--direct", required=True, help="HOST:PORT of the server itself")
    ap.add_argument("--via", required=True, help="HOST:PORT in front of it (the listener)")
    ap.add_argument("-n", type=int, default=1000, help="requests to each address per round")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--path", default="/")
    ap.add_argument("--result", required=True)
    ap.add_argument("--raw")
    args = ap.parse_args(argv)
    targets = {"direct": split_hostport(args.direct), "via": split_hostport(args.via)}
    bodies = {}
    clock = time.perf_counter_ns
    lines = []
    for rnd in ("fresh", "keepalive"):
        socks = {}
        samples = {"direct": [], "via": []}

        def one(name):
            host, port = targets[name]
            if rnd == "fresh":
                t = clock()
                with socket.create_connection((host, port), timeout=10) as s:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    status, body = http_get(s, f"{host}:{port}", args.path, True)
                took = clock() - t
            else:
                s = socks.get(name)
                if s is None:
                    s = socks[name] = socket.create_connection((host, port), timeout=10)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t = clock()
                status, body = http_get(s, f"{host}:{port}", args.path, False)
                took = clock() - t
            if status != 200:
                raise ConnectionError(f"{name} answered {status}")
            bodies.setdefault(name, body)
            return took / 1000.0

        try:
            for i in range(args.warmup + args.n):
                order = ("direct", "via") if i % 2 == 0 else ("via", "direct")
                for name in order:
                    us = one(name)
                    if i >= args.warmup:
                        samples[name].append(us)
        except (OSError, ValueError) as e:
            print(f"bench-probe: latency ({rnd}): {e}", file=sys.stderr)
            return 2
        finally:
            for s in socks.values():
                s.close()
        for name in ("direct", "via"):
            v = samples[name]
            lines.append(f"{rnd} {name} {len(v)} {statistics.median(v):.1f} {percentile(v, 99):.1f} {statistics.fmean(v):.1f}")
            if args.raw:
                with open(f"{args.raw}-{rnd}-{name}.txt", "w", encoding="ascii") as f:
                    f.write("".join(f"{x:.1f}\n" for x in v))
    with open(args.result, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    if bodies.get("direct") != bodies.get("via"):
        print(f"bench-probe: the two addresses answered differently: {bodies.get('direct')!r} and {bodies.get('via')!r}", file=sys.stderr)
        return 3
    return 0


def main() -> int:
    if sys.argv[1:2] == ["latency"]:
        return run_latency(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["icmp", "dns", "http"])
    ap.add_argument("target", nargs="+", help="icmp: ADDR; dns: SERVER NAME; http: HOST PORT")
    ap.add_argument("--result", required=True)
    ap.add_argument("--cmd-out")
    ap.add_argument("--interval", type=float, default=1.0, help="ms between probes (default 1)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds (default 20)")
    ap.add_argument("--path", default="/", help="http: the path to GET (default /)")
    ap.add_argument("--not-body", help="http: an answer with exactly this body does not count")
    ap.add_argument("--stop-cmd", action="store_true", help="http: stop CMD at the first success")
    args, cmd = ap.parse_known_args()
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        ap.error("no command after --")
    if args.mode == "http":
        if len(args.target) != 2 or not args.target[1].isdigit():
            ap.error("http takes a host and a port")
        return run_http(args, cmd)
    try:
        if args.mode == "icmp":
            if len(args.target) != 1:
                ap.error("icmp takes one address")
            probe = IcmpProbe(args.target[0])
        else:
            if len(args.target) != 2:
                ap.error("dns takes a server and a name")
            probe = DnsProbe(args.target[0], args.target[1])
    except OSError as e:
        print(f"bench-probe: cannot open the probe socket: {e}", file=sys.stderr)
        return 2

    out = open(args.cmd_out, "wb") if args.cmd_out else None
    t0 = time.monotonic()
    try:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out)
    except OSError as e:
        print(f"bench-probe: cannot start {cmd[0]}: {e}", file=sys.stderr)
        return 2
    interval = args.interval / 1000.0
    deadline = t0 + args.timeout
    reached = cmd_done = None
    rc = None
    detail = "-"
    probes = 0
    next_send = t0
    while True:
        now = time.monotonic()
        if rc is None:
            rc = child.poll()
            if rc is not None:
                cmd_done = now
        if reached is not None and rc is not None:
            break
        if (rc is not None and rc != 0) or now >= deadline:
            break
        if reached is None and now >= next_send:
            try:
                probe.send()
                probes += 1
            except OSError:
                pass  # no route / unreachable yet: try again at the next tick
            next_send += interval
            if next_send < now:
                next_send = now + interval
        wait = max(0.0, min(next_send, deadline) - time.monotonic())
        if reached is not None:
            wait = min(max(wait, 0.005), 0.005)  # only the command is left: check it every 5 ms
        try:
            r, _, _ = select.select([probe.sock], [], [], wait)
        except InterruptedError:
            continue
        if r and reached is None:
            try:
                got = probe.receive()
            except OSError:
                got = None  # e.g. ECONNREFUSED from an earlier query: the server is not up yet
            if got is not None:
                reached = time.monotonic()
                detail = got
        elif r:
            try:
                probe.receive()
            except OSError:
                pass
    if rc is None:
        child.send_signal(signal.SIGTERM)
        try:
            rc = child.wait(3)
        except subprocess.TimeoutExpired:
            child.kill()
            rc = child.wait()
    if out:
        out.close()

    def ms(t):
        return "-1" if t is None else f"{(t - t0) * 1000:.3f}"

    with open(args.result, "w", encoding="ascii") as f:
        f.write(f"{ms(reached)} {ms(cmd_done)} {rc} {probes} {detail}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
