"""Checkpoints stay trustworthy when things break (a 2-rank dp=2 ZeRO-1 run of the tiny Llama,
checkpoint.interval=2, keep=2, 8 steps: saves at steps 2, 4, 6, 8; the 3rd save deletes step 2):
- kill -9 at each fault point (WEFT_CHECKPOINT_FAULT=snapshot|write|fragment|manifest|rename|
  latest|retention, on the rank and at the save it names), asynchronous and synchronous saves:
  the launcher exits non-zero naming the killed rank; `latest` names the complete checkpoint the
  protocol says it must at that point; re-running the command without the fault resumes from it
  (one `resume` record at that step, then the following steps), finishes with exit 0, leaves
  exactly the newest two complete step directories and `latest` (no *.tmp, *.deleting or
  manifest-less directory), and every logged loss equals the uninterrupted run's bit for bit;
- one flipped byte inside a tensor's data in the newest model shard (located from the file's
  own header, confirmed with the safetensors package): refused with one line naming the file and
  the tensor (checkpoint.fallback=false), or, with fallback=true, a checkpoint_fallback record
  and a resume from the older complete checkpoint whose losses and re-saved weights are those of
  the uninterrupted run; a truncated shard: refused naming the file;
- a disk that fills mid-save (a tmpfs sized to hold one checkpoint and a half): training goes on
  (checkpoint.on_error=continue), checkpoint_failed records name the path and "No space left on
  device" with consecutive_failures counting up, `latest` still names the first checkpoint, which
  resumes bit for bit, and the run exits non-zero at the end because its last save failed too;
  with on_error=stop the run exits non-zero after the first failed save with a one-line error.
  Where this process can mount no tmpfs (directly or in a user namespace) that case prints SKIP
  with the reason; it is not counted as passed.

Every case runs even when an earlier one fails; the script exits 1 if any check failed."""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
import torch  # noqa: E402
from safetensors.torch import load  # noqa: E402

from weft_test import WEFT, config, make_dataset, read_metrics, step_losses, tmpdir  # noqa: E402

STEPS = 8
# decay_steps pinned so a run with another train.steps follows the same schedule.
SETS = [f"train.steps={STEPS}", f"optim.decay_steps={STEPS}", "checkpoint.interval=2", "checkpoint.keep=2",
        "parallel.zero=1"]
NPROC = 2
FINAL = ["latest", "step_00000006", "step_00000008"]  # keep=2 after the step-8 save
HANG_GUARD_S = 300  # not a timing assertion: only stops a hung run from hanging the suite
FAILED = []


def expect(cond, message):
    """A check that records a failure and lets the remaining checks run (cases are independent;
    one run of the script reports every one)."""
    print(("ok: " if cond else "FAIL: ") + message, flush=True)
    if not cond:
        FAILED.append(message)
    return bool(cond)


def name(step):
    return f"step_{step:08d}"


def train_args(run_dir, *sets, nproc=NPROC, prefix=None):
    args = ["train", "--config", config("llama-tiny.yaml"), "--set", "run.dir=" + run_dir,
            "--set", "data.prefix=" + (prefix or PREFIX)]
    for kv in [*SETS, *sets]:
        args += ["--set", kv]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    return args


