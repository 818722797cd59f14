"""The mechanism study's knobs and measurements (experiments/mechanisms.py): each does what its hypothesis needs,
and the whole study runs on the tiny preset."""
import copy
import json
import random
import subprocess
import sys

import torch

import reward as R
import sample as S
import train as T
from experiments import mechanisms as MECH
from losses import objective_loss

HP = dict(T.RL_DEFAULTS, **T.RL["tiny"], other_space=False)


def test_char_classes_name_the_tokens_only_the_question_determines():
    q, text = "5+23*7-4", "23*7=161;5+161=167 wait 5+161=166;166-4=162;#162"
    cls = [R.TOKEN_CLASSES[c] for c in R.char_classes(q, text)]
    at = lambda sub, k=0: cls[text.index(sub) + k]  # noqa: E731
    assert at("23") == at("7=") == at("5+") == at("-4", 1) == "question operand"
    assert at("161;5") == "step result" and at("+161", 1) == "carried operand"
    assert at(" wait") == at("wait") == "marker" and at("#") == "structure"
    assert cls[-3:] == ["answer"] * 3 and at("=") == "structure"
    assert len(cls) == len(text)


def test_masked_prerl_drops_exactly_the_question_operand_tokens(tiny_rollout):
    m, ro = tiny_rollout
    cls = S.token_classes(ro)
    ro = S.Rollout(ro.prompt, ro.pad, ro.response, ro.mask, ro.finished, ro.texts)
    # pretend the samples restate the question: put each prompt's first operand at the start of its response
    for i in range(ro.response.size(0)):
        q = R.decode(t for t in ro.prompt[i].tolist() if t < 256).split(":", 1)[1].rstrip("=")
        first = R.encode(R.parse_question(q)[0][0].__str__() + "+1=")
        ro.response[i, :len(first)] = torch.tensor(first)
        ro.mask[i, :len(first)] = True
    cls = S.token_classes(ro)
    r = torch.tensor([0.0, 1.0] * 3)  # every group mixed: one negative per group
    _, full = objective_loss("nsr-prerl", m, ro, r, 2, HP)
    _, masked = objective_loss("nsr-prerl", m, ro, r, 2, dict(HP, prerl_tokens="no-question-operands"))
    q_tokens = int(((cls == R.TOKEN_CLASSES.index("question operand")) & ro.mask)[r == 0].sum())
    assert q_tokens > 0 and full["tokens"] - masked["tokens"] == q_tokens


def test_loss_coef_scales_the_loss_and_adam_then_ignores_it(tiny_rollout):
    m, ro = tiny_rollout
    r = torch.tensor([0.0, 1.0] * 3)
    a, _ = objective_loss("nsr-prerl", m, ro, r, 2, HP)
    b, _ = objective_loss("nsr-prerl", m, ro, r, 2, dict(HP, loss_coef=0.01))
    assert torch.allclose(b, 0.01 * a)
    # Adam's first step is m / sqrt(v) = sign(g): the 0.01 of the official warmup changes nothing (eps aside)
    steps = []
    for coef in (1.0, 0.01):
        mm = copy.deepcopy(m)
        opt = torch.optim.AdamW(mm.parameters(), lr=1e-3, weight_decay=0.0)
        loss, _ = objective_loss("nsr-prerl", mm, ro, r, 2, dict(HP, loss_coef=coef))
        loss.backward()
        opt.step()
        steps.append(torch.cat([(p - q).flatten() for p, q in zip(mm.parameters(), m.parameters())]))
    differ = ((steps[0] - steps[1]).abs() > 1e-4).float().mean()  # of lr 1e-3: where |g| is near Adam's eps
    assert differ < 0.05, differ


