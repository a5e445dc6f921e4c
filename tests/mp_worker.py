"""A separate OS process for tests/test_multiprocess.py: guard calls, report as JSON lines.

Usage: ``python -m tests.mp_worker (trip|watch) CIRCUIT GO_FILE``. It loads the circuit,
prints ``{"ready": true}``, waits for GO_FILE to exist (a start barrier), then:

* ``trip``: calls a failing function until the circuit rejects it; prints when;
* ``watch``: reads ``breaker(CIRCUIT).state`` every 5 ms until OPEN; prints when.
"""

from __future__ import annotations

import json
import os
import sys
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from circuitbreaker_app import CircuitOpenError, State, breaker

    role, name, go_file = sys.argv[1:4]
    guarded = breaker(name)
    assert guarded.state is State.CLOSED
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.time() + 20
    while not os.path.exists(go_file):
        if time.time() > deadline:
            sys.exit("no go signal")
        time.sleep(0.002)

    def boom() -> None:
        raise ConnectionError("upstream down")

    if role == "trip":
        failures = 0
        while time.time() < deadline:
            try:
                guarded.call(boom)
            except ConnectionError:
                failures += 1
            except CircuitOpenError:
                break
        print(json.dumps({"rejected_at": time.time(), "failures": failures}), flush=True)
    elif role == "watch":
        while guarded.state is not State.OPEN and time.time() < deadline:
            time.sleep(0.005)
        print(json.dumps({"saw_open_at": time.time()}), flush=True)
    else:
        sys.exit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
