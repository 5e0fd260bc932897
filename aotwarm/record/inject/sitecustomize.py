"""aotwarm record: hooks every Python process of a recorded command (put on PYTHONPATH by ``aotwarm record``).

Standalone (standard library only): the recorded command may run in another environment than aotwarm.
When Triton is imported, it chains onto ``knobs.compilation.listener`` (every compile, disk hit or not,
with its ``ASTSource``), ``knobs.runtime.jit_cache_hook`` (the in-memory specialization key of each
compile), the autotuner (``knobs.autotuning.listener`` on Triton >= 3.8, ``Autotuner._bench`` before)
and ``runtime.build._build`` (host C builds).  When ``cutlass.cute`` is imported it wraps
``cute.compile``.  Each event is one JSON line appended to ``$AOTWARM_RECORD_SPOOL/<pid>.jsonl``,
flushed at once, so a killed process loses at most the event it was writing.  Then the next
``sitecustomize`` on the path (the environment's own) runs, as it would have without this one.
"""

import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time

SPOOL = os.environ.get("AOTWARM_RECORD_SPOOL")
_LOCK = threading.Lock()
_PENDING = threading.local()
_FILE = None


def _write(event):
    global _FILE
    if not SPOOL:
        return
    event.setdefault("t", time.time())
    event.setdefault("pid", os.getpid())
    line = json.dumps(event, default=str) + "\n"
    with _LOCK:
        if _FILE is None or getattr(_FILE, "pid", None) != os.getpid():  # a forked child gets its own file
            _FILE = open(os.path.join(SPOOL, f"{os.getpid()}.jsonl"), "a", buffering=1)
            _FILE.pid = os.getpid()
        _FILE.write(line)
        _FILE.flush()


