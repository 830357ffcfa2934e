#!/usr/bin/env bash
# Every benchmark on a CUDA GPU, each part under its own time limit, logs into one folder.
#
#     bash benchmarks/cuda_suite.sh [LOG_DIR]
#
# Parts: the preset's first 50 pretraining steps (bench_preset.py), the training step
# beside transformers in fp32, bf16 and compiled (bench_model.py, the two small configs,
# then the a100 preset's model, eager only), generation with and without the KV cache
# (bench_generate.py), and the inference engine on the cpu preset's model
# (bench_engine.py, which trains that model and its draft first if the cache lacks
# them). The numbers recorded in benchmarks/README.md came from this script.
set -u
logs=${1:-benchmark-logs}
mkdir -p "$logs"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

part() {  # part NAME SECONDS COMMAND...: run one part, keep going if it fails
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    grep -v '^W[0-9]\{4\} ' "$logs/$name.log" | tail -n 40
    echo "=== $name: rc $rc in $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$python -c "import torch, transformers; print('torch', torch.__version__, \
'| transformers', transformers.__version__, '| cuda', torch.version.cuda)"
part preset 150 $python benchmarks/bench_preset.py --preset a100 --steps 50
part model 170 $python benchmarks/bench_model.py --device cuda --bf16 --compile
part engine 160 $python benchmarks/bench_engine.py --device cuda --preset cpu \
    --repeats 2
part generate 30 $python benchmarks/bench_generate.py --device cuda --repeats 3
part model_a100 60 $python benchmarks/bench_model.py --device cuda --bf16 \
    --configs a100 --batch 8 --steps 8 --warmup 2
