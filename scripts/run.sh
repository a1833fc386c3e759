#!/usr/bin/env bash
# boardfit's one entry point for people and CI.
#   bash scripts/run.sh demo   install what is missing, then run the main job (boardfit fit) on the default board
#   bash scripts/run.sh test   install what is missing, then run the whole test suite
#   bash scripts/run.sh setup  only install
# Idempotent: apt packages, the virtualenvs and the package are installed only when missing or
# when pyproject.toml changed.  Runs as root on Debian 12 (apt-get is used with
# --no-install-recommends); elsewhere install the packages in APT_PACKAGES yourself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${BOARDFIT_VENV:-$ROOT/.venv}"
VENV_TFLRT="${BOARDFIT_VENV_TFLITE_RUNTIME:-$ROOT/.venv-tflite-runtime}"

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc libc6-dev make
  gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm qemu-user
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc
)

log() { printf '\033[1m[boardfit]\033[0m %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    log "missing packages (${missing[*]}) and no apt-get: install them by hand"; return 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# pip install into a venv unless the stamp says this pyproject.toml is already installed there.
install_venv() {
  local venv="$1" stamp_key="$2"; shift 2
  local stamp="$venv/.boardfit-stamp" want
  want="$(cat pyproject.toml "$0" | sha256sum | cut -c1-16)-$stamp_key"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  [ -x "$venv/bin/python" ] || { log "creating $venv"; python3 -m venv "$venv"; }
  log "installing boardfit into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip >/dev/null
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  echo "$want" >"$stamp"
}

setup() {
  install_apt
  install_venv "$VENV" main -e ".[dev,plots]"
}

setup_tflite_runtime() {
  # tflite-runtime 2.14 (the last release) needs numpy<2: it gets its own environment.
  install_venv "$VENV_TFLRT" tflrt -e ".[tflite-runtime]" "pytest>=7" "hypothesis>=6"
}

demo() {
  # boardfit's main job on the default emulated board: the example float digits MLP
  # (LeNet-300-100-shaped) and its layers, then `boardfit fit` under a 32 KiB flash budget on
  # mps2-an386 (Cortex-M4F): quantized and given a per-layer compression mix planned on half of
  # the 400 test digits, built, run in QEMU and validated over the serial link on the other 200
  # (bit-exact with the host simulation), ending with predicted vs measured flash, RAM, accuracy
  # and latency.  Plan, spec, plots and firmware land in build/demo/fit.
  local bf="$VENV/bin/boardfit" model="examples/models/digits_mlp_float.tflite"
  "$bf" inspect "$model"
  # The int8 CNN example as a C project built for this machine, with its size report.
  "$bf" build examples/models/digits_cnn_int8.tflite --board host -o build/demo/host
  "$bf" fit "$model" --board mps2-an386 --data digits --flash 32K -o build/demo/fit
}

run_tests() {
  local py="$VENV/bin/python"
  log "ruff"; "$VENV/bin/ruff" check toolkit targets firmware_gen tests bench examples
  log "mypy"; "$VENV/bin/mypy"
  log "pytest (ai-edge-litert, numpy 2)"
  "$py" -m pytest -q -p no:cacheprovider "$@"
  log "pytest (every host kernel suite again under AddressSanitizer + UndefinedBehaviorSanitizer)"
  BOARDFIT_SANITIZE=1 "$py" -m pytest -q -p no:cacheprovider tests/test_kernels_ref.py \
    tests/test_kernels_simd.py tests/test_compress_binary.py tests/test_compress_lowrank.py \
    tests/test_compress_prune.py tests/test_compress_uniform_kmeans.py
  setup_tflite_runtime
  log "pytest (tflite-runtime 2.14, numpy<2): oracle against the other interpreter"
  BOARDFIT_INTERPRETER=tflite-runtime "$VENV_TFLRT/bin/python" -m pytest -q -p no:cacheprovider \
    -m "not slow" tests/test_oracle_conv.py tests/test_oracle_activations.py \
    tests/test_oracle_elementwise.py tests/test_oracle_shape.py tests/test_examples_verify.py
}

cmd="${1:-demo}"; shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; demo ;;
  test) setup; run_tests "$@" ;;
  *) echo "usage: $0 {demo|test|setup} [pytest args]" >&2; exit 64 ;;
esac
