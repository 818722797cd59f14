"""
The world the experiments live in: an arithmetic reasoning task, its pre-training corpus, a byte-level
tokenizer, the verifier and the behaviour counters.

The task. A question is an integer expression with + - * and the usual precedence:

    prompt:   Q:5+23*7-4=
    response: 23*7=161;5+161=166;166-4=162;#162<|eos|>

The response does the multiplications first (left to right), then the additions and subtractions left to
right, one step per `;`, and restates the operands of every step. That restating is what makes log P(y)
meaningful without the question (tutorial/1-task.md): the first tokens of y copy the question
(they depend on x), the rest is almost determined by y<t.

The corpus (the "pre-training data") holds the behaviours the paper talks about, each at a rate set by a knob:
  - slips: a step's result off by +-1, +-2 or +-10, carried on to a wrong final answer;
  - reflection: a slip followed by ` wait ` and a correct redo:    99-72=28 wait 99-72=27;
  - transition: a hard product solved another way:                 23*7 alternatively 20*7=140;3*7=21;140+21=161;
  - bare solutions: a solution with no question, so P(y) is in distribution (paper section 2);
  - prompt-independent bad habits: guessing `#42` with no steps, or repeating the
    previous operation once more. They are wrong whatever the question, the kind of pattern NSR-PreRL is
    said to prune from P(y);
  - check digits (off by default; the reflection study's tied bases): after every result the last digit of the
    right result, so a slip of that digit shows as two digits that differ:   23*7=162|1 wait 23*7=161|1
"""
import random
import re
import sys
from dataclasses import dataclass, field, replace

import tiktoken

class UserError(ValueError):
    """Bad input from the user (a flag, a file, a question). Entry points print it as one line, exit 2."""


def fail(e, code=2):
    """What every entry point does with an error it expects: one line on stderr, then exit."""
    print(f"error: {e}", file=sys.stderr)
    sys.exit(code)


# -----------------------------------------------------------------------------
# tokenizer: every single byte is a token (so any string encodes) plus three special tokens.
# Built from explicit ranks, never tiktoken.get_encoding, which downloads.

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
tokenizer = tiktoken.Encoding(
    name="prerl-bytes",
    pat_str=r"\S+|\s+",  # pre-split only; with no merges every byte ends up its own token
    mergeable_ranks={bytes([i]): i for i in range(256)},
    special_tokens={BOS: 256, EOS: 257, PAD: 258},
)
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
VOCAB_SIZE = 259


def encode(text):
    """Text -> token ids. Typed text is always ordinary: a user's "<|eos|>" becomes 7 byte tokens."""
    return tokenizer.encode_ordinary(text)


def decode(ids):
    """Token ids -> text; special ids print as their names, broken utf-8 as U+FFFD."""
    return tokenizer.decode(list(ids), errors="replace")


# -----------------------------------------------------------------------------
# problems

@dataclass
class TaskConfig:
    """Difficulty knobs of the problem generator."""
    min_ops: int = 2          # operations per question
    max_ops: int = 3
    operand_max: int = 99     # operands of + and - are 1..operand_max
    mult_share: float = 0.25  # chance that an operation is '*' (its right operand is 2..9)
    value_max: int = 199      # every intermediate value stays in 0..value_max


SPLITS = {  # name -> (task config, seed offset). OOD: operands up to 149 instead of 99.
    "train": (TaskConfig(), 0),
    "test": (TaskConfig(), 1),
    "ood": (TaskConfig(operand_max=149), 2),  # 3-digit operands (not one more operation: too hard for the base)
    "val": (TaskConfig(), 3),  # like test, other problems: the paper suite tunes and draws curves on it
}


@dataclass
class Problem:
    question: str   # "5+23*7-4"
    answer: int     # 162
    tag: str = "Q"  # the prompt's tag: Q always, except T / R in the two-mode corpus (CorpusConfig.modes)

    @property
    def prompt(self):
        return f"{self.tag}:{self.question}="


