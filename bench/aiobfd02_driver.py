"""Run the original aiobfd 0.2 with many remotes in one process (bench/scale.py).

Run it with the Python of a virtual environment that holds aiobfd 0.2 and
``bitstring<4`` (it does not import with bitstring 4), not with this project's:

    python3 -m venv /tmp/aiobfd02-venv
    /tmp/aiobfd02-venv/bin/pip install aiobfd 'bitstring<4'
    /tmp/aiobfd02-venv/bin/python bench/aiobfd02_driver.py LOCAL REMOTE... -r MS -t MS -m N

aiobfd 0.2's command line takes one remote; its ``aiobfd.Control(local, remotes,
...)`` runs them all in one process, which is what this does.  State changes are
logged one per line (level ERROR and up, as 0.2 logs them) with a timestamp, so
the harness counts Down events from the log.
"""

import argparse
import logging
import socket
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)  # get_event_loop() at import time

import aiobfd  # noqa: E402  - the original 0.2, from its own virtual environment


def main() -> None:
    parser = argparse.ArgumentParser(description="aiobfd 0.2 with many remotes")
    parser.add_argument("local")
    parser.add_argument("remotes", nargs="+")
    parser.add_argument("-r", "--rx-interval", type=int, default=1000, help="ms")
    parser.add_argument("-t", "--tx-interval", type=int, default=1000, help="ms")
    parser.add_argument("-m", "--detect-mult", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.ERROR,
        format="%(created).6f %(levelname)s %(message)s",
    )
    family = socket.AF_INET6 if ":" in args.local else socket.AF_INET
    control = aiobfd.Control(
        args.local,
        args.remotes,
        family=family,
        rx_interval=args.rx_interval * 1000,
        tx_interval=args.tx_interval * 1000,
        detect_mult=args.detect_mult,
    )
    print("aiobfd 0.2 running", len(args.remotes), "sessions", flush=True)
    control.run()


if __name__ == "__main__":
    main()
