"""The driver process of one job: ``python -m service.driver JOB_ID --db … --worker-id …``.

The scheduling controller (``service.pool.DriverPool``) claims a job, then starts this process
for it; the process joins the controller's Ray cluster by address, runs the job's search (and
gain report) exactly as a one-job controller would (``service.controller.Controller.run_job``:
heartbeats, cancel polls, progress, how the job ended), and exits. The job stays claimed by
the controller's worker id, so the controller can requeue it when this process dies.

SIGTERM (the controller stopping) interrupts the search and puts the job back in the queue;
it resumes from its study. The process is started with ``PR_SET_PDEATHSIG`` (Linux): if the
controller dies, so does this driver, and the restarted controller requeues the job.

Exit status: 0 when the job's end (or its requeue) was recorded, 3 when the job is not
running under the given worker (nothing to do), 1 on an unexpected error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("service.driver")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m service.driver", description=__doc__)
    p.add_argument("job")
    p.add_argument("--db", required=True)
    p.add_argument("--artifacts", required=True)
    p.add_argument("--worker-id", required=True)
    p.add_argument("--ray-address", required=True)
    p.add_argument("--storage-path")
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s driver[{args.job}] %(name)s: %(message)s",
    )
    from service.controller import Controller
    from service.settings import Settings
    from service.store import JobStore

    values = {"db": args.db, "artifacts": Path(args.artifacts), "ray_address": args.ray_address}
    if args.storage_path:
        values["ray_storage"] = args.storage_path
    settings = Settings(**values, worker_id=args.worker_id)
    store = JobStore(args.db)
    try:
        job = store.get_job(args.job)
        if job.status != "running" or job.claimed_by != args.worker_id:
            logger.warning(
                "job %s is %s under %s, not running under %s: nothing to drive",
                job.id,
                job.status,
                job.claimed_by,
                args.worker_id,
            )
            return 3
        controller = Controller(store, settings, worker_id=args.worker_id, requeue_on_stop=True)
        signal.signal(signal.SIGTERM, lambda _signum, _frame: controller.stop())
        signal.signal(signal.SIGINT, lambda _signum, _frame: controller.stop())
        finished = controller.run_job(job)
        logger.info("job %s: %s", finished.id, finished.status)
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
