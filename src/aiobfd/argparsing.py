"""What the three command lines (aiobfd, aiobfdctl, aiobfd-exabgp) share in argparse.

A bad argument ends with one line on stderr and exit status 2, without the
usage block, and numbers are checked against their range with the unit in
the message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports an error in one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def whole_number(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{unit}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {low} to {high}{unit}")
        return value

    return parse
