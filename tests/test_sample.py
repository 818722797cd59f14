"""sample.py: group sampling (every sampler path draws the same tokens), temperature and top-k, rewards, rollout
statistics, pass@k and evaluation."""
import math

import pytest
import torch

import model as M
import reward as R
import sample as S
from conftest import ROOT, run

LAB = ROOT / "tutorial" / "lab.pt"  # the committed classroom model: a trained model that reads its prompt


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """This module's tests run on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return M.GPT(M.PRESETS["tiny"]).eval()


@pytest.fixture(scope="module")
def lab():
    return M.model_from_checkpoint(M.load_checkpoint(str(LAB))).eval()


def prompts(n, seed=0):
    return [S.prompt_ids(p) for p in R.make_split("test", n, seed=seed)]


class EndsOften(torch.nn.Module):
    """The tiny model with +3 on the end token's logit: rows end after ~14 tokens on average, at different steps."""

    def __init__(self, m):
        super().__init__()
        self.m, self.config, self.lm_head, self.transformer = m, m.config, m.lm_head, m.transformer

    def new_cache(self, *a, **kw):
        return self.m.new_cache(*a, **kw)

    def forward(self, idx, pad=None, cache=None):
        logits = self.m(idx, pad=pad, cache=cache)
        logits[..., R.EOS_ID] += 3.0
        return logits


# --- every sampler path draws the same tokens --------------------------------------------------------------

def test_cached_and_naive_sampling_give_same_tokens(tiny):
    ps = prompts(4)
    for temp in (0.0, 1.0):
        gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
        a = S.generate(tiny, ps, G=3, max_new_tokens=24, temperature=temp, generator=gen())
        b = S.generate(tiny, ps, G=3, max_new_tokens=24, temperature=temp, generator=gen(), use_cache=False)
        assert torch.equal(a.response, b.response)


def test_dropping_finished_rows_samples_the_same_tokens(tiny, monkeypatch):
    model, kept = EndsOften(tiny), []
    keep = M.KVCache.keep
    monkeypatch.setattr(M.KVCache, "keep", lambda self, rows: (kept.append(rows.numel()), keep(self, rows)))
    for temp, top_k in ((1.0, None), (1.3, 100)):
        gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
        kw = dict(G=4, max_new_tokens=40, temperature=temp, top_k=top_k)
        kept.clear()
        a = S.generate(model, prompts(8), generator=gen(), **kw)
        assert kept and kept[-1] < 32  # rows left the batch and the cache
        b = S.generate(model, prompts(8), generator=gen(), compact=False, **kw)
        c = S.generate(model, prompts(8), generator=gen(), use_cache=False, **kw)
        assert torch.equal(a.response, b.response) and torch.equal(a.response, c.response)
        assert a.texts == b.texts and torch.equal(a.finished, b.finished)


def test_static_cache_samples_the_same_tokens(tiny, monkeypatch):
    """generate(static=True): every decode step attends over the whole zero-filled buffer with the unwritten
    positions masked and writes at a tensor position (what a CUDA graph needs); no rows leave the batch. Then again
    with every float tensor from torch.empty / new_empty full of NaN, as uninitialized memory may be: the static
    cache must not read any (it zero-fills), the growing one must write every position before it reads it."""
    model, gen = EndsOften(tiny), lambda: torch.Generator().manual_seed(7)
    runs = [dict(G=4, max_new_tokens=40, temperature=temp, top_k=top_k) for temp, top_k in ((1.0, None), (1.3, 100))]
    want = [S.generate(model, prompts(8), generator=gen(), **kw) for kw in runs]
    assert want[0].mask.sum(1).min() < 20 < want[0].mask.sum(1).max()  # rows ended at different steps
    for poison in (False, True):
        if poison:
            nan = lambda t: t.fill_(float("nan")) if t.is_floating_point() else t  # noqa: E731
            empty, new_empty = torch.empty, torch.Tensor.new_empty
            monkeypatch.setattr(torch, "empty", lambda *a, **k: nan(empty(*a, **k)))
            monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: nan(new_empty(self, *a, **k)))
        for a, kw in zip(want, runs):
            for static in (False, True):
                b = S.generate(model, prompts(8), generator=gen(), static=static, **kw)
                assert torch.equal(a.response, b.response) and a.texts == b.texts


