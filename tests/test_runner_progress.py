"""The one progress display of a sweep/campaign: plain lines off a terminal, a rich table on
one; runs done/total, the step of each running run, an ETA."""

from __future__ import annotations

import io

import pytest

from textpolicy.runner.progress import Display


def _drive(display: Display) -> None:
    display.start(["a/seed0", "b/seed0", "a/seed1"], {"a/seed0": 10, "b/seed0": 10,
                                                      "a/seed1": 10})
    display.run_state("a/seed0", "skipped", step=10, note="already finished")
    display.run_state("b/seed0", "running", step=0)
    for step in range(1, 11):
        display.run_step("b/seed0", step, {"running_correct_rate": 0.25})
    display.run_state("b/seed0", "finished", step=10)
    display.run_state("a/seed1", "running", step=4, note="resuming")
    display.run_step("a/seed1", 5)
    display.close()


def test_plain_lines() -> None:
    out = io.StringIO()
    display = Display("campaign x", mode="plain", stream=out)
    _drive(display)
    text = out.getvalue()
    assert text.startswith("campaign x: 3 runs, 30 steps\n")
    assert "[1/3] a/seed0: skipped at step 10/10 (already finished)" in text
    assert "[2/3] b/seed0: finished at step 10/10" in text
    assert "b/seed0: step 5/10 running correct 25.0%  ETA" in text
    assert "a/seed1: running at step 4/10 (resuming)" in text
    assert display.eta() is not None


@pytest.mark.parametrize("mode", ["rich", "off"])
def test_rich_and_off(mode: str) -> None:
    out = io.StringIO()
    _drive(Display("sweep y", mode=mode, stream=out))
    if mode == "off":
        assert out.getvalue() == ""
    else:
        text = out.getvalue()
        assert "sweep y" in text and "runs 2/3 done" in text and "a/seed1" in text


def test_auto_is_plain_off_a_terminal() -> None:
    assert Display("t", stream=io.StringIO()).mode == "plain"
