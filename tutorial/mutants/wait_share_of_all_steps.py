"""Exercise 10 with the shares taken over all steps instead of over the wrong (or the right) ones."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions.my_losses import wait_after_steps as right_answer

EXERCISE, HINT = 10, "share of the wrong steps"


def wait_after_steps(texts):
    out = right_answer(texts)
    total = max(out["wrong_steps"] + out["right_steps"], 1)
    out["wait_after_wrong"] *= out["wrong_steps"] / total
    out["wait_after_right"] *= out["right_steps"] / total
    return out
