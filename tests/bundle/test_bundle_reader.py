"""The runtime's bundle reader: opens folders and archives, refuses every tampered, incomplete or unsafe bundle
with a message naming the bundle and the file, and checks the models against their fixtures without torch.

The bundle under test holds two small ONNX models written with `onnx.helper` (an "encoder" that reads real packets
of the committed lab sample, and a "reasoner" with the contract's four outputs); their expected outputs are computed
here with numpy, so the fixtures check onnxruntime against an independent computation.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import packetclip.bundle as bundle_module
from packetclip.bundle import (
    BundleError,
    check_fixtures,
    default_bundle_path,
    load_bundle,
    load_concepts,
    load_descriptions,
    sha256_file,
)
from packetclip.classes import FINE_CLASSES
from packetclip.featurizer import featurize_pcap, pack
from packetclip_training.export.bundle import ModelSpec, pack_tarball, write_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_CAPTURE = REPO_ROOT / "samples" / "lab-quick" / "capture.pcap"
MISSION_DIR = REPO_ROOT / "rules" / "missions"
EMBED, SLOTS, ALIGNED = 8, 4, 6
CONCEPTS = [
    {"mission": "dos", "concept": "flood", "kind": "key"},
    {"mission": "dos", "concept": "packet storm", "kind": "associated"},
    {"mission": "recon", "concept": "port scan", "kind": "key"},
]


def _graph_model(nodes, name, inputs, outputs, weights) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(value, key) for key, value in weights.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def encoder_model(weight: np.ndarray) -> onnx.ModelProto:
    """connection_embedding = (mean byte value of each valid packet / 255) @ weight."""
    nodes = [
        helper.make_node("Cast", ["bytes"], ["bytes_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["bytes_f"], ["mean"], axes=[2], keepdims=0),
        helper.make_node("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mean", "valid_f"], ["kept"]),
        helper.make_node("Div", ["kept", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "w"], ["connection_embedding"]),
    ]
    inputs = [
        helper.make_tensor_value_info("bytes", TensorProto.UINT8, ["batch", 30, 128]),
        helper.make_tensor_value_info("valid", TensorProto.BOOL, ["batch", 30]),
    ]
    outputs = [helper.make_tensor_value_info("connection_embedding", TensorProto.FLOAT, ["batch", EMBED])]
    return _graph_model(nodes, "encoder", inputs, outputs, {"w": weight, "scale": np.float32(255.0)})


def encoder_numpy(inputs: dict, weight: np.ndarray) -> dict:
    mean = inputs["bytes"].astype(np.float32).mean(axis=2) * inputs["valid"]
    return {"connection_embedding": (mean / np.float32(255.0)) @ weight}


def reasoner_model(w: dict) -> onnx.ModelProto:
    """h = [connection, number of valid slots]; four heads: softmax, softmax, sigmoid, unit vector."""
    nodes = [
        helper.make_node("Cast", ["context_valid"], ["valid_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["valid_f", "ones"], ["count"]),
        helper.make_node("Concat", ["connection", "count"], ["h"], axis=1),
        helper.make_node("MatMul", ["h", "wc"], ["zc"]),
        helper.make_node("Softmax", ["zc"], ["coarse"], axis=-1),
        helper.make_node("MatMul", ["h", "wf"], ["zf"]),
        helper.make_node("Softmax", ["zf"], ["fine"], axis=-1),
        helper.make_node("MatMul", ["h", "wk"], ["zk"]),
        helper.make_node("Sigmoid", ["zk"], ["concepts"]),
        helper.make_node("MatMul", ["h", "wa"], ["za"]),
        helper.make_node("LpNormalization", ["za"], ["aligned"], axis=-1, p=2),
    ]
    inputs = [
        helper.make_tensor_value_info("connection", TensorProto.FLOAT, ["batch", EMBED]),
        helper.make_tensor_value_info("context_valid", TensorProto.BOOL, ["batch", SLOTS]),
    ]
    widths = {"coarse": 4, "fine": len(FINE_CLASSES), "concepts": len(CONCEPTS), "aligned": ALIGNED}
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["batch", v]) for k, v in widths.items()]
    return _graph_model(nodes, "reasoner", inputs, outputs, w)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reasoner_numpy(inputs: dict, w: dict) -> dict:
    count = inputs["context_valid"].astype(np.float32) @ w["ones"]
    h = np.concatenate([inputs["connection"], count], axis=1)
    aligned = h @ w["wa"]
    return {
        "coarse": _softmax(h @ w["wc"]),
        "fine": _softmax(h @ w["wf"]),
        "concepts": 1.0 / (1.0 + np.exp(-(h @ w["wk"]))),
        "aligned": aligned / np.linalg.norm(aligned, axis=-1, keepdims=True),
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A valid two-model bundle, written once; tests copy it before changing anything."""
    folder = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(7)
    packed = pack(list(itertools.islice(featurize_pcap(LAB_CAPTURE), 6)))
    encoder_inputs = {"bytes": packed["bytes"], "valid": packed["valid"]}
    encoder_weight = rng.standard_normal((30, EMBED)).astype(np.float32)
    onnx.save(encoder_model(encoder_weight), folder / "encoder.onnx")
    encoder_out = encoder_numpy(encoder_inputs, encoder_weight)
    weights = {
        "ones": np.ones((SLOTS, 1), np.float32),
        **{
            key: rng.standard_normal((EMBED + 1, width)).astype(np.float32)
            for key, width in (("wc", 4), ("wf", len(FINE_CLASSES)), ("wk", len(CONCEPTS)), ("wa", ALIGNED))
        },
    }
    reasoner_inputs = {
        "connection": encoder_out["connection_embedding"],
        "context_valid": rng.random((len(packed["valid"]), SLOTS)) < 0.5,
    }
    onnx.save(reasoner_model(weights), folder / "reasoner.onnx")
    texts = [f"a {name.replace('_', ' ')} seen from one host" for name in FINE_CLASSES]
    return write_bundle(
        folder / "bundle",
        name="reader-test",
        version="1.0",
        models={
            "encoder": ModelSpec(folder / "encoder.onnx", encoder_inputs, encoder_out, 240, 30),
            "reasoner": ModelSpec(
                folder / "reasoner.onnx", reasoner_inputs, reasoner_numpy(reasoner_inputs, weights)
            ),
        },
        concepts=CONCEPTS,
        descriptions=(texts, list(FINE_CLASSES), rng.standard_normal((len(texts), ALIGNED))),
        missions=sorted(MISSION_DIR.glob("*.yaml")),
        data_card={"name": "lab-quick"},
        metrics={},
        training={},
        featurizer={"max_packets": 30, "snaplen": 128},
        context={"slots": SLOTS, "features": []},
    )


