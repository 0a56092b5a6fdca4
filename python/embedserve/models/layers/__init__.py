"""A small library that emits ONNX graph pieces for transformer encoders and decoders.

Every function takes the GraphBuilder, the checkpoint's Weights and value names, and returns
the name of the value it produced. Only standard ai.onnx opset-17 ops are emitted (no contrib
ops), so the graphs run on any ONNX Runtime provider and a graph-level fp16 pass can convert
them. Pieces:

- ``embeddings``: token, token-type, absolute positions (from 0, or RoBERTa's padding_idx + 1)
- ``rotary``: RoPE tables (default, linear and llama3 scaling), applied to [batch, heads, seq, dim]
- ``attention``: padding / causal / sliding-window masks; MHA and GQA with q/k norms, rotary
  and an additive position bias (MPNet)
- ``linear``, ``mlp``: projections with or without bias; GELU (erf, tanh), ReLU, SiLU; plain,
  fused-gated (GeGLU) and gated (SwiGLU) feed-forwards
- ``norms``: LayerNorm with or without bias, RMSNorm
- ``blocks``: a whole post-LN (BERT-style) layer wired by tensor names (separate or packed q/k/v,
  a plain, GLU or family-built feed-forward), and the stack of them over the summed embeddings
  (``embeddings.bert_embeddings``); Llama-named attention and MLP, and the pre-norm decoder
  stack of them (Llama, Mistral, Qwen)

Architectures (``embedserve.models.architectures``) compose these.
"""

from __future__ import annotations

from embedserve.models.layers.builder import GRAPH_INPUTS, GraphBuilder

__all__ = ["GRAPH_INPUTS", "GraphBuilder"]
