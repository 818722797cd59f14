"""The world, the model and the sampler: behaviour that must hold (issue 2)."""
import argparse
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model as M
import reward as R
import sample as S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return M.GPT(M.PRESETS["tiny"]).eval()


def prompts(n, seed=0):
    return [S.prompt_ids(p) for p in R.make_split("test", n, seed=seed)]


# --- tokenizer ---------------------------------------------------------------------------------------------

def test_tokenizer_round_trips_unicode():
    rng = random.Random(0)
    for _ in range(300):
        s = "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(128, 0x2FFF), rng.randint(0x1F300, 0x1F6FF)]))
                    for _ in range(rng.randint(0, 40)))
        assert R.decode(R.encode(s)) == s


def test_typed_special_token_text_stays_plain_text():
    for s in ["<|eos|>", "a<|bos|>b", "<|pad|><|eos|>", "<|endoftext|>"]:
        ids = R.encode(s)
        assert not set(ids) & {R.BOS_ID, R.EOS_ID, R.PAD_ID}
        assert len(ids) == len(s.encode()) and R.decode(ids) == s


# --- task and verifier -------------------------------------------------------------------------------------

def test_solve_uses_usual_precedence():
    assert R.solve("7+5*3") == 22
    assert R.solve("5+23*7-4") == 162
    assert R.solve("3-10") == -7
    assert R.solve("2*3*4-1") == 23


def test_reference_solutions_score_one():
    rng = random.Random(1)
    clean = R.CorpusConfig(slip=0.3, reflect=1.0, guess=0.0, repeat=0.0)  # every slip is caught and redone
    for p in R.make_split("train", 1000):
        text = R.solution_text(rng, p, clean)
        assert R.score(text, p.answer) == 1.0, (p, text)


def test_slips_are_really_wrong_and_habits_score_zero():
    rng = random.Random(2)
    ps = R.make_split("train", 500)
    slips = R.CorpusConfig(slip=1.0, reflect=0.0, transition=0.0, guess=0.0, repeat=0.0)
    for p in ps:
        text = R.solution_text(rng, p, slips)
        steps = text.split(";")[:-1]
        assert steps and all(R.step_is_wrong(s) for s in steps), text
    # repeating the last operation changes the answer (except '*' on a 0, hence a small allowance)
    repeats = R.CorpusConfig(slip=0.0, guess=0.0, repeat=1.0)
    assert sum(R.score(R.solution_text(rng, p, repeats), p.answer) for p in ps) < 0.02 * len(ps)
    guesses = R.CorpusConfig(guess=1.0)
    assert all(R.solution_text(rng, p, guesses).startswith("#") for p in ps[:50])


@pytest.mark.parametrize("text", [
    "1+1=2;#28", "1+1=2;#26",               # off by one
    "#２７", "#٢٧",                          # unicode digits
    "#2_7", "#+27", "# 27", "#27 ", "#27\n", # separators, sign, whitespace
    "#27;#27", "#26;#27",                    # two answers
    "#27x", "#27;", "#027", "#27.0", "",     # trailing junk, leading zero, decimal, empty
    "27", "#" + "2" * 40,                     # no marker, absurdly long
])
def test_near_misses_score_zero(text):
    assert R.score(text, 27) == 0.0


def test_score_accepts_the_agreed_form():
    assert R.score("20+7=27;#27", 27) == 1.0
    assert R.score("3-10=-7;#-7", -7) == 1.0


