"""Report fixtures: a real model's blocks with plausible timings, real plans, a bench result, a report.

The data makers live in ``helpers.report_sample`` (also a script that writes a sample report).
"""

from __future__ import annotations

import pytest
from helpers import report_sample as sample


@pytest.fixture(scope="session")
def profile():
    """MobileNetV2 (small) cut into 16 blocks, timed on camera, edge and cloud."""
    return sample.make_profile("mobilenetv2", small=True, max_blocks=16)


@pytest.fixture(scope="session")
def plans(profile):
    """Latency top 5, the throughput plan and both Pareto fronts, from the real planner."""
    return sample.make_plans(profile, top_k=5, pareto=True)


@pytest.fixture(scope="session")
def bench(plans, profile):
    """A bench result of the best latency plan (measured times near the predicted ones)."""
    return sample.make_bench(plans[0], profile, num_requests=60)


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory, profile, plans, bench):
    """A full report written once from files (profile.json, plan.json, bench.json), for tests to read."""
    from splitinfer.plan import plan_to_json
    from splitinfer.profile.files import save_profile
    from splitinfer.records.bench import save_bench
    from splitinfer.report import write_report

    inputs = tmp_path_factory.mktemp("inputs")
    save_profile(profile, inputs / "profile.json")
    (inputs / "plan.json").write_text(plan_to_json(plans))
    save_bench(bench, inputs / "bench.json")
    out = tmp_path_factory.mktemp("report")
    write_report(inputs / "profile.json", out, plans=inputs / "plan.json", bench=inputs / "bench.json")
    return out