def _jsonable(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    key = getattr(value, "cache_key", None)  # a JIT function passed as a constexpr
    if isinstance(key, str):
        return {"cache_key": key}
    if type(value).__module__.startswith("triton.language") and type(value).__name__ == "dtype":
        return {"tl_dtype": str(value)}  # e.g. compute_type=tl.bfloat16 -> "bf16"
    return {"repr": str(value)}


def _path_items(mapping):
    """{(0,): v} / {"name": v} -> [[[0], v]] / [["name", v]] (JSON-safe keys)."""
    return [[list(k) if isinstance(k, tuple) else k, _jsonable(v)] for k, v in (mapping or {}).items()]


def _on_compile(*, src, metadata, metadata_group, times, cache_hit):
    fn = getattr(src, "fn", None)
    pending = getattr(_PENDING, "key", None)
    _PENDING.key = None
    any_path = next(iter(metadata_group.values()), "") if metadata_group else ""
    event = {"ev": "triton_compile", "cache_hit": bool(cache_hit), "kernel": metadata.get("name"),
             "hash": metadata.get("hash"), "entry": os.path.basename(os.path.dirname(any_path)),
             "target": _target(metadata.get("target")), "triton_version": metadata.get("triton_version"),
             "options": {k: _jsonable(v) for k, v in metadata.items()
                         if k in ("num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion",
                                  "launch_cooperative_grid", "launch_pdl", "debug", "instrumentation_mode",
                                  "sanitize_overflow", "arch", "ptx_version", "backend_name")},
             "seconds": _seconds(times)}
    if fn is not None:
        inner = getattr(fn, "fn", None)
        event.update({"module": getattr(inner, "__module__", None), "qualname": getattr(inner, "__qualname__", None),
                      "file": getattr(inner, "__code__", None) and inner.__code__.co_filename,
                      "line": getattr(fn, "starting_line_number", None), "fn_cache_key": fn.cache_key,
                      "arg_names": list(getattr(fn, "arg_names", []))})
        event["signature"] = _path_items(getattr(src, "signature", None))
        event["constants"] = _path_items(getattr(src, "constants", None))
        event["attrs"] = _path_items(getattr(src, "attrs", None))
    if pending is not None and pending[0] == event.get("kernel"):
        event["jit_key"] = pending[1]
    _write(event)


def _target(target):
    if isinstance(target, dict):
        return target
    return {"backend": getattr(target, "backend", None), "arch": getattr(target, "arch", None),
            "warp_size": getattr(target, "warp_size", None)}


def _seconds(times):
    try:
        return round(float(sum(v for v in vars(times).values() if isinstance(v, (int, float)))) / 1e6, 6)
    except Exception:
        return None


def _install_triton():
    from triton import knobs

    previous_listener = knobs.compilation.listener

    def listener(**kwargs):
        try:
            _on_compile(**kwargs)
        except Exception as err:  # recording must never break the recorded process
            _write({"ev": "record_error", "where": "compile listener", "error": repr(err)})
        if previous_listener is not None:
            previous_listener(**kwargs)

    knobs.compilation.listener = listener
    previous_hook = knobs.runtime.jit_cache_hook

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        _PENDING.key = (getattr(fn, "__name__", None) or getattr(fn, "name", None), str(key))
        if previous_hook is not None:
            return previous_hook(key=key, repr=repr, fn=fn, compile=compile, is_manual_warmup=is_manual_warmup,
                                 already_compiled=already_compiled)
        return False

    knobs.runtime.jit_cache_hook = hook
    tuning = getattr(knobs, "autotuning", None)
    if tuning is not None and hasattr(tuning, "listener"):  # Triton >= 3.8
        previous_tuner = tuning.listener

        def tuned(*, fn, key, best_config, configs_timings, duration, cache_hit, **rest):
            _write({"ev": "autotune", "kernel": getattr(fn, "__name__", str(fn)), "key": _jsonable(list(key)),
                    "configs": len(configs_timings or {}), "best": str(best_config), "cache_hit": bool(cache_hit),
                    "seconds": duration})
            if previous_tuner is not None:
                previous_tuner(fn=fn, key=key, best_config=best_config, configs_timings=configs_timings,
                               duration=duration, cache_hit=cache_hit, **rest)

        tuning.listener = tuned
    else:  # Triton 3.6: each benchmarked config
        from triton.runtime.autotuner import Autotuner

        bench = Autotuner._bench

        def counting_bench(self, *args, config, **kwargs):
            start = time.time()
            try:
                return bench(self, *args, config=config, **kwargs)
            finally:
                _write({"ev": "autotune_bench", "kernel": getattr(self.base_fn, "__name__", "?"),
                        "config": str(config), "seconds": round(time.time() - start, 6)})

        Autotuner._bench = counting_bench
    from triton.runtime import build

    real_build = build._build

    def counting_build(name, *args, **kwargs):
        start = time.time()
        try:
            return real_build(name, *args, **kwargs)
        finally:
            _write({"ev": "c_build", "name": name, "seconds": round(time.time() - start, 6)})

    build._build = counting_build


def _install_cute():
    import cutlass.cute as cute

    real = cute.compile

    def compile(*args, **kwargs):
        start = time.time()
        try:
            return real(*args, **kwargs)
        finally:
            target = args[0] if args else None
            _write({"ev": "cute_compile", "kernel": getattr(target, "__qualname__", str(target)),
                    "seconds": round(time.time() - start, 6)})

    cute.compile = compile


_AFTER_IMPORT = {"triton": _install_triton, "cutlass.cute": _install_cute}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs an installer right after a watched package finished importing (its ``__init__`` ran)."""

    def find_spec(self, name, path, target=None):
        if name not in _AFTER_IMPORT:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, installer = spec.loader, _AFTER_IMPORT.pop(name)

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                try:
                    installer()
                except Exception as err:  # recording must never break the recorded process
                    _write({"ev": "record_error", "where": name, "error": repr(err)})

        spec.loader = Loader()
        return spec


def _chain_next_sitecustomize():
    """Run the environment's own sitecustomize, which this module shadows."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_aotwarm_next_sitecustomize", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


if SPOOL:
    sys.meta_path.insert(0, _AfterImport())
    _write({"ev": "process", "ppid": os.getppid(), "argv": list(getattr(sys, "orig_argv", sys.argv)),
            "python": sys.version.split()[0]})
_chain_next_sitecustomize()