@pytest.fixture
def bundle_dir(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    index = len(data) // 2 if offset is None else offset
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_folder_opens_with_its_manifest_facts(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert (bundle.name, bundle.version) == ("reader-test", "1.0")
    assert bundle.fine_classes == FINE_CLASSES and bundle.coarse_classes[0] == "benign"
    assert bundle.roles == ("encoder", "reasoner")
    assert bundle.model_paths == {
        "encoder": bundle_dir / "encoder.onnx",
        "reasoner": bundle_dir / "reasoner.onnx",
    }
    assert all(path.is_file() for path in bundle.fixture_paths.values())
    assert bundle.concepts == CONCEPTS == load_concepts(bundle)
    assert bundle.context_slots == SLOTS and bundle.featurizer == {"max_packets": 30, "snaplen": 128}
    assert set(bundle.mission_paths) == {"benign", "bruteforce", "dos", "recon"}
    assert bundle.model_io("encoder")["inputs"]["bytes"] == {"dtype": "uint8", "shape": ["batch", 30, 128]}
    with pytest.raises(BundleError, match="no model 'ranker'"):
        bundle.model_io("ranker")


def test_descriptions_come_back_as_float32_unit_rows_with_class_names(bundle_dir):
    texts, fine, embeddings = load_descriptions(load_bundle(bundle_dir))
    assert fine == list(FINE_CLASSES) and len(texts) == len(FINE_CLASSES)
    assert texts[1] == "a icmp flood seen from one host"
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(FINE_CLASSES), ALIGNED)
    assert np.abs(np.linalg.norm(embeddings, axis=1) - 1.0).max() < 2e-3


def test_fixtures_pass_against_an_independent_numpy_computation(bundle_dir):
    differences = check_fixtures(load_bundle(bundle_dir))
    assert set(differences) == {"encoder", "reasoner"}
    assert all(0.0 <= value <= 1e-4 for value in differences.values())


def test_a_fixture_that_disagrees_with_its_model_fails_the_check(bundle_dir):
    """Hashes updated so the bundle verifies: only running the model can catch this."""
    path = bundle_dir / "fixtures" / "reasoner.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["fine"] = arrays["fine"] + np.float32(0.01)
    np.savez(path, **arrays)
    edit_manifest(bundle_dir, lambda m: m["files"].update({"fixtures/reasoner.npz": sha256_file(path)}))
    bundle = load_bundle(bundle_dir)
    with pytest.raises(
        BundleError, match=r"reasoner\.onnx: output 'fine' differs from fixtures/reasoner\.npz"
    ):
        check_fixtures(bundle)
    assert check_fixtures(bundle, tolerance=0.02)["reasoner"] == pytest.approx(0.01, abs=1e-4)


def test_a_tarball_opens_from_the_cache_with_the_same_manifest(bundle_dir, tmp_path, cache):
    archive = pack_tarball(bundle_dir, tmp_path / "b.tar.gz")
    bundle = load_bundle(archive, cache_dir=cache)
    assert bundle.source == archive
    assert bundle.root.is_relative_to(cache) and bundle.root.name == "reader-test-1.0"
    assert bundle.manifest == load_bundle(bundle_dir).manifest
    assert set(check_fixtures(bundle)) == {"encoder", "reasoner"}
    assert load_bundle(archive, cache_dir=cache).root == bundle.root, "a second open reuses the extraction"


def test_a_damaged_cached_extraction_is_extracted_again(bundle_dir, tmp_path, cache, caplog):
    archive = pack_tarball(bundle_dir, tmp_path / "b.tar.gz")
    root = load_bundle(archive, cache_dir=cache).root
    flip_byte(root / "concepts.json")
    with caplog.at_level(logging.WARNING, logger="packetclip.bundle"):
        again = load_bundle(archive, cache_dir=cache)
    assert "extracting again" in caplog.text
    assert (again.root / "concepts.json").read_bytes() == (bundle_dir / "concepts.json").read_bytes()


def test_a_cached_extraction_rehashed_to_match_itself_is_not_trusted(bundle_dir, tmp_path, cache, caplog):
    """Someone with write access to the cache changes a file and rewrites the cached manifest's hash list to
    match: the copy is consistent with itself but its manifest is not the archive's, so it is extracted again."""
    archive = pack_tarball(bundle_dir, tmp_path / "b.tar.gz")
    root = load_bundle(archive, cache_dir=cache).root
    (root / "concepts.json").write_text("[]\n")
    edit_manifest(root, lambda m: m["files"].update({"concepts.json": sha256_file(root / "concepts.json")}))
    load_bundle(root)  # consistent with itself
    with caplog.at_level(logging.WARNING, logger="packetclip.bundle"):
        again = load_bundle(archive, cache_dir=cache)
    assert "is not the archive's" in caplog.text
    assert (again.root / "concepts.json").read_bytes() == (bundle_dir / "concepts.json").read_bytes()


TAMPERED = ["encoder.onnx", "concepts.json", "descriptions.npz", "fixtures/reasoner.npz", "missions/dos.yaml"]


@pytest.mark.parametrize("relative", TAMPERED)
def test_one_changed_byte_in_any_file_is_refused_naming_it(bundle_dir, relative):
    flip_byte(bundle_dir / relative)
    with pytest.raises(BundleError, match=rf"bundle {re.escape(str(bundle_dir))}: {relative}: sha256"):
        load_bundle(bundle_dir)
    load_bundle(bundle_dir, verify=False)  # the structure is still fine: only verification sees the change


def test_one_changed_byte_inside_a_tarball_is_refused_naming_the_archive_and_file(
    bundle_dir, tmp_path, cache
):
    flip_byte(bundle_dir / "descriptions.json", offset=5)
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir, arcname="top")
    with pytest.raises(BundleError, match=rf"bundle {re.escape(str(archive))}: descriptions\.json: sha256"):
        load_bundle(archive, cache_dir=cache)


