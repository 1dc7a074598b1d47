"""The same search on SQLite and on PostgreSQL, one after the other in one process.

Runs ``service.search.run_search`` on the quick rotated-MNIST spec (or ``--quick``: 4 trials
of 2 epochs, same for both backends) once on a fresh SQLite file and once on a fresh
PostgreSQL database (created on the server of ``--pg-url`` and dropped afterwards), on one
local Ray started and warmed up front (the training modules imported once on a worker, so
the first run does not pay for a cold page cache). The wall time is the whole ``run_search``
call: study creation, every trial, the exported best checkpoint. ``--rounds 2`` (default)
runs A, B, B, A so that drift in the machine's load favours neither backend.

    .venv/bin/python bench/db_backends.py [--quick] [--rounds 2] [--pg-url URL]

The last line printed is the figure: PostgreSQL mean wall time / SQLite mean wall time.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, save_results, table

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SPEC_FILE = ROOT / "search_spaces" / "examples" / "quick_rotmnist.yaml"


def load_spec(quick: bool) -> dict[str, Any]:
    spec = yaml.safe_load(SPEC_FILE.read_text())
    if quick:  # a smaller variant, still concurrent and still pruned by ASHA
        spec["budget"] = {"trials": 4, "epochs": 2, "max_concurrent": 2}
        spec["name"] = spec["name"] + "-small"
    return spec


@contextmanager
def sqlite_db(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'bench.db'}"


@contextmanager
def postgres_db(admin_url: str) -> Iterator[str]:
    """A fresh database on the server, dropped afterwards (even when the run fails)."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"relaxtune_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_one(backend: str, spec_dict: dict[str, Any], db_url: str, workdir: Path) -> dict[str, Any]:
    from search_spaces import parse_spec
    from service.search import run_search
    from service.store import JobStore

    store = JobStore(db_url)
    store.upgrade()  # as `relaxtune db upgrade` would; not part of the timed search
    job = store.claim(store.create_job("bench", spec_dict, spec_dict["name"]).id, "bench")
    started = time.perf_counter()
    result = run_search(parse_spec(spec_dict), job.id, db_url, workdir / "art")
    wall = time.perf_counter() - started
    store.finish(job.id, "succeeded", best=result["best"])
    store.close()
    p = result["progress"]
    return {
        "backend": backend,
        "wall_s": wall,
        "complete": p["complete"],
        "pruned": p["pruned"],
        "failed": p["failed"],
        "best_value": p["best_value"],
    }


def _warm_up() -> None:
    # what every trial imports: read once so the page cache is warm for both backends
    import workers.tasks.rotated_mnist  # noqa: F401
    import workers.training  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials x 2 epochs")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="server (admin) URL")
    parser.add_argument("--order", default="sqlite,postgresql", help="which backend runs first")
    parser.add_argument("--rounds", type=int, default=2, help="1: A B; 2: A B B A")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()

    import ray

    spec = load_spec(args.quick)
    budget = spec["budget"]
    print(
        f"spec {spec['name']}: {budget['trials']} trials x {budget['epochs']} epochs, "
        f"{budget['max_concurrent']} at a time, Ray with {args.num_cpus} CPUs"
    )
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    order = args.order.split(",")
    sequence = (order + order[::-1]) * (args.rounds // 2) + order * (args.rounds % 2)
    runs: list[dict[str, Any]] = []
    try:
        ray.get(ray.remote(_warm_up).remote())
        for backend in sequence:
            with tempfile.TemporaryDirectory(prefix=f"relaxtune-bench-{backend}-") as tmp:
                workdir = Path(tmp)
                db = sqlite_db(workdir) if backend == "sqlite" else postgres_db(args.pg_url)
                with db as url:
                    r = run_one(backend, spec, url, workdir)
            runs.append(r)
            print(
                f"{backend:<10} wall {r['wall_s']:7.1f} s  ({r['complete']} complete, "
                f"{r['pruned']} pruned, {r['failed']} failed; best {r['best_value']:.4f})",
                flush=True,
            )
    finally:
        ray.shutdown()

    means = {b: statistics.fmean(r["wall_s"] for r in runs if r["backend"] == b) for b in order}
    ratio = means["postgresql"] / means["sqlite"]
    print()
    print(
        table(
            ["backend", "wall s", "complete", "pruned", "failed", "best val_accuracy"],
            [
                [
                    r["backend"],
                    r["wall_s"],
                    r["complete"],
                    r["pruned"],
                    r["failed"],
                    r["best_value"],
                ]
                for r in runs
            ],
        )
    )
    print("mean wall s: " + ", ".join(f"{b} {m:.1f}" for b, m in means.items()))
    save_results(
        "db_backends",
        {
            "spec": spec,
            "sequence": sequence,
            "runs": runs,
            "mean_wall_s": means,
            "ratio_pg_over_sqlite": ratio,
        },
        args.quick,
    )
    print(f"postgresql/sqlite wall-time ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
