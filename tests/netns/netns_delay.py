"""One-way delay between tap pairs: the harness's stand-in for ``netem delay``.

    python netns_delay.py DELAY_MS IN:OUT [IN:OUT ...]

Run inside the harness namespace (``ip netns exec``). Each IN is a tap device
that a tc ``mirred`` filter feeds with the frames one daemon sends; each frame
is written to OUT (a tap on the harness bridge) DELAY_MS later, in order.
Frames the bridge sends to an OUT tap are read and discarded. At most LIMIT
frames wait at once (netem's default limit is 1000); more are dropped, as a
full queue drops them. Prints ``ready`` once every tap is open; exits on
SIGTERM. Kernels built without ``sch_netem`` (this project's CI machines)
still get latency this way; loss and partitions are kernel tc filters.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
LIMIT = 20_000
FRAME = 65_536


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def main(argv: list[str]) -> None:
    delay = float(argv[0]) / 1000
    route: dict[int, int] = {}
    sinks: list[int] = []
    for pair in argv[1:]:
        src, dst = pair.split(":")
        out = open_tap(dst)
        route[open_tap(src)] = out
        sinks.append(out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    poller = select.poll()
    for fd in [*route, *sinks]:
        poller.register(fd, select.POLLIN)
    print("ready", flush=True)
    queue: list[tuple[float, int, int, bytes]] = []
    seq = 0
    while True:
        timeout = None if not queue else max(0.0, queue[0][0] - time.monotonic()) * 1000
        for fd, _ in poller.poll(timeout):
            for _ in range(256):  # a bounded batch per fd, then look at the clock again
                try:
                    frame = os.read(fd, FRAME)
                except BlockingIOError:
                    break
                out = route.get(fd)
                if out is not None and len(queue) < LIMIT:
                    seq += 1
                    heapq.heappush(queue, (time.monotonic() + delay, seq, out, frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                os.write(out, frame)
            except OSError:
                pass  # a full or downed tap drops the frame, as a link would


if __name__ == "__main__":
    main(sys.argv[1:])
