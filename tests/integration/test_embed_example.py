"""examples/embed_trainer.cpp, built as weft_example_embed, embeds weft::Trainer as README's Embed
section shows: it trains through the library, reports each step through on_step, stops from
another thread with request_stop() after its step budget, and leaves a committed checkpoint of
the step it stopped at; its losses are bitwise those of `weft train` with the same config."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD, check, config, make_dataset, read_metrics, run, step_losses, tmpdir, weft  # noqa: E402

EXAMPLE = os.path.join(BUILD, "weft_example_embed")
STOP_AFTER = 3


def main():
    work = tmpdir("embed")
    prefix = make_dataset(work, documents=60)
    # The example writes to runs/embedded under its working directory.
    p = run([EXAMPLE, config("llama-tiny.yaml"), prefix, str(STOP_AFTER)], cwd=work)
    steps = [(int(m.group(1)), float(m.group(2)))
             for m in re.finditer(r"^\[service\] step (\d+) loss ([0-9.]+) \(\d+ tokens/s\)$", p.stdout, re.M)]
    stop = re.search(r"^\[service\] stopped at step (\d+) of (\d+)$", p.stdout, re.M)
    k = int(stop.group(1)) if stop else -1
    # request_stop() comes once status().step reaches the budget; the step then in flight finishes.
    check(stop is not None and STOP_AFTER <= k < int(stop.group(2)) and [s for s, _ in steps] == list(range(1, k + 1)),
          f"the example reports steps 1..{k} through on_step and stops at step {k} of 8 (budget {STOP_AFTER}): "
          f"{p.stdout.strip().splitlines()[-1:]}")
    run_dir = os.path.join(work, "runs", "embedded")
    with open(os.path.join(run_dir, "checkpoints", "latest")) as f:
        latest = f.read().strip()
    check(latest == f"step_{k:08d}" and os.path.exists(os.path.join(run_dir, "checkpoints", latest, "manifest.json")),
          f"request_stop() leaves a committed checkpoint of step {k}: {latest}")

    cli = os.path.join(work, "cli")
    weft("train", "--config", config("llama-tiny.yaml"), "--set", "data.prefix=" + prefix, "--set", "run.dir=" + cli,
         "--set", f"train.steps={k}", "--set", "optim.decay_steps=8")
    a, b = step_losses(run_dir), step_losses(cli)
    check(sorted(a) == list(range(1, k + 1)) and all(a[s] == b[s] for s in a),
          f"the embedded trainer's losses are bitwise those of weft train ({a.get(1)} ...)")
    check(all(f"{a[s]:.4f}" == f"{loss:.4f}" for s, loss in steps), "on_step reports the losses metrics.jsonl records")
    check(not any(r.get("event") == "resume" and "checkpoint" in r for r in read_metrics(run_dir)), "a fresh run, not a resume")
    print("test_embed_example: all passed")


if __name__ == "__main__":
    main()
