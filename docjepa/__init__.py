"""docjepa: document-image encoders pretrained against frozen text embeddings."""

import flax

# Parameters carry logical axis names as metadata only; `docjepa.sharding` maps them onto
# the mesh when the train state is created, so modules never need a mesh to be built.
flax.config.update("flax_always_shard_variable", False)
