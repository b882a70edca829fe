"""bench/steps.py (issue 27's table of what each step of a single-row predict costs) measures a
step as what the lane loses when the step is replaced by its result. Its table is only true while
every replacement is on the lane's path and gives the same answer: checked here without valgrind,
so that a refactor of the lane cannot silently turn a step's cost into 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_step_replacement_is_called_by_the_lane_and_gives_the_same_answer() -> None:
    script = "import json\nfrom bench import steps\nprint(json.dumps({'steps': list(steps.STEPS), " \
             "'answer': steps.ANSWER.decode(), 'outcome': steps.check(requests=3)}))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    outcome = report["outcome"]
    assert outcome[""] == {"status": "200 OK", "body": report["answer"], "calls": 0}
    assert set(outcome) == {"", *report["steps"]}
    for step in report["steps"]:
        assert outcome[step] == {"status": "200 OK", "body": report["answer"], "calls": 3}, step