_QUESTION = re.compile(r"[0-9]{1,4}(?:[-+*][0-9]{1,4}){0,7}")


def parse_question(question):
    """'5+23*7-4' -> ([5, 23, 7, 4], ['+', '*', '-']). Raises ValueError naming the question if it is not
    a chain of 1 to 8 non-negative integers (at most 4 digits) joined by + - *."""
    q = question.replace(" ", "")
    if not _QUESTION.fullmatch(q):
        raise UserError(f"cannot parse question {question!r}: expected numbers joined by + - * (e.g. 94+3*2-72)")
    nums = [int(n) for n in re.findall(r"[0-9]+", q)]
    ops = re.findall(r"[-+*]", q)
    return nums, ops


def solution_steps(nums, ops):
    """The reference order of work: products first (left to right), then + and - left to right.
    Returns [(a, op, b, result), ...]."""
    nums, ops, steps = list(nums), list(ops), []
    while "*" in ops:
        i = ops.index("*")
        r = nums[i] * nums[i + 1]
        steps.append((nums[i], "*", nums[i + 1], r))
        nums[i:i + 2], ops[i:i + 1] = [r], []
    acc = nums[0]
    for op, b in zip(ops, nums[1:]):
        r = acc + b if op == "+" else acc - b
        steps.append((acc, op, b, r))
        acc = r
    return steps


def solve(question):
    """Integer value of a question string, e.g. solve('5+23*7-4') == 162."""
    nums, ops = parse_question(question)
    steps = solution_steps(nums, ops)
    return steps[-1][3] if steps else nums[0]


def make_problem(rng, cfg=TaskConfig()):
    """A random Problem whose every intermediate value is in 0..cfg.value_max (rejection sampling)."""
    while True:
        n_ops = rng.randint(cfg.min_ops, cfg.max_ops)
        ops = ["*" if rng.random() < cfg.mult_share else rng.choice("+-") for _ in range(n_ops)]
        nums = [rng.randint(1, cfg.operand_max)]
        for op in ops:
            nums.append(rng.randint(2, 9) if op == "*" else rng.randint(1, cfg.operand_max))
        steps = solution_steps(nums, ops)
        if all(0 <= s[3] <= cfg.value_max for s in steps):
            q = "".join(f"{n}{op}" for n, op in zip(nums, ops)) + str(nums[-1])
            return Problem(q, steps[-1][3])


def make_split(name, n, seed=0, tag="Q"):
    """n problems of a named split. Each split has its own seed stream; train, val and test share one
    distribution, so a test question can also occur in training by chance (rare: see tests)."""
    if name not in SPLITS:
        raise UserError(f"unknown split {name!r}: choose from {sorted(SPLITS)}")
    cfg, offset = SPLITS[name]
    rng = random.Random(1_000_003 * offset + seed)
    problems = [make_problem(rng, cfg) for _ in range(n)]
    for p in problems:
        p.tag = tag
    return problems


# -----------------------------------------------------------------------------
# the pre-training corpus

