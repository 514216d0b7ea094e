"""Run in every Ray worker process of tests/test_distributed.py, as Ray's
``worker_process_setup_hook`` (tests/ is on the workers' PYTHONPATH): registers the tiny test
trunk once amnet is imported, and lets the killed-actor test stall one actor mid-batch so that
it can kill it.

Ray also starts workers that never score (its own actors, write tasks): registering lazily,
after ``amnet.inference.predictor`` is imported, spares each of them the seconds of importing
torch."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

STATE = "AMNET_TEST_RAY_STATE"  # a folder shared by the test and its workers


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``then()`` right after module ``name`` has been executed, once."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # let the other finders find the real module
        spec = importlib.util.find_spec(fullname)
        exec_module = spec.loader.exec_module

        def exec_then(module) -> None:  # noqa: ANN001
            exec_module(module)
            self.then()

        spec.loader.exec_module = exec_then
        return spec


def setup() -> None:
    sys.meta_path.insert(0, _AfterImport("amnet.inference.predictor", _register))


def _register() -> None:
    """Register the tiny trunk; note this worker's pid and network namespace in ``$STATE``.

    While ``$STATE/stall`` exists, the first worker to reach its second model call writes its
    pid to ``$STATE/victim.pid`` and waits there, mid-batch, to be killed by the test."""
    from conftest import _tiny_spec

    from amnet.inference.predictor import Predictor

    _tiny_spec()
    state = Path(os.environ[STATE])
    (state / f"worker-{os.getpid()}").write_text(os.readlink("/proc/self/ns/net"))
    original = Predictor._outputs  # every batch goes through the model here
    calls = 0

    def outputs(self: Predictor, x):  # noqa: ANN001
        nonlocal calls
        calls += 1
        if calls == 2 and (state / "stall").exists():
            try:
                fd = os.open(state / "victim.pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # one actor was already stalled (and killed): carry on
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(300)  # the test kills this process long before
        return original(self, x)

    Predictor._outputs = outputs  # type: ignore[method-assign]
