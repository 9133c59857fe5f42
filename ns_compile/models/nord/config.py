"""Nord configs (v3 and v4.x), built as "dataclass defaults, then every stored field".

The upstream v3 chat reads only eight keys and silently falls back to defaults for the rest
(n_clusters, resonance_top_k, ...). We deliberately do not: every field stored in the
checkpoint's `config` dict overrides the default (nord.md, clarification 1). Stored keys that
are not fields of our dataclass are kept in `extra_fields` (they never influence the math).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ns_compile.errors import UserError

# Keys whose presence in a config marks a v4.x (zoned) model (nord.md §1.1 "v3 vs v4 detection").
V4_MARKER_KEYS = ("sensory_layers", "association_layers", "executive_layers", "n_experts", "memory_size")
# Keys that every Nord config has and that a NeuronSpark / HF config does not.
NORD_MARKER_KEYS = ("d_model", "n_clusters")


@dataclass
class NordV3Config:
    """Fields and defaults of the v3 (144M) config dataclass (nord.md §1.1)."""

    tokenizer_id: str = "meta-llama/Llama-3.2-1B"
    vocab_size: int = 128256
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 1024
    max_seq_len: int = 1024
    T: int = 8
    T_slow: int = 2
    persistent_mem: bool = True
    tau_mem: float = 0.9
    tau_syn: float = 0.5
    v_threshold: float = 0.25
    v_reset: float = -0.1
    refractory_t: int = 2
    threshold_lr: float = 0.01
    n_clusters: int = 64
    cascade_radius: int = 3
    cascade_gain: float = 0.8
    stdp_a_plus: float = 0.005
    stdp_a_minus: float = 0.005
    stdp_tau_plus: float = 20.0
    stdp_tau_minus: float = 20.0
    stdp_w_max: float = 1.0
    stdp_w_min: float = -0.3
    stdp_reward_scale: float = 1.0
    resonance_top_k: int = 64
    clamp_floor: float = -0.1
    surrogate_alpha: float = 4.0
    batch_size: int = 4
    grad_accum: int = 8
    lr: float = 5e-4
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 500
    max_steps: int = 100000
    save_every: int = 1000
    log_every: int = 10
    max_grad_norm: float = 1.0
    device: str = "cuda"
    extra_fields: dict = field(default_factory=dict, repr=False)

    version = "v3"

    @property
    def T_total(self) -> int:
        return self.T + self.T_slow

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class NordV4Config:
    """Fields and defaults of the v4.2 config (the v5.0 file, nord.md §2.2)."""

    tokenizer_id: str = "meta-llama/Llama-3.2-1B"
    vocab_size: int = 128256
    d_model: int = 1536
    n_heads: int = 24
    n_layers: int = 10
    d_ff: int = 4096
    max_seq_len: int = 512
    T: int = 8
    T_slow: int = 2
    persistent_mem: bool = True
    tau_mem: float = 0.9
    tau_mem_min: float = 0.8
    tau_mem_max: float = 0.98
    tau_syn: float = 0.5
    v_threshold: float = 0.12
    v_thresh_min: float = 0.05
    v_thresh_max: float = 0.5
    v_reset: float = -0.1
    refractory_t: int = 2
    threshold_lr: float = 0.01
    lif_freeze_steps: int = 1000
    n_clusters: int = 128
    cascade_radius: int = 3
    cascade_gain: float = 0.8
    stdp_a_plus: float = 0.005
    stdp_a_minus: float = 0.005
    stdp_tau_plus: float = 20.0
    stdp_tau_minus: float = 20.0
    stdp_w_max: float = 0.5
    stdp_w_min: float = -0.15
    stdp_reward_scale: float = 1.0
    stdp_layers: list | None = None
    resonance_top_k: int = 64
    clamp_floor: float = -0.1
    surrogate_alpha: float = 4.0
    rope_theta: float = 10000.0
    use_sdpa_attention: bool = True
    n_experts: int = 4
    top_k_experts: int = 2
    moe_capacity_factor: float = 1.25
    moe_load_balance_weight: float = 0.01
    moe_route_temperature: float = 1.0
    target_spike_rate: float = 0.03
    spike_loss_weight: float = 0.5
    sensory_layers: int = 3
    association_layers: int = 3
    executive_layers: int = 4
    memory_tau_mem: float = 0.99
    memory_size: int = 256
    memory_gate_threshold: float = 0.3
    memory_n_read_heads: int = 8
    # optional v5 modules: all must be off (v4.2); we refuse checkpoints that switch them on
    genesis_dual_memory: bool = False
    genesis_autogenic_v5: bool = False
    genesis_archive_slots: int = 32
    genesis_balance_loss_weight: float = 0.02
    genesis_purpose_entropy_weight: float = 0.02
    genesis_identity_reg_weight: float = 0.001
    genesis_archive_entropy_weight: float = 0.01
    paper_cortical_stack_v5: bool = False
    paper_surround_radius: int = 2
    paper_pop_bottleneck: int = 32
    paper_pop_per_dim: int = 8
    paper_latency_bias_strength: float = 0.12
    conversational_balancer: bool = False
    conversational_balancer_hidden: int = 0
    conversational_balancer_max_scale: float = 1.0
    context_lif_enabled: bool = False
    context_lif_gate: float = 0.1
    context_inhibitory_neurons: int = 0
    stdp_neuromodulation: bool = True
    stdp_entropy_high_threshold: float = 2.5
    stdp_read_only: bool = False
    stdp_skeleton_scale: float = 0.0
    stdp_metaplastic: bool = False
    stdp_metaplastic_gamma: float = 0.99
    stdp_metaplastic_rigidity_max: float = 10.0
    dendritic_input_enabled: bool = False
    dendritic_n_branches: int = 4
    predictive_coding_enabled: bool = False
    predictive_coding_residual: float = 0.35
    cls_fast_slow_enabled: bool = False
    cls_hippo_frac: int = 4
    oscillatory_gating_enabled: bool = False
    gradient_checkpointing: bool = False
    batch_size: int = 1
    grad_accum: int = 32
    lr: float = 2e-4
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    max_steps: int = 50000
    save_every: int = 1000
    log_every: int = 10
    max_grad_norm: float = 1.0
    device: str = "cuda"
    scale_preset_used: str = "700m"
    extra_fields: dict = field(default_factory=dict, repr=False)

    version = "v4"

    @property
    def T_total(self) -> int:
        return self.T + self.T_slow

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def expert_width(self) -> int:
        return self.d_ff // self.n_experts


# Optional v5 modules that change the math; v4.2 has them all off.
UNSUPPORTED_V4_FLAGS = (
    "genesis_dual_memory", "genesis_autogenic_v5", "paper_cortical_stack_v5", "conversational_balancer",
    "context_lif_enabled", "dendritic_input_enabled", "predictive_coding_enabled", "cls_fast_slow_enabled",
    "oscillatory_gating_enabled",
)

_INT_FIELDS_POSITIVE = ("vocab_size", "d_model", "n_heads", "d_ff", "max_seq_len", "T", "n_clusters",
                        "resonance_top_k")
_INT_FIELDS_NONNEG = ("T_slow", "refractory_t", "n_layers")
_V4_INT_POSITIVE = ("n_experts", "top_k_experts", "memory_size", "memory_n_read_heads")
_V4_INT_NONNEG = ("sensory_layers", "association_layers", "executive_layers")


def is_v4_config(cfg: dict) -> bool:
    return any(k in cfg for k in V4_MARKER_KEYS)


def is_nord_config(cfg: Any) -> bool:
    """True for a dict that is a Nord config (what a Nord `config.json` holds).

    Rule: `model_family == "nord"` (case-insensitive), or no `model_type` key (HF/NeuronSpark
    configs have one) and both `d_model` and `n_clusters` present. A `{"config": {...}}`
    wrapper is looked through.
    """
    if not isinstance(cfg, dict):
        return False
    fam = cfg.get("model_family")
    if isinstance(fam, str):
        return fam.lower() == "nord"
    if "model_type" in cfg:
        return False
    inner = cfg.get("config")
    if isinstance(inner, dict) and all(k in inner for k in NORD_MARKER_KEYS):
        return True
    return all(k in cfg for k in NORD_MARKER_KEYS)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def build_config(stored: dict, *, version: str | None = None, path=None) -> NordV3Config | NordV4Config:
    """Defaults of the detected version's dataclass, overwritten by every stored field."""
    if not isinstance(stored, dict):
        raise UserError(f"Nord config must be a dict, got {type(stored).__name__}", path)
    if version is None:
        version = "v4" if is_v4_config(stored) else "v3"
    cls = NordV4Config if version == "v4" else NordV3Config
    names = {f.name for f in dataclasses.fields(cls)} - {"extra_fields"}
    cfg = cls()
    extra = {}
    for k, v in stored.items():
        if k in ("model_family", "dtype") or not isinstance(k, str):
            continue
        if k in names:
            default = getattr(cfg, k)
            if isinstance(default, bool) and not isinstance(v, bool):
                raise UserError(f"config field {k!r} must be a boolean, got {v!r}", path)
            if isinstance(default, float) and not isinstance(v, bool) and isinstance(v, (int, float)):
                v = float(v)
            elif _is_int(default) and not _is_int(v):
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                else:
                    raise UserError(f"config field {k!r} must be an integer, got {v!r}", path)
            elif isinstance(default, float) and not isinstance(v, (int, float)):
                raise UserError(f"config field {k!r} must be a number, got {v!r}", path)
            setattr(cfg, k, v)
        else:
            extra[k] = v
    cfg.extra_fields = extra
    validate_config(cfg, path)
    return cfg


