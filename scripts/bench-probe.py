#!/usr/bin/env python3
"""Timing probe for scripts/bench.sh: start a command, measure when something becomes reachable.

  bench-probe.py icmp ADDR        --result FILE [options] -- CMD [ARGS...]
  bench-probe.py dns SERVER NAME  --result FILE [options] -- CMD [ARGS...]

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
"""

import argparse
import os
import select
import signal
import socket
import struct
import subprocess
import sys
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["icmp", "dns"])
    ap.add_argument("target", nargs="+", help="icmp: ADDR; dns: SERVER NAME")
    ap.add_argument("--result", required=True)
    ap.add_argument("--cmd-out")
    ap.add_argument("--interval", type=float, default=1.0, help="ms between probes (default 1)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds (default 20)")
    args, cmd = ap.parse_known_args()
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        ap.error("no command after --")
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
