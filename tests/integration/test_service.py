"""examples/service (weft_service), driven over HTTP with the standard library's client on
127.0.0.1 and a port the service picks: a job runs to completion and its status and /metrics report
it, its losses those of `weft train` for the same config; missing/wrong token -> 401; paths outside
the data root (.., absolute, through symlinks) -> 403; malformed, mistyped or oversized bodies ->
400/413; a queued job is cancelled and a running one stopped with a loadable checkpoint; bad
configs end `failed` with the one-line error while the server keeps answering; SIGKILL mid-job and
a restart list the earlier jobs and resume the interrupted one from its checkpoint, with the same
losses; 2,000 requests (1,500 status polls from 32 clients while a job trains, 500 hostile ones)
are all answered and leave the job's losses unchanged; SIGTERM stops it with exit 0.
Fine-tuning jobs (LoRA on a tiny random Llama made in the data root, as test_finetune.py makes it):
one runs to `finished` with the losses and export (loaded in transformers) of `weft finetune` with
the same options, bit for bit; one stopped by DELETE leaves a checkpoint and no export, and `weft
finetune` re-run on its run.dir resumes and ends the same; one interrupted by SIGKILL resumes when
the service restarts, the service answering while the job loads its checkpoint."""
import atexit
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import (BUILD, check, config, make_dataset, read_metrics, step_losses, tmpdir,  # noqa: E402
                       weft)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_finetune import conversations, make_model, write_jsonl  # noqa: E402  (the same tiny Llama and chat data)

SERVICE = os.path.join(BUILD, "weft_service")
TOKEN = "s3rvice-t0ken-" + "x" * 20
REF_STEPS = 24       # the reference run's steps; every compared job's first steps match it
DECAY = 100000       # optim.decay_steps shared by every job, so a job's first steps do not depend on its length
FT_STEPS = 16        # fine-tuning jobs' steps (LoRA rank 4 on the tiny Llama)
FT_SETS = ["train.seq_len=96", "train.global_batch_size=4", "train.micro_batch_size=2", "run.tensorboard=false",
           "run.peak_tflops=1", f"optim.decay_steps={DECAY}"]
FT_LR = "optim.lr=1e-3"
HANG = 300           # hang guard (seconds) for anything that waits; never a timing assertion


LIVE = []  # services still running; killed at exit so a failing check leaves none behind


def _kill_live():
    for p in LIVE:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_kill_live)


