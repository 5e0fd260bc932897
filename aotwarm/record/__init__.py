"""``aotwarm record``: what a real process JIT-compiles, recorded from inside every Python process it starts.

* ``inject/sitecustomize.py`` — put on ``PYTHONPATH`` of the recorded command; in each Python process it
  hooks Triton (compiles with hit/miss and their full specialization, autotune, host C builds) and
  CuTe DSL compiles, appending one JSON line per event to a spool file of its own;
* ``run.py`` — starts the command, watches its output for the engine's "ready" line, forwards
  SIGINT/SIGTERM, snapshots the DeepGEMM and FlashInfer caches, and merges everything into one record;
* ``recordfile.py`` — the record's format: write, and read with validation (a corrupt or hostile file
  is refused with one line);
* ``diff.py`` — a record against a bundle: every recorded compile the bundle lacks, with the closest
  planned key and the arguments that differ;
* ``recompile.py`` — the build op that recompiles a recorded Triton key GPU-less (``build --from-record``).
"""
