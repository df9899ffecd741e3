#!/bin/bash
# The GPU bench on a lent machine (no network), after `python -m bench.gpu_pack` here:
#   bash bench/gpu_run.sh .dev/cN      (the last part folder; earlier parts in /tmp/ortc)
# Writes check.json (CUDA vs CPU scores), results.json, report.md and bench.tgz to $OUT.
set -u
last=${1:?usage: gpu_run.sh PART_DIR}
cd "$(dirname "$0")/.."
mkdir -p /tmp/ortc && cp "$last"/ort.part.* /tmp/ortc/
cat /tmp/ortc/ort.part.* > /tmp/ort.tar.xz && mkdir -p /tmp/site \
  && tar -C /tmp/site -xJf /tmp/ort.tar.xz || { echo "onnxruntime parts missing or broken"; exit 3; }
if ls "$last"/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$last"/whl/*.whl || exit 4
fi
# onnxruntime-gpu loads CUDA 13, cuBLAS and cuDNN from the image's nvidia wheels.
SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
LD_LIBRARY_PATH=$(find "$SP/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:):${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1 INFERSHIELD_BENCH_CACHE=/tmp/isc
# BASE_DIR: where the base-model package travelled (default: next to the last part).
export PYTHONPATH=$PWD/python:$PWD:/tmp/site:${BASE_DIR:-$PWD/$last/base}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" || exit 5
timeout 150 python3 -m bench.gpu_check "$OUT/check.json" || echo "gpu_check failed: $?"
timeout 330 python3 -m bench.run --gpu --suites ${SUITES:-detector detector_sweep} --out-dir /tmp/bench \
  --update-results no; echo "bench rc=$?"
tar -C /tmp -czf "$OUT/bench.tgz" bench
cp /tmp/bench/results.json /tmp/bench/report.md "$OUT/" 2>/dev/null
ls -la "$OUT"
