import logging

from p2pcompute.node.libp2p_transport import quiet_libp2p_logging

quiet_libp2p_logging(logging.CRITICAL)
