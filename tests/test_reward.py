"""reward.py: the tokenizer, the problem generator, the corpus, the verifier and the behaviour counters."""
import random
import re
import string

import pytest

import reward as R
from experiments.mechanisms import switch_after_steps  # the probe of a method switch after failed attempts


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


# --- task and problem generator ----------------------------------------------------------------------------

def test_solve_uses_usual_precedence():
    assert R.solve("7+5*3") == 22
    assert R.solve("5+23*7-4") == 162
    assert R.solve("3-10") == -7
    assert R.solve("2*3*4-1") == 23


@pytest.mark.parametrize("split", ["train", "ood"])
def test_problem_generator_ranges(split):
    cfg = R.SPLITS[split][0]
    rng = random.Random(5)
    for _ in range(2000):
        p = R.make_problem(rng, cfg)
        nums, ops = R.parse_question(p.question)
        assert cfg.min_ops <= len(ops) <= cfg.max_ops
        steps = R.solution_steps(nums, ops)
        assert all(0 <= s[3] <= cfg.value_max for s in steps), p
        assert p.answer == steps[-1][3] == R.solve(p.question)
        for op, b in zip(ops, nums[1:]):
            assert (2 <= b <= 9) if op == "*" else (1 <= b <= cfg.operand_max)
        assert 1 <= nums[0] <= cfg.operand_max


def test_splits_are_deterministic_and_ood_is_harder():
    assert R.make_split("test", 20) == R.make_split("test", 20)
    assert R.make_split("test", 50) != R.make_split("train", 50)
    ood = R.make_split("ood", 200)
    biggest = lambda ps: max(max(R.parse_question(p.question)[0]) for p in ps)  # noqa: E731
    assert biggest(R.make_split("test", 200)) <= 99 < biggest(ood) <= 149


def test_held_out_splits_rarely_meet_training_questions():
    # the splits share one distribution (own seed streams, no rejection): overlap stays rare
    train = {R.make_problem(random.Random(s), R.TaskConfig()).question for s in range(5000)}
    test = {p.question for p in R.make_split("test", 400)}
    val = {p.question for p in R.make_split("val", 200)}
    assert len(test & train) <= 2 and len(val & train) <= 2 and len(test & val) <= 1
    assert {p.question for p in R.make_split("val", 50)} != {p.question for p in R.make_split("test", 50)}


# --- the corpus --------------------------------------------------------------------------------------------

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


def test_two_mode_corpus_gates_reflection_by_the_tag():
    rng = random.Random(0)
    docs = [R.corpus_document(rng, R.CorpusConfig(modes=True, slip=0.5)) for _ in range(3000)]
    tagged = {t: [d for d in docs if d.startswith(t + ":")] for t in R.MODES}
    share = {t: sum(" wait " in d for d in ds) / len(ds) for t, ds in tagged.items()}
    assert share["R"] > 4 * share["T"] and all(len(ds) > 1000 for ds in tagged.values())
    assert R.make_split("test", 2, tag=R.TERSE)[0].prompt.startswith("T:")
    assert not any(d.startswith(("T:", "R:")) for d in [R.corpus_document(rng) for _ in range(200)])


# --- verifier ----------------------------------------------------------------------------------------------

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


def adversarial(answer, rng):
    """Near-misses of the right answer text: each must score 0."""
    a = str(answer)
    uni = "".join("٠١٢٣٤٥٦٧٨٩"[int(c)] if c.isdigit() else c for c in a)
    full = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in a)
    yield from [f"#{uni}", f"#{full}", f"#+{a}", f"# {a}", f"#{a} ", f"#{a}\n", f"#\t{a}", f"#{a}#{a}",
                f"#{a};#{a}", f"#0{a}", f"#{a}.0", f"#{a}e0", f"#{a}<|eos|>", f"<|eos|>#{int(a) + 1}",
                f"#{int(a) + 1}", f"#{int(a) - 1}", f"#{a}" + "0" * rng.randint(1, 30), "#" + "9" * rng.randint(10, 400),
                f"#{a[:1]}_{a[1:]}" if len(a) > 1 else f"#_{a}", f"#{a[:1]},{a[1:]}" if len(a) > 1 else f"#,{a}",
                f"#{a}\u200b", f"\u200b#{a}x", f"#-{a}" if answer > 0 else f"#{a[1:]}", f"#{a}\x00", f"{a}"]


