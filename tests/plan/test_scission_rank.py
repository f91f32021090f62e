"""The vectorised Scission ranking equals a plain scenario-by-scenario walk of Scission's procedure."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan.scission import (
    ScissionBlock,
    ScissionLink,
    ScissionSystem,
    TierCriteria,
    parse_criteria,
    rank_scission,
)


def _run(system, first, last):
    total = 0
    for block in system.blocks[first : last + 1]:
        total += block.seconds
    blocks = system.blocks
    return total, blocks[last].output_bytes, (blocks[first].input_layer, blocks[last].output_layer)


def _passes(name, used, block, crit):
    if crit.names_in and not (used and name in crit.names_in):
        return False
    if crit.names_out and not (used and name not in crit.names_out):
        return False
    inside = range(block[0], block[1] + 1)
    return all(x in inside for x in crit.layers_in) and all(x not in inside for x in crit.layers_out)


def walk(systems, network, criteria, input_mb=0.15, count=5):
    """One scenario at a time, in Scission's order, with Python floats."""
    num = len(systems[0].blocks)
    tiers = {t: [s for s in systems if s.tier == t] for t in ("device", "edge", "cloud")}
    splits = [(x, y) for x in range(-1, num) for y in range(-1, num) if y > x or y == -1]
    scenarios = []
    for d in tiers["device"]:
        for e in tiers["edge"]:
            for c in tiers["cloud"]:
                for x, y in splits:
                    cloud_used = x != num - 1 and y != num - 1
                    dt = et = ct = 0
                    dev_out, edge_out = input_mb * 1000 * 1000, 0
                    db = eb = cb = (-1, -1)
                    if x != -1:
                        dt, dev_out, db = _run(d, 0, x)
                    if y != -1:
                        et, edge_out, eb = _run(e, x + 1, y)
                    if cloud_used:
                        ct, _, cb = _run(c, max(x, y) + 1, num - 1)
                    if et == 0 and ct == 0:
                        dev_out = 0
                    elif ct == 0:
                        edge_out = 0
                    transfer = 0
                    if y != -1:
                        link = network[(d.name, e.name)]
                        transfer += link.ping_s + dev_out / link.bandwidth_bps
                        if cloud_used:
                            link = network[(e.name, c.name)]
                            transfer += link.ping_s + edge_out / link.bandwidth_bps
                    elif cloud_used:
                        link = network[(d.name, c.name)]
                        transfer += link.ping_s + dev_out / link.bandwidth_bps
                    total = dt + et + ct + transfer
                    edge_name = e.name if y != -1 else None
                    cloud_name = c.name if cloud_used else None
                    config = (
                        f"Device({d.name}) = {db[0]} - {db[1]}, Edge({edge_name}) = {eb[0]} - {eb[1]}, "
                        f"Cloud({cloud_name}) = {cb[0]} - {cb[1]}"
                    )
                    ok = (
                        _passes(d.name, x != -1, db, criteria.get("device", TierCriteria()))
                        and _passes(e.name, y != -1, eb, criteria.get("edge", TierCriteria()))
                        and _passes(c.name, cloud_used, cb, criteria.get("cloud", TierCriteria()))
                    )
                    if ok:
                        scenarios.append((total, (dev_out + edge_out) / 1000 / 1000, config))
    seen, out = set(), []
    for total, mb, config in sorted(scenarios, key=lambda s: s[0]):
        if config not in seen:
            seen.add(config)
            out.append(
                f"[{len(out) + 1}] {format(round(total, 4), '.4f')}s - "
                f"{format(round(mb, 4), '0.4f')}MB - {config}"
            )
    return out[:count]


TIMES = st.integers(0, 12).map(lambda i: 0.0 if i < 3 else i * 0.037)


@st.composite
def scission_inputs(draw):
    num = draw(st.integers(1, 5))
    widths = draw(st.lists(st.integers(1, 3), min_size=num, max_size=num))
    starts = [sum(widths[:i]) for i in range(num)]
    sizes = draw(st.lists(st.integers(0, 5000), min_size=num, max_size=num))
    systems = []
    for tier, names in (("device", ["pi", "nano"]), ("edge", ["e1", "e2"]), ("cloud", ["gpu", "cpu"])):
        for name in names[: draw(st.integers(1, 2))]:
            times = draw(st.lists(TIMES, min_size=num, max_size=num))
            blocks = tuple(
                ScissionBlock(s, s + w - 1, t, z)
                for s, w, t, z in zip(starts, widths, times, sizes, strict=True)
            )
            systems.append(ScissionSystem(tier, name, blocks))
    network = {
        (a.name, b.name): ScissionLink(
            draw(st.sampled_from([0.0, 0.02, 0.0667])), draw(st.sampled_from([200000, 1250000]))
        )
        for a in systems
        for b in systems
        if a.tier != b.tier
    }
    layers = st.integers(-1, sum(widths)).map(str)
    items = st.one_of(
        layers,
        layers.map(lambda s: "!" + s),
        st.sampled_from(["pi", "nano", "e1", "e2", "gpu", "cpu", "!pi", "!e2", "!gpu"]),
    )
    criteria = {
        tier: parse_criteria(",".join(draw(st.lists(items, max_size=2))) or None, tier)
        for tier in ("device", "edge", "cloud")
    }
    return systems, network, criteria, draw(st.sampled_from([0.15, 0.5])), draw(st.integers(1, 8))


@settings(max_examples=300)
@given(scission_inputs())
def test_rank_matches_a_scenario_walk(case):
    systems, network, criteria, input_mb, count = case
    expected = walk(systems, network, criteria, input_mb, count)
    try:
        got = rank_scission(systems, network, criteria, input_mb=input_mb, result_count=count)
    except InfeasibleError:
        got = []
    assert [r.line(i) for i, r in enumerate(got, start=1)] == expected


def test_criteria_syntax():
    crit = parse_criteria(" 3, !10 ,raspi4,!cloud1,-1,!-1")
    assert crit == TierCriteria((3, -1), (10, -1), ("raspi4",), ("cloud1",))
    assert parse_criteria(None) == TierCriteria()
    with pytest.raises(PlanError, match="empty item"):
        parse_criteria("3,,4")


def test_a_tier_without_systems_is_a_clear_error():
    block = (ScissionBlock(0, 0, 0.1, 10),)
    systems = [ScissionSystem("device", "pi", block), ScissionSystem("cloud", "gpu", block)]
    with pytest.raises(InfeasibleError, match="at least one system on each tier"):
        rank_scission(systems, {}, {})
