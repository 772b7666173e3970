"""``python -m cg_devstack.child PARENT_PID -- ARGV...``: becomes ARGV, set to die with
its parent.

A stack's processes run in sessions of their own (so that Ctrl-C in a terminal reaches
only the supervisor, which then stops them in order). The price: when the supervisor
itself dies without stopping them (SIGKILL, a crash, a closed terminal), nothing else
would, and they live on as orphans holding the stack's ports. On Linux the kernel can
send a child a signal when its parent dies (``PR_SET_PDEATHSIG``); the setting survives
``exec``, so it covers nats-server as well as our Python services. It is set here, in
the child, rather than in a ``preexec_fn``, which is unsafe in a parent with threads
(the supervisor pumps each child's log on a thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """SIGTERM (a graceful stop) when the parent dies; exits at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the setting took effect
        os._exit(1)


def main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: python -m cg_devstack.child PARENT_PID -- ARGV...")
    die_with_parent(int(args[0]))
    os.execvp(args[2], args[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
