"""The lab's run profiles: how many episodes, how large, how long, how many packets.

This module owns the numbers of `quick` (CI: every fine class once, small, about three minutes) and `full` (the
training set: every variant, repeated, about forty minutes on two cores). It does not run anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # None: every variant of the catalogue; 1: the first variant of each fine class (enough to prove the class).
    variants_per_fine: int | None
    # Each chosen variant runs this many times (from different attackers, at different moments).
    repetitions: int
    # Multiplies a variant's max_seconds (and whatever the variant scales with it: rates, list lengths).
    scale: float
    # Episodes from different attacker hosts run at once, as on a real network; one attacker runs one at a time.
    concurrent_attackers: int
    # Wall-clock time for episodes: no episode starts after it (later repetitions are then cut short; within a
    # repetition the variants run in a seeded random order, so no variant is always the one cut).
    attack_budget_s: float
    # Benign-only traffic before the first and after the last episode.
    warmup_s: float
    cooldown_s: float
    # Quiet gap between two episodes of the same attacker, so their connections never touch.
    episode_gap_s: float
    # Quiet gap between the end of an episode and the start of the next episode of the same fine class. The
    # dataset splits a class episode by episode and drops an episode whose connections reach into the next
    # split's first one (within its guard); a connection closed by RST or FIN still takes packets of its 5-tuple
    # for 5 s (Zeek's tcp_close_delay), so back-to-back episodes of a short tool reusing its ports (nmap -O's
    # probes, mausezahn's port ranges) would merge across episodes and lose every training episode. 7 s = that
    # delay + the split's 1 s guard + 1 s of slack.
    class_gap_s: float
    # Mean benign actions per second per client (each action makes one to several connections).
    benign_actions_per_second: float
    # tcpdump stops at this many packets: the run's hard bound on capture size.
    max_packets: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        variants_per_fine=1,
        repetitions=1,
        scale=0.25,
        concurrent_attackers=3,
        attack_budget_s=150.0,
        warmup_s=5.0,
        cooldown_s=3.0,
        episode_gap_s=0.5,
        class_gap_s=7.0,
        benign_actions_per_second=1.0,
        max_packets=600_000,
    ),
    "full": Profile(
        name="full",
        variants_per_fine=None,
        repetitions=3,
        scale=1.0,
        concurrent_attackers=3,
        attack_budget_s=34 * 60.0,
        warmup_s=30.0,
        cooldown_s=15.0,
        episode_gap_s=2.0,
        class_gap_s=7.0,
        benign_actions_per_second=2.5,
        max_packets=12_000_000,
    ),
}
