"""Address selection rules (node/addrs.py): pure functions, example and property tests."""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.node.addrs import MAX_ADDRS, announced, expand, ip_of, matches, usable_for

IFACES = ["127.0.0.1", "::1", "192.168.1.20", "10.0.0.5", "fe80::1", "2001:db8::7", "169.254.3.4"]


def test_unspecified_listen_becomes_every_interface_address_loopback_last():
    out = announced(["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"], IFACES)
    assert out == ["/ip4/192.168.1.20/tcp/4001", "/ip4/10.0.0.5/tcp/4001", "/ip6/2001:db8::7/tcp/4001",
                   "/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"]


def test_a_specific_listen_address_is_kept_as_is():
    assert announced(["/ip4/127.0.0.1/tcp/5"], IFACES) == ["/ip4/127.0.0.1/tcp/5"]
    assert expand(["/ip4/10.0.0.5/tcp/5"], IFACES) == ["/ip4/10.0.0.5/tcp/5"]


def test_observed_addresses_are_added_and_announce_replaces_everything():
    listen = ["/ip4/0.0.0.0/tcp/4001"]
    out = announced(listen, ["127.0.0.1"], observed=["/ip4/203.0.113.9/tcp/4001"])
    assert out == ["/ip4/203.0.113.9/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]
    assert announced(listen, IFACES, observed=["/ip4/203.0.113.9/tcp/4001"],
                     announce=["/dns4/example.org/tcp/4001"]) == ["/dns4/example.org/tcp/4001"]


def test_an_observed_address_equal_to_a_listen_address_is_listed_once():
    # the transport's listen addresses carry our /p2p/ID and identify's observed ones may not (or may):
    # the netns test saw 10.77.0.1 listed twice
    me = "/p2p/12D3KooWDFG6amt6MmPyogHeD6dr5N2U7UNzo9uhDMMyZTonwtUv"
    for observed in ("/ip4/10.77.0.1/tcp/4001", "/ip4/10.77.0.1/tcp/4001" + me):
        out = announced(["/ip4/0.0.0.0/tcp/4001" + me], ["127.0.0.1", "10.77.0.1"], observed=[observed])
        assert out == ["/ip4/10.77.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]


def test_no_announce_filters_exact_prefix_and_cidr():
    listen = ["/ip4/0.0.0.0/tcp/4001"]
    assert announced(listen, IFACES, no_announce=["/ip4/10.0.0.0/ipcidr/8", "/ip4/127.0.0.1"]) == [
        "/ip4/192.168.1.20/tcp/4001"]
    assert announced(listen, IFACES, no_announce=["/ip4/192.168.1.20/tcp/4001"]) == [
        "/ip4/10.0.0.5/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]
    assert not matches("/ip4/10.0.0.5/tcp/1", "/ip4/10.0.0.0/ipcidr/zz")
    assert not matches("/ip4/10.0.0.50/tcp/1", "/ip4/10.0.0.5")


def test_loopback_goes_only_to_loopback_peers_link_local_and_unspecified_never():
    addrs = ["/ip4/127.0.0.1/tcp/1", "/ip4/192.168.1.20/tcp/1", "/ip4/0.0.0.0/tcp/1",
             "/ip4/169.254.1.1/tcp/1", "/ip6/fe80::1/tcp/1", "/ip6/::1/tcp/1", "/dns4/x.org/tcp/1"]
    assert usable_for(addrs, "192.168.1.7") == ["/ip4/192.168.1.20/tcp/1", "/dns4/x.org/tcp/1"]
    assert usable_for(addrs, "127.0.0.1") == ["/ip4/127.0.0.1/tcp/1", "/ip4/192.168.1.20/tcp/1",
                                              "/ip6/::1/tcp/1", "/dns4/x.org/tcp/1"]
    assert usable_for(["/ip4/127.0.0.1/tcp/1"], "::ffff:10.0.0.1") == []


def test_malformed_and_oversized_addresses_are_dropped():
    assert usable_for(["", "/ip4/1.2.3.4/tcp/1" + "0" * 300, 5, "/ip4/999.1.1.1/tcp/1"], None) == [
        "/ip4/999.1.1.1/tcp/1"]  # not an IP: passes as an opaque address, like /dns4
    assert ip_of("/ip4/::1/tcp/1") is None and ip_of("/ip6/1.2.3.4/tcp/1") is None


ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
maddrs = st.builds(lambda ip, port: f"/ip{ip.version}/{ip}/tcp/{port}", ips, st.integers(0, 65535))


@given(st.lists(maddrs, max_size=40), ips)
def test_property_nothing_unusable_reaches_a_routable_peer(addrs, remote):
    out = usable_for(addrs, str(remote))
    assert len(out) <= MAX_ADDRS and len(set(out)) == len(out)
    for a in out:
        ip = ip_of(a)
        assert not ip.is_unspecified and not ip.is_link_local
        if not remote.is_loopback:
            assert not ip.is_loopback


@given(st.lists(maddrs, max_size=20), st.lists(ips, max_size=10), st.lists(maddrs, max_size=5))
def test_property_announced_is_bounded_dialable_and_loopback_last(listen, ifaces, no):
    out = announced(listen, [str(i) for i in ifaces], no_announce=no)
    assert len(out) <= MAX_ADDRS
    assert not set(out) & set(no)
    kinds = [ip_of(a).is_loopback for a in out]
    assert kinds == sorted(kinds)
    for a in out:
        assert not ip_of(a).is_unspecified and not ip_of(a).is_link_local
        assert isinstance(ip_of(a), ipaddress.IPv4Address | ipaddress.IPv6Address)
