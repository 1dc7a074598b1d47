"""A real search on a multi-node Ray cluster: trials land on more than one worker node.

``ray.cluster_utils.Cluster`` (the ``cluster`` fixture of ``tests/conftest.py``) starts a head
with no CPUs (nothing is scheduled there, as in the compose deployment) and two one-CPU
worker nodes on this machine; ``run_search`` only gets
the cluster's address and a shared Ray storage path, as the controller does in scale mode.
Nodes on one host share ``node_ip`` and ``hostname``, so the trainable reports its Ray node
id (``node_id``) with every epoch and the test reads it back from Tune's ``result.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.artifacts import study_name
from service.search import run_search
from workers.training import verify_checkpoint

pytestmark = pytest.mark.slow

# The smallest real search: two trials per worker node, one epoch each, no pruning (so every
# trial runs to the end and the per-node count is deterministic in total).
SPEC = {
    "name": "cluster",
    "task": "rotated_mnist",
    "model": {"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
    "data": {"train_size": 128, "val_size": 64, "test_size": 64},
    "search_space": "relax",
    "budget": {"trials": 4, "epochs": 1, "max_concurrent": 2},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "resources": {"cpu": 1, "gpu": 0},
    "scheduler": "none",
    "seed": 3,
}


def _results(storage: Path) -> list[dict]:
    """Every epoch report Tune wrote under the shared storage (one JSON line per epoch)."""
    rows = []
    for path in storage.glob("run-*/*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_search_spreads_trials_over_worker_nodes(cluster, tmp_path: Path) -> None:
    import ray

    storage = tmp_path / "shared-ray"
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = run_search(
        parse_spec(SPEC),
        "clusterjob",
        db,
        tmp_path / "art",
        ray_address=cluster.address,
        storage_path=str(storage),
    )
    assert result["status"] == "succeeded"

    worker_ids = {
        n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0
    }
    head_id = cluster.head_node.node_id
    rows = _results(storage)
    assert rows, f"no result.json under {storage}"
    per_node = Counter()
    trial_node: dict[str, str] = {}
    for row in rows:
        trial_node[row["trial_id"]] = row["node_id"]
    per_node.update(trial_node.values())
    print("\ntrials per node:")
    for node, count in sorted(per_node.items()):
        print(f"  {node[:12]}  {count} trial(s)")
    assert len(trial_node) == SPEC["budget"]["trials"]
    assert head_id not in per_node, "the head has no CPUs: no trial may run there"
    assert set(per_node) <= worker_ids
    assert len(per_node) > 1, f"all trials ran on one node: {dict(per_node)}"

    study = optuna.load_study(study_name=study_name("clusterjob"), storage=db)
    assert sum(t.state == TrialState.COMPLETE for t in study.get_trials()) == 4
    best = result["best"]
    assert Path(best["checkpoint"]) == (tmp_path / "art/jobs/clusterjob/best").resolve()
    report = verify_checkpoint(best["checkpoint"])
    assert report["passed"], report["problems"]
