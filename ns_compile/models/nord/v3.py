"""Exact fp32 reference of Nord v3 (nord.md §1.2), with an incremental K/V-mean cache and the
inference-time reward-modulated STDP of the v3.1 chat (§1.4).

Layout: time-major (T_total, B, S, D) everywhere, like the fixture files.
Trace keys (when a `trace` dict is passed) follow the fixture file names, e.g.
"encoder.current", "input_lif.spikes", "blocks.0.resonance.lif_q.spikes",
"blocks.0.resonance.scores_pre_topk", "blocks.0.out", "readout_lif.v", "logits".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .common import (causal_mask, encoder_currents, layer_norm, leaky_clamp, put, readout_logits, to_u8,
                     topk_lowest_index)
from .lif import lif_run, make_lif


@dataclass
class V3Cache:
    """Per layer: K spike trains (T, B, P, D) and V-mean (B, P, D) of the P positions seen so far.

    Exact while STDP is off and the context does not slide past max_seq_len (nord.md §1.5)."""
    keys: list = field(default_factory=list)
    vbar: list = field(default_factory=list)
    length: int = 0


class NordV3:
    """Nord v3 reference. `sd` is the (validated, fp32) state dict; W_v entries may be updated in
    place by STDP (`stdp_update`)."""

    version = "v3"

    def __init__(self, cfg, sd: dict, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.sd = {k: v.to(self.device) for k, v in sd.items()}
        names = ["input_lif", "readout_lif"]
        for l in range(cfg.n_layers):
            names += [f"blocks.{l}.resonance.lif_q", f"blocks.{l}.resonance.lif_k",
                      f"blocks.{l}.ffn.lif1", f"blocks.{l}.ffn.lif2"]
        self.lifs = {n: make_lif(self.sd, n, cfg) for n in names}
        # opt-in persistent input/readout LIF state (v3 persistent_mem semantics, nord.md §1.6)
        self.persistent = False
        self.lif_state: dict = {}

    # ----------------------------------------------------------------------------------------
    def _lif(self, name, current, stats, trace=None, want_v=False):
        carried = None
        persistent = self.persistent and name in ("input_lif", "readout_lif")
        if persistent:
            st = self.lif_state.get(name)
            rows = current[0].numel() // current.shape[-1]
            if st is not None and st[0].numel() // st[0].shape[-1] == rows:
                carried = st
        s, v, end = lif_run(self.lifs[name], current, carried, stats, want_v=want_v)
        if persistent:
            self.lif_state[name] = tuple(x.reshape(-1, x.shape[-1]).detach().clone() for x in end)
        return s, v

    def forward(self, ids: torch.Tensor, *, trace: dict | None = None, stats: dict | None = None,
                cache: V3Cache | None = None, stdp_io: list | None = None) -> torch.Tensor:
        """ids (B, S) -> logits (B, S, V).

        cache: if given, `ids` are the next S tokens after `cache.length` cached ones; the cache is
        extended in place. stdp_io: if a list, receives per block (pre, post) = (X before, X after).
        """
        cfg, sd = self.cfg, self.sd
        ids = ids.to(self.device)
        B, S = ids.shape
        offset = cache.length if cache is not None else 0
        cur = encoder_currents(sd, cfg, ids)
        put(trace, "encoder.current", cur)
        x, v = self._lif("input_lif", cur, stats, want_v=trace is not None)
        if trace is not None:
            trace["input_lif.spikes"] = to_u8(x)
            put(trace, "input_lif.v", v)
        for l in range(cfg.n_layers):
            pre = x
            x = self._block(l, x, B, S, offset, cache, trace, stats)
            if stdp_io is not None:
                stdp_io.append((pre, x))
        so, vo = self._lif("readout_lif", x, stats, want_v=True)
        if trace is not None:
            trace["readout_lif.spikes"] = to_u8(so)
            put(trace, "readout_lif.v", vo)
        logits = readout_logits(sd, so, vo)
        put(trace, "logits", logits)
        if cache is not None:
            cache.length += S
        return logits

    def _block(self, l, x, B, S, offset, cache, trace, stats):
        cfg, sd = self.cfg, self.sd
        p = f"blocks.{l}"
        T, D, H = cfg.T_total, cfg.d_model, cfg.n_heads
        Dh = D // H
        y = layer_norm(x, sd, f"{p}.norm1")
        put(trace, f"{p}.resonance.in", y)
        q, _ = self._lif(f"{p}.resonance.lif_q", F.linear(y, sd[f"{p}.resonance.W_q.weight"]), stats)
        k, _ = self._lif(f"{p}.resonance.lif_k", F.linear(y, sd[f"{p}.resonance.W_k.weight"]), stats)
        vbar = F.linear(y, sd[f"{p}.resonance.W_v.weight"]).mean(0)          # (B, S, D)
        if trace is not None:
            trace[f"{p}.resonance.lif_q.spikes"] = to_u8(q)
            trace[f"{p}.resonance.lif_k.spikes"] = to_u8(k)
        if cache is not None:
            if len(cache.keys) <= l:
                cache.keys.append(k)
                cache.vbar.append(vbar)
            else:
                cache.keys[l] = torch.cat([cache.keys[l], k], dim=2)
                cache.vbar[l] = torch.cat([cache.vbar[l], vbar], dim=1)
            k_all, v_all = cache.keys[l], cache.vbar[l]
        else:
            k_all, v_all = k, vbar
        Sk = k_all.shape[2]
        # per head: the T*Dh time-channel bits of each position
        qh = q.reshape(T, B, S, H, Dh).permute(1, 3, 2, 0, 4).reshape(B, H, S, T * Dh)
        kh = k_all.reshape(T, B, Sk, H, Dh).permute(1, 3, 2, 0, 4).reshape(B, H, Sk, T * Dh)
        counts = qh @ kh.transpose(-1, -2)                                    # exact integers
        scores = counts * sd[f"{p}.resonance.resonance_temp"]
        mask = causal_mask(S, Sk, offset, scores.device)
        scores = scores.masked_fill(~mask, float("-inf"))
        put(trace, f"{p}.resonance.scores_pre_topk", scores)
        K = min(cfg.resonance_top_k, Sk)
        if K < Sk:
            scores = topk_lowest_index(scores, K)
        put(trace, f"{p}.resonance.scores_post_topk", scores)
        attn = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        put(trace, f"{p}.resonance.attn", attn)
        vh = v_all.reshape(B, Sk, H, Dh).transpose(1, 2)                      # (B, H, Sk, Dh)
        ctx = (attn @ vh).transpose(1, 2).reshape(B, S, D)
        o = F.linear(ctx, sd[f"{p}.resonance.W_o.weight"])
        put(trace, f"{p}.resonance.out", o)
        x = x + sd[f"{p}.gamma_attn"] * o
        z = layer_norm(x, sd, f"{p}.norm2")
        put(trace, f"{p}.ffn.in", z)
        h1, _ = self._lif(f"{p}.ffn.lif1", F.linear(z, sd[f"{p}.ffn.up.weight"]), stats)
        h2, _ = self._lif(f"{p}.ffn.lif2", F.linear(h1, sd[f"{p}.ffn.down.weight"]), stats)
        if trace is not None:
            trace[f"{p}.ffn.lif1.spikes"] = to_u8(h1)
            trace[f"{p}.ffn.out"] = to_u8(h2)
        x = leaky_clamp(x + sd[f"{p}.gamma_ffn"] * h2, sd, p)
        put(trace, f"{p}.out", x)
        return x

    # ----------------------------------------------------------------------------------------
    def stdp_update(self, stdp_io: list, loss_proxy: float, engine: "STDPState", record: list | None = None):
        """Apply the v3.1 chat's STDP update to every block's W_v (nord.md §1.4), in block order."""
        cfg = self.cfg
        a_plus, a_minus = cfg.stdp_a_plus, cfg.stdp_a_minus
        d_pre = math.exp(-1.0 / cfg.stdp_tau_plus)
        d_post = math.exp(-1.0 / cfg.stdp_tau_minus)
        # truthiness test of the upstream code: 0.0 and -0.0 mean "no loss" -> fall back to the
        # stored last loss, which the chat never sets
        loss = loss_proxy if loss_proxy else engine.last_loss
        for l, (pre, post) in enumerate(stdp_io):
            T, D = pre.shape[0], pre.shape[-1]
            P = pre.reshape(T, -1, D).mean(1)
            Q = post.reshape(T, -1, D).mean(1)
            tr_pre = torch.zeros(D, dtype=P.dtype, device=P.device)
            tr_post = torch.zeros(D, dtype=Q.dtype, device=Q.device)
            dW = torch.zeros(D, D, dtype=P.dtype, device=P.device)
            for t in range(T):
                tr_pre = tr_pre * d_pre + P[t]
                tr_post = tr_post * d_post + Q[t]
                if Q[t].any():
                    dW = dW + a_plus * torch.outer(Q[t], tr_pre)
                if P[t].any():
                    dW = dW - a_minus * torch.outer(tr_post, P[t])
            rec = {"block": l, "pre_mean": P.cpu(), "post_mean": Q.cpu(), "ema_before": engine.loss_ema}
            if loss is not None:
                r = torch.sigmoid(torch.tensor((engine.loss_ema - loss) * cfg.stdp_reward_scale,
                                               dtype=torch.float32))
                dW = dW * (2.0 * r - 1.0).to(dW.device)
                engine.loss_ema = 0.99 * engine.loss_ema + 0.01 * loss
                rec.update(loss_used=loss, reward=float(r))
            else:
                rec.update(loss_used=None, reward=None)
            rec["ema_after"] = engine.loss_ema
            key = f"blocks.{l}.resonance.W_v.weight"
            self.sd[key] = torch.clamp(self.sd[key] + dW, cfg.stdp_w_min, cfg.stdp_w_max)
            if record is not None:
                record.append(rec)


@dataclass
class STDPState:
    """Session state of the v3 STDP engine: the loss EMA (starts at 10.0, Python float, never saved)
    and the stored "last loss" the upstream engine falls back on (never set by the chat)."""
    loss_ema: float = 10.0
    last_loss: float | None = None
