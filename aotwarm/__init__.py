"""aotwarm: plan, compile and ship the GPU kernel caches an LLM serving engine would JIT at start-up."""

__version__ = "0.1.0"
