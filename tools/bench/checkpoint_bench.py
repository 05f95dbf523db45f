"""make bench-checkpoint: what checkpointing costs a training run of GPT-2 124M (fp32 weights and
Adam state, about 1.5 GB per checkpoint) on this machine. Three variants of the same run, side by
side in one invocation (interleaved repeats, rotated order; the machine is shared and noisy):
no checkpoints, checkpoint.async=true and checkpoint.async=false, a save every --interval steps.

Measured, from metrics.jsonl and the clock of this script:
- per save: blocking_ms (what the training loop waited), total_ms (snapshot start to commit),
  bytes, their ratio blocking/total (issue 8: <= 5 %, goal 2 %) and save GB/s = bytes / total_ms;
- step time: the median (and mean) of step_ms after --warmup, and the wall time per step between
  the metrics rows (that one includes whatever save() blocked between steps), each against the
  run without checkpoints of the same repeat (median over repeats). The final save is outside
  every step's time: `weft train` always saves the last state, so the "no checkpoints" run saves
  once at the end too, and that save is never timed;
- load GB/s: a resume with train.steps = the saved step (restore, then no step and no save), the
  checkpoint's files dropped from the page cache first (fsync + posix_fadvise DONTNEED, checked
  with fincore when present). Load time = the resume record's load_ms (the restore as the
  trainer timed it: find, read, verify and copy in model and optimizer state);
- the disk's own sequential write (write + fsync a file of the checkpoint's size in the work
  directory) and read speed (the same file dropped from the page cache, read in 8 MiB chunks).
  The checkpoint is read through mmap page faults, the probe through read(2); a virtual disk may
  have a host cache below it that no guest can drop."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchutil import REPO, config_path, median, prepare_corpus, read_metrics, step_rows, train_command

CONFIG = config_path("gpt2-124m.yaml")
CHUNK = 8 << 20
POLL_S = 0.005


def base_sets(a, prefix):
    """The overrides every run shares: a short fp32 run of the published GPT-2 small on the
    synthetic corpus, one sample per step so a step takes seconds on a few CPU cores."""
    return ["data.prefix=" + prefix, "precision=fp32", "train.global_batch_size=1", "train.micro_batch_size=1",
            f"train.seq_len={a.seq_len}", f"train.threads={a.threads}", "train.eval_interval=0",
            "train.log_interval=1000", "optim.warmup_steps=0", "run.peak_tflops=1", "run.tensorboard=false"]


def plan_parameters(build, seq_len):
    p = subprocess.run([os.path.join(build, "weft"), "plan", "--config", CONFIG, "--set", f"train.seq_len={seq_len}"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"weft plan failed ({p.returncode}): {p.stderr.strip()}")
    return int([l for l in p.stdout.splitlines() if l.startswith("parameters=")][0].split("=")[1])


def watched_train(build, run_dir, sets, tag):
    """Runs `weft train` into run_dir, polling metrics.jsonl (flushed per row) every POLL_S; each
    returned row gets "_seen_s": seconds from the process start until the row was seen. Exits the
    benchmark with the run's output tail when the run fails."""
    os.makedirs(run_dir, exist_ok=True)
    metrics, log = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "bench.log")
    rows, offset, partial = [], 0, b""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(train_command(build, CONFIG, ["run.dir=" + run_dir, *sets]), stdout=out, stderr=out)
        while True:
            done = p.poll() is not None
            now = time.perf_counter() - t0
            if os.path.exists(metrics) and os.path.getsize(metrics) > offset:
                with open(metrics, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                *lines, partial = (partial + data).split(b"\n")
                rows += [dict(json.loads(l), _seen_s=now) for l in lines if l.strip()]
            if done:
                break
            time.sleep(POLL_S)
    if p.returncode != 0:
        with open(log, errors="replace") as f:
            sys.exit(f"{tag}: weft train failed ({p.returncode}); the end of its output:\n{f.read()[-3000:]}")
    return rows


def resident_bytes(paths):
    """Bytes of these files in the page cache (fincore), or None where fincore is missing."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *paths],
                         check=True, capture_output=True, text=True).stdout
    return sum(int(x) for x in out.split())


def drop_from_cache(paths):
    """Evicts the files from the page cache (fsync first: only clean pages are dropped); returns
    the bytes still resident afterwards (None without fincore)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return resident_bytes(paths)


def disk_speed(directory, size):
    """Sequential write (8 MiB writes, then fsync) and cold read of a `size`-byte file in
    `directory`; returns GB/s both ways and the bytes still cached before the read."""
    path = os.path.join(directory, "disk_probe.bin")
    block = os.urandom(CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    left = size
    while left > 0:
        left -= os.write(fd, block[:min(left, CHUNK)])
    os.fsync(fd)
    write_s = time.perf_counter() - t0
    os.close(fd)
    resident = drop_from_cache([path])
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        while f.readinto(buf):
            pass
        read_s = time.perf_counter() - t0
    os.remove(path)
    return {"write_gbps": size / write_s / 1e9, "read_gbps": size / read_s / 1e9, "resident_before_read": resident}


def variant_sets(name, a, ckpt_dir):
    sets = [f"train.steps={a.steps}", "checkpoint.dir=" + ckpt_dir]
    if name == "none":
        return sets + ["checkpoint.interval=0"]  # the final save still happens; it is not timed
    return sets + [f"checkpoint.interval={a.interval}", f"checkpoint.async={'true' if name == 'async' else 'false'}"]


def run_variant(build, run_dir, name, a, prefix, rep):
    """One training run; returns its step times after the warmup, wall time per step between the
    metrics rows, the saves it recorded and when its training loop started (fresh runs only)."""
    ckpt_dir = os.path.join(run_dir, "ck")
    rows = watched_train(build, run_dir, base_sets(a, prefix) + variant_sets(name, a, ckpt_dir),
                         f"{name} repeat {rep}")
    steps = step_rows(rows)
    timed = steps[a.warmup:]
    last = steps[-1]
    wall = (last["_seen_s"] - steps[a.warmup - 1]["_seen_s"]) * 1e3 / (len(steps) - a.warmup)
    saves = [{"repeat": rep, "step": r["step"], "blocking_ms": r["blocking_ms"], "total_ms": r["total_ms"],
              "bytes": r["bytes"], "final": r["step"] == a.steps, "async": r.get("async")}
             for r in rows if r.get("event") == "checkpoint"]
    if name != "none" and any(sv["async"] != (name == "async") for sv in saves):
        sys.exit(f"{name} repeat {rep}: checkpoint records say async={[sv['async'] for sv in saves]}")
    return {"step_ms": [r["step_ms"] for r in timed], "wall_per_step_ms": wall, "saves": saves,
            "ckpt_dir": ckpt_dir}


def latest_step_dir(ckpt_dir):
    with open(os.path.join(ckpt_dir, "latest")) as f:
        name = f.read().strip()
    return name if os.path.isabs(name) else os.path.join(ckpt_dir, name)


def measure_resume(build, run_dir, ckpt_dir, saved_step, a, prefix, rep):
    """A resume from ckpt_dir's latest checkpoint with nothing left to train; returns its load_ms,
    the checkpoint's bytes on disk and the bytes still cached after the drop."""
    step_dir = latest_step_dir(ckpt_dir)
    files = [os.path.join(step_dir, f) for f in sorted(os.listdir(step_dir))]
    resident = drop_from_cache(files)
    sets = base_sets(a, prefix) + [f"train.steps={saved_step}", "checkpoint.dir=" + ckpt_dir, "checkpoint.interval=0"]
    rows = watched_train(build, run_dir, sets, f"resume repeat {rep}")
    resumed = [r for r in rows if r.get("event") == "resume" and "checkpoint" in r]
    if len(resumed) != 1 or resumed[0]["step"] != saved_step or step_rows(rows) or "load_ms" not in resumed[0]:
        sys.exit(f"resume repeat {rep}: expected one resume at step {saved_step} with load_ms and no step; got {rows}")
    return {"repeat": rep, "load_ms": resumed[0]["load_ms"], "bytes": sum(os.path.getsize(f) for f in files),
            "resident_after_drop": resident}


def run_repeat(a, work, prefix, variants, rep, got):
    """All variants once (order rotated per repeat), then a resume from the synchronous run's
    checkpoint and a disk probe of the checkpoint's size; the run directories are removed."""
    order = variants[rep % len(variants):] + variants[:rep % len(variants)]
    dirs = {}
    for name in order:
        dirs[name] = os.path.join(work, f"{name}_{rep}")
        r = run_variant(a.build, dirs[name], name, a, prefix, rep)
        v = got["variants"][name]
        v["step_ms"].append(r["step_ms"])
        v["wall_per_step_ms"].append(r["wall_per_step_ms"])
        v["saves"] += [] if name == "none" else r["saves"]
    resume_dir = os.path.join(work, f"resume_{rep}")
    load = measure_resume(a.build, resume_dir, os.path.join(dirs["sync"], "ck"), a.steps, a, prefix, rep)
    got["loads"].append(load)
    got["disk"].append(disk_speed(work, load["bytes"]))
    for d in [*dirs.values(), resume_dir]:
        shutil.rmtree(d)


def summarise_variant(name, v, none):
    """Medians and ratios of one variant; `none` is the raw record of the runs without checkpoints.
    Ratios are taken per repeat (runs close in time share the machine's load), then the median."""
    flat = [x for rep in v["step_ms"] for x in rep]
    s = {"median_step_ms": median(flat), "mean_step_ms": sum(flat) / len(flat),
         "median_wall_per_step_ms": median(v["wall_per_step_ms"]), "step_ms_per_repeat": v["step_ms"],
         "wall_per_step_ms_per_repeat": v["wall_per_step_ms"]}
    s["median_step_vs_none"] = median([median(a) / median(b) for a, b in zip(v["step_ms"], none["step_ms"])])
    s["wall_per_step_vs_none"] = median([a / b for a, b in zip(v["wall_per_step_ms"], none["wall_per_step_ms"])])
    if name == "none":
        return s
    for sv in v["saves"]:
        sv["blocking_over_total"] = sv["blocking_ms"] / sv["total_ms"]
        sv["save_gbps"] = sv["bytes"] / sv["total_ms"] / 1e6
    mid = [sv for sv in v["saves"] if not sv["final"]]
    s["saves"] = v["saves"]
    # Summed, so a long save weighs more than a short one (the loop lost that much time).
    s["blocking_over_total_mid_run"] = (sum(x["blocking_ms"] for x in mid) / sum(x["total_ms"] for x in mid)
                                        if mid else float("nan"))
    s["median_save_gbps"] = median([x["save_gbps"] for x in v["saves"]])
    return s


def summarise(got):
    out = {"variants": {name: summarise_variant(name, v, got["variants"]["none"])
                        for name, v in got["variants"].items()}}
    for l in got["loads"]:
        l["load_gbps"] = l["bytes"] / l["load_ms"] / 1e6
    out["load"] = {"runs": got["loads"], "median_load_ms": median([l["load_ms"] for l in got["loads"]]),
                   "median_load_gbps": median([l["load_gbps"] for l in got["loads"]])}
    out["disk"] = {"runs": got["disk"], "median_write_gbps": median([d["write_gbps"] for d in got["disk"]]),
                   "median_read_gbps": median([d["read_gbps"] for d in got["disk"]])}
    return out


def fmt_mb(b):
    return f"{b / 1e6:8.1f}"


def print_tables(s, a):
    """The per-save and per-variant tables."""
    print(f"\nsaves (every {a.interval} steps; 'final' = the save at the last step, left out of the ratio)")
    print(f"  {'variant':7s} {'rep':>3s} {'step':>5s} {'blocking ms':>12s} {'total ms':>10s} {'MB':>8s}"
          f" {'blocking/total':>15s} {'save GB/s':>10s}")
    for name, v in s["variants"].items():
        for sv in v.get("saves", []):
            print(f"  {name:7s} {sv['repeat']:3d} {sv['step']:5d} {sv['blocking_ms']:12.1f} {sv['total_ms']:10.1f}"
                  f" {fmt_mb(sv['bytes'])} {100 * sv['blocking_over_total']:14.1f}% {sv['save_gbps']:10.3f}"
                  + ("  final" if sv["final"] else ""))
    print(f"\nstep time (steps after the first {a.warmup} of each run; wall = between metrics rows, with"
          f" what save() blocked; 'vs none' = median over repeats of each repeat's ratio)")
    print(f"  {'variant':7s} {'median ms':>10s} {'mean ms':>9s} {'wall/step ms':>13s} {'median vs none':>15s}"
          f" {'wall vs none':>13s} {'blocking/total':>15s} {'save GB/s':>10s}")
    for name, v in s["variants"].items():
        extra = (f" {100 * v['blocking_over_total_mid_run']:14.1f}% {v['median_save_gbps']:10.3f}"
                 if name != "none" else "")
        print(f"  {name:7s} {v['median_step_ms']:10.1f} {v['mean_step_ms']:9.1f} {v['median_wall_per_step_ms']:13.1f}"
              f" {v['median_step_vs_none']:15.3f} {v['wall_per_step_vs_none']:13.3f}" + extra)


def print_io(s, fstype):
    """Load, disk and the one-line summary."""
    ld, dk = s["load"], s["disk"]
    print(f"\nload (resume, checkpoint dropped from the page cache; the resume record's load_ms):"
          f" median {ld['median_load_ms']:.0f} ms for {fmt_mb(ld['runs'][0]['bytes']).strip()} MB ="
          f" {ld['median_load_gbps']:.3f} GB/s")
    res = [l["resident_after_drop"] for l in ld["runs"]] + [d["resident_before_read"] for d in dk["runs"]]
    cached = "unknown (no fincore)" if None in res else f"{max(res) / 1e6:.1f} MB at most"
    print(f"disk ({fstype}, same directory): sequential write+fsync {dk['median_write_gbps']:.3f} GB/s, cold"
          f" sequential read {dk['median_read_gbps']:.3f} GB/s; still cached after each drop: {cached}")
    av = s["variants"]["async"]
    parts = [f"async blocking/total {100 * av['blocking_over_total_mid_run']:.1f}% (target <= 5%, goal 2%)",
             f"step time async/none {av['median_step_vs_none']:.3f} median, {av['wall_per_step_vs_none']:.3f} wall"]
    parts.append(f"sync wall/none {s['variants']['sync']['wall_per_step_vs_none']:.3f}")
    saves = ", ".join(f"{n} {v['median_save_gbps']:.3f}" for n, v in s["variants"].items() if n != "none")
    parts.append(f"save GB/s {saves}; load {ld['median_load_gbps']:.3f} GB/s")
    parts.append(f"disk write {dk['median_write_gbps']:.3f} GB/s, read {dk['median_read_gbps']:.3f} GB/s")
    print("\ncheckpoint bench: " + "; ".join(parts))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--dir", help="where the runs and checkpoints go (the disk measured); default: the temp dir")
    ap.add_argument("--out", help="write the JSON summary here")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--interval", type=int, default=3, help="checkpoint.interval of the checkpointing runs")
    ap.add_argument("--warmup", type=int, default=2, help="first steps of each run left out of step times")
    ap.add_argument("--repeats", type=int, default=2, help="each adds one run of every variant; more average out the noise better")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--keep", action="store_true", help="keep the work directory (otherwise removed, also on failure)")
    a = ap.parse_args()
    if not (1 <= a.warmup < a.steps and 0 < a.interval < a.steps and a.repeats >= 1):
        ap.error("need 1 <= --warmup < --steps, 0 < --interval < --steps and --repeats >= 1")
    if not os.access(os.path.join(a.build, "weft"), os.X_OK):
        ap.error(f"no weft binary in {a.build}; build it (make build) or point --build at a build directory")
    return a


def main():
    a = parse_args()
    variants = ["none", "async", "sync"]
    params = plan_parameters(a.build, a.seq_len)
    work = os.path.realpath(tempfile.mkdtemp(prefix="weft_ckbench_", dir=a.dir))
    try:
        fstype = subprocess.run(["df", "--output=fstype", work], capture_output=True, text=True).stdout.split()[-1]
        prefix = prepare_corpus(a.build, work, documents=max(300, a.steps * a.seq_len // 150), seed=2)
        print(f"checkpoint bench: GPT-2 {params / 1e6:.1f}M params + Adam state, fp32, seq {a.seq_len}, batch 1,"
              f" {a.threads} threads; {a.steps} steps, checkpoint every {a.interval}; variants {', '.join(variants)}"
              f" x {a.repeats} repeats (interleaved); work dir {work} ({fstype})")
        got = {"variants": {v: {"step_ms": [], "wall_per_step_ms": [], "saves": []} for v in variants},
               "loads": [], "disk": []}
        for rep in range(a.repeats):
            run_repeat(a, work, prefix, variants, rep, got)
    finally:
        if not a.keep:  # checkpoints are GBs; a failed run's log tail has been printed already
            shutil.rmtree(work)
    s = summarise(got)
    print_tables(s, a)
    print_io(s, fstype)
    s["setup"] = {"config": "configs/gpt2-124m.yaml", "parameters": params, "precision": "fp32",
                  "seq_len": a.seq_len, "global_batch_size": 1, "threads": a.threads, "steps": a.steps,
                  "interval": a.interval, "warmup": a.warmup, "repeats": a.repeats,
                  "work_dir": work, "filesystem": fstype,
                  "targets": {"blocking_over_total_max": 0.05, "blocking_over_total_goal": 0.02}}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(s, f, indent=1)
        print(f"checkpoint bench: summary written to {a.out}")


if __name__ == "__main__":
    main()
