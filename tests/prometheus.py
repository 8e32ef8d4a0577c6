"""Reading a Prometheus text exposition in tests (the loopback exporter test and e2e step 11 assert on it)."""

from __future__ import annotations


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line; labels kept verbatim, so a test names a series
    exactly as the exporter writes it (``redis_db_keys{db="db0"}``)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
