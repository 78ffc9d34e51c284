#!/usr/bin/env python3
"""A TCP relay that adds a fixed delay to a link (bench/bench.py, section 6).

    python3 bench/relay.py TARGET_PORT DELAY_MS

Listens on 127.0.0.1 (a free port), forwards every connection to
127.0.0.1:TARGET_PORT and holds every chunk it reads for DELAY_MS before
writing it on, in both directions and in order: each chunk leaves DELAY_MS
after it arrived, and chunks behind it are not held any longer, so the relay
adds latency, not a bandwidth limit. DELAY_MS = 10 gives a 20 ms round trip.
Threads (a reader and a writer per direction) and time.sleep: the delay is
kept to a fraction of a millisecond, which an event loop's millisecond
timeouts would not do.

Control on stdin/stdout, one line each way:
  first output line   `port N`
  `stats` -> `stats {json}`: connections accepted, most open at once and
             bytes each way since the last `reset`
  `reset` -> `ok`
  EOF on stdin (the driver went away, however it ended) -> the relay exits.

Python standard library only.
"""

import json
import os
import queue
import socket
import sys
import threading
import time


class Relay:
    def __init__(self, target_port, delay):
        self.target_port = target_port
        self.delay = delay
        self.lock = threading.Lock()
        self.open = 0
        self.reset()

    def reset(self):
        with self.lock:
            self.stats = {"accepted": 0, "max_open": self.open, "up_bytes": 0, "down_bytes": 0, "failed": 0}

    def count(self, key, n):
        with self.lock:
            self.stats[key] += n

    def pipe(self, src, dst, key, done):
        """src -> dst, each chunk `delay` after it was read; returns at EOF
        (passed on as a half-close) or when either side breaks."""
        q = queue.Queue()

        def read():
            try:
                while True:
                    data = src.recv(65536)
                    q.put((time.monotonic() + self.delay, data))
                    if not data:
                        return
                    self.count(key, len(data))
            except OSError:
                q.put((0, None))

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                due, data = q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    break
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return done(False)
                dst.sendall(data)
        except OSError:
            pass
        done(True)

    def handle(self, client):
        with self.lock:
            self.stats["accepted"] += 1
            self.open += 1
            self.stats["max_open"] = max(self.stats["max_open"], self.open)
        try:
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                server.settimeout(None)
            except OSError:
                self.count("failed", 1)
                client.close()
                return
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            left = [2]
            finished = threading.Event()

            def done(broken):
                if broken:  # one side broke: end both directions
                    for s in (client, server):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                with self.lock:
                    left[0] -= 1
                    if left[0] == 0:
                        finished.set()

            threading.Thread(target=self.pipe, args=(server, client, "down_bytes", done), daemon=True).start()
            self.pipe(client, server, "up_bytes", done)
            finished.wait()
            server.close()
            client.close()
        finally:
            with self.lock:
                self.open -= 1

    def serve(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()


def main(target_port, delay_ms):
    relay = Relay(target_port, delay_ms / 1000.0)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=relay.serve, args=(listener,), daemon=True).start()
    out = sys.stdout
    out.write("port %d\n" % listener.getsockname()[1])
    out.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            with relay.lock:
                s = dict(relay.stats, open=relay.open)
            out.write("stats %s\n" % json.dumps(s))
        elif cmd == "reset":
            relay.reset()
            out.write("ok\n")
        else:
            out.write("error unknown command %r\n" % cmd)
        out.flush()
    # stdin closed: the driver is gone (or done). Daemon threads end with us.
    listener.close()
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    try:
        main(int(sys.argv[1]), float(sys.argv[2]))
    except KeyboardInterrupt:
        os._exit(0)
