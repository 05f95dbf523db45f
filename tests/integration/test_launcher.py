"""`weft train --nproc N`, the local launcher, under faults: a worker killed with SIGKILL, a worker
exiting with its own code, SIGTERM to the launcher, the launcher itself killed; its output
prefixing; and impossible layouts refused before any worker starts. Workers are the real `weft
train` worker path (env contract, layout validation, TCPStore rendezvous, Gloo groups); the test
hook WEFT_TEST_WORKER only replaces the training loop with sleep/exit/all_reduce. Every run carries
a unique marker in its command line so leftover processes can be found with pgrep."""
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import WEFT, check, config, tmpdir  # noqa: E402

WORK = tmpdir("launcher")


class Launch:
    """A `weft train --nproc` run whose stdout/stderr lines are collected as they arrive."""

    def __init__(self, nproc, hook=None, sets=()):
        self.marker = os.path.join(WORK, "run-" + uuid.uuid4().hex[:12])
        args = [WEFT, "train", "--config", config("llama-tiny.yaml"), "--nproc", str(nproc),
                "--set", "run.dir=" + self.marker, "--set", "parallel.timeout_sec=60"]
        for s in sets:
            args += ["--set", s]
        env = dict(os.environ)
        env.pop("WEFT_TEST_WORKER", None)
        if hook:
            env["WEFT_TEST_WORKER"] = hook
        self.start = time.monotonic()
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)
        self.lines = queue.Queue()
        self.out, self.err = [], []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream, sink):
        for line in stream:
            sink.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern, count, timeout=60):
        """Waits until `count` lines seen so far match `pattern`; returns the matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in (re.search(pattern, l) for l in self.out + self.err) if m]
            if len(found) >= count:
                return found
            try:
                self.lines.get(timeout=0.2)
            except queue.Empty:
                pass
        self.dump()
        raise SystemExit(f"FAIL: timed out waiting for {count} lines matching {pattern!r}")

    def finish(self, timeout=60):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.dump()
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise SystemExit("FAIL: the launcher did not exit")
        time.sleep(0.2)  # let the reader threads drain
        return self.proc.returncode, time.monotonic() - self.start

    def alive(self):
        p = subprocess.run(["pgrep", "-f", self.marker], capture_output=True, text=True)
        return [int(x) for x in p.stdout.split()]

    def survivors(self, within=5.0):
        """Processes whose command line carries this run's marker, after waiting up to `within`."""
        deadline = time.monotonic() + within
        while True:
            pids = self.alive()
            if not pids or time.monotonic() > deadline:
                for pid in pids:  # never leave them behind, even when the test fails
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return pids
            time.sleep(0.1)

    def dump(self):
        sys.stderr.write("--- stdout\n" + "\n".join(self.out) + "\n--- stderr\n" + "\n".join(self.err) + "\n")


def ready_pids(run, nproc):
    found = run.wait_for(r"^\[rank (\d+)\] worker pid (\d+) ready$", nproc)
    return {int(m.group(1)): int(m.group(2)) for m in found}


def test_refuses_impossible_layouts():
    for nproc, sets, needles in [
        (4, ["parallel.tp=3", "parallel.pp=2"], ["world_size(4) is smaller than tp(3) × pp(2) = 6"]),
        (2, ["parallel.tp=2"], ["tp(2) × pp(1) × dp(1)", "model.vocab_size(257) is not divisible by tp(2)"]),
        (4, ["parallel.pp=4"], ["pp(4) stages but model.num_layers is 2"]),
        (2, ["parallel.pp=2", "parallel.schedule=zigzag"], ["parallel.schedule 'zigzag'", "1f1b"]),
        (2, ["parallel.pp=2", "parallel.pipeline_layers=2,1"],
         ["parallel.pipeline_layers has 2 entries summing to 3", "model.num_layers(2)"]),
        (2, ["parallel.pp=2", "parallel.vpp=2", "model.num_layers=4", "train.global_batch_size=6",
             "train.micro_batch_size=2"], ["interleaved 1F1B needs the micro-batches per step (3", "pp(2)"]),
        (2, ["parallel.tp=2", "model.vocab_size=258", "parallel.sequence_parallel=true", "train.seq_len=31"],
         ["train.seq_len(31) is not divisible by tp(2)"]),
    ]:
        run = Launch(nproc, hook="sleep", sets=sets)
        code, secs = run.finish()
        err = [l for l in run.err if l.strip()]
        ok = (code != 0 and len(err) == 1 and all(n in err[0] for n in needles)
              and not any("starting" in l or "[rank" in l for l in run.out + run.err))
        if not ok:
            run.dump()
        check(ok, f"--nproc {nproc} {' '.join(sets)} refused before any worker starts: {err[0] if err else ''!r}")
        check(not run.survivors(0), "  and no process was left")


