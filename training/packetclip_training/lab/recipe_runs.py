"""The lab runs a dataset recipe names, made where the recipe expects them (`packetclip-train lab recipe`).

Owns deciding, for each run of a recipe's `lab.runs`, whether it is there (a directory the dataset build can read:
`dataset.sources.load_lab_run`), missing, or incomplete (a directory that exists but is not a whole run: a run
that stopped part-way, or something else; never overwritten, the operator decides), checking every run's profile
and `only` names before the first run starts, and making the missing runs one after the other in the recipe's
order. A run that fails stops the rest; the runs made before it stay, so running again resumes.

Does not run the lab itself (`lab.runner.run_lab`), read recipes (`dataset.recipe`) or build the dataset
(`dataset.build`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packetclip.classes import FINE_CLASSES
from packetclip_training.dataset.recipe import LabRunSpec
from packetclip_training.dataset.sources import SourceError, load_lab_run
from packetclip_training.lab.profiles import PROFILES, Profile

PRESENT, MISSING, INCOMPLETE = "present", "missing", "incomplete"


class RecipeRunsError(ValueError):
    """A recipe's lab runs cannot be made as named; nothing was run."""


@dataclass(frozen=True)
class RunState:
    spec: LabRunSpec
    state: str  # PRESENT, MISSING or INCOMPLETE
    reason: str = ""  # why an incomplete run is not a run


def run_states(specs: Sequence[LabRunSpec]) -> list[RunState]:
    """Each run's state, in the recipe's order."""
    states = []
    for spec in specs:
        if not spec.path.exists():
            states.append(RunState(spec, MISSING))
            continue
        try:
            load_lab_run(spec.path)
        except (SourceError, OSError, ValueError) as exc:
            states.append(RunState(spec, INCOMPLETE, str(exc)))
            continue
        states.append(RunState(spec, PRESENT))
    return states


def unknown_names(only: Sequence[str]) -> list[str]:
    """The `only` names that are neither a fine class nor a catalogue variant."""
    from packetclip_training.lab.attacks import CATALOGUE

    known = set(FINE_CLASSES) | {variant.name for variant in CATALOGUE}
    return sorted(set(only) - known)


def check_runs(states: Sequence[RunState]) -> None:
    """Refuse, before any run starts, what the lab cannot make: an incomplete run in the way, an unknown profile
    or an unknown `only` name."""
    problems = []
    for entry in states:
        spec = entry.spec
        if entry.state == INCOMPLETE:
            problems.append(
                f"{spec.path} is not a whole lab run ({entry.reason}); remove it to make it again"
            )
        if entry.state != MISSING:
            continue
        if spec.profile not in PROFILES:
            problems.append(
                f"{spec.path}: unknown profile {spec.profile!r}; profiles: {', '.join(sorted(PROFILES))}"
            )
        if unknown := unknown_names(spec.only):
            problems.append(
                f"{spec.path}: unknown fine classes or variants {unknown} (packetclip-train lab variants)"
            )
    if problems:
        raise RecipeRunsError("; ".join(problems))


RunLab = Callable[[Profile, Path, int, set[str] | None], dict[str, Any]]


def make_missing_runs(
    specs: Sequence[LabRunSpec],
    run: RunLab | None = None,
    on_start: Callable[[int, int, LabRunSpec], None] | None = None,
) -> list[LabRunSpec]:
    """Make the recipe's missing runs in order with `run` (default: `lab.runner.run_lab`, which needs root);
    returns the runs made. Raises RecipeRunsError before running anything when a run cannot be made."""
    states = run_states(specs)
    check_runs(states)
    missing = [entry.spec for entry in states if entry.state == MISSING]
    if run is None:
        from packetclip_training.lab.runner import run_lab

        run = run_lab
    for index, spec in enumerate(missing):
        if on_start is not None:
            on_start(index, len(missing), spec)
        run(PROFILES[spec.profile], spec.path, spec.seed, set(spec.only) or None)
    return missing
