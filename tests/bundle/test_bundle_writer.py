"""The bundle writer: torch-exported models in, a complete, hashed, verifiable `packetclip-bundle/1` folder out.

Two real models go in: the tiny packet encoder, exported the way the factory exports it, with real packets of the
committed lab sample as its fixture; and a small stand-in with the reasoner's contract inputs and outputs. Proves
that the manifest carries every contract key with the ONNX graph's own names, dtypes and shapes, that the hashes
are those of the files, that archives are byte-reproducible, and that every invalid input is refused before a
bundle appears, parity violations first.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tarfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from packetclip.bundle import MODEL_KEYS, REQUIRED_KEYS, check_fixtures, load_bundle
from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.featurizer import FEATURIZER_VERSION, featurize_pcap, pack
from packetclip.missions import load_mission, load_missions
from packetclip_training.export.bundle import BundleWriteError, ModelSpec, pack_tarball, write_bundle
from packetclip_training.models.encoder import PacketEncoder, batch_tensors, load_config, parameter_count

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_CAPTURE = REPO_ROOT / "samples" / "lab-quick" / "capture.pcap"
MISSION_DIR = REPO_ROOT / "rules" / "missions"
ENCODER_INPUTS = ["bytes", "direction", "iat", "length", "valid"]
ENCODER_OUTPUTS = ["packet_embeddings", "connection_embedding"]
REASONER_INPUTS = ["connection", "context", "context_features", "context_valid"]
REASONER_OUTPUTS = ["coarse", "fine", "concepts", "aligned"]
SLOTS, CONTEXT_FEATURES, ALIGNED_DIM = 4, 3, 16
CREATED = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)


class EncoderSurface(nn.Module):
    """The encoder with `pack()`'s dtypes as inputs (bytes arrive as uint8)."""

    def __init__(self, encoder: PacketEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, packet_bytes, direction, iat, length, valid):
        return self.encoder(packet_bytes.long(), direction, iat, length, valid)


class ReasonerStandIn(nn.Module):
    """The reasoner's contract surface, small: masked mean over the context, four heads."""

    def __init__(self, embed_dim: int, concept_count: int):
        super().__init__()
        self.mix = nn.Linear(2 * embed_dim + CONTEXT_FEATURES, 24)
        self.coarse = nn.Linear(24, len(COARSE_CLASSES))
        self.fine = nn.Linear(24, len(FINE_CLASSES))
        self.concepts = nn.Linear(24, concept_count)
        self.aligned = nn.Linear(24, ALIGNED_DIM)

    def forward(self, connection, context, context_features, context_valid):
        weight = context_valid.float().unsqueeze(-1)  # (B, A, 1)
        count = weight.sum(dim=1).clamp(min=1.0)  # (B, 1)
        pooled = (context * weight).sum(dim=1) / count  # (B, E)
        extra = (context_features * weight).sum(dim=1) / count  # (B, F)
        h = torch.tanh(self.mix(torch.cat([connection, pooled, extra], dim=-1)))  # (B, 24)
        aligned = self.aligned(h)
        return (
            self.coarse(h).softmax(dim=-1),
            self.fine(h).softmax(dim=-1),
            torch.sigmoid(self.concepts(h)),
            aligned / aligned.norm(dim=-1, keepdim=True),
        )


def _export(module: nn.Module, inputs: dict[str, np.ndarray], outputs: list[str], path: Path) -> dict:
    module.eval()
    tensors = (
        batch_tensors(inputs) if "bytes" in inputs else tuple(torch.from_numpy(v) for v in inputs.values())
    )
    with torch.no_grad():
        expected = {name: t.numpy() for name, t in zip(outputs, module(*tensors), strict=True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            tensors,
            str(path),
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [*inputs, *outputs]},
            opset_version=17,
            dynamo=False,
        )
    return expected