def launch(args, env=None, wrapper=()):
    """Runs `weft args` in its own session (so a hung run's workers can be killed with it) with
    the fault variables only from `env`. Returns CompletedProcess; returncode None = hung."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_CHECKPOINT_FAULT")}
    full.update(env or {})
    p = subprocess.Popen([*wrapper, WEFT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace", env=full, start_new_session=True)
    try:
        out, err = p.communicate(timeout=HANG_GUARD_S)
        code = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        code = None
    return subprocess.CompletedProcess(p.args, code, out, err)


def tail(p, n=400):
    """The launcher's lines and each error line (the cause, which a c10 backtrace after it would
    push out of a plain tail), then the last n characters."""
    lines = (p.stderr or "").splitlines()
    said = [l for l in lines if l.startswith("weft launcher:") or " error: " in l or "] E" in l][:8]
    return "\n".join(said) + "\n...\n" + (p.stderr or "").strip()[-n:]


def latest(ckpt):
    try:
        with open(os.path.join(ckpt, "latest")) as f:
            return f.read().strip()
    except OSError:
        return None


def complete(ckpt, entry):
    return entry is not None and os.path.isfile(os.path.join(ckpt, entry, "manifest.json"))


def leftovers(ckpt):
    """Entries that are neither `latest` nor a complete step directory."""
    return sorted(e for e in os.listdir(ckpt) if e != "latest" and not (e.startswith("step_") and complete(ckpt, e)))


def events(run_dir, kind):
    if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        return []
    return [r for r in read_metrics(run_dir) if r.get("event") == kind]


def check_resumed(tag, run_dir, k, reference):
    """One resume record at step k, steps k+1..STEPS after it, one row per step; every logged
    loss (the killed run's too) equals the uninterrupted run's."""
    recs = read_metrics(run_dir) if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) else []
    at = [i for i, r in enumerate(recs) if r.get("event") == "resume" and "checkpoint" in r]
    expect(len(at) == 1 and recs[at[0]]["step"] == k,
           f"{tag}: one resume record, at step {k} ({[recs[i] for i in at]})")
    if len(at) != 1:
        return
    after = [r for r in recs[at[0] + 1:] if "event" not in r]
    expect([r["step"] for r in after] == list(range(k + 1, STEPS + 1)),
           f"{tag}: steps {k + 1}..{STEPS} after the resume record ({[r['step'] for r in after]})")
    logged = [r for r in recs if "event" not in r]
    # The killed run's rows past step k were dropped at the resume: one row per step.
    steps = [r["step"] for r in logged]
    expect(steps == sorted(set(steps)), f"{tag}: metrics.jsonl has one row per step ({steps})")
    differ = [r["step"] for r in logged if r["loss"] != reference.get(r["step"])]
    expect(logged and not differ, f"{tag}: every logged loss equals the uninterrupted run's bitwise (differ at {differ})")


def check_final_dir(tag, ckpt):
    entries = sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else []
    expect(entries == FINAL and latest(ckpt) == FINAL[-1] and not leftovers(ckpt),
           f"{tag}: {os.path.basename(ckpt)} holds only complete step directories and latest -> "
           f"{FINAL[-1]} ({entries}; not complete: {leftovers(ckpt) if entries else '-'})")


# ---------------------------------------------------------------------------------------------
# 1. kill -9 at each fault point

# Where `latest` must point right after the kill at save n (step 2n), and what is left on disk.
BEFORE_COMMIT = ("snapshot", "write", "fragment", "manifest", "rename")


def resume_step(point, n):
    """The checkpoint `latest` names after a kill at save n (step 2n): the previous one until
    `latest` is replaced."""
    return 2 * (n - 1) if point in BEFORE_COMMIT else 2 * n


def after_kill(tag, point, n, ckpt):
    new, want = name(2 * n), name(resume_step(point, n))
    expect(latest(ckpt) == want and complete(ckpt, want),
           f"{tag}: after the kill latest names the complete {want} ({latest(ckpt)})")
    present = set(os.listdir(ckpt)) if os.path.isdir(ckpt) else set()
    if point in ("write", "fragment", "manifest"):
        expect(new + ".tmp" in present and new not in present,
               f"{tag}: the kill left the half-made {new}.tmp (what the restart must clean): {sorted(present)}")
    elif point == "rename":
        expect(complete(ckpt, new), f"{tag}: {new} was renamed into place before the kill: {sorted(present)}")
    elif point == "retention":
        gone = name(2 * (n - 2))
        expect(gone + ".deleting" in present and gone not in present,
               f"{tag}: the kill left {gone}.deleting, renamed and partly removed: {sorted(present)}")


def fault_case(work, reference, point, rank, n, sync):
    tag = f"kill -9 rank {rank} at '{point}' of save {n}" + (" (checkpoint.async=false)" if sync else "")
    run_dir = os.path.join(work, f"fault_{point}_r{rank}_s{n}" + ("_sync" if sync else ""))
    ckpt = os.path.join(run_dir, "checkpoints")
    sets = ["checkpoint.async=false"] if sync else []
    env = {"WEFT_CHECKPOINT_FAULT": point, "WEFT_CHECKPOINT_FAULT_SAVE": str(n),
           "WEFT_CHECKPOINT_FAULT_RANK": str(rank)}
    p = launch(train_args(run_dir, *sets), env)
    said = any(f"rank {rank}" in l and "killed by signal 9" in l for l in p.stderr.splitlines())
    expect(p.returncode not in (0, None) and said,
           f"{tag}: the run exits non-zero (exit {p.returncode}), the launcher names rank {rank} killed by "
           f"signal 9: {tail(p)!r}")
    if p.returncode is None:
        return
    committed = [r["step"] for r in events(run_dir, "checkpoint")]
    allowed = [list(range(2, 2 * n, 2))] + ([] if point in BEFORE_COMMIT else [list(range(2, 2 * n + 1, 2))])
    expect(committed in allowed, f"{tag}: checkpoint records before the kill {committed} (expected one of {allowed})")
    if not os.path.isdir(ckpt):
        expect(False, f"{tag}: no checkpoint directory {ckpt}")
        return
    after_kill(tag, point, n, ckpt)

    p = launch(train_args(run_dir, *sets))
    expect(p.returncode == 0, f"{tag}: re-running without the fault finishes with exit 0 ({p.returncode}): {tail(p)!r}")
    check_resumed(tag, run_dir, resume_step(point, n), reference)
    check_final_dir(tag, ckpt)


FAULTS = [  # point, rank that dies, n-th save, synchronous
    ("snapshot", 1, 2, False),
    ("write", 1, 3, False),
    ("write", 0, 2, False),
    ("fragment", 1, 2, False),
    ("manifest", 0, 2, False),
    ("rename", 0, 3, False),  # step_6 committed, latest still step_4: the re-save of 6 must keep it whole
    ("latest", 0, 2, False),
    ("retention", 0, 3, False),  # the 3rd save deletes step_2
    ("write", 1, 2, True),
    ("manifest", 0, 3, True),
]


# ---------------------------------------------------------------------------------------------
# 2. Damaged shards


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return 8 + n, json.loads(f.read(n))


def tensors_of(path):
    """The safetensors package's reading of a file, copied into memory (load_file maps the file,
    so its tensors would change with it)."""
    with open(path, "rb") as f:
        return load(f.read())


def flip_byte(path):
    """Flips one byte in the middle of a tensor's data (not the header); returns the tensor's name.
    The safetensors package confirms that exactly that tensor changed."""
    base, header = safetensors_header(path)
    tensors = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    names = [k for _, k in tensors]
    # The middle tensor, and one whose name is in no other name, so the message is unambiguous.
    unique = [(o, k) for o, k in tensors if o[1] > o[0] and sum(k in m for m in names) == 1]
    (begin, end), tensor = unique[len(unique) // 2]
    before = tensors_of(path)
    with open(path, "r+b") as f:
        f.seek(base + (begin + end) // 2)
        b = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([b ^ 0xFF]))
    after = tensors_of(path)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    expect(changed == [tensor], f"the flipped byte lies in tensor {tensor!r}'s data (safetensors package: {changed})")
    return tensor


def copy_run(reference_dir, dest):
    """The finished reference run (checkpoints at steps 6 and 8) with a fresh metrics log."""
    shutil.copytree(reference_dir, dest)
    for extra in ("metrics.jsonl", "tb"):
        path = os.path.join(dest, extra)
        shutil.rmtree(path) if os.path.isdir(path) else os.path.exists(path) and os.remove(path)
    return dest


def worker_errors(stderr):
    """The launcher's `[rank r] ... error: ...` lines; None when a rank printed more than one
    error line or anything looks like LibTorch/C++ stack text."""
    lines = stderr.splitlines()
    if any(s in l for l in lines for s in ("Exception raised from", "frame #", "terminate called")):
        return None
    errs = [l for l in lines if l.startswith("[rank ") and "error:" in l]
    ranks = [l.split("]")[0] for l in errs]
    return errs if len(set(ranks)) == len(ranks) else None


def refused(tag, run_dir, needles, *sets):
    """One process: non-zero exit, exactly one stderr line holding every needle. Two ranks
    (launcher): non-zero, at most one error line per worker, each holding every needle."""
    p = launch(train_args(run_dir, *sets, nproc=1))
    lines = p.stderr.strip().splitlines()
    expect(p.returncode not in (0, None, -6, -11) and len(lines) == 1 and all(s in p.stderr for s in needles),
           f"{tag}, one process: exit {p.returncode}, one line naming {needles}: {p.stderr.strip()[-600:]!r}")
    p = launch(train_args(run_dir, *sets))
    errs = worker_errors(p.stderr)
    expect(p.returncode not in (0, None) and errs and all(all(s in l for s in needles) for l in errs),
           f"{tag}, {NPROC} ranks: exit {p.returncode}, one error line per worker naming {needles}: "
           f"{errs if errs is not None else tail(p, 1200)!r}")


def damaged_cases(work, reference_dir, reference):
    shard = os.path.join("checkpoints", name(8), "model.rank00000.safetensors")

    run_dir = copy_run(reference_dir, os.path.join(work, "flipped_refuse"))
    tensor = flip_byte(os.path.join(run_dir, shard))
    refused("flipped byte, checkpoint.fallback=false", run_dir, [os.path.join(run_dir, shard), tensor],
            "checkpoint.fallback=false")

    run_dir = copy_run(reference_dir, os.path.join(work, "flipped_fallback"))
    tensor = flip_byte(os.path.join(run_dir, shard))
    tag = "flipped byte, checkpoint.fallback=true"
    p = launch(train_args(run_dir, "checkpoint.fallback=true"))
    expect(p.returncode == 0, f"{tag}: the run finishes with exit 0 ({p.returncode}): {tail(p)!r}")
    fell = events(run_dir, "checkpoint_fallback")
    base = [(os.path.basename(os.path.normpath(str(r.get("from")))), os.path.basename(os.path.normpath(str(r.get("to")))))
            for r in fell]
    expect(base == [(name(8), name(6))] and os.path.join(run_dir, shard) in fell[0].get("error", "") and
           tensor in fell[0].get("error", ""),
           f"{tag}: one checkpoint_fallback record from {name(8)} to {name(6)} whose error names the file and "
           f"tensor {tensor!r}: {fell}")
    check_resumed(tag, run_dir, 6, reference)
    ckpt = os.path.join(run_dir, "checkpoints")
    check_final_dir(tag, ckpt)
    want = tensors_of(os.path.join(reference_dir, shard))
    got = tensors_of(os.path.join(run_dir, shard)) if complete(ckpt, name(8)) else {}
    expect(sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want),
           f"{tag}: the re-saved {name(8)} holds the uninterrupted run's weights (the damaged one replaced)")

    # A shard only rank 1 reads (its ZeRO-1 optimizer slice): rank 0 finds nothing wrong itself, yet
    # both ranks refuse with rank 1's words, or fall back together.
    only = os.path.join("checkpoints", name(8), "optim.rank00001.safetensors")
    run_dir = copy_run(reference_dir, os.path.join(work, "flipped_rank1"))
    tensor = flip_byte(os.path.join(run_dir, only))
    p = launch(train_args(run_dir))
    errs = worker_errors(p.stderr)
    expect(p.returncode not in (0, None) and errs and len(errs) == NPROC and
           all(os.path.join(run_dir, only) in l and tensor in l for l in errs),
           f"damage only rank 1 reads: every rank's error line names {only} and {tensor!r}: "
           f"{errs if errs is not None else tail(p, 1200)!r}")
    p = launch(train_args(run_dir, "checkpoint.fallback=true"))
    fell = events(run_dir, "checkpoint_fallback")
    expect(p.returncode == 0 and len(fell) == 1 and tensor in fell[0].get("error", ""),
           f"damage only rank 1 reads, fallback=true: exit 0 and rank 0's record names {tensor!r}: {fell}")
    check_resumed("damage only rank 1 reads, fallback=true", run_dir, 6, reference)

    run_dir = copy_run(reference_dir, os.path.join(work, "truncated"))
    path = os.path.join(run_dir, shard)
    os.truncate(path, os.path.getsize(path) // 2)
    refused("truncated shard, fallback default", run_dir, [path])


# ---------------------------------------------------------------------------------------------
# 3. A disk that fills mid-save


def page_bytes(directory):
    return sum(-(-os.path.getsize(os.path.join(directory, f)) // 4096) * 4096 for f in os.listdir(directory))


class SmallDisk:
    """A tmpfs of `size` bytes at `mount` for the length of one command: mounted here when this
    process may, else inside `unshare -rm` around the command. After each run its contents are
    copied to `copy` (a user namespace's mount is gone when the command ends) and it is unmounted."""

    def __init__(self, work, size):
        self.work, self.size = work, -(-size // 4096) * 4096
        self.mount = os.path.join(work, "small_disk")
        os.makedirs(self.mount, exist_ok=True)
        self.how, self.why = self._probe()

    def _opts(self):
        return ["-t", "tmpfs", "-o", f"size={self.size // 1024}k", "tmpfs", self.mount]

    def _probe(self):
        p = subprocess.run(["mount", *self._opts()], capture_output=True, text=True)
        if p.returncode == 0:
            subprocess.run(["umount", self.mount], check=True)
            return "mount", ""
        why = f"mount: {p.stderr.strip()}"
        q = subprocess.run(["unshare", "-rm", "sh", "-c", 'mount "$@"', "sh", *self._opts()], capture_output=True,
                           text=True)
        if q.returncode == 0:
            return "unshare", ""
        return None, f"{why}; unshare -rm: {q.stderr.strip()}"

    def run(self, args, copy):
        if self.how == "unshare":
            # $0 = the mount point, $1..$6 = mount's arguments, then the weft command.
            script = 'mount "$1" "$2" "$3" "$4" "$5" "$6" || exit 97; shift 6; "$@"; rc=$?; cp -a "$0/." "$COPY_TO"; exit $rc'
            os.makedirs(copy)
            return launch(args, env={"COPY_TO": copy},
                          wrapper=["unshare", "-rm", "sh", "-c", script, self.mount, *self._opts()])
        subprocess.run(["mount", *self._opts()], check=True)
        try:
            return launch(args)
        finally:
            shutil.copytree(self.mount, copy)
            subprocess.run(["umount", self.mount], check=True)


def full_disk_cases(work, reference_dir, reference):
    one = page_bytes(os.path.join(reference_dir, "checkpoints", name(8)))
    disk = SmallDisk(work, one + one // 2)  # the first checkpoint fits, a second one does not
    if disk.how is None:
        print(f"SKIP: full-disk cases: cannot mount a tmpfs here ({disk.why})", flush=True)
        return
    print(f"full disk: tmpfs of {disk.size} bytes ({disk.how}), one checkpoint takes {one}", flush=True)
    enospc = "No space left on device"

    tag = "disk full mid-save, on_error=continue"
    run_dir, copy = os.path.join(work, "full_continue"), os.path.join(work, "full_continue_ckpt")
    p = disk.run(train_args(run_dir, "checkpoint.dir=" + disk.mount), copy)
    # Training goes on through the failed saves; the run still fails at the end, since the last
    # save (of the final state) failed too and the steps since step 2 are lost.
    errs = worker_errors(p.stderr)
    expect(p.returncode not in (0, None) and errs and all("last checkpoint (step 8)" in l for l in errs),
           f"{tag}: training goes on, then exits non-zero naming the failed last save: "
           f"{errs if errs is not None else tail(p, 1200)!r}")
    logged = sorted(step_losses(run_dir)) if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) else []
    expect(logged == list(range(1, STEPS + 1)), f"{tag}: steps 1..{STEPS} logged ({logged})")
    failed = events(run_dir, "checkpoint_failed")
    expect([r.get("step") for r in failed] == [4, 6, 8] and
           [r.get("consecutive_failures") for r in failed] == [1, 2, 3],
           f"{tag}: checkpoint_failed at steps 4, 6, 8 with consecutive_failures 1, 2, 3: "
           f"{[(r.get('step'), r.get('consecutive_failures')) for r in failed]}")
    expect(failed and all(disk.mount in r.get("error", "") and enospc in r.get("error", "") for r in failed),
           f"{tag}: each error names a path under {disk.mount} and {enospc!r}: {[r.get('error') for r in failed][:1]}")
    expect([r["step"] for r in events(run_dir, "checkpoint")] == [2], f"{tag}: only the step-2 save is recorded as committed")
    expect(latest(copy) == name(2) and complete(copy, name(2)) and not leftovers(copy),
           f"{tag}: latest still names the complete {name(2)}; nothing else left ({sorted(os.listdir(copy))})")
    # The surviving checkpoint resumes bit for bit (a copy on an ordinary disk).
    resume_dir = os.path.join(work, "full_resume")
    p = launch(train_args(resume_dir, "checkpoint.dir=" + copy))
    expect(p.returncode == 0, f"{tag}: resuming from the surviving checkpoint exits 0 ({p.returncode}): {tail(p)!r}")
    check_resumed(tag + " + resume", resume_dir, 2, reference)

    tag = "disk full mid-save, on_error=stop"
    run_dir, copy = os.path.join(work, "full_stop"), os.path.join(work, "full_stop_ckpt")
    p = disk.run(train_args(run_dir, "checkpoint.dir=" + disk.mount, "checkpoint.on_error=stop"), copy)
    errs = worker_errors(p.stderr)
    expect(p.returncode not in (0, None) and errs and any(disk.mount in l and enospc in l for l in errs),
           f"{tag}: exit {p.returncode}, at most one error line per worker, one naming the path and {enospc!r}: "
           f"{errs if errs is not None else tail(p, 1200)!r}")
    failed = events(run_dir, "checkpoint_failed")
    expect([(r.get("step"), r.get("consecutive_failures")) for r in failed] == [(4, 1)],
           f"{tag}: one checkpoint_failed record, step 4: {failed}")
    expect(latest(copy) == name(2) and complete(copy, name(2)) and not leftovers(copy),
           f"{tag}: latest still names the complete {name(2)}; nothing else left ({sorted(os.listdir(copy))})")


# ---------------------------------------------------------------------------------------------


def run_case(what, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # a crash in one case is that case's failure; the others still run
        expect(False, f"{what}: the test itself raised {type(e).__name__}: {e}")


def main():
    global PREFIX
    work = tmpdir("ckpt_faults")
    PREFIX = make_dataset(work, documents=60)
    reference_dir = os.path.join(work, "reference")
    p = launch(train_args(reference_dir))
    if p.returncode != 0:
        raise SystemExit(f"FAIL: the uninterrupted reference run failed ({p.returncode}): {p.stderr[-1000:]}")
    reference = step_losses(reference_dir)
    print(f"reference: {len(reference)} steps, checkpoints {sorted(os.listdir(os.path.join(reference_dir, 'checkpoints')))}")

    for point, rank, n, sync in FAULTS:
        run_case(f"fault {point}", fault_case, work, reference, point, rank, n, sync)
    run_case("damaged shards", damaged_cases, work, reference_dir, reference)
    run_case("full disk", full_disk_cases, work, reference_dir, reference)

    if FAILED:
        print(f"\ntest_checkpoint_faults: {len(FAILED)} check(s) failed:", *("  " + f for f in FAILED), sep="\n")
        raise SystemExit(1)
    print("test_checkpoint_faults: all passed")


if __name__ == "__main__":
    main()
