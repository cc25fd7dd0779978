"""hubcat benchmarks: ``python -m benchmarks [STAGE ...] [--quick] [--json FILE]``.

Each stage module (``benchmarks/<stage>.py``) defines ``run(quick: bool) -> list[Figure]``; every
figure is a ratio against a baseline measured in the same process on the same machine.
"""