@dataclass
class CorpusConfig:
    """Shares of the behaviours in the pre-training corpus (tutorial/1-task.md says why each is there)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    slip: float = 0.15          # chance that a step's result is off by +-1, +-2 or +-10
    reflect: float = 0.5        # chance that a slip is followed by ` wait ` and a correct redo
    transition: float = 0.3     # chance that a hard product (two-digit x one-digit) is done another way
    bare: float = 0.15          # share of documents that are a solution without its question
    guess: float = 0.02         # bad habit: answer `#N` at once, no steps (N a guess near the operands)
    repeat: float = 0.02        # bad habit: apply the last operation once more before answering
    modes: bool = False         # two prompt-gated styles (MODES) instead of one; RL then asks in the terse one
    digits: int = 0             # >0: every number of a step written with at least this many digits (0-padded)
    check: bool = False         # every step's result followed by `|d`, d the last digit of the right result, so a
                                # slip of the last digit shows as a mismatch of two digits next to each other
    reflect_after: str = "slip"  # "slip": a reflection follows a slip; "random" (the control): the slip it would
                                # have followed is made right, so ` wait ` follows a right step drawn at random
    transition_after: str = "upfront"  # "upfront": a hard product is switched before any attempt; "slip": only a
                                # slipped direct attempt is, after its wrong result (a method switch after a failed
                                # attempt, the other method then done right); "random" (its control): the same
                                # draws, the attempt made right

    def __post_init__(self):
        if self.reflect_after not in ("slip", "random"):
            raise UserError(f"reflect_after must be 'slip' or 'random', got {self.reflect_after!r}")
        if self.transition_after not in ("upfront", "slip", "random"):
            raise UserError(f"transition_after must be 'upfront', 'slip' or 'random', got {self.transition_after!r}")


# The two-mode corpus (CorpusConfig.modes, the mechanism study's H4): a tag in the prompt gates a terse style,
# where reflection and method switches are rare, or a reflective one, where they are common; bare solutions
# come in both styles with no tag, so P(y) sees the mixture. It mimics a chat template that switches thinking
# off in the prompt, which PreRL's context token removes (the official code replaces prompt and template).
MODES = {"T": dict(reflect=0.05, transition=0.03), "R": dict(reflect=0.95, transition=0.6)}
TERSE = "T"


def _slipped(rng, r):
    """r off by +-1, +-2 or +-10, never crossing from a non-negative value below 0."""
    while True:
        w = r + rng.choice((-10, -2, -1, 1, 2, 10))
        if w >= 0 or r < 0:
            return w


def check_digit(a, op, b):
    """`|d` with d the last digit of the right result of `a op b` (CorpusConfig.check): cheap to get from the
    operands' last digits alone, while the result itself needs the whole computation."""
    return f"|{abs(a + b if op == '+' else a - b if op == '-' else a * b) % 10}"


def hard_product(a, op):
    """A product the corpus may solve another way (CorpusConfig.transition): two digits times one, a not a multiple
    of ten."""
    return op == "*" and 10 <= a <= 99 and a % 10 != 0


def _switched(rng, a, b, cfg):
    """A hard product a*b done by splitting the tens from the units: the three steps' text and the value carried on."""
    parts, carried = [], []
    for x in (a - a % 10, a % 10):
        txt, v = _step_text(rng, x, "*", b, x * b, cfg)
        parts.append(txt)
        carried.append(v)
    txt, v = _step_text(rng, carried[0], "+", carried[1], carried[0] + carried[1], cfg)
    return ";".join(parts + [txt]), v


def _step_text(rng, a, op, b, r, cfg):
    """One step as text plus the value carried on (wrong if it slipped and was not caught)."""
    d = lambda n: str(n).zfill(cfg.digits) if n >= 0 else str(n)  # noqa: E731  (digits 0: str(n))
    chk = check_digit(a, op, b) if cfg.check else ""
    if cfg.transition_after == "upfront" and hard_product(a, op) and rng.random() < cfg.transition:
        txt, v = _switched(rng, a, b, cfg)  # transition: another method before any attempt
        return f"{d(a)}*{d(b)} alternatively {txt}", v
    head = f"{d(a)}{op}{d(b)}="
    if rng.random() < cfg.slip:
        w = _slipped(rng, r)
        if cfg.transition_after != "upfront" and hard_product(a, op) and rng.random() < cfg.transition:
            # transition after a failed attempt (or, the control, after the same attempt made right); the other
            # method is done right, as a reflection's redo is
            first = w if cfg.transition_after == "slip" else r
            txt, v = _switched(rng, a, b, replace(cfg, slip=0.0))
            return f"{head}{d(first)}{chk} alternatively {txt}", v
        if rng.random() < cfg.reflect:  # reflection: the redo is always right
            first = w if cfg.reflect_after == "slip" else r  # the control: the same draws, the step made right
            return f"{head}{d(first)}{chk} wait {head}{d(r)}{chk}", r
        return f"{head}{d(w)}{chk}", w
    return f"{head}{d(r)}{chk}", r


