#!/usr/bin/env bash
# The whole benchmark on a 4-GPU machine: four processes, each pinned to its own GPU and 16 CPU
# cores, each comparing stock ComfyUI and this pack on its one card. Results: $1/*.json, $1/all.log
out=${1:?usage: bench/run_h100x4.sh OUT_DIR}
source bench/device_setup.sh || exit 1
export TORCHINDUCTOR_COMPILE_THREADS=16
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
on_gpu() { local gpu=$1; shift; CUDA_VISIBLE_DEVICES=$gpu taskset -c $((gpu * 16))-$((gpu * 16 + 15)) timeout 560 "$@"; }
( on_gpu 0 python3 -m pytest -q -p no:cacheprovider tests/gpu
  on_gpu 0 python3 bench/kernels.py --out "$out/kernels.json"
  on_gpu 0 python3 bench/sd35_bench.py --model large --weights heavy --modes eager --out "$out" ) >/tmp/gpu0.log 2>&1 &
on_gpu 1 python3 bench/sd35_bench.py --model large --profile ours_fp8_compiled stock_fp8_fast_compiled --out "$out" >/tmp/gpu1.log 2>&1 &
on_gpu 2 python3 bench/sd35_bench.py --model medium --out "$out" >/tmp/gpu2.log 2>&1 &
on_gpu 3 python3 bench/sd35_bench.py --model large --vram-cap-gib 8 --modes eager --variants stock_fp8 stock_fp8_fast ours_fp8 --out "$out" >/tmp/gpu3.log 2>&1 &
wait
for gpu in 0 1 2 3; do echo "=== GPU $gpu"; grep -v -i "warn" /tmp/gpu$gpu.log; done >"$out/all.log"
grep -h -E '^\{"variant|passed|failed|^\{"shape|wrote|Error' /tmp/gpu?.log | cut -c1-400
