"""The example workload: the scene, and cloud detection as a graph, in WAT and in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from p2pcompute.ops import cloud, jobfile, png, scene, tensor_format
from p2pcompute.ops.opset import Spec, lookup

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    scene.write_geotiff(path, scene.make_scene(size=192, seed=11))
    return path


def test_scene_is_deterministic_multiband_16bit_geotiff_with_clouds_land_and_water(small_scene):
    again = scene.make_scene(size=192, seed=11)
    with tifffile.TiffFile(small_scene) as tif:
        data = tif.asarray()
        tags = tif.pages[0].tags
        assert {33550, 33922, 34735} <= {t.code for t in tags.values()}  # georeferencing
        assert json.loads(tif.pages[0].description)["bands"] == list(scene.BANDS)
    assert data.dtype == np.uint16 and data.shape == (5, 192, 192)
    assert np.array_equal(data, again)
    assert not np.array_equal(data, scene.make_scene(size=192, seed=12))
    blue, nir = data[0].astype(int), data[3].astype(int)
    water, cloudy = nir < 1000, blue > 4000
    assert 0.05 < water.mean() < 0.6 and 0.01 < cloudy.mean() < 0.7 and (~water & ~cloudy).mean() > 0.1


def write_job(tmp_path: Path, doc: dict, name: str) -> Path:
    path = tmp_path / f"{name}.job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_graph_and_webassembly_detections_agree_bit_for_bit(small_scene, tmp_path):
    runs = {}
    for form, doc in (("graph", cloud.graph_job(str(small_scene), "out-graph")),
                      ("wasm", cloud.wasm_job(str(small_scene), "out-wasm"))):
        job = jobfile.load(write_job(tmp_path, doc, form))
        result = jobfile.run_local(job)
        assert result.ok, result.message
        runs[form] = (job.output_dir / "mask.png").read_bytes(), \
            tensor_format.read_file(job.output_dir / "cloud_fraction.tensor")
    (graph_png, graph_fraction), (wasm_png, wasm_fraction) = runs["graph"], runs["wasm"]
    assert graph_png == wasm_png
    assert graph_fraction.tobytes() == wasm_fraction.tobytes()
    bands = dict(zip(scene.BANDS, tifffile.imread(small_scene)))
    mask, fraction = cloud.detect_numpy(**bands)
    assert np.array_equal(png.read_gray(graph_png), mask)
    assert float(graph_fraction) == fraction and 0.05 < fraction < 0.9


def test_wasm_memory_limit_is_reported(small_scene, tmp_path):
    doc = cloud.wasm_job(str(small_scene))
    doc["limits"]["wasm_memory"] = "256KiB"
    result = jobfile.run_local(jobfile.load(write_job(tmp_path, doc, "tight")))
    assert (result.status, result.resource, result.limit) == ("resource_exceeded", "wasm_memory", 256 << 10)
    assert "out of memory" in result.message


def test_shipped_examples_match_the_code():
    graph_doc = yaml.safe_load((EXAMPLES / "cloud-graph.job.yaml").read_text())
    wasm_doc = yaml.safe_load((EXAMPLES / "cloud-wasm.job.yaml").read_text())
    assert graph_doc == cloud.graph_job("scene.tif", "out-graph")
    assert wasm_doc == cloud.wasm_job("scene.tif", "out-wasm")
    graph = cloud.cloud_graph()
    specs = graph.infer({band: Spec(np.dtype("uint16"), (4, 4)) for band in scene.BANDS})
    not_portable = [n.name for n in graph.nodes
                    if not lookup(n.op).portable([specs[r] for r in n.inputs])]
    assert not_portable == ["cloud_fraction"]  # the mask uses only bit-exact operators


@pytest.mark.slow
def test_full_size_scene_detections_agree(tmp_path):
    path = tmp_path / "scene.tif"
    scene.write_geotiff(path, scene.make_scene())
    assert 9_000_000 < path.stat().st_size < 12_000_000
    outs = []
    for form, doc in (("graph", cloud.graph_job(str(path), "g")), ("wasm", cloud.wasm_job(str(path), "w"))):
        job = jobfile.load(write_job(tmp_path, doc, form))
        assert jobfile.run_local(job).ok
        outs.append((job.output_dir / "mask.png").read_bytes())
    assert outs[0] == outs[1]