def concept_list() -> list[dict[str, str]]:
    """The first key concept and its first associated concept of every shipped mission."""
    out = []
    for mission in load_missions(MISSION_DIR):
        key = mission.key_concepts[0]
        out.append({"mission": mission.name, "concept": key, "kind": "key"})
        if mission.associated.get(key):
            out.append({"mission": mission.name, "concept": mission.associated[key][0], "kind": "associated"})
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """ONNX files, fixtures and torch outputs of the two models, built once for the module."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sources")
    connections = list(itertools.islice(featurize_pcap(LAB_CAPTURE), 40))
    packed = pack(connections[::5])  # 8 real connections of different lengths
    encoder = PacketEncoder(load_config("packet-encoder-tiny"))
    encoder_inputs = {name: packed[name] for name in ENCODER_INPUTS}
    encoder_expected = _export(EncoderSurface(encoder), encoder_inputs, ENCODER_OUTPUTS, folder / "enc.onnx")
    concepts = concept_list()
    rows = len(packed["valid"])
    rng = np.random.default_rng(0)
    valid = rng.random((rows, SLOTS)) < 0.7
    reasoner_inputs = {
        "connection": encoder_expected["connection_embedding"],
        "context": encoder_expected["packet_embeddings"][:, :SLOTS] * valid[..., None],
        "context_features": rng.standard_normal((rows, SLOTS, CONTEXT_FEATURES)).astype(np.float32),
        "context_valid": valid,
    }
    reasoner = ReasonerStandIn(encoder.config.embed_dim, len(concepts))
    reasoner_expected = _export(reasoner, reasoner_inputs, REASONER_OUTPUTS, folder / "rsn.onnx")
    return {
        "encoder": ModelSpec(
            folder / "enc.onnx", encoder_inputs, encoder_expected, parameter_count(encoder), 1234
        ),
        "reasoner": ModelSpec(
            folder / "rsn.onnx", reasoner_inputs, reasoner_expected, parameter_count(reasoner)
        ),
        "concepts": concepts,
    }


def description_bank(count: int = 22) -> tuple[list[str], list[str], np.ndarray]:
    fine = [FINE_CLASSES[i % len(FINE_CLASSES)] for i in range(count)]
    texts = [f"connection {i} looks like {name.replace('_', ' ')}" for i, name in enumerate(fine)]
    embeddings = np.random.default_rng(1).standard_normal((count, ALIGNED_DIM)) * 3.0
    return texts, fine, embeddings


def bundle_arguments(sources: dict, **changes) -> dict:
    arguments = {
        "name": "packetclip-test",
        "version": "2026.11.27-1",
        "models": {"encoder": sources["encoder"], "reasoner": sources["reasoner"]},
        "concepts": sources["concepts"],
        "descriptions": description_bank(),
        "missions": sorted(MISSION_DIR.glob("*.yaml")),
        "data_card": {"name": "tiny", "counts": {"train": np.int64(8)}},
        "metrics": {"mauc": np.float32(0.5), "undefined": None},
        "training": {"seconds": 1.5},
        "featurizer": {"max_packets": 30, "snaplen": 128},
        "context": {"slots": SLOTS, "features": ["gap", "size", "same_peer"]},
        "created": CREATED,
    }
    arguments.update(changes)
    return arguments


@pytest.fixture(scope="module")
def bundle_dir(sources, tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "b", **bundle_arguments(sources))


def test_manifest_has_every_contract_key_and_the_onnx_signatures(bundle_dir, sources):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert set(manifest) == set(REQUIRED_KEYS)
    assert manifest["format"] == "packetclip-bundle/1"
    assert manifest["featurizer_version"] == FEATURIZER_VERSION
    assert manifest["created"] == "2026-11-27T05:00:00Z"
    assert manifest["classes"] == {
        "coarse": list(COARSE_CLASSES),
        "fine": list(FINE_CLASSES),
        "fine_to_coarse": FINE_TO_COARSE,
    }
    assert manifest["missions"] == ["benign", "bruteforce", "dos", "recon"]
    assert set(manifest["models"]) == {"encoder", "reasoner"}
    encoder = manifest["models"]["encoder"]
    assert set(encoder) == set(MODEL_KEYS)
    assert encoder["file"] == "encoder.onnx" and encoder["fixture"] == "fixtures/encoder.npz"
    assert encoder["inputs"]["bytes"] == {"dtype": "uint8", "shape": ["batch", 30, 128]}
    assert encoder["inputs"]["valid"] == {"dtype": "bool", "shape": ["batch", 30]}
    assert (
        encoder["inputs"]["direction"]["dtype"] == "int8" and encoder["inputs"]["length"]["dtype"] == "int32"
    )
    assert encoder["outputs"]["connection_embedding"] == {"dtype": "float32", "shape": ["batch", 32]}
    assert encoder["parameters"] == sources["encoder"].parameters and encoder["flops_per_packet"] == 1234
    reasoner = manifest["models"]["reasoner"]
    assert list(reasoner["inputs"]) == REASONER_INPUTS and list(reasoner["outputs"]) == REASONER_OUTPUTS
    assert reasoner["outputs"]["fine"]["shape"][-1] == len(FINE_CLASSES)
    assert reasoner["flops_per_packet"] is None
    assert manifest["data_card"]["counts"]["train"] == 8 and manifest["metrics"]["mauc"] == 0.5


def test_files_lists_every_file_but_the_manifest_with_its_sha256(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    expected_layout = {"encoder.onnx", "reasoner.onnx", "fixtures/encoder.npz", "fixtures/reasoner.npz"}
    assert expected_layout | {"concepts.json", "descriptions.npz", "descriptions.json"} <= on_disk
    assert {f"missions/{m}.yaml" for m in manifest["missions"]} <= on_disk
    for relative, digest in manifest["files"].items():
        assert hashlib.sha256((bundle_dir / relative).read_bytes()).hexdigest() == digest, relative


def test_models_missions_and_fixtures_are_what_was_given(bundle_dir, sources):
    assert (bundle_dir / "encoder.onnx").read_bytes() == sources["encoder"].onnx_path.read_bytes()
    for mission in MISSION_DIR.glob("*.yaml"):
        name = load_mission(mission).name
        assert (bundle_dir / "missions" / f"{name}.yaml").read_bytes() == mission.read_bytes()
    with np.load(bundle_dir / "fixtures" / "reasoner.npz") as fixture:
        assert set(fixture.files) == set(REASONER_INPUTS + REASONER_OUTPUTS)
        assert fixture["context_valid"].dtype == bool
        np.testing.assert_array_equal(fixture["fine"], sources["reasoner"].expected_outputs["fine"])
    assert json.loads((bundle_dir / "concepts.json").read_text()) == sources["concepts"]


def test_descriptions_are_float16_unit_rows_with_int16_classes(bundle_dir):
    texts, fine, raw = description_bank()
    with np.load(bundle_dir / "descriptions.npz") as npz:
        embeddings, index = npz["embeddings"], npz["fine"]
    assert embeddings.dtype == np.float16 and index.dtype == np.int16
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    assert np.abs(norms - 1.0).max() < 2e-3  # unit after the float16 cast, not only before it
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.abs(embeddings.astype(np.float64) - unit).max() < 2e-3
    assert [FINE_CLASSES[i] for i in index] == fine
    assert json.loads((bundle_dir / "descriptions.json").read_text()) == {
        "texts": texts,
        "classes": list(FINE_CLASSES),
    }


def test_the_written_bundle_reads_back_and_its_fixtures_pass(bundle_dir):
    bundle = load_bundle(bundle_dir)
    differences = check_fixtures(bundle)
    assert set(differences) == {"encoder", "reasoner"}
    assert max(differences.values()) <= 1e-4


def test_same_inputs_give_the_same_files(bundle_dir, sources, tmp_path):
    again = write_bundle(tmp_path / "again", **bundle_arguments(sources))
    assert (again / "manifest.json").read_bytes() == (bundle_dir / "manifest.json").read_bytes()


def test_tarball_is_byte_identical_when_packed_twice_and_from_a_copy(bundle_dir, tmp_path):
    first = pack_tarball(bundle_dir, tmp_path / "one.tar.gz")
    second = pack_tarball(bundle_dir, tmp_path / "two.tar.gz")
    copy = shutil.copytree(bundle_dir, tmp_path / "copy")  # new inodes and times: must not matter
    third = pack_tarball(copy, tmp_path / "three.tar.gz")
    assert first.read_bytes() == second.read_bytes() == third.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(name.startswith("packetclip-test-2026.11.27-1/") for name in names)
    assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert len(names) == len(json.loads((bundle_dir / "manifest.json").read_text())["files"]) + 1


def test_a_parity_violation_names_the_model_and_output_and_writes_nothing(sources, tmp_path):
    spec = sources["reasoner"]
    wrong = dict(spec.expected_outputs)
    wrong["aligned"] = wrong["aligned"] + np.float32(1e-3)
    broken = ModelSpec(spec.onnx_path, spec.fixture_inputs, wrong, spec.parameters)
    models = {"encoder": sources["encoder"], "reasoner": broken}
    with pytest.raises(BundleWriteError, match=r"model 'reasoner'.*output 'aligned'.*by 0\.001"):
        write_bundle(tmp_path / "out", **bundle_arguments(sources, models=models))
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [], "no partial folder is left behind"


def test_a_looser_tolerance_accepts_what_the_default_refuses(sources, tmp_path):
    spec = sources["reasoner"]
    wrong = dict(spec.expected_outputs)
    wrong["aligned"] = wrong["aligned"] + np.float32(1e-3)
    models = {"reasoner": ModelSpec(spec.onnx_path, spec.fixture_inputs, wrong)}
    out = write_bundle(tmp_path / "out", **bundle_arguments(sources, models=models, tolerance=1e-2))
    assert load_bundle(out).roles == ("reasoner",)


def _with_fixture(spec: ModelSpec, **inputs) -> ModelSpec:
    fixture = {name: value for name, value in spec.fixture_inputs.items() if name not in inputs}
    fixture.update({name: value for name, value in inputs.items() if value is not None})
    return ModelSpec(spec.onnx_path, fixture, spec.expected_outputs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: _with_fixture(s, valid=None), r"fixture_inputs.*missing \['valid'\]"),
        (lambda s: _with_fixture(s, extra=np.zeros((8, 2), np.float32)), r"not in the model \['extra'\]"),
        (lambda s: _with_fixture(s, iat=s.fixture_inputs["iat"].astype(np.float64)), "'iat' is float64"),
        (lambda s: _with_fixture(s, bytes=s.fixture_inputs["bytes"][:, :, :64]), "'bytes' has shape"),
        (
            lambda s: ModelSpec(
                s.onnx_path,
                {k: v[:1] for k, v in s.fixture_inputs.items()},
                {k: v[:1] for k, v in s.expected_outputs.items()},
            ),
            "at least 2 rows",
        ),
        (
            lambda s: ModelSpec(
                s.onnx_path, s.fixture_inputs, {"packet_embeddings": s.expected_outputs["packet_embeddings"]}
            ),
            r"expected_outputs.*missing \['connection_embedding'\]",
        ),
        (
            lambda s: ModelSpec(
                s.onnx_path,
                s.fixture_inputs,
                {k: v.astype(np.float64) for k, v in s.expected_outputs.items()},
            ),
            "expected output 'packet_embeddings' is float64",
        ),
    ],
    ids=[
        "missing-input",
        "extra-input",
        "wrong-dtype",
        "wrong-shape",
        "one-row",
        "missing-output",
        "output-dtype",
    ],
)
def test_fixtures_that_do_not_fit_the_onnx_signature_are_refused(sources, tmp_path, change, message):
    models = {"encoder": change(sources["encoder"])}
    with pytest.raises(BundleWriteError, match=message):
        write_bundle(tmp_path / "out", **bundle_arguments(sources, models=models))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "descriptions",
            (["a", "b"], ["benign", "teleportation"], np.ones((2, ALIGNED_DIM))),
            "teleportation",
        ),
        ("descriptions", (["a", "b"], ["benign"], np.ones((2, ALIGNED_DIM))), "same T"),
        ("descriptions", (["a", "b"], ["benign", "benign"], np.zeros((2, ALIGNED_DIM))), "all-zero row"),
        ("descriptions", (["a"], ["benign"], np.ones((1, ALIGNED_DIM + 1))), r"'aligned' has width 16.*17"),
        ("concepts", [{"mission": "dos", "concept": "teleportation", "kind": "key"}], "not a concept of"),
        (
            "concepts",
            [{"mission": "dos", "concept": "packet storm", "kind": "key"}],
            "is of kind 'associated', not 'key'",
        ),
        ("concepts", [{"mission": "nope", "concept": "flood", "kind": "key"}], "mission 'nope'"),
        ("metrics", {"auc": {"unseen": float("nan")}}, r"metrics\.auc\.unseen"),
        ("featurizer", {"max_packets": 30}, "snaplen"),
        ("featurizer", {"max_packets": 30, "snaplen": 128, "window": 0}, "window"),
        ("featurizer", {"max_packets": 30, "snaplen": 128, "window": "5s"}, "window"),
        ("context", {"slots": SLOTS}, "features"),
        ("version", "2026/11", "version"),
        ("missions", [], "mission files"),
    ],
    ids=[
        "unknown-class",
        "row-count",
        "zero-row",
        "aligned-width",
        "unknown-concept",
        "wrong-kind",
        "unknown-mission",
        "nan-metric",
        "featurizer",
        "featurizer-window-zero",
        "featurizer-window-text",
        "context",
        "version",
        "no-missions",
    ],
)
def test_invalid_bundle_contents_are_refused_before_writing(sources, tmp_path, field, value, message):
    with pytest.raises(BundleWriteError, match=message):
        write_bundle(tmp_path / "out", **bundle_arguments(sources, **{field: value}))
    assert not (tmp_path / "out").exists()


def test_a_concept_list_that_does_not_match_the_concepts_output_is_refused(sources, tmp_path):
    with pytest.raises(BundleWriteError, match=r"'concepts' has width"):
        write_bundle(tmp_path / "out", **bundle_arguments(sources, concepts=sources["concepts"][:-1]))


def test_a_non_empty_target_folder_is_refused(sources, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.onnx").write_bytes(b"x")
    with pytest.raises(BundleWriteError, match="not an empty folder"):
        write_bundle(tmp_path / "out", **bundle_arguments(sources))