def test_score_never_raises_on_random_strings():
    rng = random.Random(3)
    alphabet = string.printable + "#-0123456789٢７²₃\u200b<|eos|>"
    for _ in range(10_000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert R.score(s, rng.randint(-50, 50)) in (0.0, 1.0)
    assert R.score(None, 1) == 0.0 and R.score("#1", "x") == 0.0


def test_markers_and_reflection_stats():
    assert R.count_markers("a wait b waiting wait; alternatively") == {"wait": 2, "alternatively": 1}
    st = R.reflection_stats(["99-72=28 wait 99-72=27;#27", "1+1=2 wait 1+1=3;#3"])
    assert st == {"waits": 2, "follows_error": 0.5, "redo_right": 0.5}


def test_splits_are_deterministic_and_ood_is_harder():
    assert R.make_split("test", 20) == R.make_split("test", 20)
    assert R.make_split("test", 50) != R.make_split("train", 50)
    ood = R.make_split("ood", 200)
    biggest = lambda ps: max(max(R.parse_question(p.question)[0]) for p in ps)
    assert biggest(R.make_split("test", 200)) <= 99 < biggest(ood) <= 149


# --- model: KV cache and padding ---------------------------------------------------------------------------

def test_kv_cache_logits_equal_full_forward(tiny):
    idx = torch.randint(0, 256, (3, 20))
    full = tiny(idx)
    cache = tiny.new_cache(3, 20, torch.zeros(3, dtype=torch.long))
    parts = [tiny(idx[:, :8], cache=cache)] + [tiny(idx[:, t:t + 1], cache=cache) for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_left_padding_changes_nothing(tiny):
    a = torch.randint(0, 256, (1, 12))
    padded = torch.cat([torch.full((1, 5), R.PAD_ID), a], 1)
    out = tiny(padded, pad=torch.tensor([5]))[:, 5:]
    torch.testing.assert_close(out, tiny(a), atol=1e-5, rtol=0)
    assert torch.isfinite(tiny(padded, pad=torch.tensor([5]))).all()  # pad rows do not make NaNs


def test_cached_and_naive_sampling_give_same_tokens(tiny):
    ps = prompts(4)
    for temp in (0.0, 1.0):
        gen = lambda: torch.Generator().manual_seed(5)
        a = S.generate(tiny, ps, G=3, max_new_tokens=24, temperature=temp, generator=gen())
        b = S.generate(tiny, ps, G=3, max_new_tokens=24, temperature=temp, generator=gen(), use_cache=False)
        assert torch.equal(a.response, b.response)


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


def test_dropping_finished_rows_samples_the_same_tokens(tiny, monkeypatch):
    model, kept = EndsOften(tiny), []
    keep = M.KVCache.keep
    monkeypatch.setattr(M.KVCache, "keep", lambda self, rows: (kept.append(rows.numel()), keep(self, rows)))
    for temp, top_k in ((1.0, None), (1.3, 100)):
        gen = lambda: torch.Generator().manual_seed(7)
        kw = dict(G=4, max_new_tokens=40, temperature=temp, top_k=top_k)
        kept.clear()
        a = S.generate(model, prompts(8), generator=gen(), **kw)
        assert kept and kept[-1] < 32  # rows were dropped from the batch and the cache
        b = S.generate(model, prompts(8), generator=gen(), compact=False, **kw)
        c = S.generate(model, prompts(8), generator=gen(), use_cache=False, **kw)
        assert torch.equal(a.response, b.response) and torch.equal(a.response, c.response)
        assert a.texts == b.texts and torch.equal(a.finished, b.finished)


def test_static_cache_samples_the_same_tokens(tiny, monkeypatch):
    # generate(static=True): every decode step attends over the whole zero-filled buffer with the unwritten positions
    # masked, and writes at a tensor position (what a CUDA graph needs); no rows leave the batch. Then again with
    # every float tensor from torch.empty / new_empty full of NaN, as uninitialized memory may be: the static cache
    # must not read any (it zero-fills), the growing one must write every position before it reads it.
    model, gen = EndsOften(tiny), lambda: torch.Generator().manual_seed(7)
    runs = [dict(G=4, max_new_tokens=40, temperature=temp, top_k=top_k) for temp, top_k in ((1.0, None), (1.3, 100))]
    want = [S.generate(model, prompts(8), generator=gen(), **kw) for kw in runs]
    assert want[0].mask.sum(1).min() < 20 < want[0].mask.sum(1).max()  # rows ended at different steps
    for poison in (False, True):
        if poison:
            nan = lambda t: t.fill_(float("nan")) if t.is_floating_point() else t
            empty, new_empty = torch.empty, torch.Tensor.new_empty
            monkeypatch.setattr(torch, "empty", lambda *a, **k: nan(empty(*a, **k)))
            monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: nan(new_empty(self, *a, **k)))
        for a, kw in zip(want, runs):
            for static in (False, True):
                b = S.generate(model, prompts(8), generator=gen(), static=static, **kw)
                assert torch.equal(a.response, b.response) and a.texts == b.texts


def test_static_decode_step_matches_the_growing_cache(tiny):
    ps = prompts(4)
    pad = torch.tensor([max(map(len, ps)) - len(p) for p in ps])
    idx = torch.tensor([[R.PAD_ID] * int(n) + p for n, p in zip(pad, ps)])
    caches = [tiny.new_cache(4, idx.size(1) + 6, pad, static=s) for s in (False, True)]
    for c in caches:
        tiny(idx, pad=pad, cache=c)
    tok = torch.tensor([[5], [6], [7], [8]])
    for _ in range(6):
        a, b = (tiny(tok, cache=c)[:, -1] for c in caches)
        assert torch.allclose(a, b, atol=1e-5) and int(caches[1].pos) == caches[1].t
        tok = a.argmax(-1, keepdim=True)


def test_sampler_bench_times_every_sampler_on_the_same_tokens(capsys):
    from experiments.bench import bench_sampler  # `python sample.py --bench`, in this process on the tiny preset
    bench_sampler(argparse.Namespace(device="cpu", preset="tiny", rows=[16], new_tokens=6, compile=False, profile=True))
    out = capsys.readouterr().out
    for name in ("naive recompute", "kv cache", "static cache"):
        assert re.search(rf"16 rows  {name} +\d+ tokens/s", out), name
    assert re.search(r"static cache vs kv cache: [\d.]+x; rows sampled otherwise: 0 of 16", out)
    assert "rows sampled otherwise than by naive recompute: 0 of 16" in out and "ops' self time" in out


@pytest.mark.slow
def test_compiled_decode_samples_the_same_tokens(tiny):
    # generate(compile=True): the decode steps through torch.compile'd blocks. Slow (it compiles) and it needs a C++
    # compiler on CPU, hence `pytest -m slow`, outside the default suite.
    for temp in (1.0, 0.0):
        gen = lambda: torch.Generator().manual_seed(5)
        a = S.generate(EndsOften(tiny), prompts(6), G=4, max_new_tokens=32, temperature=temp, generator=gen())
        for static in (False, True):
            b = S.generate(EndsOften(tiny), prompts(6), G=4, max_new_tokens=32, temperature=temp, generator=gen(),
                           compile=True, static=static)
            assert torch.equal(a.response, b.response)


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
    # An untrained model is near-uniform over 259 tokens: 16 rows sharing one first token would be a bug
    # (the nanochat bug: the first token sampled once per prompt and broadcast to the group).
    ro = S.generate(tiny, prompts(2), G=16, max_new_tokens=2, generator=torch.Generator().manual_seed(0))
    for b in range(2):
        assert len(set(ro.response[b * 16:(b + 1) * 16, 0].tolist())) > 4


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


# --- pass@k ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,k,want", [
    (8, 0, 1, 0.0), (8, 8, 4, 1.0), (8, 2, 1, 0.25), (4, 1, 2, 0.5),
    (5, 2, 2, 1 - 3 / 10), (10, 3, 5, 1 - 21 / 252), (16, 15, 2, 1.0),
])
def test_pass_at_k_matches_closed_form(n, c, k, want):
    assert S.pass_at_k(n, c, k) == pytest.approx(want)


