"""Writing model bundles (`packetclip-bundle/1`): the factory's side of what `packetclip.bundle` reads.

Owns `write_bundle`, which validates everything a bundle will hold before writing a byte (class vocabulary,
missions and concepts, the description bank, each model's fixture against the model's own ONNX signature),
asserts onnxruntime-vs-torch parity on every model's fixture, writes the files and a manifest with the sha256 of
each, then re-opens the result with the runtime's reader before moving it into place. Also owns `pack_tarball`,
a byte-reproducible `.tar.gz` of a bundle.

It knows no model in particular: each role (e.g. "encoder", "reasoner") is an ONNX file plus fixture inputs and
the outputs torch produced for them; input/output names, dtypes and shapes come from the ONNX graph. It does not
train or export models and does not choose which roles a release ships. Contract-named outputs are cross-checked
where present: `coarse`/`fine` widths against `packetclip.classes`, `concepts` against concepts.json, `aligned`
against the description bank's dimension.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from packetclip.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_NAME_RE,
    CONCEPT_KINDS,
    CONCEPTS_NAME,
    DESCRIPTIONS_JSON,
    DESCRIPTIONS_NPZ,
    FIXTURES_DIR,
    MANIFEST_NAME,
    MISSION_SPACE_NAME,
    MISSIONS_DIR,
    PARITY_TOLERANCE,
    ROLE_RE,
    TEXT_HEAD_NAME,
    BundleError,
    check_fixtures,
    load_bundle,
    load_mission_space,
    max_abs_difference,
    onnx_session,
    sha256_file,
)
from packetclip.classes import COARSE_CLASSES, FINE_CLASSES, FINE_TO_COARSE
from packetclip.featurizer import FEATURIZER_VERSION
from packetclip.missions import Mission, MissionError, load_mission

log = logging.getLogger(__name__)

# Fixed archive metadata: the same bundle must give the same archive bytes on any machine, at any time.
_ARCHIVE_MTIME = 0
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
# Outputs the bundle contract names, and the class vocabulary their last axis must span.
_CLASS_OUTPUTS = {"coarse": COARSE_CLASSES, "fine": FINE_CLASSES}


class BundleWriteError(ValueError):
    """What was given cannot make a valid bundle; the message names the model, file or field at fault."""


@dataclass(frozen=True)
class ModelSpec:
    """One role of the bundle: an exported ONNX file and the parity fixture it must reproduce."""

    onnx_path: Path
    # every ONNX input by name, ≥ 2 rows along the first axis (a batch of 1 can hide a baked-in batch size)
    fixture_inputs: Mapping[str, np.ndarray]
    # what torch computed for `fixture_inputs`, every ONNX output by name: onnxruntime must reproduce it
    expected_outputs: Mapping[str, np.ndarray]
    parameters: int | None = (
        None  # trainable parameters of the torch model (null in the manifest when unknown)
    )
    flops_per_packet: float | None = None  # the efficiency table's figure (null when it does not apply)


@dataclass
class _PreparedModel:
    role: str
    spec: ModelSpec
    inputs: dict[str, dict[str, Any]]  # ONNX input name → {"dtype", "shape"}
    outputs: dict[str, dict[str, Any]]
    parity: dict[str, float] = field(default_factory=dict)  # output name → max |onnxruntime - torch|


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    models: Mapping[str, ModelSpec],
    concepts: list[dict[str, str]],
    descriptions: tuple[Sequence[str], Sequence[str], np.ndarray],
    missions: Sequence[str | os.PathLike[str]],
    data_card: Mapping[str, Any],
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    featurizer: Mapping[str, Any],
    context: Mapping[str, Any],
    tolerance: float = PARITY_TOLERANCE,
    created: datetime | None = None,
    text_head: Mapping[str, np.ndarray] | None = None,
    decision: Mapping[str, Any] | None = None,
    mission_space: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Validate, write and verify a bundle folder at `out_dir` (absent or empty); returns its path.

    `descriptions` is (texts, fine class name of each text, (T, D) embeddings); `missions` the mission YAML files
    the reasoner was trained with; `text_head` (optional) is g_T as arrays `weight` (D, text_dim), `bias` (D,) and
    `logit_scale` (), so the sensor can place new text (user-defined missions) in the aligned space; `decision`
    (optional) the operating point: `attack_threshold` in (0, 1] and how it was chosen; `mission_space` (optional)
    the arrays of `packetclip.bundle.MissionSpace`, where user-written missions are scored. Raises `BundleWriteError`
    before writing anything when an input is invalid or
    onnxruntime differs from `expected_outputs` by more than `tolerance`.
    """
    out = Path(out_dir)
    _check_target(out)
    _check_names(name, version, models)
    mission_records = _load_missions(missions)
    _check_concepts(concepts, mission_records)
    texts, fine_index, embeddings = _description_bank(descriptions)
    prepared = [_prepare_model(role, spec, tolerance) for role, spec in models.items()]
    for model in prepared:
        _check_contract_outputs(model, len(concepts), embeddings.shape[1])
    sections = {
        "featurizer": _checked_featurizer(featurizer),
        "context": _checked_context(context),
        "data_card": _json_ready(data_card, "data_card"),
        "metrics": _json_ready(metrics, "metrics"),
        "training": _json_ready(training, "training"),
    }
    if decision is not None:
        sections["decision"] = _checked_decision(decision)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; an installed bundle must be readable by the sensor
        for model in prepared:
            _write_model(staging, model)
        _write_json(staging / CONCEPTS_NAME, concepts)
        _write_npz(staging / DESCRIPTIONS_NPZ, {"embeddings": embeddings, "fine": fine_index})
        _write_json(staging / DESCRIPTIONS_JSON, {"texts": texts, "classes": list(FINE_CLASSES)})
        if text_head is not None:
            _write_npz(staging / TEXT_HEAD_NAME, _checked_text_head(text_head, embeddings.shape[1]))
        if mission_space is not None:
            _write_npz(staging / MISSION_SPACE_NAME, _checked_mission_space(mission_space))
        for mission in mission_records:
            _copy_file(Path(mission.source), staging / MISSIONS_DIR / f"{mission.name}.yaml")
        manifest = _manifest(staging, name, version, created, prepared, mission_records, sections)
        _write_json(staging / MANIFEST_NAME, manifest)
        written = load_bundle(staging, verify=True)
        check_fixtures(written, tolerance)  # what was written reads back and agrees
        try:
            load_mission_space(written)
        except BundleError as exc:
            raise BundleWriteError(str(exc)) from exc
        if out.exists():
            out.rmdir()  # checked empty above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    log.info(
        "wrote bundle %s %s to %s (%d files, %.1f MB)",
        name,
        version,
        out,
        len(manifest["files"]) + 1,
        size / 1e6,
    )
    return out


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleWriteError(
            f"{out}: exists and is not an empty folder; a bundle is written into a fresh one"
        )


