"""A real peer in its own OS process, for tests that kill or freeze it.

Usage: python tests/peer_process.py DELAY_SECONDS
Prints its full multiaddr on one line, then answers Ping after DELAY_SECONDS.
"""

import sys

import trio

from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging
from p2pcompute.node.messages import Ping, Pong


async def main(delay: float) -> None:
    quiet_libp2p_logging()
    transport = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])

    async def slow_pong(peer, msg):
        await trio.sleep(delay)
        return Pong(msg.nonce)

    transport.on_request(Ping, slow_pong)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        print(transport.listen_addresses()[0], flush=True)


if __name__ == "__main__":
    trio.run(main, float(sys.argv[1]))
