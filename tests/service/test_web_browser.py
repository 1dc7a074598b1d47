"""The web app in a real headless Chromium, driven by selenium through chromedriver, against a
real server process: sign in, watch a running job update in place, compare two jobs, submit
and cancel from the page, sign out. No console error, no request to another origin, and the
server's log holds no token afterwards.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them
the tests skip, or fail under ``RELAXTUNE_TEST_REQUIRE_CHROMIUM`` (``make test``). With
``RELAXTUNE_SCREENSHOT=1`` the job page, the comparison and the job list are saved under
``docs/``.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.store import JobStore

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_SPEC = (REPO_ROOT / "search_spaces" / "examples" / "quick_rotmnist.yaml").read_text()
DISTRIBUTIONS = {
    "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
    "relax.schedule": CategoricalDistribution(["linear_decay", "triangular", "cosine"]),
    "relax.theta_max": FloatDistribution(0.05, 1.0),
    "relax.peak": FloatDistribution(0.2, 0.8),
}
EPOCHS = 6

try:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # a dev dependency; the `chromium` fixture skips or fails without it
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _trial(number: int, state: TrialState, epochs: int, schedule: str) -> Any:
    quality = 0.6 + 0.03 * (number % 7)
    theta_max = 0.2 + 0.1 * (number % 5)
    history = []
    for epoch in range(1, epochs + 1):
        val = quality * (1 - math.exp(-epoch / 2))
        history.append(
            {
                "epoch": epoch,
                "progress": epoch / EPOCHS,
                "theta": theta_max * max(0.0, 1 - epoch / (0.8 * EPOCHS)),
                "val_projected": val,
                "val_relaxed": val + 0.02,
                "equivariance_error_relaxed": 0.01 * theta_max,
                "equivariance_error_projected": 1e-7,
            }
        )
    params: dict[str, Any] = {
        "optim.lr": 10 ** (-3 + 0.1 * (number % 9)),
        "relax.schedule": schedule,
        "relax.theta_max": theta_max,
    }
    if schedule == "triangular":
        params["relax.peak"] = 0.4
    final = (
        {"stop_reason": "pruned by the scheduler after epoch 2"} if state.name == "PRUNED" else {}
    )
    return optuna.trial.create_trial(
        state=state,
        value=history[-1]["val_projected"] if state == TrialState.COMPLETE else None,
        params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params},
        user_attrs={
            "history": history,
            "checkpoint": f"/srv/artifacts/jobs/x/trials/{number:05d}",
            **final,
        },
        intermediate_values={h["epoch"]: h["val_projected"] for h in history},
    )


def _study(store: JobStore, job: Any, trials: list[Any]) -> optuna.Study:
    study = optuna.create_study(
        study_name=job.study_name, storage=store.optuna_storage(), direction="maximize"
    )
    study.add_trials(trials)
    return study


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real API process on a fresh database: alice's running relax job, her finished
    baseline job, and her token."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tmp_path_factory.mktemp("web")
    store = JobStore(f"sqlite:///{tmp / 'jobs.db'}")
    store.upgrade()
    token = store.create_token("alice")
    spec = parse_spec(QUICK_SPEC).to_dict()
    spec["budget"] = {**spec["budget"], "trials": 12, "epochs": EPOCHS}
    running = store.create_job("alice", {**spec, "name": "relax-search"}, "relax-search")
    store.claim(running.id, "test")
    trials = [
        _trial(n, TrialState.COMPLETE, EPOCHS, ("linear_decay", "triangular", "cosine")[n % 3])
        for n in range(4)
    ]
    trials.append(_trial(4, TrialState.PRUNED, 2, "cosine"))
    trials.append(_trial(5, TrialState.RUNNING, 2, "linear_decay"))
    _study(store, running, trials)
    store.update_progress(
        running.id, {"complete": 4, "pruned": 1, "running": 1, "total": 12, "best_value": 0.7}
    )
    baseline_spec = {**spec, "name": "baseline-search", "search_space": "baseline"}
    baseline = store.create_job("alice", baseline_spec, "baseline-search")
    store.claim(baseline.id, "test")
    _study(
        store,
        baseline,
        [
            optuna.trial.create_trial(
                value=0.55 + 0.02 * n,
                params={"optim.lr": 10 ** (-3 + 0.2 * n)},
                distributions={"optim.lr": DISTRIBUTIONS["optim.lr"]},
                intermediate_values={e: 0.1 * e for e in range(1, EPOCHS + 1)},
                user_attrs={
                    "history": [{"epoch": e, "val_projected": 0.1 * e} for e in range(1, 7)]
                },
            )
            for n in range(3)
        ],
    )
    store.finish(baseline.id, "succeeded", best={"number": 2, "value": 0.59})
    port = _free_port()
    log_path = tmp / "server.log"
    env = {
        **os.environ,
        "RELAXTUNE_DB": store.url,
        "RELAXTUNE_ARTIFACTS": str(tmp / "artifacts"),
        "RELAXTUNE_DASHBOARD_REFRESH_S": "1",
        # uvicorn writes its access log to stdout, a file here: unbuffered, so that the log
        # read after browsing holds every request
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "service.api:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "info",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.3)
        yield {
            "url": url,
            "store": store,
            "token": token,
            "running": running,
            "baseline": baseline,
            "log": log_path,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)
        store.close()


@pytest.fixture(scope="module")
def browser(chromium: Any) -> Any:
    return chromium


def _wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    try:
        # a live page replaces its rows while a condition reads them: a stale element is
        # a reason to look again, not a failure
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.2,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(condition)
    except Exception as exc:  # say where the browser was, and what it logged
        logs = [e["message"] for e in driver.get_log("browser")]
        state = driver.execute_script(
            "var m = document.querySelectorAll('.chart-message');"
            "return [typeof Plotly, document.readyState,"
            " Array.prototype.map.call(m, function (e) { return e.textContent; })];"
        )
        raise AssertionError(f"timed out at {driver.current_url}: {logs} {state}") from exc


def _requests(driver: Any) -> list[dict[str, Any]]:
    """Requests the browser sent since the last call (from the performance log)."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            params = message["params"]
            sent.append({"url": params["request"]["url"], "type": params.get("type")})
    return sent


