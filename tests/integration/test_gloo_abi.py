"""Weft compiles against Debian's gloo headers but must run LibTorch's own gloo (see
parallel/comm.h). Checks the built binaries: no libgloo is loaded, no gloo code or vtable is
emitted into them (which could shadow LibTorch's at run time), and every ProcessGroupGloo symbol
they use is defined by LibTorch. The process-group code is in libweft.so, which must use
ProcessGroupGloo; the executables link it."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pyutil"))
from weft_test import BUILD, WEFT, check  # noqa: E402

LIBWEFT = os.path.join(BUILD, "libweft.so")
BINARIES = [LIBWEFT, WEFT, os.path.join(BUILD, "tests", "weft_comm_tool")]
# Names that would mean gloo's layouts or virtuals got compiled into Weft.
FORBIDDEN = re.compile(r"^(?:(?:vtable|typeinfo|typeinfo name|VTT|construction vtable) for )?"
                       r"(?:gloo::|c10d::ProcessGroupGloo::(?:GlooStore|AsyncWork|SendWork|RecvWork)\b)"
                       r"|^(?:vtable|typeinfo) for c10d::ProcessGroupGloo\b")


def lines(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()


def main():
    torch_cpu = None
    for exe in BINARIES:
        ldd = lines("ldd", exe)
        check(not any("libgloo" in l for l in ldd), f"{os.path.basename(exe)}: no libgloo among its libraries")
        torch_cpu = torch_cpu or next(l.split("=>")[1].split()[0] for l in ldd if "libtorch_cpu.so" in l)
        defined = [l.split(" ", 2)[2] for l in lines("nm", "-C", "--defined-only", exe) if l.count(" ") >= 2]
        bad = [s for s in defined if FORBIDDEN.search(s)]
        check(not bad, f"{os.path.basename(exe)}: defines no gloo code, vtable or typeinfo {bad[:3]}")
        used = {l.split("U ", 1)[1].strip() for l in lines("nm", "-C", "-u", exe) if "ProcessGroupGloo" in l}
        if exe == LIBWEFT or used:
            check(used, f"{os.path.basename(exe)}: uses ProcessGroupGloo ({len(used)} symbols)")
        exported = set(lines("nm", "-C", "-D", "--defined-only", "--format=just-symbols", torch_cpu))
        missing = [s for s in used if s not in exported]
        check(not missing, f"{os.path.basename(exe)}: every ProcessGroupGloo symbol it uses comes from "
                           f"libtorch_cpu.so {missing[:2]}")
    print("test_gloo_abi: all passed")


if __name__ == "__main__":
    main()
