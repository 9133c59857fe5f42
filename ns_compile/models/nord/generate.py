"""Nord generation: the upstream chat samplers and an exact incremental cache.

Sampling (parameters come from GenerationConfig; the upstream chat defaults are in
`V3_CHAT_DEFAULTS` / `V4_CHAT_DEFAULTS`):

* v3 (chat.py v3.1, nord.md §1.5): repetition penalty over the last 50 ids of prompt+generation,
  penalty^min(count, 5), sign-aware (divide positive logits, multiply negative ones);
  / temperature; top-k keeping every logit >= the k-th largest (ties kept); top-p dropping a
  token when (cumulative - own probability) > top_p; softmax; multinomial.
* v4 (chat.py v4.0, §2.6): every unique id of prompt+generation has its logit divided by the
  penalty (sign-unaware); / max(temperature, 0.01); softmax; top-p by zeroing probabilities whose
  (cumulative - own) > top_p, renormalise; multinomial. (top_k > 0 is our extension: the v3
  top-k filter, applied before the softmax; upstream v4 has none.)
* temperature <= 0 means greedy in both: after the penalty, the arg-max (lowest id on ties); the
  "filtered distribution" is then one-hot, which is what upstream gets with top_k=1 (v3) or
  top_p=0 (v4), so the STDP loss proxy is -0.0 as upstream.

Incremental decoding caches, per layer and position, the K spike trains (v3) or rotated mixed
keys (v4) and V-mean. It is exact (up to float summation order) while STDP is off, persistence is
off and the context fits in max_seq_len. When the context window slides, or STDP is on (W_v changes
every token), or persistence is on, every step re-runs the whole (windowed) prefix like upstream.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch

V3_REP_WINDOW = 50
V3_REP_MAX_COUNT = 5
# The upstream chat defaults, for callers that want "what the upstream chat would do".
V3_CHAT_DEFAULTS = dict(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.3, max_new_tokens=200)
V4_CHAT_DEFAULTS = dict(temperature=0.85, top_k=0, top_p=0.9, repetition_penalty=1.3)


@dataclass
class GenerationResult:
    ids: list = field(default_factory=list)                 # new ids
    step_last_logits: list = field(default_factory=list)    # raw last-position logits per step (V,)
    loss_proxies: list = field(default_factory=list)        # -log(max filtered prob + 1e-8) per step
    context_lengths: list = field(default_factory=list)
    stdp_records: list = field(default_factory=list)        # per step: list of per-block records
    used_cache: list = field(default_factory=list)          # per step: True when served by the cache
    truncated_prompt: bool = False


def _topk_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if 0 < k < logits.shape[-1]:
        kth = torch.sort(logits, descending=True).values[k - 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def _loss_proxy(probs: torch.Tensor) -> float:
    return float(-torch.log(probs.max() + 1e-8))


def filtered_probs_v3(last: torch.Tensor, history: list, gen) -> torch.Tensor | None:
    """The v3.1 chat's filtered distribution (None for greedy)."""
    logits = last.detach().float().cpu().clone()
    if gen.repetition_penalty != 1.0:
        for tok, c in Counter(history[-V3_REP_WINDOW:]).items():
            if 0 <= tok < logits.shape[0]:
                p = gen.repetition_penalty ** min(c, V3_REP_MAX_COUNT)
                logits[tok] = logits[tok] / p if logits[tok] > 0 else logits[tok] * p
    if gen.temperature <= 0:
        return logits  # greedy: caller takes the arg-max of the penalised logits
    logits = logits / gen.temperature
    logits = _topk_filter(logits, gen.top_k)
    if gen.top_p < 1.0:
        sl, si = torch.sort(logits, descending=True, stable=True)
        sp = torch.softmax(sl, dim=-1)
        remove = (torch.cumsum(sp, dim=-1) - sp) > gen.top_p
        logits[si[remove]] = float("-inf")
    return torch.softmax(logits, dim=-1)


