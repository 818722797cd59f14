"""Exercise 5 keeping A <= 0 for select='negative'."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 5, 'A < 0 strictly'


def prerl_loss(logp_pre, rewards, mask, G, select="all", advantage="r-mean", agg="token-mean", norm=None):
    if select != "negative":
        return right.prerl_loss(logp_pre, rewards, mask, G, select, advantage, agg, norm)
    adv = group_advantages(rewards, G, normalize_std=False) if advantage == "r-mean" else rewards.float() * 2 - 1
    return ppo_clip_loss(logp_pre, logp_pre.detach(), adv, mask & (adv <= 0)[:, None], agg=agg, norm=norm)