def _check_names(name: str, version: str, models: Mapping[str, ModelSpec]) -> None:
    for label, value in (("name", name), ("version", version)):
        if not BUNDLE_NAME_RE.match(value):
            raise BundleWriteError(f"bundle {label} {value!r} must be letters, digits, '.', '_' and '-'")
    if not models:
        raise BundleWriteError("a bundle needs at least one model")
    for role in models:
        if not ROLE_RE.match(role):
            raise BundleWriteError(f"model role {role!r} must be lower-case letters, digits and _")


# --- missions, concepts, descriptions -----------------------------------------------------------------------


def _load_missions(paths: Sequence[str | os.PathLike[str]]) -> list[Mission]:
    records: dict[str, Mission] = {}
    for path in paths:
        try:
            mission = load_mission(Path(path))
        except MissionError as exc:
            raise BundleWriteError(str(exc)) from exc
        if mission.name in records:
            raise BundleWriteError(
                f"{path}: mission {mission.name!r} is also given by {records[mission.name].source}"
            )
        records[mission.name] = mission
    if not records:
        raise BundleWriteError("a bundle needs the mission files its reasoner was trained with")
    return [records[key] for key in sorted(records)]


def _check_concepts(concepts: list[dict[str, str]], missions: list[Mission]) -> None:
    """Each concept names a mission of the bundle, a concept of that mission, and the concept's real kind."""
    by_name = {mission.name: mission for mission in missions}
    for index, entry in enumerate(concepts):
        if not isinstance(entry, Mapping) or set(entry) != {"mission", "concept", "kind"}:
            raise BundleWriteError(f"concepts[{index}] {entry!r}: needs exactly mission, concept and kind")
        mission = by_name.get(entry["mission"])
        if mission is None:
            raise BundleWriteError(
                f"concepts[{index}]: mission {entry['mission']!r} is not among {sorted(by_name)}"
            )
        if entry["concept"] not in mission.concepts():
            raise BundleWriteError(
                f"concepts[{index}]: {entry['concept']!r} is not a concept of {mission.source}"
            )
        kind = "key" if entry["concept"] in mission.key_concepts else "associated"
        if entry["kind"] not in CONCEPT_KINDS or entry["kind"] != kind:
            raise BundleWriteError(
                f"concepts[{index}]: {entry['concept']!r} is of kind {kind!r}, not {entry['kind']!r}"
            )