def filtered_probs_v4(last: torch.Tensor, history: list, gen) -> torch.Tensor:
    logits = last.detach().float().cpu().clone()
    if gen.repetition_penalty != 1.0:
        for tok in set(history):
            if 0 <= tok < logits.shape[0]:
                logits[tok] = logits[tok] / gen.repetition_penalty
    if gen.temperature <= 0:
        return logits
    logits = logits / max(gen.temperature, 0.01)
    logits = _topk_filter(logits, gen.top_k)
    probs = torch.softmax(logits, dim=-1)
    if gen.top_p < 1.0:
        sp, si = torch.sort(probs, descending=True, stable=True)
        sp = sp.masked_fill((torch.cumsum(sp, dim=-1) - sp) > gen.top_p, 0.0)
        sp = sp / sp.sum()
        probs = torch.zeros_like(probs).scatter(0, si, sp)
    return probs


def sample_next(version: str, last: torch.Tensor, history: list, gen, rng: torch.Generator):
    """-> (token id, loss proxy of the filtered distribution)."""
    f = filtered_probs_v3 if version == "v3" else filtered_probs_v4
    out = f(last, history, gen)
    if gen.temperature <= 0:
        tok = int(torch.argmax(out))
        return tok, _loss_proxy(torch.ones(1))  # one-hot: -log(1 + 1e-8) == -0.0 in fp32
    tok = int(torch.multinomial(out, 1, generator=rng))
    return tok, _loss_proxy(out)


def run_generation(model, prompt_ids, gen, *, stdp_state=None, forced_ids=None, use_cache: bool = True,
                   stats: dict | None = None, on_step=None) -> GenerationResult:
    """Generate up to gen.max_new_tokens ids after `prompt_ids` with a NordV3/NordV4 reference.

    stdp_state: a v3 STDPState -> reward-modulated STDP on W_v after each token (v3 only; the
    caller decides what to do for v4). forced_ids: teacher forcing (the sampler still runs and
    its loss proxy is used, but the forced id is appended). on_step(step, result) is called after
    each token (after the STDP update).
    """
    from .v3 import V3Cache
    from .v4 import V4Cache

    cfg = model.cfg
    version = model.version
    res = GenerationResult()
    ids = [int(t) for t in prompt_ids]
    if not ids:
        raise ValueError("empty prompt")
    # prompt truncation of the upstream chats (keep the beginning)
    keep = max(32, cfg.max_seq_len - gen.max_new_tokens) if version == "v3" else cfg.max_seq_len
    keep = min(keep, cfg.max_seq_len)
    if len(ids) > keep:
        ids = ids[:keep]
        res.truncated_prompt = True
    if hasattr(model, "reset_state"):
        model.reset_state()
    rng = torch.Generator()
    if gen.seed is not None:
        rng.manual_seed(int(gen.seed))
    else:
        rng.seed()
    stdp = stdp_state is not None
    cacheable = use_cache and not stdp and not getattr(model, "persistent", False)
    cache = None
    n_steps = gen.max_new_tokens if forced_ids is None else min(gen.max_new_tokens, len(forced_ids))
    for step in range(n_steps):
        ctx = ids[-cfg.max_seq_len:]
        res.context_lengths.append(len(ctx))
        stdp_io = [] if stdp else None
        with torch.no_grad():
            if cacheable and len(ids) <= cfg.max_seq_len:
                if cache is None:
                    cache = V3Cache() if version == "v3" else V4Cache()
                new = ids[cache.length:]
                logits = model.forward(torch.tensor([new]), cache=cache, stats=stats)
                res.used_cache.append(True)
            else:
                cache = None
                logits = model.forward(torch.tensor([ctx]), stats=stats, stdp_io=stdp_io)
                res.used_cache.append(False)
        last = logits[0, -1].float().cpu()
        res.step_last_logits.append(last)
        tok, proxy = sample_next(version, last, ids, gen, rng)
        if forced_ids is not None:
            tok = int(forced_ids[step])
        res.loss_proxies.append(proxy)
        ids.append(tok)
        res.ids.append(tok)
        if stdp:
            rec: list = []
            model.stdp_update(stdp_io, proxy, stdp_state, record=rec)
            res.stdp_records.append(rec)
        if on_step is not None:
            on_step(step, res)
        if gen.eos_token_id is not None and tok == gen.eos_token_id:
            break
    return res


def warn_v4_stdp():
    warnings.warn("STDP requested for a Nord v4 model: upstream v4 never applies its STDP engine "
                  "(nord.md §2.5), so it is a no-op here too", UserWarning, stacklevel=3)
