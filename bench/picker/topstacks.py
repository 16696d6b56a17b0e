"""Summarise a py-spy ``--format raw`` profile: the functions with the most samples, self and total.

Run: ``python bench/picker/topstacks.py profile.txt [--filter extproc] [--top 40]``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--thread", default="", help="only stacks whose first frame contains this")
    args = parser.parse_args()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or (args.thread and args.thread not in stack.split(";", 1)[0]):
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"{samples} samples")
    print("-- self --")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / samples:5.1f}% {frame}")
    print("-- total --")
    for frame, n in total.most_common(args.top):
        print(f"{100 * n / samples:5.1f}% {frame}")


if __name__ == "__main__":
    main()
