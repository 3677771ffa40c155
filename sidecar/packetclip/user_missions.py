"""User-written missions scored zero-shot: a mission YAML with no trained head gets its own score column.

Owns turning a mission's text (description and concepts) into a vector of the bundle's language-aligned space —
the frozen text encoder f_T (`packetclip.text_encoder`, ONNX) then the bundle's text head g_T (`text_head.npz`) —
and scoring the reasoner's `aligned` output rows against it. A bundle with a mission space (`mission_space.npz`,
`packetclip.bundle.MissionSpace`) scores each mission there too — its own text head places the mission, its packet
head the encoder's connection embedding, its prototypes stand for the known classes — and the column is the mean
of the two probabilities. Why two: the default bundle's aligned space was trained with class-aware targets, which
pull every connection of a class towards one point — good for a mission that names a behaviour at the level of a
class, but it erases what sets part of a class apart, which the mission space's heads (trained with one positive
per pair) keep. On the lab sample with 2026.12.07-3, the AUC of the SYN flood's connections against every other
labelled connection for a SYN flood mission is 0.997 in the aligned space, 0.818 in the mission space and 0.974
for the mean; of the NTP flood's for `samples/missions/ntp_flood.yaml`, 0.809, 1.000 and 1.000. It does not
train anything, does not run the packet models (the engine hands it `aligned` and the connection embeddings) and
does not decide verdicts: the columns are extra evidence beside them.

The score, per connection and mission, is the probability of the mission in a softmax, at the bundle's learned
logit scale s, over the mission vector m and every fine class's prototype c_k (the normalised mean of the class's
rows of the description bank):

    score = exp(s a·m) / (exp(s a·m) + Σ_k exp(s a·c_k)) = sigmoid(s a·m − logsumexp_k(s a·c_k))

(in each space with its own a, m, c_k and s; the mean of the two where there are two).

Why this and not the bare cosine a·m: a cosine has no scale an analyst can read (0.4 may be high for one bundle and
low for another), while this is a probability with the same calibration as the alignment that trained the space,
and it answers the question a new mission asks: is this connection closer to what the mission describes than to
every class the model already knows? Each mission competes with the known classes only, never with other user
missions, so adding a mission does not change another's column. The cost of the choice: a mission that restates a
known class shares the probability with that class (around one half on its connections, rather than near one).

Missions the bundle was trained with are skipped: the reasoner scores them with trained heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Union

import numpy as np

from packetclip.bundle import Bundle, BundleError, load_descriptions, load_mission_space, load_text_head
from packetclip.missions import Mission, MissionError, load_missions
from packetclip.text_encoder import OnnxTextEncoder, TextEncoderUnavailable, default_text_encoder_dir

log = logging.getLogger(__name__)


class SupportsEncode(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# f_T: an exported `OnnxTextEncoder`, or any function from texts to (n, text_dim) vectors (tests use stand-ins)
TextEncoderLike = Union[SupportsEncode, Callable[[list[str]], np.ndarray]]  # noqa: UP007 (3.10 runtime alias)


class UserMissionsUnavailable(RuntimeError):
    """User missions cannot be scored with this bundle and encoder; the message says why."""


def mission_sentences(mission: Mission) -> list[str]:
    """A mission as a few short sentences: its description, its key concepts, then each key concept with its
    associated concepts. Short sentences because the bank the space was aligned on is made of short texts, and
    the text encoder truncates long ones."""
    title = mission.name.replace("_", " ")
    sentences = [mission.description, f"{title}: {', '.join(mission.key_concepts)}."]
    sentences += [f"{key}: {', '.join(words)}." for key, words in mission.associated.items() if words]
    return sentences


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


@dataclass
class _Space:
    """One space a mission is scored in: its text head g_T (`weight` (D, text_dim), `bias` (D,)), temperature,
    class prototypes (K, D) and the missions' vectors (M, D) there."""

    weight: np.ndarray
    bias: np.ndarray
    logit_scale: float
    prototypes: np.ndarray
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def embed(self, encoded: np.ndarray) -> np.ndarray:
        """The unit vector (D,) of sentences already through f_T (n, text_dim): g_T, normalised, averaged."""
        projected = _unit_rows(encoded @ self.weight.T + self.bias)  # (n, D)
        return _unit_rows(projected.mean(axis=0)).astype(np.float32)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """float (B, M): each mission's probability for unit rows (B, D) of this space (the module's formula)."""
        class_logits = self.logit_scale * (rows @ self.prototypes.T)  # (B, K)
        peak = class_logits.max(axis=1, keepdims=True)
        class_lse = peak[:, 0] + np.log(np.exp(class_logits - peak).sum(axis=1))  # (B,)
        margin = self.logit_scale * (rows @ self.vectors.T) - class_lse[:, None]  # (B, M)
        return 0.5 * (1.0 + np.tanh(0.5 * margin))  # sigmoid without overflow for large margins


