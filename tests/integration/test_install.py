"""The installed library, as an outside program uses it: `cmake --install` into a fresh prefix
puts libweft.so, the public headers (only <weft/...>, which include nothing but the standard
library and each other) and the CMake package there; tests/install_consumer, a separate CMake
project, finds it with find_package(Weft), compiles with no LibTorch/glog/gflags/yaml-cpp include
path and links Weft::weft alone. Its program then
- trains the tiny Llama on a thread of its own and stops it from another thread with
  request_stop(): it stops at a step past the budget with a committed checkpoint (on_checkpoint,
  status().last_checkpoint), status "stopped"; its losses equal `weft train`'s bit for bit;
  nothing of the library reaches stdout (the log sink receives its records);
- runs two jobs (different seeds, LoRA with dropout) one after another, then both at once on two
  threads: each concurrent job's losses equal its lone run's bit for bit (each job draws from its
  own generator)."""
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD, REPO, check, config, make_dataset, run, step_losses, tmpdir, weft  # noqa: E402

STOP_AFTER = 3
STD_HEADER = re.compile(r"^[a-z_0-9]+$")  # <string>, <cstdint>, ...


def public_headers_ok(include_dir):
    bad, names = [], []
    for root, _, files in os.walk(include_dir):
        for f in files:
            path = os.path.join(root, f)
            names.append(os.path.relpath(path, include_dir))
            for line in open(path):
                m = re.match(r'\s*#\s*include\s*[<"]([^>"]+)[>"]', line)
                if m and not (m.group(1).startswith("weft/") or STD_HEADER.match(m.group(1))):
                    bad.append(f"{names[-1]}: {m.group(1)}")
    return sorted(names), bad


def main():
    work = tmpdir("install")
    prefix = os.path.join(work, "prefix")
    run(["cmake", "--install", BUILD, "--prefix", prefix])
    names, bad = public_headers_ok(os.path.join(prefix, "include"))
    check(names and all(n.startswith("weft/") for n in names) and not bad,
          f"the prefix holds only the public headers {names}, which include nothing outside the standard library "
          f"and <weft/...> ({bad})")
    check(os.path.exists(os.path.join(prefix, "lib", "cmake", "Weft", "WeftConfig.cmake")), "the CMake package is installed")

    # A separate project: nothing from this build's cache or environment leaks into it.
    build = os.path.join(work, "consumer")
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_PREFIX_PATH", "Torch_DIR")}
    env["CMAKE_PREFIX_PATH"] = prefix
    for args in (["cmake", "-S", os.path.join(REPO, "tests", "install_consumer"), "-B", build, "-G", "Ninja",
                  "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", build]):
        p = run(args, check=False, env=env)
        check(p.returncode == 0, f"{' '.join(args[:2])} of the consumer project exits 0: {(p.stdout + p.stderr)[-1500:]}")
    with open(os.path.join(build, "compile_commands.json")) as f:
        command = json.load(f)[0]["command"]
    flags = command.split()
    includes = [f + " " + flags[i + 1] for i, f in enumerate(flags) if f in ("-I", "-isystem")] + \
        [f for f in flags if f.startswith("-I") and f != "-I"]
    leaked = [i for i in includes if any(w in i for w in ("torch", "glog", "gflags", "yaml", "nlohmann", REPO))]
    check(not leaked and includes == ["-isystem " + os.path.join(prefix, "include")],
          f"the consumer compiles against the prefix's headers alone (leaked: {leaked}): {command}")
    consumer = os.path.join(build, "weft_consumer")

    data = make_dataset(work, documents=60)
    run_dir = os.path.join(work, "stop")
    p = run([consumer, "stop", config("llama-tiny.yaml"), data, run_dir, str(STOP_AFTER)])
    losses = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^loss (\d+) (\S+)$", p.stdout, re.M)}
    st = re.search(r"^status (\w+) step (\d+) of (\d+) checkpoints (\d+) last_checkpoint (\S+) log_records (\d+)",
                   p.stdout, re.M)
    k = int(st.group(2)) if st else -1
    check(st and st.group(1) == "stopped" and STOP_AFTER <= k < int(st.group(3)) and sorted(losses) == list(range(1, k + 1)),
          f"request_stop() from the host's thread stops the job at step {k} (budget {STOP_AFTER}), state "
          f"{st.group(1) if st else None}, every step reported: {p.stdout.strip().splitlines()[-1:]}")
    want = os.path.join(run_dir, "checkpoints", f"step_{k:08d}")
    check(int(st.group(4)) >= 1 and st.group(5) == want and os.path.exists(os.path.join(want, "manifest.json")),
          f"the stop leaves a committed checkpoint, reported by on_checkpoint and status ({st.group(5)})")
    others = [l for l in p.stdout.splitlines() if not re.match(r"^(loss|status) ", l)]
    check(not others and int(st.group(6)) > 0,
          f"the library writes nothing to stdout; its {st.group(6)} log records went to the host's sink ({others[:3]})")
    cli = os.path.join(work, "cli")
    weft("train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + data, "--set", "run.dir=" + cli,
         "--set", "train.seed=1234", "--set", f"train.steps={k}", "--set", "optim.decay_steps=8")
    ref = step_losses(cli)
    check(all(losses[s] == ref[s] for s in losses), f"the embedded job's losses equal weft train's bit for bit "
          f"({losses.get(1)!r} vs {ref.get(1)!r} ...)")

    p = run([consumer, "concurrent", config("llama-tiny.yaml"), data, os.path.join(work, "jobs"), "train.steps=4",
             "lora.rank=4", "lora.dropout=0.2"])
    check("seeds differ: yes" in p.stdout and p.stdout.strip().endswith("same"),
          f"two jobs at once on two threads train exactly as each alone: {p.stdout.strip()}")
    shutil.rmtree(build, ignore_errors=True)
    print("test_install: all passed")


if __name__ == "__main__":
    main()
