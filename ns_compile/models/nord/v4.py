"""Exact fp32 reference of Nord v4.2 (nord.md §2.4): zones, spike-driven MoE, memory cortex,
temporal mixing + half-split RoPE, and both attention paths (full causal softmax through SDPA,
or explicit scores with lowest-index top-k), chosen by `use_sdpa_attention`.

Trace keys follow the fixture file names: "{zone}_blocks.{i}.resonance.lif_q.spikes",
"association_blocks.0.moe.expert_scores", "memory_cortex.read_attn", "readout_lif.v", ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .common import (causal_mask, encoder_currents, layer_norm, leaky_clamp, put, readout_logits, to_u8,
                     topk_indices_lowest, topk_lowest_index)
from .lif import lif_run, make_lif
from .shapes import block_names, lif_populations


@dataclass
class V4Cache:
    """Per attention block: RoPE-rotated, time-mixed keys (B, H, P, Dh) and V-mean (B, P, D)."""
    keys: dict = field(default_factory=dict)
    vbar: dict = field(default_factory=dict)
    length: int = 0


def rope_tables(cfg, sd: dict, prefix: str, device):
    cos = sd.get(f"{prefix}.resonance.rope.cos_cached")
    sin = sd.get(f"{prefix}.resonance.rope.sin_cached")
    if cos is None or sin is None:
        Dh = cfg.head_dim
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, Dh, 2, dtype=torch.float32) / Dh))
        freqs = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv)
        cos, sin = freqs.cos(), freqs.sin()
    return cos.to(device), sin.to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split RoPE: x (..., S, Dh); cos/sin (S, Dh/2)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class NordV4:
    version = "v4"

    def __init__(self, cfg, sd: dict, device: str = "cpu", use_sdpa: bool | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.sd = {k: v.to(self.device) for k, v in sd.items()}
        self.use_sdpa = cfg.use_sdpa_attention if use_sdpa is None else bool(use_sdpa)
        self.lifs = {p: make_lif(self.sd, p, cfg) for _c, p, _d in lif_populations(cfg)}
        self.rope = {p: rope_tables(cfg, self.sd, p, self.device) for _c, p in block_names(cfg)}
        self.blocks = block_names(cfg)
        self.max_positions = min(t[0].shape[0] for t in self.rope.values()) if self.rope else cfg.max_seq_len
        # opt-in persistence of the memory LIF (upstream quirk, nord.md §2.6); off by default
        self.persistent = False
        self.lif_state: dict = {}

    def _lif(self, name, current, stats, want_v=False):
        persistent_names = ["memory_cortex.memory_lif"]
        if self.cfg.persistent_mem:
            persistent_names += ["input_lif", "readout_lif"]
        carried = None
        persistent = self.persistent and name in persistent_names
        if persistent:
            st = self.lif_state.get(name)
            rows = current[0].numel() // current.shape[-1]
            if st is not None and st[0].numel() // st[0].shape[-1] == rows:
                carried = st
        s, v, end = lif_run(self.lifs[name], current, carried, stats, want_v=want_v)
        if persistent:
            self.lif_state[name] = tuple(x.reshape(-1, x.shape[-1]).detach().clone() for x in end)
        return s, v

    def reset_state(self):
        self.lif_state = {}

    def forward(self, ids: torch.Tensor, *, trace: dict | None = None, stats: dict | None = None,
                cache: V4Cache | None = None, stdp_io=None) -> torch.Tensor:
        cfg, sd = self.cfg, self.sd
        ids = ids.to(self.device)
        B, S = ids.shape
        offset = cache.length if cache is not None else 0
        if self.blocks and offset + S > self.max_positions:
            raise ValueError(f"sequence of {offset + S} positions exceeds the RoPE table "
                             f"({self.max_positions} rows = max_seq_len)")
        cur = encoder_currents(sd, cfg, ids)
        put(trace, "encoder.current", cur)
        x, _ = self._lif("input_lif", cur, stats)
        if trace is not None:
            trace["input_lif.spikes"] = to_u8(x)
        mem_done = False
        for comp, p in self.blocks:
            if comp == "executive" and not mem_done:
                x = self._memory(x, trace, stats)
                mem_done = True
            x = self._block(comp, p, x, B, S, offset, cache, trace, stats)
        if not mem_done:
            x = self._memory(x, trace, stats)
        so, vo = self._lif("readout_lif", x, stats, want_v=True)
        if trace is not None:
            trace["readout_lif.spikes"] = to_u8(so)
            put(trace, "readout_lif.v", vo)
        logits = readout_logits(sd, so, vo)
        put(trace, "logits", logits)
        if cache is not None:
            cache.length += S
        return logits

    # ----------------------------------------------------------------------------------------
    def _resonance(self, p, x, B, S, offset, cache, trace, stats):
        cfg, sd = self.cfg, self.sd
        T, D, H = cfg.T_total, cfg.d_model, cfg.n_heads
        Dh = D // H
        r = f"{p}.resonance"
        y = layer_norm(x, sd, f"{p}.norm1")
        q, _ = self._lif(f"{r}.lif_q", F.linear(y, sd[f"{r}.W_q.weight"]), stats)
        k, _ = self._lif(f"{r}.lif_k", F.linear(y, sd[f"{r}.W_k.weight"]), stats)
        vbar = F.linear(y, sd[f"{r}.W_v.weight"]).mean(0)                    # (B, S, D)
        if trace is not None:
            trace[f"{r}.lif_q.spikes"] = to_u8(q)
            trace[f"{r}.lif_k.spikes"] = to_u8(k)
        wq = torch.softmax(sd[f"{r}.temporal_mix_q"], dim=0).view(T, 1, 1, 1)
        wk = torch.softmax(sd[f"{r}.temporal_mix_k"], dim=0).view(T, 1, 1, 1)
        qm = (q * wq).sum(0).reshape(B, S, H, Dh).transpose(1, 2)             # (B, H, S, Dh)
        km = (k * wk).sum(0).reshape(B, S, H, Dh).transpose(1, 2)
        cos, sin = self.rope[p]
        cs, sn = cos[offset:offset + S], sin[offset:offset + S]
        qm = apply_rope(qm, cs, sn)
        km = apply_rope(km, cs, sn)
        vh = vbar.reshape(B, S, H, Dh).transpose(1, 2)
        if cache is not None:
            if p in cache.keys:
                cache.keys[p] = torch.cat([cache.keys[p], km], dim=2)
                cache.vbar[p] = torch.cat([cache.vbar[p], vh], dim=2)
            else:
                cache.keys[p], cache.vbar[p] = km, vh
            km, vh = cache.keys[p], cache.vbar[p]
        Sk = km.shape[2]
        temp = sd[f"{r}.resonance_temp"]
        if self.use_sdpa:
            qs = qm * (temp * math.sqrt(Dh))
            if offset == 0 and Sk == S:
                ctx = F.scaled_dot_product_attention(qs, km, vh, is_causal=True)
            else:
                ctx = F.scaled_dot_product_attention(qs, km, vh, attn_mask=causal_mask(S, Sk, offset, qs.device))
        else:
            scores = (qm @ km.transpose(-1, -2)) * temp
            scores = scores.masked_fill(~causal_mask(S, Sk, offset, scores.device), float("-inf"))
            put(trace, f"{r}.scores_pre_topk", scores)
            K = min(cfg.resonance_top_k, Sk)
            if K < Sk:
                scores = topk_lowest_index(scores, K)
            put(trace, f"{r}.scores_post_topk", scores)
            attn = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
            put(trace, f"{r}.attn", attn)
            ctx = attn @ vh
        o = F.linear(ctx.transpose(1, 2).reshape(B, S, D), sd[f"{r}.W_o.weight"])
        put(trace, f"{r}.out", o)
        return o

    def _ffn(self, p, z, trace, stats):
        sd = self.sd
        h1, _ = self._lif(f"{p}.ffn.lif1", F.linear(z, sd[f"{p}.ffn.up.weight"]), stats)
        h2, _ = self._lif(f"{p}.ffn.lif2", F.linear(h1, sd[f"{p}.ffn.down.weight"]), stats)
        if trace is not None:
            trace[f"{p}.ffn.lif1.spikes"] = to_u8(h1)
            trace[f"{p}.ffn.out"] = to_u8(h2)
        return h2

    def _moe(self, p, z, trace, stats):
        """Spike-driven MoE: route-LIF cluster firing rates -> expert scores (+bias) -> top-k
        (lowest index on ties) -> softmax weights -> weighted sum of the experts' output spikes."""
        cfg, sd = self.cfg, self.sd
        m = f"{p}.moe"
        T, B, S, D = z.shape
        E, kx = cfg.n_experts, cfg.top_k_experts
        route = self.lifs[f"{m}.route_lif"]
        rs, _ = self._lif(f"{m}.route_lif", z, stats)
        if trace is not None:
            trace[f"{m}.route_lif.spikes"] = to_u8(rs)
        rate = rs.mean(0)                                                      # (B, S, D)
        nc = route.n_clusters
        csum = torch.zeros(B, S, nc, dtype=rate.dtype, device=rate.device).index_add_(-1, route.cluster_ids, rate)
        kappa = csum / route.n_per_cluster
        scores = kappa.reshape(B, S, E, nc // E).mean(-1) / max(cfg.moe_route_temperature, 0.01)
        scores = scores + sd[f"{m}.expert_bias"]
        top_idx = topk_indices_lowest(scores, kx)                              # (B, S, kx)
        top_w = torch.softmax(scores.gather(-1, top_idx), dim=-1)
        put(trace, f"{m}.expert_scores", scores)
        put(trace, f"{m}.top_idx", top_idx)
        put(trace, f"{m}.top_weights", top_w)
        out = torch.zeros_like(z)
        zf = z.reshape(T, B * S, D)
        of = out.reshape(T, B * S, D)
        idx_f, w_f = top_idx.reshape(B * S, kx), top_w.reshape(B * S, kx)
        g = f"{m}.expert_group"
        for e in range(E):
            hit = idx_f == e
            rows = hit.any(-1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            we = (w_f * hit).sum(-1)[rows]                                     # (n,)
            h1, _ = self._lif(f"{g}.lif1", F.linear(zf[:, rows], sd[f"{g}.up.{e}.weight"]), stats)
            h2, _ = self._lif(f"{g}.lif2", F.linear(h1, sd[f"{g}.down.{e}.weight"]), stats)
            of[:, rows] = of[:, rows] + we[None, :, None] * h2
        put(trace, f"{m}.out", out)
        return out

    def _block(self, comp, p, x, B, S, offset, cache, trace, stats):
        sd = self.sd
        o = self._resonance(p, x, B, S, offset, cache, trace, stats)
        x = x + sd[f"{p}.gamma_attn"] * o
        z = layer_norm(x, sd, f"{p}.norm2")
        f = self._moe(p, z, trace, stats) if comp == "association" else self._ffn(p, z, trace, stats)
        x = x + sd[f"{p}.gamma_ffn"] * f
        x = torch.relu(x) if comp == "executive" else leaky_clamp(x, sd, p)
        put(trace, f"{p}.out", x)
        return x

    def _memory(self, x, trace, stats):
        cfg, sd = self.cfg, self.sd
        mc = "memory_cortex"
        T, B, S, D = x.shape
        M, Hr = cfg.memory_size, cfg.memory_n_read_heads
        hd = M // Hr
        sm, vm = self._lif(f"{mc}.memory_lif", F.linear(x, sd[f"{mc}.to_memory.weight"]), stats, want_v=True)
        sg, _ = self._lif(f"{mc}.gate_lif", F.linear(x, sd[f"{mc}.gate_proj.weight"]), stats)
        gate = torch.sigmoid(10.0 * (sg.mean(0) - sd[f"{mc}.gate_threshold"]))   # (B, S, M)
        keys = F.linear(vm, sd[f"{mc}.read_key_proj.weight"]).reshape(T, B, S, Hr, hd)
        a = (keys * sd[f"{mc}.read_query"]).sum(-1) * (hd ** -0.5)            # (T, B, S, Hr)
        alpha = torch.softmax(a.float(), dim=0)
        read = (alpha.unsqueeze(-1) * vm.reshape(T, B, S, Hr, hd)).sum(0).reshape(B, S, M)
        read = read * gate
        out = layer_norm(F.linear(read, sd[f"{mc}.from_memory.weight"]), sd, f"{mc}.mem_norm")
        x = x + torch.sigmoid(sd[f"{mc}.memory_mix"]) * out
        if trace is not None:
            trace[f"{mc}.memory_lif.spikes"] = to_u8(sm)
            put(trace, f"{mc}.memory_lif.v", vm)
            trace[f"{mc}.gate_lif.spikes"] = to_u8(sg)
            put(trace, f"{mc}.read_attn", alpha)
            put(trace, f"{mc}.out", x)
        return x
