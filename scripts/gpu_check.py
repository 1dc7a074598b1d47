"""Worker-side GPU check: the relaxed training path on one device, without Ray or a database.

Runs, on ``--device`` (``cuda`` by default):

1. **contract**: for each task's model, in float32 and under bf16 autocast: θ = 0 equals the
   projected model (``drop`` and ``orthogonal``); the exported TorchScript model equals the
   projected model; the exported model's equivariance certificate on the exact elements;
2. **step cost**: ``bench/step_cost.py``'s relaxed vs standard step of both tasks
   (rotated MNIST C8, N-body EGNN) at batch sizes that load a GPU;
3. **training**: one short relaxed training of each task (``Trainer.fit`` as a trial runs
   it, bf16 autocast on CUDA), its training throughput (samples/s), peak memory, and the
   certificate of the exported model (``write_checkpoint``);
4. **concurrency**: 1, 4, 8 and 16 processes training at once on the device (each one
   trial's model, optimiser and data, the relaxed step of ``Trainer.fit`` over its data
   loader for a fixed window): throughput and memory per trial, and from them a
   recommended ``resources.gpu`` fraction per task.

Figures go to ``<out>/gpu_check.json`` (rewritten after every part, so a run cut short keeps
what it measured) and a table is printed. ``--device cpu --quick`` runs every part at tiny
sizes (what the tests run on a machine without a GPU).

    PYTHONPATH=.gpu/site:. python3 scripts/gpu_check.py --out "$OUT"      # on a GPU machine
    .venv/bin/python scripts/gpu_check.py --device cpu --quick --out /tmp/gc

Exit status 0 when every float32 contract check, the bf16 θ = 0 and export checks (at the
bf16 tolerance) and every training certificate passed, and the trainings ran on the requested
device; 1 otherwise (the problems are listed last and under ``problems`` in the JSON). The
certificate under bf16 is reported, not required: a checkpoint's certificate is float32.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "bench", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

#: relative gap allowed between two computations that must agree, per precision: float32 as
#: the checkpoint writer's export check and certificate; bf16 at bf16 rounding (8-bit
#: mantissa, accumulated over the layers)
TOLERANCE = {"float32": 1e-4, "bf16": 3e-2}


def lie_learn_status() -> str:
    """Import escnn's ``lie_learn`` dependency, or stand in for it.

    escnn imports ``lie_learn`` when it is imported, for the SO(3) Wigner matrices only; the
    tasks here use planar groups (C_N, D_N, SO(2), O(2)) and their own E(3) layers, never
    escnn's SO(3). lie_learn's only wheel for Python 3.12 is built against NumPy 1 and cannot
    load beside NumPy 2: then a stand-in whose ``wigner_D_matrix`` raises is installed, so
    escnn imports and anything that does reach SO(3) irreps fails loudly."""
    try:
        importlib.import_module("lie_learn.representations.SO3.wigner_d")
        return "lie_learn"
    except ImportError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for name in [m for m in sys.modules if m == "lie_learn" or m.startswith("lie_learn.")]:
        del sys.modules[name]

    def wigner_D_matrix(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "lie_learn is not importable here (stand-in of scripts/gpu_check.py): SO(3) "
            "irreps of escnn are unavailable"
        )

    names = ["lie_learn", "lie_learn.representations", "lie_learn.representations.SO3"]
    for name in names:
        module = types.ModuleType(name)
        module.__path__ = []  # a package
        sys.modules[name] = module
    wigner = types.ModuleType("lie_learn.representations.SO3.wigner_d")
    wigner.wigner_D_matrix = wigner_D_matrix  # type: ignore[attr-defined]
    sys.modules[wigner.__name__] = wigner
    return f"stand-in ({reason})"


LIE_LEARN = lie_learn_status()

import torch  # noqa: E402

# ---- sizes -------------------------------------------------------------------------------
MNIST_MODEL = {"group": "C8", "width": 8, "depth": 3}  # search_spaces/examples/rotmnist_c8.yaml
NBODY_MODEL = {"hidden": 64, "layers": 4}  # bench/step_cost.py's N-body model
PENALTIES = {"rotated_mnist": {"norm": 0.01, "proj": 0.01}, "nbody": {"lie": 0.01}}
MODELS = {"rotated_mnist": MNIST_MODEL, "nbody": NBODY_MODEL}
TASKS = ("rotated_mnist", "nbody")


def sizes(quick: bool) -> dict[str, Any]:
    """Every size of the run: full (a GPU) or quick (tiny, any CPU)."""
    if quick:
        return {
            "models": {
                "rotated_mnist": {"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
                "nbody": {"hidden": 16, "layers": 2},
            },
            "contract_samples": 4,
            "step_batches": {"rotated_mnist": [16], "nbody": [16]},
            "step_rounds": 2,
            "step_warmup": 1,
            "train": {
                "rotated_mnist": {"train_size": 64, "val_size": 32, "test_size": 32},
                "nbody": {"train_size": 64, "val_size": 32, "test_size": 32},
            },
            "train_epochs": 1,
            "train_batch": 32,
            "levels": [1, 2],
            "window_s": 0.5,
            "conc_batch": {"rotated_mnist": 16, "nbody": 16},
            "conc_data": {"train_size": 64, "val_size": 16, "test_size": 16},
            "norm_samples": 32,
        }
    return {
        "models": dict(MODELS),
        "contract_samples": 32,
        "step_batches": {"rotated_mnist": [64, 512], "nbody": [64, 1024]},
        "step_rounds": 40,
        "step_warmup": 5,
        "train": {
            "rotated_mnist": {"train_size": 3000, "val_size": 1000, "test_size": 1000},
            "nbody": {"train_size": 2000, "val_size": 500, "test_size": 500},
        },
        "train_epochs": 3,
        "train_batch": 128,
        "levels": [1, 4, 8, 16],
        "window_s": 6.0,
        # a trial's batch: the default optim.batch_size
        "conc_batch": {"rotated_mnist": 64, "nbody": 64},
        "conc_data": {"train_size": 1024, "val_size": 64, "test_size": 64},
        "norm_samples": 1024,
    }


# ---- helpers -----------------------------------------------------------------------------
def sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def rel_gap(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach().float(), expected.detach().float()
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def mib(n: float | int | None) -> float | None:
    return None if n is None else round(float(n) / 2**20, 1)


def environment(device: torch.device) -> dict[str, Any]:
    import numpy

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "lie_learn": LIE_LEARN,
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    try:
        import escnn

        env["escnn"] = getattr(escnn, "__version__", "?")
    except Exception as exc:  # reported, then the parts that need it fail with it
        env["escnn"] = f"import failed: {exc}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_mib=mib(props.total_memory),
            capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            # TF32 changes float32 convolutions / matmuls on Ampere and later
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return env


# ---- 1. the relaxed-layer contract on the device -------------------------------------------
def contract(task: str, model_cfg: dict[str, Any], device: torch.device, n: int) -> list[dict]:
    """θ = 0 ≡ projected, exported ≡ projected, and the exported model's certificate, on the
    task's model with random free terms, in float32 and under bf16 autocast."""
    from workers.relax import make_certificate, project_model, reset_free_terms, set_theta
    from workers.relax import to_torchscript as script
    from workers.training import Trainer, TrialConfig

    data = {"train_size": max(2 * n, 16), "val_size": max(n, 8), "test_size": 8}
    trainer = Trainer(
        TrialConfig(
            task=task,
            model=model_cfg,
            data=data,
            hparams={"relax.schedule": "constant", "relax.theta": 0.5},
            epochs=1,
            seed=0,
            device=device.type,  # a TrialConfig device: cpu / cuda / auto
            eval_samples=n,
            norm_samples=0,
        )
    )
    model = trainer.model
    reset_free_terms(model, "normal", 0.1, seed=1)
    inputs = trainer.eval_inputs
    rows: list[dict] = []
    for precision in ("float32", "bf16"):
        tol = TOLERANCE[precision]

        def autocast(precision: str = precision) -> Any:
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

        def row(check: str, value: float, precision: str = precision, tol: float = tol) -> None:
            rows.append(
                {
                    "task": task,
                    "check": check,
                    "precision": precision,
                    "value": value,
                    "tolerance": tol,
                    "passed": math.isfinite(value) and value <= tol,
                }
            )

        with torch.no_grad():
            set_theta(model, 0.0)
            model.eval()
            with autocast():
                relaxed = model(*inputs).float()
            for mode in ("drop", "orthogonal"):
                projected = project_model(model, mode).eval()
                with autocast():
                    row(f"theta=0 vs projected ({mode})", rel_gap(relaxed, projected(*inputs)))
            set_theta(model, 0.3)
            projected = project_model(model, "orthogonal").eval()
            plain = projected.export().eval().to(device)
        scripted = script(plain, inputs)
        with torch.no_grad(), autocast():
            row("exported vs projected", rel_gap(scripted(*inputs), projected(*inputs)))
            errors = trainer.task.equivariance_errors(scripted, inputs, 0)
        with torch.no_grad():
            # in float32: escnn moves feature maps through NumPy, which has no bf16
            relaxed_errors = trainer.task.equivariance_errors(model.eval(), inputs, 0)
        cert = make_certificate(
            group=trainer.task.group,
            errors={k: float(v) for k, v in errors.items()},
            exact_elements=list(trainer.task.exact_elements),
            tolerance=tol,
            seed=0,
            relaxed_errors={k: float(v) for k, v in relaxed_errors.items()},
            measured_on=f"{len(inputs[0])} validation inputs on {device}, {precision}",
        )
        row("certificate: max error on the exact elements", float(cert["max_error_exact"]))
        rows[-1]["passed"] = bool(cert["passed"])
        # a checkpoint's certificate is measured in float32 (write_checkpoint); under bf16 the
        # figure says how far a model run in bf16 is from equivariant: reported, not required
        # (the N-body error is relative to the small predicted displacement, which bf16
        # rounding of the absolute positions dominates)
        rows[-1]["informational"] = precision == "bf16"
        # the relaxed model (θ = 0.3) must be measurably non-equivariant: the check can fail
        exact = [relaxed_errors[k] for k in trainer.task.exact_elements if k in relaxed_errors]
        rows[-1]["relaxed_max_error_exact"] = float(max(exact)) if exact else None
    return rows


