"""``p2pcompute dht ...`` against a node with the DHT service and its control API (in process)."""

import json

import trio

from p2pcompute.cli.main import main
from p2pcompute.node.api import API_FILE, TOKEN_FILE, ControlApi, serve_api

from test_dht_driver import start_chain


async def test_dht_commands_talk_to_the_daemon(tmp_path, capsys):
    async with trio.open_nursery() as nursery:
        nodes = await start_chain(nursery, 3)
        node, _dht = nodes[0]
        url = await nursery.start(serve_api, ControlApi(node, "tok"), "127.0.0.1", 0)
        (tmp_path / API_FILE).write_text(url + "\n")
        (tmp_path / TOKEN_FILE).write_text("tok\n")

        async def cli(*args):
            code = await trio.to_thread.run_sync(main, [*args, "--data-dir", str(tmp_path)])
            return code, capsys.readouterr().out

        code, out = await cli("dht", "provide", "some dataset", "--json")
        assert code == 0 and json.loads(out)["key"] == b"some dataset".hex()
        code, out = await cli("dht", "providers", "some dataset")
        assert code == 0 and str(node.peer_id) in out
        code, out = await cli("dht", "providers", "nobody has it")
        assert code == 1 and "no provider found" in out
        target = nodes[2][0]
        code, out = await cli("dht", "find-peer", str(target.peer_id), "--json")
        answer = json.loads(out)
        assert code == 0 and answer["found"] and answer["peer_id"] == str(target.peer_id)
        code, out = await cli("dht", "find-peer", str(target.peer_id))
        assert code == 0 and target.transport.listen_addresses()[0].split("/p2p/")[0] in out
        nursery.cancel_scope.cancel()


def test_dht_help_explains_keys(capsys):
    for args in (["dht", "provide", "--help"], ["dht", "providers", "--help"]):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code == 0
        out = capsys.readouterr().out
        assert "SHA-256" in out and "multihash" in out


def test_dht_protocols_setting(tmp_path):
    import pytest

    from p2pcompute.errors import ConfigError
    from p2pcompute.node.config import Config

    assert Config.load(tmp_path, env={}).dht_protocols == ["/p2pcompute/kad/1.0.0", "/ipfs/lan/kad/1.0.0"]
    cfg = Config.load(tmp_path, env={"P2PCOMPUTE_DHT_PROTOCOLS": "/p2pcompute/kad/1.0.0"})
    assert cfg.dht_protocols == ["/p2pcompute/kad/1.0.0"]
    with pytest.raises(ConfigError, match="dht_protocols"):
        Config.load(tmp_path, env={"P2PCOMPUTE_DHT_PROTOCOLS": "/ipfs/kad/1.0.0"})  # the public DHT: not ours to join


async def test_ping_looks_up_a_peer_it_does_not_know_in_the_dht(tmp_path, capsys):
    """A knows B, B knows C; A has no connection to C and no address for it: `ping C` asks the DHT."""
    from dataclasses import replace

    from test_dht_driver import CONFIG, boot_of, make_node, wait_for

    quiet = replace(CONFIG, bootstrap_interval=3600.0, refresh_interval=3600.0)  # one bootstrap lookup each
    async with trio.open_nursery() as nursery:
        a, da = make_node(0, (), quiet)
        await nursery.start(a.run)
        b, db = make_node(1, [boot_of(a)], quiet)
        await nursery.start(b.run)
        await wait_for(lambda: b.peer_id in da.table and a.peer_id in db.table)
        c, dc = make_node(2, [boot_of(b)], quiet)
        await nursery.start(c.run)
        await wait_for(lambda: c.peer_id in db.table and len(dc.table) >= 1)
        await trio.sleep(0.5)  # c's one bootstrap lookup may have dialled a: undo what a learned from it
        if c.peer_id in a.transport.connected_peers():
            await a.transport._host.disconnect(a.transport._libp2p_id(c.peer_id))
        a.transport._addrs.pop(c.peer_id, None)
        da.book._addrs.pop(c.peer_id, None)
        assert c.peer_id not in a.transport.connected_peers() and not da.book.get(c.peer_id)

        url = await nursery.start(serve_api, ControlApi(a, "tok"), "127.0.0.1", 0)
        (tmp_path / API_FILE).write_text(url + "\n")
        (tmp_path / TOKEN_FILE).write_text("tok\n")
        code = await trio.to_thread.run_sync(main, ["ping", str(c.peer_id), "-n", "2", "--json",
                                                    "--data-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert code == 0, out
        answer = json.loads(out)
        assert len(answer) == 2 and all(p["peer"] == str(c.peer_id) and p["rtt_ms"] > 0 for p in answer)

        # a peer nobody knows: one clear line, no traceback
        from p2pcompute.node.identity import Identity

        nobody = Identity.from_seed(b"\x77" * 32).peer_id
        code = await trio.to_thread.run_sync(main, ["ping", str(nobody), "--data-dir", str(tmp_path)])
        captured = capsys.readouterr()
        assert code == 1 and "DHT knows no address" in captured.out + captured.err
        assert "Traceback" not in captured.out + captured.err
        nursery.cancel_scope.cancel()