def test_a_missing_file_is_refused_naming_it(bundle_dir):
    (bundle_dir / "fixtures" / "encoder.npz").unlink()
    with pytest.raises(BundleError, match=r"fixtures/encoder\.npz: listed in the manifest but missing"):
        load_bundle(bundle_dir)


def test_an_unlisted_file_is_refused_naming_it(bundle_dir):
    (bundle_dir / "missions" / "extra.yaml").write_text("name: extra\n")
    with pytest.raises(BundleError, match=r"missions/extra\.yaml: not listed in the manifest"):
        load_bundle(bundle_dir)


def test_a_listed_file_that_links_outside_the_bundle_is_refused(bundle_dir, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copyfile(bundle_dir / "concepts.json", outside)
    (bundle_dir / "concepts.json").unlink()
    (bundle_dir / "concepts.json").symlink_to(outside)  # same bytes, so only the location gives it away
    with pytest.raises(BundleError, match=r"concepts\.json: points outside the bundle"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="packetclip-bundle/2"), "format 'packetclip-bundle/2'"),
        (lambda m: m.pop("data_card"), "missing key 'data_card'"),
        (lambda m: m["models"]["reasoner"].pop("fixture"), r"models\.reasoner: missing key 'fixture'"),
        (
            lambda m: m["files"].update({"../outside.txt": "0" * 64}),
            r"'\.\./outside\.txt' is not a plain relative",
        ),
        (lambda m: m["files"].update({"/etc/passwd": "0" * 64}), r"'/etc/passwd' is not a plain relative"),
        (lambda m: m["models"]["encoder"].update(file="other.onnx"), r"'other\.onnx' is not listed in files"),
        (lambda m: m["classes"].update(fine=sorted(FINE_CLASSES)), "classes.fine"),
        (
            lambda m: m.update(featurizer_version="999"),
            r"featurizer version '999' differs from this runtime's",
        ),
        (lambda m: m["featurizer"].update(window=-1.5), r"featurizer\.window -1\.5 is not a positive"),
        (lambda m: m["featurizer"].update(window=True), r"featurizer\.window True is not a positive"),
    ],
    ids=[
        "format",
        "missing-key",
        "model-key",
        "dotdot",
        "absolute",
        "unlisted-model",
        "classes",
        "featurizer",
        "window-negative",
        "window-boolean",
    ],
)
def test_a_wrong_manifest_is_refused_naming_the_manifest(bundle_dir, change, message):
    edit_manifest(bundle_dir, change)
    with pytest.raises(
        BundleError, match=rf"bundle {re.escape(str(bundle_dir))}: manifest\.json: .*{message}"
    ):
        load_bundle(bundle_dir, verify=False)


