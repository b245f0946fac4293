"""Startup to ready, and a reload taking effect, in milliseconds.

    python3 benches/lifecycle.py TOOLGATE_BIN POLICY_FILE [RUNS]

Copies POLICY_FILE (beside it, so relative paths still resolve) onto free
ports, starts toolgate on it RUNS times and times the start until /readyz
answers 200; then, on one running toolgate, changes the policy RUNS times
and times each write until /metrics shows the next generation. Prints the
medians. Run by benches/load.sh.
"""

import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status, answer.read().decode()
    except OSError:
        return 0, ""


def main():
    binary, template, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5
    text = open(template).read()
    admin = free_port()
    text = re.sub(r"listen: \{[^}]*\}", f"listen: {{ proxy: 127.0.0.1:{free_port()}, admin: 127.0.0.1:{admin} }}", text)
    policy = os.path.join(os.path.dirname(template), "lifecycle.yaml")
    open(policy, "w").write(text)
    starts = []
    for _ in range(runs):
        started = time.monotonic()
        gate = subprocess.Popen([binary, "run", "--config", policy], stderr=subprocess.DEVNULL)
        while get(f"http://127.0.0.1:{admin}/readyz")[0] != 200:
            if time.monotonic() - started > 10:
                sys.exit("lifecycle.py: toolgate was not ready within 10 s")
            time.sleep(0.0005)
        starts.append((time.monotonic() - started) * 1000)
        gate.terminate()
        gate.wait()
    gate = subprocess.Popen([binary, "run", "--config", policy], stderr=subprocess.DEVNULL)
    reloads = []
    try:
        while get(f"http://127.0.0.1:{admin}/readyz")[0] != 200:
            time.sleep(0.001)
        for generation in range(2, runs + 2):
            time.sleep(0.3)
            # A real change: one more allowed tool name.
            open(policy, "w").write(text.replace("deny: [", f'deny: ["reload_{generation}", '))
            written = time.monotonic()
            while f"toolgate_policy_generation {generation}" not in get(f"http://127.0.0.1:{admin}/metrics")[1]:
                if time.monotonic() - written > 10:
                    sys.exit(f"lifecycle.py: reload {generation} never took effect")
                time.sleep(0.002)
            reloads.append((time.monotonic() - written) * 1000)
    finally:
        gate.terminate()
        gate.wait()
        os.remove(policy)
    print(f"{statistics.median(starts):.1f} {statistics.median(reloads):.1f}")


main()
