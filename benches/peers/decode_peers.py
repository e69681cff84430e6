"""Peer benchmark: firehose (com.atproto.sync.subscribeRepos) frame decoding in Python.

Measures single-threaded decode throughput (frames/s) over in-memory frame logs
(repeated `[u32 LE length][frame bytes]`) for two peers:

  atproto  the Python SDK path: Frame.from_bytes -> parse_subscribe_repos_message
           (pydantic models) -> CAR.from_bytes(commit.blocks) for #commit frames.
  libipld  raw libipld: decode_dag_cbor_multi (header + body) -> decode_car(blocks)
           for #commit frames.

Each figure is the best of --reps repetitions, each repetition running whole
passes over the corpus for at least --min-time seconds, after a warm-up pass.
Usage: decode_peers.py [--reference-pds PATH] [--jetstream PATH] [--json OUT]
"""

import argparse
import json
import math
import platform
import struct
import sys
import time
from importlib.metadata import version
from pathlib import Path

import libipld
from atproto import CAR, firehose_models, models, parse_subscribe_repos_message

REPO = Path(__file__).resolve().parents[2]
COMMIT = models.ComAtprotoSyncSubscribeRepos.Commit


def load_frames(path):
    if not Path(path).is_file():
        sys.exit(f"frame log not found: {path} (pass --reference-pds / --jetstream)")
    data = Path(path).read_bytes()
    frames, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        frames.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    if off != len(data):
        sys.exit(f"{path}: truncated frame log")
    return frames


def decode_atproto(frames):
    commits = 0
    for raw in frames:
        frame = firehose_models.Frame.from_bytes(raw)
        msg = parse_subscribe_repos_message(frame)
        if isinstance(msg, COMMIT) and msg.blocks:
            CAR.from_bytes(msg.blocks)
            commits += 1
    return commits


def decode_libipld(frames):
    commits = 0
    for raw in frames:
        header, body = libipld.decode_dag_cbor_multi(raw)
        if header.get("t") == "#commit" and body.get("blocks"):
            libipld.decode_car(body["blocks"])
            commits += 1
    return commits


PEERS = {"atproto": decode_atproto, "libipld": decode_libipld}


def bench(fn, frames, reps, min_time):
    t0 = time.perf_counter()
    commits = fn(frames)  # warm-up, also calibrates the number of passes
    passes = max(1, math.ceil(min_time / (time.perf_counter() - t0)))
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(passes):
            fn(frames)
        best = max(best, passes * len(frames) / (time.perf_counter() - t0))
    return best, commits


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-pds", default=REPO / "tests/fixtures/reference-pds.frames")
    ap.add_argument("--jetstream", default=REPO / "tests/fixtures/jetstream/frames.bin")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per repetition")
    ap.add_argument("--json", help="write {peer: {corpus: frames_per_s}} here")
    args = ap.parse_args()
    corpora = {"reference-pds": args.reference_pds, "jetstream": args.jetstream}
    corpora = {name: load_frames(path) for name, path in corpora.items()}

    pkgs = {p: version(p) for p in ("atproto", "libipld", "pydantic", "pydantic-core")}
    print(f"python   {platform.python_version()} ({platform.python_implementation()})")
    print("packages " + ", ".join(f"{p} {v}" for p, v in pkgs.items()))
    print(f"cpu      {cpu_model()}")
    print(f"method   single thread, best of {args.reps} reps x >= {args.min_time}s, after warm-up\n")

    results = {peer: {} for peer in PEERS}
    print(f"{'corpus':<15}{'frames':>8}{'peer':>10}{'frames/s':>12}{'commit CARs':>13}")
    for corpus, frames in corpora.items():
        for peer, fn in PEERS.items():
            fps, commits = bench(fn, frames, args.reps, args.min_time)
            results[peer][corpus] = round(fps)
            print(f"{corpus:<15}{len(frames):>8}{peer:>10}{fps:>12,.0f}{commits:>13}", flush=True)

    out = json.dumps(results, indent=2)
    print("\n" + out)
    if args.json:
        Path(args.json).write_text(out + "\n")


if __name__ == "__main__":
    main()