@pytest.mark.slow
def test_compiled_decode_samples_the_same_tokens(tiny):
    """generate(compile=True): the decode steps through torch.compile'd blocks draw the eager tokens. Slow (it
    compiles) and it needs a C++ compiler on a CPU, hence `pytest -m slow`, outside the default suite."""
    for temp in (1.0, 0.0):
        gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
        a = S.generate(EndsOften(tiny), prompts(6), G=4, max_new_tokens=32, temperature=temp, generator=gen())
        for static in (False, True):
            b = S.generate(EndsOften(tiny), prompts(6), G=4, max_new_tokens=32, temperature=temp, generator=gen(),
                           compile=True, static=static)
            assert torch.equal(a.response, b.response)


def test_cuda_graph_sampler_is_opt_in(monkeypatch):
    """STATIC_ON_CUDA (the static cache and CUDA-graph replay on a GPU) is on only with PRERL_CUDA_GRAPH=1."""
    monkeypatch.delenv("PRERL_CUDA_GRAPH", raising=False)
    code = "import sample; print(sample.STATIC_ON_CUDA)"
    got = []
    for env in (None, {"PRERL_CUDA_GRAPH": "1"}):
        p = run("-c", code, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-1500:]
        got.append(p.stdout.strip())
    assert got == ["False", "True"]


# --- what a sampled group holds ----------------------------------------------------------------------------

def test_sampling_is_reproducible_with_a_seed(tiny):
    ps = prompts(4)
    a = S.generate(tiny, ps, G=4, generator=torch.Generator().manual_seed(1))
    b = S.generate(tiny, ps, G=4, generator=torch.Generator().manual_seed(1))
    c = S.generate(tiny, ps, G=4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.response, b.response) and a.texts == b.texts
    assert not torch.equal(a.response[:, :5], c.response[:, :5])


def test_pad_and_bos_are_never_sampled(tiny):
    ro = S.generate(tiny, prompts(8), G=8, max_new_tokens=40, generator=torch.Generator().manual_seed(3))
    assert not (ro.response == R.BOS_ID).any()
    # a pad token is only ever written after the end token: each row's mask is a prefix, with no holes
    assert (ro.mask[:, 1:] <= ro.mask[:, :-1]).all()


def test_each_row_of_a_group_draws_its_own_first_token(tiny):
    """Every row of a group samples its own first token, none is drawn once per prompt and broadcast to the group:
    an untrained model is near-uniform over 259 tokens, so the 16 rows of a prompt start with many tokens."""
    ro = S.generate(tiny, prompts(2), G=16, max_new_tokens=2, generator=torch.Generator().manual_seed(0))
    for b in range(2):
        assert len(set(ro.response[b * 16:(b + 1) * 16, 0].tolist())) > 4


class EchoesLastToken:
    """A fake model whose next token is always the last token it saw: the greedy first response token of a
    prompt is that prompt's last token, so every sample of prompt b must start with it."""

    def __init__(self):
        self.config = M.GPTConfig(block_size=64)
        self.lm_head = torch.nn.Linear(1, 1)

    def __call__(self, idx, pad=None, cache=None):
        logits = torch.full((*idx.shape, M.GPTConfig().vocab_size), -1e9)
        logits[torch.arange(idx.size(0)), -1, idx[:, -1]] = 0
        return logits


def test_group_rows_follow_their_own_prompt():
    prompts = [[R.BOS_ID, 65], [R.BOS_ID, 66, 67], [R.BOS_ID, 68]]  # last tokens A, C, D; left-padded
    ro = S.generate(EchoesLastToken(), prompts, G=3, max_new_tokens=2, temperature=0, use_cache=False)
    assert ro.response[:, 0].tolist() == [65] * 3 + [67] * 3 + [68] * 3  # row b*G + g is a sample of prompt b


