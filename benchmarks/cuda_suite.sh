#!/usr/bin/env bash
# Every benchmark on a CUDA GPU, each part under its own time limit, logs into one folder.
#
#     bash benchmarks/cuda_suite.sh [LOG_DIR [PART ...]]
#
# Parts, in this order unless named:
#   preset       the a100 preset's first 50 pretraining steps, eager (bench_preset.py)
#   model        the training step beside transformers: fp32, bf16, compiled (bench_model.py)
#   engine       continuous batching, with and without CUDA graphs, on the cpu preset's
#                model (bench_engine.py, which trains that model first if the cache
#                lacks it)
#   generate     batch-1 generation: KV cache on and off, the engine with CUDA graphs,
#                transformers' compiled static cache (bench_generate.py)
#   model_a100   the a100 preset's model beside transformers, fp32 and bf16, eager
#   speculative  speculative decoding with the pretrained and the distilled draft
#   preset_compiled  the a100 preset's own recipe, torch.compile included
#   preset_blocks    the same with each block compiled on its own (bench_preset.py
#                --compile-blocks)
# All parts take about 20 minutes on one H200; the limits come from the runs there
# (benchmarks/README.md), where compiling the a100 model took more than two minutes.
set -u
logs=${1:-benchmark-logs}
shift $(($# > 0 ? 1 : 0))
parts=${*:-preset model engine generate model_a100 speculative preset_compiled preset_blocks}
mkdir -p "$logs"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

part() {  # part NAME SECONDS COMMAND...: run one part if asked for, keep going if it fails
    local name=$1 limit=$2
    shift 2
    [[ " $parts " == *" $name "* ]] || return 0
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
part preset 100 $python benchmarks/bench_preset.py --preset a100 --steps 50 --no-compile
part model 170 $python benchmarks/bench_model.py --device cuda --bf16 --compile
part engine 240 $python benchmarks/bench_engine.py --device cuda --preset cpu \
    --repeats 2 --tables batching
part generate 150 $python benchmarks/bench_generate.py --device cuda --repeats 3
part model_a100 100 $python benchmarks/bench_model.py --device cuda --bf16 \
    --configs a100 --batch 8 --steps 8 --warmup 2
part speculative 200 $python benchmarks/bench_engine.py --device cuda --preset cpu \
    --repeats 2 --tables speculative
part preset_compiled 400 $python benchmarks/bench_preset.py --preset a100 --steps 50
part preset_blocks 240 $python benchmarks/bench_preset.py --preset a100 --steps 50 \
    --compile-blocks