def test_a_manifest_that_is_not_json_or_absent_is_refused(bundle_dir):
    (bundle_dir / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(bundle_dir)


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), link
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("top/../../evil", data=b"x"), "path leaves the bundle folder"),
        (_member("../evil", data=b"x"), "path leaves the bundle folder"),
        (_member("/tmp/evil", data=b"x"), "absolute path"),
        (_member("top/link", tarfile.SYMTYPE, link="/etc/passwd"), "links, devices"),
        (_member("top/hard", tarfile.LNKTYPE, link="top/manifest.json"), "links, devices"),
        (_member("top/tty", tarfile.CHRTYPE), "links, devices"),
        (_member("other/file", data=b"x"), "outside the archive's single top folder"),
    ],
    ids=["dotdot-inside", "dotdot", "absolute", "symlink", "hardlink", "device", "second-top"],
)
def test_unsafe_archive_members_are_refused_and_nothing_escapes(bundle_dir, tmp_path, cache, member, message):
    archive = tmp_path / "work" / "evil.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir, arcname="top")
        tar.addfile(*member)
    with pytest.raises(BundleError, match=rf"bundle {re.escape(str(archive))}: .*{message}"):
        load_bundle(archive, cache_dir=cache)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "work" / "evil").exists()
    leftovers = list(cache.iterdir()) if cache.exists() else []
    assert leftovers == [], "a refused archive leaves no extraction behind"


