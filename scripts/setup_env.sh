#!/usr/bin/env bash
# Sets up this checkout on a fresh machine: Debian CJK fonts (when root), a virtual environment in
# .venv with the pinned stack resolved in one pip call, and Horovod 0.28.1 built against it.
# Idempotent: each step is skipped when its stamp file says it is already done for the same inputs.
#
# Environment:
#   HCCR_PYTHON=python3.11   interpreter used to create .venv (default: python3)
#   HCCR_SKIP_HOROVOD=1      do not build Horovod (every feature but --strategy horovod works)
#   HCCR_WITHOUT_MPI=1       build Horovod with Gloo only (default: Gloo and MPI; Debian's Open MPI
#                            and PMIx are installed when root)
#   HCCR_SKIP_CLUSTER=1      do not install SLURM and munge (the test suite's one-host cluster);
#                            the SLURM tests then skip and say why
#   HCCR_GPU=1               install tensorflow[and-cuda] instead of tensorflow-cpu (default: auto,
#                            by nvidia-smi)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
stamp_dir="$venv/.hccr-stamps"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
# Each stage prints its wall time, so a slow set-up shows where the time went.
stage_start=$(date +%s%3N)
stage_done() {
  local now ms; now=$(date +%s%3N); ms=$((now - stage_start))
  log "$(printf '%-24s done in %d.%d s' "$1" $((ms / 1000)) $((ms % 1000 / 100)))"
  stage_start=$now
}

fonts=(fonts-arphic-ukai fonts-arphic-uming fonts-arphic-gkai00mp fonts-arphic-gbsn00lp
       fonts-wqy-microhei fonts-wqy-zenhei fonts-lxgw-wenkai)

# --- Debian packages: CJK fonts for the synthetic dataset and the plots --------------------------
missing_fonts=()
for p in "${fonts[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_fonts+=("$p")
done
# Real engines for distributed runs: Open MPI + PMIx (Horovod over MPI, `srun --mpi=pmix`), and
# SLURM + munge, which the test suite starts as a one-host cluster.
cluster_pkgs=()
[ "${HCCR_WITHOUT_MPI:-0}" = 1 ] || cluster_pkgs+=(libopenmpi-dev openmpi-bin libpmix-dev)
[ "${HCCR_SKIP_CLUSTER:-0}" = 1 ] || cluster_pkgs+=(slurm-wlm munge)
missing_cluster=()
for p in "${cluster_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_cluster+=("$p")
done
missing=("${missing_fonts[@]}" "${missing_cluster[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: not root (or no apt-get): cannot install ${missing[*]}."
    [ ${#missing_fonts[@]} -gt 0 ] && \
      log "         hccr-synth needs at least one CJK font; ask an administrator to install them."
    [ ${#missing_cluster[@]} -gt 0 ] && \
      log "         without them Horovod builds without MPI and the SLURM/MPI tests skip, naming the package."
  fi
else
  log "Debian packages present (fonts${cluster_pkgs:+, ${cluster_pkgs[*]}})"
fi
stage_done "Debian packages"

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
stage_done "pinned Python stack"
# setup.py changes (a new console script) need only the project itself reinstalled.
if ! sha256sum --status -c "$stamp_dir/setup.py" 2>/dev/null; then
  log "reinstalling the hccr package (setup.py changed)"
  "$venv/bin/python" -m pip install -q --no-deps -e . 2>&1 | grep -v DEPRECATION || true
  sha256sum setup.py > "$stamp_dir/setup.py"
fi
stage_done "hccr package"

# --- Horovod -----------------------------------------------------------------------------------
if [ "${HCCR_SKIP_HOROVOD:-0}" != 1 ]; then
  mpi_flag=HOROVOD_WITHOUT_MPI
  dpkg -s libopenmpi-dev >/dev/null 2>&1 && mpi_flag=HOROVOD_WITH_MPI
  tf_version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$tf_req'.split('[')[0]))")
  hvd_key="0.28.1-$mpi_flag-tf$tf_version"
  if [ "$(cat "$stamp_dir/horovod" 2>/dev/null)" != "$hvd_key" ]; then
    [ "$mpi_flag" = HOROVOD_WITHOUT_MPI ] && [ "${HCCR_WITHOUT_MPI:-0}" != 1 ] && \
      log "WARNING: libopenmpi-dev is missing: Horovod is built with Gloo only (no horovodrun --mpi, no srun)"
    log "building Horovod 0.28.1 with TensorFlow + Gloo ($mpi_flag); about 3 minutes on 2 cores"
    env HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 \
        HOROVOD_WITHOUT_MXNET=1 "$mpi_flag=1" MAKEFLAGS="-j$(nproc)" \
        "$venv/bin/python" -m pip install -q --no-build-isolation --no-cache-dir \
        -c requirements/constraints.txt horovod==0.28.1
    # Kept in the stamp directory, not printed: horovodrun --check-build lists "[X] PyTorch" even
    # when built with HOROVOD_WITHOUT_PYTORCH and torch is absent; the summary below is checked.
    TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/horovodrun" --check-build > "$stamp_dir/horovod-check"
    grep -q "\[X\] TensorFlow" "$stamp_dir/horovod-check" && grep -q "\[X\] Gloo" "$stamp_dir/horovod-check" \
      || { cat "$stamp_dir/horovod-check"; log "ERROR: Horovod was built without TensorFlow or Gloo (see above)"; exit 1; }
    if [ "$mpi_flag" = HOROVOD_WITH_MPI ] && ! grep -q "\[X\] MPI" "$stamp_dir/horovod-check"; then
      cat "$stamp_dir/horovod-check"
      log "ERROR: Horovod was built without MPI although libopenmpi-dev is installed (see above)"; exit 1
    fi
    TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -c '
import horovod.tensorflow as h
print("TensorFlow; controllers:", ", ".join(n for n, b in (("Gloo", h.gloo_built()), ("MPI", h.mpi_built())) if b))
' > "$stamp_dir/horovod-summary"
    echo "$hvd_key" > "$stamp_dir/horovod"
  fi
  log "Horovod 0.28.1 built with $(cat "$stamp_dir/horovod-summary" 2>/dev/null || echo '(unknown: rebuild)')"
  stage_done "Horovod"
fi
log "environment ready: $venv"