# --- command line: bad input gives one line and exit 2 -----------------------------------------------------

def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def one_line_error(p, *needles):
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0]


def test_cli_bad_inputs(tmp_path):
    one_line_error(run("train.py", "--preset", "huge"), "huge")
    one_line_error(run("sample.py", "--ckpt", str(tmp_path / "nope.pt")), "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    one_line_error(run("sample.py", "--ckpt", str(bad)), "bad.pt")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    from dataclasses import asdict
    M.save_checkpoint(d / "t.pt", {"model": m.state_dict(), "config": asdict(m.config)})
    return d / "t.pt"


@pytest.mark.parametrize("lines,needle", [
    (['{"question": "1+2"}', '{"q": "1+2"}'], ":2:"),
    (['{"question": "1+2"}', "", "not json"], ":3:"),
    (['{"question": "1+(2*3)"}'], "1+(2*3)"),
    (['{"question": "1+2", "answer": "3"}'], ":1:"),
])
def test_bad_problem_files(tmp_path, tiny_ckpt, lines, needle):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(lines))
    one_line_error(run("sample.py", "--ckpt", str(tiny_ckpt), "--problems", str(f)), needle)


def test_sample_cli_on_own_problems(tmp_path, tiny_ckpt):
    f = tmp_path / "p.jsonl"
    f.write_text('{"question": "94+3+2-72"}\n{"question": "7+5*3", "answer": 22}\n')
    p = run("sample.py", "--ckpt", str(tiny_ckpt), "--problems", str(f), "-n", "4", "--max-new-tokens", "8")
    assert p.returncode == 0, p.stderr
    assert "pass@4" in p.stdout and "7+5*3" in p.stdout


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    M.save_checkpoint(path, {"model": {}, "config": {}, "step": 1})
    real_save = torch.save

    def boom(obj, f, *a, **k):  # the disk fills up halfway through writing the file
        real_save({"half": "written"}, f)
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        M.save_checkpoint(path, {"model": {}, "config": {}, "step": 2})
    assert M.load_checkpoint(str(path))["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # and no temporary file is left behind


def test_habit_stats_counts_guesses_and_repeated_last_steps():
    # 16*7-93: reference steps 16*7=112; 112-93=19. Applying "-93" once more gives -74.
    q = "16*7-93"
    texts = ["#57", "16*7=112;112-93=19;#19", "16*7=112;112-93=19;19-93=-74;#-74", "16*7=112;112-93=20;#20"]
    h = R.habit_stats([q] * 4, texts)
    assert h == {"guess": 0.25, "repeat": 0.25}
    # the corpus knobs drive the measured rates: none without the habits, many with them
    rng = random.Random(0)
    probs = [R.make_problem(rng, R.TaskConfig()) for _ in range(2000)]
    none = R.habit_stats([p.question for p in probs], [R.solution_text(rng, p, R.CorpusConfig(guess=0, repeat=0)) for p in probs])
    many = R.habit_stats([p.question for p in probs], [R.solution_text(rng, p, R.CorpusConfig(guess=0.2, repeat=0.2)) for p in probs])
    assert none["guess"] == 0 and none["repeat"] < 0.005
    assert 0.15 < many["guess"] < 0.25 and 0.1 < many["repeat"] < 0.2


def test_held_out_splits_rarely_meet_training_questions():
    # the splits share one distribution (own seed streams, no rejection): check that overlap stays rare
    train = {R.make_problem(random.Random(s), R.TaskConfig()).question for s in range(5000)}
    test = {p.question for p in R.make_split("test", 400)}
    val = {p.question for p in R.make_split("val", 200)}
    assert len(test & train) <= 2 and len(val & train) <= 2 and len(test & val) <= 1
    assert {p.question for p in R.make_split("val", 50)} != {p.question for p in R.make_split("test", 50)}


def test_token_comparison_with_another_checkout(tmp_path, capsys):
    # experiments.bench --tokens-vs: against a copy of this sampler (no row differs), then against a copy that
    # always draws greedily (every row differs)
    from experiments.bench import compare_tokens
    other = tmp_path / "other"
    other.mkdir()
    for f in ("model.py", "sample.py", "reward.py"):
        (other / f).write_text((ROOT / f).read_text())
    compare_tokens(other, preset="tiny", rows=(6,), new_tokens=8, out=str(tmp_path / "tok"))
    assert "0 of 6 rows sampled otherwise" in capsys.readouterr().out
    (other / "sample.py").write_text((ROOT / "sample.py").read_text().replace("if temperature == 0:", "if True:"))
    compare_tokens(other, preset="tiny", rows=(6,), new_tokens=8, out=str(tmp_path / "tok"))
    assert "6 of 6 rows sampled otherwise" in capsys.readouterr().out
