"""Monte-Carlo model of the redundancy policy (adaptive replication, spot checks, canaries).

It follows the rules of :class:`grid._run._Engine` on an abstract run -- volunteers, one liar,
units -- without computing embeddings, so the cost of validation (replicas per accepted unit)
and the chance of catching a rare liar can be measured over runs far larger than a test can do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from grid._config import GridConfig

__all__ = ["PolicyOutcome", "simulate_policy"]


@dataclass
class PolicyOutcome:
    """Averages over the simulated runs."""

    replicas_per_unit: float
    catch_probability: float
    wrong_units_left: float  # wrong vectors still accepted at the end of a run (mean)


def simulate_policy(
    config: GridConfig,
    *,
    units: int = 20_000,
    volunteers: int = 20,
    lie_rate: float = 0.01,
    runs: int = 200,
    seed: int = 0,
    initial_streak: int = 0,
) -> PolicyOutcome:
    """Simulate ``runs`` grid runs of ``units`` units with one liar among ``volunteers``.

    Parameters
    ----------
    config : GridConfig
        Quorum (2 on the grid), trust threshold, spot-check and canary rates.
    units : int
        Units per run.
    volunteers : int
        Volunteers, one of which lies on a fraction ``lie_rate`` of the results it returns.
    runs : int
        Simulated runs.
    initial_streak : int
        Consecutive valid results every volunteer starts with (a record from earlier runs).

    Returns
    -------
    PolicyOutcome
    """
    rng = random.Random(seed)
    quorum = config.quorum(local=False)
    total_replicas = 0
    caught_runs = 0
    wrong_left = 0
    for _ in range(runs):
        streak = [initial_streak] * volunteers
        liar = 0
        caught = False
        singles_by_liar_wrong = 0
        for _u in range(units):
            first = rng.randrange(volunteers)
            if (
                quorum > 1
                and streak[first] >= config.trust_after
                and rng.random() >= config.spot_check_rate
            ):
                total_replicas += 1
                lie = first == liar and rng.random() < lie_rate
                if lie:
                    singles_by_liar_wrong += 1
                streak[first] += 1
                if rng.random() < config.canary_rate:  # a known-answer unit to a trusted volunteer
                    v = rng.choice(
                        [w for w in range(volunteers) if streak[w] >= config.trust_after]
                    )
                    total_replicas += 1
                    if v == liar and rng.random() < lie_rate:
                        caught = True
                        streak[v] = 0
                        singles_by_liar_wrong = 0  # its single-replica units are re-run
                continue
            chosen = [first, *rng.sample([v for v in range(volunteers) if v != first], quorum - 1)]
            total_replicas += quorum
            lies = [v == liar and rng.random() < lie_rate for v in chosen]
            if any(lies):
                total_replicas += 1  # one more replica breaks the tie
                caught = True
                streak[liar] = 0
                singles_by_liar_wrong = 0
            for v, lied in zip(chosen, lies, strict=True):
                if not lied:
                    streak[v] += 1
        caught_runs += caught
        wrong_left += singles_by_liar_wrong
    return PolicyOutcome(
        replicas_per_unit=total_replicas / (runs * units),
        catch_probability=caught_runs / runs,
        wrong_units_left=wrong_left / runs,
    )
