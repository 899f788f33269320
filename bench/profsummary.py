"""Summarise py-spy's raw (collapsed stack) output: where the time goes.

    python bench/profsummary.py PROFILE.txt [--top 30]

Prints the share of samples per function, inclusive (the function and what it
calls) and self (the function's own lines, system calls included), and the
hottest lines.  Profiles come from ``bench/scale.py run --profile DIR``.
"""

from __future__ import annotations

import argparse
import collections
import re

FRAME = re.compile(r"(.*) \((.*):(\d+)\)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [fr.strip() for fr in stack.split(";")]
            names = []
            for fr in frames:
                m = FRAME.match(fr)
                names.append(f"{m.group(1)} ({m.group(2).rsplit('/', 1)[-1]})" if m else fr)
            for name in set(names):
                inclusive[name] += n
            own[names[-1]] += n
            lines[frames[-1]] += n
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own), ("self, by line", lines)):
        print(f"\n--- {title}")
        for name, n in counter.most_common(args.top):
            print(f"{100 * n / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
