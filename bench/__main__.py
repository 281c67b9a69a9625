"""`make bench`: the runtime benchmark, then registry pull throughput, each beside dockerd."""

from __future__ import annotations

from bench import pull, runtime

if __name__ == "__main__":
    runtime.main([])
    pull.main([])
