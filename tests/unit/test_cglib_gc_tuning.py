"""cglib.gc_tuning: a service's start-up heap is frozen, and the garbage cycles its requests
leave are still collected, without anyone calling gc.collect. Run in a fresh interpreter:
freezing the test run's own heap would keep its garbage for good."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, weakref
    from cglib import gc_tuning

    startup = [[i] for i in range(50_000)]  # the heap start-up built
    gc_tuning.after_startup()
    assert gc.get_freeze_count() >= 50_000, gc.get_freeze_count()
    assert gc.get_threshold() == (gc_tuning.GEN0_THRESHOLD, gc_tuning.GEN1_THRESHOLD, gc_tuning.GEN2_THRESHOLD)

    class Node:
        pass

    freed = []
    for i in range(30_000):  # requests that each leave a reference cycle behind
        a, b = Node(), Node()
        a.other, b.other = b, a
        weakref.finalize(a, freed.append, i)
        del a, b
    print(len(freed))
    """
)


def test_cycles_left_after_startup_are_still_collected():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 25_000  # all but the last young generation's worth
