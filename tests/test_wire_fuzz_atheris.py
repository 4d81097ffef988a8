"""Coverage-guided fuzzing of the packet parser with atheris (libFuzzer), when atheris is installed.

The test runs a short campaign in a subprocess; run a long one by hand:

    PYTHONPATH=. python tests/test_wire_fuzz_atheris.py -atheris_runs=1000000
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_atheris_campaign():
    pytest.importorskip("atheris")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "-atheris_runs=20000", "-max_len=2048", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done 20000 runs" in proc.stderr


def main() -> None:
    import atheris

    # Instrument only LPCA's own modules (instrumenting numpy too would take minutes).
    with atheris.instrument_imports(include=["lpca_protocols"]):
        import lpca_protocols.codecs
        import lpca_protocols.wire  # noqa: F401
    from test_wire_fuzz import SEEDS, mutate, parse_all_the_way

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
        fix = fdp.ConsumeBool()
        ops = [
            (
                fdp.ConsumeIntInRange(0, 4),
                fdp.ConsumeIntInRange(0, 1 << 16),
                fdp.ConsumeIntInRange(0, 1 << 31),
            )
            for _ in range(fdp.ConsumeIntInRange(1, 6))
        ]
        parse_all_the_way(mutate(seed, ops, fix))
        parse_all_the_way(fdp.ConsumeBytes(fdp.remaining_bytes()))

    atheris.Setup([a.replace("-atheris_runs", "-runs") for a in sys.argv], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
