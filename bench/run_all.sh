#!/usr/bin/env bash
# Every table of bench/RESULTS.md on one GPU, one process at a time (stock and ours side by side
# in each). On the lent machine the same commands ran as four calls of at most ten minutes
# (compiled FP8, compiled others, eager + cap, Medium). Results: $1/*.json; then copy them to
# bench/results/ and run python bench/report.py.
out=${1:?usage: bench/run_all.sh OUT_DIR}
source bench/device_setup.sh || exit 1
export TORCHINDUCTOR_COMPILE_THREADS=16
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pytest -q -p no:cacheprovider tests/gpu
python3 bench/kernels.py --out "$out/kernels.json"
python3 bench/sd35_bench.py --model large --modes compiled --variants stock_fp8_fast ours_fp8 \
  --profile ours_fp8_compiled stock_fp8_fast_compiled --out "$out/fp8_compiled"
mv "$out/fp8_compiled/large_gaussian.json" "$out/large_gaussian_compiled_fp8.json"
python3 bench/sd35_bench.py --model large --modes compiled --variants stock_default stock_fp8 ours_weight_only \
  --out "$out/compiled"
mv "$out/compiled/large_gaussian.json" "$out/large_gaussian_compiled.json"
python3 bench/sd35_bench.py --model large --modes eager --profile ours_fp8_eager stock_default_eager --out "$out"
python3 bench/sd35_bench.py --model large --weights heavy --modes eager --out "$out"
python3 bench/sd35_bench.py --model large --vram-cap-gib 8 --modes eager \
  --variants stock_fp8 stock_fp8_fast ours_weight_only ours_fp8 --out "$out"
python3 bench/sd35_bench.py --model medium --profile ours_fp8_compiled --out "$out"
python3 bench/image_compare.py --out "$out"
