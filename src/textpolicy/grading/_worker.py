"""The math-verify worker process: strings in, booleans out.

Runs in its own process (forkserver/spawn) so math-verify's SIGALRM timeouts work in the
worker's main thread, and so a call stuck outside any timeout can be killed by the parent.
Parsed sympy objects never leave this process and are never converted to strings (that can
hang, math-verify issue #65); only ``(request id, equal, timed_out)`` is sent back.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.parser import NormalizationConfig

FLOAT_ROUNDING = 10
_GOLD_CACHE_SIZE = 512


class _TimeoutFlag(logging.Handler):
    """Catches math-verify's "Timeout during ..." warnings (its only timeout signal when it
    does not raise), so timeouts are counted apart from wrong answers."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.hit = False

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Timeout"):
            self.hit = True


def _extraction_config() -> list[Any]:
    norm = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True,
                               nits=True, boxed="all", equations=False)
    return [LatexExtractionConfig(boxed_match_priority=0, normalization_config=norm),
            ExprExtractionConfig()]


def serve(conn: Connection, parse_timeout_s: int, verify_timeout_s: int) -> None:
    """Answer ``(id, gold, given)`` requests until ``None`` arrives or the pipe closes."""
    flag = _TimeoutFlag()
    for name in ("math_verify", "math_verify.grader", "math_verify.parser",
                 "math_verify.utils", "latex2sympy2_extended"):
        log = logging.getLogger(name)
        log.addHandler(flag)
        log.propagate = False
        log.setLevel(logging.WARNING)
    config = _extraction_config()
    # warm up (builds the LaTeX parser) before the parent starts timing requests
    verify(parse("$\\boxed{1}$", config), parse("$\\boxed{1}$", config))
    conn.send("ready")
    gold_cache: OrderedDict[str, list[Any]] = OrderedDict()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        req_id, kind, gold, given = msg
        if kind == "sleep":  # test hook: a call that no signal interrupts
            time.sleep(float(gold))
            conn.send((req_id, False, False))
            continue
        flag.hit = False
        equal = False
        try:
            parsed_gold = gold_cache.get(gold)
            if parsed_gold is None:
                parsed_gold = parse("$\\boxed{" + gold + "}$", config,
                                    parsing_timeout=parse_timeout_s)
                if not flag.hit:
                    gold_cache[gold] = parsed_gold
                    if len(gold_cache) > _GOLD_CACHE_SIZE:
                        gold_cache.popitem(last=False)
            else:
                gold_cache.move_to_end(gold)
            if parsed_gold:
                parsed_given = parse("$\\boxed{" + given + "}$", config,
                                     parsing_timeout=parse_timeout_s)
                if parsed_given:
                    equal = bool(verify(parsed_gold, parsed_given,
                                        float_rounding=FLOAT_ROUNDING,
                                        timeout_seconds=verify_timeout_s))
        except BaseException as exc:  # one answer never kills the worker; never format objects
            equal = False
            if isinstance(exc, TimeoutException):
                flag.hit = True
        conn.send((req_id, equal, flag.hit))


def worker_main(conn: Connection, parse_timeout_s: int, verify_timeout_s: int) -> None:
    """Process entry point."""
    try:
        serve(conn, parse_timeout_s, verify_timeout_s)
    finally:
        conn.close()
