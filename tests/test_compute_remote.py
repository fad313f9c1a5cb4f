"""tensor.compute(client): a DSL graph run by a real daemon, large data travelling as CIDs."""

import numpy as np
import pytest

from p2pcompute import tensor as t
from p2pcompute.node.client import ControlClient
from p2pcompute.storage.blockstore import Blockstore
from test_cli import start_daemon, stop


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("compute") / "peer"
    proc, status = start_daemon(data_dir)
    yield data_dir
    stop(proc)


def test_graph_runs_on_the_daemon_with_large_inputs_and_outputs_as_cids(daemon):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 256))  # 512 KiB: over the inline limit, goes as a CID
    b = rng.standard_normal((256, 256))
    client = ControlClient(daemon)
    hidden = t.from_numpy(a, name="a").matmul(t.from_numpy(b, name="b")).add(1.0).relu()
    total = hidden.reduce_sum()
    remote_hidden, remote_total = t.compute(hidden, total, client=client)
    local_hidden, local_total = t.compute(hidden, total)
    assert np.array_equal(remote_hidden, local_hidden)  # same opset, same machine: bit-identical
    assert remote_total == local_total
    pins = Blockstore.for_data_dir(daemon).pins
    assert len(pins) >= 3  # two inputs and the large output, pinned
    assert total.compute(client) == local_total


def test_a_shape_error_is_refused_before_anything_is_sent():
    with pytest.raises(Exception, match="matmul"):
        t.from_numpy(np.ones((3, 4))).matmul(t.from_numpy(np.ones((5, 2))))


def test_a_task_over_its_memory_limit_is_reported_by_the_daemon(daemon):
    from p2pcompute.errors import UserError
    from p2pcompute.ops.remote import compute_on

    x = t.from_numpy(np.ones((1024, 1024)), name="x")
    graph, feeds = t.to_graph(x.matmul(x).relu())
    with pytest.raises(UserError, match="resource_exceeded"):
        compute_on(ControlClient(daemon), graph, feeds, limits={"memory": 4 << 20})
