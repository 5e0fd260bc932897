#!/usr/bin/env bash
# The GPU machine of our workplace (H200, torch 2.11, Triton 3.6, no network) made into the serving stack's
# Triton: Triton 3.8.0 and vLLM 0.33.0's sources carried in (see docs/benchmarks.md, "How the H200 runs were made").
#
#   Each carrying call copies what it carried into $CARRY (/tmp/carry; it stays while the machine is warm):
#     triton38/p1, p2      Triton 3.8.0 wheel parts (../shared/tools/pack-triton.sh 3.8.0)
#     whl/*.whl            vLLM's pure-Python needs the machine lacks (compressed-tensors + loguru: vLLM's quantization
#                          registry imports them), fla-core, zstandard (cp312)
#     vllm/vllm-src.tar.xz vLLM 0.33.0's files without its compiled ops (and without vllm-rs, DeepGEMM, fmha)
#     vllmso/_C_stable_libtorch.abi3.so.xz   vLLM's compiled ops (they load with torch 2.11)
#     vllmso2/_moe_C_stable_libtorch.abi3.so.xz   vLLM's MoE ops (moe_align_block_size, moe_sum, topk_softmax)
#     deepgemm/deep_gemm.tar.xz   vLLM's vendored DeepGEMM (vllm/third_party/deep_gemm with its extension)
#     tools/unpack-triton.py
#     fi/flashinfer-pruned.tar.xz, whl2/*.whl (vLLM's OpenAI-server imports, llguidance)
#   All of it is made by tests/gpu/make_carry.sh.  Calls, back to back (the machine is released after 30 s idle):
#     [.carry/triton38/p1, .carry/tools]  [.carry/triton38/p2, .carry/fi, .carry/whl2]  [.whl]
#     [.carry/vllm, .carry/vllmso2]: copy each into $CARRY, then source this script and untar fi/ into /tmp/site
#     [.carry/vllmso, payload]: xz -dc the _C ops into /tmp/site/vllm/, then the work
#   usage: source tests/gpu/h200_stack38.sh   (sets PYTHONPATH; unpacks once per machine)
CARRY=${CARRY:-/tmp/carry}
set -e
if [ ! -d /tmp/t38/triton ]; then
  python3 $CARRY/tools/unpack-triton.py $CARRY/triton38 /tmp/t38
fi
if [ ! -d /tmp/site/vllm ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $CARRY/whl/*.whl
  tar -xJf $CARRY/vllm/vllm-src.tar.xz -C /tmp/site
  for so in vllmso/_C_stable_libtorch vllmso2/_moe_C_stable_libtorch; do
    if [ -f $CARRY/$so.abi3.so.xz ]; then
      xz -dc $CARRY/$so.abi3.so.xz > /tmp/site/vllm/$(basename $so).abi3.so
    fi
  done
  # vLLM's flash-attention extensions (480 MB) are not carried: the MoE modules import vllm.vllm_flash_attn
  # through vLLM's model loader and attention package, but no kernel tested here calls it.  A harness-only
  # stand-in for the FA3 extension module lets that import succeed (never part of a bundle or a key).
  if ! ls /tmp/site/vllm/vllm_flash_attn/_vllm_fa*_C* >/dev/null 2>&1; then
    echo '"""GPU-harness stand-in: the FA3 extension is not carried to this machine; nothing tested here calls it."""' \
      > /tmp/site/vllm/vllm_flash_attn/_vllm_fa3_C.py
  fi
  if [ -f $CARRY/deepgemm/deep_gemm.tar.xz ]; then
    tar -xJf $CARRY/deepgemm/deep_gemm.tar.xz -C /tmp/site
  fi
fi
export PYTHONPATH=/tmp/t38:/tmp/site:$PWD
export PYTHONUNBUFFERED=1
python3 -c "import sys, torch, triton, vllm; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'vllm', vllm.__version__, torch.cuda.get_device_name(0))"
set +e
