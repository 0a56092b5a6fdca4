"""The server's tasks: what each one hands the shared request pipeline (`server.pipeline`).

A task module turns an internal request into a `pipeline.Job`: its cheap checks (through
`server.limits`), its bounded tokenization steps, the rows its model computes, and how the
model's output becomes the adapter's result. Admission, batching, drain, metrics and error shapes
are the pipeline's and the adapters'; a task knows no HTTP and no wire format.

- `embed`: pooled vectors (every embeddings route of every API);
- `pairs`: cross-encoder scores of text pairs (rerank, score, /predict's pairs);
- `classify`: a classifier's labels of texts (/predict, /classify);
- `sparse`: sparse vectors, SPLADE's or BGE-M3's (/embed_sparse);
- `tokens`: the model's tokens of texts, and texts of token ids (tokenize, decode);
- `token_vectors`: every token's vector (/embed_all) and MaxSim scores on a ColBERT (rerank, score);
- `rows`: the rows, usage and content count of the jobs that build their rows chunk by chunk;
- `steps`: the tokenizing steps of texts, token arrays or both, for embed, sparse, token vectors.
"""
