"""The exact NeuronSpark-V1 forward pass (spec §3, §3.12), one function per primitive.

Layout. Tokens are time-major: the residual stream is `h` [T, B, D], one vector per token
(spec §3.8: every frame of a token carries the same residual, so norms run once per token).
Frame tensors are [T*K, B, ...] with a token's K frames contiguous (global frame τ = t*K + k);
this is the (S, *cols) layout of `ns_compile.kernels`, whose scans are the exact sequential
recurrence (never the upstream CPU fallback, spec §4.3).

Schedule. `forward_tokens` runs layer by layer over all frames of the given tokens: matmuls are
batched over the T*K frames, the PLIF scans run sequentially over them, starting from the
membrane potentials in `NSState` and leaving the end-of-chunk potentials there. A prompt and a
single generated token go through the same code (T = prompt length or T = 1), so incremental
generation equals the full forward.

Probing. `forward_tokens(..., probe=fn)` calls `fn(key, **tensors)` with every population's
per-frame values (frame tensors [S, B, n]: `v` the membrane potential after reset, `spikes`
where the population spikes, `out` for stateless stages) and per-token host values ([T, B, D]),
under the canonical keys of `ns_compile.verify.keys` ("layers.{l}.block.hidden", ...). It only
observes: with `probe=None` (the default) nothing changes.

Precision. Weights come in as prepared by `checkpoint.materialize`: Linear matrices in the compute
dtype (fp32 or bf16), everything else fp32. `linear` multiplies in the matrix dtype and returns
fp32; all element-wise math, norms, PonderNet and the PLIF scans run in fp32 and the membrane state
is always fp32. In bf16 this mirrors upstream CUDA autocast (bf16 Linear outputs, fp32 residual,
fp32 modulation because the biases are fp32, fp32 scan accumulation, fp32 RMSNorm) except that
Linear outputs are not rounded to bf16 before use and biases are added in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ns_compile.kernels import plif_scan, plif_scan_rowparam
from ns_compile.models.neuronspark.config import NSConfig

NORM_EPS = 1e-6        # RMSNorm and LateralInhibition (spec §2.1)
HALT_CLAMP = 1e-7      # PonderNet halting-probability clamp
PONDER_EPS = 1e-8      # PonderNet normaliser


# ---- carried state ----------------------------------------------------------------------------

@dataclass
class NSState:
    """Membrane potentials carried across tokens (spec §3.9), fp32, zero at sequence start.

    Lists are indexed by layer; each tensor is [B, neurons].
    """

    input1: list[torch.Tensor]   # input_neuron1.v           D
    hidden: list[torch.Tensor]   # snn_block hidden neurons  D*N
    input2: list[torch.Tensor]   # input_neuron2.v           D
    gate: list[torch.Tensor]     # snn_ffn.gate_neuron.v     D_ff
    up: list[torch.Tensor]       # snn_ffn.up_neuron.v       D_ff
    output: torch.Tensor         # output_neuron.v           D

    @classmethod
    def zeros(cls, cfg: NSConfig, batch: int, device="cpu") -> "NSState":
        def z(n):
            return torch.zeros(batch, n, dtype=torch.float32, device=device)
        L = cfg.num_layers
        return cls([z(cfg.D) for _ in range(L)], [z(cfg.DN) for _ in range(L)],
                   [z(cfg.D) for _ in range(L)], [z(cfg.D_ff) for _ in range(L)],
                   [z(cfg.D_ff) for _ in range(L)], z(cfg.D))

    def floats_per_sequence(self) -> int:
        tensors = self.input1 + self.hidden + self.input2 + self.gate + self.up + [self.output]
        return sum(t.shape[1] for t in tensors)


def state_floats(cfg: NSConfig) -> int:
    """Carried floats per sequence: L*(2D + DN + 2*D_ff) + D (287,616 for 0.9B)."""
    return cfg.num_layers * (2 * cfg.D + cfg.DN + 2 * cfg.D_ff) + cfg.D


# ---- primitives ---------------------------------------------------------------------------------

def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weightᵀ (+ bias) with the product in the weight's dtype; result fp32."""
    y = F.linear(x.to(weight.dtype), weight).float()
    return y if bias is None else y + bias


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weight ⊙ x / sqrt(mean_d x² + eps), in fp32 (RMSNorm and LateralInhibition alike)."""
    x = x.float()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS))


def repeat_frames(x: torch.Tensor, K: int) -> torch.Tensor:
    """Per-token [T, ...] -> per-frame [T*K, ...]: each token's value on its K frames."""
    T = x.shape[0]
    return x.unsqueeze(1).expand(T, K, *x.shape[1:]).reshape(T * K, *x.shape[1:])