class Service:
    """A weft_service process; stderr goes to a log file, stdout must hold only the port."""

    def __init__(self, root, state, log_path, preexec_fn=None):
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen([SERVICE, "--root", root, "--state", state, "--port", "0", "--max-jobs", "1"],
                                  stdout=subprocess.PIPE, stderr=self.log, preexec_fn=preexec_fn,
                                  env=dict(os.environ, WEFT_SERVICE_TOKEN=TOKEN))
        LIVE.append(self.p)
        ready, _, _ = select.select([self.p.stdout], [], [], HANG)
        line = self.p.stdout.readline().decode() if ready else ""
        check(re.fullmatch(r"\d+\n", line) is not None, f"the service prints its bound port as one line ({line!r})")
        self.port = int(line)

    def request(self, method, path, body=None, token=TOKEN, headers=None, timeout=HANG):
        """(status, parsed JSON or text) of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if r.getheader("Content-Type", "").startswith("application/json"):
            return r.status, json.loads(data)
        return r.status, data.decode("utf-8", "replace")

    def job(self, job_id):
        status, view = self.request("GET", "/v1/jobs/" + job_id)
        assert status == 200, (status, view)
        return view

    def wait(self, job_id, until):
        """Polls the job until until(view) holds; returns the view."""
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            view = self.job(job_id)
            if until(view):
                return view
            time.sleep(0.05)
        check(False, f"job {job_id} reaches the awaited state within the hang guard ({self.job(job_id)})")

    def stop(self, sig):
        self.p.send_signal(sig)
        rc = self.p.wait(timeout=HANG)
        rest = self.p.stdout.read().decode()
        self.log.close()
        return rc, rest


def submit(svc, overrides=(), **fields):
    body = {"config": "tiny.yaml", "overrides": ["data.prefix=corpus", f"optim.decay_steps={DECAY}", *overrides]}
    for key, value in fields.items():  # None removes a default field
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    status, view = svc.request("POST", "/v1/jobs", body)
    check(status == 201, f"POST /v1/jobs {overrides} -> 201 ({status} {view})")
    return view


def run_dir(state, job_id):
    return os.path.join(state, "jobs", job_id, "run")


def same_losses(losses, ref, what):
    common = sorted(set(losses) & set(ref))
    check(common and all(losses[s] == ref[s] for s in common),
          f"{what}: losses of steps {common[:1]}..{common[-1:]} equal weft train's bit for bit")


def test_auth(svc):
    check(svc.request("GET", "/v1/jobs", token=None)[0] == 401, "no token -> 401")
    check(svc.request("GET", "/v1/jobs", token="wrong")[0] == 401, "a wrong token -> 401")
    check(svc.request("GET", "/v1/jobs", token=TOKEN[:-1] + "y")[0] == 401, "a token wrong in its last byte -> 401")
    check(svc.request("GET", "/metrics", token=TOKEN + "x")[0] == 401, "a longer token -> 401 (metrics too)")
    check(svc.request("GET", "/v1/jobs", token=None, headers={"Authorization": "Basic " + TOKEN})[0] == 401,
          "the token under another scheme -> 401")
    check(svc.request("GET", "/v1/jobs")[0] == 200, "the token -> 200")


def test_paths(svc, work):
    before = len(svc.request("GET", "/v1/jobs")[1]["jobs"])
    cases = [("a config through ..", {"config": "../outside/tiny.yaml"}),
             ("an absolute config outside", {"config": os.path.join(work, "outside", "tiny.yaml")}),
             ("a config through a symlink", {"config": "link.yaml"}),
             ("a config in a symlinked directory", {"config": "linkdir/tiny.yaml"}),
             ("data.prefix through ..", {"config": "tiny.yaml", "overrides": ["data.prefix=../outside/corpus"]}),
             ("data.prefix through a symlinked directory", {"config": "tiny.yaml", "overrides": ["data.prefix=linkdir/corpus"]}),
             ("a data.blend entry outside", {"config": "tiny.yaml", "overrides": ["data.blend=[1,corpus,1,/etc/x]"]}),
             ("a tokenizer directory outside", {"config": "tiny.yaml", "overrides": ["data.prefix=corpus", "data.tokenizer=hf:/etc"]}),
             ("checkpoint.init_from outside", {"config": "tiny.yaml", "overrides": ["data.prefix=corpus", "checkpoint.init_from=/tmp"]}),
             ("an inline config naming a path outside", {"config_yaml": "data:\n  prefix: ../outside/corpus\n"}),
             ("a fine-tuning model outside", {"kind": "finetune", "model": "hf:/etc", "data": "chat.jsonl"}),
             ("fine-tuning data through a symlink", {"kind": "finetune", "model": "hf:models", "data": "linkdir/chat.jsonl"}),
             ("run.dir", {"config": "tiny.yaml", "overrides": ["data.prefix=corpus", "run.dir=/tmp/mine"]}),
             ("fault injection", {"config": "tiny.yaml", "overrides": ["data.prefix=corpus", "fault.kill_rank=0", "fault.kill_step=1"]})]
    for what, body in cases:
        status, reply = svc.request("POST", "/v1/jobs", body)
        check(status == 403 and isinstance(reply, dict) and reply.get("error"), f"{what} -> 403 with a message ({status} {reply})")
    check(len(svc.request("GET", "/v1/jobs")[1]["jobs"]) == before, "no job was created for a refused request")


def test_bodies(svc):
    cases = [("malformed JSON", "{\"config\": ", 400), ("not an object", "[1, 2]", 400),
             ("a wrong type", {"config": 5}, 400), ("overrides not a list", {"config": "tiny.yaml", "overrides": "a=b"}, 400),
             ("an unknown field", {"config": "tiny.yaml", "priority": 1}, 400),
             ("both config and config_yaml", {"config": "tiny.yaml", "config_yaml": "a: 1"}, 400),
             ("no config", {"overrides": []}, 400), ("a finetune field on a train job", {"config": "tiny.yaml", "model": "m"}, 400),
             ("deep nesting", "[" * 5000 + "]" * 5000, 400), ("non-UTF-8", b'{"config": "\xff\xfe.yaml"}', 400),
             ("a body over 1 MiB", {"config": "tiny.yaml", "config_yaml": "#" * (1 << 20)}, 413)]
    for what, body, want in cases:
        status, reply = svc.request("POST", "/v1/jobs", body)
        check(status == want and isinstance(reply, dict) and reply.get("error"), f"{what} -> {want} with a message ({status} {reply})")


def test_failed_jobs(svc):
    view = submit(svc, config_yaml="model:\n  hidden_sise: 64\n", config=None)
    check(view["state"] == "failed" and "hidden_sise" in view["error"] and "\n" not in view["error"],
          f"an unknown key: the job is failed with the one-line error ({view['error']!r})")
    view = svc.wait(submit(svc, ["data.prefix=missing"])["id"], lambda v: v["state"] not in ("queued", "running"))
    check(view["state"] == "failed" and "missing" in view["error"] and "\n" not in view["error"],
          f"a missing dataset: the job ends failed with the one-line error ({view['error']!r})")
    check(svc.request("GET", "/v1/jobs")[0] == 200, "the server keeps answering after failed jobs")


def check_metrics(svc, job_id, steps):
    status, text = svc.request("GET", "/metrics")
    check(status == 200, "GET /metrics -> 200")
    helped, typed = set(re.findall(r"^# HELP (\w+) ", text, re.M)), set(re.findall(r"^# TYPE (\w+) (?:counter|gauge)$", text, re.M))
    samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    ok = all(re.fullmatch(r'(\w+)(\{\w+="[^"]*"(,\w+="[^"]*")*\})? \S+', ln) for ln in samples)
    names = {re.match(r"\w+", ln).group(0) for ln in samples}
    check(ok and names <= helped and names <= typed, "/metrics is Prometheus text: every sample named with HELP and TYPE lines")
    check(f'weft_job_step{{job="{job_id}",kind="train"}} {steps}' in text and
          f'weft_job_info{{job="{job_id}",kind="train",state="finished"}} 1' in text,
          f"/metrics reports job {job_id}: finished at step {steps}")


def test_completed_job(svc, state, ref):
    a = submit(svc, [f"train.steps={REF_STEPS}"])
    b = submit(svc, [f"train.steps={REF_STEPS}"])
    check(b["state"] == "queued", f"with --max-jobs 1 a second job waits in the queue ({b['state']})")
    status, view = svc.request("DELETE", "/v1/jobs/" + b["id"])
    check(status == 200 and view["state"] == "cancelled", f"DELETE on a queued job cancels it ({status} {view.get('state')})")
    check(svc.request("DELETE", "/v1/jobs/" + b["id"])[0] == 409, "DELETE on an ended job -> 409")
    check(svc.request("GET", "/v1/jobs/j999999")[0] == 404, "an unknown job -> 404")
    view = svc.wait(a["id"], lambda v: v["state"] not in ("queued", "running"))
    losses = step_losses(run_dir(state, a["id"]))
    check(view["state"] == "finished" and view["step"] == view["total_steps"] == REF_STEPS and view["loss"] == losses[REF_STEPS]
          and view["error"] == "" and view["last_checkpoint"] and view["eta_sec"] >= 0 and view["tokens_per_sec"] > 0,
          f"the job's status: finished at step {REF_STEPS}, its last loss, a checkpoint ({view})")
    same_losses(losses, ref, "the completed job")
    check_metrics(svc, a["id"], REF_STEPS)
    return a["id"]


def test_cancel(svc, state, prefix):
    c = submit(svc, ["train.steps=100000"])
    svc.wait(c["id"], lambda v: v["step"] >= 2)
    status, view = svc.request("DELETE", "/v1/jobs/" + c["id"])
    check(status == 200 and view["state"] in ("stopping", "stopped"), f"DELETE on a running job -> stopping ({view['state']})")
    view = svc.wait(c["id"], lambda v: v["state"] != "stopping")
    check(view["state"] == "stopped" and view["last_checkpoint"], f"the stopped job has a checkpoint ({view})")
    p = weft("eval", "--checkpoint", os.path.join(run_dir(state, c["id"]), "checkpoints"), "--data", prefix,
             "--max-batches", "2", check=False)
    check(p.returncode == 0 and "eval_loss=" in p.stdout, f"weft eval loads the cancelled job's checkpoint (exit {p.returncode})")


HOSTILE = [
    b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
    b"GET /v1/jobs HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nContent-Length: -5\r\n\r\n{}",
    b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nContent-Length: 99999999999999999999999\r\n\r\n{}",
    b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nContent-Length: 5000000\r\n\r\n{}",
    b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nContent-Length: 100\r\n\r\n{}",  # then EOF
    b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"BREW /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
    b"\x00\x01\x02garbage\xff\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v1/jobs HTTP/9.9\r\nAuthorization: Bearer TOKEN\r\n\r\n",
    b"GET /v1/jobs/../../../../etc/passwd HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
    b"GET /v1/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
    b"GET /v1/jobs/\xff\xfe HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
    b"GET /v1/jobs HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\x00\r\n\r\n",
    b"DELETE /v1/jobs/j000001%00 HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\n\r\n",
]


def hostile_bodies():
    """Authorized POSTs with bad bodies: (payload bytes)."""
    bodies = [b"[" * 100000, b'{"a":' * 50000, b'{"config": "\xff"}', b'{"config": "\\udc80"}', b"\xef\xbb\xbf{}",
              b'{"config": "../../etc/passwd"}', b'{"config": "/etc/passwd"}', b'{"config": "tiny.yaml", "overrides": [1]}',
              b'{"config": "tiny.yaml", "overrides": ["data.prefix=/etc/../etc/x"]}', b'{"kind": "finetune", "model": "/", "data": "/x"}',
              b"null", b'"str"', b"1e999999", b'{"config": null}', b""]
    return [b"POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nContent-Length: %d\r\n\r\n" % len(b) + b for b in bodies]


def raw_request(port, payload):
    """Sends bytes, returns (status line, response bytes); ('', ...) if nothing came back. The
    connection stays open for writing (httplib does not answer a half-closed one)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the server may answer (and close) before reading everything
        try:
            while True:
                head, sep, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"\r\nContent-Length: (\d+)", head)
                if sep and length and len(body) >= int(length.group(1)):
                    break
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    return data.split(b"\r\n", 1)[0].decode("latin-1"), data


