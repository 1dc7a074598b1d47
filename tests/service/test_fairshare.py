"""The fair-share planner (``service.fairshare``): which queued jobs start, in what order, and
what a waiting job is told. Pure functions: no Ray, no database."""

from __future__ import annotations

from service.fairshare import Demand, Queued, Running, demand_of, plan


def _job(job_id: str, tenant: str, trials: int = 1, cpu: float = 1.0, gpu: float = 0.0) -> Queued:
    return Queued(job_id, tenant, Demand(trials, trials * cpu, trials * gpu))


def _run(job_id: str, tenant: str, trials: int = 1, cpu: float = 1.0) -> Running:
    return Running(job_id, tenant, Demand(trials, trials * cpu, 0.0))


def test_demand_is_concurrent_trials_times_resources() -> None:
    spec = {"budget": {"trials": 8, "max_concurrent": 3}, "resources": {"cpu": 2, "gpu": 0.5}}
    assert demand_of(spec) == Demand(3, 6.0, 1.5)
    # never more trials at once than the budget has
    assert demand_of({"budget": {"trials": 2, "max_concurrent": 4}, "resources": {"cpu": 1}}) == (
        Demand(2, 2.0, 0.0)
    )


def test_two_tenants_both_start_when_both_fit() -> None:
    p = plan([_job("a1", "alice"), _job("b1", "bob")], [], {"CPU": 2}, max_jobs=4)
    assert p.start == ["a1", "b1"]
    assert p.queue == {}


def test_tenants_alternate_even_when_one_submitted_first_and_many() -> None:
    queued = [_job(f"a{i}", "alice") for i in range(5)] + [_job("b0", "bob"), _job("c0", "carol")]
    p = plan(queued, [], {"CPU": 3}, max_jobs=10)
    assert p.start == ["a0", "b0", "c0"]  # one each, not alice's first three
    # alice's rest wait in order, each told where it stands and why
    assert [p.queue[f"a{i}"]["position"] for i in range(1, 5)] == [1, 2, 3, 4]
    assert p.queue["a1"]["reason"].startswith(
        "waiting for 1 CPUs (0 free); cluster busy with 3 jobs"
    )
    assert "3 job(s) ahead" in p.queue["a4"]["reason"]


def test_the_tenant_with_fewer_running_trials_goes_first() -> None:
    running = [_run("a0", "alice", trials=2)]
    p = plan([_job("a1", "alice"), _job("b1", "bob")], running, {"CPU": 3}, max_jobs=10)
    assert p.start == ["b1"]  # alice already holds 2 CPUs; one is left, for bob
    assert p.queue["a1"]["position"] == 1


def test_weight_gives_a_tenant_a_larger_share() -> None:
    running = [_run("a0", "alice"), _run("b0", "bob")]
    queued = [_job("a1", "alice"), _job("b1", "bob")]
    weights = {"alice": 2.0, "bob": 1.0}
    p = plan(queued, running, {"CPU": 3}, max_jobs=10, weight=weights.__getitem__)
    assert p.start == ["a1"]  # 1/2 < 1/1: alice's turn
    p = plan(queued, running, {"CPU": 3}, max_jobs=10)
    assert p.start == ["a1"]  # equal weights, never served: the oldest job breaks the tie
    p = plan(queued, running, {"CPU": 3}, max_jobs=10, last_served={"alice": 5, "bob": 4})
    assert p.start == ["b1"]  # equal shares: the tenant served least recently goes first


def test_no_backfill_past_the_job_whose_turn_it_is() -> None:
    # bob's big job is next; carol's small one behind it must not overtake it forever
    running = [_run("a0", "alice", trials=2)]
    queued = [_job("b1", "bob", trials=4), _job("c1", "carol", trials=1)]
    p = plan(queued, running, {"CPU": 4}, max_jobs=10, last_served={"alice": 1})
    assert p.start == []
    assert p.queue["b1"] == {
        "position": 1,
        "reason": "waiting for 4 CPUs (2 free); cluster busy with 1 job",
    }
    assert p.queue["c1"]["position"] == 2


def test_a_job_larger_than_the_cluster_starts_when_it_is_idle() -> None:
    p = plan([_job("big", "alice", trials=8)], [], {"CPU": 2}, max_jobs=4)
    assert p.start == ["big"]
    p = plan([_job("big", "alice", trials=8)], [_run("x", "bob")], {"CPU": 2}, max_jobs=4)
    assert p.start == [] and "waiting for 2 CPUs (1 free)" in p.queue["big"]["reason"]


def test_gpus_count_as_well_as_cpus() -> None:
    queued = [_job("a", "alice", cpu=1, gpu=1), _job("b", "bob", cpu=1, gpu=1)]
    p = plan(queued, [], {"CPU": 8, "GPU": 1}, max_jobs=4)
    assert p.start == ["a"]
    assert "1 GPUs (0 free)" in p.queue["b"]["reason"]


def test_max_jobs_bounds_the_jobs_running_at_once() -> None:
    queued = [_job("a", "alice"), _job("b", "bob"), _job("c", "carol")]
    p = plan(queued, [], {"CPU": 16}, max_jobs=2)
    assert p.start == ["a", "b"]
    assert "the most this controller runs at once" in p.queue["c"]["reason"]


def test_tenant_trial_cap_passes_the_tenant_over() -> None:
    running = [_run("a0", "alice", trials=2)]
    queued = [_job("a1", "alice"), _job("b1", "bob")]
    caps = {"alice": 2, "bob": 8}
    p = plan(queued, running, {"CPU": 16}, max_jobs=10, trial_cap=caps.__getitem__)
    assert p.start == ["b1"]
    assert "its cap is 2" in p.queue["a1"]["reason"]
    # a job larger than its tenant's cap still starts once the tenant runs nothing
    p = plan(
        [_job("a2", "alice", trials=5)], [], {"CPU": 16}, max_jobs=10, trial_cap=caps.__getitem__
    )
    assert p.start == ["a2"]
