"""pytest plugin for the mutation check's coverage map (`-p mutation.covplugin`): one
coverage context per test phase, also in the processes a test forks or starts, and caches
emptied per test as if it ran alone."""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
from collections.abc import Generator
from typing import Any

import pytest

from mutation.covmap import CALL, COLLECT, DURATIONS_ENV, SETUP, TEARDOWN

_PACKAGES = ("model", "datapath", "properties", "nodeport", "diagrams")
_current = [""]


def _switch(context: str) -> None:
    """The new context here, in processes forked from here, and (as their static context)
    in Python processes started from here with coverage's subprocess patch."""
    import coverage

    _current[0] = context
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(context)
    started = os.environ.get("COVERAGE_PROCESS_CONFIG")
    if started:
        data = json.loads(base64.b64decode(started))
        data["context"] = context or None
        os.environ["COVERAGE_PROCESS_CONFIG"] = base64.b64encode(
            json.dumps(data).encode()).decode()


def _after_fork() -> None:
    import coverage

    cov = coverage.Coverage.current()  # restarted by coverage's own fork patch, which ran first
    if cov is not None and _current[0]:
        cov.switch_context(_current[0])


os.register_at_fork(after_in_child=_after_fork)


def _clear_caches() -> None:
    """A test that runs alone starts with empty lru_caches; record it that way."""
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in _PACKAGES:
            for v in list(vars(mod).values()):
                if isinstance(v, functools._lru_cache_wrapper):
                    v.cache_clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """Module import and parametrisation belong to every test of that module."""
    if isinstance(collector, pytest.Module):
        _switch(COLLECT + collector.nodeid)
        yield
        _switch("")
    else:
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, None]:
    """Fixture set-up (perhaps module-scoped)."""
    _clear_caches()
    _switch(SETUP + item.nodeid)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    """The test body: its own context."""
    _switch(CALL + item.nodeid)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    """Fixture tear-down, then back to no test."""
    _switch(TEARDOWN + item.nodeid)
    yield
    _switch("")


_took: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Each test's seconds over its phases, for running the quickest first."""
    _took[report.nodeid] = _took.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the durations where the recorder asked for them."""
    path = os.environ.get(DURATIONS_ENV)
    if path:
        with open(path, "w") as fh:
            json.dump(_took, fh)