def test_load(svc, state, ref):
    job = submit(svc, ["train.steps=100000"])
    job_id = job["id"]
    svc.wait(job_id, lambda v: v["state"] == "running" and v["step"] >= 1)
    hostile = [p.replace(b"TOKEN", TOKEN.encode()) for p in HOSTILE + hostile_bodies()]
    hostile = (hostile * (500 // len(hostile) + 1))[:500]
    lock = threading.Lock()
    bad, seen_states = [], set()

    def poll(i):
        path = {0: "/metrics", 10: "/v1/jobs"}.get(i % 20, "/v1/jobs/" + job_id)
        try:
            status, body = svc.request("GET", path)
            ok = status == 200 and (not path.startswith("/v1/jobs/") or body["id"] == job_id)
            with lock:
                if path.startswith("/v1/jobs/"):
                    seen_states.add(body["state"])
                if not ok:
                    bad.append(f"poll {path}: {status}")
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            with lock:
                bad.append(f"poll {path}: {e!r}")

    def attack(i):
        line, data = raw_request(svc.port, hostile[i])
        with lock:
            if not re.match(r"HTTP/1\.[01] [45]\d\d ", line):
                bad.append(f"hostile #{i % len(HOSTILE + hostile_bodies())}: {line!r}")
            if b"root:" in data:
                bad.append(f"hostile #{i}: answered with a file's contents")

    start_step = svc.job(job_id)["step"]
    with ThreadPoolExecutor(max_workers=40) as pool:
        futures = [pool.submit(poll, i) for i in range(1500)] + [pool.submit(attack, i) for i in range(500)]
        for f in futures:
            f.result(timeout=HANG)
    check(svc.p.poll() is None, "the service is alive after 2,000 requests")
    check(not bad, f"all 1,500 polls answered 200 and all 500 hostile requests answered 4xx/5xx ({len(bad)} not: {bad[:5]})")
    view = svc.job(job_id)
    check(view["state"] == "running" and view["step"] > start_step and seen_states == {"running"},
          f"the job trained throughout (steps {start_step} -> {view['step']}, states seen {sorted(seen_states)})")
    svc.request("DELETE", "/v1/jobs/" + job_id)
    svc.wait(job_id, lambda v: v["state"] == "stopped")
    same_losses(step_losses(run_dir(state, job_id)), ref, "the job trained under load")


def test_restart(svc, root, state, log_path, ref, earlier):
    r = submit(svc, [f"train.steps={REF_STEPS}", "checkpoint.interval=4"])
    svc.wait(r["id"], lambda v: v["state"] == "running" and v["last_checkpoint"] and v["step"] >= 6)
    svc.p.kill()
    svc.p.wait(timeout=HANG)
    svc.log.close()
    before = step_losses(run_dir(state, r["id"]))
    check(max(before) < REF_STEPS, f"killed mid-job at step {max(before)} of {REF_STEPS}")
    svc = Service(root, state, log_path)
    listed = {v["id"]: v["state"] for v in svc.request("GET", "/v1/jobs")[1]["jobs"]}
    check(all(listed.get(i) == s for i, s in earlier.items()) and listed.get(r["id"]) in ("queued", "running"),
          f"the restarted service lists the earlier jobs with their states and re-queues the interrupted one ({listed})")
    view = svc.wait(r["id"], lambda v: v["state"] not in ("queued", "running"))
    check(view["state"] == "finished" and view["step"] == REF_STEPS and view["starts"] == 2,
          f"the interrupted job resumes and finishes ({view['state']} at {view['step']}, started {view['starts']} times)")
    resumes = [x for x in read_metrics(run_dir(state, r["id"])) if x.get("event") == "resume" and "checkpoint" in x]
    check(len(resumes) == 1 and 4 <= resumes[0]["step"] <= max(before),
          f"it resumed from its checkpoint (resume record {resumes})")
    same_losses(step_losses(run_dir(state, r["id"])), ref, "the resumed job")
    return svc


def test_sigterm(svc, state):
    s = submit(svc, ["train.steps=100000"])
    svc.wait(s["id"], lambda v: v["step"] >= 1)
    rc, rest = svc.stop(signal.SIGTERM)
    with open(os.path.join(state, "jobs", s["id"], "job.json")) as f:
        record = json.load(f)
    check(rc == 0 and rest == "" and record["state"] == "interrupted" and record["last_checkpoint"],
          f"SIGTERM: exit 0, nothing more on stdout, the running job checkpointed and recorded interrupted "
          f"(rc {rc}, {record['state']}, {record['last_checkpoint']!r})")

def cli_finetune(root, run, steps, sets=()):
    """`weft finetune` on the data root's model and chat data (their real paths, as the service
    resolves them, so that a re-run on a service job's run.dir finds its base and data unchanged)."""
    args = ["finetune", "--model", "hf:" + os.path.realpath(os.path.join(root, "base_hf")),
            "--data", os.path.realpath(os.path.join(root, "chat.jsonl")), "--lora-rank", "4", "--set", "run.dir=" + run]
    for s in [*FT_SETS, f"train.steps={steps}", *sets]:
        args += ["--set", s]
    return weft(*args, timeout=HANG)


def submit_finetune(svc, steps, overrides=(), **fields):
    body = {"kind": "finetune", "model": "hf:base_hf", "data": "chat.jsonl", "lora_rank": 4,
            "overrides": [*FT_SETS, f"train.steps={steps}", *overrides], **fields}
    status, view = svc.request("POST", "/v1/jobs", body)
    check(status == 201 and view["kind"] == "finetune", f"POST a finetune job {overrides} -> 201 ({status} {view})")
    return view


def same_export(out, ref_out, what):
    """The export loads in transformers and its tensors equal `weft finetune`'s export bit for bit."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(out)
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    got = {k: v for f in files for k, v in load_file(os.path.join(out, f)).items()}
    want = {k: v for f in sorted(os.listdir(ref_out)) if f.endswith(".safetensors")
            for k, v in load_file(os.path.join(ref_out, f)).items()}
    params = dict(model.named_parameters())
    check(got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got) and
          all(torch.equal(params[k], got[k]) for k in got if k in params),
          f"{what}: the export in {out} loads in transformers and equals weft finetune's tensor for tensor ({files})")


def test_finetune(svc, state, ref_dir):
    """A finetune job runs to the end: status, metrics, losses and export as `weft finetune`'s."""
    ref = step_losses(ref_dir)
    job = submit_finetune(svc, FT_STEPS, [FT_LR])
    view = svc.wait(job["id"], lambda v: v["state"] not in ("queued", "running"))
    run = run_dir(state, job["id"])
    out = os.path.join(run, "hf")
    losses = step_losses(run)
    check(view["state"] == "finished" and view["error"] == "" and view["step"] == view["total_steps"] == FT_STEPS and
          view["loss"] == losses.get(FT_STEPS) and view["last_checkpoint"] and view.get("output") == os.path.realpath(out),
          f"the finetune job's status: finished at step {FT_STEPS}, its last loss, a checkpoint, the export ({view})")
    check(losses == ref, f"the finetune job's losses equal weft finetune's bit for bit ({losses} vs {ref})")
    same_export(out, os.path.join(ref_dir, "hf"), "the finetune job")
    text = svc.request("GET", "/metrics")[1]
    jid = job["id"]
    check(f'weft_job_info{{job="{jid}",kind="finetune",state="finished"}} 1' in text and
          f'weft_job_step{{job="{jid}",kind="finetune"}} {FT_STEPS}' in text, "/metrics reports the finetune job")


def test_finetune_stop(svc, root, state, ref_dir):
    """DELETE mid-finetune leaves a checkpoint and no export; `weft finetune` re-run on the job's
    run.dir resumes from it and ends with the reference's losses and export. The job's learning
    rate comes from its inline config (a config's keys override the fine-tuning defaults)."""
    job = submit_finetune(svc, 100000, config_yaml=f"optim:\n  lr: {FT_LR.split('=')[1]}\n")
    svc.wait(job["id"], lambda v: v["step"] >= 2)
    status, view = svc.request("DELETE", "/v1/jobs/" + job["id"])
    check(status == 200 and view["state"] in ("stopping", "stopped"), f"DELETE on a running finetune job -> stopping ({view})")
    view = svc.wait(job["id"], lambda v: v["state"] != "stopping")
    run = run_dir(state, job["id"])
    stopped = view["step"]
    check(view["state"] == "stopped" and view["last_checkpoint"] and "output" not in view and
          not os.path.exists(os.path.join(run, "hf")), f"the stopped finetune job has a checkpoint and no export ({view})")
    check(stopped < FT_STEPS, f"stopped mid-run at step {stopped} of the reference's {FT_STEPS}")
    ref = step_losses(ref_dir)
    check(step_losses(run) == {s: ref[s] for s in range(1, stopped + 1)},
          f"the stopped job's losses equal weft finetune's with {FT_LR} (its config's lr, not the default)")
    cli_finetune(root, run, FT_STEPS, ["checkpoint.dir=" + os.path.join(run, "checkpoints"), FT_LR])
    resumes = [x for x in read_metrics(run) if x.get("event") == "resume" and "checkpoint" in x]
    check(len(resumes) == 1 and resumes[0]["step"] == stopped,
          f"weft finetune on the stopped job's run.dir resumes from its checkpoint (resume records {resumes})")
    check(step_losses(run) == ref, "the stopped and resumed finetune job's losses equal weft finetune's")
    same_export(os.path.join(run, "hf"), os.path.join(ref_dir, "hf"), "the stopped and resumed finetune job")


def test_finetune_restart(svc, root, state, log_path, ref_dir):
    """The service killed mid-finetune and restarted resumes the job from its checkpoint."""
    job = submit_finetune(svc, FT_STEPS, [FT_LR, "checkpoint.interval=2"])
    svc.wait(job["id"], lambda v: v["state"] == "running" and v["last_checkpoint"] and v["step"] >= 3)
    svc.p.kill()
    svc.p.wait(timeout=HANG)
    svc.log.close()
    run = run_dir(state, job["id"])
    before = max(step_losses(run))
    check(before < FT_STEPS, f"killed mid-finetune at step {before} of {FT_STEPS}")
    # The resumed job's Trainer, while it loads its checkpoint, is held in the read of a FIFO put in
    # place of the checkpoint's manifest (read once, there): the service must answer meanwhile.
    ckpt = os.path.join(run, "checkpoints", open(os.path.join(run, "checkpoints", "latest")).read().strip())
    held = os.path.join(ckpt, "manifest.json")
    with open(held, "rb") as f:
        content = f.read()
    os.remove(held)
    os.mkfifo(held)
    svc = Service(root, state, log_path)
    fd, deadline = None, time.monotonic() + HANG
    while fd is None and time.monotonic() < deadline:
        try:
            fd = os.open(held, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until the job opens it to read
        except OSError:
            time.sleep(0.05)
    check(fd is not None, "the resumed finetune job reads its checkpoint")
    try:
        # A hang guard: the answer takes milliseconds unless the request waits for the job.
        status, view = svc.request("GET", "/v1/jobs/" + job["id"], timeout=HANG / 5)
        metrics = svc.request("GET", "/metrics", timeout=HANG / 5)[0]
    except OSError as e:
        status, view, metrics = None, repr(e), None
    check(status == 200 and metrics == 200 and view["state"] == "running",
          f"while a finetune job loads its checkpoint the service answers its status and /metrics ({status} {view})")
    with open(held + ".tmp", "wb") as f:  # later readers find the file itself; this one gets it through the FIFO
        f.write(content)
    os.replace(held + ".tmp", held)
    os.set_blocking(fd, True)
    os.write(fd, content)
    os.close(fd)
    view = svc.wait(job["id"], lambda v: v["state"] not in ("queued", "running"))
    resumes = [x for x in read_metrics(run) if x.get("event") == "resume" and "checkpoint" in x]
    check(view["state"] == "finished" and view["starts"] == 2 and len(resumes) == 1 and 2 <= resumes[0]["step"] <= before,
          f"the interrupted finetune job resumes from its checkpoint and finishes ({view['state']}, {resumes})")
    check(step_losses(run) == step_losses(ref_dir), "the resumed finetune job's losses equal weft finetune's")
    same_export(os.path.join(run, "hf"), os.path.join(ref_dir, "hf"), "the resumed finetune job")
    return svc


def test_startup_errors(root, state):
    env = {k: v for k, v in os.environ.items() if k != "WEFT_SERVICE_TOKEN"}
    for what, args, extra_env, needle in [
            ("no token", ["--root", root, "--state", state], {}, "WEFT_SERVICE_TOKEN"),
            ("a root that is not a directory", ["--root", os.path.join(root, "nope"), "--state", state],
             {"WEFT_SERVICE_TOKEN": TOKEN}, "--root"),
            ("an unknown flag", ["--root", root, "--state", state, "--prot", "1"], {"WEFT_SERVICE_TOKEN": TOKEN}, "--prot")]:
        p = subprocess.run([SERVICE, *args], capture_output=True, text=True, env=dict(env, **extra_env), timeout=HANG)
        lines = p.stderr.strip().splitlines()
        check(p.returncode not in (0, -6, -11) and len(lines) == 1 and needle in p.stderr and p.stdout == "",
              f"{what}: the service refuses to start with one line naming {needle} (exit {p.returncode}: {p.stderr.strip()!r})")


def test_hardening(svc, root, state, work):
    """What a tester found (issue 11): each check failed on the service before its fix."""
    auth = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n%s\r\n"
    # httplib refuses a raw NUL in a header (400) but decodes %00 into one: the value must not end there.
    for what, value, want in [("a NUL", b"\x00anything", (" 400 ", " 401 ")), ("%00", b"%00anything", (" 401 ",))]:
        status, _ = raw_request(svc.port, auth % (b"Authorization: Bearer " + TOKEN.encode() + value + b"\r\n"))
        check(any(w in status for w in want), f"the token followed by {what} and more bytes -> refused ({status})")
    twice = auth % (b"Authorization: Bearer %s\r\nAuthorization: Bearer wrong\r\n" % TOKEN.encode())
    status, _ = raw_request(svc.port, twice)
    check(" 401 " in status, f"two Authorization headers -> 401 ({status})")

    # A chunked body past 1 MiB (4 MiB offered): 413, not read to its end nor handed to the parser.
    chunk = b"#" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(64)) + b"0\r\n\r\n"
    status, reply = raw_request(svc.port, b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                                b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    check(" 413 " in status, f"a chunked body over 1 MiB -> 413 ({status})")

    # An error quoting a 20,000-byte key: stored and returned clipped to 2,000 bytes and an ellipsis.
    view = submit(svc, config_yaml="model:\n  hidden_size: " + "k" * 20000 + "\n", config=None)
    err = view["error"].encode()
    check(view["state"] == "failed" and len(err) <= 2000 + 3 and view["error"].endswith("\u2026"),
          f"a long error is clipped ({len(err)} bytes: {view['error'][:80]!r})")

    # Job directories without a record (left by hand, or by a failed write) keep their ids.
    last = max(int(v["id"][1:]) for v in svc.request("GET", "/v1/jobs")[1]["jobs"])
    for n in (last + 1, last + 2):
        os.makedirs(os.path.join(state, "jobs", "j%06d" % n, "run"))
    view = submit(svc, config_yaml="model:\n  hidden_sise: 64\n", config=None)
    check(view["id"] == "j%06d" % (last + 3), f"a new job skips existing job directories ({view['id']})")

    # A second service on the same --state, or on a port in use: refused with one line, exit 2.
    for what, args, needle in [("the same --state", ["--state", state, "--port", "0"], state),
                               ("a port in use", ["--state", os.path.join(work, "state2"), "--port", str(svc.port)],
                                str(svc.port))]:
        p = subprocess.run([SERVICE, "--root", root, *args], capture_output=True, text=True,
                           env=dict(os.environ, WEFT_SERVICE_TOKEN=TOKEN), timeout=HANG)
        lines = p.stderr.strip().splitlines()
        check(p.returncode == 2 and len(lines) == 1 and needle in p.stderr and p.stdout == "",
              f"{what}: a second service exits 2 with one line naming it (exit {p.returncode}: {p.stderr.strip()!r})")

    # A record that cannot be written (a file-size limit of 0: EFBIG, as ENOSPC would): 507, no job.
    import resource
    full_state = os.path.join(work, "state_full")
    full = Service(root, full_state, os.devnull, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)))
    status, reply = full.request("POST", "/v1/jobs", {"config_yaml": "model:\n  hidden_sise: 64\n"})
    check(status == 507 and "recorded" in reply.get("error", ""), f"an unwritable job record -> 507 ({status} {reply})")
    check(full.request("GET", "/v1/jobs")[1]["jobs"] == [] and os.listdir(os.path.join(full_state, "jobs")) == [],
          "the refused job is neither listed nor left on disk")
    full.stop(signal.SIGTERM)


def main():
    check(os.path.exists(SERVICE), f"{SERVICE} is built (cmake --build build --target weft_service; needs libcpp-httplib-dev)")
    work = tmpdir("service")
    root, state, outside = (os.path.join(work, d) for d in ("root", "state", "outside"))
    for d in (root, outside):
        os.makedirs(d)
    prefix = make_dataset(root, documents=60)
    for d in (root, outside):
        shutil.copy(config("llama-tiny.yaml"), os.path.join(d, "tiny.yaml"))
    make_dataset(outside, documents=10)
    make_model(root)  # root/base_hf: a tiny random Llama with its tokenizer and chat template
    write_jsonl(os.path.join(root, "chat.jsonl"), conversations(24, 2))
    os.symlink(os.path.join(outside, "tiny.yaml"), os.path.join(root, "link.yaml"))
    os.symlink(outside, os.path.join(root, "linkdir"))
    weft("train", "--config", os.path.join(root, "tiny.yaml"), "--set", "data.prefix=" + prefix,
         "--set", "run.dir=" + os.path.join(work, "ref"), "--set", f"train.steps={REF_STEPS}", "--set", f"optim.decay_steps={DECAY}")
    ref = step_losses(os.path.join(work, "ref"))
    ft_ref = os.path.join(work, "ft_ref")
    cli_finetune(root, ft_ref, FT_STEPS, [FT_LR])

    test_startup_errors(root, state)
    log_path = os.path.join(work, "service.log")
    svc = Service(root, state, log_path)
    test_auth(svc)
    test_paths(svc, work)
    test_bodies(svc)
    test_failed_jobs(svc)
    test_hardening(svc, root, state, work)
    done = test_completed_job(svc, state, ref)
    test_cancel(svc, state, prefix)
    test_load(svc, state, ref)
    earlier = {v["id"]: v["state"] for v in svc.request("GET", "/v1/jobs")[1]["jobs"]}
    check(earlier[done] == "finished", "the completed job is listed finished")
    svc = test_restart(svc, root, state, log_path, ref, earlier)
    test_finetune(svc, state, ft_ref)
    test_finetune_stop(svc, root, state, ft_ref)
    svc = test_finetune_restart(svc, root, state, log_path, ft_ref)
    test_sigterm(svc, state)
    print("test_service: all passed")


if __name__ == "__main__":
    main()
