"""What gradient dropout's random draw costs, next to the matrix product it rides along.

Times, under `jit_compile=True`, one keep/drop mask for the MNIST MLP's two large kernels
(784 x 512 + 512 x 512 entries) drawn as float32 uniforms (one per entry: `gradient_keep_mask`, and
gradient dropout before it became 8-bit), as uint32 integers (one per entry), as float16 uniforms, and
as 8-bit masks from a quarter as many uint32 words (one per four entries, per kernel: what
`drop_gradients` / `GradientDropoutOptimizer` do), against the first layer's 128 x 784 x 512 matmul.
Writes results/gradient_dropout_rng.{json,md}.

    python benchmarks/gradient_dropout_rng.py [--quick]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from common import write_results  # noqa: E402

KERNELS = (784 * 512, 512 * 512)
ENTRIES = sum(KERNELS)
P = 0.1


def kernels():
    shape = (ENTRIES,)

    @tf.function(jit_compile=True)
    def uniform_f32(seed):
        u = tf.random.stateless_uniform(shape, seed, alg="philox")
        return tf.reduce_sum(tf.cast(u >= P, tf.float32))

    @tf.function(jit_compile=True)
    def bits_u32(seed):
        u = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox")
        return tf.reduce_sum(tf.cast(u >= tf.constant(int(P * 2**32), tf.uint32), tf.float32))

    @tf.function(jit_compile=True)
    def uniform_f16(seed):
        u = tf.random.stateless_uniform(shape, seed, dtype=tf.float16, alg="philox")
        return tf.reduce_sum(tf.cast(u >= P, tf.float32))

    @tf.function(jit_compile=True)
    def bytes_u8(seed):
        threshold = tf.constant(round(P * 256), tf.uint8)
        total = 0.0
        for i, n in enumerate(KERNELS):
            words = tf.random.stateless_uniform(
                [-(-n // 4)], seed + [0, i], minval=None, maxval=None, dtype=tf.uint32, alg="philox"
            )
            random_bytes = tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:n]
            total += tf.reduce_sum(tf.cast(random_bytes >= threshold, tf.float32))
        return total

    @tf.function(jit_compile=True)
    def matmul(x, w):
        return tf.reduce_sum(x @ w)

    seed = tf.constant([1, 2], tf.int32)
    x, w = tf.random.normal((128, 784)), tf.random.normal((784, 512))
    return {
        "mask, float32 uniform": (uniform_f32, (seed,)),
        "mask, uint32 bits": (bits_u32, (seed,)),
        "mask, float16 uniform": (uniform_f16, (seed,)),
        "mask, 8-bit from uint32 words (n/4)": (bytes_u8, (seed,)),
        "matmul 128 x 784 x 512": (matmul, (x, w)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    args = parser.parse_args(argv)
    calls, repeats = (10, 3) if args.quick else (50, 7)
    results = {"entries": ENTRIES, "calls": calls, "repeats": repeats, "fastest_ms": {}}
    for name, (fn, inputs) in kernels().items():
        float(fn(*inputs))  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                out = fn(*inputs)
            float(out)
            times.append((time.perf_counter() - start) / calls)
        results["fastest_ms"][name] = 1e3 * min(times)
    lines = ["| operation | fastest of repeats (ms) | ns per kernel entry |", "|---|---|---|"]
    for name, ms in results["fastest_ms"].items():
        per = f"{1e6 * ms / ENTRIES:.2f}" if name.startswith("mask") else "-"
        lines.append(f"| {name} | {ms:.3f} | {per} |")
    write_results("gradient_dropout_rng", results, lines)


if __name__ == "__main__":
    main()
