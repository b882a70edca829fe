"""The trial zygote (modelyard.registry.zygote): its answers, deadlines, deaths and lifetime."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from modelyard.registry import zygote


def echo(payload: bytes, suffix: bytes) -> bytes:
    return bytes(payload) + suffix


def pid_chain(payload: bytes) -> bytes:
    """The runner's own pid, its supervisor's and the zygote's."""
    supervisor = os.getppid()
    stat = Path(f"/proc/{supervisor}/stat").read_text().rsplit(")", 1)[1].split()
    return f"{os.getpid()} {supervisor} {stat[1]}".encode()


def sleeper(payload: bytes) -> bytes:
    time.sleep(60)
    return b""


def exits(payload: bytes, code: int) -> bytes:
    os._exit(code)


def kills_itself(payload: bytes) -> bytes:
    os.kill(os.getpid(), signal.SIGKILL)
    return b""


def raises(payload: bytes) -> bytes:
    raise RuntimeError("boom")


def chatty(payload: bytes) -> bytes:
    return b"x" * 5000


def test_a_target_gets_its_payload_and_args() -> None:
    assert zygote.run(echo, b"abc", (b"-def",), timeout=10, answer_limit=100) == b"abc-def"


def test_a_large_payload_arrives_whole() -> None:
    payload = os.urandom(1 << 20) * 40  # 40 MiB
    answer = zygote.run(echo, payload, (b"",), timeout=30, answer_limit=len(payload))
    assert answer == payload


def test_each_run_is_a_fresh_grandchild_of_one_zygote() -> None:
    first = [int(x) for x in zygote.run(pid_chain, b"", (), timeout=10, answer_limit=100).split()]
    second = [int(x) for x in zygote.run(pid_chain, b"", (), timeout=10, answer_limit=100).split()]
    assert first[0] != second[0] and first[1] != second[1]  # new runner, new supervisor
    assert first[2] == second[2] != os.getpid()  # the same zygote, not this process
    assert Path(f"/proc/{first[2]}/comm").read_text().strip() == "trial-zygote"


def test_a_runner_past_its_deadline_is_killed() -> None:
    started = time.monotonic()
    with pytest.raises(zygote.Timeout, match="within 0.5 s"):
        zygote.run(sleeper, b"", (), timeout=0.5, answer_limit=100)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(("target", "args", "how"), [
    (exits, (3,), "exit code 3"),
    (kills_itself, (), "killed by signal 9"),
    (raises, (), "exit code 70"),
    (chatty, (), "longer than 100 bytes"),
])
def test_a_runner_without_an_answer_says_how_it_ended(target: zygote.Target, args: tuple[int, ...], how: str) -> None:
    with pytest.raises(zygote.Died, match=how):
        zygote.run(target, b"", args, timeout=10, answer_limit=100)


def test_many_threads_at_once_each_get_their_own_answer() -> None:
    answers: dict[int, bytes] = {}

    def ask(i: int) -> None:
        answers[i] = zygote.run(echo, str(i).encode(), (b"!",), timeout=30, answer_limit=100)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {i: f"{i}!".encode() for i in range(12)}


def test_a_dead_zygote_is_replaced_on_the_next_run() -> None:
    zygote_pid = int(zygote.run(pid_chain, b"", (), timeout=10, answer_limit=100).split()[2])
    os.kill(zygote_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zygote_pid}").exists() and Path(f"/proc/{zygote_pid}/stat").read_text().split()[2] != "Z" \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert zygote.run(echo, b"back", (b"",), timeout=30, answer_limit=100) == b"back"
    assert int(zygote.run(pid_chain, b"", (), timeout=10, answer_limit=100).split()[2]) != zygote_pid


def test_a_warm_zygote_is_forked_and_ends_with_the_last_process_that_holds_it(tmp_path: Path) -> None:
    """What the server's master does: fork the zygote before the workers; the zygote is a child
    of the master, answers the forked workers too, and exits once they all have."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = {sys.path!r}
        from modelyard.registry import zygote
        from tests.registry.test_zygote import pid_chain
        assert zygote.fork_warm(lambda: None)
        chain = zygote.run(pid_chain, b"", (), timeout=10, answer_limit=100).split()
        worker = os.fork()
        if worker == 0:
            theirs = zygote.run(pid_chain, b"", (), timeout=10, answer_limit=100).split()
            os._exit(0 if theirs[2] == chain[2] else 1)
        assert os.waitpid(worker, 0)[1] == 0
        print(int(chain[2]), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    zygote_pid = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zygote_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{zygote_pid}").exists()


def test_no_warm_fork_while_another_thread_runs() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        preloaded: list[bool] = []
        assert zygote.fork_warm(lambda: preloaded.append(True)) is False
        assert preloaded == [True]
    finally:
        stop.set()
        other.join()
