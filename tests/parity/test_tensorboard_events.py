# Parity: event files written by Weft's TensorBoardWriter, read back by TensorBoard's own code —
# its TFRecord reader (which checks every CRC), the legacy EventAccumulator and the plugin
# EventAccumulator that the TensorBoard server uses (scalars migrated to tensors).
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.util import tensor_util

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD  # noqa: E402

TOOL = os.path.join(BUILD, "tests", "weft_io_tool")


def expected_scalars():
    """(tag, step, value) in the order a training loop would log them; steps never go back."""
    rng = np.random.default_rng(1234)
    out = []
    for step in range(60):
        out.append(("loss", step, float(10.0 / (step + 1) + rng.normal() * 1e-3)))
        out.append(("lr", step, 3e-4 * min(1.0, step / 10)))
        out.append(("train/grad_norm", step, float(rng.lognormal())))
        if step % 10 == 0:
            out.append(("eval/loss ünïcode", step, float(rng.uniform(-1e6, 1e6))))
    for i, v in enumerate([0.0, -0.0, 1e-30, -3.5e30, float("inf"), float("-inf"), float("nan")]):
        out.append(("edge", 100 + i, v))
    out.append(("big_step", 2**40 + 3, 1.0))
    out.append(("big_step", 2**62, 2.0))
    return out


def f32(v):
    return float(np.float32(v))


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def run_tool(logdir, scalars):
    lines = []
    for i, (tag, step, value) in enumerate(scalars):
        lines.append(f"{tag}\t{step}\t{value!r}")
        if i % 50 == 49:
            lines.append("flush")
    res = subprocess.run([TOOL, "tb-write", logdir], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, encoding="utf-8")
    assert res.returncode == 0, f"weft_io_tool failed: {res.stderr}"
    return res.stdout.strip()


def check_records(path, scalars):
    """Every record passes TensorBoard's CRC checks; events decode to exactly what was logged."""
    reader = pywrap_tensorflow.PyRecordReader_New(path, 0, "")
    events = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        events.append(event_pb2.Event.FromString(reader.record()))
    assert events[0].file_version == "brain.Event:2", events[0]
    body = events[1:]
    assert len(body) == len(scalars), (len(body), len(scalars))
    for ev, (tag, step, value) in zip(body, scalars):
        assert len(ev.summary.value) == 1, ev
        v = ev.summary.value[0]
        assert (v.tag, ev.step) == (tag, step), (v.tag, ev.step, tag, step)
        assert same(v.simple_value, f32(value)), (tag, step, v.simple_value, value)
        assert abs(ev.wall_time - events[0].wall_time) < 600, ev.wall_time
    print(f"records: {len(events)} TFRecords pass TensorBoard's CRC checks; "
          f"first is file_version brain.Event:2; {len(body)} scalar events decode exactly")


def group(scalars):
    by_tag = {}
    for tag, step, value in scalars:
        by_tag.setdefault(tag, []).append((step, f32(value)))
    return by_tag


def check_legacy_accumulator(logdir, scalars):
    acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    expected = group(scalars)
    assert sorted(acc.Tags()["scalars"]) == sorted(expected), acc.Tags()["scalars"]
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert len(got) == len(points), (tag, len(got), len(points))
        for (gs, gv), (s, v) in zip(got, points):
            assert gs == s and same(gv, v), (tag, gs, gv, s, v)
    print(f"event_accumulator: {len(expected)} tags, {len(scalars)} scalars equal "
          f"(tag, step, float32 value)")


def check_plugin_accumulator(logdir, scalars):
    acc = plugin_event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    expected = group(scalars)
    assert sorted(acc.Tags()["tensors"]) == sorted(expected), acc.Tags()["tensors"]
    for tag, points in expected.items():
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars", tag
        got = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        assert len(got) == len(points), (tag, len(got), len(points))
        for (gs, gv), (s, v) in zip(got, points):
            assert gs == s and same(gv, v), (tag, gs, gv, s, v)
    print(f"plugin_event_accumulator: {len(expected)} tags seen by the scalars plugin, values equal")


def main():
    assert os.path.exists(TOOL), f"{TOOL} not found: build it (ninja weft_io_tool) or set WEFT_BUILD_DIR"
    scalars = expected_scalars()
    with tempfile.TemporaryDirectory() as tmp:
        logdir = os.path.join(tmp, "run", "tb")
        path = run_tool(logdir, scalars)
        name = os.path.basename(path)
        assert os.path.dirname(path) == logdir and name.startswith("events.out.tfevents."), path
        assert name.endswith(f".{os.uname().nodename}.{name.split('.')[-2]}.weft"), name
        print(f"weft wrote {name} ({os.path.getsize(path)} bytes)")
        check_records(path, scalars)
        check_legacy_accumulator(logdir, scalars)
        check_plugin_accumulator(logdir, scalars)
    print("parity_tensorboard_events: OK")


if __name__ == "__main__":
    main()
