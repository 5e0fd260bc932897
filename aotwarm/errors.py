"""Exceptions that carry the CLI's exit codes and a one-line, actionable message."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # verification found misses, or a build did not complete
EXIT_BAD_INPUT = 2  # bad input or usage
EXIT_INCOMPATIBLE = 3  # this environment cannot use this bundle
EXIT_PARTIAL = 4  # build: bundle written with its Triton part; the DeepGEMM part needs a GPU of the target kind


class AotwarmError(Exception):
    """Base error: ``str(err)`` is the one line shown to the user; ``exit_code`` is the CLI's exit code."""

    exit_code = EXIT_BAD_INPUT


class BadInput(AotwarmError):
    """The user gave something we cannot use (config, target, bundle, path, flag)."""

    exit_code = EXIT_BAD_INPUT


class Incompatible(AotwarmError):
    """The bundle cannot hit in this environment (Python ABI, Triton, arch, env vars, engine)."""

    exit_code = EXIT_INCOMPATIBLE


class BuildIncomplete(AotwarmError):
    """Some work items failed; the bundle would not cover the plan."""

    exit_code = EXIT_FAILED
