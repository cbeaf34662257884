#!/usr/bin/env bash
# Sets up this checkout on a fresh machine: Debian CJK fonts (when root), a virtual environment in
# .venv with the pinned stack resolved in one pip call, and Horovod 0.28.1 built against it.
# Idempotent: each step is skipped when its stamp file says it is already done for the same inputs.
#
# Environment:
#   HCCR_PYTHON=python3.11   interpreter used to create .venv (default: python3)
#   HCCR_SKIP_HOROVOD=1      do not build Horovod (every feature but --strategy horovod works)
#   HCCR_WITH_MPI=1          also install Debian's Open MPI (root only) so Horovod is built with MPI
#   HCCR_GPU=1               install tensorflow[and-cuda] instead of tensorflow-cpu (default: auto,
#                            by nvidia-smi)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
stamp_dir="$venv/.hccr-stamps"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

fonts=(fonts-arphic-ukai fonts-arphic-uming fonts-arphic-gkai00mp fonts-arphic-gbsn00lp
       fonts-wqy-microhei fonts-wqy-zenhei fonts-lxgw-wenkai)

# --- Debian packages: CJK fonts for the synthetic dataset and the plots --------------------------
missing_fonts=()
for p in "${fonts[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_fonts+=("$p")
done
want_mpi=${HCCR_WITH_MPI:-0}
mpi_missing=0
if [ "$want_mpi" = 1 ] && ! dpkg -s libopenmpi-dev >/dev/null 2>&1; then mpi_missing=1; fi
if [ ${#missing_fonts[@]} -gt 0 ] || [ $mpi_missing = 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs=("${missing_fonts[@]}")
    [ $mpi_missing = 1 ] && pkgs+=(libopenmpi-dev openmpi-bin)
    log "installing Debian packages: ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  else
    log "WARNING: not root (or no apt-get): cannot install ${missing_fonts[*]}."
    log "         hccr-synth needs at least one CJK font; ask an administrator to install them."
  fi
else
  log "Debian fonts present"
fi

# --- Python packages ---------------------------------------------------------------------------
py=${HCCR_PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv with $($py --version)"
  "$py" -m venv "$venv"
fi
mkdir -p "$stamp_dir"
gpu=${HCCR_GPU:-auto}
if [ "$gpu" = auto ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=1; else gpu=0; fi
fi
if [ "$gpu" = 1 ]; then tf_req="tensorflow[and-cuda]"; else tf_req="tensorflow-cpu"; fi
req_hash=$(cat requirements/constraints.txt requirements/base.txt | sha256sum | cut -c1-16)-$tf_req
if [ "$(cat "$stamp_dir/pip" 2>/dev/null)" != "$req_hash" ]; then
  log "installing the pinned stack ($tf_req) in one pip call (a few minutes on a cold cache)"
  "$venv/bin/python" -m pip install -q --upgrade "pip<25" >/dev/null
  "$venv/bin/python" -m pip install -q -c requirements/constraints.txt \
      "$tf_req" -r requirements/base.txt -e .
  echo "$req_hash" > "$stamp_dir/pip"
  sha256sum setup.py > "$stamp_dir/setup.py"
else
  log "pinned Python stack present"
fi
# setup.py changes (a new console script) need only the project itself reinstalled.
if ! sha256sum --status -c "$stamp_dir/setup.py" 2>/dev/null; then
  log "reinstalling the hccr package (setup.py changed)"
  "$venv/bin/python" -m pip install -q --no-deps -e . 2>&1 | grep -v DEPRECATION || true
  sha256sum setup.py > "$stamp_dir/setup.py"
fi

# --- Horovod -----------------------------------------------------------------------------------
if [ "${HCCR_SKIP_HOROVOD:-0}" != 1 ]; then
  mpi_flag=HOROVOD_WITHOUT_MPI
  dpkg -s libopenmpi-dev >/dev/null 2>&1 && mpi_flag=HOROVOD_WITH_MPI
  tf_version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$tf_req'.split('[')[0]))")
  hvd_key="0.28.1-$mpi_flag-tf$tf_version"
  if [ "$(cat "$stamp_dir/horovod" 2>/dev/null)" != "$hvd_key" ]; then
    log "building Horovod 0.28.1 with TensorFlow + Gloo ($mpi_flag); about 3 minutes on 2 cores"
    env HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
        HOROVOD_WITHOUT_MXNET=1 "$mpi_flag=1" MAKEFLAGS="-j$(nproc)" \
        "$venv/bin/python" -m pip install -q --no-build-isolation --no-cache-dir \
        -c requirements/constraints.txt horovod==0.28.1
    TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/horovodrun" --check-build | tee "$stamp_dir/horovod-check"
    grep -q "\[X\] TensorFlow" "$stamp_dir/horovod-check" && grep -q "\[X\] Gloo" "$stamp_dir/horovod-check" \
      || { log "ERROR: Horovod was built without TensorFlow or Gloo (see above)"; exit 1; }
    echo "$hvd_key" > "$stamp_dir/horovod"
  else
    log "Horovod present"
  fi
fi
log "environment ready: $venv"
