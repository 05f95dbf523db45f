"""Real Gloo collectives between processes on 127.0.0.1: Weft's ParallelContext and helpers on the
world and on every tp/dp/pp/embedding/model group, for 2, 4 and 8 ranks; and the failures that
must become one-line errors naming the rank and operation instead of hangs."""
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD, check  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_comm_tool")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_world(n, *args, timeout=180):
    """Starts n ranks of the tool with the torchrun environment; returns [(code, output)] by rank
    and the wall time."""
    port = str(free_port())
    procs = []
    start = time.monotonic()
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r),
                   LOCAL_WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([TOOL, *args], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace"))
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
    return results, time.monotonic() - start


def collectives(n, *layout):
    results, secs = run_world(n, "collectives", *layout)
    passed = all(code == 0 and "checks passed" in out for code, out in results)
    if not passed:
        for r, (code, out) in enumerate(results):
            sys.stderr.write(f"--- rank {r} exit {code}\n{out}\n")
    counts = sorted({line.split()[3] for _, out in results for line in out.splitlines() if "checks passed" in line})
    check(passed, f"{n} ranks {' '.join(layout) or 'tp1 pp1'}: every collective on every group "
                  f"({'/'.join(counts)} checks per rank, {secs:.1f}s)")


def expected_failure(name, n, args, needles, max_secs):
    results, secs = run_world(n, *args)
    code, out = results[0]
    line = next((l for l in out.splitlines() if " error after " in l), "")
    msg = line.split(": ", 1)[1] if ": " in line else ""
    m = re.search(r"error after ([0-9.]+)s", line)
    secs = float(m.group(1)) if m else secs  # as rank 0 measured it, not the others' sleep
    ok = code == 3 and all(s in msg for s in needles) and secs < max_secs
    if not ok:
        sys.stderr.write(f"--- rank 0 exit {code} after {secs:.1f}s\n{out}\n")
    check(ok, f"{name}: rank 0 fails in {secs:.1f}s (< {max_secs}s) with one line: {msg!r}")


def main():
    collectives(2)
    collectives(4, "--tp", "2")
    collectives(4, "--pp", "4")
    collectives(8, "--tp", "2", "--pp", "2")
    expected_failure("hung peer", 2, ["timeout", "--timeout-ms", "2000"],
                     ["rank 0: all_reduce on world(ranks 0,1) failed", "Timed out", "parallel.timeout_sec=2"], 6)
    expected_failure("recv from a silent peer", 2, ["recv-timeout", "--timeout-ms", "2000"],
                     ["rank 0: recv from world rank 1 (global 1) tag 7", "Timed out"], 6)
    # The timeout is a minute: the dead peer must be noticed long before it.
    expected_failure("dead peer", 2, ["dead-peer", "--timeout-ms", "60000"],
                     ["rank 0: all_reduce on world(ranks 0,1) failed", "a peer process died"], 5)
    print("test_comm: all passed")


if __name__ == "__main__":
    main()
