"""In-process speed of reading one EU DCC (ES256) from its ``HC1:`` text, on one core.

Rows measured in the same run on the same certificate: ``passcode.domain.dcc.read_dcc``
(everything a scan needs: decode, signature, validity, key usage, schema, the certificate
value) and the plain baseline that only decodes and checks the signature with the libraries a
plain reader uses (the ``base45`` package → zlib → cbor2 → ``cryptography`` ECDSA verify, the
key already loaded). The reader must be at least as fast as the baseline. A last row runs the
same baseline on our own Base45 decoder, to show what the reader's extra checks cost.

    .venv/bin/python -m loadtest.dcc_bench [--seconds 3]
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable

import base45
import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from passcode.domain.dcc import read_dcc, signer_from_der
from passcode.domain.passfmt import b45decode
from tests.dcc_maker import NOW, claims, make_signer, sign, vaccination


def baseline(
    text: str, key: ec.EllipticCurvePublicKey, b45: Callable[[str], bytes] = base45.b45decode
) -> object:
    """What a plain reader does: no schema, no key usage, no validity, no bounds."""
    message = cbor2.loads(zlib.decompress(b45(text[4:])))
    protected, _, payload, signature = message.value
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.verify(der, to_sign, ec.ECDSA(hashes.SHA256()))
    return cbor2.loads(payload)[-260][1]


def rates(calls: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Calls per second of each, best of several interleaved rounds: the machine is shared, so
    each candidate gets its turn in every round rather than one long stretch of its own."""
    best = dict.fromkeys(calls, 0.0)
    rounds = 10
    for _ in range(rounds):
        for name, call in calls.items():
            count, start = 0, time.perf_counter()
            deadline = start + seconds / rounds / len(calls)
            while True:
                for _ in range(50):
                    call()
                count += 50
                now = time.perf_counter()
                if now >= deadline:
                    break
            best[name] = max(best[name], count / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    maker = make_signer()
    text = sign(maker, claims(vaccination()))
    signer = signer_from_der(maker.der)
    trusted = {signer.kid: signer}
    key = signer.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert read_dcc(text, trusted, now=NOW).payload == baseline(text, key)
    got = rates(
        {
            "ours": lambda: read_dcc(text, trusted, now=NOW),
            "plain": lambda: baseline(text, key),
            "ours_b45": lambda: baseline(text, key, b45decode),
        },
        args.seconds,
    )
    ours, plain, ours_b45 = got["ours"], got["plain"], got["ours_b45"]
    print(f"{'reader (one core, HC1: text to result)':<52} {'per second':>11}")
    print(f"{'passcode read_dcc (all checks)':<52} {ours:>11,.0f}")
    print(f"{'plain: base45 + zlib + cbor2 + cryptography':<52} {plain:>11,.0f}")
    print(f"{'plain on our Base45 (decode + verify only)':<52} {ours_b45:>11,.0f}")
    print(f"ratio {ours / plain:.2f} ({'ok' if ours >= plain else 'SLOWER than the baseline'})")


if __name__ == "__main__":
    main()
