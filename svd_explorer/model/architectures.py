"""Where each model type keeps its decoder blocks and which projections a block holds: knowledge as data.

Each entry gives the path of the block list and the projection groups in execution order; a group is
the projections that read the same input (q/k/v, then o, then gate/up, then down), which is what lets
the pipeline collect one set of statistics per group. Model types not listed are discovered by running a
tiny copy built from their config (discovery.py); the table stays for what tracing cannot tell.
"""
from __future__ import annotations

LLAMA_LIKE = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
              ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))

# model_type -> (path of the decoder blocks, projection groups in execution order)
ARCHITECTURES: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "llama": ("model.layers", LLAMA_LIKE),
    "mistral": ("model.layers", LLAMA_LIKE),
    "qwen2": ("model.layers", LLAMA_LIKE),
    "qwen3": ("model.layers", LLAMA_LIKE),
    "gemma": ("model.layers", LLAMA_LIKE),
    "gemma2": ("model.layers", LLAMA_LIKE),
    "phi3": ("model.layers", (("self_attn.qkv_proj",), ("self_attn.o_proj",), ("mlp.gate_up_proj",),
                              ("mlp.down_proj",))),
    "gpt2": ("transformer.h", (("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",))),
    "opt": ("model.decoder.layers", (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                                     ("self_attn.out_proj",), ("fc1",), ("fc2",))),
    "gpt_neox": ("gpt_neox.layers", (("attention.query_key_value",), ("attention.dense",),
                                     ("mlp.dense_h_to_4h",), ("mlp.dense_4h_to_h",))),
}