# ---- 2. step cost --------------------------------------------------------------------------
def step_cost(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    from step_cost import run_task  # bench/step_cost.py

    out: dict[str, Any] = {}
    sync = sync_for(device)
    for task in TASKS:
        for batch in size["step_batches"][task]:
            data = {"train_size": batch, "val_size": 16, "test_size": 16}
            figures = run_task(
                f"{task} on {device}, batch {batch}",
                task,
                size["models"][task],
                data,
                PENALTIES[task],
                size["step_warmup"],
                size["step_rounds"],
                device=device.type,  # a TrialConfig device: cpu / cuda / auto
                batch_size=batch,
                sync=sync,
                breakdown_repeats=size["step_rounds"],
            )
            out[f"{task}/batch{batch}"] = {
                "batch": batch,
                "median_ms": figures["median_ms"],
                "ratio": figures["ratio"],
                "samples_per_s_relaxed_pen": batch / (figures["median_ms"]["relaxed+pen"] / 1e3),
            }
    return out


# ---- 3. one short training per task --------------------------------------------------------
def training(device: torch.device, size: dict[str, Any], out: Path) -> dict[str, Any]:
    from workers.training import Trainer, TrialConfig, write_checkpoint

    results: dict[str, Any] = {}
    for task in TASKS:
        hparams = {
            "relax.schedule": "triangular",
            "relax.theta_max": 0.5,
            "optim.batch_size": size["train_batch"],
            **{f"relax.lambda_{k}": v for k, v in PENALTIES[task].items()},
        }
        config = TrialConfig(
            task=task,
            model=size["models"][task],
            data=size["train"][task],
            hparams=hparams,
            epochs=size["train_epochs"],
            seed=0,
            device=device.type,  # a TrialConfig device: cpu / cuda / auto
            norm_samples=size["norm_samples"],
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        trainer = Trainer(config)
        built = time.perf_counter() - start
        trainer.fit()
        fit = time.perf_counter() - start - built
        train_seconds = sum(r.epoch_seconds for r in trainer.reports)
        samples = len(trainer.splits.train) * trainer.epoch
        peak = (
            {
                "peak_allocated_mib": mib(torch.cuda.max_memory_allocated(device)),
                "peak_reserved_mib": mib(torch.cuda.max_memory_reserved(device)),
            }
            if device.type == "cuda"
            else {}
        )
        folder, metrics = write_checkpoint(trainer, out / f"train_{task}")
        cert = json.loads((folder / "certificate.json").read_text())
        last = trainer.reports[-1]
        results[task] = {
            "device": str(trainer.device),
            "amp_bf16": trainer.amp,
            "model": config.model,
            "data": config.data,
            "epochs": trainer.epoch,
            "batch": size["train_batch"],
            "build_s": built,
            "fit_s": fit,
            "train_s": train_seconds,
            "samples_per_s": samples / train_seconds if train_seconds > 0 else None,
            **peak,
            f"val_{trainer.task.metric}": metrics.get(f"val_{trainer.task.metric}"),
            # measured on the device every epoch, as a trial reports it
            "epoch_equivariance_error_projected": last.equivariance_error_projected,
            "epoch_equivariance_error_relaxed": last.equivariance_error_relaxed,
            "certificate_passed": bool(cert["passed"]),
            "certificate_max_error_exact": cert["max_error_exact"],
            "certificate_tolerance": cert["tolerance"],
            "checkpoint": str(folder),
        }
    return results


# ---- 4. trials sharing the device ----------------------------------------------------------
def _conc_worker(
    index: int,
    device_name: str,
    size: dict[str, Any],
    barrier: Any,
    queue: Any,
) -> None:
    """One process = one trial at a time: for each task, build its Trainer, warm up, wait
    for the others, run the relaxed step over the data loader for the window, report."""
    try:
        from step_cost import make_step

        from workers.training import Trainer, TrialConfig

        # one CPU per trial, as Ray gives a trial with resources.cpu = 1 (OMP_NUM_THREADS=1)
        torch.set_num_threads(1)
        device = torch.device(device_name)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # what a trial's "cuda" means in this process
        sync = sync_for(device)
        for task in TASKS:
            batch = size["conc_batch"][task]
            hparams = {
                "relax.schedule": "constant",
                "relax.theta": 0.5,
                "optim.batch_size": batch,
                **{f"relax.lambda_{k}": v for k, v in PENALTIES[task].items()},
            }
            trainer = Trainer(
                TrialConfig(
                    task=task,
                    model=size["models"][task],
                    data=size["conc_data"],
                    hparams=hparams,
                    epochs=1,
                    seed=index,
                    data_seed=0,  # one data set (cached on disk) for every process
                    device=device.type,
                    norm_samples=size["norm_samples"],
                )
            )
            step = make_step(
                trainer, trainer.model, trainer.optimizer, trainer.penalty_weights, 0.5
            )

            def batches(trainer: Any = trainer) -> Any:
                while True:
                    for b in trainer.train_loader:
                        yield [t.to(device, non_blocking=True) for t in b]

            feed = batches()
            for _ in range(3):
                *inputs, target = next(feed)
                step(inputs, target)
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            barrier.wait(timeout=300)
            start = time.perf_counter()
            samples = steps = 0
            while time.perf_counter() - start < size["window_s"]:
                *inputs, target = next(feed)
                step(inputs, target)
                sync()  # Trainer.fit reads each step's loss back (float(loss)): one sync a step
                samples += int(target.shape[0])
                steps += 1
            elapsed = time.perf_counter() - start
            report: dict[str, Any] = {
                "index": index,
                "task": task,
                "device": str(trainer.device),
                "samples_per_s": samples / elapsed,
                "steps": steps,
            }
            if device.type == "cuda":
                free, total = torch.cuda.mem_get_info(device)
                report.update(
                    peak_reserved_mib=mib(torch.cuda.max_memory_reserved(device)),
                    peak_allocated_mib=mib(torch.cuda.max_memory_allocated(device)),
                    device_used_mib=mib(total - free),
                )
            queue.put(report)
            del trainer, step, feed
            if device.type == "cuda":
                torch.cuda.empty_cache()
    except BaseException as exc:
        queue.put({"index": index, "error": f"{type(exc).__name__}: {exc}"})
        barrier.abort()  # the others stop waiting for this one
        raise


def concurrency(
    device: torch.device, size: dict[str, Any], deadline: float, spawn: bool = False
) -> dict[str, Any]:
    import multiprocessing as mp

    # CUDA cannot be forked once initialised: spawn (each process imports torch and escnn, as
    # a Ray worker does); on the CPU, fork saves those imports (CPU mode's time)
    method = "spawn" if device.type == "cuda" or spawn else "fork"
    ctx = mp.get_context(method)
    from workers.tasks import build_task

    for task in TASKS:  # the data once here (a cached file), not in every process at once
        build_task(task, size["models"][task], size["conc_data"]).build_data(0)
    levels: dict[str, Any] = {}
    for n in size["levels"]:
        if time.monotonic() > deadline:
            levels[str(n)] = {"skipped": "time budget spent"}
            continue
        baseline = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(device)
            baseline = total - free
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [
            ctx.Process(target=_conc_worker, args=(i, str(device), size, barrier, queue))
            for i in range(n)
        ]
        start = time.perf_counter()
        for p in procs:
            p.start()
        reports: list[dict] = []
        expected = n * len(TASKS)
        while len(reports) < expected:
            try:
                reports.append(queue.get(timeout=max(1.0, deadline - time.monotonic() + 60)))
            except Exception:
                break
            if "error" in reports[-1]:
                break
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        errors = [r["error"] for r in reports if "error" in r]
        errors += [
            f"process {r['index']} trained {r['task']} on {r['device']}"
            for r in reports
            if "device" in r and torch.device(r["device"]).type != device.type
        ]
        level: dict[str, Any] = {
            "processes": n,
            "start_method": method,
            "wall_s": time.perf_counter() - start,
        }
        if errors:
            level["errors"] = errors[:3]
        for task in TASKS:
            rows = [r for r in reports if r.get("task") == task]
            if len(rows) < n:
                level[task] = {"incomplete": f"{len(rows)} of {n} processes reported"}
                continue
            rates = [r["samples_per_s"] for r in rows]
            entry: dict[str, Any] = {
                "per_trial_samples_per_s": sum(rates) / n,
                "slowest_trial_samples_per_s": min(rates),
                "total_samples_per_s": sum(rates),
            }
            if device.type == "cuda" and baseline is not None:
                used = max(r["device_used_mib"] for r in rows)
                entry.update(
                    per_trial_peak_reserved_mib=max(r["peak_reserved_mib"] for r in rows),
                    # the device's memory in use during the window, less what was in use
                    # before the processes started, per process (CUDA context included)
                    per_trial_device_mib=round((used - mib(baseline)) / n, 1),
                    device_used_mib=used,
                )
            level[task] = entry
        levels[str(n)] = level
    return levels


def recommend(levels: dict[str, Any], device: torch.device, env: dict[str, Any]) -> dict:
    """Per task: among the measured numbers of trials per device whose memory fits in 80 %
    of the device's (and no more trials than CPUs: one CPU per trial), the fewest that reach
    90 % of the best total throughput among them, as the ``resources.gpu`` fraction 1/N."""
    out: dict[str, Any] = {}
    capacity = env.get("gpu_memory_mib")
    cpus = env.get("cpu_count") or 1
    for task in TASKS:
        rows = {
            int(n): lv[task]
            for n, lv in levels.items()
            if isinstance(lv.get(task), dict) and "total_samples_per_s" in lv[task]
        }
        if not rows:
            out[task] = {"fraction": None, "why": "no concurrency level completed"}
            continue
        fitting = {}
        for n, r in sorted(rows.items()):
            memory_ok = (
                capacity is None
                or r.get("per_trial_device_mib") is None
                or n * r["per_trial_device_mib"] <= 0.8 * capacity
            )
            if memory_ok and n <= cpus:
                fitting[n] = r
        if not fitting:
            out[task] = {"fraction": None, "why": "no measured level fits the memory and CPUs"}
            continue
        best = max(r["total_samples_per_s"] for r in fitting.values())
        chosen = min(n for n, r in fitting.items() if r["total_samples_per_s"] >= 0.9 * best)
        out[task] = {
            "trials_per_device": chosen,
            "fraction": round(1 / chosen, 4),
            "total_samples_per_s": rows[chosen]["total_samples_per_s"],
            "best_total_samples_per_s": best,
            "why": (
                f"{chosen} trial(s) reach {rows[chosen]['total_samples_per_s'] / best:.0%} of "
                f"the best total throughput of the {len(fitting)} level(s) that fit"
            ),
            "measured_on": str(device),
        }
    return out


# ---- the run -------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return "-" if x is None else str(x)

    cells = [[fmt(x) for x in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    parts = []
    if result.get("contract"):
        rows = [
            [r["task"], r["check"], r["precision"], r["value"], r["tolerance"], r["passed"]]
            for r in result["contract"]
        ]
        parts.append(table(["task", "check", "precision", "rel. error", "tol", "ok"], rows))
        if any(r.get("informational") for r in result["contract"]):
            parts[-1] += "\n(bf16 certificate rows: reported, not required)"
    if result.get("step_cost"):
        rows = [
            [
                k,
                v["median_ms"]["standard"],
                v["median_ms"]["relaxed+pen"],
                v["ratio"]["relaxed+pen"],
            ]
            for k, v in result["step_cost"].items()
        ]
        parts.append(table(["step", "standard ms", "relaxed+pen ms", "ratio"], rows))
    if result.get("training"):
        rows = [
            [
                t,
                v["device"],
                v["samples_per_s"],
                v.get("peak_reserved_mib"),
                v["epoch_equivariance_error_projected"],
                v["certificate_max_error_exact"],
                v["certificate_passed"],
            ]
            for t, v in result["training"].items()
        ]
        parts.append(
            table(
                ["training", "device", "samples/s", "peak MiB", "epoch eq.err", "cert err", "ok"],
                rows,
            )
        )
    if result.get("concurrency"):
        rows = []
        for n, lv in result["concurrency"].items():
            for task in TASKS:
                e = lv.get(task) or {}
                rows.append(
                    [
                        n,
                        task,
                        e.get("per_trial_samples_per_s"),
                        e.get("total_samples_per_s"),
                        e.get("per_trial_device_mib"),
                        e.get("incomplete") or lv.get("skipped"),
                    ]
                )
        parts.append(table(["procs", "task", "per trial/s", "total/s", "MiB/trial", "note"], rows))
    if result.get("recommendation"):
        rows = [
            [t, r.get("fraction"), r.get("trials_per_device"), r.get("why")]
            for t, r in result["recommendation"].items()
        ]
        parts.append(table(["task", "resources.gpu", "trials/device", "why"], rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cpu or cuda:N")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU mode, tests)")
    parser.add_argument(
        "--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder of the figures"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="seconds after which no further concurrency level starts (default 300)",
    )
    parser.add_argument(
        "--spawn",
        action="store_true",
        help="start the concurrency processes as on a GPU (spawn) on the CPU too",
    )
    parser.add_argument(
        "--parts",
        default="contract,step_cost,training,concurrency",
        help="comma-separated parts to run",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: FAIL: --device {args.device} but torch {torch.__version__} sees no "
            f"CUDA device (CUDA build {torch.version.cuda}); use --device cpu --quick here",
            file=sys.stderr,
        )
        return 1
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # what a trial's "cuda" means here
    # the workers pick their device from TrialConfig.device: make sure nothing overrides it
    os.environ.pop("RELAXTUNE_DEVICE", None)
    size = sizes(args.quick)
    result: dict[str, Any] = {
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "environment": environment(device),
        "sizes": size,
        "problems": [],
    }
    path = out / "gpu_check.json"

    def save() -> None:
        result["seconds"] = time.monotonic() - started
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print(f"gpu_check: {json.dumps(result['environment'])}", flush=True)
    save()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for part in parts:
        t0 = time.monotonic()
        print(f"\ngpu_check: part {part} …", flush=True)
        try:
            if part == "contract":
                result["contract"] = [
                    row
                    for task in TASKS
                    for row in contract(
                        task, size["models"][task], device, size["contract_samples"]
                    )
                ]
                bad = [
                    r for r in result["contract"] if not r["passed"] and not r.get("informational")
                ]
                result["problems"] += [
                    f"contract {r['task']}: {r['check']} ({r['precision']}) = {r['value']:.3g} "
                    f"> {r['tolerance']:.0e}"
                    for r in bad
                ]
            elif part == "step_cost":
                result["step_cost"] = step_cost(device, size)
            elif part == "training":
                result["training"] = training(device, size, out)
                for task, t in result["training"].items():
                    if not t["certificate_passed"]:
                        result["problems"].append(f"training {task}: certificate failed")
                    if t["device"].split(":")[0] != device.type:
                        result["problems"].append(f"training {task} ran on {t['device']}")
            elif part == "concurrency":
                result["concurrency"] = concurrency(device, size, deadline, args.spawn)
                result["recommendation"] = recommend(
                    result["concurrency"], device, result["environment"]
                )
                for n, lv in result["concurrency"].items():
                    for err in lv.get("errors", []):
                        result["problems"].append(f"concurrency {n}: {err}")
            else:
                result["problems"].append(f"unknown part {part!r}")
        except Exception as exc:
            import traceback

            traceback.print_exc()
            result["problems"].append(f"{part}: {type(exc).__name__}: {exc}")
        result.setdefault("part_seconds", {})[part] = time.monotonic() - t0
        save()
    print()
    print(summary(result))
    print(f"\ngpu_check: figures in {path} ({time.monotonic() - started:.0f} s)")
    if result["problems"]:
        for problem in result["problems"]:
            print(f"gpu_check: FAIL: {problem}", file=sys.stderr)
        return 1
    print("gpu_check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
