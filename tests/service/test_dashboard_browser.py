"""The dashboard pages saved as files, in a real browser: every chart draws, and nothing logs
an error.

Uses the system Chromium through selenium and chromedriver (the ``chromium`` fixture); without
them the tests skip, or fail under ``RELAXTUNE_TEST_REQUIRE_CHROMIUM`` (``make test``). With
``RELAXTUNE_SCREENSHOT=1`` the rendered page is saved to ``docs/dashboard.png``.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from service import dashboard

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # a dev dependency; the `chromium` fixture skips or fails without it
    pass


def _study(n_trials: int = 40, epochs: int = 6) -> optuna.Study:
    """A job-like study: COMPLETE, PRUNED, FAIL and RUNNING trials with per-epoch histories."""
    rng = random.Random(1)
    study = optuna.create_study(direction="maximize")
    distributions = {
        "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "relax.schedule": CategoricalDistribution(["none", "linear_decay", "triangular"]),
        "relax.theta_max": FloatDistribution(0.05, 2.0),
        "relax.lambda_norm": FloatDistribution(0.0, 1.0),
    }
    for number in range(n_trials):
        params = {
            "optim.lr": 10 ** rng.uniform(-4, -2),
            "relax.schedule": rng.choice(["none", "linear_decay", "triangular"]),
            "relax.theta_max": rng.uniform(0.05, 2.0),
            "relax.lambda_norm": rng.uniform(0.0, 1.0),
        }
        if number >= n_trials - 2:
            state, n_epochs = TrialState.RUNNING, 3
        elif number % 9 == 4:
            state, n_epochs = TrialState.FAIL, 2
        elif number % 3 == 1:
            state, n_epochs = TrialState.PRUNED, rng.choice([1, 2])
        else:
            state, n_epochs = TrialState.COMPLETE, epochs
        quality = rng.uniform(0.7, 0.97)
        history = []
        for epoch in range(1, n_epochs + 1):
            progress = epoch / epochs
            theta = params["relax.theta_max"] * max(0.0, 1 - progress / 0.75)
            val = quality * (1 - math.exp(-3 * progress))
            history.append(
                {
                    "epoch": epoch,
                    "progress": progress,
                    "theta": theta,
                    "val_projected": val,
                    "val_relaxed": val + 0.05 * theta,
                    "train_loss": 1 / epoch,
                    "penalty_lie": 0.0,
                    "penalty_norm": 0.01 * theta,
                    "penalty_proj": 0.001,
                    "equivariance_error_relaxed": theta * 0.1,  # exactly 0 once θ is 0
                    "equivariance_error_projected": rng.uniform(1e-7, 4e-7),
                    "epoch_seconds": 3.0,
                }
            )
        final: dict[str, Any] = {}
        if state == TrialState.COMPLETE:
            final = {
                "val_projected": history[-1]["val_projected"],
                "val_relaxed": history[-1]["val_relaxed"],
                "equivariance_error_relaxed": history[-1]["equivariance_error_relaxed"],
                "equivariance_error_projected": history[-1]["equivariance_error_projected"],
                "final_theta": history[-1]["theta"],
                "checkpoint": f"artifacts/jobs/demo/trials/{number}",
            }
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=history[-1]["val_projected"] if state == TrialState.COMPLETE else None,
                params=params,
                distributions=distributions,
                user_attrs={"history": history, **final},
                intermediate_values={h["epoch"]: h["val_projected"] for h in history},
            )
        )
    return study


CERTIFICATE = {
    "group": "C8",
    "elements": [f"r{k}" for k in range(8)],
    "errors": [0.0] + [2e-7] * 7,
    "relaxed_errors": [0.0] + [0.05] * 7,
    "tolerance": 1e-5,
    "seed": 0,
    "passed": True,
}


class Page:
    """A page opened from a file, with what the browser logged while it loaded."""

    def __init__(self, driver: Any, path: Path) -> None:
        self.driver = driver
        driver.get_log("browser")  # forget what earlier pages logged
        driver.get(path.as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    def problems(self) -> list[str]:
        return [
            f"console {e['level']}: {e['message']}"
            for e in self.driver.get_log("browser")
            if e["level"] in ("SEVERE", "WARNING")
        ]

    def find(self, selector: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def count(self, selector: str) -> int:
        return len(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def wait_for(self, selector: str, timeout: float = 20) -> Any:
        return WebDriverWait(self.driver, timeout).until(
            lambda d: d.find_element(By.CSS_SELECTOR, selector)
        )


@pytest.fixture(scope="module")
def browser(chromium: Any) -> Any:
    chromium.set_window_size(1400, 900)
    return chromium


def test_every_chart_renders_without_errors(browser: Any, tmp_path: Path) -> None:
    job = {
        "id": "demo",
        "name": "rotmnist-c8 <relax>",
        "status": "running",
        "progress": {"complete": 30, "pruned": 6, "failed": 2, "running": 2, "total": 40},
        "spec": {"name": "rotmnist-c8", "objective": {"metric": "val_accuracy", "mode": "max"}},
    }
    path = tmp_path / "dashboard.html"
    path.write_text(dashboard.render_dashboard(_study(), job, CERTIFICATE), encoding="utf-8")
    page = Page(browser, path)
    for chart_id in dashboard.CHART_IDS:
        box = page.wait_for(f"#{chart_id} .js-plotly-plot .main-svg").rect
        assert box["width"] > 200 and box["height"] > 200, chart_id
        # Sized to its own container, not to the page width it saw while loading.
        assert box["width"] <= page.find(f"#{chart_id}").rect["width"], chart_id
    # Drawn data, not just an empty frame: the curve chart has line paths, one per trial and
    # series; the progress bar is drawn.
    assert page.count("#chart-curves .scatterlayer .trace") >= 40
    assert page.count("header span.progress > span") == 1
    assert page.count("#chart-importance .barlayer .point") >= 2
    assert page.find("h1").text.startswith("rotmnist-c8 <relax>")
    assert page.count("#certificate table.elements tbody tr") == 8
    assert page.problems() == []
    if os.environ.get("RELAXTUNE_SCREENSHOT") == "1":
        target = REPO_ROOT / "docs" / "dashboard.png"
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1400, int(height) + 40)
        browser.save_screenshot(str(target))
        browser.set_window_size(1400, 900)


def test_empty_study_and_jobs_list_render_cleanly(browser: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty.html"
    empty.write_text(
        dashboard.render_dashboard(optuna.create_study(), {"id": 1, "status": "queued"}),
        encoding="utf-8",
    )
    page = Page(browser, empty)
    assert "No trials yet" in page.find("main").text
    assert page.problems() == []

    listing = tmp_path / "jobs.html"
    listing.write_text(
        dashboard.render_jobs_list(
            [{"id": "demo", "name": "a", "status": "running", "progress": {"total": 2}}],
        ),
        encoding="utf-8",
    )
    page = Page(browser, listing)
    assert page.find("#jobs-table a").get_dom_attribute("href") == "/v1/jobs/demo/dashboard"
    assert page.problems() == []


GAIN_REPORT = {
    "status": "complete",
    "quantity": "test error",
    "better": "lower",
    "seeds": [1000, 1001, 1002],
    "search_seed": 0,
    "source_trial": 5,
    "runs": [
        {"seed": 1000, "as_found": 0.081, "relaxation_off": 0.094, "difference": -0.013},
        {"seed": 1001, "as_found": 0.079, "relaxation_off": 0.088, "difference": -0.009},
        {"seed": 1002, "as_found": 0.085, "relaxation_off": 0.091, "difference": -0.006},
    ],
    "arms": {
        "as_found": {"n": 3, "mean": 0.0817, "median": 0.081, "std": 0.0031},
        "relaxation_off": {"n": 3, "mean": 0.0910, "median": 0.091, "std": 0.003},
    },
    "difference": {
        "mean": -0.00933,
        "ci": [-0.01811, -0.00056],
        "method": "paired t interval",
    },
    "verdict": "relaxation helps: \u221210.3 % test error, 95 % CI [\u221219.9 %, \u22120.6 %], "
    "3 of 3 seeds better",
    "progress": {"done": 6, "total": 6, "running": 0, "failed": 0},
}


def test_gain_section_draws_the_paired_points_and_the_interval(
    browser: Any, tmp_path: Path
) -> None:
    job = {
        "id": "demo",
        "name": "gain",
        "status": "succeeded",
        "spec": {"objective": {"metric": "val_accuracy", "mode": "max"}},
    }
    path = tmp_path / "gain.html"
    page_html = dashboard.render_dashboard(_study(12), job, CERTIFICATE, report=GAIN_REPORT)
    path.write_text(page_html, encoding="utf-8")
    page = Page(browser, path)
    assert "relaxation helps" in page.find("#gain-report .verdict").text
    box = page.wait_for("#gain-report .js-plotly-plot .main-svg").rect
    assert box["width"] > 300 and box["height"] > 200
    # both arms' points (3 seeds each) and the interval's error bar are drawn
    assert page.count("#gain-report .scatterlayer .point") >= 3 * 2 + 3 + 1
    assert page.count("#gain-report .errorbar") >= 1
    assert page.problems() == []