def test_cached_group_sampling_keeps_each_prompts_cache(lab):
    """After the prefill, row b*G + g must decode from prompt b's keys and values: greedy decoding with the cache
    equals decoding without it, for prompts whose continuations differ."""
    prompts = [S.prompt_ids(p) for p in R.make_split("test", 3)]
    prompts[1] = prompts[1][:5]  # left padding too
    kw = dict(G=2, max_new_tokens=6, temperature=0)
    naive = S.generate(lab, prompts, use_cache=False, **kw).response
    assert len({tuple(r) for r in naive.tolist()}) >= 2  # the precondition: prompts with different continuations
    torch.testing.assert_close(S.generate(lab, prompts, use_cache=True, **kw).response, naive)


class EndsAt:
    """A fake model that writes 'A' until response position stops[row], then the end token.
    It is called without a cache, so the response length so far is idx's length minus the 2 prompt tokens."""

    def __init__(self, stops):
        self.stops = torch.tensor(stops)
        self.config = M.GPTConfig(block_size=64)
        self.lm_head = torch.nn.Linear(1, 1)

    def __call__(self, idx, pad=None, cache=None):
        t = idx.size(1) - 2
        logits = torch.full((idx.size(0), idx.size(1), M.GPTConfig().vocab_size), -1e9)
        logits[:, -1, 65] = 0
        end = self.stops == t
        logits[end, -1, 65] = -1e9
        logits[end, -1, R.EOS_ID] = 0
        return logits


def test_mask_covers_response_through_end_token_and_nothing_after():
    fake = EndsAt([2, 5, 0, 9])
    ro = S.generate(fake, [[R.BOS_ID, 66]] * 4, G=1, max_new_tokens=8, use_cache=False, temperature=0)
    for row, stop in enumerate([2, 5, 0, 9]):
        want = min(stop + 1, 8)  # the tokens before the end token, plus the end token itself
        assert ro.mask[row].tolist() == [True] * want + [False] * (ro.mask.size(1) - want)
        assert bool(ro.finished[row]) == (stop < 8)
        assert ro.texts[row] == "A" * min(stop, 8)
    assert (ro.response[~ro.mask] == R.PAD_ID).all()


# --- the sampler's temperature and top-k -------------------------------------------------------------------

def draw(logits, n=20000, **kw):
    g = torch.Generator().manual_seed(0)
    toks = S.sample_token(logits.expand(n, -1), generator=g, **kw)
    return torch.bincount(toks, minlength=logits.size(-1)).float() / n


def test_temperature_scales_the_logits():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert draw(logits, temperature=1.0, top_k=None)[1] == pytest.approx(0.75, abs=0.015)
    p2 = 3 ** 0.5 / (1 + 3 ** 0.5)  # T = 2: softmax(logits / 2)
    assert draw(logits, temperature=2.0, top_k=None)[1] == pytest.approx(p2, abs=0.015)
    assert draw(logits, temperature=0.25, top_k=None)[1] == pytest.approx(81 / 82, abs=0.01)
    assert (S.sample_token(logits.expand(5, -1), 0, None, None) == 1).all()  # temperature 0: greedy


def test_top_k_keeps_the_k_best_and_renormalizes():
    logits = torch.tensor([[math.log(1.0), math.log(4.0), math.log(2.0), math.log(3.0)]])
    p = draw(logits, temperature=1.0, top_k=2)
    assert p[0] == 0 and p[2] == 0
    assert p[1] == pytest.approx(4 / 7, abs=0.015) and p[3] == pytest.approx(3 / 7, abs=0.015)
    assert draw(logits, n=500, temperature=1.0, top_k=1)[1] == 1.0


# --- rewards and rollout statistics ------------------------------------------------------------------------

