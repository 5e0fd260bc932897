"""A small Triton program for the record tests: compiles one kernel GPU-less for an H200 (virtual device).

    python -m tests.record.small_kernel [--child] [--scale N] [--sleep]
    (--child: in a child process, as engines do; --scale: the SCALE constexpr, default 2;
     --sleep: print "aotwarm-ready" after the compile, then wait to be stopped)
"""

import subprocess
import sys

import triton
import triton.language as tl


@triton.jit
def scale_kernel(x_ptr, y_ptr, n, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) * SCALE, mask=mask)


def main() -> int:
    args = sys.argv[1:]
    if "--child" in args:
        args.remove("--child")
        return subprocess.run([sys.executable, "-m", "tests.record.small_kernel", *args]).returncode
    import torch

    from aotwarm.device import VirtualDevice
    from aotwarm.targets import PROFILES

    VirtualDevice(PROFILES["h200"]).install()  # the launch below becomes a compile for sm90
    x = torch.randn(1000)
    y = torch.empty_like(x)
    scale = int(args[args.index("--scale") + 1]) if "--scale" in args else 2
    scale_kernel[(4,)](x, y, x.numel(), SCALE=scale, BLOCK=256)
    if "--sleep" in args:
        import time

        print("aotwarm-ready", flush=True)
        time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
