"""`tp serve` session bookkeeping that needs no model: idle sessions are finished, finished
sessions refuse heartbeats (the SDK then stops its heartbeat loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from textpolicy.engines.local import TINY_MODEL, LocalEngine
from textpolicy.serve import TinkerService
from textpolicy.serve.errors import ApiError


def test_idle_sessions_are_finished(tmp_path: Path) -> None:
    service = TinkerService(LocalEngine, models={TINY_MODEL: TINY_MODEL}, state_dir=tmp_path)
    live = service.create_session({})["session_id"]
    idle = service.create_session({})["session_id"]
    assert service.heartbeat({"session_id": live}) == {"type": "session_heartbeat"}
    assert service.reap(idle_s=3600) == 0
    assert service.reap(idle_s=0) == 2
    for session_id in (live, idle):
        with pytest.raises(ApiError) as err:
            service.heartbeat({"session_id": session_id})
        assert err.value.status == 410
    with pytest.raises(ApiError) as missing:
        service.heartbeat({"session_id": "session-nope"})
    assert missing.value.status == 404
    service.close()
