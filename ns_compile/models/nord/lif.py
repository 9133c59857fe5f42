"""The Nord AssociativeLIF neuron, exact fp32 (nord.md §1.2 "AssociativeLIF", §2.3 v4 clamps).

Per step t (state v, i, refractory counter r; all start at 0 unless a carried state is given):
  1. i <- beta_syn * i + I_t
  2. v~ = beta_mem * v + (1 - beta_mem) * i ;  v <- v_reset where r > 0 else v~
  3. s = [v >= theta]                       (inclusive, per-neuron theta)
  4. cascade: f_c = (#spikes in cluster c) / floor(d / nc);  a = g * (f @ sigmoid(N)^T);
     i <- i + a[cluster_of(k)]             (affects v from t+1 on)
  5. v <- v - theta * s                      (soft reset, after the cascade)
  6. r <- refractory_t where s else max(r - 1, 0)
and emit (s_t, v_t). v3 thresholds are unconstrained (a theta <= v_reset fires even while
refractory); v4 clamps theta to [v_thresh_min, v_thresh_max] and beta_mem to
[tau_mem_min, tau_mem_max].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LIFParams:
    name: str
    theta: torch.Tensor          # (d,) effective threshold
    beta_mem: torch.Tensor       # () effective
    beta_syn: torch.Tensor       # ()
    coupling: torch.Tensor       # (nc, nc) = sigmoid(neighbor_weights)
    gain: torch.Tensor           # (nc,)
    cluster_ids: torch.Tensor    # (d,) int64
    n_per_cluster: int           # floor(d / nc), the divisor of the cluster firing fraction
    v_reset: float
    refractory_t: int

    @property
    def size(self) -> int:
        return int(self.theta.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.gain.shape[0])

    def to(self, device) -> "LIFParams":
        return LIFParams(self.name, self.theta.to(device), self.beta_mem.to(device), self.beta_syn.to(device),
                         self.coupling.to(device), self.gain.to(device), self.cluster_ids.to(device),
                         self.n_per_cluster, self.v_reset, self.refractory_t)


def make_lif(sd: dict, prefix: str, cfg) -> LIFParams:
    """Build the effective parameters of the LIF whose state-dict keys start with `prefix`."""
    v4 = cfg.version == "v4"
    if v4:
        theta = sd[f"{prefix}.threshold_raw"].clamp(cfg.v_thresh_min, cfg.v_thresh_max)
        beta_mem = torch.sigmoid(sd[f"{prefix}.beta_mem_raw"]).clamp(cfg.tau_mem_min, cfg.tau_mem_max)
    else:
        theta = sd[f"{prefix}.threshold"]
        beta_mem = torch.sigmoid(sd[f"{prefix}.beta_mem_raw"])
    beta_syn = torch.sigmoid(sd[f"{prefix}.beta_syn_raw"])
    nw = sd[f"{prefix}.neighbor_weights"]
    nc = int(nw.shape[0])
    d = int(theta.shape[0])
    cid = sd.get(f"{prefix}.cluster_ids")
    if cid is None:
        cid = torch.arange(d) % nc
    return LIFParams(prefix, theta, beta_mem, beta_syn, torch.sigmoid(nw), sd[f"{prefix}.cluster_gain"],
                     cid.to(torch.int64), d // nc, float(cfg.v_reset), int(cfg.refractory_t))


def lif_run(p: LIFParams, current: torch.Tensor, state: tuple | None = None, stats: dict | None = None,
            want_v: bool = True, spike_fn=None):
    """Run the LIF over time.

    current: (T, *rows, d) input currents. state: optional carried (v, i), each (*rows, d)
    (refractory counters never carry). Returns (spikes, v_trace or None, (v_end, i_end)),
    spikes and v_trace shaped like `current`; spikes are 0/1 in the current's dtype.
    If `stats` is a dict, stats[p.name] receives the firing fraction per timestep.
    spike_fn: training only. None (inference) is the exact step [v >= theta]; a function of
    x = v - theta returning the same 0/1 spikes with a surrogate gradient (e.g.
    `sigmoid_surrogate_spike`) makes the whole run differentiable.
    """
    T = current.shape[0]
    shape = current.shape
    d = shape[-1]
    x = current.reshape(T, -1, d)
    N = x.shape[1]
    if state is None:
        v = torch.zeros(N, d, dtype=x.dtype, device=x.device)
        i = torch.zeros(N, d, dtype=x.dtype, device=x.device)
    else:
        v = state[0].reshape(N, d).to(x.dtype).clone()
        i = state[1].reshape(N, d).to(x.dtype).clone()
    r = torch.zeros(N, d, dtype=torch.int64, device=x.device)
    bm, bs = p.beta_mem.to(x.dtype), p.beta_syn.to(x.dtype)
    one_minus_bm = 1.0 - bm
    theta = p.theta.to(x.dtype)
    coupling_t = p.coupling.to(x.dtype).t()
    gain = p.gain.to(x.dtype)
    nc = p.n_clusters
    cid = p.cluster_ids
    regular = d % nc == 0 and bool((cid == torch.arange(d, device=cid.device) % nc).all())
    spikes = torch.empty_like(x)
    vs = torch.empty_like(x) if want_v else None
    v_reset = torch.tensor(p.v_reset, dtype=x.dtype, device=x.device)
    for t in range(T):
        i = bs * i + x[t]
        v_new = bm * v + one_minus_bm * i
        v = torch.where(r > 0, v_reset, v_new)
        s = (v >= theta).to(x.dtype) if spike_fn is None else spike_fn(v - theta)
        if N:
            if regular:
                counts = s.view(N, d // nc, nc).sum(1)
            else:
                counts = torch.zeros(N, nc, dtype=x.dtype, device=x.device).index_add_(1, cid, s)
            frac = counts / p.n_per_cluster
            a = (frac @ coupling_t) * gain
            i = i + a[:, cid]
        v = v - theta * s
        r = torch.where(s > 0, torch.full_like(r, p.refractory_t), (r - 1).clamp_min(0))
        spikes[t] = s
        if want_v:
            vs[t] = v
    if stats is not None:
        record_stats(stats, p.name, spikes)
    return spikes.reshape(shape), (vs.reshape(shape) if want_v else None), (v.reshape(shape[1:]), i.reshape(shape[1:]))


class _SigmoidSurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * x.float())
        return (grad * (ctx.alpha * sig * (1.0 - sig))).to(x.dtype), None


def sigmoid_surrogate_spike(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    """Training-mode spike of x = v - theta: forward the exact step [x >= 0] (x >= 0 exactly when
    v >= theta), backward the sigmoid surrogate alpha * sig(alpha x) * (1 - sig(alpha x)) (upstream
    Nord's `surrogate_alpha` = 4)."""
    return _SigmoidSurrogateSpike.apply(x, float(alpha))


def record_stats(stats: dict, name: str, spikes: torch.Tensor) -> None:
    """Accumulate spike counts of one population call (spikes: (T, N, d) 0/1) into `stats`.

    A population called several times in one forward (the shared MoE expert LIFs, once per
    expert on that expert's rows) accumulates; `finalize_stats` turns counts into fractions.
    """
    T, N, d = spikes.shape
    per_t = spikes.sum(dim=(1, 2)).double().cpu()
    e = stats.get(name)
    if e is None:
        stats[name] = {"neurons": d, "rows": N, "spikes_per_t": per_t}
    else:
        e["rows"] += N
        e["spikes_per_t"] = e["spikes_per_t"] + per_t


def finalize_stats(stats: dict) -> dict:
    """{population: {neurons, rows, rate, rate_per_t}}: rate = fraction of neurons firing per
    frame (a frame = one timestep of one token row), averaged over frames; rate_per_t per timestep."""
    out = {}
    for name, e in stats.items():
        denom = e["rows"] * e["neurons"]
        per_t = [float(x) / denom if denom else 0.0 for x in e["spikes_per_t"]]
        out[name] = {"neurons": e["neurons"], "rows": e["rows"],
                     "rate": sum(per_t) / len(per_t) if per_t else 0.0, "rate_per_t": per_t}
    return out
