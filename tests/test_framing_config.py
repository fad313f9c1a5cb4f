import pytest
from hypothesis import given, strategies as st

from p2pcompute.errors import ConfigError, MessageTooLarge, WireError
from p2pcompute.node.config import Config, parse_size
from p2pcompute.node.framing import FrameReader, frame


class ChunkedStream:
    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk = data, chunk

    async def read(self, max_bytes: int = 65536) -> bytes:
        out, self.data = self.data[: min(self.chunk, max_bytes)], self.data[min(self.chunk, max_bytes):]
        return out


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 50))
async def test_frames_survive_any_chunking(payloads, chunk):
    reader = FrameReader(ChunkedStream(b"".join(frame(p) for p in payloads), chunk), 1000)
    got = []
    while (f := await reader.read_frame()) is not None:
        got.append(f)
    assert got == payloads


async def test_announced_oversized_frame_is_refused_without_reading_it():
    reader = FrameReader(ChunkedStream(frame(b"x" * 5000), 64), 1000)
    with pytest.raises(MessageTooLarge):
        await reader.read_frame()


async def test_truncated_frame_is_an_error():
    reader = FrameReader(ChunkedStream(frame(b"abcdef")[:-2], 3), 1000)
    with pytest.raises(WireError):
        await reader.read_frame()


def test_config_precedence_file_env_flag(tmp_path):
    (tmp_path / "config.toml").write_text('cpus = 3\nmemory = "2GiB"\nlabels = { zone = "eu" }\nlog_level = "warning"\n')
    cfg = Config.load(tmp_path, flags={"log_level": "debug"}, env={"P2PCOMPUTE_CPUS": "5"})
    assert cfg.cpus == 5 and cfg.sources["cpus"] == "env"
    assert cfg.memory == 2 << 30 and cfg.sources["memory"].endswith("config.toml")
    assert cfg.labels == {"zone": "eu"}
    assert cfg.log_level == "debug" and cfg.sources["log_level"] == "flag"
    assert cfg.describe()["api_port"] == {"value": 0, "source": "default"}


def test_env_lists_and_home(tmp_path):
    cfg = Config.load(None, env={"P2PCOMPUTE_HOME": str(tmp_path), "P2PCOMPUTE_BOOTSTRAP": "/ip4/10.0.0.1/tcp/1, /dns4/b.example/tcp/2",
                                 "P2PCOMPUTE_LABELS": "x=1,y=2"})
    assert cfg.data_dir == tmp_path and cfg.bootstrap == ["/ip4/10.0.0.1/tcp/1", "/dns4/b.example/tcp/2"] and cfg.labels == {"x": "1", "y": "2"}


@pytest.mark.parametrize("text, message", [
    ("cpus = [", "not valid TOML"),
    ("colour = 'blue'", "unknown setting 'colour'"),
    ("memory = 'lots'", "is not a size"),
    ("api_port = 70000", "not a port"),
    ("cpus = 'two'", "bad value"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Config.load(tmp_path, env={})


def test_sizes():
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("512MB") == 512_000_000
    assert parse_size("1.5 KiB") == 1536
    with pytest.raises(ConfigError):
        parse_size("-3GB")


def test_labels_peers_would_refuse_are_refused_in_one_short_line(tmp_path):
    many = ",".join(f"k{i}=v" for i in range(40))
    with pytest.raises(ConfigError, match="at most 32 labels"):
        Config.load(tmp_path, env={"P2PCOMPUTE_LABELS": many})
    with pytest.raises(ConfigError, match="at most 128 characters") as err:
        Config.load(tmp_path, env={"P2PCOMPUTE_LABELS": "k=" + "v" * 5000})
    assert len(str(err.value)) < 300  # the value is cut short, not echoed whole
    assert Config.load(tmp_path, env={"P2PCOMPUTE_LABELS": "zone=eu"}).labels == {"zone": "eu"}
