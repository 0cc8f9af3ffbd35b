"""A SIGKILL at every step of every writing operation, a second one at every step of the
recovery that follows, then a clean run (DESIGN §9).

Nothing lists the steps by hand: a traced run of each operation names every failpoint it
passes (`ARTIFACTS_FAILPOINT_TRACE`), and the sweep kills a fresh copy of the project at
each in turn. After every kill, before any recovery, no original byte is lost. After the
recovery that the next command runs:

* every original byte is in place or in a recorded trash folder, by checksum;
* the runs gc must protect (pinned, last pass, last run) are in place;
* the project is as before the operation or as after it — for gc, restore and pin as a
  whole, for compaction and purge file by file and folder by folder;
* the manifest agrees with the tree, `verify` passes, no journal or temp file is left;
* running the operation again finishes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import harness
from .harness import run
from .projects import OPERATIONS, check_recovered, copy, finish, prepare


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_kill_at_every_step_and_during_recovery_loses_nothing(shm_path: Path, name: str) -> None:
    tmp_path = shm_path
    operation = OPERATIONS[name]
    pristine = prepare(tmp_path / "pristine", operation)
    # One clean run says where the operation ends and which steps it passes.
    clean = copy(pristine, tmp_path / "clean")
    trace = tmp_path / "clean.trace"
    done = run(clean.root, *clean.argv, trace=trace)
    assert done.code == 0, done.err
    after = harness.state(clean.root)
    assert after != clean.before or name == "scan", "the operation must change something"
    first_steps = harness.steps(trace)
    assert first_steps, "an operation that writes passes failpoints"

    n = 0
    for step in first_steps:
        n += 1
        case = copy(pristine, tmp_path / f"k{n}")
        killed = run(case.root, *case.argv, failpoint=step)
        assert killed.killed, (step, killed.code, killed.err)
        harness.count("kills")
        harness.assert_no_loss(case.root, case.held, case.purgeable)  # before any recovery
        recovery_trace = tmp_path / f"k{n}.trace"
        recovered = run(case.root, "list", trace=recovery_trace)
        assert recovered.code == 0, (step, recovered.err)
        check_recovered(case, after, operation.whole)
        harness.count("recoveries")
        finish(case, after)

        # A second kill at each step of that recovery, then a clean one.
        for second in harness.steps(recovery_trace):
            n += 1
            case = copy(pristine, tmp_path / f"k{n}")
            assert run(case.root, *case.argv, failpoint=step).killed
            again = run(case.root, "list", failpoint=second)
            assert again.killed, (step, second, again.code, again.err)
            harness.count("second_kills")
            harness.assert_no_loss(case.root, case.held, case.purgeable)
            assert run(case.root, "list").code == 0
            check_recovered(case, after, operation.whole)
            harness.count("recoveries")
            finish(case, after)
    harness.count(f"sweep.{name}", n)
    print(f"\n{name}: {n}")
