"""Charged N-body simulator and its on-disk cache (docs/METHOD.md §7).

The simulation follows the charged-particles generator of Kipf et al. (NRI) as used by
EGNN: unit masses, charges ±1, force on ``i`` equal to
``Σ_j q_i q_j (x_i − x_j) / ‖x_i − x_j‖³`` with every component clipped to ``±max_force``,
and a kick-drift leapfrog. Frame ``k`` (0-based) is the state after drift step
``(k + 1)·sample_every``, so 5000 steps with a snapshot every 100 give 49 frames; the
velocity stored with a frame is the one used by the drift that produced it.

All systems are integrated at once (numpy over the system axis), and only the frames
asked for are kept, so memory is ``O(systems × frames asked)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: bump when the simulator's numerics change, so stale cache files are never reused
SIMULATOR_VERSION = 1


@dataclass(frozen=True)
class NBodySimConfig:
    """Every parameter the generated arrays depend on (the cache key hashes all of them)."""

    n_particles: int = 5
    dt: float = 1e-3
    n_steps: int = 5000
    sample_every: int = 100
    speed: float = 0.5
    position_std: float = 1.0
    max_force: float = 100.0
    frames: tuple[int, ...] = (30, 40)

    @property
    def n_frames(self) -> int:
        """Frames the full trajectory has (49 for the standard setting)."""
        return self.n_steps // self.sample_every - 1

    def validate(self) -> None:
        """Raise ``ValueError`` for settings the simulator cannot honour."""
        if self.n_particles < 2:
            raise ValueError(f"nbody: n_particles must be >= 2, got {self.n_particles}")
        if self.n_steps % self.sample_every != 0:
            raise ValueError("nbody: n_steps must be a multiple of sample_every")
        if not self.frames or any(f < 0 or f >= self.n_frames for f in self.frames):
            raise ValueError(f"nbody: frames must lie in [0, {self.n_frames}), got {self.frames}")


def _pair_incidence(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unordered pairs ``(i, j), i < j`` and the signed incidence matrix ``(n, pairs)``.

    Working on the ``n(n−1)/2`` pairs instead of the full ``n×n`` matrix halves the work
    and avoids the ``0/0`` on the diagonal; ``incidence @ f_pair`` scatters each pair
    force with ``+`` onto ``i`` and ``−`` onto ``j`` (Newton's third law).
    """
    first, second = np.triu_indices(n, k=1)
    incidence = np.zeros((n, first.size))
    incidence[first, np.arange(first.size)] = 1.0
    incidence[second, np.arange(first.size)] = -1.0
    return first, second, incidence


def simulate_charged(
    n_systems: int, seed: int, config: NBodySimConfig | None = None
) -> dict[str, np.ndarray]:
    """Simulate ``n_systems`` independent charged systems.

    Returns float64 arrays ``charges (S, N, 1)``, ``positions (S, F, N, 3)``,
    ``velocities (S, F, N, 3)`` with ``F = len(config.frames)`` in the order of
    ``config.frames``. Deterministic for a given ``(n_systems, seed, config)``.
    """
    cfg = config or NBodySimConfig()
    cfg.validate()
    n = cfg.n_particles
    rng = np.random.default_rng(seed)
    charges = rng.choice(np.array([-1.0, 1.0]), size=(n_systems, n, 1))
    pos = rng.standard_normal((n_systems, n, 3)) * cfg.position_std
    vel = rng.standard_normal((n_systems, n, 3))
    vel *= cfg.speed / np.linalg.norm(vel, axis=-1, keepdims=True)

    first, second, incidence = _pair_incidence(n)
    incidence_t = np.ascontiguousarray(incidence.T)
    # q_i q_j per pair: constant over the trajectory
    qq = (charges[:, first, 0] * charges[:, second, 0])[..., None]  # (S, P, 1)

    def forces(x: np.ndarray) -> np.ndarray:
        diff = incidence_t @ x  # (S, P, 3): x_i − x_j
        r2 = np.einsum("spd,spd->sp", diff, diff)[..., None]
        f = diff * (qq / (r2 * np.sqrt(r2)))
        total = incidence @ f  # (S, N, 3)
        return np.clip(total, -cfg.max_force, cfg.max_force, out=total)

    wanted = {(f + 1) * cfg.sample_every: k for k, f in enumerate(cfg.frames)}
    last_step = max(wanted)
    out_pos = np.empty((n_systems, len(cfg.frames), n, 3))
    out_vel = np.empty_like(out_pos)

    vel += cfg.dt * forces(pos)
    # the trajectory after the last requested frame is never looked at: stop there
    for step in range(1, last_step + 1):
        pos += cfg.dt * vel
        if step in wanted:
            out_pos[:, wanted[step]] = pos
            out_vel[:, wanted[step]] = vel
        vel += cfg.dt * forces(pos)
    return {"charges": charges, "positions": out_pos, "velocities": out_vel}


def cache_key(n_systems: int, seed: int, config: NBodySimConfig) -> str:
    """Hash of every generation parameter, the seed and the simulator version."""
    payload = {
        "version": SIMULATOR_VERSION,
        "n_systems": int(n_systems),
        "seed": int(seed),
        **asdict(config),
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$RELAXTUNE_CACHE/nbody`` when the variable is set, else ``~/.cache/relaxtune/nbody``."""
    root = os.environ.get("RELAXTUNE_CACHE")
    if root:
        return Path(root).expanduser() / "nbody"
    return Path.home() / ".cache" / "relaxtune" / "nbody"


def load_or_simulate(
    n_systems: int,
    seed: int,
    config: NBodySimConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`simulate_charged`, cached as ``.npz`` under ``cache_dir``.

    The file is written to a temporary name and renamed, so concurrent trials never read
    a half-written file (the rename is atomic; two writers just produce the same bytes).
    """
    cfg = config or NBodySimConfig()
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"nbody-{cache_key(n_systems, seed, cfg)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = simulate_charged(n_systems, seed, cfg)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return arrays