#: answers the test provokes on purpose, which Chromium logs as failed loads
EXPECTED_REFUSALS = (
    "/signin - Failed to load resource: the server responded with a status of 401",
    "/v1/jobs - Failed to load resource: the server responded with a status of 422",
)


def _console_errors(driver: Any) -> list[str]:
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] in ("SEVERE", "WARNING")
        and not (e.get("source") == "network" and any(x in e["message"] for x in EXPECTED_REFUSALS))
    ]


def _screenshot(driver: Any, name: str) -> None:
    if os.environ.get("RELAXTUNE_SCREENSHOT") == "1":
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(max(int(height) + 40, 900), 4000))
        driver.save_screenshot(str(REPO_ROOT / "docs" / name))
        driver.set_window_size(1400, 1000)


def _traces(driver: Any, chart: str) -> int:
    return int(
        driver.execute_script(
            "var p = document.getElementById(arguments[0] + '-plot');"
            "return p && p.data ? p.data.length : 0;",
            chart,
        )
    )


def test_the_web_app_end_to_end(server: dict[str, Any], browser: Any) -> None:
    url, store = server["url"], server["store"]
    running, baseline = server["running"], server["baseline"]
    sent: list[dict[str, Any]] = []
    problems: list[str] = []

    def check_page() -> None:
        sent.extend(_requests(browser))
        problems.extend(_console_errors(browser))

    # --- sign in: a page without a session goes to the sign-in form ----------------------
    browser.get(f"{url}/v1/dashboard")
    _wait(browser, lambda d: d.current_url.startswith(f"{url}/signin"))
    browser.find_element(By.ID, "token").send_keys("rt_0000000000000000_wrong")
    browser.find_element(By.ID, "signin").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "signin-error"))
    browser.find_element(By.ID, "token").clear()
    browser.find_element(By.ID, "token").send_keys(server["token"])
    browser.find_element(By.ID, "signin").click()
    _wait(browser, lambda d: d.current_url == f"{url}/v1/dashboard")
    cookie = browser.get_cookie("relaxtune_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert server["token"] not in cookie["value"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")
    assert len(rows) == 2
    assert "tenant" not in browser.find_element(By.CSS_SELECTOR, "#jobs-table thead").text
    assert "UTC" not in browser.find_element(By.ID, "jobs-table").text  # local, readable times
    check_page()
    _screenshot(browser, "job_list.png")

    # --- a running job's page updates in place, without reloading ------------------------
    browser.get(f"{url}/v1/jobs/{running.id}/dashboard")
    _wait(browser, lambda d: _traces(d, "chart-curves") > 0)
    assert browser.find_elements(By.CSS_SELECTOR, "span.progress > span")  # the bar is drawn
    assert "/srv/artifacts" not in browser.page_source
    browser.execute_script("window.__sameDocument = 'yes';")
    # the reader zooms into the learning curves: an update must keep the zoom
    browser.execute_script(
        "return Plotly.relayout('chart-curves-plot', {'xaxis.range': [1.5, 3.5]});"
    )
    before = _traces(browser, "chart-curves")
    study = optuna.load_study(study_name=running.study_name, storage=store.optuna_storage())
    study.add_trial(_trial(6, TrialState.RUNNING, 3, "cosine"))
    store.update_progress(
        running.id, {"complete": 4, "pruned": 1, "running": 2, "total": 12, "best_value": 0.7}
    )
    _wait(browser, lambda d: _traces(d, "chart-curves") > before)
    assert browser.execute_script("return window.__sameDocument") == "yes"
    zoom = browser.execute_script(
        "return document.getElementById('chart-curves-plot').layout.xaxis.range;"
    )
    assert zoom == [1.5, 3.5], zoom
    assert "2 running" in browser.find_element(By.ID, "job-header").text
    assert _traces(browser, "chart-theta") >= 7
    check_page()
    documents = [r for r in sent if r["type"] == "Document" and "/dashboard" in r["url"]]
    assert len([r for r in documents if f"/jobs/{running.id}/dashboard" in r["url"]]) == 1
    _screenshot(browser, "job_page.png")

    # --- compare the two jobs --------------------------------------------------------------
    browser.get(f"{url}/v1/dashboard")
    for job in (running, baseline):
        browser.find_element(By.CSS_SELECTOR, f'input[name="job"][value="{job.id}"]').click()
    browser.find_element(By.ID, "compare-selected").click()
    _wait(browser, lambda d: "/v1/compare/dashboard" in d.current_url)
    _wait(browser, lambda d: _traces(d, "chart-compare-curves") >= 2)
    table = browser.find_element(By.ID, "compare-table").text
    assert "(baseline)" in table and re.search(r"\+\d+\.\d %", table), table
    assert "relax.theta_max" in browser.find_element(By.ID, "compare-configs").text
    check_page()
    _screenshot(browser, "compare_page.png")

    # --- submit a spec (a refused one first), then cancel it -------------------------------
    browser.get(f"{url}/v1/dashboard")
    text = browser.find_element(By.ID, "spec-text")
    text.send_keys(QUICK_SPEC.replace("width: 8", "widht: 8"))
    browser.find_element(By.ID, "submit-spec").click()
    _wait(browser, lambda d: d.find_element(By.ID, "submit-errors").is_displayed())
    refusal = browser.find_element(By.ID, "submit-errors").text
    assert refusal.startswith("model.widht: unknown key; did you mean 'width'?"), refusal
    text.clear()
    text.send_keys(QUICK_SPEC)
    browser.find_element(By.ID, "submit-spec").click()
    _wait(browser, lambda d: d.find_element(By.ID, "submit-ok").is_displayed())
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")) == 3)
    queued = [j for j in store.list_jobs("alice") if j.status == "queued"]
    assert len(queued) == 1
    cancel = f'button.cancel-job[data-job="{queued[0].id}"]'
    browser.find_element(By.CSS_SELECTOR, cancel).click()  # the first click only arms it
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, cancel).get_attribute("data-armed"))
    browser.find_element(By.CSS_SELECTOR, cancel).click()
    _wait(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f'tr[data-job="{queued[0].id}"]').get_attribute(
                "data-status"
            )
            == "cancelled"
        ),
    )
    assert store.get_job(queued[0].id).status == "cancelled"
    check_page()

    # --- a token pasted into a URL opens nothing and is not logged -------------------------
    browser.get(f"{url}/v1/dashboard?token={server['token']}")  # signed in: the page opens
    check_page()

    # --- sign out ----------------------------------------------------------------------------
    browser.find_element(By.ID, "signout").click()
    _wait(browser, lambda d: d.current_url.startswith(f"{url}/signin"))
    assert browser.get_cookie("relaxtune_session") is None
    browser.get(f"{url}/v1/jobs/{running.id}/dashboard")
    _wait(browser, lambda d: d.current_url.startswith(f"{url}/signin"))
    check_page()

    assert problems == [], problems
    outside = [r["url"] for r in sent if not r["url"].startswith((url + "/", "data:", "blob:"))]
    assert outside == [], outside
    assert any("/static/" in r["url"] and "plotly" in r["url"] for r in sent)


def test_the_server_log_holds_no_token(server: dict[str, Any], browser: Any) -> None:
    """After the browser run (the test above signs in, browses, pastes the token into a URL):
    the access log has the requests, and nowhere the token or any token-shaped string."""
    log = server["log"].read_text()
    assert "GET /v1/dashboard" in log and "POST /signin" in log
    assert server["token"] not in log
    assert not re.search(r"rt_[0-9a-f]{16}_[A-Za-z0-9_-]{8,}", log), log
    assert "token=[redacted]" in log
