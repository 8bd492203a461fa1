"""Model layouts: which tensors an SD3.5 file holds (MMDiT, text encoders, VAE) and the separate
text-encoder files."""
