# Sourced on the lent GPU machine after bench/device_setup.sh, by one call's job script:
#   source bench/device_jobs.sh
#   job lora_0375 190 python3 bench/lora_matrix.py --label "0.3.75" --out $W/m
# `job NAME SECONDS CMD...` runs CMD with a time limit that also keeps within the call's deadline
# (BUDGET seconds from the start, default 575), logs to $W/logs/NAME.log, and after every job packs
# all of $W into $OUT/results.tgz: the tool brings back only a few files, and a call cut short
# keeps what it measured.
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-575}))
W=/tmp/work; mkdir -p $W/logs
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $W/logs/gpu.txt 2>&1
job() {
  local name=$1 seconds=$2; shift 2
  local left=$((DEADLINE - $(date +%s)))
  if [ $left -lt 30 ]; then echo "SKIP $name (left $left s)" | tee -a $W/logs/summary.txt; return; fi
  [ $seconds -gt $left ] && seconds=$left
  local t0=$(date +%s)
  timeout -k 5 $seconds "$@" > $W/logs/$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 ))s" | tee -a $W/logs/summary.txt
  tar -czf $OUT/results.tgz -C $W .
}
