"""Exercise 10 judging a step with a check digit by whether its result ends in that digit."""
import re

from tutorial.solutions.my_losses import *  # noqa: F401,F403
from reward import STEP, step_is_wrong

EXERCISE, HINT = 10, "check digit `|d` is not judged"


def judged(step):
    m = re.fullmatch(rf"\s*{STEP}\s*", step)
    if m is None or "|" not in step:
        return step_is_wrong(step)
    return int(m.group(4)) % 10 != int(step.rsplit("|", 1)[1])


def wait_after_steps(texts):
    n, waits, redo_right = {True: 0, False: 0}, {True: 0, False: 0}, 0
    for text in texts:
        for part in text.split(";"):
            first, *redos = part.split("alternatively")[-1].split(" wait ")
            wrong = judged(first)
            if wrong is None:
                continue
            n[wrong] += 1
            if redos:
                waits[wrong] += 1
                redo_right += step_is_wrong(redos[0]) is False
    return {"wrong_steps": n[True], "right_steps": n[False],
            "wait_after_wrong": waits[True] / max(n[True], 1), "wait_after_right": waits[False] / max(n[False], 1),
            "redo_right": redo_right / max(waits[True] + waits[False], 1)}