def test_verifier_fuzz_no_crash_no_false_positive():
    rng = random.Random(0)
    alphabet = "0123456789#-+_ ;=*\n\t٣７¹\u200b<|>eosxwait"
    hits = 0
    for i in range(10_000):
        answer = rng.randint(-999, 999)
        for s in adversarial(answer, rng) if i < 500 else ():
            assert R.score(s, answer) == 0.0, s
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.1:  # some strings that do end in the right answer, so that a 1 is also exercised
            s += f"#{answer}"
        got = R.score(s, answer)
        # a 1 is only ever right for exactly one '#' followed by the canonical integer at the very end
        assert got == (1.0 if s.count("#") == 1 and s.endswith(f"#{answer}") else 0.0), s
        hits += got == 1.0
    assert hits > 50  # the right answers appended above are recognised, not only the wrong ones refused


def test_check_digits_show_a_last_digit_slip_next_to_the_result():
    """CorpusConfig.check: every step's result is followed by `|d`, d the last digit of the right result, so the digit
    differs from the result's last digit exactly when a slip changed it (+-1, +-2, not +-10); the answer is unchanged."""
    rng = random.Random(3)
    cfg = R.CorpusConfig(check=True, slip=0.3, reflect=0.5, guess=0.0, repeat=0.5)
    seen = {"mismatch": 0, "tens slip": 0}
    for p in R.make_split("train", 400):
        text = R.solution_text(rng, p, cfg)
        for m in re.finditer(r"(-?[0-9]+)([-+*])([0-9]+)=(-?[0-9]+)\|([0-9])", text):
            a, op, b, c, d = int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5])
            right = a + b if op == "+" else a - b if op == "-" else a * b
            assert d == abs(right) % 10, text
            seen["mismatch"] += abs(c) % 10 != d
            seen["tens slip"] += c != right and abs(c) % 10 == d
        assert text.count("|") == text.count("="), text  # every step has its check
    assert seen["mismatch"] > 50 and seen["tens slip"] > 20
    assert R.step_is_wrong("23*7=162|1") is True and R.step_is_wrong("23*7=161|1") is False
    assert R.wait_after_steps(["23*7=162|1 wait 23*7=161|1;5+161=166|6;#166"])["wait_after_wrong"] == 1.0


def test_control_corpus_moves_each_reflection_off_its_slip_and_changes_nothing_else():
    """reflect_after="random": the same draws as the tied corpus, each reflected slip made right, so every ` wait `
    follows a right step (a random one: the slips are drawn at random) and the final answers are the same."""
    problems, tied, control = R.make_split("train", 300), [], []
    for name, out in (("slip", tied), ("random", control)):
        rng = random.Random(4)
        cfg = R.CorpusConfig(slip=0.3, reflect=1.0, reflect_after=name, check=True)
        out += [R.solution_text(rng, p, cfg) for p in problems]
    assert sum(t.count(" wait ") for t in tied) == sum(c.count(" wait ") for c in control) > 50
    assert R.reflection_stats(tied)["follows_error"] == 1.0 and R.reflection_stats(control)["follows_error"] == 0.0
    assert all(t.rsplit("#", 1)[1] == c.rsplit("#", 1)[1] for t, c in zip(tied, control))
    assert R.corpus_document(random.Random(5)) == R.corpus_document(random.Random(5), R.CorpusConfig(check=False))
    with pytest.raises(R.UserError, match="reflect_after"):
        R.CorpusConfig(reflect_after="always")


