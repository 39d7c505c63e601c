"""Knowledge half of kemm: prompts, schemas, backends, cache, embeddings, audit."""
