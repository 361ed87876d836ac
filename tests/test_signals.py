"""Stop signals: the first is recorded, duplicates are ignored, a later second exits at once."""

import os
import signal
import subprocess
import sys
import time

from hpcvmc.signals import REPEAT_GRACE, STOP_SIGNALS, StopFlag

SCRIPT = f"""
import os, signal, time
from hpcvmc.signals import StopFlag
flag = StopFlag().install()
os.kill(os.getpid(), signal.SIGUSR1)
os.kill(os.getpid(), signal.SIGTERM)        # a duplicate delivery: ignored
deadline = time.monotonic() + 5
while not flag and time.monotonic() < deadline:  # recorded by the watcher thread
    time.sleep(0.01)
time.sleep(0.2)
# either was first: signals sent microseconds apart may reach different threads in any order
assert flag.signum in (signal.SIGUSR1, signal.SIGTERM)
print("recorded", flush=True)
time.sleep({REPEAT_GRACE} + 0.5)
os.kill(os.getpid(), signal.SIGTERM)        # a real second signal: exit at once
time.sleep(10)
print("not reached", flush=True)
"""


def test_first_signal_recorded_second_exits():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "recorded"
    assert proc.returncode == 128 + signal.SIGTERM
    assert "second signal SIGTERM: exiting now" in proc.stderr


def test_flag_is_false_until_a_signal_arrives():
    flag = StopFlag()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        flag.install()
        assert not flag
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not flag and time.monotonic() < deadline:  # recorded by the watcher thread
            time.sleep(0.01)
        assert flag and flag.signum == signal.SIGUSR1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