def _description_bank(
    descriptions: tuple[Sequence[str], Sequence[str], np.ndarray],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(texts, int16 fine index, float16 unit rows) from texts, fine names and float embeddings."""
    texts, fine_names, raw = descriptions
    texts = [str(text) for text in texts]
    embeddings = np.asarray(raw, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) != len(texts) or len(fine_names) != len(texts) or not texts:
        raise BundleWriteError(
            f"descriptions: {len(texts)} texts, {len(fine_names)} class names and embeddings of shape "
            f"{embeddings.shape} must describe the same T ≥ 1 rows"
        )
    unknown = sorted(set(fine_names) - set(FINE_CLASSES))
    if unknown:
        raise BundleWriteError(
            f"descriptions: unknown fine classes {unknown} (known: {', '.join(FINE_CLASSES)})"
        )
    fine_index = np.array([FINE_CLASSES.index(fine) for fine in fine_names], dtype=np.int16)
    return texts, fine_index, unit_float16(embeddings)


def unit_float16(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length and stored as float16, normalised again after the cast so the stored rows
    themselves are unit vectors (as close as float16 allows)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if not np.isfinite(embeddings).all() or (norms == 0).any():
        raise BundleWriteError("descriptions: embeddings must be finite with no all-zero row")
    half = (embeddings / norms).astype(np.float16)
    again = half.astype(np.float32)
    return (again / np.linalg.norm(again, axis=1, keepdims=True)).astype(np.float16)


# --- models -------------------------------------------------------------------------------------------------


def onnx_signature(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Input and output names → {"dtype", "shape"} as the ONNX graph declares them; symbolic dims as strings.

    Refuses models that fail the ONNX checker or keep weights in external files (a bundle file must be whole).
    """
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for unreadable or invalid files
        raise BundleWriteError(f"{path}: not a valid ONNX model ({exc})") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise BundleWriteError(f"{path}: keeps weights in external data files; export it as one file")
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = {v.name: _tensor_info(v, path) for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: _tensor_info(v, path) for v in model.graph.output}
    return inputs, outputs


def _tensor_info(value: onnx.ValueInfoProto, path: Path) -> dict[str, Any]:
    if not value.type.HasField("tensor_type"):
        raise BundleWriteError(f"{path}: {value.name!r} is not a tensor; bundles carry tensor models only")
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or None)  # None: unknown and unnamed
    return {"dtype": dtype.name, "shape": shape}


def _prepare_model(role: str, spec: ModelSpec, tolerance: float) -> _PreparedModel:
    path = Path(spec.onnx_path)
    inputs, outputs = onnx_signature(path)
    fixture = {name: np.asarray(value) for name, value in spec.fixture_inputs.items()}
    expected = {name: np.asarray(value) for name, value in spec.expected_outputs.items()}
    _check_fixture_inputs(role, inputs, fixture)
    _check_same_names(role, "expected_outputs", set(expected), set(outputs))
    clash = sorted(set(inputs) & set(outputs))
    if clash:
        raise BundleWriteError(
            f"model {role!r}: {clash} are both inputs and outputs; a fixture keys them by name"
        )
    got = onnx_session(path).run(list(outputs), {name: fixture[name] for name in inputs})
    model = _PreparedModel(role, spec, inputs, outputs)
    for output, value in zip(outputs, got, strict=True):
        if value.shape != expected[output].shape:
            raise BundleWriteError(
                f"model {role!r}: output {output!r} has shape {value.shape} in onnxruntime but "
                f"{expected[output].shape} in expected_outputs"
            )
        if expected[output].dtype != value.dtype:
            raise BundleWriteError(
                f"model {role!r}: expected output {output!r} is {expected[output].dtype}, the ONNX model gives "
                f"{value.dtype}"
            )
        difference = max_abs_difference(value, expected[output])
        if difference > tolerance:
            raise BundleWriteError(
                f"model {role!r} ({path}): output {output!r} differs between onnxruntime and torch by "
                f"{difference:.3g} > tolerance {tolerance:g}"
            )
        model.parity[output] = difference
    log.info("model %s: onnxruntime matches torch (max |difference| %.2e)", role, max(model.parity.values()))
    return model


