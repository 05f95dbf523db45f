"""Real Gloo collectives between processes on 127.0.0.1: Weft's ParallelContext and helpers on the
world and on every tp/dp/pp/embedding/model group, for 2, 4 and 8 ranks; and the failures that
must become one-line errors naming the rank and operation instead of hangs."""
import os
import re
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD, check  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_comm_tool")


def run_world(n, *args, timeout=180):
    """Starts n ranks of the tool with the torchrun environment; returns [(code, output)] by rank
    and their pids. Rank 0's store serves on a socket bound here (WEFT_STORE_LISTEN_FD, as `weft
    train --nproc` does), so no other process can take the port before it opens."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = str(listener.getsockname()[1])
    procs = []
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r),
                   LOCAL_WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        fds = ()
        if r == 0:
            env["WEFT_STORE_LISTEN_FD"] = str(listener.fileno())
            fds = (listener.fileno(),)
        procs.append(subprocess.Popen([TOOL, *args], env=env, stdout=subprocess.PIPE, pass_fds=fds,
                                      stderr=subprocess.STDOUT, text=True, errors="replace"))
        if r == 0:
            listener.close()  # rank 0's alone: its death must close the store
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, _ = p.communicate()
            out += "\n(killed: test timeout)"
        results.append((p.returncode, out))
    return results, [p.pid for p in procs]


def collectives(n, *layout):
    results, _ = run_world(n, "collectives", *layout)
    passed = all(code == 0 and "checks passed" in out for code, out in results)
    if not passed:
        for r, (code, out) in enumerate(results):
            sys.stderr.write(f"--- rank {r} exit {code}\n{out}\n")
    counts = sorted({line.split()[3] for _, out in results for line in out.splitlines() if "checks passed" in line})
    check(passed, f"{n} ranks {' '.join(layout) or 'tp1 pp1'}: every collective on every group "
                  f"({'/'.join(counts)} checks per rank)")


def expected_failure(name, n, args, needles):
    """Rank 0 exits 3 with one error line naming the rank and operation (no wall-clock bound:
    the tool only returns once the operation has failed, and run_world's timeout is the hang
    guard)."""
    results, _ = run_world(n, *args)
    code, out = results[0]
    errors = [l for l in out.splitlines() if " error after " in l]
    msg = errors[0].split(": ", 1)[1] if len(errors) == 1 and ": " in errors[0] else ""
    ok = code == 3 and all(s in msg for s in needles) and "(killed: test timeout)" not in out
    if not ok:
        sys.stderr.write(f"--- rank 0 exit {code}\n{out}\n")
    check(ok, f"{name}: rank 0 exits 3 with one line naming the rank and operation: {msg!r}")


def main():
    collectives(2)
    collectives(4, "--tp", "2")
    collectives(4, "--pp", "4")
    collectives(8, "--tp", "2", "--pp", "2")
    expected_failure("hung peer", 2, ["timeout", "--timeout-ms", "2000"],
                     ["rank 0: all_reduce on world(ranks 0,1) failed", "Timed out", "parallel.timeout_sec=2"])
    expected_failure("recv from a silent peer", 2, ["recv-timeout", "--timeout-ms", "2000"],
                     ["rank 0: recv from world rank 1 (global 1) tag 7", "Timed out"])
    # The timeout is a minute: the dead peer must be noticed as a dead peer, not as a timeout.
    expected_failure("dead peer", 2, ["dead-peer", "--timeout-ms", "60000"],
                     ["rank 0: all_reduce on world(ranks 0,1) failed", "a peer process died"])
    print("test_comm: all passed")


if __name__ == "__main__":
    main()
