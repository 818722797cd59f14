"""Exercise 10 with each redo after ` wait ` counted as a step of its own."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from reward import step_is_wrong

EXERCISE, HINT = 10, "not a step of its own"


def wait_after_steps(texts):
    n, waits, redo_right = {True: 0, False: 0}, {True: 0, False: 0}, 0
    for text in texts:
        for part in text.split(";"):
            steps = part.split("alternatively")[-1].split(" wait ")
            for i, step in enumerate(steps):
                wrong = step_is_wrong(step)
                if wrong is None:
                    continue
                n[wrong] += 1
                if i + 1 < len(steps):
                    waits[wrong] += 1
                    redo_right += step_is_wrong(steps[i + 1]) is False
    return {"wrong_steps": n[True], "right_steps": n[False],
            "wait_after_wrong": waits[True] / max(n[True], 1), "wait_after_right": waits[False] / max(n[False], 1),
            "redo_right": redo_right / max(waits[True] + waits[False], 1)}
