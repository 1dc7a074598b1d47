"""The training loop of one trial — the whole step is visible here (docs/METHOD.md §6):

    θ from the schedule → set on the model → task loss + weighted penalties → backward →
    step → (per epoch) measure projected and relaxed model → hooks observe.

The ``adaptive`` family replaces the scheduled θ by learned per-layer strengths ``γ_i``:
the loss gains the Lagrangian term ``Σ λ_i γ_i``, and every step ends with a plain gradient
step on ``γ`` and a dual step on ``λ`` (``workers/relax/_adaptive.py``); the schedule is a
gate that ends them in the tail.

Hooks only observe (report to Ray Tune, print, checkpoint); anything that changes the
maths is in this file.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from search_spaces import Hyperparameters, RelaxtuneError, SpecError
from workers.relax import (
    DualStrengths,
    compute_penalties,
    free_parameters,
    make_schedule,
    project_model,
    recompute_normalisation,
    record_inputs,
    relaxed_layers,
    reset_free_terms,
    sample_batches,
    set_free_scale,
    set_layer_strengths,
    set_theta,
)
from workers.tasks import Task, build_task

from ._config import TrialConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


class TrialDivergedError(RelaxtuneError, RuntimeError):
    """The loss became NaN or infinite; the trial cannot continue."""


@dataclass
class EpochReport:
    """What one epoch measured (the keys Ray Tune and Optuna see, docs/ARCHITECTURE.md)."""

    epoch: int
    progress: float
    theta: float
    val_projected: float
    val_relaxed: float
    train_loss: float
    penalty_lie: float | None
    penalty_norm: float | None
    penalty_proj: float | None
    equivariance_error_relaxed: float
    equivariance_error_projected: float
    epoch_seconds: float
    #: ‖∇ of the weighted penalties‖ / ‖∇ of the task loss‖ on the free weights, measured on
    #: the epoch's last step (None when θ = 0 there, or nothing is penalised)
    penalty_grad_ratio: float | None = None
    #: ``adaptive`` only: the learned strength γ_i and the dual variable λ_i of every relaxed
    #: layer (module order) at the epoch's end; None for the scheduled families
    strengths: list[float] | None = None
    duals: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingHook(Protocol):
    """Observes a run; must not change the model or the optimiser.

    A hook may also define ``on_first_batch(trainer)``: called once per :meth:`Trainer.fit`,
    when the first training batch is ready and before its forward pass."""

    def on_epoch_end(self, report: EpochReport, trainer: Trainer) -> None: ...


@dataclass
class TrainResult:
    reports: list[EpochReport] = field(default_factory=list)
    checkpoint_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


#: environment variable that overrides every trial's device on this worker (``cpu``,
#: ``cuda`` or ``auto``): ``cpu`` trains on the CPU where Ray declares GPUs that torch cannot
#: see (Ray's GPU placement tested on a machine without one, docs/SCALE.md "GPU")
DEVICE_ENV = "RELAXTUNE_DEVICE"


def pick_device(requested: str = "auto") -> torch.device:
    """``cuda`` when requested or available (Ray sets ``CUDA_VISIBLE_DEVICES`` per trial);
    ``RELAXTUNE_DEVICE`` in the environment replaces ``requested``. A trial that asks for
    ``cuda`` where torch sees no GPU fails (``SpecError``) rather than train on the CPU."""
    override = os.environ.get(DEVICE_ENV, "").strip()
    if override:
        if override not in ("auto", "cpu", "cuda"):
            raise SpecError("device", f"{DEVICE_ENV}={override!r}: expected cpu, cuda or auto")
        requested = override
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SpecError("device", "cuda requested but no GPU is visible")
        return torch.device(requested)
    raise SpecError("device", f"unknown device {requested!r}: expected cpu, cuda or auto")


def _to(batch: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


class Trainer:
    """One relaxed training run. Build with a :class:`TrialConfig`; call :meth:`fit`."""

    def __init__(self, config: TrialConfig, task: Task | None = None) -> None:
        self.config = config
        #: the trial's hyperparameters, checked and typed once (search_spaces.Hyperparameters)
        self.hparams = hp = Hyperparameters.from_flat(config.hparams)
        self.task = task or build_task(config.task, config.model, config.data)
        self.device = pick_device(config.device)
        torch.manual_seed(config.seed)
        self.splits = self.task.build_data(
            config.seed if config.data_seed is None else config.data_seed
        )
        self.model: nn.Module = self.task.build_model(config.seed).to(self.device)
        self.schedule = make_schedule(hp.relax, epochs=config.epochs)
        self.relaxing = self.schedule.family != "none"
        self.projection = hp.relax.projection
        self.penalty_weights = dict(hp.relax.penalty_weights)
        self.penalty_form = hp.relax.penalty_form
        set_layer_strengths(self.model, hp.relax.layer_decay)
        set_free_scale(self.model, hp.relax.free_scale)
        if self.relaxing:
            reset_free_terms(self.model, hp.relax.init, hp.relax.init_std, seed=config.seed)
        else:
            # standard equivariant training: the free terms never act, so don't train them
            reset_free_terms(self.model, "zeros", 0.0)
            self.penalty_weights = dict.fromkeys(self.penalty_weights, 0.0)
            for layer in relaxed_layers(self.model):
                for p in layer.free_parameters():
                    p.requires_grad_(False)
        self.model.to(self.device)
        #: ``adaptive``: the learned per-layer strengths and their dual variables
        self.strengths: DualStrengths | None = None
        if self.relaxing and hp.relax.schedule == "adaptive":
            self.strengths = DualStrengths.for_model(
                self.model,
                hp.relax.gamma_init,
                hp.relax.dual_lr,
                hp.relax.dual_optimism,
                lr=hp.relax.strength_lr,
            ).to(self.device)
            self.strengths.settle(self.model)
        record_inputs(
            self.model, self.penalty_weights["lie"] > 0 or self.penalty_weights["norm"] > 0
        )
        # two AdamW groups: the free weights get their own learning rate and weight decay
        # (Adam cancels θ in their gradient, so only these bound how fast they grow)
        self.free_params = [p for p in free_parameters(self.model) if p.requires_grad]
        free_ids = {id(p) for p in self.free_params}
        lr = hp.optim.lr
        groups = [
            {
                "params": [
                    p for p in self.model.parameters() if p.requires_grad and id(p) not in free_ids
                ],
                "lr": lr,
                "weight_decay": hp.optim.weight_decay,
            }
        ]
        if self.free_params:
            groups.append(
                {
                    "params": self.free_params,
                    "lr": lr * hp.relax.free_lr_mult,
                    "weight_decay": hp.relax.free_weight_decay,
                }
            )
        self.optimizer = torch.optim.AdamW(groups, lr=lr)
        self.batch_size = hp.optim.batch_size
        self.grad_clip = hp.optim.grad_clip
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.train_loader = DataLoader(
            self.splits.train,
            batch_size=self.batch_size,
            shuffle=True,
            generator=self.shuffle,
            drop_last=False,
        )
        self.val_loader = DataLoader(self.splits.val, batch_size=256)
        self.test_loader = DataLoader(self.splits.test, batch_size=256)
        n = min(config.eval_samples, len(self.splits.val))
        self.eval_inputs = tuple(
            t.to(self.device) for t in next(iter(DataLoader(self.splits.val, batch_size=n)))[:-1]
        )
        # fixed training inputs the projected model's normalisation statistics are measured on
        self.norm_batches = sample_batches(
            self.splits.train, config.norm_samples, seed=config.seed, device=self.device
        )
        self.epoch = 0  # epochs completed
        self.amp = self.device.type == "cuda"
        self.reports: list[EpochReport] = []

    # ---- the loop ----------------------------------------------------------------------
    def theta_at(self, progress: float) -> float:
        return self.schedule(progress)

    def fit(
        self, hooks: Iterable[TrainingHook] = (), should_stop: Callable[[], bool] | None = None
    ) -> TrainResult:
        hooks = list(hooks)
        first_batch = [h.on_first_batch for h in hooks if hasattr(h, "on_first_batch")]
        steps_per_epoch = len(self.train_loader)
        total_steps = steps_per_epoch * self.config.epochs
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            self.model.train()
            loss_sum, n_batches = 0.0, 0
            penalty_sums: dict[str, float] = {}
            penalty_counts: dict[str, int] = {}
            grad_ratio: float | None = None
            for step, batch in enumerate(self.train_loader):
                progress = (self.epoch * steps_per_epoch + step) / total_steps
                theta = self.theta_at(progress)
                self._set_theta(theta)
                *inputs, target = _to(batch, self.device)
                while first_batch:
                    first_batch.pop(0)(self)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    output = self.model(*inputs)
                    loss = self.task.loss(output.float(), target)
                # at θ = 0 the free term does not act: its penalties would only move W
                penalties = self._penalties() if theta != 0.0 else {}
                penalty = sum(self.penalty_weights[k] * v for k, v in penalties.items())
                total = loss + penalty
                if self.strengths is not None and theta != 0.0:
                    total = total + self.strengths.lagrangian()
                if not torch.isfinite(total):
                    raise TrialDivergedError(
                        f"loss became {float(total.detach())} at epoch {self.epoch + 1}, step {step + 1} (θ={theta:.4g})"
                    )
                if step == steps_per_epoch - 1 and penalties:
                    grad_ratio = self._grad_ratio(loss, penalty)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if self.grad_clip > 0:
                    # one bad batch must not throw the run away (docs/METHOD.md §6)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                if self.strengths is not None and theta != 0.0:
                    # plain gradient steps on the Lagrangian: γ descends, then λ ascends
                    self.strengths.primal_step()
                    self.strengths.dual_step()
                    self.strengths.settle(self.model)
                loss_sum += float(loss.detach())
                n_batches += 1
                for k, v in penalties.items():
                    penalty_sums[k] = penalty_sums.get(k, 0.0) + float(v.detach())
                    penalty_counts[k] = penalty_counts.get(k, 0) + 1
            self.epoch += 1
            mean_penalties = {k: v / penalty_counts[k] for k, v in penalty_sums.items()}
            report = self._measure(
                loss_sum / max(n_batches, 1),
                mean_penalties,
                time.perf_counter() - start,
                grad_ratio,
            )
            self.reports.append(report)
            for hook in hooks:
                hook.on_epoch_end(report, self)
            if should_stop is not None and should_stop():
                break
        return TrainResult(reports=list(self.reports))

    def _set_theta(self, theta: float) -> None:
        """θ of every relaxed layer for the next forward: the schedule's, or for ``adaptive``
        the learned ``γ_i`` (differentiable) while the gate is open and exactly 0 (strengths
        released) in the tail."""
        if self.strengths is None:
            set_theta(self.model, theta)
        elif theta != 0.0:
            self.strengths.attach(self.model)
        else:
            self.strengths.release()
            self.strengths.settle(self.model, 0.0)

    def _penalties(self) -> dict[str, torch.Tensor]:
        wanted = tuple(k for k, w in self.penalty_weights.items() if w > 0)
        return compute_penalties(self.model, wanted, self.penalty_form) if wanted else {}

    def _grad_ratio(self, loss: torch.Tensor, penalty: torch.Tensor) -> float | None:
        """‖∂penalty/∂W‖ / ‖∂loss/∂W‖ over the free weights W (None when the task gradient
        is 0, i.e. θ = 0). Two extra backward passes, once per epoch."""
        if (
            not self.free_params
            or not isinstance(penalty, torch.Tensor)
            or not penalty.requires_grad
        ):
            return None

        def norm(target: torch.Tensor) -> float:
            grads = torch.autograd.grad(
                target, self.free_params, retain_graph=True, allow_unused=True
            )
            return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))

        task = norm(loss)
        return norm(penalty) / task if task > 0 else None

    # ---- measurement -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> float:
        model.eval()
        total, count = 0.0, 0
        for batch in loader:
            *inputs, target = _to(batch, self.device)
            s, c = self.task.metric_sums(model(*inputs).float(), target)
            total += float(s)
            count += int(c)
        return total / max(count, 1)

    def projected_model(self) -> nn.Module:
        """The projected (exactly equivariant) copy of the model, in eval mode, with its
        normalisation statistics recomputed on ``norm_batches``: the running statistics were
        gathered with the free term active (docs/METHOD.md §4). Every validation, test, export and
        certificate goes through here."""
        projected = project_model(self.model, self.projection)
        if self.norm_batches:
            recompute_normalisation(projected, self.norm_batches)
        projected.eval()
        return projected

    def equivariance_error(self, model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            errors = self.task.equivariance_errors(model, self.eval_inputs, self.config.seed)
        exact = [errors[k] for k in self.task.exact_elements if k in errors]
        return float(max(exact)) if exact else float("nan")

    def _measure(
        self,
        train_loss: float,
        mean: dict[str, float],
        seconds: float,
        grad_ratio: float | None = None,
    ) -> EpochReport:
        progress = self.epoch / self.config.epochs
        theta = self.theta_at(progress) if progress < 1.0 else self.theta_at(1.0)
        # θ as the model will be projected now: the value the next step would use
        strengths = duals = None
        if self.strengths is None:
            set_theta(self.model, theta)
        else:
            if theta == 0.0:
                self.strengths.release()
            self.strengths.settle(self.model, theta)
            theta = theta * self.strengths.largest()
            strengths, duals = self.strengths.strengths(), self.strengths.duals()
        projected = self.projected_model()
        val_relaxed = self.evaluate(self.model, self.val_loader)
        val_projected = self.evaluate(projected, self.val_loader)
        report = EpochReport(
            epoch=self.epoch,
            progress=progress,
            theta=theta,
            val_projected=val_projected,
            val_relaxed=val_relaxed,
            train_loss=train_loss,
            penalty_lie=mean.get("lie"),
            penalty_norm=mean.get("norm"),
            penalty_proj=mean.get("proj"),
            equivariance_error_relaxed=self.equivariance_error(self.model),
            equivariance_error_projected=self.equivariance_error(projected),
            epoch_seconds=seconds,
            penalty_grad_ratio=grad_ratio,
            strengths=strengths,
            duals=duals,
        )
        if not math.isfinite(val_projected):
            raise TrialDivergedError(
                f"validation metric became {val_projected} at epoch {self.epoch}"
            )
        return report

    # ---- resume state (internal; loads with weights_only=True) -------------------------
    def state_dict(self) -> dict[str, Any]:
        # escnn adds cached filters to the state dict in eval mode: save in train mode
        self.model.train()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "torch_rng": torch.get_rng_state(),
            "shuffle_rng": self.shuffle.get_state(),
            "reports": [r.as_dict() for r in self.reports],
            **({} if self.strengths is None else {"strengths": self.strengths.state_dict()}),
        }

    def save_state(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (STATE_FILE + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(directory / STATE_FILE)
        return directory / STATE_FILE

    def load_state(self, directory: str | Path) -> bool:
        """Continue from a saved state; returns False when there is none."""
        path = Path(directory) / STATE_FILE
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.train()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.strengths is not None:
            self.strengths.load_state_dict(state["strengths"])
            self.strengths.settle(self.model)
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])
        self.shuffle.set_state(state["shuffle_rng"])
        self.reports = [EpochReport(**r) for r in state["reports"]]
        return True
