#!/usr/bin/env bash
# Build the GPU machine's carry (see h200_stack38.sh for how it is used there) from this checkout's .venv (the
# serving stack: vllm 0.33.0 and its dependencies) and PyPI.  Everything lands in ignored folders:
#   .carry/triton38/p1,p2   Triton 3.8.0 for cp312 (../shared/tools/pack-triton.sh)
#   .carry/tools            unpack-triton.py
#   .carry/vllm             vllm-src.tar.xz: vLLM's files without compiled extensions, DeepGEMM or bytecode, and
#                           its dist-info (vLLM reads its own version: without it, it disables Triton)
#   .carry/vllmso, vllmso2  vLLM's compiled ops (_C, _moe_C stable-ABI extensions), xz
#   .carry/fi               flashinfer-pruned.tar.xz: FlashInfer's Python package without its data/ sources and
#                           prebuilt kernels (vLLM imports it to choose backends; nothing here runs its kernels)
#   .whl                    cp312 wheels of the vLLM dependencies the GPU machine lacks or holds at another version
#                           (the list below; the machine's torch, numpy and CUDA libraries are used as they are)
#   usage: tests/gpu/make_carry.sh [SHARED_TOOLS_DIR]     (~6 min on 2 cores, most of it packing Triton)
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS=${1:-../shared/tools}
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p .carry/tools .carry/vllm .carry/vllmso .carry/vllmso2 .carry/fi .whl
[ -f .carry/triton38/p1/SHA256 ] || "$TOOLS/pack-triton.sh" 3.8.0 .carry/triton38
cp "$TOOLS/unpack-triton.py" .carry/tools/
[ -f .carry/vllm/vllm-src.tar.xz ] || tar -C "$SITE" --exclude='__pycache__' --exclude='*.so' --exclude='vllm/third_party/deep_gemm' \
    --sort=name --mtime=@0 -cf - vllm $(cd "$SITE" && ls -d vllm-*.dist-info) | xz -T0 -6 > .carry/vllm/vllm-src.tar.xz
[ -f .carry/vllmso/_C_stable_libtorch.abi3.so.xz ] || xz -T0 -6 -c "$SITE/vllm/_C_stable_libtorch.abi3.so" > .carry/vllmso/_C_stable_libtorch.abi3.so.xz
[ -f .carry/vllmso2/_moe_C_stable_libtorch.abi3.so.xz ] || xz -T0 -6 -c "$SITE/vllm/_moe_C_stable_libtorch.abi3.so" > .carry/vllmso2/_moe_C_stable_libtorch.abi3.so.xz
[ -f .carry/fi/flashinfer-pruned.tar.xz ] || tar -C "$SITE" --exclude='__pycache__' --exclude='*.so' --exclude='flashinfer/data' --exclude='*.cubin' \
    --sort=name --mtime=@0 -cf - flashinfer $(cd "$SITE" && ls -d flashinfer_python-*.dist-info) | xz -T0 -6 > .carry/fi/flashinfer-pruned.tar.xz
# what vLLM's config, model construction, runner and scheduler import, pinned to the .venv's versions
PKGS="pydantic pydantic_core annotated-types typing-inspection msgspec cbor2 cachetools blake3 pyzmq pybase64
      setproctitle openai jiter sniffio distro partial-json-parser xgrammar compressed-tensors loguru
      fla-core zstandard orjson python-json-logger lark interegular outlines_core diskcache depyf dill astor ijson
      python-dotenv jsonschema jsonschema-specifications referencing rpds-py mistral_common pycountry
      pydantic-extra-types transformers huggingface_hub tokenizers hf-xet filelock apache-tvm-ffi
      lm-format-enforcer fastapi starlette watchfiles prometheus-fastapi-instrumentator opentelemetry-api
      opentelemetry-sdk opentelemetry-semantic-conventions"
# the OpenAI server modules vLLM's runner imports on the way (a second folder: one carry call holds <= 64 MiB)
PKGS2="httpx2 httpcore2 docstring_parser truststore oss-harmony anthropic mcp mcp-types
       model-hosting-container-standards sse-starlette uvicorn python-multipart email-validator dnspython PyJWT
       httptools websockets jmespath supervisor fastar agent-detector detect-installer llguidance"
fetch() {  # fetch DIR PKG...
  local dir=$1; shift; mkdir -p "$dir"
  for p in "$@"; do
  v=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p" 2>/dev/null || true)
  [ -n "$v" ] || continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_39_x86_64 --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dir" "$p==$v" >/dev/null 2>&1 \
    || echo "no cp312 wheel: $p==$v"
  done
}
fetch .whl $PKGS
fetch .carry/whl2 $PKGS2
du -sh .carry/* .whl
