"""Bytes a browser transfers for a running job's dashboard: the first view and each update.

Setup (temporary SQLite database, the app in-process): a token, a running job whose Optuna
study holds ``--trials`` trials shaped like a real job's (``bench/dashboard_render.py``'s
``synthetic_trials``: per-epoch history, a third pruned, a few failed, 4 running), and a
signed-in session (``POST /signin``). Every request sends ``Accept-Encoding: gzip`` as a
browser does; sizes are what travels (headers included), not the decoded bodies.

* **first view**: the job page, then every ``/static`` file it links (a cold browser cache:
  plotly.js, the stylesheet, the scripts);
* **second view**: the job page again (a warm cache: the static files are immutable);
* **update, changed**: one epoch of a running trial is written into the study, then the page's
  poll (``GET /v1/jobs/{id}/dashboard/data`` with the ``If-None-Match`` of the last answer);
  repeated ``--updates`` times, median and largest reported;
* **update, unchanged**: the same poll with nothing written (``304 Not Modified``).

A served page never reloads itself (no ``<meta http-equiv="refresh">``): the script checks
that too. Targets: first view ≤ 1 MB, each update ≤ 50 KB for a 100-trial job, 0 reloads.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_render import synthetic_trials  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from service.api import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import JobStore  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "search_spaces" / "examples" / "quick_rotmnist.yaml"


def _wire_bytes(response: Any) -> int:
    """Bytes on the wire: status line and headers plus the body as sent (compressed)."""
    head = len(f"HTTP/1.1 {response.status_code}\r\n") + sum(
        len(k) + len(v) + 4 for k, v in response.headers.items()
    )
    return head + response.num_bytes_downloaded


def _advance_running_trial(store: JobStore, study_name: str, step: int) -> None:
    """One more epoch of a running trial: its intermediate value and rewritten history, as
    the search driver writes them."""
    storage = store.optuna_storage()
    study = optuna.load_study(study_name=study_name, storage=storage)
    running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    trial = running[step % len(running)]
    history = list(trial.user_attrs.get("history") or [])
    epoch = len(history) + 1
    value = 0.5 + 0.01 * step
    history.append({"epoch": epoch, "val_projected": value, "val_relaxed": value + 0.01})
    storage.set_trial_intermediate_value(trial._trial_id, epoch, value)
    storage.set_trial_user_attr(trial._trial_id, "history", history)


def measure(n_trials: int, epochs: int, updates: int) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        store = JobStore(f"sqlite:///{tmp}/weight.db")
        store.upgrade()
        settings = Settings(db=store.url, artifacts=Path(tmp) / "artifacts")
        token = store.create_token("bench")
        from search_spaces import parse_spec

        spec = parse_spec(SPEC.read_text()).to_dict()
        spec["budget"]["trials"], spec["budget"]["epochs"] = n_trials, epochs
        job = store.create_job("bench", spec, "bench: rotmnist-c8")
        store.claim(job.id, "bench")
        store.update_progress(job.id, {"complete": n_trials - 4, "running": 4, "total": n_trials})
        study = optuna.create_study(
            study_name=job.study_name, storage=store.optuna_storage(), direction="maximize"
        )
        study.add_trials(synthetic_trials(n_trials, epochs))
        app = create_app(settings, store)
        with TestClient(app) as client:
            client.headers["Accept-Encoding"] = "gzip"
            form = client.get("/signin").text
            form_token = re.search(r'name="form_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            signed = client.post(
                "/signin",
                data={"token": token, "form_token": form_token},
                follow_redirects=False,
            )
            assert signed.status_code == 303, signed.text
            page = client.get(f"/v1/jobs/{job.id}/dashboard")
            assert page.status_code == 200
            reloads = len(re.findall(r"http-equiv=[\"']?refresh", page.text, flags=re.I))
            assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
            asset_bytes = {}
            for url in assets:
                response = client.get(url)
                assert response.status_code == 200, url
                asset_bytes[url.rsplit("/", 1)[-1]] = _wire_bytes(response)
            first = _wire_bytes(page) + sum(asset_bytes.values())
            second = _wire_bytes(client.get(f"/v1/jobs/{job.id}/dashboard"))
            data_url = f"/v1/jobs/{job.id}/dashboard/data"
            etag = json.loads(
                page.text.split('id="dashboard-data">', 1)[1].split("</script>", 1)[0]
            )["live"]["etag"]
            changed: list[int] = []
            decoded: list[int] = []
            for step in range(updates):
                _advance_running_trial(store, job.study_name, step)
                response = client.get(data_url, headers={"If-None-Match": etag})
                assert response.status_code == 200, response.status_code
                etag = response.headers["etag"]
                changed.append(_wire_bytes(response))
                decoded.append(len(response.content))
            unchanged = client.get(data_url, headers={"If-None-Match": etag})
            assert unchanged.status_code == 304
        store.close()
    return {
        "trials": n_trials,
        "epochs": epochs,
        "page_bytes": _wire_bytes(page),
        "asset_bytes": asset_bytes,
        "first_view_bytes": first,
        "second_view_bytes": second,
        "update_changed_median_bytes": int(statistics.median(changed)),
        "update_changed_max_bytes": max(changed),
        "update_changed_decoded_max_bytes": max(decoded),
        "update_unchanged_bytes": _wire_bytes(unchanged),
        "full_reloads": reloads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="8 epochs, 3 updates")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.updates = 8, 3
    result = measure(args.trials, args.epochs, args.updates)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    kb = 1000
    print(f"running job: {result['trials']} trials × {result['epochs']} epochs (gzip, as sent)")
    for name, size in result["asset_bytes"].items():
        print(f"  static {name:<20} {size / kb:9.1f} kB (once; cached a year)")
    print(f"  page                        {result['page_bytes'] / kb:9.1f} kB")
    print(f"first view (cold cache)       {result['first_view_bytes'] / kb:9.1f} kB")
    print(f"second view (warm cache)      {result['second_view_bytes'] / kb:9.1f} kB")
    print(
        f"update after a change         {result['update_changed_median_bytes'] / kb:9.1f} kB "
        f"median, {result['update_changed_max_bytes'] / kb:.1f} kB max "
        f"({result['update_changed_decoded_max_bytes'] / kb:.1f} kB decoded)"
    )
    print(f"update, nothing changed       {result['update_unchanged_bytes'] / kb:9.1f} kB (304)")
    print(f"full reloads                  {result['full_reloads']}")


if __name__ == "__main__":
    main()
