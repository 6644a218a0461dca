"""nanoseek.model: the Llama-family transformer (transformer.py), its config and HF config.json mapping
(config.py), a simple KV cache (cache.py), Hugging Face checkpoint I/O (checkpoint.py) and random checkpoints
for tests and benchmarks (random_init.py). Import the modules directly; this package file stays empty so that
`import nanoseek.model` does not pull in torch."""
