#!/usr/bin/env bash
# Installs everything a fresh machine needs to build, test and demo Weft. Idempotent, and quick
# when already done: Debian packages are only installed when one is missing, and .venv is a link
# into a cache keyed by the hash of tools/requirements.txt, so fresh clones reuse it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

apt_packages=(
  cmake ninja-build ccache g++ make python3 python3-venv
  libgflags-dev libgoogle-glog-dev libgtest-dev libgmock-dev
  libyaml-cpp-dev nlohmann-json3-dev
  libsentencepiece-dev   # SentencePiece .model tokenizers (Llama 2)
  libcpp-httplib-dev     # the HTTP server of examples/service
  libpcre2-dev libutf8proc-dev pkg-config  # tokenizer.json: pre-tokenizer regexes, NFC
  libgloo-dev      # headers only: the wheel ships c10d's ProcessGroupGloo.hpp but not gloo's;
                   # the gloo code itself is LibTorch's copy (CMakeLists.txt never links libgloo)
  fortunes         # the demo corpus: real English text from a Debian package
)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Python environment: one cache entry per exact pin set.
req=tools/requirements.txt
python=${WEFT_PYTHON:-python3}
key=$( (cat "$req"; "$python" --version) | sha256sum | cut -c1-16)
cache=${WEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weft}
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "setup: creating Python environment $venv (torch + test references; several GB, once)"
  # Built in place (a venv embeds its path); .complete is written last, so an interrupted
  # install is discarded and redone rather than used.
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q --progress-bar off -r "$req"
  "$venv/bin/python" -c 'import torch' # fails loudly if the environment is broken
  touch "$venv/.complete"
fi
if [ "$(readlink .venv 2>/dev/null)" != "$venv" ]; then
  if [ -e .venv ] && [ ! -L .venv ]; then
    echo "setup: .venv exists and is not a link; remove it to let setup manage it" >&2
    exit 1
  fi
  ln -sfn "$venv" .venv
fi
