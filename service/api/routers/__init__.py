"""One router per resource: jobs, trials, best checkpoints, dashboards, health."""
