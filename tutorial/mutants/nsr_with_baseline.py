"""Exercise 6 with a group baseline in NSR: all-wrong groups are then left alone, which Zhu et al.'s NSR does not do."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions.my_losses import group_advantages, ppo_clip_loss

EXERCISE, HINT = 6, "no baseline"


def nsr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    adv = group_advantages(rewards, 4)  # G hard-coded: the signature has no G, a hint that no group is needed
    return ppo_clip_loss(logp, logp.detach(), adv, mask & (adv < 0)[:, None], agg=agg, norm=norm)
