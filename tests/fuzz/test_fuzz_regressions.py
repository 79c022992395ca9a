"""Fixed fuzz inputs, replayed in-process in every run of the suite (no libFuzzer loop).

Each file under ``fuzz/corpus/<harness>/`` (the minimised corpus: inputs that each reached new
code) and ``fuzz/regressions/<harness>/`` (inputs that once crashed a harness, kept after the fix)
is fed to the harness's ``test_one_input``, which asserts the harness's properties and raises on
any exception the code under test may not raise. Adding a crash: copy libFuzzer's ``crash-*``
file into ``fuzz/regressions/<harness>/`` with a name saying what it was.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = ["pass_decoder", "verify_request", "scan_entry", "dcc_decoder", "shc_decoder"]


def _harness(name: str) -> ModuleType:
    module_name = f"fuzz_harness_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, FUZZ / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _inputs() -> list[object]:
    params: list[object] = []
    for name in HARNESSES:
        for folder in ("corpus", "regressions"):
            for path in sorted((FUZZ / folder / name).glob("*")):
                if path.is_file():
                    params.append(pytest.param(name, path, id=f"{name}/{folder}/{path.name}"))
    return params


@pytest.mark.parametrize(("harness", "path"), _inputs())
def test_fixed_fuzz_input_keeps_the_harness_properties(harness: str, path: Path) -> None:
    """The stored input satisfies the harness's properties: for the pass decoder only PassError
    escapes and accepted passes re-verify identically; for the verify request parser only
    BadRequest/ValidationFailed escape and accepted scans keep their fields; for the scan-entry
    decoder only ValueError escapes and what it returns the scan log's COPY can encode."""
    one_input: Callable[[bytes], None] = _harness(harness).test_one_input
    one_input(path.read_bytes())


def test_every_harness_has_fixed_inputs() -> None:
    """Control: each harness has stored inputs, so the replay above is not vacuous."""
    for name in HARNESSES:
        assert any((FUZZ / "corpus" / name).glob("*")), name