def test_switch_after_a_failed_attempt_and_its_control():
    """transition_after="slip": ` alternatively ` follows a direct attempt at a hard product whose result slipped, and
    only such an attempt; "random" (the control): the same draws with that attempt made right; "upfront" (the
    default) switches before any attempt. The split route itself is the same in both, so the answers are too."""
    rng = random.Random(0)
    problems = [p for p in R.make_split("train", 3000) if any(R.hard_product(a, op) for a, op, b, r in
                                                               R.solution_steps(*R.parse_question(p.question)))]
    out = {}
    for name in ("slip", "random"):
        rng = random.Random(4)
        cfg = R.CorpusConfig(slip=0.4, transition=1.0, reflect=0.5, transition_after=name, check=True)
        out[name] = [R.solution_text(rng, p, cfg) for p in problems]
    tied, control = switch_after_steps(out["slip"]), switch_after_steps(out["random"])
    assert tied["switch_after_wrong"] == 1.0 and tied["switch_after_right"] == 0.0 and tied["wrong_attempts"] > 50
    assert control["switch_after_wrong"] == 0.0 and control["switch_after_right"] > 0.2
    assert sum(t.count(" alternatively ") for t in out["slip"]) == sum(c.count(" alternatively ") for c in out["random"])
    assert tied["switch_right"] == control["switch_right"] == 1.0  # the other method is done right, as a redo is
    assert all(t.rsplit("#", 1)[1] == c.rsplit("#", 1)[1] for t, c in zip(out["slip"], out["random"]))
    assert all(re.search(r"[0-9]+\*[0-9]+ alternatively", t) is None for t in out["slip"])  # never upfront
    assert sum(re.search(r"[0-9]+\*[0-9]+ alternatively", t) is not None
               for t in (R.solution_text(rng, p, R.CorpusConfig(transition=1.0)) for p in problems)) > 100
    assert (R.hard_product(23, "*"), R.hard_product(20, "*"), R.hard_product(7, "*"), R.hard_product(23, "+")) == (
        True, False, False, False)
    with pytest.raises(R.UserError, match="transition_after"):
        R.CorpusConfig(transition_after="never")


# --- behaviour counters ------------------------------------------------------------------------------------

def test_markers_and_reflection_stats():
    assert R.count_markers("a wait b waiting wait; alternatively") == {"wait": 2, "alternatively": 1}
    st = R.reflection_stats(["99-72=28 wait 99-72=27;#27", "1+1=2 wait 1+1=3;#3"])
    assert st == {"waits": 2, "follows_error": 0.5, "redo_right": 0.5}


def test_habit_stats_counts_guesses_and_repeated_last_steps():
    # 16*7-93: reference steps 16*7=112; 112-93=19. Applying "-93" once more gives -74.
    q = "16*7-93"
    texts = ["#57", "16*7=112;112-93=19;#19", "16*7=112;112-93=19;19-93=-74;#-74", "16*7=112;112-93=20;#20"]
    h = R.habit_stats([q] * 4, texts)
    assert h == {"guess": 0.25, "repeat": 0.25}
    # the corpus knobs drive the measured rates: none without the habits, many with them
    rng = random.Random(0)
    probs = [R.make_problem(rng, R.TaskConfig()) for _ in range(2000)]
    qs = [p.question for p in probs]
    none = R.habit_stats(qs, [R.solution_text(rng, p, R.CorpusConfig(guess=0, repeat=0)) for p in probs])
    many = R.habit_stats(qs, [R.solution_text(rng, p, R.CorpusConfig(guess=0.2, repeat=0.2)) for p in probs])
    assert none["guess"] == 0 and none["repeat"] < 0.005
    assert 0.15 < many["guess"] < 0.25 and 0.1 < many["repeat"] < 0.2


def test_char_classes_name_the_tokens_only_the_question_determines():
    q, text = "5+23*7-4", "23*7=161;5+161=167 wait 5+161=166;166-4=162;#162"
    cls = [R.TOKEN_CLASSES[c] for c in R.char_classes(q, text)]
    at = lambda sub, k=0: cls[text.index(sub) + k]  # noqa: E731
    assert at("23") == at("7=") == at("5+") == at("-4", 1) == "question operand"
    assert at("161;5") == "step result" and at("+161", 1) == "carried operand"
    assert at(" wait") == at("wait") == "marker" and at("#") == "structure"
    assert cls[-3:] == ["answer"] * 3 and at("=") == "structure"
    assert len(cls) == len(text)


def test_wait_after_steps_counts_reflections_after_wrong_and_after_right_steps():
    texts = ["23*7=151 wait 23*7=161;5+161=166;166-4=162;#162",   # wrong step reflected on, redo right
             "23*7=161 wait 23*7=161;5+161=165;165-4=161;#161",   # right step reflected on; a slip left alone
             "23*7 alternatively 20*7=140;3*7=21 wait 3*7=20;140+20=160;#160"]  # a wrong redo after a right step
    s = R.wait_after_steps(texts)
    assert (s["wrong_steps"], s["right_steps"]) == (2, 7)
    assert s["wait_after_wrong"] == 0.5 and s["wait_after_right"] == 2 / 7 and s["redo_right"] == 2 / 3