def _check_fixture_inputs(role: str, inputs: Mapping[str, Any], fixture: Mapping[str, np.ndarray]) -> None:
    _check_same_names(role, "fixture_inputs", set(fixture), set(inputs))
    for name, info in inputs.items():
        value = fixture[name]
        if value.dtype != np.dtype(info["dtype"]):
            raise BundleWriteError(
                f"model {role!r}: fixture input {name!r} is {value.dtype}, the ONNX model takes {info['dtype']}"
            )
        declared = info["shape"]
        fixed_mismatch = any(
            isinstance(d, int) and d != n for d, n in zip(declared, value.shape, strict=False)
        )
        if value.ndim != len(declared) or fixed_mismatch:
            raise BundleWriteError(
                f"model {role!r}: fixture input {name!r} has shape {value.shape}, the model takes {declared}"
            )
        if value.ndim == 0 or value.shape[0] < 2:
            raise BundleWriteError(
                f"model {role!r}: fixture input {name!r} needs at least 2 rows (a batch of 1 can hide a baked-in batch size)"
            )


def _check_same_names(role: str, what: str, given: set[str], declared: set[str]) -> None:
    missing, extra = sorted(declared - given), sorted(given - declared)
    if missing or extra:
        raise BundleWriteError(
            f"model {role!r}: {what} must name exactly the ONNX model's tensors {sorted(declared)}: "
            f"missing {missing}, not in the model {extra}"
        )


def _check_contract_outputs(model: _PreparedModel, concept_count: int, description_dim: int) -> None:
    """Outputs the contract names must agree with the classes, concepts and description bank shipped beside them."""
    widths = {name: len(classes) for name, classes in _CLASS_OUTPUTS.items()}
    widths.update(concepts=concept_count, aligned=description_dim)
    for output, width in widths.items():
        if output not in model.outputs:
            continue
        actual = model.spec.expected_outputs[output].shape[-1]
        if actual != width:
            raise BundleWriteError(
                f"model {model.role!r}: output {output!r} has width {actual}, the bundle needs {width}"
            )


def _write_model(staging: Path, model: _PreparedModel) -> None:
    _copy_file(Path(model.spec.onnx_path), staging / f"{model.role}.onnx")
    arrays = {name: np.asarray(model.spec.fixture_inputs[name]) for name in model.inputs}
    arrays.update({name: np.asarray(model.spec.expected_outputs[name]) for name in model.outputs})
    _write_npz(staging / FIXTURES_DIR / f"{model.role}.npz", arrays)


# --- manifest -----------------------------------------------------------------------------------------------


def _checked_text_head(head: Mapping[str, np.ndarray], dim: int) -> dict[str, np.ndarray]:
    weight = np.asarray(head["weight"], np.float32)
    bias = np.asarray(head["bias"], np.float32)
    scale = np.asarray(head["logit_scale"], np.float32).reshape(())
    if weight.ndim != 2 or weight.shape[0] != dim or bias.shape != (dim,):
        raise BundleWriteError(
            f"text head: weight {weight.shape} and bias {bias.shape} do not map to width {dim}"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all() and np.isfinite(scale)):
        raise BundleWriteError("text head: non-finite values")
    return {"weight": weight, "bias": bias, "logit_scale": scale}


