"""Configuration and report of a grid training run (:func:`grid.run_training`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from grid._deltas import DeltaTolerance
from grid.errors import TrainingError

__all__ = ["TrainingConfig", "TrainingReport"]


@dataclass(frozen=True)
class TrainingConfig:
    """Parameters of a grid training run (the redundancy settings are :class:`GridConfig`'s).

    Parameters
    ----------
    rounds : int
        Outer rounds (fewer when ``budget`` does not allow them all).
    shards : int or None
        Training units per round (each a disjoint share of the tile-store units; ``None``: one
        per tile-store unit, at most ``2 * n_workers`` on a local cluster, 8 on a grid).
    steps : int or None
        Local steps per unit (``None``: the recipe's ``steps_per_unit``).
    outer_lr : float
        Outer learning rate: ``global += outer_lr * mean(accepted deltas)`` (1: FedAvg).
    tolerance : DeltaTolerance
        When two replicas' deltas agree.
    min_tiles : int or None
        Fewest tiles of a training unit, hence of the store (at least the recipe's
        ``min_tiles``, which :func:`embeddings.local_steps` requires).
    budget : float or None
        Wall-time budget (s): rounds stop when the next one would not fit.
    unit_timeout : float
        Seconds a training replica may take before it is given up as lost and placed again.
        The larger of this and :attr:`GridConfig.replica_timeout` applies: that one is sized
        for embedding units of seconds, and a training unit of K steps on a shard takes
        minutes, so under it every replica of a slow unit would be re-placed without end.
    """

    rounds: int = 4
    shards: int | None = None
    steps: int | None = None
    outer_lr: float = 1.0
    tolerance: DeltaTolerance = field(default_factory=DeltaTolerance)
    min_tiles: int | None = None
    budget: float | None = None
    unit_timeout: float = 3600.0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            msg = f"TrainingConfig.{name}={getattr(self, name)!r} is invalid: expected {expected}"
            raise TrainingError(msg)

        if self.rounds < 1:
            bad("rounds", "an integer >= 1")
        for name in ("shards", "steps", "min_tiles"):
            value = getattr(self, name)
            if value is not None and value < 1:
                bad(name, "None or an integer >= 1")
        if not 0.0 < self.outer_lr <= 10.0:
            bad("outer_lr", "a value in (0, 10]")
        if self.budget is not None and self.budget <= 0:
            bad("budget", "None or a positive number of seconds")
        if not self.unit_timeout > 0:
            bad("unit_timeout", "a positive number of seconds")

    def as_dict(self) -> dict:
        """The configuration as a JSON-ready dict (the tolerance nested).

        Returns
        -------
        dict
        """
        out = asdict(self)
        out["tolerance"] = self.tolerance.as_dict()
        return out


@dataclass
class TrainingReport:
    """Outcome of :func:`run_training` (printable; ``state`` holds the tuned weights).

    Attributes
    ----------
    rounds_done : int
        Rounds whose outer step was taken (in this run or an earlier one it resumed).
    units_accepted, units_disputed : int
        Training units accepted / left without agreeing replicas, over all rounds.
    replicas_run, replicas_invalid, replicas_failed, replicas_lost : int
        As in :class:`grid.GridReport`, summed over rounds.
    liars : list of str
        Volunteers with a rejected delta (also in the signed ledger).
    rejected : list of dict
        Every rejected replica: ``round``, ``unit``, ``volunteer``, ``reason``.
    agreement : dict
        Largest relative difference and smallest cosine seen between agreeing replicas.
    round_times : list of float
        Wall time of each round run here (s).
    stopped : str
        Why the run ended before ``rounds`` ("" when it did not).
    """

    run: str = ""
    work: str = ""
    recipe_digest: str = ""
    base_model: str = ""
    base_weights_sha256: str = ""
    base_digest: str = ""
    seed: int = 0
    steps: int = 0
    rounds_planned: int = 0
    rounds_done: int = 0
    rounds_resumed: int = 0
    shards: int = 0
    units_accepted: int = 0
    units_disputed: int = 0
    replicas_run: int = 0
    replicas_invalid: int = 0
    replicas_failed: int = 0
    replicas_lost: int = 0
    liars: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    volunteers: list[str] = field(default_factory=list)
    quorum: int = 0
    tolerance: dict = field(default_factory=dict)
    agreement: dict = field(default_factory=dict)
    outer_lr: float = 1.0
    round_times: list[float] = field(default_factory=list)
    tiles: list[tuple[str, str]] = field(default_factory=list)
    state_sha256: str = ""
    initial_sha256: str = ""
    stopped: str = ""
    elapsed: float = 0.0
    state: dict = field(default_factory=dict, repr=False)

    @property
    def replicas_per_accepted_unit(self) -> float:
        return self.replicas_run / self.units_accepted if self.units_accepted else 0.0

    def as_dict(self) -> dict:
        """Everything but the weights, JSON-serialisable.

        Returns
        -------
        dict
        """
        out = {k: v for k, v in asdict(self).items() if k not in ("state", "tiles")}
        out["tiles"] = len(self.tiles)
        out["replicas_per_accepted_unit"] = round(self.replicas_per_accepted_unit, 4)
        return out

    def record(self) -> dict:
        """The grid part of a tuned model's training record (see ``docs/grid.md``).

        Returns
        -------
        dict
        """
        return {
            "run": self.run,
            "base_model": self.base_model,
            "base_weights_sha256": self.base_weights_sha256,
            "recipe_digest": self.recipe_digest,
            "seed": self.seed,
            "steps_per_unit": self.steps,
            "rounds": self.rounds_done,
            "shards_per_round": self.shards,
            "outer_lr": self.outer_lr,
            "units_accepted": self.units_accepted,
            "quorum": self.quorum,
            "tolerance": self.tolerance,
            "agreement": self.agreement,
            "volunteers": self.volunteers,
            "rejected_volunteers": sorted(self.liars),
            "initial_state_sha256": self.initial_sha256,
            "state_sha256": self.state_sha256,
            "tiles": len(self.tiles),
        }

    def __str__(self) -> str:
        lines = [
            f"tuned {self.base_model} ({self.recipe_digest[:12]}) in {self.elapsed:.1f} s: "
            f"{self.rounds_done}/{self.rounds_planned} rounds"
            + (f" ({self.rounds_resumed} resumed)" if self.rounds_resumed else ""),
            f"  units: {self.units_accepted} accepted, {self.units_disputed} not accepted "
            f"({self.shards} per round, {self.steps} steps each)",
            f"  replicas: {self.replicas_run} run ({self.replicas_per_accepted_unit:.2f} per "
            f"accepted unit), {self.replicas_invalid} rejected, {self.replicas_failed} failed, "
            f"{self.replicas_lost} lost/re-run",
            f"  validation: quorum {self.quorum}, rel diff <= "
            f"{self.tolerance.get('max_rel_diff')}, cosine >= {self.tolerance.get('min_cosine')}",
        ]
        if self.liars:
            lines.append(f"  rejected deltas from: {', '.join(sorted(self.liars))}")
        if self.stopped:
            lines.append(f"  stopped: {self.stopped}")
        return "\n".join(lines)
