"""Dataset recipes: which inputs, which featurizer configuration and which split make a dataset.

Owns the recipe file format (YAML; JSON is valid YAML) and its validation. Relative paths in a recipe are read
from the current directory (build from the repository root), so one recipe serves every checkout. Does not build.

```yaml
name: default
lab:
  runs_dir: lab-runs            # where `packetclip-train lab run --out` put the runs (`lab run --recipe`: all)
  runs: [{profile: full, seeds: [1]}]   # -> lab-runs/full-seed1
  #  {profile: full, seeds: [2], only: [os_scan]} -> lab-runs/full-seed2-os_scan (`lab run --only os_scan`)
  run_dirs: []                  # or explicit directories
real:
  manifest: ../shared/data/real/MANIFEST.tsv
  include: ["*"]                # globs over the manifest's `file` column
flows:                          # CICFlowMeter CSVs joined to their pcaps
  - {csv: flows.csv, pcaps: [a.pcap], label_map: aci-iot-2023, utc_offset_hours: 0, tolerance_s: 2, dayfirst: true}
featurizer: {max_packets: 30, snaplen: 128}
split: {train: 0.7, val: 0.1, guard_s: 1.0, real_test_share: 0.2, real_val_share: 0.1, seed: 0}
```
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from packetclip_training.dataset.splits import SplitConfig

log = logging.getLogger(__name__)


class RecipeError(Exception):
    """A recipe that cannot be followed; the message names the file and the key."""


@dataclass
class FlowInput:
    csv: Path
    pcaps: list[Path]
    label_map: str = "aci-iot-2023"  # a built-in map name or a YAML/JSON file {CSV label: fine class | drop}
    utc_offset_hours: float = 0.0  # the CSV clock's offset from UTC (CIC-IDS2017: -3)
    tolerance_s: float = 2.0  # clock difference allowed between a flow's timestamp and the connection's start
    dayfirst: bool = True  # CIC datasets write dd/mm/YYYY


@dataclass(frozen=True)
class LabRunSpec:
    """A lab run a recipe's `lab.runs` names: how `packetclip-train lab run` makes it and where it goes."""

    profile: str
    seed: int
    only: tuple[str, ...]  # fine classes or variants (`lab run --only`); empty: the whole profile
    path: Path


@dataclass
class Recipe:
    name: str = "dataset"
    lab_runs: list[Path] = field(default_factory=list)
    # the runs of `lab.runs`, which the lab can make (`packetclip-train lab run --recipe`); `lab.run_dirs` has none
    lab_run_specs: list[LabRunSpec] = field(default_factory=list)
    real_manifest: Path | None = None
    real_include: list[str] | None = None  # None: every file of the manifest
    # glob patterns of manifest files that go wholly to the test split: a source family no stage trains on, so
    # the evaluation measures the model on another network's traffic
    real_test_only: list[str] = field(default_factory=list)
    flows: list[FlowInput] = field(default_factory=list)
    featurizer: dict = field(default_factory=dict)  # FeaturizerConfig fields; defaults where absent
    split: SplitConfig = field(default_factory=SplitConfig)

    def is_empty(self) -> bool:
        return not (self.lab_runs or self.real_manifest or self.flows)


def _mapping(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def lab_run_dir(runs_dir: Path, profile: str, seed: int, only: list[str] | None = None) -> Path:
    """Where a recipe expects the run of a lab profile and seed (restricted to some fine classes or variants with
    `only`; a variant's "/" becomes "-" in the directory name)."""
    suffix = "".join(f"-{name.replace('/', '-')}" for name in sorted(only or []))
    return runs_dir / f"{profile}-seed{seed}{suffix}"


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    try:
        data = _mapping(yaml.safe_load(path.read_text()), str(path))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    known = {"name", "lab", "real", "flows", "featurizer", "split"}
    if unknown := set(data) - known:
        raise RecipeError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    recipe = Recipe(name=str(data.get("name", path.stem)))
    lab = _mapping(data.get("lab"), f"{path}: lab")
    runs_dir = Path(lab.get("runs_dir", "lab-runs"))
    for entry in lab.get("runs", []) or []:
        entry = _mapping(entry, f"{path}: lab.runs")
        seeds = entry.get("seeds", [entry["seed"]] if "seed" in entry else None)
        if "profile" not in entry or not seeds:
            raise RecipeError(f"{path}: lab.runs entries need a profile and seeds")
        only = [str(name) for name in entry.get("only", []) or []]
        for seed in seeds:
            run_dir = lab_run_dir(runs_dir, str(entry["profile"]), int(seed), only)
            recipe.lab_run_specs.append(
                LabRunSpec(str(entry["profile"]), int(seed), tuple(sorted(only)), run_dir)
            )
            recipe.lab_runs.append(run_dir)
    recipe.lab_runs += [Path(p) for p in lab.get("run_dirs", []) or []]
    real = _mapping(data.get("real"), f"{path}: real")
    if real:
        if "manifest" not in real:
            raise RecipeError(f"{path}: real needs a manifest")
        recipe.real_manifest = Path(real["manifest"])
        include = real.get("include")
        recipe.real_include = [str(p) for p in include] if include else None
        recipe.real_test_only = [str(p) for p in real.get("test_only", []) or []]
    for entry in data.get("flows", []) or []:
        entry = _mapping(entry, f"{path}: flows")
        if "csv" not in entry or not entry.get("pcaps"):
            raise RecipeError(f"{path}: flows entries need csv and pcaps")
        options = {
            k: entry[k] for k in ("label_map", "utc_offset_hours", "tolerance_s", "dayfirst") if k in entry
        }
        recipe.flows.append(FlowInput(Path(entry["csv"]), [Path(p) for p in entry["pcaps"]], **options))
    recipe.featurizer = dict(_mapping(data.get("featurizer"), f"{path}: featurizer"))
    try:
        recipe.split = SplitConfig(**_mapping(data.get("split"), f"{path}: split"))
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{path}: split: {exc}") from None
    return recipe