def solution_text(rng, problem, cfg=CorpusConfig()):
    """A worked solution of `problem` with corpus behaviours drawn at cfg's rates."""
    nums, ops = parse_question(problem.question)
    if rng.random() < cfg.guess:  # bad habit: no steps, a guess near the largest operand
        return f"#{max(0, max(nums) + rng.randint(-20, 20))}"
    nums, ops, parts = list(nums), list(ops), []
    # Redo the reference order, but carry the (possibly slipped) values on, as a real trace would.
    while "*" in ops:
        i = ops.index("*")
        last = ("*", nums[i + 1])
        txt, v = _step_text(rng, nums[i], "*", nums[i + 1], nums[i] * nums[i + 1], cfg)
        parts.append(txt)
        nums[i:i + 2], ops[i:i + 1] = [v], []
    acc = nums[0]
    for op, b in zip(ops, nums[1:]):
        last = (op, b)
        txt, acc = _step_text(rng, acc, op, b, acc + b if op == "+" else acc - b, cfg)
        parts.append(txt)
    if rng.random() < cfg.repeat:  # bad habit: the last operation applied once more
        op, b = last
        r = acc + b if op == "+" else acc - b if op == "-" else acc * b
        parts.append(f"{acc}{op}{b}={r}" + (check_digit(acc, op, b) if cfg.check else ""))
        acc = r
    return ";".join(parts) + f";#{acc}"


def corpus_document(rng, cfg=CorpusConfig()):
    """One pre-training document as text (no special tokens): a question with its worked solution, or,
    with probability cfg.bare, the solution alone."""
    p = make_problem(rng, cfg.task)
    if cfg.modes:  # one of the two styles, half the documents each (no extra draws in the default corpus)
        p.tag = rng.choice(sorted(MODES))
        cfg = replace(cfg, **MODES[p.tag])
    sol = solution_text(rng, p, cfg)
    return sol if rng.random() < cfg.bare else p.prompt + sol


# -----------------------------------------------------------------------------
# verifier and behaviour counters

_ANSWER = re.compile(r"#(0|-?[1-9][0-9]{0,8})")  # ASCII digits, no '+', no leading zeros or -0, <= 9 digits


def score(completion, answer):
    """1.0 if `completion` (the text the model wrote before its end token) ends with exactly one answer
    `#N` and N == answer, else 0.0. Only ASCII digits and an optional '-' count, so unicode digits,
    '_' separators, '+27', whitespace and trailing junk all score 0. Never raises."""
    try:
        if not isinstance(completion, str) or completion.count("#") != 1:
            return 0.0
        m = _ANSWER.fullmatch(completion[completion.index("#"):])
        return 1.0 if m is not None and int(m.group(1)) == int(answer) else 0.0
    except Exception:  # a verifier must never take a run down
        return 0.0


MARKERS = ("wait", "alternatively")  # reflection, transition (paper abstract: x6.54, x14.89)


def count_markers(text):
    """Occurrences of each marker word in `text`: {'wait': n, 'alternatively': m}."""
    return {m: len(re.findall(rf"\b{m}\b", text)) for m in MARKERS}


STEP = r"(-?[0-9]+)([-+*])([0-9]+)=(-?[0-9]+)(?:\|[0-9])?"  # a step `a op b=c`, with its check `|d` if any


def step_is_wrong(step):
    """For 'a op b=c' text (or 'a op b=c|d'): True if c is not the value of a op b, None if `step` is not such a
    step. The check digit d is not judged: a step is wrong by its result."""
    m = re.fullmatch(rf"\s*{STEP}\s*", step)
    if m is None:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return c != (a + b if op == "+" else a - b if op == "-" else a * b)


