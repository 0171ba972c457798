"""Test-session set-up shared by every test file: threads per pytest-xdist worker and the order of the files."""

import os

# The files that take longest (measured with --durations on 2 idle cores: the end-to-end script runs, the torchrun
# tests, the stop-signal and kill -9 tests) run first: `make test` hands whole files to its workers (--dist loadfile)
# in collection order, so the long ones start at once and the short ones fill the gaps instead of a long file
# starting last and leaving a worker idle.
LONG_FIRST = ("test_scripts.py", "test_ddp.py", "test_real_scene.py", "test_hardening.py", "test_reliability.py")


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs ``-n auto``) every worker gets its share of the cores for torch's
    intra-op threads: two workers with a thread per core each would oversubscribe a 2-core CI machine, and
    tiny models gain nothing from a second thread."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_collection_modifyitems(session, config, items):
    """Long files first (LONG_FIRST's order), the rest as collected; tests within a file keep their order."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: file order otherwise kept
