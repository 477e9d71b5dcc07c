"""Generated stubs of proto/hardneg/v1/miner.proto (run python/generate.sh)."""
