"""nanoseek.model: the Llama-family transformer (transformer.py), its config and HF config.json mapping
(config.py), a simple KV cache (cache.py), checkpoint loading whatever the format (loader.py, over the readers
checkpoint.py, gguf_checkpoint.py, named.py and adapter.py) and random checkpoints for tests and benchmarks
(random_init.py). Import the modules directly; this package file stays empty so that `import nanoseek.model`
does not pull in torch."""
