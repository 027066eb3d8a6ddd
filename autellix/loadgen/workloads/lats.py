"""LATS tree search (HotpotQA-style question answering): one search is one program, a DAG of calls.

Paper targets (reference.md §2): 159.7 calls per program on average, up to ~400; 467 prefill
tokens per call; 73 decode tokens per call; parallel samples. No LATS data is installed, so the
whole workload is modelled on the LATS algorithm (Zhou et al. 2023) as the paper ran it.

Interpretation of "prefill tokens per call" here: the *whole prompt* of a call
(``program.call_prompt_tokens``). LATS rebuilds every prompt from the question and the trajectory
of the node being expanded or evaluated, so the prompt is what a call costs; and the paper's note
that one 8B engine sustains only ~0.2 tree-search programs/s matches 160 x 467 ~ 75k prompt tokens
per program without prefix caching.

Theory of operation (all modelled):

1. The program runs ``I`` search iterations. Each one selects a tree node (the root first, then
   with probability ``greedy_prob`` the best-valued unexpanded node, otherwise a random one, depth
   below ``max_depth``), then issues ``n_children`` *sample* calls in parallel (same prompt: the
   question and the node's trajectory; each reply is one child's ``Thought/Action`` step), then one
   *evaluation* call per child in parallel (trajectory + the child's step + its search
   observation), then, if a child reached ``Finish[...]`` (``finish_prob`` per child), one
   *reflection* call on that trajectory. The next iteration waits for all of them (selection needs
   every value), so the critical path is 2-3 calls per iteration and the width is ``n_children``.
2. ``I`` is geometric (the search succeeds after an iteration with probability p) capped at
   ``max_iterations`` (failed searches spend the whole budget: the long tail up to ~400 calls);
   p is solved from ``calls_mean``. The program's quantile picks ``I`` by inverse CDF.
3. Lengths: every output is lognormal with mean ``output_tokens_mean`` (cv 0.4); questions ~28
   tokens; observations lognormal with a mean solved once per parameter set by a pilot run so that
   whole prompts average ``prompt_tokens_mean`` (~20 tokens with the defaults: the trajectory
   of steps already fills most of the 467 tokens).
4. Thread ids: child k's sample and evaluation run on thread k; reflections on thread 0.
   ``search_time`` delays each evaluation (it needs the search result); none by default.
5. Simplifications: reflections are not fed back into later prompts; no separate rollout phase
   (LATS's simulation steps are folded into the expansion of the selected node).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field

from autellix.loadgen.program import CallSpec, Message, ProgramSpec, call_messages
from autellix.loadgen.workloads.base import ToolTime, WorkloadDef, lognormal_tokens, program_rngs
from autellix.loadgen.workloads.text import count_tokens, prose
from autellix.simulator.tokenizer import apply_chat_template

__all__ = ["WORKLOAD", "Params", "generate_program"]

NAME = "lats"
SAMPLE_SYSTEM = (
    "Solve a question answering task with interleaving Thought, Action and Observation steps. Thought"
    " reasons about the current situation. Action is one of: Search[entity], which returns the first"
    " paragraph of the entity's encyclopedia page; Lookup[keyword], which returns the next sentence"
    " containing the keyword; Finish[answer], which returns the answer and ends the task. Write the"
    " next Thought and Action only."
)
EVALUATE_SYSTEM = (
    "Analyse the trajectories of a question answering agent. Judge whether the latest Thought,"
    " Action and Observation make progress towards a correct answer, then end with a line"
    " 'Score: N' where N goes from 1 (wrong direction) to 10 (answer found)."
)
REFLECT_SYSTEM = (
    "The agent below answered incorrectly. In a few sentences, diagnose the likely reason for the"
    " failure and devise a concise plan that avoids the same mistake."
)
OBSERVATION_PREFIX = "Observation: "
_PILOT_PROGRAMS = 48
_PILOT_OBSERVATION = 64.0


@dataclass(frozen=True, slots=True)
class Params:
    calls_mean: float = 159.7
    prompt_tokens_mean: float = 467.0  # whole prompt per call (sets the observation length)
    output_tokens_mean: float = 73.0  # over all calls
    step_tokens_mean: float = 50.0  # sample replies (Thought/Action); evaluations get the balance
    n_children: int = 5
    max_iterations: int = 38  # with 5 children: at most ~400 calls
    max_depth: int = 7
    greedy_prob: float = 0.25
    finish_prob: float = 0.1
    question_tokens_mean: float = 28.0
    search_time: ToolTime = field(default_factory=ToolTime)

    def __post_init__(self) -> None:
        if self.n_children < 1 or self.max_iterations < 1 or self.max_depth < 1:
            raise ValueError("n_children, max_iterations and max_depth must be >= 1")
        if not 0.0 <= self.finish_prob <= 1.0 or not 0.0 <= self.greedy_prob <= 1.0:
            raise ValueError("finish_prob and greedy_prob are probabilities")


@dataclass(frozen=True, slots=True)
class _Model:
    success_prob: float
    observation_tokens_mean: float


def _expected_calls(p: float, params: Params) -> float:
    reflect = 1.0 - (1.0 - params.finish_prob) ** params.n_children
    iterations = float(params.max_iterations) if p <= 0.0 else (1.0 - (1.0 - p) ** params.max_iterations) / p
    return iterations * (2 * params.n_children + reflect) - reflect


def _success_prob(params: Params) -> float:
    low, high = 1e-9, 1.0
    for _ in range(60):
        middle = (low + high) / 2.0
        low, high = (middle, high) if _expected_calls(middle, params) > params.calls_mean else (low, middle)
    return (low + high) / 2.0


def _iterations(quantile: float, p: float, cap: int) -> tuple[int, bool]:
    """Inverse CDF of the geometric iteration count, capped; also whether the search succeeded."""
    if p >= 1.0:
        return 1, True
    raw = 1 + math.floor(math.log1p(-min(quantile, 1.0 - 1e-12)) / math.log1p(-p))
    return min(raw, cap), raw <= cap


@dataclass(slots=True)
class _Node:
    path: tuple[int, ...]  # pool indexes of the (step, observation) messages from the root
    depth: int
    value: float = 0.0


def _build(
    rng: random.Random, params: Params, program_id: str, quantile: float | None, model: _Model
) -> ProgramSpec:
    shape, delays = program_rngs(rng)  # shape decides the tree; texts come from their own stream
    texts = random.Random(shape.getrandbits(64))
    q = shape.random() if quantile is None else quantile
    iterations, solved = _iterations(q, model.success_prob, params.max_iterations)
    out_mean = params.output_tokens_mean
    # Samples and evaluations come in equal numbers, so this keeps the mean output at out_mean.
    evaluation_mean = max(1.0, 2.0 * out_mean - params.step_tokens_mean)
    question = prose(texts, lognormal_tokens(texts, params.question_tokens_mean, 0.3)).rstrip(".") + "?"
    messages = [
        Message("system", SAMPLE_SYSTEM),
        Message("system", EVALUATE_SYSTEM),
        Message("system", REFLECT_SYSTEM),
        Message("user", "Question: " + question),
    ]
    root = _Node((), 0)
    open_nodes: list[_Node] = []
    calls: list[CallSpec] = []
    waits: tuple[int, ...] = ()

    def add(
        prompt: tuple[int, ...], parents: tuple[int, ...], thread: int, delay: float, reply: str, tokens: int
    ) -> int:
        # ``tokens`` is the length the reply was written to (prose is exact to a token or two).
        messages.append(Message("assistant", reply))
        calls.append(CallSpec(len(calls), prompt, max(1, tokens), parents, thread, delay, len(messages) - 1))
        return len(calls) - 1

    for i in range(iterations):
        node = root
        if i > 0 and open_nodes:
            best = max(range(len(open_nodes)), key=lambda k: open_nodes[k].value)
            pick = best if shape.random() < params.greedy_prob else shape.randrange(len(open_nodes))
            node = open_nodes.pop(pick)
        prompt = (0, 3, *node.path)
        samples: list[int] = []
        children: list[_Node] = []
        finished: list[_Node] = []
        created: list[_Node] = []
        for k in range(params.n_children):
            done = shape.random() < params.finish_prob
            action = f"Finish[{prose(texts, 3)}]" if done else f"Search[{prose(texts, 3)}]"
            frame = count_tokens(f"Thought: a\nAction: {action}") - 1
            thought_tokens = max(1, lognormal_tokens(texts, params.step_tokens_mean, 0.4) - frame)
            step = f"Thought: {prose(texts, thought_tokens)}\nAction: {action}"
            samples.append(add(prompt, waits, k, 0.0, step, frame + thought_tokens))
            observation = prose(texts, lognormal_tokens(texts, model.observation_tokens_mean, 0.5))
            messages.append(Message("user", OBSERVATION_PREFIX + observation))
            child = _Node((*node.path, len(messages) - 2, len(messages) - 1), node.depth + 1, shape.random())
            (finished if done else children).append(child)
            created.append(child)
        evaluations = []
        for k, child in enumerate(created):
            size = lognormal_tokens(texts, evaluation_mean, 0.4)
            delay = params.search_time.sample(delays)
            evaluations.append(add((1, 3, *child.path), (samples[k],), k, delay, prose(texts, size), size))
        open_nodes.extend(c for c in children if c.depth < params.max_depth)
        waits = tuple(evaluations)
        if finished and i + 1 < iterations:
            size = lognormal_tokens(texts, out_mean, 0.4)
            waits = (*waits, add((2, 3, *finished[0].path), waits, 0, 0.0, prose(texts, size), size))
    metadata = {"iterations": iterations, "solved": solved}
    return ProgramSpec(program_id, NAME, 0.0, tuple(messages), tuple(calls), metadata)


@functools.cache
def _model(params: Params) -> _Model:
    p = _success_prob(params)
    pilot_model = _Model(p, _PILOT_OBSERVATION)
    rng = random.Random(0)
    prompt_total = observation_total = 0.0
    n_calls = 0
    for k in range(_PILOT_PROGRAMS):
        program = _build(
            random.Random(rng.getrandbits(64)), params, "pilot", (k + 0.5) / _PILOT_PROGRAMS, pilot_model
        )
        sizes: dict[tuple[int, ...], int] = {}
        for call in program.calls:
            if call.prompt not in sizes:
                sizes[call.prompt] = count_tokens(apply_chat_template(call_messages(program, call)))
            prompt_total += sizes[call.prompt]
            observation_total += sum(
                count_tokens(program.messages[m].content[len(OBSERVATION_PREFIX) :])
                for m in call.prompt
                if program.messages[m].content.startswith(OBSERVATION_PREFIX)
            )
        n_calls += program.num_calls
    fixed = (prompt_total - observation_total) / n_calls
    per_unit = observation_total / n_calls / _PILOT_OBSERVATION
    observation_mean = max(4.0, (params.prompt_tokens_mean - fixed) / max(per_unit, 1e-9))
    return _Model(p, observation_mean)


def generate_program(
    rng: random.Random, params: Params, program_id: str, quantile: float | None = None
) -> ProgramSpec:
    """One tree search; ``quantile`` (default: random) picks its iteration count by inverse CDF."""
    return _build(rng, params, program_id, quantile, _model(params))


WORKLOAD: WorkloadDef[Params] = WorkloadDef(
    name=NAME,
    params_type=Params,
    generate_program=generate_program,
    description="LATS-style tree search (parallel samples and evaluations per iteration), modelled",
)