def plif_a(drive: torch.Tensor, w: torch.Tensor, v_th: torch.Tensor, v0: torch.Tensor, probe=None, key=None):
    """Primitive A, static PLIF (spec §3.2): β = σ(w), a = 1-β.

    V_pre = β·V + a·x; spike if V_pre ≥ θ; V = V_pre − θ·s; output the leak a·V_post.
    drive: [S, B, n]; v0: [B, n]. Returns (leak output [S, B, n], final V [B, n]).
    """
    beta = torch.sigmoid(w)
    a = 1.0 - beta
    s, v_post = plif_scan_rowparam(beta, a * drive, v_th, v0)
    if probe is not None:
        probe(key, v=v_post, spikes=s)
    return a * v_post, v_post[-1]


def plif_b(beta: torch.Tensor, u: torch.Tensor, theta: torch.Tensor, v0: torch.Tensor, probe=None, key=None):
    """Primitive B, selective PLIF (spec §3.3): per-frame β, u, θ; output the raw V_post.

    Returns (V_post [S, B, n], final V [B, n]).
    """
    s, v_post = plif_scan(beta, u, theta, v0)
    if probe is not None:
        probe(key, v=v_post, spikes=s)
    return v_post, v_post[-1]


def ponder_aggregate(frames: torch.Tensor, halt_w: torch.Tensor, halt_b: torch.Tensor, K: int):
    """Primitive D, PonderNet soft aggregation over each token's K frames (spec §3.5).

    frames: [T*K, B, D] -> [T, B, D]. Nothing halts: all K frames are weighted.
    """
    S, B, D = frames.shape
    f = frames.reshape(S // K, K, B, D)
    p = torch.sigmoid(linear(f, halt_w, halt_b)).clamp(HALT_CLAMP, 1.0 - HALT_CLAMP)  # [T, K, B, 1]
    log_survive = torch.cumsum(torch.log1p(-p), dim=1)
    # survival before frame k: S_0 = 1, S_k = Π_{j<k}(1 − p_j)
    survival = torch.exp(torch.cat([torch.zeros_like(log_survive[:, :1]), log_survive[:, :-1]], dim=1))
    lam = p * survival
    lam_hat = lam / (lam.sum(dim=1, keepdim=True) + PONDER_EPS)
    return (lam_hat * f).sum(dim=1)


def centered(r: torch.Tensor) -> torch.Tensor:
    """Residual centering: subtract the mean over D."""
    return r - r.mean(dim=-1, keepdim=True)


# ---- sublayers ---------------------------------------------------------------------------------

def snn_block_frames(w: dict, p: str, v: torch.Tensor, v_hidden0: torch.Tensor, v_th_min: float,
                     probe=None, key: str = ""):
    """SNNBlock on the input-neuron leak v [S, B, D] (spec §3.6 steps 3-5).

    Returns (frame outputs f [S, B, D], final hidden V [B, DN]).
    """
    current = linear(v, w[p + "W_in.weight"])
    beta = torch.sigmoid(linear(v, w[p + "W_beta_x.weight"], w[p + "b_beta"]))
    alpha = F.softplus(linear(v, w[p + "W_alpha_x.weight"], w[p + "b_alpha"]))
    theta = v_th_min + torch.abs(linear(v, w[p + "W_th_x.weight"], w[p + "b_th"]))
    v_post, v_last = plif_b(beta, alpha * current, theta, v_hidden0, probe, key + ".hidden")
    del current, beta, alpha, theta
    gate = torch.sigmoid(linear(v, w[p + "W_gate.weight"]))
    f = linear(v_post, w[p + "W_out.weight"]) * gate + linear(v, w[p + "W_skip.weight"])
    if probe is not None:
        probe(key + ".readout", out=f)
    return f, v_last


def snn_ffn_frames(w: dict, p: str, v: torch.Tensor, v_gate0: torch.Tensor, v_up0: torch.Tensor,
                   probe=None, key: str = ""):
    """SNNFFN on the input-neuron leak v [S, B, D] (spec §3.6 sublayer 2, steps 3-4).

    The gate and up PLIF_A populations are independent, so they run as one scan over
    2*D_ff columns. Returns (f [S, B, D], final gate V, final up V).
    """
    n = v_gate0.shape[-1]
    drive = torch.cat([linear(v, w[p + "gate_proj.weight"]), linear(v, w[p + "up_proj.weight"])], dim=-1)
    neuron_w = torch.cat([w[p + "gate_neuron.w"], w[p + "up_neuron.w"]])
    neuron_th = torch.cat([w[p + "gate_neuron.v_th"], w[p + "up_neuron.v_th"]])
    split = None if probe is None else _SplitProbe(probe, key + ".gate", key + ".up", n)
    leak, v_last = plif_a(drive, neuron_w, neuron_th, torch.cat([v_gate0, v_up0], dim=-1), split)
    del drive
    f = linear(leak[..., :n] * leak[..., n:], w[p + "down_proj.weight"]) + linear(v, w[p + "skip_proj.weight"])
    if probe is not None:
        # the contract's product neuron multiplies the two membrane payloads (§3.4; (1-β) folded downstream)
        probe(key + ".product", out=split.v_gate * split.v_up)
        probe(key + ".readout", out=f)
    return f, v_last[..., :n], v_last[..., n:]


class _SplitProbe:
    """Routes the fused gate|up scan's values to the two populations' keys."""

    def __init__(self, probe, key_gate: str, key_up: str, n: int):
        self.probe, self.keys, self.n = probe, (key_gate, key_up), n
        self.v_gate = self.v_up = None

    def __call__(self, _key, v, spikes):
        n = self.n
        self.v_gate, self.v_up = v[..., :n], v[..., n:]
        self.probe(self.keys[0], v=self.v_gate, spikes=spikes[..., :n])
        self.probe(self.keys[1], v=self.v_up, spikes=spikes[..., n:])


def decoder_layer(w: dict, cfg: NSConfig, i: int, h: torch.Tensor, state: NSState, probe=None) -> torch.Tensor:
    """One SNNDecoderLayer over T tokens (spec §3.6). h: [T, B, D] fp32; updates `state`."""
    p = f"layers.{i}."
    K = cfg.K
    # sublayer 1: RMSNorm -> input PLIF -> SNNBlock -> PonderNet -> out_proj -> center -> residual
    c = rms_norm(h, w[p + "block_norm.weight"])
    v, state.input1[i] = plif_a(repeat_frames(c, K), w[p + "input_neuron1.w"], w[p + "input_neuron1.v_th"],
                                state.input1[i], probe, p + "block.input")
    f, state.hidden[i] = snn_block_frames(w, p + "snn_block.", v, state.hidden[i], cfg.v_th_min, probe, p + "block")
    agg = ponder_aggregate(f, w[p + "block_halt.weight"], w[p + "block_halt.bias"], K)
    h = h + centered(linear(agg, w[p + "block_out_proj.weight"]))
    if probe is not None:
        probe(p + "block.aggregate", token=agg)
        probe(p + "block.residual", token=h)
    # sublayer 2: RMSNorm -> input PLIF -> SNNFFN -> PonderNet -> out_proj -> center -> residual
    c = rms_norm(h, w[p + "ffn_norm.weight"])
    v, state.input2[i] = plif_a(repeat_frames(c, K), w[p + "input_neuron2.w"], w[p + "input_neuron2.v_th"],
                                state.input2[i], probe, p + "ffn.input")
    f, state.gate[i], state.up[i] = snn_ffn_frames(w, p + "snn_ffn.", v, state.gate[i], state.up[i], probe, p + "ffn")
    agg = ponder_aggregate(f, w[p + "ffn_halt.weight"], w[p + "ffn_halt.bias"], K)
    h = h + centered(linear(agg, w[p + "ffn_out_proj.weight"]))
    if probe is not None:
        probe(p + "ffn.aggregate", token=agg)
        probe(p + "ffn.residual", token=h)
    return h


def encode(w: dict, ids: torch.Tensor) -> torch.Tensor:
    """ids [B, T] -> residual stream [T, B, D]: the embedding, the same on all K frames (§3.1)."""
    return F.embedding(ids.t(), w["embed_tokens.weight"]).float()


def decode(w: dict, cfg: NSConfig, h: torch.Tensor, state: NSState, probe=None) -> torch.Tensor:
    """Spec §3.7: output_norm -> output PLIF over K frames -> uniform mean -> decode_proj ->
    LateralInhibition -> tied head. h [T, B, D] -> logits [B, T, V] fp32."""
    K = cfg.K
    c = rms_norm(h, w["output_norm.weight"])
    o, state.output = plif_a(repeat_frames(c, K), w["output_neuron.w"], w["output_neuron.v_th"], state.output,
                             probe, "decode.output")
    m = o.reshape(h.shape[0], K, *h.shape[1:]).mean(dim=1)
    z = linear(m, w["decode_proj.weight"], w["decode_proj.bias"])
    y = rms_norm(z, w["norm.gain"])
    logits = linear(y, w.get("lm_head", w["embed_tokens.weight"]))
    return logits.transpose(0, 1).contiguous()


def forward_tokens(w: dict, cfg: NSConfig, ids: torch.Tensor, state: NSState, on_layer=None,
                   probe=None) -> torch.Tensor:
    """Run tokens ids [B, T] from `state` (updated in place); returns logits [B, T, V] fp32.
    `probe`: see "Probing" in the module docstring."""
    h = encode(w, ids)
    for i in range(cfg.num_layers):
        h = decoder_layer(w, cfg, i, h, state, probe)
        if on_layer is not None:
            on_layer()
    return decode(w, cfg, h, state, probe)


# ---- sampling (spec §5) -------------------------------------------------------------------------

def sample(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> ids [B]. temperature ≤ 0: argmax. Otherwise logits/T, keep the top k
    (every logit tied with the k-th largest survives), softmax, multinomial with `generator`."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