def test_reset_at_switch_gives_adams_first_step_again(tiny_base, tmp_path, monkeypatch):
    """After the reset, the first GRPO step moves every parameter with a gradient by about lr (Adam's first
    step is lr * sign(g)); without it the carried moments make it different."""
    # every group mixed (the untrained model never answers right), so both phases have a gradient
    monkeypatch.setattr(S, "rewards", lambda ro, answers: [float(i % 2) for i in range(len(answers))])
    norms = {}
    for reset in (False, True):
        _, h, _ = T.rl_train(str(tiny_base), "dsrl", str(tmp_path / f"r{reset}.pt"), "cpu", preset="tiny", steps=3,
                             warmup_steps=2, progress=False, eval_every=100, lr=1e-3, warmup_lr=1e-3,
                             reset_at_switch=reset, weight_decay=0.01)
        norms[reset] = [x["update_norm"] for x in h]
    assert norms[True][:2] == norms[False][:2]  # the warmup is the same
    n_params = sum(p.numel() for p in T.GPT(T.PRESETS["tiny"]).parameters())
    # the bound: every one of the n parameters moves by at most lr (plus weight decay's lr * wd * |w|)
    assert 0.5 * 1e-3 * n_params ** 0.5 < norms[True][2] < 1.05e-3 * n_params ** 0.5
    assert abs(norms[True][2] - norms[False][2]) > 1e-3 * norms[True][2]


def test_two_mode_corpus_gates_reflection_by_the_tag():
    rng = random.Random(0)
    docs = [R.corpus_document(rng, R.CorpusConfig(modes=True, slip=0.5)) for _ in range(3000)]
    tagged = {t: [d for d in docs if d.startswith(t + ":")] for t in R.MODES}
    share = {t: sum(" wait " in d for d in ds) / len(ds) for t, ds in tagged.items()}
    assert share["R"] > 4 * share["T"] and all(len(ds) > 1000 for ds in tagged.values())
    assert R.make_split("test", 2, tag=R.TERSE)[0].prompt.startswith("T:")
    assert not any(d.startswith(("T:", "R:")) for d in [R.corpus_document(rng) for _ in range(200)])


def test_wait_probe_is_the_probability_of_the_wait_tokens():
    torch.manual_seed(0)
    m = T.GPT(T.PRESETS["tiny"])
    problems = R.make_split("val", 4)
    # hand-made items: a slipped step and a right one, each followed by ' wait'
    items = {True: [], False: []}
    for slipped, text in ((True, "23*7=160"), (False, "23*7=161")):
        items[slipped].append((S.prompt_ids(problems[0]), R.encode(text + " wait")))
    p = MECH.wait_probe(m, items)
    assert 0 < p["p_wait_slip_cond"] < 1 and 0 < p["p_wait_right_pre"] < 1
    # P(" wait" | prefix) is the product of its 5 token probabilities: check against a direct forward
    from losses import pretrain_logprobs
    resp = torch.tensor([R.encode("23*7=160 wait")])
    with torch.no_grad():
        lm, _ = pretrain_logprobs(m, resp)
    assert abs(p["p_wait_slip_pre"] - float(lm[0, -5:].sum().exp())) < 1e-6


def test_mechanism_suite_on_tiny(tmp_path):
    p = subprocess.run([sys.executable, "dsrl.py", "--suite", "mechanisms", "--preset", "tiny", "--seeds", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "tiny/mechanisms"
    s = json.load(open(d / "mechanisms.json"))
    for h in ("H1", "H2", "H3", "H4"):
        assert s[h]["verdict"].split()[0] in ("supported", "refuted", "inconclusive")
    assert set(s["H3"]["verdicts"]) == {"C4", "C5", "C6"}
    runs = json.load(open(d / "runs/dsrl-official-reset-s0.json"))
    assert runs["hp"]["reset_at_switch"] and all("update_norm" in h for h in runs["train"])
    assert "p_wait_slip_cond" in json.load(open(d / "runs/h2-nsr-prerl-s0.json"))["evals"][0]
    assert json.load(open(d / "runs/pretrain-modes-s0.json"))["base_eval"]["curve"]
    for fig in ("pretrain", "h1_tokens", "h2_wait", "h3_official", "h4_modes"):
        assert (d / f"{fig}.png").stat().st_size > 1000
