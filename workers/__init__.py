"""dupwatch workers: decode, hash and embed images. Stateless; hold the model for the process's life."""