def test_prefix_and_primary():
    run = Launch(4, hook="allreduce", sets=["parallel.pp=2"])
    code, secs = run.finish()
    lines = [l for l in run.out if l.strip()]
    prefixed = all(re.match(r"^\[rank [0-3]\] ", l) for l in lines)
    per_rank = all(any(l.startswith(f"[rank {r}] rank {r} of 4 in tp(1) × pp(2) × dp(2): all_reduce ok")
                       for l in lines) for r in range(4))
    sums = [l for l in lines if "sum=" in l]
    ok = code == 0 and prefixed and per_rank and sums == ["[rank 0] sum=10"]
    if not ok:
        run.dump()
    check(ok, f"4 workers rendezvous and all_reduce; every stdout line prefixed by rank; only the "
              f"primary prints the result")
    run = Launch(2, hook="no-such-behaviour")
    code, _ = run.finish()
    errs = [l for l in run.err if "error:" in l]
    ok = code == 1 and sorted(l[:9] for l in errs) == ["[rank 0] ", "[rank 1] "]
    if not ok:
        run.dump()
    check(ok, f"worker errors reach stderr prefixed by rank, exit 1: {errs[:1]}")


def test_worker_killed():
    run = Launch(4, hook="sleep", sets=["parallel.pp=2"])
    pids = ready_pids(run, 4)
    os.kill(pids[1], signal.SIGKILL)
    code, _ = run.finish(timeout=30)
    said = any("rank 1" in l and "killed by signal 9" in l for l in run.err)
    # The others are stopped by the launcher (SIGTERM), not by noticing the dead peer themselves.
    stopped = {int(m.group(1)) for m in (re.match(r"^\[rank (\d)\] worker pid \d+ got signal 15$", l)
                                         for l in run.out) if m}
    ok = code == 128 + 9 and said and stopped == {0, 2, 3}
    if not ok:
        run.dump()
    check(ok, f"a worker killed with SIGKILL: launcher exits {code} (128+9) naming the rank; the others "
              f"got SIGTERM {sorted(stopped)}")
    left = run.survivors()
    check(not left, f"  and no worker is left {left}")


def test_exit_code_propagates():
    run = Launch(4, hook="exit:2:7", sets=["parallel.pp=2"])
    code, secs = run.finish(timeout=60)
    said = any("rank 2" in l and "exited with code 7" in l for l in run.err)
    stopped = sum(1 for l in run.out if re.match(r"^\[rank [013]\] worker pid \d+ got signal 15$", l))
    ok = code == 7 and said and stopped == 3
    if not ok:
        run.dump()
    check(ok, f"rank 2 exits 7: the launcher exits {code}, the 3 others got SIGTERM ({stopped})")
    check(not run.survivors(), "  and no worker is left")


def test_sigterm_is_forwarded():
    run = Launch(4, hook="sleep", sets=["parallel.pp=2"])
    pids = ready_pids(run, 4)
    run.proc.send_signal(signal.SIGTERM)
    code, _ = run.finish(timeout=30)
    got = {int(m.group(1)) for m in (re.match(r"^\[rank (\d)\] worker pid (\d+) got signal 15$", l) for l in run.out) if m}
    ok = got == {0, 1, 2, 3} and code == 128 + 15
    if not ok:
        run.dump()
    check(ok, f"SIGTERM to the launcher reaches every worker {sorted(got)}; exit {code}")
    check(not run.survivors(), "  and no worker is left")
    run = Launch(2, hook="sleep")
    ready_pids(run, 2)
    run.proc.send_signal(signal.SIGINT)
    code, _ = run.finish(timeout=30)
    got = [l for l in run.out if "got signal 2" in l]
    check(len(got) == 2 and code == 128 + 2, f"SIGINT too ({len(got)} workers); exit {code}")


def test_launcher_killed():
    run = Launch(4, hook="sleep", sets=["parallel.pp=2"])
    pids = ready_pids(run, 4)
    before = run.alive()
    check(len(before) == 5, f"the marker finds the launcher and its 4 workers: {before}")
    run.proc.send_signal(signal.SIGKILL)
    run.finish(timeout=10)
    left = run.survivors(within=5)
    check(not left, f"the launcher killed with SIGKILL takes its {len(pids)} workers with it (left: {left})")


def test_store_port_held():
    """The store's port is bound before the launcher names it and stays bound until rank 0's store
    serves on it: no other process can take it in between (a port probed free and closed again
    can be taken by any process binding port 0 meanwhile, which fails rank 0's rendezvous)."""
    run = Launch(2, hook="allreduce")
    port = int(run.wait_for(r"store at 127\.0\.0\.1:(\d+)", 1)[0].group(1))
    taken = None
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            taken = "this test bound it"
        except OSError as e:
            taken = str(e)
    check("Address already in use" in taken,
          f"the store port {port} is held from the moment the launcher names it ({taken})")
    code, _ = run.finish()
    ok = code == 0 and "[rank 0] sum=3" in run.out
    if not ok:
        run.dump()
    check(ok, f"  and the workers rendezvous on it and all_reduce (exit {code})")


def main():
    test_refuses_impossible_layouts()
    test_store_port_held()
    test_prefix_and_primary()
    test_worker_killed()
    test_exit_code_propagates()
    test_sigterm_is_forwarded()
    test_launcher_killed()
    print("test_launcher: all passed")


if __name__ == "__main__":
    main()