def test_truncated_response_scores_zero_even_with_the_right_answer():
    z = torch.zeros(2, 1, dtype=torch.long)
    ro = S.Rollout(z, torch.zeros(2, dtype=torch.long), z, z.bool(), torch.tensor([True, False]), ["1+1=2;#2"] * 2)
    assert S.rewards(ro, [2, 2]) == [1.0, 0.0]


def test_rollout_stats_by_value():
    texts = ["a wait b", "x", "alternatively", "wait wait", "#1", "#2"]
    z = torch.zeros(6, 2, dtype=torch.long)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 0], [1, 0], [1, 0]], dtype=torch.bool)
    finished = torch.tensor([True, True, False, True, True, True])
    ro = S.Rollout(z, torch.zeros(6, dtype=torch.long), z, mask, finished, texts)
    st = S.rollout_stats(ro, torch.tensor([1., 0., 1., 1., 0., 0.]), 2)  # groups: mixed, all right, all wrong
    assert st["reward"] == 0.5 and st["frac_reward_zero_std"] == pytest.approx(2 / 3)
    assert st["solved_all"] == 1 and st["solved_none"] == 1
    assert st["length"] == pytest.approx(7 / 6) and st["truncated"] == pytest.approx(1 / 6)
    assert st["wait_share"] == pytest.approx(2 / 6) and st["alternatively_share"] == pytest.approx(1 / 6)


# --- pass@k and evaluation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,k,want", [
    (8, 0, 1, 0.0), (8, 8, 4, 1.0), (8, 2, 1, 0.25), (4, 1, 2, 0.5),
    (5, 2, 2, 1 - 3 / 10), (10, 3, 5, 1 - 21 / 252), (16, 15, 2, 1.0),
])
def test_pass_at_k_matches_closed_form(n, c, k, want):
    assert S.pass_at_k(n, c, k) == pytest.approx(want)


@pytest.mark.parametrize("n,c,k,want", [(5, 3, 2, 1 - 1 / 10), (4, 2, 2, 1 - 1 / 6), (3, 0, 3, 0.0), (3, 1, 3, 1.0)])
def test_pass_at_k_when_the_wrong_samples_just_fill_k(n, c, k, want):
    assert S.pass_at_k(n, c, k) == pytest.approx(want)


def test_evaluate_samples_at_its_temperature(lab, monkeypatch):
    """evaluate(temperature=t) samples at t: at 0 it is greedy decoding whatever the seed; at 1e-4 it draws the
    greedy tokens too, whatever the seed (so the temperature, not the seed, decides); at 1.0 two seeds give
    other samples and other metrics."""
    problems = R.make_split("test", 6)
    texts, real = [], S.generate

    def spy(*a, **k):  # every response evaluate samples, not only the first per problem that it returns
        ro = real(*a, **k)
        texts.extend(ro.texts)
        return ro
    monkeypatch.setattr(S, "generate", spy)

    def ev(temperature, seed):
        texts.clear()
        metrics, _ = S.evaluate(lab, problems, n=4, max_new_tokens=48, temperature=temperature, seed=seed)
        return metrics, list(texts)

    greedy = real(lab, [S.prompt_ids(p) for p in problems], G=4, max_new_tokens=48, temperature=0).texts
    at0 = [ev(0, seed) for seed in (0, 1)]
    cold = [ev(1e-4, seed) for seed in (0, 1)]
    hot = [ev(1.0, seed) for seed in (0, 1)]
    assert at0[0] == at0[1] and at0[0][1] == greedy
    assert cold[0][1] == cold[1][1] == greedy and cold[0][0] == at0[0][0]
    assert hot[0][1] != hot[1][1] and hot[0][0] != hot[1][0]
    # at temperature 1 the samples of one prompt differ from each other, and from greedy decoding
    assert any(len(set(hot[0][1][4 * b:4 * b + 4])) > 1 for b in range(len(problems)))
    assert hot[0][1] != greedy
