"""The machine's RSA-2048 private-key throughput with ``cryptography``, on every core.

An enrollment costs at least three private-key operations on the server: decrypt the content
key of the request (PKCS#1 v1.5), sign the certificate, sign the CertRep (both PKCS#1 v1.5
with SHA-256). Each process repeats exactly that mix for a fixed time, all processes at once,
so ``ops/s / 3`` is the most enrollments per second this machine could do if a server spent
no time on anything else.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

OPS_PER_ENROLLMENT = 3
MAX_CYCLES = 10_000_000  # the time bound comes first on any real machine


@dataclass(frozen=True)
class RsaBound:
    processes: int
    seconds: float
    ops_per_second: float  # private-key operations/s, all processes together
    per_process: tuple[float, ...]

    @property
    def enrollments_per_second(self) -> float:
        return self.ops_per_second / OPS_PER_ENROLLMENT


def _worker(start_at: float, seconds: float) -> tuple[int, float]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ciphertext = key.public_key().encrypt(os.urandom(16), padding.PKCS1v15())
    data = os.urandom(256)
    for _ in range(2000):  # every process starts the clock at the same moment (<= 10 s)
        if time.time() >= start_at:
            break
        time.sleep(0.005)
    cycles = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline and cycles < MAX_CYCLES:
        key.decrypt(ciphertext, padding.PKCS1v15())
        key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        key.sign(data[::-1], padding.PKCS1v15(), hashes.SHA256())
        cycles += 1
    return cycles * OPS_PER_ENROLLMENT, time.perf_counter() - started


def measure(seconds: float = 3.0, processes: int | None = None) -> RsaBound:
    count = processes or os.cpu_count() or 1
    start_at = time.time() + 2.0  # time for the spawned interpreters to come up
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        futures = [pool.submit(_worker, start_at, seconds) for _ in range(count)]
        results = [f.result(timeout=seconds + 60) for f in futures]
    rates = tuple(ops / elapsed for ops, elapsed in results)
    return RsaBound(count, seconds, sum(rates), rates)
