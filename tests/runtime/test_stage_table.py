"""The worker's stage table: the one owner of installed stages and of the links they send on."""

from __future__ import annotations

import msgspec
import pytest

from splitinfer.errors import TransportError
from splitinfer.runtime.device._stages import StageTable
from splitinfer.runtime.wire import messages


class FakeLink:
    """Stands in for a LinkSender (its real twin is exercised by every deploy test)."""

    def __init__(self, *key) -> None:
        self.key = key
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _deploy(deployment: str, stage: int, address: str | None) -> messages.Deploy:
    return messages.Deploy(deployment_id=deployment, stage=stage, device="d", inputs=[], outputs=[],
                           route=messages.Route(address), reply_to="tcp://coordinator:1")


def test_stages_share_links_and_a_link_closes_with_its_last_stage():
    opened: list[FakeLink] = []
    table = StageTable(lambda *key: opened.append(FakeLink(*key)) or opened[-1])
    table.install(_deploy("x", 0, "tcp://next:1"), runner=None)
    table.install(_deploy("x", 1, "tcp://next:1"), runner=None)
    table.install(_deploy("y", 0, None), runner=None)  # next stage on this worker: no link
    assert len(table) == 3
    assert [link.key[0] for link in opened] == ["tcp://next:1", "tcp://coordinator:1"]  # shared
    assert table.get("x", 1).link is table.get("x", 0).link and table.get("y", 0).link is None
    assert table.get("x", 2) is None

    assert table.remove("x") == 2 and table.get("x", 0) is None and len(table) == 1
    to_next, to_coordinator = opened
    assert to_next.closed and not to_coordinator.closed  # stage y still reports errors on it
    assert table.remove("") == 1 and to_coordinator.closed and len(table) == 0


def test_installing_a_stage_again_replaces_it_and_releases_the_old_links():
    opened: list[FakeLink] = []
    table = StageTable(lambda *key: opened.append(FakeLink(*key)) or opened[-1])
    table.install(_deploy("x", 0, "tcp://a:1"), runner=None)
    table.install(_deploy("x", 0, "tcp://b:1"), runner=None)
    assert len(table) == 1 and table.get("x", 0).link.key[0] == "tcp://b:1"
    by_address = {link.key[0]: link for link in opened}
    assert by_address["tcp://a:1"].closed and not by_address["tcp://b:1"].closed
    table.close()
    assert all(link.closed for link in opened)


def test_a_link_that_cannot_open_installs_nothing_and_releases_the_link_opened_before_it():
    opened: list[FakeLink] = []

    def open_link(*key):
        if key[0] == "tcp://refused:1":
            raise TransportError("cannot connect to 'tcp://refused:1'", "give another address")
        opened.append(FakeLink(*key))
        return opened[-1]

    table = StageTable(open_link)
    bad = msgspec.structs.replace(_deploy("x", 0, "tcp://next:1"), reply_to="tcp://refused:1")
    with pytest.raises(TransportError):
        table.install(bad, runner=None)
    assert len(table) == 0 and [link.key[0] for link in opened] == ["tcp://next:1"] and opened[0].closed
    table.install(_deploy("x", 0, "tcp://next:1"), runner=None)  # opens afresh: nothing was kept
    assert len(opened) == 3 and not opened[1].closed