class UserMissionScorer:
    """Score columns for user-written missions (see the module docstring for the formula)."""

    def __init__(self, bundle: Bundle, text_encoder: TextEncoderLike, missions: Sequence[Mission]):
        head = load_text_head(bundle)
        if head is None:
            raise UserMissionsUnavailable(
                f"bundle {bundle.source}: no text head (text_head.npz); it cannot place new text in its space"
            )
        self.weight, self.bias, self.logit_scale = head
        self.class_prototypes = class_prototypes(bundle)  # (K, D)
        aligned = _Space(self.weight, self.bias, self.logit_scale, self.class_prototypes)
        self.spaces: list[_Space] = [aligned]
        # the mission space's packet head: weight (D, E), bias (D,) placing the encoder's connection embeddings
        self.packet_head: tuple[np.ndarray, np.ndarray] | None = None
        space = load_mission_space(bundle)
        if space is not None:
            self.packet_head = (space.packet_weight, space.packet_bias)
            self.spaces.append(
                _Space(space.text_weight, space.text_bias, space.logit_scale, space.prototypes)
            )
        self._encode = text_encoder.encode if hasattr(text_encoder, "encode") else text_encoder
        trained = set(bundle.missions)
        skipped = [m.name for m in missions if m.name in trained]
        if skipped:
            log.info(
                "missions %s have trained heads in bundle %s; not scored zero-shot", skipped, bundle.name
            )
        self.missions: tuple[Mission, ...] = tuple(m for m in missions if m.name not in trained)
        self.names: tuple[str, ...] = tuple(m.name for m in self.missions)
        encoded = [self._encoded(mission_sentences(m)) for m in self.missions]
        for each in self.spaces:
            dim = each.prototypes.shape[1]
            each.vectors = (
                np.stack([each.embed(e) for e in encoded]) if encoded else np.zeros((0, dim), np.float32)
            )
        self.vectors = aligned.vectors  # (M, D) in the aligned space

    def _encoded(self, sentences: list[str]) -> np.ndarray:
        encoded = np.asarray(self._encode(list(sentences)), dtype=np.float32)  # (n, text_dim)
        widths = {each.weight.shape[1] for each in self.spaces}
        if encoded.ndim != 2 or {encoded.shape[1]} != widths:
            raise UserMissionsUnavailable(
                f"the text encoder gives vectors of shape {encoded.shape}, the bundle's text head takes "
                f"{self.weight.shape[1]} dimensions: a different text encoder"
            )
        return encoded

    def embed(self, sentences: list[str]) -> np.ndarray:
        """The unit vector (D,) of a set of sentences in the aligned space: each through f_T and g_T, normalised,
        then averaged."""
        return self.spaces[0].embed(self._encoded(sentences))

    def scores(self, aligned: np.ndarray, connection: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Mission name → float32 (B,) probability of the mission for each row of the reasoner's `aligned`; with a
        mission space, the mean of that and the probability of the encoder's `connection` embeddings (B, E)
        placed in the mission space."""
        aligned = np.asarray(aligned, dtype=np.float32)
        if aligned.ndim != 2 or aligned.shape[1] != self.class_prototypes.shape[1]:
            raise ValueError(
                f"aligned has shape {aligned.shape}; expected (batch, {self.class_prototypes.shape[1]})"
            )
        probabilities = self.spaces[0].probabilities(aligned)
        if self.packet_head is not None:
            if connection is None:
                raise ValueError(
                    "this bundle also scores user missions in its mission space: pass the connection embeddings"
                )
            weight, bias = self.packet_head
            connection = np.asarray(connection, dtype=np.float32)
            if connection.ndim != 2 or connection.shape != (len(aligned), weight.shape[1]):
                raise ValueError(
                    f"connection has shape {connection.shape}; expected ({len(aligned)}, {weight.shape[1]})"
                )
            placed = _unit_rows(connection @ weight.T + bias)
            probabilities = 0.5 * (probabilities + self.spaces[1].probabilities(placed))
        return {name: probabilities[:, j].astype(np.float32) for j, name in enumerate(self.names)}


def class_prototypes(bundle: Bundle) -> np.ndarray:
    """float32 (K, D): per fine class (the bundle's order), the normalised mean of its description bank rows."""
    _, fine, embeddings = load_descriptions(bundle)
    labels = np.asarray(fine)
    rows = []
    for name in bundle.fine_classes:
        members = embeddings[labels == name]
        if len(members) == 0:
            raise BundleError(f"bundle {bundle.source}: the description bank has no row of class {name!r}")
        rows.append(_unit_rows(members.mean(axis=0)))
    return np.stack(rows).astype(np.float32)


def open_text_encoder(directory: Path | None, threads: int = 1) -> OnnxTextEncoder:
    """The exported encoder at `directory`, else where `packetclip-train text export` writes by default."""
    candidates = [d for d in (directory, default_text_encoder_dir()) if d is not None]
    problems = []
    for candidate in dict.fromkeys(candidates):
        try:
            return OnnxTextEncoder(candidate, threads=threads)
        except TextEncoderUnavailable as exc:
            problems.append(str(exc))
    raise TextEncoderUnavailable(
        "; ".join(problems) + " (export it once with `packetclip models text-encoder`)"
    )


def load_user_mission_scorer(
    bundle: Bundle, missions_dir: Path | None, text_encoder_dir: Path | None, threads: int = 1
) -> UserMissionScorer | None:
    """The scorer of the user missions in `missions_dir`, or None (logged) when there are none to score or the
    text encoder or the bundle's text head is missing: a sensor keeps classifying without the extra columns."""
    if missions_dir is None:
        return None
    try:
        missions = load_missions(missions_dir, strict=False)  # one bad file must not drop the others
    except MissionError as exc:
        log.warning("user missions not loaded: %s", exc)
        return None
    untrained = [m for m in missions if m.name not in bundle.missions]
    if not untrained:
        log.info("no user mission in %s beyond the bundle's own", missions_dir)
        return None
    try:
        scorer = UserMissionScorer(bundle, open_text_encoder(text_encoder_dir, threads), untrained)
    except (TextEncoderUnavailable, UserMissionsUnavailable, BundleError) as exc:
        log.warning("user missions %s not scored: %s", [m.name for m in untrained], exc)
        return None
    log.info("scoring user missions %s zero-shot", list(scorer.names))
    return scorer