def _checked_mission_space(space: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = ("packet_weight", "packet_bias", "text_weight", "text_bias", "logit_scale", "prototypes")
    missing = [name for name in names if name not in space]
    if missing:
        raise BundleWriteError(f"mission space: missing {', '.join(missing)}")
    arrays = {name: np.asarray(space[name], np.float32) for name in names}
    arrays["logit_scale"] = arrays["logit_scale"].reshape(())
    if not all(np.isfinite(array).all() for array in arrays.values()):
        raise BundleWriteError("mission space: non-finite values")
    return arrays  # shapes: checked by reading the written bundle back (`load_mission_space`)


def _manifest(
    staging: Path,
    name: str,
    version: str,
    created: datetime | None,
    models: list[_PreparedModel],
    missions: list[Mission],
    sections: Mapping[str, Any],
) -> dict[str, Any]:
    moment = (created or datetime.now(UTC)).astimezone(UTC)
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    return {
        "format": BUNDLE_FORMAT,
        "name": name,
        "version": version,
        "created": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "featurizer_version": FEATURIZER_VERSION,
        "featurizer": sections["featurizer"],
        "context": sections["context"],
        "classes": {
            "coarse": list(COARSE_CLASSES),
            "fine": list(FINE_CLASSES),
            "fine_to_coarse": dict(FINE_TO_COARSE),
        },
        "missions": [mission.name for mission in missions],
        "models": {model.role: _model_entry(model) for model in models},
        "files": {
            relative: sha256_file(staging / relative) for relative in files if relative != MANIFEST_NAME
        },
        "data_card": sections["data_card"],
        "metrics": sections["metrics"],
        "training": sections["training"],
        **({"decision": sections["decision"]} if "decision" in sections else {}),
    }


def _checked_decision(decision: Mapping[str, Any]) -> dict[str, Any]:
    ready = _json_ready(decision, "decision")
    threshold = ready.get("attack_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise BundleWriteError(f"decision: attack_threshold must be a number in (0, 1], got {threshold!r}")
    return ready


def _model_entry(model: _PreparedModel) -> dict[str, Any]:
    return {
        "file": f"{model.role}.onnx",
        "fixture": f"{FIXTURES_DIR}/{model.role}.npz",
        "inputs": model.inputs,
        "outputs": model.outputs,
        "parameters": None if model.spec.parameters is None else int(model.spec.parameters),
        "flops_per_packet": _json_ready(model.spec.flops_per_packet, f"models.{model.role}.flops_per_packet"),
    }


def _checked_featurizer(featurizer: Mapping[str, Any]) -> dict[str, Any]:
    ready = _json_ready(featurizer, "featurizer")
    for key in ("max_packets", "snaplen"):
        if not isinstance(ready.get(key), int):
            raise BundleWriteError(f"featurizer: {key!r} must be an integer (got {ready.get(key)!r})")
    window = ready.get("window")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int | float) or not 0.0 < window < float("inf")
    ):
        raise BundleWriteError(f"featurizer: 'window' must be a positive number of seconds (got {window!r})")
    return ready


def _checked_context(context: Mapping[str, Any]) -> dict[str, Any]:
    ready = _json_ready(context, "context")
    features = ready.get("features")
    if not isinstance(ready.get("slots"), int) or not isinstance(features, list):
        raise BundleWriteError("context: needs an integer 'slots' and a 'features' list of names")
    if not all(isinstance(feature, str) for feature in features):
        raise BundleWriteError(f"context: features must be names, got {features!r}")
    responder = ready.get("responder_features")
    if responder is not None:
        if not isinstance(responder, list) or not all(isinstance(name, str) for name in responder):
            raise BundleWriteError(f"context: responder_features must be a list of names, got {responder!r}")
        window, kept = ready.get("responder_window"), ready.get("responder_connections")
        if not isinstance(window, int | float) or window <= 0 or not isinstance(kept, int) or kept < 1:
            raise BundleWriteError(
                "context: responder features need a positive 'responder_window' (seconds) and "
                "'responder_connections' (connections kept per responder)"
            )
    return ready


def _json_ready(value: Any, where: str) -> Any:
    """Plain JSON values from numpy scalars/arrays, tuples and paths; NaN and infinity are refused, by position."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist(), where)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise BundleWriteError(f"{where}: {value} is not valid JSON; write null for an undefined number")
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise BundleWriteError(f"{where}: {type(value).__name__} cannot be written to JSON")


# --- files --------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An `.npz` numpy reads, with fixed entry dates and order: the same arrays give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, buffer.getvalue())


def pack_tarball(bundle_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """A verified bundle folder as `.tar.gz` under one top folder `<name>-<version>/`, byte-reproducible.

    Entries are sorted, with fixed times, owners and modes, and the gzip header holds no name or time.
    """
    bundle = load_bundle(bundle_dir, verify=True)  # never ship an archive of a broken bundle
    target = Path(path)
    if not target.name.endswith((".tar.gz", ".tgz")):
        raise BundleWriteError(f"{target}: a bundle archive is named *.tar.gz")
    top = f"{bundle.name}-{bundle.version}"
    relatives = sorted([MANIFEST_NAME, *bundle.manifest["files"]])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with (
            partial.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=_ARCHIVE_MTIME) as compressed,
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for relative in relatives:
                source = bundle.root / relative
                entry = tarfile.TarInfo(f"{top}/{relative}")
                entry.size = source.stat().st_size
                entry.mtime, entry.mode = _ARCHIVE_MTIME, 0o644
                entry.uid = entry.gid = 0
                entry.uname = entry.gname = ""
                with source.open("rb") as handle:
                    tar.addfile(entry, handle)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    log.info("packed bundle %s into %s", bundle_dir, target)
    return target
