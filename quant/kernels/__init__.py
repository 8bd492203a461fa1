"""The FP8 linear math and its kernels: torch reference and torch.compile path, eager Triton kernels,
the few-rows kernel, compute-path choice and the dispatch that picks a linear; a LoRA kept beside
an FP8 weight."""