def validate_config(cfg, path=None) -> None:
    def bad(msg):
        raise UserError(f"invalid Nord {cfg.version} config: {msg}", path)

    for k in _INT_FIELDS_POSITIVE:
        if getattr(cfg, k) <= 0:
            bad(f"{k} must be > 0 (got {getattr(cfg, k)})")
    for k in _INT_FIELDS_NONNEG:
        if getattr(cfg, k) < 0:
            bad(f"{k} must be >= 0 (got {getattr(cfg, k)})")
    if cfg.d_model % cfg.n_heads:
        bad(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
    for k in ("d_model", "d_ff"):
        if getattr(cfg, k) < cfg.n_clusters:
            bad(f"{k} {getattr(cfg, k)} is smaller than n_clusters {cfg.n_clusters} (empty clusters)")
    if cfg.version == "v3":
        return
    for k in _V4_INT_POSITIVE:
        if getattr(cfg, k) <= 0:
            bad(f"{k} must be > 0 (got {getattr(cfg, k)})")
    for k in _V4_INT_NONNEG:
        if getattr(cfg, k) < 0:
            bad(f"{k} must be >= 0 (got {getattr(cfg, k)})")
    on = [k for k in UNSUPPORTED_V4_FLAGS if getattr(cfg, k)]
    if on:
        bad(f"optional v5 module(s) {', '.join(on)} switched on; only the v4.2 architecture "
            f"(all optional flags off) is supported")
    if cfg.head_dim % 2:
        bad(f"head size {cfg.head_dim} must be even for RoPE")
    if cfg.association_layers:
        if cfg.n_clusters % cfg.n_experts:
            bad(f"n_clusters {cfg.n_clusters} is not divisible by n_experts {cfg.n_experts}")
        if cfg.d_ff % cfg.n_experts:
            bad(f"d_ff {cfg.d_ff} is not divisible by n_experts {cfg.n_experts}")
        if cfg.top_k_experts > cfg.n_experts:
            bad(f"top_k_experts {cfg.top_k_experts} > n_experts {cfg.n_experts}")
        if cfg.expert_width < cfg.n_clusters:
            bad(f"expert width {cfg.expert_width} is smaller than n_clusters {cfg.n_clusters}")
    if cfg.memory_size % cfg.memory_n_read_heads:
        bad(f"memory_size {cfg.memory_size} is not divisible by memory_n_read_heads {cfg.memory_n_read_heads}")
    if cfg.memory_size < cfg.n_clusters:
        bad(f"memory_size {cfg.memory_size} is smaller than n_clusters {cfg.n_clusters}")
    if not math.isfinite(cfg.rope_theta) or cfg.rope_theta <= 0:
        bad(f"rope_theta must be > 0 (got {cfg.rope_theta})")


def config_to_dict(cfg) -> dict:
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "extra_fields"}
    return d