def reflection_stats(texts):
    """Is reflection functional (can NSR amplify something that works)? Over all `wait`s in `texts`:
    follows_error = share of waits whose preceding step is really wrong,
    redo_right    = share of waits whose redo step is right."""
    n = follows = right = 0
    for t in texts:
        parts = re.split(r"\bwait\b", t)
        for before, after in zip(parts[:-1], parts[1:]):
            n += 1
            prev = before.rsplit(";", 1)[-1].split("alternatively")[-1]
            follows += step_is_wrong(prev) is True
            right += step_is_wrong(after.split(";", 1)[0]) is False
    return {"waits": n, "follows_error": follows / max(n, 1), "redo_right": right / max(n, 1)}


def wait_after_steps(texts):
    """Does a model reflect when it slips? Over every step `a op b=r` of `texts` (the first step of each
    ';'-separated part, after a method switch's marker): the share of wrong steps and of right steps that
    ` wait ` follows, and the share of those redos that are right."""
    n = {True: 0, False: 0}
    waits = {True: 0, False: 0}
    redo_right = 0
    for t in texts:
        for part in t.split(";"):
            first, *rest = part.split("alternatively")[-1].split(" wait ")
            wrong = step_is_wrong(first)
            if wrong is None:
                continue
            n[wrong] += 1
            if rest:
                waits[wrong] += 1
                redo_right += step_is_wrong(rest[0]) is False
    return {"wrong_steps": n[True], "right_steps": n[False], "wait_after_wrong": waits[True] / max(n[True], 1),
            "wait_after_right": waits[False] / max(n[False], 1),
            "redo_right": redo_right / max(waits[True] + waits[False], 1)}


TOKEN_CLASSES = ("question operand", "carried operand", "step result", "structure", "marker", "answer", "other")
_STEP = re.compile(r"([0-9]+)([-+*])([0-9]+)(?:=(-?[0-9]+))?")


def char_classes(question, text):
    """The class (an index into TOKEN_CLASSES) of every character of a response: which tokens only the question
    determines (H1 of experiments/mechanisms.py). In a step `a op b=r` an operand is a "question operand" if its
    value is one of the question's numbers, else a "carried operand" (a result restated, or a split part; a
    carried value that happens to equal a question number is counted as a question operand); r is a "step
    result"; `=;#+-*` are "structure"; ` wait ` and ` alternatively ` are "marker"s; the digits after `#` are the
    "answer". With byte tokens, character i is response token i."""
    nums = {m for m in re.findall(r"[0-9]+", question)}
    cls = [TOKEN_CLASSES.index("other")] * len(text)

    def mark(lo, hi, name):
        cls[lo:hi] = [TOKEN_CLASSES.index(name)] * (hi - lo)

    for i, ch in enumerate(text):
        if ch in "=;#+-*":
            cls[i] = TOKEN_CLASSES.index("structure")
    for m in re.finditer(r" ?\b(?:wait|alternatively)\b ?", text):
        mark(m.start(), m.end(), "marker")
    for m in _STEP.finditer(text):
        for g in (1, 3):
            mark(m.start(g), m.end(g), "question operand" if m.group(g) in nums else "carried operand")
        if m.group(4) is not None:
            mark(m.start(4), m.end(4), "step result")
    for m in re.finditer(r"#(-?[0-9]+)", text):
        mark(m.start(1), m.end(1), "answer")
    return cls


def habit_stats(questions, texts):
    """How often responses show the corpus's prompt-independent bad habits (CorpusConfig guess and repeat):
    guess  = share that answer at once, `#N` with no steps;
    repeat = share whose answer is the right answer with the last operation applied once more.
    (A repeat built on a slipped step is not caught: `repeat` is a lower bound.)"""
    guess = repeat = 0
    for q, t in zip(questions, texts):
        guess += t.startswith("#")
        _, op, b, r = solution_steps(*parse_question(q))[-1]  # the last step of the reference solution
        m = _ANSWER.search(t)
        twice = r + b if op == "+" else r - b if op == "-" else r * b
        repeat += m is not None and twice != r and int(m.group(1)) == twice
    return {"guess": guess / max(1, len(texts)), "repeat": repeat / max(1, len(texts))}