def test_a_file_beside_the_top_folder_is_refused(bundle_dir, tmp_path, cache):
    archive = tmp_path / "flat.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir / "manifest.json", arcname="manifest.json")
    with pytest.raises(BundleError, match="a file outside the archive's top folder"):
        load_bundle(archive, cache_dir=cache)


def test_a_missing_bundle_says_where_it_looked(tmp_path):
    with pytest.raises(BundleError, match=rf"no bundle at {re.escape(str(tmp_path / 'nowhere'))}"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"not a bundle folder or a \.tar\.gz"):
        load_bundle(tmp_path / "model.bin")


def test_the_default_bundle_path_is_inside_the_package():
    import packetclip

    path = default_bundle_path()
    assert path == Path(packetclip.__file__).parent / "models" / "default"
    if not path.exists():
        with pytest.raises(BundleError, match="no bundle at"):
            load_bundle(path)


def test_reading_and_checking_a_bundle_needs_neither_torch_nor_onnx(bundle_dir):
    script = textwrap.dedent(
        f"""
        import sys
        import packetclip.bundle as b
        assert not {{"torch", "onnx", "onnxruntime", "packetclip_training"}} & set(sys.modules), "import pulled in"
        bundle = b.load_bundle({str(bundle_dir)!r})
        differences = b.check_fixtures(bundle)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "packetclip_training"))
        assert not loaded, loaded
        print(sorted(differences))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['encoder', 'reasoner']"


@pytest.mark.parametrize(("limit", "value"), [("MAX_ARCHIVE_BYTES", 1000), ("MAX_ARCHIVE_MEMBERS", 3)])
def test_an_archive_over_the_size_or_member_cap_is_refused(
    bundle_dir, tmp_path, cache, monkeypatch, limit, value
):
    archive = pack_tarball(bundle_dir, tmp_path / "b.tar.gz")
    monkeypatch.setattr(bundle_module, limit, value)
    with pytest.raises(BundleError, match=rf"more than {value} (bytes|members)"):
        load_bundle(archive, cache_dir=cache)
    assert list(cache.iterdir()) == [], "the partial extraction is removed"


def test_a_folder_whose_files_exceed_an_archives_limit_is_refused_before_hashing(bundle_dir, monkeypatch):
    from packetclip import bundle as bundle_module

    size = sum(
        (bundle_dir / name).stat().st_size
        for name in json.loads((bundle_dir / "manifest.json").read_text())["files"]
    )
    monkeypatch.setattr(bundle_module, "MAX_ARCHIVE_BYTES", size - 1)
    hashed: list[object] = []
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path) or "")
    with pytest.raises(BundleError, match="more than a bundle may"):
        load_bundle(bundle_dir)
    assert hashed == []
    monkeypatch.setattr(bundle_module, "MAX_ARCHIVE_BYTES", size)
    monkeypatch.undo()
    load_bundle(bundle_dir)
